//! The inventory-file collector: hand-maintained YAML or JSON files (chosen by
//! extension) that declare resources and relations.
//!
//! Each file is one scope (`inventory:<path>`), complete when it parses. A file
//! that is malformed, repeats an id with a different kind or relates a
//! resource to itself is rejected with `FILE:LINE: message` and nothing from
//! the run is returned. References to ids the file does not declare are
//! checked by the store, which also knows other sources' resources.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::{
    CollectError, Collection, ConfigError, ObservedRelation, ObservedResource, ScopeBatch,
};

/// Configuration of the inventory collector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// Inventory files to load, `.yaml`/`.yml` or `.json`. Each is one scope.
    pub paths: Vec<PathBuf>,
}

impl InventoryConfig {
    /// Checks that at least one path is given and each has a known extension.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.paths.is_empty() {
            return Err(ConfigError {
                collector: "inventory",
                field: "paths",
                message: "at least one inventory file is required".into(),
            });
        }
        for p in &self.paths {
            Format::of(p).map_err(|message| ConfigError {
                collector: "inventory",
                field: "paths",
                message,
            })?;
        }
        Ok(())
    }

    /// The run's scope: the files, comma-separated.
    pub fn scope(&self) -> String {
        self.paths
            .iter()
            .map(|p| normalize(p))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The scope (and so the source name) of a file: its path with `.` and
/// `..` components resolved lexically, so `./inv.yaml` and `inv.yaml` are
/// the same source. The path is not made absolute: the same file given
/// relative to another directory is another source.
pub fn normalize(path: &Path) -> String {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return ".".into();
    }
    out.iter().collect::<PathBuf>().display().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            _ => Err(format!(
                "{}: unknown inventory format (expected .yaml, .yml or .json)",
                path.display()
            )),
        }
    }
}

/// Reads every configured file. One bad file fails the whole collection.
#[tracing::instrument(skip_all, fields(files = config.paths.len()))]
pub async fn collect(config: &InventoryConfig) -> Result<Collection, CollectError> {
    config
        .validate()
        .map_err(|e| CollectError::Invalid(e.to_string()))?;
    let mut batches = Vec::with_capacity(config.paths.len());
    for path in &config.paths {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| CollectError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let scope = normalize(path);
        let batch = parse(
            &scope,
            &text,
            Format::of(path).map_err(CollectError::Invalid)?,
        )?;
        tracing::info!(
            file = %scope,
            resources = batch.resources.len(),
            relations = batch.relations.len(),
            "inventory file parsed"
        );
        batches.push(batch);
    }
    Ok(Collection {
        notes: kind_notes(&batches),
        batches,
        warnings: Vec::new(),
    })
}

/// Relation kinds that other collectors write and that carry no impact on
/// purpose (see the README's table of kinds).
const INFORMATIONAL_KINDS: [&str; 3] = ["allows_traffic_from", "connected_to", "associated_with"];

/// One note per relation kind that a failure does not travel along (not in
/// the table of impact kinds): stored and queryable, but `impact` ignores
/// it, so a typo (`dependson`) would otherwise read as "nothing breaks".
/// Says how many relations have it, where the first is, and the impact
/// kind it is close to, if any.
fn kind_notes(batches: &[ScopeBatch]) -> Vec<String> {
    const IMPACT: [&str; 6] = crate::IMPACT_KINDS;
    let mut kinds: BTreeMap<&str, (usize, Option<&str>)> = BTreeMap::new();
    for rel in batches.iter().flat_map(|b| &b.relations) {
        let kind = rel.kind.as_str();
        if IMPACT.contains(&kind) || INFORMATIONAL_KINDS.contains(&kind) {
            continue;
        }
        let entry = kinds.entry(kind).or_insert((0, rel.origin.as_deref()));
        entry.0 += 1;
    }
    kinds
        .into_iter()
        .map(|(kind, (count, first))| {
            let near = IMPACT
                .iter()
                .find(|k| edit_distance(kind, k) <= 2 || kind.replace('_', "") == k.replace('_', ""));
            let relations = if count == 1 {
                "1 relation".to_string()
            } else {
                format!("{count} relations")
            };
            format!(
                "{}relation kind '{kind}' ({relations}) has no impact rule: a failure does not travel along it{}",
                first.map(|f| format!("{f}: ")).unwrap_or_default(),
                near.map(|k| format!(" (did you mean '{k}'?)"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// Levenshtein distance, for "did you mean": short ASCII names only.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Parses one inventory document. `name` is used in error messages and as
/// the scope; `path`'s extension picks the format.
pub fn parse_file(name: &str, path: &Path, text: &str) -> Result<ScopeBatch, CollectError> {
    parse(name, text, Format::of(path).map_err(CollectError::Invalid)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    resources: Option<Vec<RawResource>>,
    #[serde(default)]
    relations: Vec<RawRelation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    id: String,
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    attributes: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelation {
    from: String,
    to: String,
    kind: String,
    #[serde(default)]
    attributes: serde_json::Value,
}

fn parse(name: &str, text: &str, format: Format) -> Result<ScopeBatch, CollectError> {
    let invalid = |line: Option<usize>, msg: String| match line {
        Some(l) => CollectError::Invalid(format!("{name}:{l}: {msg}")),
        None => CollectError::Invalid(format!("{name}: {msg}")),
    };
    // A file that is empty, only comments, or lacks `resources:` is far more
    // likely truncated than meant to retire everything it listed before.
    const NO_RESOURCES: &str = "no 'resources:' list (an empty or truncated file?); to retire everything this file declared, write 'resources: []'";
    let blank = text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    });
    if blank {
        return Err(invalid(None, NO_RESOURCES.into()));
    }
    let raw: RawFile = match format {
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            invalid(line, hint(strip_location(&e.to_string())))
        })?,
        Format::Json => serde_json::from_str(text)
            .map_err(|e| invalid(Some(e.line()), hint(strip_location(&e.to_string()))))?,
    };
    // JSON is YAML too, so one event walk finds the line of every item.
    let lines = item_lines(text);
    let res_line = |i: usize| lines.resources.get(i).copied();
    let rel_line = |i: usize| lines.relations.get(i).copied();
    let origin = |line: Option<usize>| match line {
        Some(l) => format!("{name}:{l}"),
        None => name.to_string(),
    };

    let Some(raw_resources) = raw.resources else {
        return Err(invalid(None, NO_RESOURCES.into()));
    };
    let mut resources: Vec<ObservedResource> = Vec::with_capacity(raw_resources.len());
    let mut by_id: HashMap<String, usize> = HashMap::with_capacity(raw_resources.len());
    for (i, r) in raw_resources.into_iter().enumerate() {
        let line = res_line(i);
        let id = r.id.trim().to_string();
        if id.is_empty() {
            return Err(invalid(line, "resource has an empty 'id'".into()));
        }
        if !crate::is_kind(&r.kind) {
            return Err(invalid(
                line,
                format!(
                    "resource '{id}': invalid kind '{}' (expected a lowercase identifier such as 'service' or 'load_balancer')",
                    r.kind
                ),
            ));
        }
        let mut labels = BTreeMap::new();
        for (k, v) in r.labels {
            let value = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                    // YAML reads 0x1F, 0o17 and +12 as integers: their text
                    // would be rewritten (to 31, 15, 12). Only plain decimal
                    // text is taken unquoted.
                    let decimal = n.to_string();
                    // (JSON integers are written in decimal: they match.)
                    let text = lines.plain_labels.get(&(i, k.clone()));
                    if text.is_none() && format == Format::Yaml {
                        // Reached through an alias the walk cannot follow
                        // (an aliased `labels` map or key): its text is
                        // unknown, so it is refused rather than guessed.
                        return Err(invalid(
                            line,
                            format!(
                                "resource '{id}': label '{k}' value {n} comes through a YAML alias; write it quoted (\"{n}\") in the resource's labels"
                            ),
                        ));
                    }
                    if let Some(lit) = text.filter(|t| **t != decimal) {
                        return Err(invalid(
                            line,
                            format!(
                                "resource '{id}': label '{k}' value {lit} must be quoted (\"{lit}\") to keep its exact text"
                            ),
                        ));
                    }
                    decimal
                }
                serde_json::Value::Number(n) => {
                    // As written (1.50, 1e3), not as the number reads (1.5,
                    // 1000.0): the quoted text is what was meant.
                    let lit = lines
                        .plain_labels
                        .get(&(i, k.clone()))
                        .cloned()
                        .unwrap_or_else(|| n.to_string());
                    return Err(invalid(
                        line,
                        format!(
                            "resource '{id}': label '{k}' value {lit} must be quoted (\"{lit}\") to keep its exact text"
                        ),
                    ));
                }
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(invalid(
                        line,
                        format!("resource '{id}': label '{k}' must be a string, not {other}"),
                    ));
                }
            };
            if !crate::is_label_key(&k) {
                return Err(invalid(
                    line,
                    format!(
                        "resource '{id}': label key '{k}' is empty or contains '=', '!' or ','"
                    ),
                ));
            }
            labels.insert(k, value);
        }
        if let Some(&first) = by_id.get(&id) {
            let prev = &mut resources[first];
            if prev.kind != r.kind {
                return Err(invalid(
                    line,
                    format!(
                        "resource '{id}' repeated with kind '{}' but {} declares it as '{}'",
                        r.kind,
                        prev.origin.as_deref().unwrap_or(name),
                        prev.kind
                    ),
                ));
            }
            // Same id, same kind: later entries add to the earlier one.
            if r.name.is_some() {
                prev.name = r.name;
            }
            prev.labels.extend(labels);
            merge_attributes(&mut prev.attributes, r.attributes);
            continue;
        }
        by_id.insert(id.clone(), resources.len());
        resources.push(ObservedResource {
            id,
            kind: r.kind,
            name: r.name.filter(|n| !n.trim().is_empty()),
            labels,
            attributes: r.attributes,
            origin: Some(origin(line)),
            placeholder: false,
        });
    }

    let mut relations = Vec::with_capacity(raw.relations.len());
    let mut seen = HashMap::new();
    for (i, r) in raw.relations.into_iter().enumerate() {
        let line = rel_line(i);
        let (from, to) = (r.from.trim().to_string(), r.to.trim().to_string());
        if from.is_empty() || to.is_empty() {
            return Err(invalid(line, "relation has an empty 'from' or 'to'".into()));
        }
        if !crate::is_kind(&r.kind) {
            return Err(invalid(
                line,
                format!(
                    "relation from '{from}' to '{to}': invalid kind '{}'",
                    r.kind
                ),
            ));
        }
        if from == to {
            return Err(invalid(
                line,
                format!("relation '{}' from '{from}' to itself", r.kind),
            ));
        }
        let key = (from.clone(), to.clone(), r.kind.clone());
        if let Some(&idx) = seen.get(&key) {
            let prev: &mut ObservedRelation = &mut relations[idx];
            merge_attributes(&mut prev.attributes, r.attributes);
            continue;
        }
        seen.insert(key, relations.len());
        relations.push(ObservedRelation {
            from,
            to,
            kind: r.kind,
            attributes: r.attributes,
            origin: Some(origin(line)),
        });
    }

    Ok(ScopeBatch {
        scope: name.to_string(),
        complete: true,
        resources,
        relations,
        gone: Vec::new(),
    })
}

fn merge_attributes(into: &mut serde_json::Value, from: serde_json::Value) {
    *into = crate::merge_attributes([&*into, &from]);
}

/// A parser message with what to do, where the parser's own does not say:
/// a number too large for a number is meant as text (an id, a serial).
fn hint(msg: String) -> String {
    if msg.contains("number out of range") {
        format!("{msg}: quote it (\"...\") to keep it as text")
    } else {
        msg
    }
}

/// serde's messages end with " at line X column Y"; we put the line first.
/// A parser message without its `at line L column C` parts: the caller
/// puts the line in front (`file:L: ...`), once.
fn strip_location(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(pos) = rest.find(" at line ") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let mut skip = digits(after);
        if after[skip..].starts_with(" column ") {
            let col = &after[skip + " column ".len()..];
            skip += " column ".len() + digits(col);
        }
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

#[derive(Default)]
struct ItemLines {
    resources: Vec<usize>,
    relations: Vec<usize>,
    /// The text of unquoted label values, by resource index and key, as
    /// written (`0x1F`, where the parsed value says 31).
    plain_labels: HashMap<(usize, String), String>,
}

enum Frame {
    Map {
        expect_key: bool,
        key: Option<String>,
        /// The `labels` map of this resource (by index).
        labels_of: Option<usize>,
    },
    Seq {
        collect: Option<bool>,
    }, // Some(true) = resources, Some(false) = relations
}

#[derive(Default)]
struct LineWalker {
    stack: Vec<Frame>,
    lines: ItemLines,
    /// The text of anchored plain scalars, by anchor id: a label value
    /// written as an alias (`rack: *r`) is the anchor's text (`&r 0x1F`).
    anchors: HashMap<usize, String>,
}

impl LineWalker {
    /// The `labels` map's resource index and key, when the next node is a
    /// label value.
    fn label_slot(&self) -> Option<(usize, String)> {
        match self.stack.last() {
            Some(Frame::Map {
                expect_key: false,
                key: Some(k),
                labels_of: Some(i),
            }) => Some((*i, k.clone())),
            _ => None,
        }
    }
}

impl LineWalker {
    /// Called before a node (scalar, alias, map or sequence start) at the
    /// current level; returns the top-level key this node is the value of.
    fn node(&mut self, line: usize, scalar: Option<&str>) -> Option<String> {
        let depth = self.stack.len();
        match self.stack.last_mut() {
            Some(Frame::Seq { collect: Some(res) }) => {
                if *res {
                    self.lines.resources.push(line);
                } else {
                    self.lines.relations.push(line);
                }
                None
            }
            Some(Frame::Map {
                expect_key, key, ..
            }) => {
                if *expect_key {
                    *key = scalar.map(str::to_string);
                    *expect_key = false;
                    None
                } else {
                    *expect_key = true;
                    if depth == 1 { key.clone() } else { None }
                }
            }
            _ => None,
        }
    }
}

impl MarkedEventReceiver for LineWalker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref s, style, anchor, ..) => {
                if style == TScalarStyle::Plain {
                    if anchor != 0 {
                        self.anchors.insert(anchor, s.clone());
                    }
                    if let Some(slot) = self.label_slot() {
                        self.lines.plain_labels.insert(slot, s.clone());
                    }
                }
                self.node(mark.line(), Some(s));
            }
            Event::Alias(anchor) => {
                if let (Some(slot), Some(text)) = (self.label_slot(), self.anchors.get(&anchor)) {
                    self.lines.plain_labels.insert(slot, text.clone());
                }
                self.node(mark.line(), None);
            }
            Event::MappingStart(..) => {
                // A resource's `labels:` map: root map, `resources` list,
                // the item's map with its current key `labels`.
                let labels_of = match self.stack.as_slice() {
                    [
                        Frame::Map { .. },
                        Frame::Seq {
                            collect: Some(true),
                        },
                        Frame::Map {
                            expect_key: false,
                            key: Some(k),
                            ..
                        },
                    ] if k == "labels" => self.lines.resources.len().checked_sub(1),
                    _ => None,
                };
                self.node(mark.line(), None);
                self.stack.push(Frame::Map {
                    expect_key: true,
                    key: None,
                    labels_of,
                });
            }
            Event::SequenceStart(..) => {
                let key = self.node(mark.line(), None);
                let collect = match key.as_deref() {
                    Some("resources") => Some(true),
                    Some("relations") => Some(false),
                    _ => None,
                };
                self.stack.push(Frame::Seq { collect });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

fn item_lines(text: &str) -> ItemLines {
    let mut walker = LineWalker::default();
    let mut parser = Parser::new_from_str(text);
    // A scan error here was already reported by serde; lines are best effort.
    let _ = parser.load(&mut walker, false);
    walker.lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<ScopeBatch, CollectError> {
        parse("inv.yaml", text, Format::Yaml)
    }

    #[test]
    fn parses_the_documented_example_with_lines() {
        let b = yaml(
            "resources:\n  - id: svc:checkout\n    kind: service\n    name: checkout\n    labels: {team: payments, tier: \"1\", env: prod}\n    attributes: {language: rust}\n  - {id: svc:payments-db, kind: database, labels: {tier: 1}}\nrelations:\n  - {from: svc:checkout, to: svc:payments-db, kind: depends_on}\n",
        )
        .unwrap();
        assert_eq!(b.resources.len(), 2);
        assert_eq!(b.resources[0].origin.as_deref(), Some("inv.yaml:2"));
        assert_eq!(b.resources[1].origin.as_deref(), Some("inv.yaml:7"));
        assert_eq!(b.resources[1].labels["tier"], "1");
        assert_eq!(b.resources[0].labels["team"], "payments");
        assert_eq!(b.resources[0].attributes["language"], "rust");
        assert_eq!(b.relations[0].origin.as_deref(), Some("inv.yaml:9"));
        assert!(b.complete);
        crate::check_contract(&Collection {
            notes: Vec::new(),
            batches: vec![b],
            warnings: vec![],
        })
        .unwrap();
    }

    /// `attributes` is any JSON, as the inventory contract says: an array
    /// or a scalar is kept as given, and a repeated id's objects merge.
    #[test]
    fn attributes_may_be_any_json() {
        let b = yaml(
            "resources:\n  - {id: a, kind: host, attributes: [1, two]}\n  - {id: b, kind: service, attributes: \"v2\"}\n  - {id: c, kind: service, attributes: {x: 1}}\n  - {id: c, kind: service, attributes: {y: 2}}\nrelations:\n  - {from: b, to: a, kind: runs_on, attributes: 42}\n",
        )
        .unwrap();
        let attrs = |id: &str| {
            b.resources
                .iter()
                .find(|r| r.id == id)
                .unwrap()
                .attributes
                .clone()
        };
        assert_eq!(attrs("a"), serde_json::json!([1, "two"]));
        assert_eq!(attrs("b"), serde_json::json!("v2"));
        assert_eq!(attrs("c"), serde_json::json!({"x": 1, "y": 2}));
        assert_eq!(b.relations[0].attributes, serde_json::json!(42));
    }

    #[test]
    fn json_items_get_lines_too() {
        let b = parse(
            "inv.json",
            "{\"resources\": [\n {\"id\": \"a\", \"kind\": \"host\"},\n {\"id\": \"b\", \"kind\": \"service\"}\n],\n\"relations\": [\n {\"from\": \"b\", \"to\": \"a\", \"kind\": \"runs_on\"}]}\n",
            Format::Json,
        )
        .unwrap();
        assert_eq!(b.resources[1].origin.as_deref(), Some("inv.json:3"));
        assert_eq!(b.relations[0].origin.as_deref(), Some("inv.json:6"));
    }

    #[test]
    fn repeated_id_with_other_kind_names_both_lines() {
        let err = yaml("resources:\n  - {id: a, kind: host}\n  - {id: a, kind: service}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "inv.yaml:3: resource 'a' repeated with kind 'service' but inv.yaml:2 declares it as 'host'"
        );
    }

    #[test]
    fn malformed_files_name_the_line() {
        let err = yaml("resources:\n  - id: a\n    kind: host\n  - id: b\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("inv.yaml:4: "), "{err}");
        assert!(err.contains("missing field `kind`"), "{err}");
        let err = yaml("resources:\n  - {id: a, kind: host, colour: red}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("inv.yaml:2: ") && err.contains("colour"),
            "{err}"
        );
        let err = parse("x.json", "{\"resources\": [\n{\"id\": 1,}]}", Format::Json)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.json:2: "), "{err}");
    }

    #[test]
    fn rejects_self_relations_bad_kinds_and_nested_labels() {
        let err = yaml("resources:\n  - {id: a, kind: host}\nrelations:\n  - {from: a, to: a, kind: depends_on}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "inv.yaml:4: relation 'depends_on' from 'a' to itself");
        let err = yaml("resources:\n  - {id: a, kind: Host}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("inv.yaml:2: resource 'a': invalid kind 'Host'"),
            "{err}"
        );
        let err = yaml("resources:\n  - {id: a, kind: host, labels: {x: [1]}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 'x' must be a string"), "{err}");
    }

    #[test]
    fn empty_or_truncated_files_are_rejected_but_an_explicit_empty_list_is_not() {
        for text in ["\n", "# only a comment\n", "---\n", "relations: []\n"] {
            let err = yaml(text).unwrap_err().to_string();
            assert!(err.contains("no 'resources:' list"), "{text:?}: {err}");
        }
        let b = yaml("resources: []\n").unwrap();
        assert!(b.complete && b.resources.is_empty());
    }

    #[test]
    fn float_labels_must_be_quoted() {
        let err = yaml("resources:\n  - {id: a, kind: host, labels: {v: 1.50}}\n")
            .unwrap_err()
            .to_string();
        // The text to quote is the one written, not the number it reads as.
        assert!(
            err.contains("label 'v' value 1.50 must be quoted (\"1.50\")"),
            "{err}"
        );
        let err = yaml("resources:\n  - {id: a, kind: host, labels: {v: 1e3}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("value 1e3 must be quoted (\"1e3\")"), "{err}");
        let err = yaml(
            "resources:\n  - {id: a, kind: host, labels: {v: 123456789012345678901234567890}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("quote it"), "{err}");
        let b = yaml("resources:\n  - {id: a, kind: host, labels: {v: \"1.50\", n: 7, b: true}}\n")
            .unwrap();
        assert_eq!(b.resources[0].labels["v"], "1.50");
        assert_eq!(b.resources[0].labels["n"], "7");
    }

    #[test]
    fn relation_kinds_without_impact_are_noted_once_each_with_a_near_impact_kind() {
        let b = yaml(
            "resources:\n  - {id: a, kind: service}\n  - {id: b, kind: service}\nrelations:\n  - {from: a, to: b, kind: dependson}\n  - {from: a, to: b, kind: talks_to}\n  - {from: b, to: a, kind: talks_to}\n  - {from: a, to: b, kind: depends_on}\n  - {from: a, to: b, kind: connected_to}\n  - {from: a, to: b, kind: run_on}\n",
        )
        .unwrap();
        let notes = kind_notes(&[b]);
        assert_eq!(
            notes,
            [
                "inv.yaml:5: relation kind 'dependson' (1 relation) has no impact rule: a failure does not travel along it (did you mean 'depends_on'?)",
                "inv.yaml:10: relation kind 'run_on' (1 relation) has no impact rule: a failure does not travel along it (did you mean 'runs_on'?)",
                "inv.yaml:6: relation kind 'talks_to' (2 relations) has no impact rule: a failure does not travel along it",
            ]
        );
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("routes_to", "routes_to"), 0);
    }

    #[test]
    fn non_decimal_integer_labels_must_be_quoted() {
        for (lit, text) in [
            (
                "0x1F",
                "resources:\n  - {id: a, kind: host, labels: {rack: 0x1F}}\n",
            ),
            (
                "0o17",
                "resources:\n  - id: a\n    kind: host\n    labels:\n      rack: 0o17 # octal\n",
            ),
            (
                "+12",
                "resources:\n  - {id: z, kind: host}\n  - {id: a, kind: host, labels: {n: 1, rack: +12}}\n",
            ),
        ] {
            let err = yaml(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "label 'rack' value {lit} must be quoted (\"{lit}\")"
                )),
                "{text}: {err}"
            );
        }
        // Through an alias of a scalar anchored outside the labels: in the
        // resource's attributes, or in another resource.
        for text in [
            "resources:\n  - {id: a, kind: host, attributes: {r: &r 0x1F}, labels: {rack: *r}}\n",
            "resources:\n  - {id: b, kind: host, attributes: {rack: &r 0x1F}}\n  - {id: a, kind: host, labels: {rack: *r}}\n",
        ] {
            let err = yaml(text).unwrap_err().to_string();
            assert!(
                err.contains("resource 'a': label 'rack' value 0x1F must be quoted"),
                "{text}: {err}"
            );
        }
        // An aliased labels map, or an aliased key: the text is not
        // followed, so any integer there is refused.
        for text in [
            "resources:\n  - {id: b, kind: host, attributes: {t: &L {rack: 12}}}\n  - {id: a, kind: host, labels: *L}\n",
            "resources:\n  - {id: b, kind: host, attributes: {k: &k rack}}\n  - {id: a, kind: host, labels: {*k : 0x1F}}\n",
        ] {
            let err = yaml(text).unwrap_err().to_string();
            assert!(
                err.contains("resource 'a': label 'rack' value")
                    && err.contains("comes through a YAML alias"),
                "{text}: {err}"
            );
        }
        // An alias of decimal or quoted text is fine.
        let b = yaml("resources:\n  - {id: a, kind: host, attributes: {a: &d 12, b: &q \"0x1F\"}, labels: {rack: *d, row: *q}}\n").unwrap();
        assert_eq!(b.resources[0].labels["rack"], "12");
        assert_eq!(b.resources[0].labels["row"], "0x1F");
        // A quoted key is still a label.
        let err = yaml("resources:\n  - {id: a, kind: host, labels: {\"rack\": 0x1F}}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label 'rack' value 0x1F must be quoted"),
            "{err}"
        );
        // The same key elsewhere (attributes, a relation) is not a label.
        let b = yaml("resources:\n  - {id: a, kind: host, labels: {version: 14}, attributes: {version: 0x0F}}\n  - {id: b, kind: host, labels: {tier: 2}}\nrelations:\n  - {from: a, to: b, kind: depends_on, attributes: {tier: 0x2}}\n").unwrap();
        assert_eq!(b.resources[0].labels["version"], "14");
        assert_eq!(b.resources[1].labels["tier"], "2");
        // Decimal text, and a hex value of another resource, are fine.
        let b = yaml("resources:\n  - {id: a, kind: host, labels: {rack: 12}}\n  - {id: b, kind: host, labels: {rack: \"0x1F\"}}\n").unwrap();
        assert_eq!(b.resources[0].labels["rack"], "12");
        assert_eq!(b.resources[1].labels["rack"], "0x1F");
    }

    #[test]
    fn yaml_errors_give_their_position_once() {
        let err = yaml("resources:\n  - {id: a, kind: host\n  - {id: b}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":3: did not find expected ',' or '}', while parsing a flow mapping"),
            "{err}"
        );
        assert!(!err.contains("at line"), "{err}");
        assert_eq!(
            strip_location("a at line 3 column 5, b at line 1 column 1"),
            "a, b"
        );
    }

    #[test]
    fn paths_are_normalized_into_one_source() {
        assert_eq!(normalize(Path::new("./inv.yaml")), "inv.yaml");
        assert_eq!(
            normalize(Path::new("examples/../examples/./demo.yaml")),
            "examples/demo.yaml"
        );
        assert_eq!(normalize(Path::new("/abs/./x.json")), "/abs/x.json");
        assert_eq!(normalize(Path::new("../up.yaml")), "../up.yaml");
    }

    #[tokio::test]
    async fn collect_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, "resources:\n  - {id: a, kind: host}\n").unwrap();
        let c = collect(&InventoryConfig {
            paths: vec![p.clone()],
        })
        .await
        .unwrap();
        assert_eq!(c.batches[0].resources[0].id, "a");
        assert!(c.is_complete());
        crate::check_contract(&c).unwrap();
        let missing = dir.path().join("missing.yaml");
        let err = collect(&InventoryConfig {
            paths: vec![p, missing],
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        let bad = InventoryConfig {
            paths: vec!["inv.txt".into()],
        }
        .validate()
        .unwrap_err();
        assert!(
            bad.to_string()
                .contains("inv.txt: unknown inventory format"),
            "{bad}"
        );
    }
}
