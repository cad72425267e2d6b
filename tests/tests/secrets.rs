//! Secrets and the agent's own files, with the real agent and a real
//! mosquitto: an MQTT password, a TLS client key and an IoT Hub SAS key never
//! appear in the agent's log (at trace level), in `--help`, in the messages
//! the hub receives or in the spool; a secret file other users can read
//! and a plaintext hub off loopback draw warnings; the state folder and the
//! agent's files are private, and links planted in it are not followed.

mod hub_support;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use hub_support::*;
use shrike_tests::{TempDir, marker, require_root};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every regular file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        if md.is_dir() {
            out.extend(files_under(&p));
        } else if md.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs `shrike run ARGS --log trace` until a marked exec reached `sub`, then
/// stops it; asserts that none of `secrets` is in its log, the messages or
/// the files under `state`.
fn run_and_check(what: &str, args: &[String], sub: &Subscriber, state: &Path, secrets: &[String]) {
    let mut args = args.to_vec();
    args.extend(["--log".into(), "trace".into(), "--state-dir".into(), state.display().to_string()]);
    args.extend(["--priority".into(), "exec=high".into(), "--high-interval".into(), "200ms".into()]);
    let agent = RunAgent::start(&args);
    let tag = marker("secret-run");
    run_true(&[&tag]);
    let got = sub.wait_until(Duration::from_secs(20), |m| m.iter().any(|r| contains(&r.payload, &tag)));
    let log = agent.stop().join("\n");
    assert!(got, "{what}: the marked exec never reached the broker; log tail:\n{}", tail(&log));
    assert!(log.lines().count() > 100, "{what}: a trace log is expected");
    for s in secrets {
        assert!(!log.contains(s.as_str()), "{what}: the secret {s:?} is in the agent's log");
        for m in sub.messages() {
            assert!(!contains(&m.payload, s), "{what}: the secret is in a message on {}", m.topic);
        }
        for (p, bytes) in files_under(state) {
            assert!(!contains(&bytes, s), "{what}: the secret is in {}", p.display());
        }
    }
    eprintln!("[secrets] {what}: delivered, {} log lines, no secret anywhere", log.lines().count());
}

fn tail(log: &str) -> String {
    let l: Vec<&str> = log.lines().collect();
    l[l.len().saturating_sub(30)..].join("\n")
}

#[test]
fn secrets_stay_out_of_logs_help_messages_and_spool() {
    if !require_root() || !shrike_tests::broker::available("secrets_stay_out_of_logs_help_messages_and_spool")
    {
        return;
    }
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let dir = TempDir::new("secrets");
    let d = dir.path();
    let pki = make_pki(&d.join("pki"));
    let password = marker("Pw-secret");
    let mut cfg = BrokerConfig::new(d);
    cfg.user("shrike", &password);
    let pw_port = cfg.listener(Auth::Password);
    let mtls_port = cfg.tls_listener(&pki, true, Auth::Anonymous);
    let az_port = cfg.tls_listener(&pki, false, Auth::Anonymous);
    let broker = cfg.start();
    let sub = Subscriber::start(broker.port, "#");

    // 1. An MQTT password, from a file and from the environment.
    let pw_file = d.join("password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    chmod(&pw_file, 0o600);
    let hub = format!("mqtt://127.0.0.1:{pw_port}");
    let base = ["--hub", &hub, "--username", "shrike"].map(String::from);
    let mut args = base.to_vec();
    args.extend(["--password-file".into(), pw_file.display().to_string()]);
    run_and_check("password file", &args, &sub, &d.join("state-pw"), std::slice::from_ref(&password));

    // --help, with the variable --password-env names set.
    let env_var = "SHRIKE_TEST_MQTT_PASSWORD";
    for help in [&["--help"][..], &["run", "--help"], &["events", "--help"]] {
        let out =
            Command::new(shrike_tests::agent_bin()).args(help).env(env_var, &password).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "shrike {help:?}: {text}");
        assert!(!text.contains(&password), "shrike {help:?} prints the password");
    }

    // 2. A TLS client key (mutual TLS): no line of the key's body anywhere.
    let key_text = std::fs::read_to_string(pki.client_key()).unwrap();
    let key_lines: Vec<String> =
        key_text.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).map(String::from).collect();
    assert!(!key_lines.is_empty());
    chmod(&pki.client_key(), 0o600);
    let hub = format!("mqtts://127.0.0.1:{mtls_port}");
    let args: Vec<String> = [
        "--hub",
        &hub,
        "--ca-file",
        &pki.ca().display().to_string(),
        "--client-cert",
        &pki.client_cert().display().to_string(),
        "--client-key",
        &pki.client_key().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    run_and_check("client key", &args, &sub, &d.join("state-mtls"), &key_lines);

    // 3. An IoT Hub connection string: its SharedAccessKey never leaves the
    // agent (the SAS token derived from it does, in CONNECT only).
    let key = STANDARD.encode(marker("sas-key-material-32-bytes-long").as_bytes());
    let cs = d.join("connection-string");
    let cs_text =
        format!("HostName=shrike-secrets.azure-devices.net;DeviceId=gw-secret;SharedAccessKey={key}");
    std::fs::write(&cs, format!("{cs_text}\n")).unwrap();
    chmod(&cs, 0o600);
    let hub = format!("azure://127.0.0.1:{az_port}");
    let args: Vec<String> = [
        "--hub",
        &hub,
        "--connection-string-file",
        &cs.display().to_string(),
        "--ca-file",
        &pki.ca().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    run_and_check("SAS key", &args, &sub, &d.join("state-azure"), &[key.clone(), cs_text]);
}

#[test]
fn exposed_secret_files_and_plaintext_hubs_draw_warnings() {
    if !require_root()
        || !shrike_tests::broker::available("exposed_secret_files_and_plaintext_hubs_draw_warnings")
    {
        return;
    }
    let dir = TempDir::new("secret-warnings");
    let d = dir.path();
    let pw_file = d.join("password");
    std::fs::write(&pw_file, "not-so-secret\n").unwrap();

    // World-readable password file, plaintext hub on a non-loopback address
    // (TEST-NET-1: nothing answers; the agent spools meanwhile).
    chmod(&pw_file, 0o644);
    let args: Vec<String> = [
        "--hub",
        "mqtt://192.0.2.1:1883",
        "--username",
        "u",
        "--password-file",
        &pw_file.display().to_string(),
        "--state-dir",
        &d.join("state1").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let log = RunAgent::start(&args).stop().join("\n");
    let warned = |needle: &str| log.lines().any(|l| l.contains("WARN") && l.contains(needle));
    assert!(warned("password_file") && warned("other users have access") && warned("644"), "{log}");
    assert!(warned("plaintext MQTT to a non-loopback address") && warned("the MQTT password"), "{log}");
    assert!(!log.contains("not-so-secret"), "the password is in the log");

    // 0600 and a loopback hub: neither warning.
    chmod(&pw_file, 0o600);
    let broker = Broker::start(d, "", &[]);
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);
    let args: Vec<String> = [
        "--hub",
        &hub,
        "--username",
        "u",
        "--password-file",
        &pw_file.display().to_string(),
        "--state-dir",
        &d.join("state2").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let log = RunAgent::start(&args).stop().join("\n");
    assert!(!log.contains("other users have access"), "{log}");
    assert!(!log.contains("plaintext MQTT"), "{log}");
}

#[test]
fn state_files_are_private_and_planted_links_are_not_followed() {
    if !require_root()
        || !shrike_tests::broker::available("state_files_are_private_and_planted_links_are_not_followed")
    {
        return;
    }
    let dir = TempDir::new("state-files");
    let d = dir.path();
    let broker = Broker::start(d, "", &[]);
    let sub = Subscriber::start(broker.port, "shrike/#");
    let hub = format!("mqtt://127.0.0.1:{}", broker.port);

    // Files a local attacker wants overwritten or disclosed, and links to
    // them planted (by another user) where the agent keeps its state.
    let state = d.join("state");
    std::fs::create_dir_all(state.join("spool")).unwrap();
    chmod(&state, 0o700);
    chmod(&state.join("spool"), 0o700);
    let victim = d.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    let links = [
        state.join("agent-id"),
        state.join("baseline.profile"),
        state.join(format!("baseline.profile.tmp.{}", 1)),
        state.join("spool").join("00000000000000000001.h.msg"),
    ];
    for l in &links {
        std::os::unix::fs::symlink(&victim, l).unwrap();
        let c = std::ffi::CString::new(l.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: lchown on a NUL-terminated path: the link belongs to nobody.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
    }
    let args: Vec<String> = [
        "--hub",
        &hub,
        "--state-dir",
        &state.display().to_string(),
        "--priority",
        "exec=high",
        "--high-interval",
        "200ms",
    ]
    .map(String::from)
    .to_vec();
    let agent = RunAgent::start(&args);
    let tag = marker("state-files");
    run_true(&[&tag]);
    let got = sub.wait_until(Duration::from_secs(20), |m| m.iter().any(|r| contains(&r.payload, &tag)));
    let log = agent.stop().join("\n");
    assert!(got, "no message; log:\n{log}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "a planted link was followed; log:\n{log}"
    );
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o644, "the victim's mode changed");
    // The agent id is a file of its own now, private.
    let id = state.join("agent-id");
    let md = std::fs::symlink_metadata(&id).unwrap();
    assert!(md.is_file(), "agent-id is still a link");
    assert_eq!(md.mode() & 0o777, 0o600, "agent-id mode");
    assert!(log.contains("agent id file not used") && log.contains("symbolic link"), "{log}");

    // Everything the agent made is private: folders 0700, files 0600.
    let mut checked = 0;
    let mut stack = vec![state.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.file_type().is_symlink() {
                continue; // what we planted and the agent left alone or set aside
            }
            if md.is_dir() {
                assert_eq!(
                    md.mode() & 0o077,
                    0,
                    "{} is open to others ({:o})",
                    e.path().display(),
                    md.mode()
                );
                stack.push(e.path());
            } else {
                assert_eq!(
                    md.mode() & 0o077,
                    0,
                    "{} is open to others ({:o})",
                    e.path().display(),
                    md.mode()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "expected the agent's files under {}", state.display());
    eprintln!("[secrets] {checked} state entries private; 4 planted links not followed");
}
