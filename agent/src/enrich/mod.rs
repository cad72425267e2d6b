//! Enrichment: parent pid and executables from a process table kept by the
//! fork/exec/exit events themselves (seeded from /proc), and user names.

pub mod exec_misses;
pub mod files;
pub mod proc;
pub mod users;

use std::{collections::HashMap, sync::Arc};

use crate::events::{Body, Event};

#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub ppid: u32,
    /// Shared: a fork's child starts with its parent's, without a copy.
    pub exe: Option<Arc<str>>,
}

/// pid -> (ppid, executable). Bounded: entries of processes whose exit was lost
/// are swept against /proc when the table grows past `limit`.
pub struct ProcessTable {
    procs: HashMap<u32, ProcInfo>,
    limit: usize,
    proc_root: std::path::PathBuf,
    /// File events: the watched paths (None: every file event is kept).
    watch: Option<Arc<files::Watch>>,
}

impl ProcessTable {
    pub fn new(proc_root: &std::path::Path) -> ProcessTable {
        ProcessTable {
            procs: HashMap::new(),
            limit: 1 << 16,
            proc_root: proc_root.to_path_buf(),
            watch: None,
        }
    }

    /// Gives back the room a burst of processes took.
    pub fn shrink(&mut self) {
        crate::memory::shrink_map(&mut self.procs);
    }

    /// File events are resolved and kept only under these paths.
    pub fn set_watch(&mut self, watch: Arc<files::Watch>) {
        self.watch = Some(watch);
    }

    /// Seeds the table with the processes that exist now.
    pub fn seed(&mut self) {
        for pid in proc::pids(&self.proc_root) {
            if let Some(info) = proc::read_info(&self.proc_root, pid) {
                self.procs.insert(pid, info);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    fn lookup_or_proc(&mut self, pid: u32) -> Option<&ProcInfo> {
        if !self.procs.contains_key(&pid) {
            let info = proc::read_info(&self.proc_root, pid)?;
            self.insert(pid, info);
        }
        self.procs.get(&pid)
    }

    fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= self.limit {
            let root = self.proc_root.clone();
            self.procs.retain(|pid, _| root.join(pid.to_string()).exists());
            if self.procs.len() >= self.limit {
                // Still full: every entry is a live process; forget the oldest half.
                let mut pids: Vec<u32> = self.procs.keys().copied().collect();
                pids.sort_unstable();
                for p in pids.iter().take(pids.len() / 2) {
                    self.procs.remove(p);
                }
            }
        }
        self.procs.insert(pid, info);
    }

    /// Updates the table with `ev` and fills its ppid/exe fields. False:
    /// `ev` is not a security event after all (an accept on a unix socket
    /// the kernel could not tell from an inet one): drop it.
    #[must_use]
    pub fn apply(&mut self, ev: &mut Event) -> bool {
        match &mut ev.body {
            Body::Fork(f) => {
                let (ppid, exe) = match self.lookup_or_proc(ev.pid) {
                    Some(p) => (Some(p.ppid), p.exe.clone()),
                    None => (None, None),
                };
                ev.ppid = ppid;
                ev.exe = exe.as_deref().map(str::to_owned);
                self.insert(f.child_pid, ProcInfo { ppid: ev.pid, exe });
            }
            Body::Exec(x) => {
                if x.entry_missing && x.success {
                    // The kernel missed the entry: take what /proc still says.
                    if let Some((filename, argv)) = proc::read_cmdline(&self.proc_root, ev.pid) {
                        x.filename = filename;
                        x.argv = argv;
                    }
                }
                let known = self.lookup_or_proc(ev.pid).cloned().unwrap_or_default(); // exe: an Arc clone
                ev.ppid = Some(known.ppid);
                if x.success {
                    // The path the kernel executed: consistent for every hit
                    // (aggregation keys on it) and free of /proc races with
                    // short-lived processes; /proc only for relative paths
                    // and cut ones (a cut path names nothing: never the exe).
                    let exe: Option<Arc<str>> = if x.filename.starts_with('/') && !x.filename_truncated {
                        Some(x.filename.as_str().into())
                    } else {
                        proc::read_exe(&self.proc_root, ev.pid)
                            .map(Arc::from)
                            .or_else(|| (!x.filename_truncated).then(|| x.filename.as_str().into()))
                    };
                    ev.exe = exe.as_deref().map(str::to_owned);
                    self.insert(ev.pid, ProcInfo { ppid: known.ppid, exe });
                } else {
                    ev.exe = known.exe.as_deref().map(str::to_owned);
                }
                x.parent_exe = self.procs.get(&known.ppid).and_then(|p| p.exe.as_deref().map(str::to_owned));
            }
            Body::Exit(_) => {
                if let Some(info) = self.procs.remove(&ev.pid) {
                    ev.ppid = Some(info.ppid);
                    ev.exe = info.exe.as_deref().map(str::to_owned);
                }
            }
            Body::Accept(s) if s.remote_addr.is_none() && s.result >= 0 => {
                // accept(fd, NULL, NULL): the kernel saw no peer address.
                // The socket still exists (or its fd was reused: the local
                // end must agree).
                let ends = proc::socket_ends(&self.proc_root, ev.pid, s.fd)
                    .filter(|(local, _)| s.local_port.is_none_or(|p| p == local.port()));
                match ends {
                    Some((local, remote)) => {
                        s.family = if remote.is_ipv6() { "ipv6" } else { "ipv4" };
                        s.protocol = "tcp";
                        s.local_addr = Some(local.ip());
                        s.local_port = Some(local.port());
                        s.remote_addr = Some(remote.ip());
                        s.remote_port = Some(remote.port());
                    }
                    // Neither end known to the kernel, none in the TCP
                    // tables: a unix socket's accept (or a connection
                    // already gone): not reported.
                    None if s.family == "unknown" => return false,
                    None => {}
                }
                if let Some(info) = self.lookup_or_proc(ev.pid) {
                    ev.ppid = Some(info.ppid);
                    ev.exe = info.exe.as_deref().map(str::to_owned);
                }
            }
            Body::File(_) => {
                if let Some(info) = self.lookup_or_proc(ev.pid) {
                    ev.ppid = Some(info.ppid);
                    ev.exe = info.exe.as_deref().map(str::to_owned);
                }
                if let (Body::File(f), Some(w)) = (&mut ev.body, &self.watch) {
                    // Relative and fd-based paths passed the kernel unjudged.
                    if !w.resolve(&self.proc_root, ev.pid, ev.ppid, f) {
                        return false;
                    }
                }
            }
            _ => {
                if let Some(info) = self.lookup_or_proc(ev.pid) {
                    ev.ppid = Some(info.ppid);
                    ev.exe = info.exe.as_deref().map(str::to_owned);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Exec, Exit, Fork};

    fn ev(pid: u32, body: Body) -> Event {
        Event {
            time: Default::default(),
            ktime_ns: 0,
            pid,
            tid: pid,
            ppid: None,
            uid: 0,
            gid: 0,
            user: None,
            comm: String::new(),
            exe: None,
            body,
        }
    }

    #[test]
    fn short_lived_child_gets_its_parent() {
        let dir = std::env::temp_dir().join(format!("shrike-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut t = ProcessTable::new(&dir);
        t.insert(100, ProcInfo { ppid: 1, exe: Some("/bin/sh".into()) });
        let mut fork = ev(100, Body::Fork(Fork { child_pid: 4242 }));
        assert!(t.apply(&mut fork));
        assert_eq!(fork.ppid, Some(1));
        let mut exec = ev(4242, Body::Exec(Exec::succeeded("/bin/true", &["true"])));
        assert!(t.apply(&mut exec));
        assert_eq!(exec.ppid, Some(100));
        assert_eq!(exec.exe.as_deref(), Some("/bin/true"));
        let Body::Exec(x) = &exec.body else { panic!() };
        assert_eq!(x.parent_exe.as_deref(), Some("/bin/sh"));
        let mut exit = ev(4242, Body::Exit(Exit { exit_code: Some(0), signal: None }));
        assert!(t.apply(&mut exit));
        assert_eq!(exit.ppid, Some(100));
        assert!(t.get(4242).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
