//! FirewallConfiguration with real nftables rules: `shrike run --dry-run` in a
//! new network namespace (`unshare -n`) where a test table drops TCP port
//! 2323 on input and accepts 10.0.0.0/8 on output; its snapshot lists both
//! rules with the right fields and the message validates against the schema.
//! Without nft on the agent's PATH, the same through iptables-save and
//! ip6tables-save (real iptables rules, chain policies included).
//! The agent drops its capabilities after attaching the probes, keeping
//! CAP_NET_ADMIN permitted (not effective) and in the bounding set, so this
//! also shows the snapshot still works after the drop (as root; a non-root
//! agent relies on the ambient raise, not exercised here).

mod hub_support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const RULES: &str = "table inet shrike_test {
  chain in { type filter hook input priority 0; policy accept; tcp dport 2323 drop; }
  chain out { type filter hook output priority 0; ip daddr 10.0.0.0/8 accept; }
}
";

/// Runs `setup` then `shrike run --dry-run` (with `PATH=path` when given) in
/// a new network namespace; returns the first message with a
/// FirewallConfiguration event and the agent's (CapPrm, CapEff) then.
fn snapshot_in_namespace(tag: &str, setup: &str, path: Option<&str>) -> (Value, Option<u64>, Option<u64>) {
    let dir = std::env::temp_dir().join(format!("shrike-firewall-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.nft"), RULES).unwrap();
    let env = path.map(|p| format!("env PATH={p} ")).unwrap_or_default();
    let script = format!(
        "{setup} && exec {env}{bin} run --dry-run --low-interval 1s --agent-id-file {d}/agent-id --spool-dir {d}/spool",
        d = dir.display(),
        setup = setup.replace("DIR", &dir.display().to_string()),
        bin = shrike_tests::agent_bin().display()
    );
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare -n shrike run");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
        if msg["Events"].as_array().is_some_and(|e| e.iter().any(|ev| ev["Name"] == "FirewallConfiguration"))
        {
            found = Some(msg);
        }
    }
    // After the drop, CAP_NET_ADMIN is permitted (for nft) but not effective.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let caps = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let (prm, eff) = (caps("CapPrm:"), caps("CapEff:"));
    // SAFETY: kill with integer arguments; `sh` exec'd the agent, same pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    let log = log.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let msg =
        found.unwrap_or_else(|| panic!("no FirewallConfiguration message within 90 s; agent log:\n{log}"));
    hub_support::assert_valid(&msg);
    (msg, prm, eff)
}

fn have(tool: &str, package: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{tool} is not installed (apt-get install {package})");
    eprintln!("skipped: {tool} is not installed");
    false
}

fn firewall_items(msg: &Value) -> Vec<Value> {
    let ev = msg["Events"].as_array().unwrap().iter().find(|e| e["Name"] == "FirewallConfiguration").unwrap();
    assert_eq!(
        (&ev["Category"], &ev["EventType"], &ev["IsEmpty"]),
        (&"Periodic".into(), &"Security".into(), &false.into())
    );
    ev["Payload"].as_array().unwrap().clone()
}

#[test]
fn nft_rules_in_a_namespace_are_reported() {
    if !shrike_tests::require_root() || !have("nft", "nftables") {
        return;
    }
    let (msg, prm, eff) = snapshot_in_namespace("nft", "nft -f DIR/rules.nft", None);
    let net_admin = 1u64 << 12;
    assert_eq!(prm.map(|p| p & net_admin), Some(net_admin), "CapPrm {prm:x?}");
    assert_eq!(eff.map(|e| e & net_admin), Some(0), "CapEff {eff:x?}");
    let items = firewall_items(&msg);
    assert_eq!(items.len(), 2, "only the test table's two rules in a fresh namespace: {items:#?}");
    let drop = items.iter().find(|i| i["ChainName"] == "in").expect("the input rule");
    assert_eq!(drop["Action"], "Deny", "{drop}");
    assert_eq!(drop["Direction"], "In", "{drop}");
    assert_eq!(drop["Protocol"], "TCP", "{drop}");
    assert_eq!(drop["DestinationPort"], "2323", "{drop}");
    assert_eq!(drop["Enabled"], true);
    assert_eq!(
        (&drop["ExtraDetails"]["Family"], &drop["ExtraDetails"]["Table"]),
        (&"inet".into(), &"shrike_test".into())
    );
    let accept = items.iter().find(|i| i["ChainName"] == "out").expect("the output rule");
    assert_eq!(accept["Action"], "Allow", "{accept}");
    assert_eq!(accept["Direction"], "Out", "{accept}");
    assert_eq!(accept["DestinationAddress"], "10.0.0.0/8", "{accept}");
    assert!(accept.get("DestinationPort").is_none(), "{accept}");
    assert!(drop["Priority"].is_i64() && accept["Priority"].is_i64());
}

/// Without nft on the agent's PATH, the iptables-save fallback: real
/// iptables rules (iptables-nft) with chain policies.
#[test]
fn iptables_rules_without_nft_are_reported() {
    if !shrike_tests::require_root() || !have("iptables-save", "iptables") {
        return;
    }
    let setup = "iptables -A INPUT -p tcp --dport 2323 -j DROP && iptables -A OUTPUT -d 10.0.0.0/8 -j ACCEPT \
         && ip6tables -A INPUT -s fd00::/8 -j DROP \
         && mkdir -p DIR/bin && ln -sf $(command -v iptables-save) DIR/bin/iptables-save \
         && ln -sf $(command -v ip6tables-save) DIR/bin/ip6tables-save";
    let bin = std::env::temp_dir().join(format!("shrike-firewall-ipt-{}/bin", std::process::id()));
    let (msg, _, _) = snapshot_in_namespace("ipt", setup, Some(bin.to_str().unwrap()));
    let items = firewall_items(&msg);
    let drop = items.iter().find(|i| i["DestinationPort"] == "2323").expect("the input rule");
    assert_eq!(
        (&drop["Action"], &drop["Direction"], &drop["Protocol"]),
        (&"Deny".into(), &"In".into(), &"TCP".into())
    );
    assert_eq!((&drop["ChainName"], &drop["ExtraDetails"]["Family"]), (&"INPUT".into(), &"ip".into()));
    let accept = items.iter().find(|i| i["DestinationAddress"] == "10.0.0.0/8").expect("the output rule");
    assert_eq!((&accept["Action"], &accept["Direction"]), (&"Allow".into(), &"Out".into()));
    let policies = items.iter().filter(|i| i["ExtraDetails"]["Policy"] == "true").count();
    assert_eq!(policies, 6, "INPUT, FORWARD, OUTPUT of ip and ip6: {items:#?}");
    let v6 = items.iter().find(|i| i["SourceAddress"] == "fd00::/8").expect("the ip6 rule");
    assert_eq!((&v6["Action"], &v6["ExtraDetails"]["Family"]), (&"Deny".into(), &"ip6".into()));
    assert_eq!(items.len(), 9, "{items:#?}");
}
