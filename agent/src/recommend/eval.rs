//! Evaluation: a rule gives passed, failed or not applicable (its target
//! could not be read); a check combines its rules by its condition, as
//! Wazuh's truth table says:
//! - `all`: failed if one fails; else not applicable if one is; else passed;
//! - `any`: passed if one passes; else not applicable if one is; else failed;
//! - `none`: failed if one passes; else not applicable if one is; else passed.

use std::{
    collections::HashSet,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    creds::{CredConfig, CredStats},
    policy::{Check, Condition, Content, NameMatch, Origin, PatternKind, Rule, Target},
    root,
    sources::{self, Line, Source},
};

/// Bytes of a file or a command's output looked at, at most.
const MAX_READ: u64 = 8 << 20;
/// Characters of a matching line quoted in a result's reason.
const EVIDENCE_CHARS: usize = 200;
/// Levels a `d:` rule searches below its directory.
const DIR_DEPTH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    NotApplicable,
}

/// A rule's or a check's result with what explains it.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub outcome: Outcome,
    /// What was found (the matching line, the file) or why not applicable.
    pub detail: String,
}

/// What the rules read and may do, for one run.
pub struct Env {
    pub root: PathBuf,
    /// `allow_commands`: `c:` rules of local policy files run.
    pub allow_commands: bool,
    pub command_timeout: Duration,
    pub creds: CredConfig,
    pub cred_stats: CredStats,
    /// Walks that stopped at their bound (their directories).
    pub truncated: Vec<String>,
    dpkg: Option<Option<HashSet<String>>>,
    cache: Vec<(Source, Result<Vec<Line>, String>)>,
}

impl Env {
    pub fn new(root: PathBuf, allow_commands: bool, creds: CredConfig) -> Env {
        Env {
            root,
            allow_commands,
            command_timeout: Duration::from_secs(10),
            creds,
            cred_stats: CredStats::default(),
            truncated: Vec::new(),
            dpkg: None,
            cache: Vec::new(),
        }
    }

    /// Whether dpkg installed `path` (as seen under the root).
    pub fn dpkg_owner(&mut self, path: &str) -> &'static str {
        let root = self.root.clone();
        let Some(set) = self.dpkg.get_or_insert_with(|| sources::dpkg_files(&root)) else { return "unknown" };
        // usrmerge: dpkg may list /bin/su for /usr/bin/su and the reverse.
        let alt = match path.strip_prefix("/usr") {
            Some(rest) => rest.to_owned(),
            None => format!("/usr{path}"),
        };
        if set.contains(path) || set.contains(&alt) { "owned" } else { "unowned" }
    }

    fn source(&mut self, src: &Source) -> Result<Vec<Line>, String> {
        if let Some((_, r)) = self.cache.iter().find(|(s, _)| s == src) {
            return r.clone();
        }
        let r = sources::lines(src, self);
        self.cache.push((src.clone(), r.clone()));
        r
    }
}

impl Clone for Line {
    fn clone(&self) -> Line {
        Line { text: self.text.clone(), origin: self.origin.clone() }
    }
}

fn pass(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::Pass, detail: detail.into() }
}
fn fail(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::Fail, detail: detail.into() }
}
fn na(detail: impl Into<String>) -> Verdict {
    Verdict { outcome: Outcome::NotApplicable, detail: detail.into() }
}

/// A check's result: the condition over its rules' verdicts, with the rule
/// that decided it.
pub fn check(c: &Check, origin: &Origin, env: &mut Env) -> Verdict {
    let verdicts: Vec<(&Rule, Verdict)> = c.rules.iter().map(|r| (r, rule(r, origin, env))).collect();
    combine(c.condition, &verdicts)
}

pub fn combine(cond: Condition, verdicts: &[(&Rule, Verdict)]) -> Verdict {
    let first = |o: Outcome| verdicts.iter().find(|(_, v)| v.outcome == o);
    let explain = |(r, v): &(&Rule, Verdict)| {
        if v.detail.is_empty() {
            format!("rule `{}`", r.text)
        } else {
            format!("rule `{}`: {}", r.text, v.detail)
        }
    };
    let na_or = |v: Verdict| match first(Outcome::NotApplicable) {
        Some(x) => na(explain(x)),
        None => v,
    };
    match cond {
        Condition::All => match first(Outcome::Fail) {
            Some(x) => fail(format!("{} failed", explain(x))),
            None => na_or(pass("")),
        },
        Condition::Any => match first(Outcome::Pass) {
            Some(x) => pass(explain(x)),
            None => na_or(fail(format!("none of {} rule(s) holds", verdicts.len()))),
        },
        Condition::None => match first(Outcome::Pass) {
            Some(x) => fail(format!("{} holds", explain(x))),
            None => na_or(pass("")),
        },
    }
}

/// One rule, `not` applied.
pub fn rule(r: &Rule, origin: &Origin, env: &mut Env) -> Verdict {
    let v = match &r.target {
        Target::File(files, content) => file_rule(env, files, content.as_ref()),
        Target::Dir(dirs, name, content) => dir_rule(env, dirs, name.as_ref(), content.as_ref()),
        Target::Process(name) => process_rule(&env.root, name),
        Target::Command(cmd, content) => command_rule(env, origin, cmd, content.as_ref()),
        Target::Ext(src, content) => match env.source(src) {
            Err(why) => na(why),
            Ok(lines) => match content {
                None => match lines.first() {
                    Some(l) => pass(format!("{}: {}", l.origin, clip(&l.text))),
                    None => fail(""),
                },
                Some(c) => match lines.iter().find(|l| c.matches(&l.text)) {
                    Some(l) => pass(format!("{}: {}", l.origin, clip(&l.text))),
                    None => fail(near(lines.iter().map(|l| (l.origin.clone(), l.text.as_str())), c)),
                },
            },
        },
        Target::Unknown(ty) => na(format!("rule type {ty} is not evaluated by Shrike")),
    };
    if r.negate {
        match v.outcome {
            Outcome::Pass => fail(v.detail),
            Outcome::Fail => pass(v.detail),
            Outcome::NotApplicable => v,
        }
    } else {
        v
    }
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(MAX_READ).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The first line of `text` that `content` matches, as `origin:N: line`.
fn find(text: &str, content: &Content, origin: &str) -> Option<String> {
    text.lines()
        .enumerate()
        .find(|(_, l)| content.matches(l))
        .map(|(i, l)| format!("{origin}:{}: {}", i + 1, clip(l.trim())))
}

/// A line as evidence: at most [`EVIDENCE_CHARS`] characters.
pub fn clip(line: &str) -> String {
    match line.char_indices().nth(EVIDENCE_CHARS) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

fn file_rule(env: &Env, files: &[String], content: Option<&Content>) -> Verdict {
    let mut read_any = false;
    let mut missing = Vec::new();
    let mut seen = String::new();
    for f in files {
        let Ok(real) = root::resolve(&env.root, f) else {
            missing.push(f.as_str());
            continue;
        };
        match content {
            None => {
                if real.exists() {
                    return pass(format!("{f} exists"));
                }
            }
            Some(c) => match read_bounded(&real) {
                Ok(text) => {
                    read_any = true;
                    if let Some(hit) = find(&text, c, f) {
                        return pass(hit);
                    }
                    if seen.is_empty() {
                        let lines = text.lines().enumerate().map(|(i, l)| (format!("{f}:{}", i + 1), l));
                        seen = near(lines, c);
                    }
                }
                Err(_) => missing.push(f.as_str()),
            },
        }
    }
    match content {
        None => fail(format!("{} not found", files.join(", "))),
        Some(_) if !read_any => na(format!("cannot read {}", missing.join(", "))),
        Some(_) => fail(seen),
    }
}

/// What a failed content rule found instead, to say why it failed: the
/// first line that starts with the keyword its first pattern looks for
/// (`^\s*MaxAuthTries\s+...` finds `MaxAuthTries 10`), or the only line of
/// a one-line file (`0` in a /proc/sys file). Empty when neither helps.
fn near<'a>(lines: impl Iterator<Item = (String, &'a str)>, c: &Content) -> String {
    let lines: Vec<(String, &str)> =
        lines.filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
    let keyword = c.0.iter().filter(|p| !p.negate).find_map(|p| match &p.kind {
        PatternKind::Regex(r) | PatternKind::Numeric(r, ..) => keyword_of(r.as_str()),
        PatternKind::Literal(l) => l.split_whitespace().next().map(str::to_ascii_lowercase),
    });
    let hit = match keyword {
        Some(k) => lines.iter().find(|(_, l)| l.trim_start().to_ascii_lowercase().starts_with(&k)),
        None => None,
    };
    match (hit, lines.as_slice()) {
        (Some((o, l)), _) | (None, [(o, l)]) => format!("found {o}: {}", clip(l.trim())),
        _ => String::new(),
    }
}

/// The literal word an anchored regex starts with, lower case, when it has
/// one of at least three characters.
fn keyword_of(re: &str) -> Option<String> {
    let mut r = re.strip_prefix("(?i)").unwrap_or(re);
    r = r.strip_prefix('^')?;
    loop {
        let before = r;
        for p in [r"\s*", r"\s+", r"\t*", r"\t+"] {
            r = r.strip_prefix(p).unwrap_or(r);
        }
        if r == before {
            break;
        }
    }
    let word: String =
        r.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')).collect();
    (word.len() >= 3).then(|| word.to_ascii_lowercase())
}

fn dir_rule(env: &Env, dirs: &[String], name: Option<&NameMatch>, content: Option<&Content>) -> Verdict {
    let mut any_dir = false;
    for d in dirs {
        let Ok(real) = root::resolve(&env.root, d) else { continue };
        if !real.is_dir() {
            continue;
        }
        any_dir = true;
        let Some(name) = name else { return pass(format!("{d} exists")) };
        let mut stack = vec![(real, 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if depth + 1 < DIR_DEPTH {
                        stack.push((e.path(), depth + 1));
                    }
                    continue;
                }
                let fname = e.file_name().to_string_lossy().into_owned();
                if !name.matches(&fname) {
                    continue;
                }
                let shown = root::display(&env.root, &e.path());
                match content {
                    None => return pass(format!("{shown} exists")),
                    Some(c) => {
                        // A symlink in the directory is followed inside the root only.
                        let Ok(real) = root::resolve(&env.root, &shown) else { continue };
                        if let Some(hit) = read_bounded(&real).ok().and_then(|t| find(&t, c, &shown)) {
                            return pass(hit);
                        }
                    }
                }
            }
        }
    }
    match (any_dir, name) {
        (false, None) => fail(format!("{} not found", dirs.join(", "))),
        (false, Some(_)) => na(format!("no directory {}", dirs.join(", "))),
        (true, _) => fail(""),
    }
}

fn process_rule(root: &Path, name: &str) -> Verdict {
    let Ok(proc) = root::resolve(root, "/proc") else { return na("no /proc") };
    let Ok(rd) = std::fs::read_dir(&proc) else { return na("cannot read /proc") };
    for e in rd.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Under a --root, /proc/PID may be a link: resolved inside the root.
        let dir = root::resolve(root, &format!("/proc/{pid}")).unwrap_or_else(|_| e.path());
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().map(String::from_utf8_lossy).unwrap_or_default();
        let base = argv0.rsplit('/').next().unwrap_or_default();
        if comm.trim_end() == name || argv0 == name || base == name {
            return pass(format!("process {pid} ({})", comm.trim_end()));
        }
    }
    fail(format!("no process {name}"))
}

fn command_rule(env: &Env, origin: &Origin, cmd: &str, content: Option<&Content>) -> Verdict {
    if *origin != Origin::LocalFile {
        return na("commands run only from local policy files");
    }
    if !env.allow_commands {
        return na("commands are not run (allow_commands is off)");
    }
    if env.root != Path::new("/") {
        // The command would see the live system, not the root assessed.
        return na("commands are not run with --root");
    }
    let out = match run_command(cmd, env.command_timeout) {
        Ok(o) => o,
        Err(e) => return na(format!("command failed: {e}")),
    };
    match content {
        None => pass(""),
        Some(c) => match find(&out, c, "output") {
            Some(hit) => pass(hit),
            None => fail(""),
        },
    }
}

/// Runs `sh -c CMD`, its standard output (bounded), killed after `timeout`.
fn run_command(cmd: &str, timeout: Duration) -> std::io::Result<String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(MAX_READ).read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("timed out after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let buf = reader.join().unwrap_or_default();
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
