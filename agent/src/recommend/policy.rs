//! Policies in the YAML format of Wazuh's security configuration assessment
//! (SCA): `policy` {id, name, description, regex_type}, optional
//! `requirements` and `variables`, and `checks`, each with id, title,
//! description, rationale, remediation, compliance, `condition: all|any|none`
//! and `rules`. Our one addition to a check is `severity` (critical, high,
//! medium — the default —, low, informational).
//!
//! Rules (`[not ]TYPE:TARGET[ -> CONTENT]`), as Wazuh reads them:
//! - `f:PATH[,PATH...]` a file exists; `f:PATH -> CONTENT` a line of it matches;
//! - `d:DIR` exists; `d:DIR -> NAME|r:NAME_REGEX[ -> CONTENT]` a file in it
//!   (searched recursively) by name, and a line of such a file;
//! - `p:NAME` a process runs (its comm, argv[0] or its base name);
//! - `c:COMMAND -> CONTENT` a line of the command's output (local policy
//!   files with `allow_commands` only);
//! - CONTENT: `r:REGEX`, `n:REGEX_WITH_A_GROUP compare OP NUMBER` (`<`, `<=`,
//!   `==`, `!=`, `>=`, `>`), a literal whole line otherwise; `!` before one
//!   negates it, ` && ` requires several on the same line;
//! - `not` before a rule swaps pass and fail (not applicable stays so).
//!
//! Regexes are Wazuh's OS_Regex by default (`\.` any character, `.` a dot,
//! `\p` punctuation, `\w` `[A-Za-z0-9@-]`; `\s` is any white space, a
//! superset of OS_Regex's), translated; `regex_type: pcre2`
//! takes them as written (Rust's regex syntax: no look-around or
//! back-references, a rule using them is a load error).
//!
//! Shrike's extensions, `x:` rules (Wazuh has no rule type for these):
//! see [`super::sources`].

use std::{collections::BTreeMap, path::Path};

use regex::Regex;
use serde::Deserialize;
use yaml_serde::Value;

use super::sources::Source;

/// Where a policy came from: only a local file may run commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Built into the agent (Shrike's gateway policy).
    Embedded,
    /// A file on this machine (`--policy`, `policies = [...]`).
    LocalFile,
    /// Received from elsewhere (remote configuration): never runs commands.
    Remote,
}

#[derive(Debug)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The file it was read from (or `builtin:<id>`).
    pub file: String,
    pub origin: Origin,
    pub requirements: Option<Check>,
    pub checks: Vec<Check>,
    /// Rules of a type Shrike does not evaluate (Windows registry...),
    /// skipped: (rule type, count).
    pub skipped: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub description: String,
    pub rationale: String,
    pub remediation: String,
    /// `compliance` as written: (standard, ids), e.g. ("cis", ["5.2.8"]).
    pub compliance: Vec<(String, Vec<String>)>,
    pub condition: Condition,
    pub rules: Vec<Rule>,
    pub severity: Severity,
    /// Line of the check in its file.
    pub line: usize,
}

impl Check {
    /// CceId for the Azure schema: a `cce` id, else `CIS <id>` when a CIS
    /// id exists, else the policy's own check id.
    pub fn cce_id(&self, policy: &str) -> String {
        let first = |std: &str| {
            self.compliance.iter().find(|(s, _)| s.eq_ignore_ascii_case(std)).and_then(|(_, v)| v.first())
        };
        if let Some(c) = first("cce") {
            c.clone()
        } else if let Some(c) = first("cis") {
            format!("CIS {c}")
        } else {
            format!("{policy}:{}", self.id)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    All,
    Any,
    None,
}

#[derive(Debug)]
pub struct Rule {
    /// The rule as written (after variables), for messages.
    pub text: String,
    /// `not` before it.
    pub negate: bool,
    pub target: Target,
}

#[derive(Debug)]
pub enum Target {
    /// `f:` a list of files, and what a line must match (None: existence).
    File(Vec<String>, Option<Content>),
    /// `d:` directories, a file-name matcher, what a line must match.
    Dir(Vec<String>, Option<NameMatch>, Option<Content>),
    /// `p:` a process name.
    Process(String),
    /// `c:` a command line and its output's match.
    Command(String, Option<Content>),
    /// `x:` one of Shrike's sources and what a line of it must match.
    Ext(Source, Option<Content>),
    /// A rule type Shrike does not evaluate (counted, not applicable).
    Unknown(String),
}

#[derive(Debug)]
pub enum NameMatch {
    Literal(String),
    Regex(Regex),
}

impl NameMatch {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NameMatch::Literal(l) => l == name,
            NameMatch::Regex(r) => r.is_match(name),
        }
    }
}

/// ` && `-joined patterns that must all hold on one line.
#[derive(Debug)]
pub struct Content(pub Vec<Pattern>);

#[derive(Debug)]
pub struct Pattern {
    pub negate: bool,
    pub kind: PatternKind,
}

#[derive(Debug)]
pub enum PatternKind {
    /// The whole line, exactly.
    Literal(String),
    Regex(Regex),
    /// A regex whose first group is an integer, compared with a number.
    Numeric(Regex, Cmp, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

impl Cmp {
    pub fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Ge => a >= b,
            Cmp::Gt => a > b,
        }
    }
}

impl Content {
    /// Every pattern holds on `line`.
    pub fn matches(&self, line: &str) -> bool {
        self.0.iter().all(|p| p.matches(line) != p.negate)
    }
}

impl Pattern {
    fn matches(&self, line: &str) -> bool {
        match &self.kind {
            PatternKind::Literal(l) => line == l,
            PatternKind::Regex(r) => r.is_match(line),
            PatternKind::Numeric(r, op, want) => r
                .captures(line)
                .and_then(|c| c.get(1))
                .and_then(|m| m.as_str().trim().parse::<i64>().ok())
                .is_some_and(|got| op.holds(got, *want)),
        }
    }
}

/// What a policy file says, before its rules are compiled.
#[derive(Deserialize)]
struct RawPolicy {
    policy: RawHeader,
    #[serde(default)]
    requirements: Option<RawCheck>,
    #[serde(default)]
    variables: BTreeMap<String, Value>,
    #[serde(default)]
    checks: Vec<RawCheck>,
}

#[derive(Deserialize)]
struct RawHeader {
    id: Value,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex_type: Option<String>,
}

#[derive(Deserialize)]
struct RawCheck {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    title: String,
    /// Newer Wazuh policies name a check (and the requirements) `name`.
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    rationale: String,
    #[serde(default)]
    remediation: String,
    /// A list of one-key maps (`- cis: [...]`) or, in newer Wazuh
    /// policies, one map (`cis: [...]`).
    #[serde(default)]
    compliance: Value,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    severity: Option<String>,
}

/// Reads one policy: every problem is `file:line: reason`.
pub fn parse(text: &str, file: &str, origin: Origin) -> Result<Policy, Vec<String>> {
    let raw: RawPolicy = yaml_serde::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        vec![format!("{file}:{line}: {e}")]
    })?;
    let pcre = match raw.policy.regex_type.as_deref() {
        None | Some("osregex") => false,
        Some("pcre2") => true,
        Some(other) => {
            return Err(vec![format!(
                "{file}:{}: regex_type {other:?}: expected osregex or pcre2",
                find_line(text, 0, "regex_type")
            )]);
        }
    };
    let mut vars: Vec<(String, String)> = raw
        .variables
        .iter()
        .map(|(k, v)| {
            let name = if k.starts_with('$') { k.clone() } else { format!("${k}") };
            (name, scalar(v))
        })
        .collect();
    // Longest first: $sshd_file before $sshd.
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let policy_id = scalar(&raw.policy.id);
    let mut errors = Vec::new();
    let mut skipped = BTreeMap::new();
    let mut ctx = Ctx { text, file, pcre, vars: &vars, errors: &mut errors, skipped: &mut skipped };
    let requirements = raw.requirements.as_ref().map(|r| ctx.check(r, "requirements", true));
    let mut checks = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in raw.checks.iter().enumerate() {
        let check = ctx.check(c, &format!("check #{}", i + 1), false);
        if !seen.insert(check.id.clone()) {
            ctx.errors.push(format!("{file}:{}: duplicate check id {}", check.line, check.id));
        }
        checks.push(check);
    }
    if checks.is_empty() {
        errors.push(format!("{file}:1: no checks"));
    }
    if errors.is_empty() {
        Ok(Policy {
            id: policy_id,
            name: raw.policy.name,
            description: raw.policy.description,
            file: file.to_owned(),
            origin,
            requirements,
            checks,
            skipped,
        })
    } else {
        Err(errors)
    }
}

/// Reads a policy file from this machine.
pub fn load_file(path: &Path) -> Result<Policy, Vec<String>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{file}: {e}")])?;
    parse(&text, &file, Origin::LocalFile)
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    pcre: bool,
    vars: &'a [(String, String)],
    errors: &'a mut Vec<String>,
    skipped: &'a mut BTreeMap<String, u64>,
}

impl Ctx<'_> {
    fn check(&mut self, raw: &RawCheck, what: &str, requirements: bool) -> Check {
        let id = raw.id.as_ref().map(scalar).unwrap_or_default();
        let line = if requirements {
            find_line(self.text, 0, "requirements:")
        } else {
            find_check_line(self.text, &id)
        };
        if id.is_empty() && !requirements {
            self.errors.push(format!("{}:{line}: {what} has no id", self.file));
        }
        let condition = match raw.condition.as_deref().map(str::trim) {
            Some("all") => Condition::All,
            Some("any") => Condition::Any,
            Some("none") => Condition::None,
            other => {
                self.errors.push(format!(
                    "{}:{line}: {what} ({id}): condition {other:?}: expected all, any or none",
                    self.file
                ));
                Condition::All
            }
        };
        let severity = match raw.severity.as_deref().map(|s| s.trim().to_ascii_lowercase()) {
            None => Severity::Medium,
            Some(s) => match s.as_str() {
                "informational" | "info" => Severity::Informational,
                "low" => Severity::Low,
                "medium" => Severity::Medium,
                "high" => Severity::High,
                "critical" => Severity::Critical,
                _ => {
                    self.errors.push(format!("{}:{line}: check {id}: unknown severity {s:?}", self.file));
                    Severity::Medium
                }
            },
        };
        if raw.rules.is_empty() {
            self.errors.push(format!("{}:{line}: {what} ({id}) has no rules", self.file));
        }
        let mut rules = Vec::new();
        for r in &raw.rules {
            match parse_rule(r, self.vars, self.pcre) {
                Ok(rule) => {
                    if let Target::Unknown(t) = &rule.target {
                        *self.skipped.entry(t.clone()).or_default() += 1;
                    }
                    rules.push(rule);
                }
                Err(e) => {
                    let at = find_line(self.text, line.saturating_sub(1), rule_needle(r));
                    self.errors.push(format!("{}:{at}: check {id}: rule {r:?}: {e}", self.file));
                }
            }
        }
        Check {
            id,
            title: if raw.title.is_empty() { raw.name.clone() } else { raw.title.clone() },
            description: raw.description.trim().to_owned(),
            rationale: raw.rationale.trim().to_owned(),
            remediation: raw.remediation.trim().to_owned(),
            compliance: compliance(&raw.compliance),
            condition,
            rules,
            severity,
            line,
        }
    }
}

/// One rule, compiled.
pub fn parse_rule(text: &str, vars: &[(String, String)], pcre: bool) -> Result<Rule, String> {
    let mut t = text.trim();
    let mut negate = false;
    if let Some(rest) = t.strip_prefix("not ") {
        negate = true;
        t = rest.trim_start();
    }
    let mut parts = t.split(" -> ");
    let location = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let location = expand(location, vars);
    let (ty, target) = match location.split_once(':') {
        Some((ty, target)) if ty.len() == 1 => (ty, target.trim()),
        _ => return Err("expected TYPE:TARGET (f:, d:, p:, c: or x:)".into()),
    };
    if target.is_empty() {
        return Err("empty target".into());
    }
    let content = |i: usize| rest.get(i).map(|c| parse_content(c, pcre)).transpose();
    // Like Wazuh, the content of a file, command or x: rule is everything
    // after its first ` -> ` (a second one is part of the pattern).
    let joined = || -> Result<Option<Content>, String> {
        if rest.is_empty() { Ok(None) } else { parse_content(&rest.join(" -> "), pcre).map(Some) }
    };
    let too_many = |n: usize| {
        if rest.len() > n { Err(format!("{ty}: rules take at most {n} ` -> ` part(s)")) } else { Ok(()) }
    };
    let list = || target.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let target = match ty {
        "f" => Target::File(list(), joined()?),
        "d" => {
            too_many(2)?;
            let name = rest
                .first()
                .map(|n| match n.trim().strip_prefix("r:") {
                    Some(re) => compile(re, pcre).map(NameMatch::Regex),
                    None => Ok(NameMatch::Literal(n.trim().to_owned())),
                })
                .transpose()?;
            Target::Dir(list(), name, content(1)?)
        }
        "p" => {
            too_many(0)?;
            Target::Process(target.to_owned())
        }
        "c" => Target::Command(target.to_owned(), joined()?),
        "x" => Target::Ext(Source::parse(target)?, joined()?),
        other => {
            // Windows registry (`r:`) and anything newer: skipped, counted.
            Target::Unknown(format!("{other}:"))
        }
    };
    Ok(Rule {
        text: format!("{}{location}{}", if negate { "not " } else { "" }, tail(&rest)),
        negate,
        target,
    })
}

fn tail(rest: &[&str]) -> String {
    rest.iter().map(|r| format!(" -> {r}")).collect()
}

fn parse_content(text: &str, pcre: bool) -> Result<Content, String> {
    let mut out = Vec::new();
    for p in text.split(" && ") {
        let p = p.trim();
        let (negate, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let kind = if let Some(re) = p.strip_prefix("r:") {
            PatternKind::Regex(compile(re, pcre)?)
        } else if let Some(n) = p.strip_prefix("n:") {
            let (re, cmp) = n.rsplit_once(" compare ").ok_or("n: needs `REGEX compare OP NUMBER`")?;
            let mut it = cmp.split_whitespace();
            let op = match it.next() {
                Some("<") => Cmp::Lt,
                Some("<=") => Cmp::Le,
                Some("==") => Cmp::Eq,
                Some("!=") => Cmp::Ne,
                Some(">=") => Cmp::Ge,
                Some(">") => Cmp::Gt,
                other => return Err(format!("compare operator {other:?}: expected <, <=, ==, !=, >= or >")),
            };
            let value = it
                .next()
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| format!("compare {cmp:?}: the value is not an integer"))?;
            let re = compile(re, pcre)?;
            if re.captures_len() < 2 {
                return Err("n: the regex needs a capture group for the number".into());
            }
            PatternKind::Numeric(re, op, value)
        } else {
            PatternKind::Literal(p.to_owned())
        };
        out.push(Pattern { negate, kind });
    }
    Ok(Content(out))
}

fn compile(re: &str, pcre: bool) -> Result<Regex, String> {
    let pattern = if pcre { re.to_owned() } else { from_os_regex(re) };
    Regex::new(&pattern).map_err(|e| format!("regex {re:?}: {e}"))
}

/// Wazuh's OS_Regex in Rust's syntax: `\.` is any character, a bare `.`
/// and the brackets and braces OS_Regex does not have are literals.
pub fn from_os_regex(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 8);
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('.') => out.push('.'),
                Some('p') => out.push_str(r#"[()*+,\-.:;<=>?\[\]!"'#$%&|{}]"#),
                Some('w') => out.push_str("[A-Za-z0-9@-]"),
                Some('W') => out.push_str("[^A-Za-z0-9@-]"),
                Some(c @ ('d' | 'D' | 's' | 'S' | 't')) => {
                    out.push('\\');
                    out.push(c);
                }
                Some(other) => out.push_str(&regex::escape(&other.to_string())),
                None => out.push_str("\\\\"),
            },
            '.' | '[' | ']' | '{' | '}' | '?' => out.push_str(&regex::escape(&c.to_string())),
            c => out.push(c),
        }
    }
    out
}

/// (standard, ids) pairs of a `compliance` value in either form.
fn compliance(v: &Value) -> Vec<(String, Vec<String>)> {
    let ids = |v: &Value| match v {
        Value::Sequence(s) => s.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    };
    let pairs = |m: &yaml_serde::Mapping| -> Vec<(String, Vec<String>)> {
        m.iter().map(|(k, v)| (scalar(k), ids(v))).collect()
    };
    match v {
        Value::Mapping(m) => pairs(m),
        Value::Sequence(items) => items
            .iter()
            .filter_map(|i| if let Value::Mapping(m) = i { Some(pairs(m)) } else { None })
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

fn expand(s: &str, vars: &[(String, String)]) -> String {
    let mut s = s.to_owned();
    if s.contains('$') {
        for (k, v) in vars {
            s = s.replace(k.as_str(), v);
        }
    }
    s
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Sequence(s) => s.iter().map(scalar).collect::<Vec<_>>().join(","),
        _ => String::new(),
    }
}

/// The part of a rule most likely to be found verbatim in the file.
fn rule_needle(rule: &str) -> &str {
    let r = rule.trim().trim_start_matches("not ").trim();
    let end = r.find(" -> ").unwrap_or(r.len()).min(40);
    r.get(..end).unwrap_or(r)
}

/// The 1-based line of the first line at or after `from` (0-based) that
/// contains `needle`, or `from + 1`.
fn find_line(text: &str, from: usize, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or(from + 1)
}

/// The line of `- id: ID`.
fn find_check_line(text: &str, id: &str) -> usize {
    text.lines()
        .enumerate()
        .find(|(_, l)| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            l.strip_prefix("id:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == id)
        })
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}
