//! Warnings about secrets the configuration exposes: a file holding one
//! (`password_file`, `connection_string_file`, `client_key`) that other
//! users can read, and a plaintext `mqtt://` hub on a non-loopback address.
//! The secrets themselves are never logged, printed or sent: settings print
//! redacted (`publish::mqtt::Settings`' and `publish::azure`'s Debug), and
//! the only secret that leaves the agent is the password or SAS token in the
//! MQTT CONNECT packet itself.

use std::{net::IpAddr, os::unix::fs::MetadataExt, path::Path};

/// Why the secret file at `path` is exposed (group or world readable or
/// writable), or None.
pub fn exposure(path: &Path) -> Option<String> {
    let md = std::fs::metadata(path).ok()?;
    let mode = md.mode() & 0o777;
    if mode & 0o066 == 0 {
        return None;
    }
    let who = if mode & 0o006 != 0 { "every user".to_string() } else { format!("group {}", md.gid()) };
    Some(format!("mode {mode:o}: {who} can read or change it"))
}

/// Logs a warning when the file of `setting` (which holds a secret) is
/// exposed to other users.
pub fn warn_if_exposed(setting: &str, path: &Path) {
    if let Some(why) = exposure(path) {
        tracing::warn!(
            setting,
            file = %path.display(),
            "the file holds a secret and other users have access ({why}): chmod 600"
        );
    }
}

/// Whether `host` (a name or an address) is this machine's loopback.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Logs a warning for a plaintext MQTT hub that is not on loopback: what
/// the agent sends (and its password) can be read and changed on the way.
pub fn warn_plaintext(host: &str, port: u16, with_password: bool) {
    if is_loopback(host) {
        return;
    }
    let what = if with_password { "security messages and the MQTT password" } else { "security messages" };
    tracing::warn!(
        hub = %format!("mqtt://{host}:{port}"),
        "plaintext MQTT to a non-loopback address: {what} travel unencrypted and can be read or altered on the network; use mqtts:// (TLS)"
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]", "broker.localhost"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "192.0.2.1",
            "hub.example.com",
            "::ffff:10.0.0.1",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn exposed_secret_files() {
        let p = std::env::temp_dir().join(format!("shrike-secret-{}", std::process::id()));
        std::fs::write(&p, "s3cret\n").unwrap();
        for (mode, exposed) in [(0o600, false), (0o400, false), (0o640, true), (0o644, true), (0o602, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let why = exposure(&p);
            assert_eq!(why.is_some(), exposed, "mode {mode:o}: {why:?}");
            if let Some(w) = why {
                assert!(w.contains(&format!("{mode:o}")), "{w}");
                assert!(!w.contains("s3cret"));
            }
        }
        assert!(exposure(Path::new("/nonexistent/secret")).is_none());
        std::fs::remove_file(&p).unwrap();
    }
}
