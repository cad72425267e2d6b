//! `shrike run --dry-run` leaves the machine as it was (#15 part 4): without a
//! state folder of its own it writes neither an agent id nor a learnt
//! baseline to the default one (/var/lib/shrike); given `--state-dir`, it
//! keeps them there. Its stop log is readable `key=value` fields.

mod hub_support;

use std::{path::Path, time::SystemTime};

use shrike_tests::{TempDir, require_root};

/// What a file in the default state folder is now: absent, or its bytes and
/// modification time.
fn snapshot(path: &Path) -> Option<(Vec<u8>, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((std::fs::read(path).unwrap_or_default(), meta.modified().ok()?))
}

#[test]
fn dry_run_writes_state_only_into_a_state_folder_it_was_given() {
    if !require_root() {
        return;
    }
    // The agent id, compared; the baseline by the log (`shrike events` of
    // other tests on this machine may write its profile there meanwhile):
    // the stage names the file it loads and saves.
    let default_dir = Path::new("/var/lib/shrike");
    let id_file = default_dir.join("agent-id");
    let before = snapshot(&id_file);
    let dir_existed = default_dir.exists();

    let args: Vec<String> = ["--dry-run", "--baseline-learn", "1h"].iter().map(|s| s.to_string()).collect();
    let agent = hub_support::RunAgent::start(&args);
    let log = agent.stop();
    assert!(
        snapshot(&id_file) == before,
        "a dry run changed {}; its log:\n{}",
        id_file.display(),
        log.join("\n")
    );
    assert!(dir_existed || !default_dir.exists(), "a dry run created {}", default_dir.display());
    assert!(
        !log.iter().any(|l| l.contains("/var/lib/shrike")),
        "a dry run used the default state folder:\n{}",
        log.join("\n")
    );

    // The stop log: fields, not a Rust Debug dump.
    let stopping = log.iter().find(|l| l.contains("shrike stopping")).expect("a stop line");
    // Counters that stayed zero are left out (an idle machine may give a
    // dry run no event at all): every field there is `key=value`.
    let fields = stopping.split("shrike stopping: ").nth(1).expect("the stop message");
    assert!(
        !fields.is_empty()
            && fields
                .split(' ')
                .all(|f| f.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())),
        "{stopping}"
    );
    assert!(!stopping.contains("Summary {") && !stopping.contains(": {"), "{stopping}");

    // A state folder given: the id and the baseline are kept there.
    let state = TempDir::new("dry-run-state");
    let st = state.path().to_str().unwrap().to_owned();
    let args: Vec<String> =
        ["--dry-run", "--state-dir", &st, "--baseline-learn", "1h"].iter().map(|s| s.to_string()).collect();
    let agent = hub_support::RunAgent::start(&args);
    let id =
        std::fs::read_to_string(state.path().join("agent-id")).expect("the agent id in the state folder");
    assert_eq!(id.trim().len(), 36, "a GUID: {id:?}");
    let log = agent.stop();
    assert!(
        state.path().join("baseline.profile").is_file(),
        "the baseline is saved at a clean stop; log:\n{}",
        log.join("\n")
    );
    assert!(snapshot(&id_file) == before, "a run with its own state folder changed {}", id_file.display());
    assert!(
        log.iter().any(|l| l.contains(&st)),
        "the baseline file in the state folder:\n{}",
        log.join("\n")
    );
}
