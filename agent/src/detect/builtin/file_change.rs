//! What the file-integrity detectors share: a rule over the paths a `file`
//! event changed (`ssh-key-added`, `passwd-changed`, `sudoers-changed`,
//! `cron-changed`, `ld-preload-set`, `system-binary-replaced`, one file
//! each). Stateless: each successful change under a path the rule names
//! fires once.

use std::{collections::BTreeMap, path::PathBuf};

use super::Rule;
use crate::{
    detect::{Alert, DetectConfig, Detector},
    enrich::proc,
    events::{Body, Event, Kind, file::File},
};

/// One file rule: which operations, which paths.
pub struct Spec {
    pub rule: &'static Rule,
    /// `operation`s of the file event that count.
    pub ops: &'static [&'static str],
    /// Whether a path the rule names counts.
    pub matches: fn(&str) -> bool,
    /// rename: the old name counts too (moved away), not only the new one.
    pub rename_from: bool,
    /// Changes by a package manager (the process or one of 4 ancestors) do
    /// not fire.
    pub skip_package_managers: bool,
}

/// Package managers whose changes to system files are expected.
pub const PACKAGE_MANAGERS: &[&str] = &[
    "dpkg",
    "apt",
    "apt-get",
    "aptitude",
    "rpm",
    "dnf",
    "yum",
    "microdnf",
    "zypper",
    "apk",
    "opkg",
    "pacman",
    "snapd",
    "packagekitd",
];

pub struct FileChange {
    spec: &'static Spec,
    proc_root: PathBuf,
}

impl FileChange {
    pub fn new(spec: &'static Spec, cfg: &DetectConfig) -> FileChange {
        FileChange { spec, proc_root: cfg.proc_root.clone() }
    }

    /// The changed path the rule names, if any.
    fn hit<'a>(&self, f: &'a File) -> Option<&'a str> {
        let m = self.spec.matches;
        match (&f.new_path, f.operation) {
            (Some(new), "rename") if m(new) => Some(new),
            (Some(_), "rename") if !self.spec.rename_from => None,
            _ => m(&f.path).then_some(f.path.as_str()),
        }
    }

    /// The package manager among the process and its ancestors (/proc,
    /// read only when the rule would fire; a process gone is not known).
    fn package_manager(&self, ev: &Event) -> Option<String> {
        let is_pm = |exe: &str| PACKAGE_MANAGERS.contains(&super::base_name(exe));
        if let Some(exe) = ev.exe.as_deref().filter(|e| is_pm(e)) {
            return Some(exe.to_owned());
        }
        let mut pid = ev.ppid?;
        for _ in 0..4 {
            if pid <= 1 {
                return None;
            }
            if let Some(exe) = proc::read_exe(&self.proc_root, pid).filter(|e| is_pm(e)) {
                return Some(exe);
            }
            pid = proc::read_ppid(&self.proc_root, pid)?;
        }
        None
    }
}

impl Detector for FileChange {
    fn id(&self) -> &'static str {
        self.spec.rule.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::File]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::File(f) = &ev.body else { return };
        if !f.success || !self.spec.ops.contains(&f.operation) {
            return;
        }
        let Some(path) = self.hit(f) else { return };
        if self.spec.skip_package_managers && self.package_manager(ev).is_some() {
            return;
        }
        let mut details = BTreeMap::new();
        details.insert("path", path.to_owned());
        details.insert("operation", f.operation.to_owned());
        if let Some(new) = &f.new_path {
            details.insert("old_path", f.path.clone());
            details.insert("new_path", new.clone());
        }
        if let Some(t) = &f.target {
            details.insert("target", t.clone());
        }
        if let Some(m) = &f.mode {
            details.insert("mode", m.clone());
        }
        let who = ev.exe.as_deref().unwrap_or(&ev.comm);
        let user = ev.user.clone().unwrap_or_else(|| ev.uid.to_string());
        let op = match f.operation {
            "rename" => "renamed",
            "delete" => "deleted",
            "create" => "created",
            "write" => "opened for writing",
            "chmod" => "changed the mode of",
            "chown" => "changed the owner of",
            "link" => "hard-linked",
            "symlink" => "made the symlink",
            other => other,
        };
        let what = match (&f.new_path, f.operation) {
            (Some(new), "rename") => {
                format!("Process {} ({who}, user {user}) renamed {} to {new}.", ev.pid, f.path)
            }
            _ => format!("Process {} ({who}, user {user}) {op} {path}.", ev.pid),
        };
        out.push(self.spec.rule.alert(ev, self.spec.rule.severity, what, details));
    }
}

#[cfg(test)]
pub mod testing {
    use crate::events::{Body, Event, file::File};

    /// A successful file event of `op` on `path` by pid 50 (exe `exe`).
    pub fn change(op: &'static str, path: &str, new_path: Option<&str>, exe: &str) -> Event {
        let mut ev = crate::detect::builtin::testing::event(
            0.0,
            50,
            Body::File(File {
                operation: op,
                path: path.into(),
                new_path: new_path.map(Into::into),
                target: None,
                mode: None,
                owner_uid: None,
                owner_gid: None,
                open_flags: None,
                directory: false,
                result: 0,
                success: true,
                error: None,
                path_truncated: false,
                resolved_from: None,
                raw: Default::default(),
            }),
        );
        ev.exe = Some(exe.into());
        ev.ppid = Some(49);
        ev
    }

    pub fn failed(mut ev: Event) -> Event {
        if let Body::File(f) = &mut ev.body {
            f.success = false;
            f.result = -13;
        }
        ev
    }
}
