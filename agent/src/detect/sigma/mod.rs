//! Sigma rules on the gateway.
//!
//! The engine is rsigma (`rsigma-parser` + `rsigma-eval`): rules are compiled
//! once into matchers (Aho-Corasick sets for value lists, regexes, CIDRs...)
//! behind a candidate-rule index that picks, from an event's field values,
//! the few rules worth evaluating; its correlation engine keeps every
//! correlation type's windows and takes each event's time as an argument.
//! What Shrike adds: which rules it can feed ([`fields`]: the one field table,
//! read through a zero-copy [`fields::View`] of our [`Event`]), errors with
//! their file and line ([`load`]), the alert contract, and a small bounded
//! pid -> command line table so that network rules and `ParentCommandLine`
//! see command lines (the process table keeps none).
//!
//! Each category has its own detection engine (its candidate index then only
//! holds the fields and needles of that category's rules: a connection is
//! not scanned for the process rules' command line needles); correlations
//! have a correlation engine of their own, fed the matches with the event's
//! own time (seconds), never the clock.

pub mod cli;
pub mod fields;
pub mod load;
pub mod record;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
};

use chrono::{DateTime, Utc};
use rsigma_eval::{
    CorrelationConfig, CorrelationEngine, Engine, EvaluationResult, ResultBody, TimestampFallback,
};
use rsigma_parser::SigmaCollection;

use self::{
    fields::{Category, View},
    load::{Doc, Loc, Names, Report},
};
use super::{Alert, DetectConfig, DetectError, DetectStats, Detector, Severity};
use crate::events::{Body, Event};

/// Command lines remembered for pids (network rules' CommandLine, process
/// rules' ParentCommandLine): about the live processes; when full, an
/// arbitrary entry makes room (a lost command line only hides that field).
const CMDLINE_CAP: usize = 8192;
/// Correlation state bounds: windows (correlation x group; the stalest go
/// first beyond it, rsigma's hard cap) and entries kept per window (the
/// oldest go first). A window needs no more entries than the largest
/// threshold + 1 to decide any condition (value_count gets 16 times that:
/// repeated values take room), so the cap follows the rules, within bounds.
const MAX_WINDOWS: usize = 4096;
const MIN_WINDOW_ENTRIES: usize = 256;
const MAX_WINDOW_ENTRIES: usize = 65_536;

fn window_entries(corrs: &[rsigma_parser::CorrelationRule]) -> usize {
    use rsigma_parser::{CorrelationCondition, CorrelationType};
    let need = corrs
        .iter()
        .map(|c| {
            let max = match &c.condition {
                CorrelationCondition::Threshold { predicates, .. } => {
                    predicates.iter().map(|(_, n)| *n as usize).max().unwrap_or(0)
                }
                CorrelationCondition::Extended(_) => 0,
            };
            let per = if c.correlation_type == CorrelationType::EventCount { 1 } else { 16 };
            max.saturating_add(1).saturating_mul(per)
        })
        .max()
        .unwrap_or(0);
    need.clamp(MIN_WINDOW_ENTRIES, MAX_WINDOW_ENTRIES)
}

/// An alert's fixed part, built once per rule.
struct Meta {
    rule: Arc<str>,
    title: Arc<str>,
    severity: Severity,
    tags: Arc<[Arc<str>]>,
    description: String,
}

impl Meta {
    fn new(
        id: Option<&str>,
        title: &str,
        level: Option<rsigma_parser::Level>,
        tags: &[String],
        description: Option<&str>,
        falsepositives: &[String],
    ) -> Meta {
        let mut desc = description.unwrap_or("").trim().to_owned();
        let fps: Vec<&str> = falsepositives.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if !fps.is_empty() {
            if !desc.is_empty() {
                desc.push(' ');
            }
            desc.push_str("False positives: ");
            desc.push_str(&fps.join("; "));
        }
        Meta {
            rule: id.unwrap_or(title).into(),
            title: title.into(),
            severity: level.and_then(|l| Severity::from_name(l.as_str())).unwrap_or(Severity::Medium),
            tags: tags.iter().map(|t| Arc::from(t.as_str())).collect(),
            description: desc,
        }
    }
}

/// Command lines by pid, bounded.
#[derive(Default)]
struct Cmdlines {
    map: HashMap<u32, Arc<str>>,
}

impl Cmdlines {
    fn insert(&mut self, pid: u32, cmd: Arc<str>) {
        if self.map.len() >= CMDLINE_CAP
            && !self.map.contains_key(&pid)
            && let Some(&victim) = self.map.keys().next()
        {
            self.map.remove(&victim);
        }
        self.map.insert(pid, cmd);
    }

    fn get(&self, pid: u32) -> Option<&str> {
        self.map.get(&pid).map(|s| &**s)
    }
}

/// The compiled rule set.
pub struct SigmaEngine {
    /// Detection rules, per category (`None`: the category has none).
    engines: [Option<Engine>; Category::ALL.len()],
    /// Correlation rules and the detection rules they refer to (only for
    /// the references: detection runs in `engines`).
    corr: Option<CorrelationEngine>,
    /// Alert parts by rule id (title when it has none).
    meta: HashMap<String, Arc<Meta>>,
    rules: usize,
    /// Whether a rule reads a remembered command line.
    keep_cmdlines: bool,
    cmdlines: Cmdlines,
    /// The exec's argv joined, reused between events.
    line: String,
    last_evict: i64,
}

fn cat_index(c: Category) -> usize {
    match c {
        Category::Process => 0,
        Category::Network => 1,
        Category::FileEvent => 2,
        Category::FileDelete => 3,
        Category::FileRename => 4,
        Category::Sdk => 5,
    }
}

impl SigmaEngine {
    /// Loaded detection and correlation rules.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// Keeps the command line tables up to date and evaluates `ev`; every
    /// detection and correlation that fired is appended to `out`.
    pub fn observe_event(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        let cat = match &ev.body {
            Body::Exec(_) | Body::Connect(_) | Body::Accept(_) | Body::File(_) => match Category::of(ev) {
                Some(c) => c,
                None => return,
            },
            Body::Fork(f) => {
                if self.keep_cmdlines
                    && let Some(c) = self.cmdlines.map.get(&ev.pid).cloned()
                {
                    self.cmdlines.insert(f.child_pid, c);
                }
                return;
            }
            Body::Exit(_) => {
                self.cmdlines.map.remove(&ev.pid);
                return;
            }
            Body::Sdk(sdk) => {
                self.observe_sdk(ev, sdk, out);
                return;
            }
            _ => return,
        };
        let Self { engines, corr, meta, keep_cmdlines, cmdlines, line, .. } = self;
        let engine = engines[cat_index(cat)].as_ref();
        if engine.is_none() && !*keep_cmdlines {
            return;
        }
        let (cmdline, parent) = match &ev.body {
            Body::Exec(x) => {
                line.clear();
                if x.argv.is_empty() {
                    line.push_str(&x.filename);
                }
                for (i, a) in x.argv.iter().enumerate() {
                    if i > 0 {
                        line.push(' ');
                    }
                    line.push_str(a);
                }
                (Some(line.as_str()), ev.ppid.and_then(|p| cmdlines.get(p)))
            }
            _ => (cmdlines.get(ev.pid), None),
        };
        if let Some(engine) = engine
            && let Some(view) = View::new(ev, cmdline, parent)
        {
            let dets = engine.evaluate(&view);
            if !dets.is_empty() {
                let results = match corr {
                    Some(c) => c.process_with_detections(&view, dets, ev.time.timestamp()),
                    None => dets,
                };
                for r in results {
                    out.push(alert_of(meta, r, ev));
                }
            }
        }
        if *keep_cmdlines && let Body::Exec(_) = &ev.body {
            cmdlines.insert(ev.pid, Arc::from(line.as_str()));
        }
    }
}

impl SigmaEngine {
    /// An SDK event: each payload item is one Sigma event.
    fn observe_sdk(&mut self, ev: &Event, sdk: &crate::sdk::Sdk, out: &mut Vec<Alert>) {
        let Self { engines, corr, meta, .. } = self;
        let Some(engine) = engines[cat_index(Category::Sdk)].as_ref() else { return };
        for item in sdk.event.payload_json() {
            let view = View::sdk(ev, &item);
            let dets = engine.evaluate(&view);
            if dets.is_empty() {
                continue;
            }
            let results = match corr {
                Some(c) => c.process_with_detections(&view, dets, ev.time.timestamp()),
                None => dets,
            };
            for r in results {
                out.push(alert_of(meta, r, ev));
            }
        }
    }
}

fn alert_of(meta: &HashMap<String, Arc<Meta>>, r: EvaluationResult, ev: &Event) -> Alert {
    let key = r.header.rule_id.as_deref().unwrap_or(&r.header.rule_title);
    let m = meta.get(key).cloned().unwrap_or_else(|| {
        Arc::new(Meta::new(
            r.header.rule_id.as_deref(),
            &r.header.rule_title,
            r.header.level,
            &r.header.tags,
            None,
            &[],
        ))
    });
    let mut details = std::collections::BTreeMap::new();
    if let ResultBody::Correlation(c) = &r.body {
        details.insert("correlation", c.correlation_type.as_str().to_owned());
        details.insert("count", format!("{}", c.aggregated_value));
        details.insert("timespan", format!("{}s", c.timespan_secs));
        if !c.group_key.is_empty() {
            let g: Vec<String> = c.group_key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            details.insert("group", g.join(","));
        }
    }
    Alert {
        rule: Arc::clone(&m.rule),
        title: Arc::clone(&m.title),
        severity: m.severity,
        source: "sigma",
        tags: Arc::clone(&m.tags),
        description: m.description.clone(),
        remediation: "".into(),
        details,
        event: Box::new(ev.clone()),
    }
}

impl Detector for SigmaEngine {
    fn id(&self) -> &'static str {
        "sigma"
    }

    fn observe(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        self.observe_event(ev, out);
    }

    /// Drops correlation windows that expired (once a minute).
    fn tick(&mut self, now: DateTime<Utc>, _out: &mut Vec<Alert>) {
        let now = now.timestamp();
        if let Some(corr) = &mut self.corr
            && now - self.last_evict >= 60
        {
            corr.evict_expired(now);
            self.last_evict = now;
        }
    }
}

/// Loads the rules of `cfg.rules` (None when there are none).
pub fn load(cfg: &DetectConfig, stats: &mut DetectStats) -> Result<Option<SigmaEngine>, DetectError> {
    if cfg.rules.is_empty() {
        return Ok(None);
    }
    let (engine, report) = compile(&cfg.rules, &cfg.disabled);
    if !report.errors.is_empty() {
        return Err(DetectError::Rules(report.errors));
    }
    stats.rules_loaded += report.loaded();
    for (reason, n) in &report.skipped {
        *stats.rules_skipped.entry(reason.clone()).or_default() += n;
    }
    for s in &report.skipped_rules {
        tracing::debug!("sigma rule skipped: {s}");
    }
    tracing::info!(
        files = report.files,
        detections = report.detections,
        correlations = report.correlations,
        skipped = report.skipped_rules.len(),
        "sigma rules loaded"
    );
    Ok(engine)
}

/// Reads, checks and compiles the rules under `paths`; the engine is `None`
/// when there are errors (all in the report) or nothing to load.
pub fn compile(paths: &[PathBuf], disabled: &BTreeSet<String>) -> (Option<SigmaEngine>, Report) {
    let parsed = load::parse_paths(paths);
    let mut report = Report { files: parsed.files, errors: parsed.errors, ..Report::default() };
    // Per category, and the filters (applied to the rules they name).
    let mut keep: [SigmaCollection; Category::ALL.len()] = std::array::from_fn(|_| SigmaCollection::new());
    let mut filters = Vec::new();
    let mut names = Names::default();
    let mut meta: HashMap<String, Arc<Meta>> = HashMap::new();
    let mut cmdline_fields = false;
    let mut correlations = Vec::new();

    for (loc, doc) in parsed.docs {
        match doc {
            Doc::Rule(mut rule) => {
                // Correlations may name a rule by `name`; rsigma finds a
                // match's rule by id, so a rule without one is known by its name.
                if rule.id.is_none() {
                    rule.id = rule.name.clone();
                }
                let verdict = rule_verdict(&loc, &rule, disabled);
                let loaded = matches!(verdict, Verdict::Load(_));
                names.add(&loc, &[rule.id.as_ref(), rule.name.as_ref()], loaded, &mut report.errors);
                match verdict {
                    Verdict::Error(e) => report.errors.push(e),
                    Verdict::Skip(reason) => report.skip(&loc, &rule.title, reason),
                    Verdict::Load(cat) => {
                        cmdline_fields |= uses_remembered_cmdline(cat, &rule);
                        let m = Meta::new(
                            rule.id.as_deref(),
                            &rule.title,
                            rule.level,
                            &rule.tags,
                            rule.description.as_deref(),
                            &rule.falsepositives,
                        );
                        meta.insert(m.rule.to_string(), Arc::new(m));
                        report.detections += 1;
                        keep[cat_index(cat)].rules.push(*rule);
                    }
                }
            }
            Doc::Correlation(c) => {
                if c.id.as_ref().is_some_and(|id| disabled.contains(id)) {
                    names.add(&loc, &[c.id.as_ref(), c.name.as_ref()], false, &mut report.errors);
                    report.skip(&loc, &c.title, "disabled".into());
                    continue;
                }
                names.add(&loc, &[c.id.as_ref(), c.name.as_ref()], true, &mut report.errors);
                correlations.push((loc, c));
            }
            Doc::Filter(f) => {
                report.filters += 1;
                filters.push(*f);
            }
        }
    }

    // A correlation over a rule that is not loaded cannot fire: skipped
    // with it (iterated, since correlations can chain).
    let mut skipped_refs: BTreeSet<String> =
        names.known.iter().filter(|(_, (_, loaded))| !loaded).map(|(k, _)| k.clone()).collect();
    loop {
        let before = skipped_refs.len();
        for (_, c) in &correlations {
            if c.rules.iter().any(|r| skipped_refs.contains(r)) {
                skipped_refs.extend(c.id.iter().cloned().chain(c.name.iter().cloned()));
            }
        }
        if skipped_refs.len() == before {
            break;
        }
    }
    let mut correlation_rules = Vec::new();
    for (loc, c) in correlations {
        if let Some(r) = c.rules.iter().find(|r| !names.known.contains_key(r.as_str())) {
            let line = load::find_line(&std::fs::read_to_string(&loc.file).unwrap_or_default(), r)
                .map_or(loc.clone(), |l| Loc { file: loc.file.clone(), line: l + 1 });
            report.errors.push(format!("{line}: correlation '{}' refers to unknown rule '{r}'", c.title));
            continue;
        }
        if let Some(r) = c.rules.iter().find(|r| skipped_refs.contains(r.as_str())) {
            report.skip(&loc, &c.title, format!("refers to rule '{r}', which is not loaded"));
            continue;
        }
        if let Err(e) = rsigma_eval::correlation::compile_correlation(&c) {
            report.errors.push(format!("{loc}: {e}"));
            continue;
        }
        let m = Meta::new(
            c.id.as_deref(),
            &c.title,
            c.level,
            &c.tags,
            c.description.as_deref(),
            &c.falsepositives,
        );
        meta.insert(m.rule.to_string(), Arc::new(m));
        cmdline_fields |= c.group_by.iter().any(|f| f == "CommandLine" || f == "ParentCommandLine");
        report.correlations += 1;
        correlation_rules.push(*c);
    }

    if !report.errors.is_empty() || report.loaded() == 0 {
        return (None, report);
    }
    let mut engines: [Option<Engine>; Category::ALL.len()] = std::array::from_fn(|_| None);
    let mut refs = Vec::new();
    let referenced: BTreeSet<&String> = correlation_rules.iter().flat_map(|c| &c.rules).collect();
    for (i, mut collection) in keep.into_iter().enumerate() {
        if collection.rules.is_empty() {
            continue;
        }
        refs.extend(
            collection
                .rules
                .iter()
                .filter(|r| r.id.iter().chain(&r.name).any(|k| referenced.contains(k)))
                .cloned(),
        );
        collection.filters.clone_from(&filters);
        let mut engine = Engine::new();
        if let Err(e) = engine.add_collection(&collection) {
            report
                .errors
                .push(format!("{}: {e}", paths.first().map(|p| p.display().to_string()).unwrap_or_default()));
            return (None, report);
        }
        engines[i] = Some(engine);
    }
    let corr = if correlation_rules.is_empty() {
        None
    } else {
        let config = CorrelationConfig {
            // Never the clock: every event comes with its own time.
            timestamp_fallback: TimestampFallback::Skip,
            max_state_entries: MAX_WINDOWS,
            max_group_entries: Some(window_entries(&correlation_rules)),
            // Sigma: rules a correlation uses do not alert on their own
            // unless it says `generate: true`.
            emit_detections: false,
            ..CorrelationConfig::default()
        };
        let mut corr = CorrelationEngine::new(config);
        let collection =
            SigmaCollection { rules: refs, correlations: correlation_rules, ..SigmaCollection::new() };
        if let Err(e) = corr.add_collection(&collection) {
            report
                .errors
                .push(format!("{}: {e}", paths.first().map(|p| p.display().to_string()).unwrap_or_default()));
            return (None, report);
        }
        Some(corr)
    };
    let engine = SigmaEngine {
        engines,
        corr,
        meta,
        rules: report.loaded() as usize,
        keep_cmdlines: cmdline_fields,
        cmdlines: Cmdlines::default(),
        line: String::with_capacity(256),
        last_evict: 0,
    };
    (Some(engine), report)
}

enum Verdict {
    Load(Category),
    Skip(String),
    Error(String),
}

fn rule_verdict(loc: &Loc, rule: &rsigma_parser::SigmaRule, disabled: &BTreeSet<String>) -> Verdict {
    if rule.id.as_ref().is_some_and(|id| disabled.contains(id)) {
        return Verdict::Skip("disabled".into());
    }
    let cat = match load::category_of(&rule.logsource) {
        Ok(c) => c,
        Err(reason) => return Verdict::Skip(reason),
    };
    // The line of an offending key or value: searched from the document's
    // first line (the file is read again only for a rule in error).
    let at = |msg: &str| {
        let text = std::fs::read_to_string(&loc.file).unwrap_or_default();
        let doc: String = text.lines().skip(loc.line.saturating_sub(1)).collect::<Vec<_>>().join("\n");
        load::locate(&loc.file, loc.line, &doc, msg)
    };
    match load::check_detection(cat, rule.detection.named.values()) {
        Err(e) => return Verdict::Error(format!("{}: {e}", at(&e))),
        Ok(Some(field)) => {
            return Verdict::Skip(format!("field '{field}' is not provided for {}", cat.name()));
        }
        Ok(None) => {}
    }
    if let Err(e) = rsigma_eval::compile_rule(rule) {
        let msg = e.to_string();
        let at = failing_item(rule).map_or_else(|| at(&msg), |key| at(&format!("'{key}'")));
        return Verdict::Error(format!("{at}: {}", load::one_line(&msg)));
    }
    Verdict::Load(cat)
}

/// The key (`Field|mod|mod`) of the first detection item that does not
/// compile on its own: where a bad regex, CIDR or number is.
fn failing_item(rule: &rsigma_parser::SigmaRule) -> Option<String> {
    use rsigma_parser::{ConditionExpr, Detection, DetectionItem};
    fn items(d: &Detection, out: &mut Vec<DetectionItem>) {
        match d {
            Detection::AllOf(is) => out.extend(is.iter().cloned()),
            Detection::AnyOf(ds) | Detection::And(ds) => ds.iter().for_each(|d| items(d, out)),
            Detection::ArrayMatch { body, .. } => items(body, out),
            Detection::Conditional { named, .. } => named.values().for_each(|d| items(d, out)),
            Detection::Keywords(_) => {}
        }
    }
    let mut all = Vec::new();
    rule.detection.named.values().for_each(|d| items(d, &mut all));
    all.into_iter().find_map(|item| {
        let mut one = rule.clone();
        let key = std::iter::once(item.field.name.clone().unwrap_or_default())
            .chain(
                item.field
                    .modifiers
                    .iter()
                    .filter_map(|m| serde_json::to_value(m).ok()?.as_str().map(str::to_owned)),
            )
            .collect::<Vec<_>>()
            .join("|");
        one.detection.named = [("sel".to_owned(), Detection::AllOf(vec![item]))].into();
        one.detection.conditions = vec![ConditionExpr::Identifier("sel".into())];
        one.detection.condition_strings = vec!["sel".into()];
        rsigma_eval::compile_rule(&one).is_err().then_some(key)
    })
}

/// Whether the rule reads a command line that only the pid table can give.
fn uses_remembered_cmdline(cat: Category, rule: &rsigma_parser::SigmaRule) -> bool {
    let field = match cat {
        Category::Process => "ParentCommandLine",
        Category::Network | Category::FileEvent | Category::FileDelete | Category::FileRename => {
            "CommandLine"
        }
        // No command line: the sender's is not recorded.
        Category::Sdk => return false,
    };
    fn walk(d: &rsigma_parser::Detection, field: &str) -> bool {
        use rsigma_parser::Detection as D;
        match d {
            D::AllOf(items) => items.iter().any(|i| i.field.name.as_deref() == Some(field)),
            D::AnyOf(ds) | D::And(ds) => ds.iter().any(|d| walk(d, field)),
            // Keywords look at every field.
            D::Keywords(_) => true,
            D::ArrayMatch { .. } => false,
            D::Conditional { named, .. } => named.values().any(|d| walk(d, field)),
        }
    }
    rule.detection.named.values().any(|d| walk(d, field))
}
