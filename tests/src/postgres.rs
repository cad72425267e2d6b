//! A throwaway PostgreSQL cluster (Debian's postgresql-15) in a folder of
//! its own on a free port, run as the user `postgres` (initdb refuses
//! root); stopped when dropped. The workspace tests and `cargo xtask bench
//! --workspace` both run their server through it.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

/// Debian's PostgreSQL 15 server programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    /// Remove `dir` when dropped.
    remove: bool,
}

impl Postgres {
    /// Whether the server is installed; skips (or fails in CI) without it.
    pub fn available(test: &str) -> bool {
        if Path::new(PG_BIN).join("initdb").exists() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: PostgreSQL 15 is missing (Debian package postgresql-15)"
        );
        eprintln!("SKIPPED {test}: {PG_BIN}/initdb is not installed (Debian package postgresql-15)");
        false
    }

    /// A cluster in a new folder under the temporary directory, removed
    /// when dropped; panics when it cannot start. Durability is not what
    /// the tests are about: fsync off saves the 2-core machine's time.
    pub fn start(tag: &str) -> Postgres {
        let dir = std::env::temp_dir().join(format!("shrike-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pg = Postgres::start_in(&dir, "-c fsync=off -c synchronous_commit=off -c max_connections=50")
            .unwrap_or_else(|e| panic!("{e}"));
        pg.remove = true;
        pg
    }

    /// A cluster in `dir` (created; kept when dropped), started with the
    /// server `settings` (`-c name=value …`); returns once it listens.
    pub fn start_in(dir: &Path, settings: &str) -> Result<Postgres, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let chown = Command::new("chown").arg("postgres:postgres").arg(dir).status();
        if !chown.is_ok_and(|s| s.success()) {
            return Err(format!("chown postgres {}", dir.display()));
        }
        let port = crate::free_port("127.0.0.1");
        let data = dir.join("data");
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("runuser: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        };
        let data_s = data.to_string_lossy();
        run(&[&format!("{PG_BIN}/initdb"), "-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"])?;
        let pg = Postgres { dir: dir.to_owned(), port, remove: false };
        run(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data_s,
            "-l",
            &dir.join("log").to_string_lossy(),
            "-w",
            "-o",
            &format!("-k {} -p {port} -c listen_addresses=127.0.0.1 {settings}", dir.display()),
            "start",
        ])?;
        if !crate::broker::poll_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            return Err(format!("PostgreSQL does not listen on {port}"));
        }
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's process id (postmaster.pid's first line).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server (immediate shutdown: connections are cut).
    pub fn stop(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
