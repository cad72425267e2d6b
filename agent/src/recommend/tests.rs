//! Rules, conditions, root confinement and errors over a small test root.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::{
    creds::{self, CredConfig},
    eval::{self, Env, Outcome},
    policy::{self, Origin},
    *,
};

struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("shrike-rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }
    fn write(&self, path: &str, text: &str) -> &Root {
        let p = self.0.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }
    fn env(&self) -> Env {
        Env::new(self.0.clone(), false, CredConfig::default())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn outcome(root: &Root, rule: &str) -> Outcome {
    outcome_as(root, rule, false, &Origin::LocalFile)
}

fn outcome_as(root: &Root, rule: &str, pcre: bool, origin: &Origin) -> Outcome {
    let r = policy::parse_rule(rule, &[("$conf".into(), "/etc/app.conf".into())], pcre)
        .unwrap_or_else(|e| panic!("{rule}: {e}"));
    eval::rule(&r, origin, &mut root.env()).outcome
}

use Outcome::{Fail, NotApplicable as Na, Pass};

#[test]
fn file_rules_existence_content_negation_and_numbers() {
    let root = Root::new("file");
    root.write("/etc/app.conf", "# comment\nPort 22\nMaxAuthTries 6\nPermitRootLogin no\n");
    assert_eq!(outcome(&root, "f:/etc/app.conf"), Pass);
    assert_eq!(outcome(&root, "f:/etc/missing"), Fail);
    assert_eq!(outcome(&root, "not f:/etc/missing"), Pass);
    assert_eq!(outcome(&root, "f:/etc/missing,/etc/app.conf"), Pass, "a list passes when one file does");
    // Variables, literal whole-line content, regexes (OS_Regex by default).
    assert_eq!(outcome(&root, "f:$conf -> Port 22"), Pass);
    assert_eq!(outcome(&root, "f:$conf -> Port 2"), Fail, "a literal is the whole line");
    assert_eq!(outcome(&root, r"f:$conf -> r:^PermitRootLogin\s+no"), Pass);
    assert_eq!(outcome(&root, r"f:$conf -> r:^Port\.+2"), Pass, r"OS_Regex: \. is any character");
    assert_eq!(outcome(&root, r"f:$conf -> r:^Port.22"), Fail, "OS_Regex: a bare . is a dot");
    // `!` and `&&` on one line; `not` over the rule.
    assert_eq!(outcome(&root, r"f:$conf -> !r:^# && r:Port && r:22"), Pass);
    assert_eq!(outcome(&root, r"f:$conf -> !r:^# && r:comment"), Fail);
    assert_eq!(outcome(&root, r"not f:$conf -> r:^PermitRootLogin\s+yes"), Pass);
    assert_eq!(outcome(&root, r"not f:$conf -> r:^PermitRootLogin\s+no"), Fail);
    // Numbers: every operator.
    for (op, want) in [("<", Fail), ("<=", Pass), ("==", Pass), ("!=", Fail), (">=", Pass), (">", Fail)] {
        assert_eq!(
            outcome(&root, &format!(r"f:$conf -> n:^MaxAuthTries\s+(\d+) compare {op} 6")),
            want,
            "{op}"
        );
    }
    assert_eq!(outcome(&root, r"f:$conf -> n:^MaxAuthTries\s+(\d+) compare <= 4"), Fail);
    // A content check of a file that is not there cannot be answered; `not` keeps that.
    assert_eq!(outcome(&root, "f:/etc/missing -> r:x"), Na);
    assert_eq!(outcome(&root, "not f:/etc/missing -> r:x"), Na);
    // pcre2 policies take the regex as written.
    assert_eq!(outcome_as(&root, r"f:$conf -> r:^Port.22", true, &Origin::LocalFile), Pass);
}

#[test]
fn directory_process_command_and_unknown_rules() {
    let root = Root::new("dir");
    root.write("/etc/sysctl.d/10-a.conf", "kernel.x = 1\n");
    root.write("/etc/sysctl.d/sub/20-b.conf", "net.ipv4.ip_forward = 0\n");
    root.write("/etc/sysctl.d/README", "net.ipv4.ip_forward = 1\n");
    assert_eq!(outcome(&root, "d:/etc/sysctl.d"), Pass);
    assert_eq!(outcome(&root, "d:/etc/nothing"), Fail);
    assert_eq!(outcome(&root, "d:/etc/sysctl.d -> README"), Pass);
    assert_eq!(outcome(&root, r"d:/etc/sysctl.d -> r:\.conf$ -> r:ip_forward = 0"), Pass, "recursive");
    assert_eq!(
        outcome(&root, r"d:/etc/sysctl.d -> r:\.conf$ -> r:ip_forward = 1"),
        Fail,
        "README is not .conf"
    );
    assert_eq!(outcome(&root, r"d:/etc/nothing -> r:\.conf$ -> r:x"), Na);

    root.write("/proc/123/comm", "mosquitto\n").write("/proc/123/cmdline", "/usr/sbin/mosquitto\0-c\0x\0");
    root.write("/proc/7/comm", "kworker\n");
    assert_eq!(outcome(&root, "p:mosquitto"), Pass);
    assert_eq!(outcome(&root, "p:/usr/sbin/mosquitto"), Pass);
    assert_eq!(outcome(&root, "not p:telnetd"), Pass);
    assert_eq!(outcome(&root, "not p:kworker"), Fail);

    // Commands: only from local files, with allow_commands, on the live root.
    let live = Root(PathBuf::from("/"));
    let cmd = "c:echo MaxSessions 3 -> n:^MaxSessions (\\d+) compare <= 4";
    let r = policy::parse_rule(cmd, &[], false).unwrap();
    let mut env = Env::new(PathBuf::from("/"), true, CredConfig::default());
    assert_eq!(eval::rule(&r, &Origin::LocalFile, &mut env).outcome, Pass);
    assert_eq!(eval::rule(&r, &Origin::Remote, &mut env).outcome, Na, "a pushed policy never runs commands");
    assert_eq!(eval::rule(&r, &Origin::Embedded, &mut env).outcome, Na);
    assert_eq!(outcome_as(&live, cmd, false, &Origin::LocalFile), Na, "allow_commands off");
    let mut rooted = Env::new(root.0.clone(), true, CredConfig::default());
    assert_eq!(eval::rule(&r, &Origin::LocalFile, &mut rooted).outcome, Na, "no commands under --root");
    std::mem::forget(live);

    // Windows registry rules are not evaluated: not applicable.
    assert_eq!(outcome(&root, r"r:HKEY_LOCAL_MACHINE\System -> x"), Na);
}

#[test]
fn conditions_follow_wazuhs_truth_table() {
    let root = Root::new("cond");
    root.write("/a", "yes\n");
    let check = |cond: &str, rules: &[&str]| {
        let text = format!(
            "policy: {{id: t}}\nchecks:\n  - id: 1\n    title: t\n    condition: {cond}\n    rules:\n{}",
            rules.iter().map(|r| format!("      - '{r}'\n")).collect::<String>()
        );
        let p = policy::parse(&text, "t.yml", Origin::LocalFile).unwrap();
        eval::check(&p.checks[0], &p.origin, &mut root.env()).outcome
    };
    let (p, f, n) = ("f:/a", "f:/b", "f:/b -> r:x");
    assert_eq!(check("all", &[p, p]), Pass);
    assert_eq!(check("all", &[p, f, n]), Fail);
    assert_eq!(check("all", &[p, n]), Na);
    assert_eq!(check("any", &[f, p, n]), Pass);
    assert_eq!(check("any", &[f, f]), Fail);
    assert_eq!(check("any", &[f, n]), Na);
    assert_eq!(check("none", &[f, p]), Fail);
    assert_eq!(check("none", &[f, f]), Pass);
    assert_eq!(check("none", &[f, n]), Na);
}

#[test]
fn extension_sources() {
    let root = Root::new("ext");
    // 0.0.0.0:1883 and 127.0.0.1:1884 listening; [::]:23 listening; udp 0.0.0.0:69 bound.
    root.write(
        "/proc/net/tcp",
        "  sl  local_address rem_address   st\n   0: 00000000:075B 00000000:0000 0A 0 0 0\n   1: 0100007F:075C 00000000:0000 0A 0 0 0\n",
    );
    root.write(
        "/proc/net/tcp6",
        "h\n   0: 00000000000000000000000000000000:0017 00000000000000000000000000000000:0000 0A 0\n",
    );
    root.write("/proc/net/udp", "h\n   0: 00000000:0045 00000000:0000 07 0\n");
    assert_eq!(
        outcome_as(&root, r"x:sockets -> r:^tcp6? \S+ 1883 listen loopback=no$", true, &Origin::Embedded),
        Pass
    );
    assert_eq!(
        outcome_as(&root, r"x:sockets -> r:^tcp6? \S+ 1884 listen loopback=no$", true, &Origin::Embedded),
        Fail
    );
    assert_eq!(outcome_as(&root, r"x:sockets -> r:^tcp6 :: 23 listen", true, &Origin::Embedded), Pass);
    assert_eq!(outcome_as(&root, r"x:sockets -> r:^udp \S+ 69 bound", true, &Origin::Embedded), Pass);

    root.write("/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\nMatch User x\n  PasswordAuthentication no\n");
    root.write("/etc/ssh/sshd_config.d/10-a.conf", "permitrootlogin no\nCiphers aes128-cbc,aes256-ctr\n");
    let pcre = |r: &str| outcome_as(&root, r, true, &Origin::Embedded);
    assert_eq!(pcre("x:sshd -> r:^permitrootlogin no$"), Pass, "the first value wins, Includes first");
    assert_eq!(
        pcre("x:sshd -> r:^passwordauthentication yes$"),
        Pass,
        "Match blocks are not global; default yes"
    );
    assert_eq!(pcre("x:sshd -> r:^ciphers .*-cbc"), Pass);
    assert_eq!(pcre("x:sshd -> n:^maxauthtries (\\d+) compare == 6"), Pass, "OpenSSH's default");

    root.write("/etc/shadow", "x\n");
    std::fs::set_permissions(root.0.join("etc/shadow"), std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .unwrap();
    assert_eq!(pcre("x:stat /etc/shadow -> r:mode=0640 && n:other=(\\d) compare == 0"), Pass);
    assert_eq!(pcre("x:stat /etc/nothing"), Na);
    assert_eq!(pcre("x:stat /etc/ssh/sshd_config.d/*.conf -> r:^/etc/ssh/sshd_config.d/10-a.conf "), Pass);
    assert_eq!(pcre("x:lines /etc/nothing,/etc/ssh/sshd_config.d/* -> r:^Ciphers"), Pass);
    assert_eq!(pcre("x:lines /etc/nothing -> r:."), Fail, "missing files give no lines, not n/a");
    assert_eq!(pcre("x:ls /etc/ssh/sshd_config.d -> r:^10-a\\.conf$"), Pass);

    root.write("/home/u/bin/sh", "");
    root.write("/home/u/open", "");
    std::fs::set_permissions(
        root.0.join("home/u/bin/sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(root.0.join("home/u/open"), std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .unwrap();
    assert_eq!(pcre("x:suid /home -> r:^/home/u/bin/sh mode=4755 uid=\\d+ dpkg=unknown$"), Pass);
    assert_eq!(pcre("x:world-writable /home -> r:^/home/u/open "), Pass);
    assert_eq!(pcre("x:world-writable /etc"), Fail);
}

#[test]
fn crypt_schemes_verify_real_hashes() {
    // Made with libxcrypt (Python's crypt) and `openssl passwd`.
    let y = "$y$j9T$5ZAJxEa0OcxV6K1nEd4MN/$kkhUCrvNiv0cufFCUqyFhJDwBYn/70iInmilMiDDgh3";
    let s6 = "$6$shrikesalt$KPbSXi/TQBhKr7X4rbOALClNrm382BHwdEQ0tSb07V3Mi50N1zrVTma7t8ROSqa/lLrPXElFl019qU2Oi7lVw.";
    let s5 = "$5$abc$1qHIjNUAnXn/DW./nuTVf.YPE6le/q8rXofL7ytw184";
    let m1 = "$1$saltsalt$Gan9glI3ghan.hsfDW8RM1";
    for (hash, pw) in [(y, "raspberry"), (s6, "raspberry"), (s5, "root"), (m1, "raspberry")] {
        assert!(creds::verify(pw.as_bytes(), hash), "{hash}");
        assert!(!creds::verify(b"raspberrx", hash), "{hash}");
    }
    assert_eq!(creds::md5_crypt(b"raspberry", b"saltsalt"), "Gan9glI3ghan.hsfDW8RM1");
}

#[test]
fn default_credentials_within_a_budget() {
    let root = Root::new("creds");
    let s6 = "$6$shrikesalt$KPbSXi/TQBhKr7X4rbOALClNrm382BHwdEQ0tSb07V3Mi50N1zrVTma7t8ROSqa/lLrPXElFl019qU2Oi7lVw.";
    let m1 = "$1$saltsalt$Gan9glI3ghan.hsfDW8RM1";
    root.write("/etc/shadow", &format!("root:!:1::\npi:{s6}:1::\nbob:{m1}:1::\nold:abCDefGHijKLm:1::\n"));
    let r = policy::parse_rule("x:default-credentials", &[], true).unwrap();
    let mut env = root.env();
    assert_eq!(eval::rule(&r, &Origin::Embedded, &mut env).outcome, Pass);
    let st = &env.cred_stats;
    assert_eq!((st.accounts, st.unsupported, st.budget_exhausted), (2, 1, false), "{st:?}");

    // bob's raspberry is only in an extra list, as `*`.
    let mut cfg = CredConfig { lists: vec![("l".into(), "*:raspberry\n".into())], ..CredConfig::default() };
    cfg.budget = Duration::from_secs(5);
    let mut env = Env::new(root.0.clone(), false, cfg);
    let r2 = policy::parse_rule("x:default-credentials -> r:^bob ", &[], true).unwrap();
    assert_eq!(eval::rule(&r2, &Origin::Embedded, &mut env).outcome, Pass);

    // No budget: nothing tried, the untried guesses counted.
    let cfg = CredConfig { budget: Duration::ZERO, ..CredConfig::default() };
    let mut env = Env::new(root.0.clone(), false, cfg);
    eval::rule(&r, &Origin::Embedded, &mut env);
    assert!(env.cred_stats.budget_exhausted && env.cred_stats.untried > 0 && env.cred_stats.guesses == 0);
}

#[test]
fn parse_errors_name_file_and_line_and_unknown_types_are_counted() {
    let text = "policy:\n  id: t\nchecks:\n  - id: 1\n    title: a\n    condition: all\n    rules:\n      - 'f:/a'\n  - id: 2\n    title: b\n    condition: all\n    rules:\n      - 'f:/a'\n      - 'f:/b -> n:^x (\\d+) compare ~ 3'\n  - id: 3\n    title: c\n    condition: some\n    rules:\n      - 'r:HKLM\\x'\n";
    let errs = policy::parse(text, "p.yml", Origin::LocalFile).unwrap_err();
    assert!(
        errs.iter().any(|e| e.starts_with("p.yml:14: check 2") && e.contains("compare operator")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.starts_with("p.yml:15: check #3") && e.contains("condition")), "{errs:?}");
    let yaml =
        policy::parse("policy:\n  id: t\nchecks:\n  - id: 1\n   title: [\n", "q.yml", Origin::LocalFile)
            .unwrap_err();
    assert!(yaml[0].starts_with("q.yml:5:") || yaml[0].starts_with("q.yml:4:"), "{yaml:?}");
    let ok = policy::parse(
        &text.replace("compare ~ 3", "compare == 3").replace("some", "any"),
        "p.yml",
        Origin::LocalFile,
    )
    .unwrap();
    assert_eq!(ok.skipped.get("r:"), Some(&1), "registry rules are skipped and counted");
    let bad_regex = "policy: {id: t}\nchecks:\n  - id: 9\n    title: a\n    condition: all\n    rules:\n      - 'f:/a -> r:(unclosed'\n";
    let e = policy::parse(bad_regex, "r.yml", Origin::LocalFile).unwrap_err();
    assert!(e[0].starts_with("r.yml:7: check 9"), "{e:?}");
}

#[test]
fn the_gateway_policy_loads_with_40_checks_of_every_category() {
    let p = policy::parse(BUILTIN_POLICY, BUILTIN_POLICY_NAME, Origin::Embedded).expect("built-in policy");
    assert!(p.checks.len() >= 40, "{}", p.checks.len());
    assert!(p.skipped.is_empty());
    let has = |s: &str| p.checks.iter().any(|c| c.rules.iter().any(|r| r.text.contains(s)));
    for needle in [
        "/tmp ",
        "/etc/shadow",
        "ssh_host_",
        "x:world-writable",
        "x:suid",
        "kptr_restrict",
        "dmesg_restrict",
        "unprivileged_bpf_disabled",
        "rp_filter",
        "randomize_va_space",
        "ip_forward",
        "permitrootlogin",
        "passwordauthentication",
        "permitemptypasswords",
        "^ciphers",
        "^macs",
        "x11forwarding",
        "r:^[^:]+::",
        ":0: && !r:^root:",
        "ip_tables_names",
        " 23 listen",
        " 1883 listen",
        "Unattended-Upgrade",
        "x:default-credentials",
    ] {
        assert!(has(needle), "no check reads {needle}");
    }
    assert!(
        p.checks.iter().all(|c| !c.rules.iter().any(|r| matches!(r.target, policy::Target::Command(..))))
    );
}

#[test]
fn report_outputs_and_exit_severity() {
    let root = Root::new("report");
    root.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\n");
    let cfg = RecommendConfig { root: root.0.clone(), ..RecommendConfig::default() };
    let loaded = load(&cfg).unwrap();
    let report = assess(&loaded, &cfg);
    let uid0 = report.findings.iter().find(|f| f.check == "91061").unwrap();
    assert_eq!((uid0.result, uid0.severity), (CheckResult::Fail, "critical"));
    assert!(uid0.reason.contains("/etc/passwd:2: toor:x:0:0"), "{}", uid0.reason);
    assert!(report.high_failures() >= 1);
    let line: serde_json::Value = serde_json::from_str(&report.json_lines()[0]).unwrap();
    assert_eq!(line["kind"], "recommendation");
    let evs = report.os_baseline(256 * 1024);
    assert_eq!(evs.len(), 1);
    evs[0].validate().unwrap();
    let json = serde_json::to_value(&evs[0]).unwrap();
    assert_eq!(json["Name"], "OSBaseline");
    let items = json["Payload"].as_array().unwrap();
    // A small max_message_size splits the snapshot; every item is kept.
    let small = report.os_baseline(2048);
    assert!(small.len() > 1);
    let n: usize = small.iter().map(|e| e.payload.len()).sum();
    assert_eq!(n, items.len());
    for e in &small {
        assert!(serde_json::to_vec(e).unwrap().len() < 2048, "{e:?}");
    }
    assert!(items.iter().any(|i| i["CceId"] == "shrike_gateway:91061"
        && i["Result"] == "Fail"
        && i["Severity"] == "Critical"));
    assert!(report.table().contains("shrike_gateway:91061"));

    // Requirements not met: every check of the policy is not applicable.
    let empty = Root::new("report-empty");
    let cfg = RecommendConfig { root: empty.0.clone(), ..RecommendConfig::default() };
    let report = assess(&load(&cfg).unwrap(), &cfg);
    assert!(report.findings.iter().all(|f| f.result == CheckResult::NotApplicable));
    assert!(Path::new(&cfg.root).exists());
}

#[test]
fn os_regex_translation() {
    let m = |re: &str, s: &str| Regex::new(&policy::from_os_regex(re)).unwrap().is_match(s);
    assert!(m(r"^Port\.+22", "Port  22"));
    assert!(!m(r"^a.c", "abc"), "a bare . is a dot");
    assert!(m(r"^a.c", "a.c"));
    assert!(m(r"^\w+$", "user-1@host"));
    assert!(!m(r"^\w+$", "a_b"), "OS_Regex's \\w has no underscore");
    assert!(m(r"^\p$", "?") && m(r"^\p$", "{") && !m(r"^\p$", "a"));
    assert!(m(r"^x? [y]{2}$", "x? [y]{2}"), "?, [ ], {{ }} are literals");
    assert!(m(r"\$HOME \(x\)", "$HOME (x)"));
    assert!(m(r"^a|^b", "b"));
}

#[test]
fn failures_say_what_was_found() {
    let root = Root::new("near");
    root.write("/etc/app.conf", "# MaxAuthTries 3\nPort 22\n  MaxAuthTries 10\n");
    root.write("/proc/sys/kernel/x", "0\n");
    let reason = |rule: &str| {
        let r = policy::parse_rule(rule, &[], true).unwrap();
        eval::rule(&r, &Origin::LocalFile, &mut root.env()).detail
    };
    assert_eq!(
        reason(r"f:/etc/app.conf -> n:^\s*MaxAuthTries\s+(\d+) compare <= 4"),
        "found /etc/app.conf:3: MaxAuthTries 10"
    );
    assert_eq!(reason(r"f:/proc/sys/kernel/x -> n:^(\d+) compare == 1"), "found /proc/sys/kernel/x:1: 0");
    assert_eq!(reason(r"f:/etc/app.conf -> r:^Banner"), "", "nothing near: nothing said");
}

/// The layout of Wazuh's newer policies (CIS Debian 12): `name` for the
/// title, `compliance` as one map, extra keys (impact, mitre) ignored, and a
/// second ` -> ` in a command rule taken as part of its pattern.
#[test]
fn newer_wazuh_policy_layout() {
    let text = "policy:\n  id: p\n  name: n\nrequirements:\n  name: r\n  condition: all\n  rules:\n    - 'f:/a'\nchecks:\n  - id: 5\n    name: \"Ensure x\"\n    impact: none\n    compliance:\n      cis: [\"1.2.3\"]\n      pci_dss: [\"2.2\"]\n    mitre:\n      tactic: {id: [TA0005]}\n    condition: all\n    rules:\n      - 'c:auditctl -l -> r:x -> r:y'\n";
    let p = policy::parse(text, "n.yml", Origin::LocalFile).unwrap();
    let c = &p.checks[0];
    assert_eq!(c.title, "Ensure x");
    assert_eq!(c.cce_id("p"), "CIS 1.2.3");
    assert!(matches!(&c.rules[0].target, policy::Target::Command(cmd, Some(_)) if cmd == "auditctl -l"));
}

/// Links inside the assessed root never lead out of it: a `d:` rule reading
/// a linked file, `x:lines`, `f:` and `p:` all resolve inside the root.
#[test]
fn rules_never_read_outside_the_root() {
    let root = Root::new("escape");
    root.write("/etc/marker", "inside\n");
    std::fs::create_dir_all(root.0.join("etc/conf.d")).unwrap();
    // Outside the root, a file with a line the rules look for.
    let outside = root.0.with_extension("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "SECRET\n").unwrap();
    let abs = outside.join("secret");
    std::os::unix::fs::symlink(&abs, root.0.join("etc/conf.d/a.conf")).unwrap();
    std::os::unix::fs::symlink(&abs, root.0.join("etc/link")).unwrap();
    let up = format!("../../../../../../../../..{}", abs.display());
    std::os::unix::fs::symlink(&up, root.0.join("etc/up")).unwrap();
    std::fs::create_dir_all(root.0.join("proc")).unwrap();
    std::os::unix::fs::symlink("/proc/self", root.0.join("proc/1")).unwrap();
    for rule in [
        "d:/etc/conf.d -> r:conf -> r:SECRET",
        "f:/etc/link -> r:SECRET",
        "f:/etc/up -> r:SECRET",
        "x:lines /etc/link,/etc/up -> r:SECRET",
        "x:stat /etc/link",
    ] {
        assert_ne!(outcome_as(&root, rule, true, &Origin::Embedded), Pass, "{rule} read outside the root");
    }
    // The live /proc/self would be this test process.
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(outcome(&root, &format!("p:{}", me.trim())), Fail);
    let _ = std::fs::remove_dir_all(&outside);
}
