//! `login-brute-force`: many failed logins for one user or from one remote
//! host in a short time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    Rule,
    failures::{self, Failures, Key},
};
use crate::{
    detect::{Alert, DetectConfig, DetectError, Detector, Severity},
    events::{Body, Event, Kind},
};

pub const RULE: Rule = Rule {
    id: "login-brute-force",
    title: "Login brute force",
    severity: Severity::Medium,
    tags: &["attack.credential_access", "attack.t1110", "attack.t1110.001"],
    description: "Password guessing: at least `brute_force_failures` failed password checks (PAM authenticate \
        failures, from the libpam probes: sshd, login, su, sudo, any PAM service) for one user, or from one \
        remote host (PAM_RHOST, when the service sets it), within `brute_force_window`. One alert per user or \
        host and window, not one per further failure. Not seen: services that do not authenticate through the \
        system's libpam (dropbear, a statically linked PAM, web logins), public-key failures (no PAM call).",
    remediation: "Block the remote host (firewall, fail2ban), check whether the user exists and whether a login \
        succeeded afterwards (login-after-failures), disable password logins for network services, and enforce \
        strong passwords or keys.",
};

/// State: a [`Failures`] table (at most 4096 users/hosts, each with at most
/// `brute_force_failures` timestamps).
pub struct LoginBruteForce {
    failures: Failures,
}

impl LoginBruteForce {
    pub fn new(cfg: &DetectConfig) -> Result<LoginBruteForce, DetectError> {
        Ok(LoginBruteForce { failures: Failures::new(cfg)? })
    }
}

impl Detector for LoginBruteForce {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Login]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Login(l) = &ev.body else { return };
        if !failures::is_failure(l) {
            return;
        }
        let (n, window) = (self.failures.n, self.failures.window);
        for key in Key::of(l) {
            let t = self.failures.fail(key.clone(), ev.time, &l.service);
            // Min and max, not front and back: per-CPU buffers may hand
            // events over slightly out of order.
            let (Some(&first), Some(&last)) = (t.times.iter().min(), t.times.iter().max()) else { continue };
            if t.times.len() < n || last - first > window || t.quiet_until.is_some_and(|q| ev.time <= q) {
                continue;
            }
            t.quiet_until = Some(ev.time + window);
            let services = t.services.join(", ");
            let mut details = BTreeMap::new();
            details.insert(key.kind(), key.value().to_owned());
            details.insert("failures", n.to_string());
            details.insert("window_seconds", window.num_seconds().to_string());
            details.insert("first_failure", first.to_rfc3339());
            details.insert("services", services.clone());
            let whose = match &key {
                Key::User(u) => format!("for user {u:?}"),
                Key::Host(h) => format!("from remote host {h}"),
            };
            let secs = (last - first).num_milliseconds() as f64 / 1000.0;
            out.push(RULE.alert(
                ev,
                RULE.severity,
                format!("{n} failed logins {whose} within {secs:.1} s (services: {services})."),
                details,
            ));
        }
    }

    fn tick(&mut self, now: DateTime<Utc>, _out: &mut Vec<Alert>) {
        self.failures.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector(n: u32, secs: u64) -> LoginBruteForce {
        let mut cfg = DetectConfig::default();
        cfg.builtin.brute_force_failures = n;
        cfg.builtin.brute_force_window = std::time::Duration::from_secs(secs);
        LoginBruteForce::new(&cfg).unwrap()
    }

    #[test]
    fn five_failures_in_a_minute_fire_once_per_window() {
        let mut d = detector(5, 60);
        let fails: Vec<Event> =
            (0..12).map(|i| login(i as f64 * 2.0, "root", None, "authenticate", false)).collect();
        let alerts = run(&mut d, &fails);
        assert_eq!(alerts.len(), 1, "one alert, not one per further failure: {alerts:#?}");
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("login-brute-force", Severity::Medium));
        assert_eq!(*a.event, fails[4], "the fifth failure triggers it");
        assert_eq!((a.details["user"].as_str(), a.details["failures"].as_str()), ("root", "5"));
        // The window passes: the attack goes on, a second alert.
        let later: Vec<Event> =
            (0..5).map(|i| login(70.0 + i as f64, "root", None, "authenticate", false)).collect();
        assert_eq!(run(&mut d, &later).len(), 1);
    }

    #[test]
    fn slow_failures_successes_and_other_steps_do_not_fire() {
        let mut d = detector(5, 60);
        // One failure every 20 s: never 5 within 60 s.
        let slow: Vec<Event> =
            (0..10).map(|i| login(i as f64 * 20.0, "bob", None, "authenticate", false)).collect();
        assert!(run(&mut d, &slow).is_empty());
        let mut other = Vec::new();
        for i in 0..10 {
            other.push(login(500.0 + i as f64, "carol", None, "authenticate", true));
            other.push(login(500.0 + i as f64, "carol", None, "acct_mgmt", false));
        }
        assert!(run(&mut d, &other).is_empty());
        // Four users, one failure each: no user reached 5.
        let users: Vec<Event> =
            ["a", "b", "c", "d"].iter().map(|u| login(600.0, u, None, "authenticate", false)).collect();
        assert!(run(&mut d, &users).is_empty());
    }

    #[test]
    fn one_host_many_users_fires_for_the_host() {
        let mut d = detector(5, 60);
        let spray: Vec<Event> = (0..5)
            .map(|i| login(i as f64, &format!("user{i}"), Some("198.51.100.23"), "authenticate", false))
            .collect();
        let alerts = run(&mut d, &spray);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].details["remote_host"], "198.51.100.23");
        assert!(alerts[0].description.contains("from remote host 198.51.100.23"));
    }

    #[test]
    fn thresholds_are_checked_and_state_stays_bounded() {
        let mut cfg = DetectConfig::default();
        cfg.builtin.brute_force_failures = 1000;
        assert!(LoginBruteForce::new(&cfg).is_err());
        let mut d = detector(5, 60);
        let mut out = Vec::new();
        // A million distinct user names from a million hosts.
        for i in 0..1_000_000u32 {
            let ev =
                login(f64::from(i) / 1000.0, &format!("u{i}"), Some(&format!("h{i}")), "authenticate", false);
            d.observe(&ev, &mut out);
        }
        assert!(out.is_empty());
        assert!(d.failures.keys.len() <= failures::KEY_CAP);
        assert!(d.failures.keys.queue_len() <= 2 * failures::KEY_CAP + 16);
        // The clock moves on: idle keys are dropped.
        d.tick(t(2000.0), &mut out);
        assert_eq!(d.failures.keys.len(), 0);
    }
}
