//! `shrike baseline show` and `shrike baseline reset`.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use clap::{Args, Subcommand};

use super::{
    DEFAULT_STATE_DIR,
    profile::{Aspect, Profile},
    store,
};

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: BaselineCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BaselineCommand {
    /// Prints the learnt profile: learning until when, per executable its
    /// users, parents, destinations, listening ports and file writes.
    Show {
        /// The agent's state folder [default: /var/lib/shrike].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The profile as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Starts learning again: the profile is rewritten empty. A running agent
    /// takes it over within a minute, or at once on SIGHUP.
    Reset {
        /// The agent's state folder [default: /var/lib/shrike].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// Exit code: 0, or 1 when there is no usable profile / it cannot be written.
pub fn run(args: &BaselineArgs) -> i32 {
    let dir = |d: &Option<PathBuf>| d.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    match &args.command {
        BaselineCommand::Show { state_dir, json } => {
            let path = store::path_in(&dir(state_dir));
            match store::read(&path) {
                Ok(p) => {
                    if *json {
                        println!("{}", show_json(&path, &p));
                    } else {
                        print!("{}", show_text(&path, &p, Utc::now().timestamp()));
                    }
                    0
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    1
                }
            }
        }
        BaselineCommand::Reset { state_dir } => {
            let path = store::path_in(&dir(state_dir));
            match reset_file(&path) {
                Ok(()) => {
                    println!(
                        "{}: reset; learning starts again. A running agent takes it over within a minute \
                         (at once on SIGHUP) and learns for its baseline_learn period.",
                        path.display()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("cannot reset {}: {e}", path.display());
                    1
                }
            }
        }
    }
}

/// Rewrites `path` with an empty profile of a new id (learning starts at
/// the agent's next event).
pub fn reset_file(path: &Path) -> std::io::Result<()> {
    store::write(path, &Profile::new())
}

fn time(t: Option<i64>) -> String {
    t.and_then(|t| Utc.timestamp_opt(t, 0).single())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

fn show_json(path: &Path, p: &Profile) -> String {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("file".into(), path.display().to_string().into());
        o.insert("learn_started".into(), time(p.learn_started).into());
        o.insert("learn_until".into(), time(p.learn_until).into());
    }
    v.to_string()
}

fn show_text(path: &Path, p: &Profile, now: i64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let state = match (p.learn_started, p.learn_until) {
        (None, _) => "learning not started (starts at the agent's next event)".to_owned(),
        (Some(_), Some(u)) if u <= now => format!("learnt until {}", time(Some(u))),
        (Some(_), u) => format!("learning until {}", time(u)),
    };
    let _ = writeln!(s, "baseline {}: {state} (started {})", path.display(), time(p.learn_started));
    let _ = writeln!(
        s,
        "{} executables, {} values; refused at the caps: {} executables, {} values",
        p.executables.len(),
        p.values,
        p.overflow.executables,
        p.overflow.values
    );
    for (exe, e) in &p.executables {
        let _ = writeln!(s, "{exe}");
        for a in Aspect::ALL {
            let set = e.set(a);
            if set.values.is_empty() && set.overflow == 0 {
                continue;
            }
            let vals: Vec<&str> = set.values.iter().map(String::as_str).collect();
            let over =
                if set.overflow > 0 { format!(" (+{} refused: full)", set.overflow) } else { String::new() };
            let _ = writeln!(s, "  {}: {}{over}", a.name(), vals.join(", "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_lists_each_executable_s_sets() {
        let mut p = Profile::new();
        p.learn_started = Some(1_800_000_000);
        p.learn_until = Some(1_800_000_100);
        p.learn(
            "/usr/bin/curl",
            &[(Aspect::User, "root"), (Aspect::Destination, "10.1.2.0/24:443")],
            &mut Vec::new(),
        );
        let text = show_text(Path::new("/s/baseline.profile"), &p, 1_800_000_050);
        assert!(text.contains("learning until 2027-01-15T08:01:40Z"), "{text}");
        assert!(text.contains("/usr/bin/curl\n  users: root\n  destinations: 10.1.2.0/24:443\n"), "{text}");
        assert!(show_text(Path::new("x"), &p, 1_900_000_000).contains("learnt until"));
        let v: serde_json::Value = serde_json::from_str(&show_json(Path::new("x"), &p)).unwrap();
        assert_eq!(v["executables"]["/usr/bin/curl"]["users"]["values"][0], "root");
        assert_eq!(v["learn_until"], "2027-01-15T08:01:40Z");
    }
}
