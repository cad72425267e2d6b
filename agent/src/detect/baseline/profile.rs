//! The learnt profile: per executable path, five sets of values, within
//! fixed caps (see [`caps`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The bounds of the profile, in memory and on disk. A hostile process's
/// churn (random executable names in /tmp, random destinations) fills them
/// and then only counts: the profile never grows past them (worst case about
/// 32,768 values of 256 bytes: ~10 MB on disk, a few MB in memory more).
pub mod caps {
    /// Executables (keys) in the profile.
    pub const EXECUTABLES: usize = 4096;
    /// Values in one set of one executable (its users, its parents...).
    pub const PER_SET: usize = 64;
    /// Values in all the sets of all the executables.
    pub const VALUES: usize = 32_768;
    /// Bytes of a value or an executable path; longer ones are cut (at a
    /// character boundary) and end in `...`.
    pub const VALUE_LEN: usize = 256;
    /// A profile file larger than this is not read (reported as damaged).
    pub const FILE_BYTES: u64 = 16 << 20;
}

/// What is learnt about an executable: one set each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aspect {
    /// The users that run it (exec).
    User,
    /// Its parent executables (exec).
    Parent,
    /// The remotes it connects to: address/24 (IPv4) or /64 (IPv6), and port.
    Destination,
    /// The ports it listens on (`8080/tcp`).
    Listener,
    /// The watched files it writes (`file` events).
    FileWrite,
}

impl Aspect {
    pub const ALL: [Aspect; 5] =
        [Aspect::User, Aspect::Parent, Aspect::Destination, Aspect::Listener, Aspect::FileWrite];

    /// As in the file and `shrike baseline show`.
    pub fn name(self) -> &'static str {
        match self {
            Aspect::User => "users",
            Aspect::Parent => "parents",
            Aspect::Destination => "destinations",
            Aspect::Listener => "listens",
            Aspect::FileWrite => "file_writes",
        }
    }
}

/// A set of values, at most [`caps::PER_SET`]; values refused at a cap are
/// counted in `overflow`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Set {
    #[serde(default)]
    pub values: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overflow: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Set {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.overflow == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExeProfile {
    #[serde(default, skip_serializing_if = "Set::is_empty")]
    pub users: Set,
    #[serde(default, skip_serializing_if = "Set::is_empty")]
    pub parents: Set,
    #[serde(default, skip_serializing_if = "Set::is_empty")]
    pub destinations: Set,
    #[serde(default, skip_serializing_if = "Set::is_empty")]
    pub listens: Set,
    #[serde(default, skip_serializing_if = "Set::is_empty")]
    pub file_writes: Set,
}

impl ExeProfile {
    pub fn set(&self, a: Aspect) -> &Set {
        match a {
            Aspect::User => &self.users,
            Aspect::Parent => &self.parents,
            Aspect::Destination => &self.destinations,
            Aspect::Listener => &self.listens,
            Aspect::FileWrite => &self.file_writes,
        }
    }

    fn set_mut(&mut self, a: Aspect) -> &mut Set {
        match a {
            Aspect::User => &mut self.users,
            Aspect::Parent => &mut self.parents,
            Aspect::Destination => &mut self.destinations,
            Aspect::Listener => &mut self.listens,
            Aspect::FileWrite => &mut self.file_writes,
        }
    }

    fn values(&self) -> usize {
        Aspect::ALL.iter().map(|a| self.set(*a).values.len()).sum()
    }
}

/// Values and executables refused because the profile was full.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overflow {
    /// New executables not stored ([`caps::EXECUTABLES`] reached).
    #[serde(default)]
    pub executables: u64,
    /// New values not stored (a set at [`caps::PER_SET`], or the profile at
    /// [`caps::VALUES`]).
    #[serde(default)]
    pub values: u64,
}

/// The whole profile, as saved (times in Unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Random, made when learning (re)starts: a running agent tells a profile
    /// reset on disk (`shrike baseline reset`) from its own by it.
    pub id: String,
    /// When learning started: the first event or tick after the profile was
    /// made (None: not yet).
    #[serde(default)]
    pub learn_started: Option<i64>,
    /// When it ends (learning started + the agent's `baseline_learn`).
    #[serde(default)]
    pub learn_until: Option<i64>,
    #[serde(default)]
    pub executables: BTreeMap<String, ExeProfile>,
    #[serde(default)]
    pub overflow: Overflow,
    /// Values stored, all sets (kept, not saved).
    #[serde(skip)]
    pub values: usize,
}

/// What `learn` found new about an event's executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The executable was not in the profile (its values are learnt with it).
    NewExecutable,
    /// A value not in the executable's set.
    NewValue(Aspect, String),
    /// A cap was reached for the first time: from now on, what it refuses is
    /// only counted. `what` says which ("executables", "values", or the set).
    Full(String),
}

impl Profile {
    pub fn new() -> Profile {
        Profile { id: shrike_common::schema::Uuid::new_v4().simple().to_string(), ..Profile::default() }
    }

    /// Learns `values` of `exe`; what was new goes to `found`. At a cap
    /// nothing is stored, the refusal is counted, and the first refusal of
    /// each cap is reported as [`Finding::Full`].
    pub fn learn(&mut self, exe: &str, values: &[(Aspect, &str)], found: &mut Vec<Finding>) {
        let exe = bounded(exe);
        let total = &mut self.values;
        let entry = match self.executables.get_mut(exe.as_ref()) {
            Some(e) => e,
            None => {
                if self.executables.len() >= caps::EXECUTABLES {
                    self.overflow.executables += 1;
                    if self.overflow.executables == 1 {
                        found.push(Finding::Full(format!("executables ({})", caps::EXECUTABLES)));
                    }
                    return;
                }
                found.push(Finding::NewExecutable);
                let e = self.executables.entry(exe.into_owned()).or_default();
                for (a, v) in values {
                    if *total < caps::VALUES && e.set(*a).values.len() < caps::PER_SET {
                        if e.set_mut(*a).values.insert(bounded(v).into_owned()) {
                            *total += 1;
                        }
                    } else {
                        e.set_mut(*a).overflow += 1;
                        self.overflow.values += 1;
                    }
                }
                return;
            }
        };
        for (a, v) in values {
            let v = bounded(v);
            let set = entry.set_mut(*a);
            if set.values.contains(v.as_ref()) {
                continue;
            }
            if *total >= caps::VALUES || set.values.len() >= caps::PER_SET {
                set.overflow += 1;
                self.overflow.values += 1;
                if set.overflow == 1 {
                    let why = if *total >= caps::VALUES {
                        format!("values of the whole profile ({})", caps::VALUES)
                    } else {
                        format!("{} of {exe} ({})", a.name(), caps::PER_SET)
                    };
                    found.push(Finding::Full(why));
                }
                continue;
            }
            set.values.insert(v.clone().into_owned());
            *total += 1;
            found.push(Finding::NewValue(*a, v.into_owned()));
        }
    }

    /// After loading a file: recounts the values and cuts what exceeds the
    /// caps (a file edited by hand); returns whether anything was cut.
    pub fn enforce_caps(&mut self) -> bool {
        let mut cut = false;
        while self.executables.len() > caps::EXECUTABLES {
            self.executables.pop_last();
            cut = true;
        }
        let mut total = 0usize;
        for e in self.executables.values_mut() {
            for a in Aspect::ALL {
                let set = e.set_mut(a);
                let before = set.values.len();
                set.values.retain(|v| v.len() <= caps::VALUE_LEN + 3);
                while set.values.len() > caps::PER_SET || (total + set.values.len() > caps::VALUES) {
                    if set.values.pop_last().is_none() {
                        break;
                    }
                }
                cut |= set.values.len() != before;
                total += set.values.len();
            }
        }
        self.values = total;
        cut
    }

    /// Values stored, recounted (tests).
    pub fn count_values(&self) -> usize {
        self.executables.values().map(ExeProfile::values).sum()
    }
}

/// `s`, or its first [`caps::VALUE_LEN`] bytes (at a character boundary)
/// and `...`.
fn bounded(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= caps::VALUE_LEN {
        return s.into();
    }
    let mut end = caps::VALUE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_under_churn() {
        let mut p = Profile::new();
        let mut found = Vec::new();
        // Random executable names in /tmp: the map stops at its cap.
        for i in 0..20_000 {
            p.learn(&format!("/tmp/x{i}"), &[(Aspect::User, "root")], &mut found);
        }
        assert_eq!(p.executables.len(), caps::EXECUTABLES);
        assert_eq!(p.overflow.executables, 20_000 - caps::EXECUTABLES as u64);
        assert_eq!(found.iter().filter(|f| matches!(f, Finding::Full(_))).count(), 1, "reported once");
        // Random destinations of one executable: its set stops at its cap.
        found.clear();
        let mut p = Profile::new();
        for i in 0..10_000u32 {
            p.learn(
                "/usr/bin/curl",
                &[(Aspect::Destination, &format!("10.{}.0.0/24:{}", i % 200, i))],
                &mut found,
            );
        }
        let curl = &p.executables["/usr/bin/curl"];
        assert_eq!(curl.destinations.values.len(), caps::PER_SET);
        assert_eq!(curl.destinations.overflow, 10_000 - caps::PER_SET as u64);
        assert_eq!(found.iter().filter(|f| matches!(f, Finding::Full(_))).count(), 1);
        // Many executables with full sets: the total stops at its cap.
        let mut p = Profile::new();
        for e in 0..caps::EXECUTABLES {
            for v in 0..caps::PER_SET {
                p.learn(&format!("/tmp/x{e}"), &[(Aspect::Parent, &format!("/p{v}"))], &mut found);
            }
        }
        assert_eq!(p.values, caps::VALUES);
        assert_eq!(p.count_values(), caps::VALUES);
        // Long paths are cut.
        let long = format!("/tmp/{}", "é".repeat(1000));
        let mut q = Profile::new();
        q.learn(&long, &[], &mut found);
        assert!(q.executables.keys().all(|k| k.len() <= caps::VALUE_LEN + 3 && k.ends_with("...")));
    }

    #[test]
    fn a_new_executable_brings_its_values_along() {
        let mut p = Profile::new();
        let mut found = Vec::new();
        let vals = [(Aspect::User, "root"), (Aspect::Parent, "/bin/sh")];
        p.learn("/bin/true", &vals, &mut found);
        assert_eq!(found, [Finding::NewExecutable]);
        found.clear();
        p.learn("/bin/true", &vals, &mut found);
        assert!(found.is_empty());
        p.learn("/bin/true", &[(Aspect::User, "alice")], &mut found);
        assert_eq!(found, [Finding::NewValue(Aspect::User, "alice".into())]);
        assert_eq!(p.values, 3);
    }
}
