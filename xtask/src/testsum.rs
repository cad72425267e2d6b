//! `cargo xtask test`'s summary: the test binaries' output passes through
//! unchanged (echoed as it comes) and is read on the way for what passed,
//! failed, was ignored, and was skipped (a test that returns early after
//! printing `SKIPPED...` on stderr: no root, a missing tool, `--quick`).

use std::{
    io::{Read, Write},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::Context;

/// One phase's results (the unit tests, the integration tests...).
#[derive(Debug, Default)]
pub struct Phase {
    pub name: String,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub ignored: Vec<String>,
    /// (test, reason): passed by libtest's count, but did not test anything.
    pub skipped: Vec<(String, String)>,
    /// Not run at all, and why.
    pub not_run: Option<String>,
    /// The command failed without a test failing (a build error...).
    pub error: Option<String>,
}

#[derive(Default)]
struct State {
    /// The test binary running (`Running tests/hub.rs (...)`).
    binary: String,
    /// The test whose `test NAME ... ` was printed and whose result was not.
    current: Option<String>,
    /// Unfinished stdout line (libtest flushes `test NAME ... ` before the test
    /// runs, and prints its result after).
    stdout_line: String,
    phase: Phase,
}

impl State {
    fn qualified(&self, test: &str) -> String {
        if self.binary.is_empty() { test.to_owned() } else { format!("{}::{test}", self.binary) }
    }

    /// A piece of the test binaries' stdout.
    fn stdout(&mut self, chunk: &str) {
        self.stdout_line.push_str(chunk);
        loop {
            // The start of a test is known before its line ends.
            if self.current.is_none()
                && let Some(rest) = self.stdout_line.strip_prefix("test ")
                && let Some((name, _)) = rest.split_once(" ... ")
                && !name.contains('\n')
            {
                self.current = Some(name.to_owned());
            }
            let Some(nl) = self.stdout_line.find('\n') else { break };
            let line: String = self.stdout_line.drain(..=nl).collect();
            self.stdout_result(line.trim_end());
        }
    }

    fn stdout_result(&mut self, line: &str) {
        let Some(test) = self.current.clone() else { return };
        // `test NAME ... ok`, or, when the test printed to stdout, `ok` at the
        // end of a later line.
        let word = line.rsplit(' ').next().unwrap_or(line);
        let name = self.qualified(&test);
        match word {
            "ok" => self.phase.passed.push(name),
            "FAILED" => self.phase.failed.push(name),
            "ignored" => self.phase.ignored.push(name),
            _ if line.ends_with(" ... ok") || line.contains("... ignored,") => {
                self.phase.ignored.push(name);
            }
            _ => return,
        }
        self.current = None;
    }

    fn stderr(&mut self, line: &str) {
        if let Some(rest) = line.trim_start().strip_prefix("Running ") {
            // `Running unittests src/lib.rs (target/debug/deps/shrike-0a1b)`,
            // `Running tests/hub.rs (target/debug/deps/hub-2c3d)`: the binary's
            // name without its hash.
            let bin = rest.rsplit_once(" (").map_or(rest, |(_, b)| b.trim_end_matches(')'));
            let file = bin.rsplit('/').next().unwrap_or(bin);
            self.binary = file.rsplit_once('-').map_or(file, |(n, _)| n).to_owned();
        } else if let Some(pos) = line.find("SKIPPED") {
            let reason = line[pos + "SKIPPED".len()..].trim_start_matches(':').trim().to_owned();
            let test = match &self.current {
                Some(t) => self.qualified(t),
                None => self.qualified("?"),
            };
            if !self.phase.skipped.iter().any(|(t, _)| *t == test) {
                self.phase.skipped.push((test, reason));
            }
        }
    }
}

/// Runs `cmd` (a `cargo test`), echoing its output, and returns its status
/// with the phase's results.
pub fn run(name: &str, mut cmd: Command) -> anyhow::Result<(ExitStatus, Phase)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("failed to start {cmd:?}"))?;
    let state = Arc::new(Mutex::new(State {
        phase: Phase { name: name.into(), ..Phase::default() },
        ..State::default()
    }));
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let s = Arc::clone(&state);
    let t_out = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&buf[..n]);
            let _ = o.flush();
            s.lock().unwrap_or_else(|e| e.into_inner()).stdout(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let s = Arc::clone(&state);
    let t_err = std::thread::spawn(move || {
        let mut pending = String::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = err.read(&mut buf) {
            let _ = std::io::stderr().lock().write_all(&buf[..n]);
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                s.lock().unwrap_or_else(|e| e.into_inner()).stderr(line.trim_end());
            }
        }
    });
    let status = child.wait()?;
    let _ = t_out.join();
    let _ = t_err.join();
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut phase = std::mem::take(&mut state.phase);
    if !status.success() && phase.failed.is_empty() {
        phase.error = Some(format!("{status} without a failing test (a build error? see above)"));
    }
    Ok((status, phase))
}

/// The summary printed at the end of `cargo xtask test`.
pub fn print(phases: &[Phase]) {
    let mut o = String::from("\n== cargo xtask test: summary ==\n");
    for p in phases {
        if let Some(why) = &p.not_run {
            o.push_str(&format!("{}: not run ({why})\n", p.name));
            continue;
        }
        o.push_str(&format!(
            "{}: {} passed{}, {} failed, {} ignored\n",
            p.name,
            p.passed.len(),
            match p.skipped.len() {
                0 => String::new(),
                n => format!(" ({n} of them skipped)"),
            },
            p.failed.len(),
            p.ignored.len(),
        ));
        for t in &p.failed {
            o.push_str(&format!("  FAILED  {t}\n"));
        }
        for (t, why) in &p.skipped {
            o.push_str(&format!("  SKIPPED {t}: {why}\n"));
        }
        if let Some(e) = &p.error {
            o.push_str(&format!("  ERROR   {e}\n"));
        }
    }
    eprint!("{o}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_skips_are_attributed_to_their_tests() {
        let mut s = State::default();
        s.stderr("     Running tests/deploy.rs (target/debug/deps/deploy-0123)");
        s.stdout("\nrunning 3 tests\ntest container_from_scratch ... ");
        s.stderr("SKIPPED container_from_scratch: slow deployment test; `cargo xtask test` runs it");
        s.stdout("ok\ntest unit_verifies ... ");
        s.stdout("some output of the test\n");
        s.stdout("ok\ntest a_failure ... FAILED\ntest later ... ignored, needs a gateway\n");
        s.stdout("\ntest result: FAILED. 2 passed; 1 failed; 1 ignored\n");
        s.stderr("     Running unittests src/lib.rs (target/debug/deps/shrike-abcd)");
        s.stdout("test units::tests::durations ... ok\n");
        assert_eq!(
            s.phase.passed,
            ["deploy::container_from_scratch", "deploy::unit_verifies", "shrike::units::tests::durations"]
        );
        assert_eq!(s.phase.failed, ["deploy::a_failure"]);
        assert_eq!(s.phase.ignored, ["deploy::later"]);
        assert_eq!(s.phase.skipped.len(), 1);
        assert_eq!(s.phase.skipped[0].0, "deploy::container_from_scratch");
        assert!(s.phase.skipped[0].1.starts_with("container_from_scratch: slow"), "{:?}", s.phase.skipped);
    }
}
