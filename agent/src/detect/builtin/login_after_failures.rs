//! `login-after-failures`: a login that succeeds right after a burst of
//! failures for the same user or from the same host: a guess that worked.

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
    id: "login-after-failures",
    title: "Successful login after repeated failures",
    severity: Severity::High,
    tags: &["attack.credential_access", "attack.t1110", "attack.initial_access", "attack.t1078"],
    description: "A successful PAM step (authenticate, acct_mgmt or open_session) for a user, or from a remote \
        host, that had at least `brute_force_failures` failed password checks within the `brute_force_window` \
        before it: a brute-force attempt that may have found the password. One alert per success after such \
        failures (the later steps of the same login do not fire again). Not seen: logins that do not go through \
        the system's libpam.",
    remediation: "Check with the user whether the login was theirs. If not: lock the account, change its \
        password, end its sessions, review what the session did (exec events of its processes), and block the \
        remote host.",
};

/// State: a [`Failures`] table (at most 4096 users/hosts, each with at most
/// `brute_force_failures` timestamps).
pub struct LoginAfterFailures {
    failures: Failures,
}

impl LoginAfterFailures {
    pub fn new(cfg: &DetectConfig) -> Result<LoginAfterFailures, DetectError> {
        Ok(LoginAfterFailures { failures: Failures::new(cfg)? })
    }
}

impl Detector for LoginAfterFailures {
    fn id(&self) -> &'static str {
        RULE.id
    }

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Login]
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let Body::Login(l) = &ev.body else { return };
        if failures::is_failure(l) {
            for key in Key::of(l) {
                self.failures.fail(key, ev.time, &l.service);
            }
            return;
        }
        if !failures::is_success(l) {
            return;
        }
        let mut details = BTreeMap::new();
        let mut whose = Vec::new();
        let mut most = 0;
        for key in Key::of(l) {
            let n = self.failures.recent(&key, ev.time);
            if n < self.failures.n {
                continue;
            }
            most = most.max(n);
            details.insert(key.kind(), key.value().to_owned());
            details.insert("services", failures::services(self.failures.keys.get(&key)));
            whose.push(match &key {
                Key::User(u) => format!("user {u:?}"),
                Key::Host(h) => format!("remote host {h}"),
            });
            // This success is reported: the next steps of the same login are not.
            self.failures.keys.remove(&key);
        }
        if whose.is_empty() {
            return;
        }
        details.insert("failures", most.to_string());
        details.insert("step", l.step.to_owned());
        details.insert("service", l.service.clone());
        out.push(RULE.alert(
            ev,
            RULE.severity,
            format!(
                "Login of user {:?} through {} succeeded ({}) after {most} failed logins of {} within {} s.",
                l.user,
                l.service,
                l.step,
                whose.join(" and "),
                self.failures.window.num_seconds()
            ),
            details,
        ));
    }

    fn tick(&mut self, now: DateTime<Utc>, _out: &mut Vec<Alert>) {
        self.failures.expire(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::builtin::testing::*;

    fn detector() -> LoginAfterFailures {
        LoginAfterFailures::new(&DetectConfig::default()).unwrap()
    }

    #[test]
    fn success_after_six_failures_fires_once() {
        let mut d = detector();
        let mut events: Vec<Event> =
            (0..6).map(|i| login(i as f64, "alice", Some("203.0.113.4"), "authenticate", false)).collect();
        let ok = login(7.0, "alice", Some("203.0.113.4"), "authenticate", true);
        events.push(ok.clone());
        events.push(login(7.1, "alice", Some("203.0.113.4"), "acct_mgmt", true));
        events.push(login(7.2, "alice", Some("203.0.113.4"), "open_session", true));
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!((&*a.rule, a.severity), ("login-after-failures", Severity::High));
        assert_eq!(*a.event, ok);
        assert_eq!((a.details["user"].as_str(), a.details["remote_host"].as_str()), ("alice", "203.0.113.4"));
        assert_eq!(a.details["failures"], "5", "the last brute_force_failures are kept");
        assert!(a.description.contains("user \"alice\" and remote host 203.0.113.4"), "{}", a.description);
    }

    #[test]
    fn a_typo_old_failures_or_another_user_do_not() {
        let mut d = detector();
        let mut events = vec![
            login(0.0, "bob", None, "authenticate", false),
            login(1.0, "bob", None, "authenticate", true),
        ];
        // Five failures, the success 2 minutes later.
        events.extend((0..5).map(|i| login(10.0 + i as f64, "carol", None, "authenticate", false)));
        events.push(login(140.0, "carol", None, "authenticate", true));
        // Five failures for dave, a success for erin.
        events.extend((0..5).map(|i| login(200.0 + i as f64, "dave", None, "authenticate", false)));
        events.push(login(206.0, "erin", None, "authenticate", true));
        assert!(run(&mut d, &events).is_empty());
    }

    #[test]
    fn state_stays_bounded_under_churn() {
        let mut d = detector();
        let mut out = Vec::new();
        let early: Vec<Event> =
            (0..5).map(|i| login(0.0 + f64::from(i) / 10.0, "target", None, "authenticate", false)).collect();
        run(&mut d, &early);
        for i in 0..1_000_000u32 {
            d.observe(&login(1.0, &format!("u{i}"), None, "authenticate", false), &mut out);
        }
        assert!(d.failures.keys.len() <= failures::KEY_CAP);
        assert!(d.failures.keys.queue_len() <= 2 * failures::KEY_CAP + 16);
        // The price of the bound: the oldest key was forgotten under the flood.
        d.observe(&login(2.0, "target", None, "authenticate", true), &mut out);
        assert!(out.is_empty());
    }
}
