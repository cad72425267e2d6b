//! `FirewallConfiguration`: the nftables rules (`nft -j list ruleset`) or,
//! where nft is missing, the iptables ones (`iptables-save`,
//! `ip6tables-save`), one payload item per rule.
//!
//! Why a child process and not netlink: reading rules needs CAP_NET_ADMIN and
//! an AF_NETLINK socket. The agent keeps CAP_NET_ADMIN only in its permitted
//! set after attaching the probes (caps.rs), never effective; it is raised as
//! an ambient capability for the child alone ([`crate::caps::with_ambient`]),
//! so the agent itself never holds it. nft's JSON is the stable, documented
//! interface of nftables (libnftables-json(5)); its netlink messages are not.
//! Under the hardened unit (no CAP_NET_ADMIN, no AF_NETLINK: adding them
//! costs 0.2 of exposure, over the unit's 3.0 budget) the snapshot fails and
//! says why once (see README "Firewall snapshot").

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use shrike_common::schema::{self as sm, ExtraDetails, FirewallAction};

/// Why no rules could be read.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("neither nft nor iptables-save could be run: {0}")]
    NoTool(String),
    #[error(
        "{tool} failed ({status}): {stderr} (reading firewall rules needs CAP_NET_ADMIN and AF_NETLINK; set firewall_snapshot = false to turn this snapshot off)"
    )]
    Failed { tool: String, status: String, stderr: String },
    #[error("nft printed JSON that does not parse: {0}")]
    BadJson(String),
}

/// `hook`: the netfilter hook the chain is attached to (a base chain), else
/// its name (iptables' built-in chains are named after their hooks).
fn item(
    chain: &str,
    hook: &str,
    family: &str,
    table: &str,
    handle: Option<i64>,
) -> sm::FirewallConfiguration {
    let mut x = ExtraDetails::new();
    x.insert("Family".into(), family.into());
    x.insert("Table".into(), table.into());
    let direction = match hook.to_ascii_lowercase().as_str() {
        "input" | "prerouting" => Some(sm::Direction::In),
        "output" | "postrouting" => Some(sm::Direction::Out),
        _ => None,
    };
    sm::FirewallConfiguration {
        priority: handle,
        direction,
        chain_name: Some(chain.into()),
        application: None,
        enabled: true,
        action: FirewallAction::Other,
        source_address: None,
        source_port: None,
        destination_address: None,
        destination_port: None,
        protocol: None,
        extra_details: x,
    }
}

/// A match's right-hand side as text: "10.0.0.0/8", "2323", "22-25", "{a,b}".
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", value_text(&p["addr"]), value_text(&p["len"]))
            } else if let Some(Value::Array(r)) = o.get("range") {
                r.iter().map(value_text).collect::<Vec<_>>().join("-")
            } else if let Some(Value::Array(s)) = o.get("set") {
                s.iter().map(value_text).collect::<Vec<_>>().join(",")
            } else {
                v.to_string()
            }
        }
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(","),
        _ => v.to_string(),
    }
}

/// Rules of `nft -j list ruleset`'s output (libnftables-json(5)).
pub fn parse_nft(json: &str) -> Result<Vec<sm::FirewallConfiguration>, FirewallError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| FirewallError::BadJson(e.to_string()))?;
    let mut out = Vec::new();
    let Some(items) = doc.get("nftables").and_then(Value::as_array) else {
        return Err(FirewallError::BadJson("no \"nftables\" array".into()));
    };
    // (family, table, chain) -> hook of each base chain.
    let mut hooks = std::collections::HashMap::new();
    for c in items.iter().filter_map(|it| it.get("chain")) {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        if let Some(h) = c.get("hook").and_then(Value::as_str) {
            hooks.insert((s("family"), s("table"), s("name")), h.to_owned());
        }
    }
    for it in items {
        let Some(rule) = it.get("rule") else { continue };
        let s = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("");
        let hook = hooks.get(&(s("family").to_owned(), s("table").to_owned(), s("chain").to_owned()));
        let mut r = item(
            s("chain"),
            hook.map_or(s("chain"), String::as_str),
            s("family"),
            s("table"),
            rule.get("handle").and_then(Value::as_i64),
        );
        let mut other = Vec::new();
        for e in rule.get("expr").and_then(Value::as_array).into_iter().flatten() {
            let Some((verb, body)) = e.as_object().and_then(|o| o.iter().next()) else { continue };
            match verb.as_str() {
                "accept" => r.action = FirewallAction::Allow,
                "drop" | "reject" => r.action = FirewallAction::Deny,
                "match" => {
                    let right = value_text(&body["right"]);
                    let op = body["op"].as_str().unwrap_or("==");
                    let right = if op == "==" || op == "in" { right } else { format!("{op} {right}") };
                    if let Some(p) = body["left"].get("payload") {
                        let proto = p["protocol"].as_str().unwrap_or("");
                        match (proto, p["field"].as_str().unwrap_or("")) {
                            ("ip" | "ip6", "saddr") => r.source_address = Some(right),
                            ("ip" | "ip6", "daddr") => r.destination_address = Some(right),
                            (_, "sport") => {
                                r.protocol = Some(proto.to_ascii_uppercase());
                                r.source_port = Some(right);
                            }
                            (_, "dport") => {
                                r.protocol = Some(proto.to_ascii_uppercase());
                                r.destination_port = Some(right);
                            }
                            ("ip", "protocol") | ("ip6", "nexthdr") => {
                                r.protocol = Some(right.to_ascii_uppercase())
                            }
                            (p, f) => other.push(format!("{p} {f} {right}")),
                        }
                    } else if body["left"].get("meta").is_some_and(|m| m["key"] == "l4proto") {
                        r.protocol = Some(right.to_ascii_uppercase());
                    } else if let Some(Value::String(name)) = body["left"].get("meta").map(|m| &m["key"]) {
                        other.push(format!("meta {name} {right}"));
                    } else {
                        other.push(format!("{} {right}", body["left"]));
                    }
                }
                "counter" => {}
                "jump" | "goto" => {
                    r.extra_details
                        .insert("Verdict".into(), format!("{verb} {}", value_text(&body["target"])));
                }
                v => other.push(v.into()),
            }
        }
        if !other.is_empty() {
            r.extra_details.insert("OtherMatches".into(), other.join("; "));
        }
        out.push(r);
    }
    Ok(out)
}

/// Rules of `iptables-save` text (`family` is "ip" or "ip6"); policies of
/// built-in chains are reported too, as rules without matches.
pub fn parse_iptables_save(text: &str, family: &str) -> Vec<sm::FirewallConfiguration> {
    let mut out = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().into();
            continue;
        }
        if let Some(p) = line.strip_prefix(':') {
            // ":INPUT ACCEPT [0:0]": a built-in chain's policy ("-" for user chains).
            let mut f = p.split_whitespace();
            let (Some(chain), Some(policy)) = (f.next(), f.next()) else { continue };
            if policy != "-" {
                let mut r = item(chain, chain, family, &table, None);
                r.action = action(policy);
                r.extra_details.insert("Policy".into(), "true".into());
                out.push(r);
            }
            continue;
        }
        let Some(rest) = line.strip_prefix("-A ") else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let Some(chain) = words.first() else { continue };
        let mut r = item(chain, chain, family, &table, Some(out.len() as i64));
        let mut other = Vec::new();
        let mut i = 1;
        while i < words.len() {
            let (w, arg) = (words[i], words.get(i + 1).map(|s| s.to_string()));
            match w {
                "-s" => r.source_address = arg,
                "-d" => r.destination_address = arg,
                "-p" => r.protocol = arg.map(|a| a.to_ascii_uppercase()),
                "--sport" => r.source_port = arg.map(|a| a.replace(':', "-")),
                "--dport" => r.destination_port = arg.map(|a| a.replace(':', "-")),
                "-j" => {
                    let t = arg.unwrap_or_default();
                    r.action = action(&t);
                    if r.action == FirewallAction::Other {
                        r.extra_details.insert("Verdict".into(), t);
                    }
                }
                _ => {
                    other.push(w.to_string());
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        if !other.is_empty() {
            r.extra_details.insert("OtherMatches".into(), other.join(" "));
        }
        out.push(r);
    }
    out
}

fn action(target: &str) -> FirewallAction {
    match target {
        "ACCEPT" => FirewallAction::Allow,
        "DROP" | "REJECT" => FirewallAction::Deny,
        _ => FirewallAction::Other,
    }
}

/// A hung tool is killed after this: the snapshot runs on the agent's loop.
const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// `tool args`' exit status, stdout and stderr, or an error after
/// [`TOOL_TIMEOUT`] (the child killed).
fn output(tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    let mut child = crate::caps::with_ambient(crate::caps::CAP_NET_ADMIN, || {
        Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    })?;
    // Readers on threads: a full pipe must not stall the child.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {TOOL_TIMEOUT:?}, killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `tool args`, with CAP_NET_ADMIN ambient for it alone when the agent
/// holds it permitted; Ok(None) when the tool is not installed.
fn run(tool: &str, args: &[&str]) -> Result<Option<String>, FirewallError> {
    let out = match output(tool, args) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FirewallError::NoTool(format!("{tool}: {e}"))),
        Ok(o) => o,
    };
    if !out.status.success() {
        return Err(FirewallError::Failed {
            tool: tool.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
                .chars()
                .take(300)
                .collect(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The rules of this network namespace: nft first, iptables where nft is
/// missing.
pub fn rules() -> Result<Vec<sm::FirewallConfiguration>, FirewallError> {
    if let Some(json) = run("nft", &["-j", "list", "ruleset"])? {
        return parse_nft(&json);
    }
    let mut out = Vec::new();
    let mut found = false;
    for (tool, family) in [("iptables-save", "ip"), ("ip6tables-save", "ip6")] {
        if let Some(text) = run(tool, &[])? {
            found = true;
            out.extend(parse_iptables_save(&text, family));
        }
    }
    if !found {
        return Err(FirewallError::NoTool("not on PATH".into()));
    }
    Ok(out)
}

/// The snapshot event, or None after an error (logged once, until rules
/// can be read again: a missing capability does not flood the log).
pub fn snapshot() -> Option<sm::Event> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    use std::sync::atomic::Ordering::Relaxed;
    match rules() {
        Ok(r) => {
            WARNED.store(false, Relaxed);
            Some(if r.is_empty() {
                sm::Event::empty(sm::Kind::FirewallConfiguration)
            } else {
                sm::Event::new(sm::Payload::FirewallConfiguration(r))
            })
        }
        Err(e) => {
            if !WARNED.swap(true, Relaxed) {
                tracing::warn!("FirewallConfiguration snapshot skipped: {e}");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_json_rules() {
        let j = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"inet","name":"t","handle":1}},
          {"chain":{"family":"inet","table":"t","name":"in","hook":"input"}},{"chain":{"family":"inet","table":"t","name":"output"}},
          {"rule":{"family":"inet","table":"t","chain":"in","handle":3,"expr":[
            {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":2323}},{"drop":null}]}},
          {"rule":{"family":"inet","table":"t","chain":"output","handle":4,"expr":[
            {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"10.0.0.0","len":8}}}},
            {"counter":{"packets":0,"bytes":0}},{"accept":null}]}}]}"#;
        let r = parse_nft(j).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].direction, r[0].action, r[0].priority),
            (Some(sm::Direction::In), FirewallAction::Deny, Some(3))
        );
        assert_eq!((r[0].protocol.as_deref(), r[0].destination_port.as_deref()), (Some("TCP"), Some("2323")));
        assert_eq!(
            (r[1].action, r[1].destination_address.as_deref()),
            (FirewallAction::Allow, Some("10.0.0.0/8"))
        );
        assert_eq!(r[1].direction, Some(sm::Direction::Out));
        sm::Event::new(sm::Payload::FirewallConfiguration(r)).validate().unwrap();
        assert!(parse_nft("not json").is_err());
        assert!(parse_nft("{}").is_err());
    }

    #[test]
    fn tool_errors_are_reported_not_hung() {
        assert!(run("shrike-no-such-tool", &[]).unwrap().is_none());
        let e = run("false", &[]).unwrap_err();
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        assert_eq!(run("echo", &["a"]).unwrap().as_deref(), Some("a\n"));
    }

    #[test]
    fn iptables_save_rules() {
        let t = "*filter\n:INPUT DROP [0:0]\n:mine - [0:0]\n-A INPUT -s 192.168.0.0/16 -p tcp -m tcp --dport 22:25 -j ACCEPT\n-A OUTPUT -d 10.0.0.0/8 -j mine\nCOMMIT\n";
        let r = parse_iptables_save(t, "ip");
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].chain_name.as_deref(), r[0].action), (Some("INPUT"), FirewallAction::Deny));
        assert_eq!(r[1].source_address.as_deref(), Some("192.168.0.0/16"));
        assert_eq!(
            (r[1].protocol.as_deref(), r[1].destination_port.as_deref()),
            (Some("TCP"), Some("22-25"))
        );
        assert_eq!(r[2].extra_details.get("Verdict").map(String::as_str), Some("mine"));
        sm::Event::new(sm::Payload::FirewallConfiguration(r)).validate().unwrap();
    }
}
