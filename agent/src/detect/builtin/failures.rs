//! Failed logins per user and per remote host, in a sliding window: what
//! `login-brute-force` and `login-after-failures` count (each keeps its own).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::Bounded;
use crate::{
    detect::{DetectConfig, DetectError},
    events::Login,
};

/// Users and hosts followed: at most this many (the oldest forgotten), each
/// with at most `brute_force_failures` (≤ [`MAX_FAILURES`]) timestamps of
/// 12 bytes, a name of at most 256 bytes (PAM items are cut at 64 bytes,
/// escaped) and at most 4 service names: about 0.5 MB per detector with the
/// default threshold of 5, at most about 6 MB with 100.
pub const KEY_CAP: usize = 4096;
/// The largest threshold accepted: bounds the timestamps kept per key.
pub const MAX_FAILURES: u32 = 100;

/// Whose failures: the PAM user's or the remote host's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    User(String),
    Host(String),
}

impl Key {
    pub fn kind(&self) -> &'static str {
        match self {
            Key::User(_) => "user",
            Key::Host(_) => "remote_host",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Key::User(s) | Key::Host(s) => s,
        }
    }

    /// The keys of a login event: its user and its remote host (when set).
    pub fn of(l: &Login) -> impl Iterator<Item = Key> {
        let user = (!l.user.is_empty()).then(|| Key::User(l.user.clone()));
        let host = l.rhost.as_ref().filter(|h| !h.is_empty()).map(|h| Key::Host(h.clone()));
        user.into_iter().chain(host)
    }
}

#[derive(Default)]
pub struct Track {
    /// The latest failures (at most `n`), oldest first.
    pub times: VecDeque<DateTime<Utc>>,
    /// No further brute-force alert for this key before then.
    pub quiet_until: Option<DateTime<Utc>>,
    /// Services the failures came through (the last few).
    pub services: Vec<String>,
}

pub struct Failures {
    pub n: usize,
    pub window: chrono::Duration,
    pub keys: Bounded<Key, Track>,
}

impl Failures {
    pub fn new(cfg: &DetectConfig) -> Result<Failures, DetectError> {
        let b = &cfg.builtin;
        if b.brute_force_failures == 0 || b.brute_force_failures > MAX_FAILURES {
            return Err(DetectError::Invalid {
                setting: "brute_force_failures".into(),
                reason: format!("{}: must be 1 to {MAX_FAILURES}", b.brute_force_failures),
            });
        }
        let window = chrono::Duration::from_std(b.brute_force_window).map_err(|e| DetectError::Invalid {
            setting: "brute_force_window".into(),
            reason: e.to_string(),
        })?;
        Ok(Failures { n: b.brute_force_failures as usize, window, keys: Bounded::new(KEY_CAP) })
    }

    /// Records a failure of `key` at `at`; its track.
    pub fn fail(&mut self, key: Key, at: DateTime<Utc>, service: &str) -> &mut Track {
        if !self.keys.contains(&key) {
            self.keys.insert(key.clone(), Track::default());
        }
        let n = self.n;
        let t = self.keys.get_mut(&key).expect("inserted above");
        t.times.push_back(at);
        while t.times.len() > n {
            t.times.pop_front();
        }
        if !t.services.iter().any(|s| s == service) {
            if t.services.len() >= 4 {
                t.services.remove(0);
            }
            t.services.push(service.to_owned());
        }
        t
    }

    /// Failures of `key` within the window that ends at `at`.
    pub fn recent(&self, key: &Key, at: DateTime<Utc>) -> usize {
        self.keys
            .get(key)
            .map(|t| t.times.iter().filter(|&&f| f <= at && at - f <= self.window).count())
            .unwrap_or(0)
    }

    /// Forgets keys whose last failure left the window before `now`.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        let w = self.window;
        self.keys.retain(|_, t| {
            t.times.back().is_some_and(|&last| now - last <= w) || t.quiet_until.is_some_and(|q| q > now)
        });
    }
}

/// A failed password check: PAM `authenticate` that did not succeed.
pub fn is_failure(l: &Login) -> bool {
    l.step == "authenticate" && l.result == "failure"
}

/// A successful login step: the password check, the account check or the
/// session opening.
pub fn is_success(l: &Login) -> bool {
    l.result == "success" && matches!(l.step, "authenticate" | "acct_mgmt" | "open_session")
}

/// "a, b" from the services seen.
pub fn services(t: Option<&Track>) -> String {
    t.map(|t| t.services.join(", ")).unwrap_or_default()
}
