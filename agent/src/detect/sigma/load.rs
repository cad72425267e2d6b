//! Reading rule files: folders searched recursively for `.yml`/`.yaml`,
//! multi-document files, each document parsed on its own so that every
//! problem names its file and line; then what Shrike can feed is kept, what
//! it cannot is skipped with a reason, and what is wrong is an error.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use base64::Engine as _;
use rsigma_parser::{
    ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType, Detection, DetectionItem,
    Detections, FilterRule, LogSource, Modifier, SigmaCollection, SigmaRule, SigmaString, SigmaValue,
    parse_sigma_yaml,
};

use super::fields::Category;

/// Where a document starts (or where a problem is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One parsed document.
pub enum Doc {
    Rule(Box<SigmaRule>),
    Correlation(Box<CorrelationRule>),
    Filter(Box<FilterRule>),
}

/// The documents of every file, in order, and the problems found.
#[derive(Default)]
pub struct Parsed {
    pub docs: Vec<(Loc, Doc)>,
    /// `file:line: reason`.
    pub errors: Vec<String>,
    pub files: usize,
}

/// Rule files under `paths` (a file as given; a folder searched recursively
/// for .yml/.yaml, in name order so loading is reproducible).
pub fn rule_files(paths: &[PathBuf], errors: &mut Vec<String>) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                return;
            }
        };
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out, errors);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out, errors);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Parses every file of `paths`.
pub fn parse_paths(paths: &[PathBuf]) -> Parsed {
    let mut parsed = Parsed::default();
    for file in rule_files(paths, &mut parsed.errors) {
        parsed.files += 1;
        match std::fs::read_to_string(&file) {
            Ok(text) => parse_text(&file.display().to_string(), &text, &mut parsed),
            Err(e) => parsed.errors.push(format!("{}: {e}", file.display())),
        }
    }
    parsed
}

/// The YAML documents of a file: (first line, 1-based; text).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t == "..." {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 2;
            continue;
        }
        // Blank lines keep the line numbers of the document's text right.
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    // Leading comment-only documents are not documents.
    docs.retain(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

/// Parses one file's text into `out`.
pub fn parse_text(file: &str, text: &str, out: &mut Parsed) {
    let docs = split_documents(text);
    // A collection with `action: global/reset/repeat` merges documents into
    // each other: parsed as a whole; its problems point at the first line.
    let collection_actions = docs.iter().any(|(_, d)| d.lines().any(|l| l.starts_with("action:")));
    if collection_actions {
        let loc = Loc { file: file.to_owned(), line: 1 };
        match parse_sigma_yaml(text) {
            Ok(c) => {
                for e in &c.errors {
                    out.errors.push(format!("{}: {}", locate(file, 1, text, e), one_line(e)));
                }
                push_collection(
                    c,
                    text,
                    |title| line_of_title(file, text, title).unwrap_or(loc.clone()),
                    out,
                );
            }
            Err(e) => out.errors.push(format!("{loc}: {e}")),
        }
        return;
    }
    for (start, doc) in docs {
        let loc = Loc { file: file.to_owned(), line: start };
        match parse_sigma_yaml(&doc) {
            Ok(c) => {
                let produced = !c.is_empty();
                for e in &c.errors {
                    // A document that produced nothing failed; one that did
                    // carries warnings (a bad `status`, `related`...), of
                    // which only a bad `level` matters here (severity).
                    if !produced || e.starts_with("invalid level") {
                        out.errors.push(format!("{}: {}", locate(file, start, &doc, e), one_line(e)));
                    }
                }
                if c.is_empty() && c.errors.is_empty() {
                    out.errors.push(format!("{loc}: not a Sigma rule (no detection or correlation)"));
                }
                push_collection(c, &doc, |_| loc.clone(), out);
            }
            Err(e) => {
                let e = e.to_string();
                out.errors.push(format!("{}: {}", locate(file, start, &doc, &e), one_line(&e)));
            }
        }
    }
}

fn push_collection(c: SigmaCollection, text: &str, loc_of: impl Fn(&str) -> Loc, out: &mut Parsed) {
    for mut r in c.rules {
        fix_base64offset(&mut r.detection);
        out.docs.push((loc_of(&r.title), Doc::Rule(Box::new(r))));
    }
    for mut r in c.correlations {
        // rsigma 0.23 reads a temporal correlation without `condition` as
        // "any one rule"; the specification says all of them must match.
        let explicit = text.lines().any(|l| l.trim_start().starts_with("condition:"));
        if r.correlation_type == CorrelationType::Temporal && !explicit {
            r.condition = CorrelationCondition::Threshold {
                predicates: vec![(ConditionOperator::Gte, r.rules.len() as u64)],
                field: None,
                percentile: None,
            };
        }
        out.docs.push((loc_of(&r.title), Doc::Correlation(Box::new(r))));
    }
    for r in c.filters {
        out.docs.push((loc_of(&r.title), Doc::Filter(Box::new(r))));
    }
}

fn line_of_title(file: &str, text: &str, title: &str) -> Option<Loc> {
    text.lines()
        .position(|l| l.starts_with("title:") && l.contains(title))
        .map(|i| Loc { file: file.to_owned(), line: i + 1 })
}

/// `base64offset` as the specification defines it (pySigma's): the three
/// encodings of the value at offsets 0, 1 and 2 in a 3-byte group, each cut
/// to the characters that depend on the value alone, matched with
/// `contains`. rsigma 0.23 keeps the last characters, which also depend on
/// the bytes after the value, so it misses most real occurrences: the
/// items are rewritten into plain `contains` lists before compiling. With
/// `all`, each value becomes an item of its own (AND of the values' ORs).
fn fix_base64offset(d: &mut Detections) {
    fn fix_items(items: &mut Vec<DetectionItem>) {
        let mut out = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            if !item.field.has_modifier(Modifier::Base64Offset) {
                out.push(item);
                continue;
            }
            let all = item.field.has_modifier(Modifier::All);
            let wide = item.field.has_modifier(Modifier::Wide);
            let be = item.field.has_modifier(Modifier::Utf16be);
            let bom = item.field.has_modifier(Modifier::Utf16);
            let mut field = item.field.clone();
            field.modifiers.retain(|m| {
                !matches!(
                    m,
                    Modifier::Base64Offset
                        | Modifier::All
                        | Modifier::Wide
                        | Modifier::Utf16be
                        | Modifier::Utf16
                )
            });
            if !field.has_modifier(Modifier::Contains) {
                field.modifiers.push(Modifier::Contains);
            }
            let variants = |v: &SigmaValue| -> Vec<SigmaValue> {
                let SigmaValue::String(s) = v else { return vec![v.clone()] };
                let text = s.as_plain().unwrap_or_else(|| s.original.clone());
                let bytes: Vec<u8> = if wide || bom {
                    let mut b = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
                    b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
                    b
                } else if be {
                    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
                } else {
                    text.into_bytes()
                };
                base64_offsets(&bytes)
                    .into_iter()
                    .map(|p| SigmaValue::String(SigmaString::from_raw(&p)))
                    .collect()
            };
            if all {
                for v in &item.values {
                    out.push(DetectionItem { field: field.clone(), values: variants(v) });
                }
            } else {
                let values = item.values.iter().flat_map(variants).collect();
                out.push(DetectionItem { field, values });
            }
        }
        *items = out;
    }
    fn walk(d: &mut Detection) {
        match d {
            Detection::AllOf(items) => fix_items(items),
            Detection::AnyOf(ds) | Detection::And(ds) => ds.iter_mut().for_each(walk),
            Detection::ArrayMatch { body, .. } => walk(body),
            Detection::Conditional { named, .. } => named.values_mut().for_each(walk),
            Detection::Keywords(_) => {}
        }
    }
    d.named.values_mut().for_each(walk);
}

/// pySigma's `SigmaBase64OffsetModifier`.
pub fn base64_offsets(value: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    let mut out = Vec::with_capacity(3);
    for i in 0..3 {
        let mut padded = vec![b' '; i];
        padded.extend_from_slice(value);
        let enc = base64::engine::general_purpose::STANDARD.encode(&padded);
        let end = enc.len().saturating_sub(END[(value.len() + i) % 3]);
        if START[i] < end {
            out.push(enc[START[i]..end].to_owned());
        }
    }
    out
}

/// The line a problem is at: the YAML parser's own line when it gives one,
/// else the first line of the document naming what the message quotes
/// (`'name'`), else the line of the key the message is about, else the
/// document's first line.
pub fn locate(file: &str, start: usize, doc: &str, msg: &str) -> Loc {
    let at = |line: usize| Loc { file: file.to_owned(), line: start + line };
    if let Some(n) = yaml_line(msg) {
        return at(n.saturating_sub(1));
    }
    for quoted in quoted_parts(msg) {
        if let Some(i) = find_line(doc, quoted) {
            return at(i);
        }
    }
    let lower = msg.to_ascii_lowercase();
    // (what the message speaks of, the key whose line it is).
    for (word, key) in [
        ("identifier", "condition"),
        ("condition", "condition"),
        ("level", "level"),
        ("timespan", "timespan"),
        ("group-by", "group-by"),
        ("correlation", "correlation"),
        ("logsource", "logsource"),
        ("detection", "detection"),
        ("title", "title"),
    ] {
        if lower.contains(word)
            && let Some(i) = doc.lines().position(|l| l.trim_start().starts_with(&format!("{key}:")))
        {
            return at(i);
        }
    }
    at(0)
}

/// A message on one line (pest's condition errors draw a caret diagram).
pub fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for word in msg.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// `... at line 12 column 3` in yaml errors.
fn yaml_line(msg: &str) -> Option<usize> {
    let i = msg.find("line ")?;
    let digits: String = msg[i + 5..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn quoted_parts(msg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for q in ['\'', '"', '`'] {
        let mut parts = msg.split(q);
        parts.next();
        while let Some(inner) = parts.next() {
            if !inner.is_empty() && inner.len() < 200 {
                out.push(inner);
            }
            parts.next();
        }
    }
    out
}

/// The first line (0-based) holding `needle` as a key, a modifier or a value.
pub fn find_line(doc: &str, needle: &str) -> Option<usize> {
    let lines: Vec<&str> = doc.lines().collect();
    let key = format!("{needle}:");
    let modifier = format!("|{needle}");
    lines
        .iter()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&key) || l.contains(&modifier)
        })
        .or_else(|| lines.iter().position(|l| l.contains(needle)))
}

/// Why a detection rule cannot be fed (a skip, not an error), or which
/// category it is for. Rules without a product are generic (Sigma's own
/// process_creation rules without `product` apply to every platform).
pub fn category_of(ls: &LogSource) -> Result<Category, String> {
    let product_ok = ls.product.as_deref().is_none_or(|p| p.eq_ignore_ascii_case("linux"));
    let cat = ls.category.as_deref().and_then(Category::from_name);
    match (product_ok, cat, &ls.service) {
        (true, Some(c), None) => Ok(c),
        _ => {
            let mut parts = Vec::new();
            for (k, v) in [("product", &ls.product), ("category", &ls.category), ("service", &ls.service)] {
                if let Some(v) = v {
                    parts.push(format!("{k}: {v}"));
                }
            }
            if parts.is_empty() {
                parts.push("none".into());
            }
            Err(format!("logsource not fed by Shrike ({})", parts.join(", ")))
        }
    }
}

/// What in a detection Shrike cannot evaluate: `Err(reason)` for an error
/// (a feature the engine cannot honour here), `Ok(Some(field))` for a field
/// the category does not have (the rule is skipped), `Ok(None)` when fine.
pub fn check_detection<'a>(
    cat: Category,
    detections: impl Iterator<Item = &'a Detection>,
) -> Result<Option<String>, String> {
    fn walk(cat: Category, d: &Detection, unknown: &mut Option<String>) -> Result<(), String> {
        match d {
            Detection::AllOf(items) => {
                for item in items {
                    for m in &item.field.modifiers {
                        match m {
                            Modifier::Expand => {
                                return Err("modifier 'expand' needs placeholder values, which Shrike does not define".into());
                            }
                            Modifier::Minute
                            | Modifier::Hour
                            | Modifier::Day
                            | Modifier::Week
                            | Modifier::Month
                            | Modifier::Year => {
                                return Err(format!(
                                    "timestamp modifier '{}' needs a time field, which {} events do not have",
                                    format!("{m:?}").to_lowercase(),
                                    cat.name()
                                ));
                            }
                            _ => {}
                        }
                    }
                    // An sdk event has the fields its sender gave it.
                    if let Some(name) = &item.field.name
                        && cat != Category::Sdk
                        && !cat.fields().contains(&name.as_str())
                        && unknown.is_none()
                    {
                        *unknown = Some(name.clone());
                    }
                }
                Ok(())
            }
            Detection::AnyOf(ds) | Detection::And(ds) => ds.iter().try_for_each(|d| walk(cat, d, unknown)),
            Detection::Keywords(_) => Ok(()),
            Detection::ArrayMatch { field, .. } => {
                Err(format!("array matching on '{field}': {} fields are not lists", cat.name()))
            }
            Detection::Conditional { named, .. } => named.values().try_for_each(|d| walk(cat, d, unknown)),
        }
    }
    let mut unknown = None;
    for d in detections {
        walk(cat, d, &mut unknown)?;
    }
    Ok(unknown)
}

/// The outcome of loading, for the log and `shrike rules check`.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: usize,
    pub detections: u64,
    pub correlations: u64,
    pub filters: u64,
    /// Reason -> count.
    pub skipped: BTreeMap<String, u64>,
    /// `file:line: title: reason` of each skipped rule.
    pub skipped_rules: Vec<String>,
    /// `file:line: reason`.
    pub errors: Vec<String>,
}

impl Report {
    pub fn loaded(&self) -> u64 {
        self.detections + self.correlations
    }

    pub fn skip(&mut self, loc: &Loc, title: &str, reason: String) {
        self.skipped_rules.push(format!("{loc}: {title}: {reason}"));
        *self.skipped.entry(reason).or_default() += 1;
    }
}

/// Identities (id, name) of loaded documents, to resolve correlation
/// references and catch duplicates.
#[derive(Default)]
pub struct Names {
    /// Reference -> where it is defined and whether it was loaded.
    pub known: HashMap<String, (Loc, bool)>,
}

impl Names {
    /// Records `keys` (id, name) for a document; a second document with the
    /// same id is an error.
    pub fn add(&mut self, loc: &Loc, keys: &[Option<&String>], loaded: bool, errors: &mut Vec<String>) {
        for k in keys.iter().flatten() {
            if let Some((first, _)) = self.known.get(k.as_str()) {
                errors.push(format!("{loc}: duplicate rule id or name '{k}' (first at {first})"));
            } else {
                self.known.insert((*k).clone(), (loc.clone(), loaded));
            }
        }
    }
}
