//! Local sinks: JSON lines on stdout.

use std::{
    collections::BTreeSet,
    io::{BufWriter, Write},
    path::Path,
};

use crate::{
    enrich::{ProcessTable, users::Users},
    events::{Event, Kind},
    probes::Transport,
};

/// Final counters, printed as the last line on exit.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub kind: &'static str,
    pub transport: Transport,
    /// Records read from the kernel.
    pub received: u64,
    pub decode_errors: u64,
    pub perf_lost: u64,
    /// Events written (after the --kinds filter).
    pub written: u64,
    /// Per kind: records the kernel wrote to the transport, and could not.
    pub kernel_sent: std::collections::BTreeMap<&'static str, u64>,
    pub kernel_lost: std::collections::BTreeMap<&'static str, u64>,
}

pub struct JsonLines<W: Write> {
    out: BufWriter<W>,
    kinds: BTreeSet<Kind>,
    procs: ProcessTable,
    users: Users,
    written: u64,
    line: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W, kinds: BTreeSet<Kind>, proc_root: &Path) -> Self {
        let mut procs = ProcessTable::new(proc_root);
        procs.seed();
        JsonLines {
            out: BufWriter::with_capacity(1 << 16, out),
            kinds,
            procs,
            users: Users::new("/etc/passwd"),
            written: 0,
            line: Vec::with_capacity(1024),
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write_batch(&mut self, batch: Vec<Event>) -> std::io::Result<()> {
        for mut ev in batch {
            self.procs.apply(&mut ev);
            if !self.kinds.contains(&ev.kind()) {
                continue;
            }
            ev.user = self.users.name(ev.uid);
            self.line.clear();
            serde_json::to_writer(&mut self.line, &ev)?;
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
            self.written += 1;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn write_summary(&mut self, s: &Summary) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, s)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
