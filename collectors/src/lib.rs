//! infragraph collectors: the contract every collector follows, the observation
//! types they return, and one module per collector.
//!
//! A collector discovers and returns observations. It never writes to the
//! store, never sees a database, an HTTP server or the graph, and never decides
//! identity across sources: the `infragraph` crate reconciles what collectors
//! return. The contract is written down in `collectors/README.md`.

use std::collections::BTreeMap;

#[cfg(feature = "aws")]
pub mod aws_ec2;
pub mod host;
pub mod inventory;

/// Relation kinds that carry failure semantics (see the README's table).
/// Collectors may emit other kinds too; those are stored but carry no impact.
pub mod kinds {
    /// `from` needs `to`: a failure of `to` reaches `from`.
    pub const DEPENDS_ON: &str = "depends_on";
    /// `from` runs on host `to`: a failure of `to` reaches `from`.
    pub const RUNS_ON: &str = "runs_on";
    /// `from` is inside container `to`: a failure of `to` reaches `from`.
    pub const CONTAINED_IN: &str = "contained_in";
    /// volume/device `from` is attached to `to`: a failure of `from` reaches `to`.
    pub const ATTACHED_TO: &str = "attached_to";
    /// `from` is one redundant instance of service `to`.
    pub const INSTANCE_OF: &str = "instance_of";
    /// load balancer `from` sends traffic to target `to`.
    pub const ROUTES_TO: &str = "routes_to";
}

/// One resource as a collector saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedResource {
    /// Globally unique, stable id (e.g. `svc:checkout`, an ARN).
    pub id: String,
    /// Resource kind: `host`, `service`, `database`, `load_balancer`, ...
    pub kind: String,
    /// Display name; `None` lets the store fall back to the id.
    pub name: Option<String>,
    /// String labels (`team=payments`).
    pub labels: BTreeMap<String, String>,
    /// Free-form attributes; `Null` when the collector has none.
    pub attributes: serde_json::Value,
    /// Where this observation came from, for error messages (`demo.yaml:14`).
    pub origin: Option<String>,
    /// Only asserts that something with this id exists (a service an EC2
    /// tag names): if the store or another batch already has the id as a
    /// different kind, this observation is dropped and relations to the id
    /// stand, instead of the run being rejected for a kind conflict.
    pub placeholder: bool,
}

impl ObservedResource {
    /// A resource with just an id and a kind.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            name: None,
            labels: BTreeMap::new(),
            attributes: serde_json::Value::Null,
            origin: None,
            placeholder: false,
        }
    }
}

/// One relation as a collector saw it: `from -[kind]-> to`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedRelation {
    /// Id of the resource the relation starts at.
    pub from: String,
    /// Id of the resource the relation points to.
    pub to: String,
    /// Relation kind (see [`kinds`]).
    pub kind: String,
    /// Free-form attributes (ports, evidence); `Null` when none.
    pub attributes: serde_json::Value,
    /// Where this observation came from, for error messages.
    pub origin: Option<String>,
}

impl ObservedRelation {
    /// A relation with no attributes.
    pub fn new(from: impl Into<String>, to: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            kind: kind.into(),
            attributes: serde_json::Value::Null,
            origin: None,
        }
    }
}

/// Everything one scope of a collector reported in a run. A scope is the unit
/// of completeness: one inventory file, one AWS account and region, one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeBatch {
    /// The scope, e.g. `examples/demo.yaml`; the source is `collector:scope`.
    pub scope: String,
    /// True only when this scope was enumerated completely. The store retires
    /// what a source no longer reports only when the whole run is complete
    /// (every batch complete, no warnings).
    pub complete: bool,
    /// Resources seen in this scope.
    pub resources: Vec<ObservedResource>,
    /// Relations seen in this scope.
    pub relations: Vec<ObservedRelation>,
    /// Ids of resources this scope positively reports as gone (an instance
    /// the API says is `terminated`). They are retired, with this source's
    /// relations touching them, even when the run is partial.
    pub gone: Vec<String>,
}

/// Merges the attributes several reports give one resource or relation,
/// in precedence order (a later one wins a key). Attributes may be any
/// JSON. Objects merge key by key. A value that is not an object is kept
/// as given when no report has an object; beside objects it goes under the
/// key `value`, so one source's scalar never erases what the others report
/// (an agent's endpoints, an instance's private IP).
pub fn merge_attributes<'a>(
    values: impl IntoIterator<Item = &'a serde_json::Value>,
) -> serde_json::Value {
    use serde_json::Value;
    let values: Vec<&Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    if !values.iter().any(|v| v.is_object()) {
        return values.last().map_or(Value::Null, |v| (*v).clone());
    }
    let mut merged = serde_json::Map::new();
    for v in values {
        match v {
            Value::Object(o) => merged.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
            other => {
                merged.insert("value".into(), other.clone());
            }
        }
    }
    Value::Object(merged)
}

/// The result of one collection run. Partial results are values: a run that
/// half-worked returns what it has, with incomplete batches and warnings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collection {
    /// One batch per scope.
    pub batches: Vec<ScopeBatch>,
    /// What went wrong without stopping the run (a region that failed, ...).
    /// Any warning makes the run partial: it retires nothing by absence.
    pub warnings: Vec<String>,
    /// What the collector could not see that does not make its enumeration
    /// incomplete (an agent without root names other users' sockets by
    /// port, the same way every time). Recorded with the run's warnings;
    /// the run stays complete.
    pub notes: Vec<String>,
}

impl Collection {
    /// True when every batch is complete and nothing was warned about.
    pub fn is_complete(&self) -> bool {
        self.warnings.is_empty() && self.batches.iter().all(|b| b.complete)
    }

    /// What the run's record shows: the warnings, then the notes.
    pub fn remarks(&self) -> Vec<String> {
        self.warnings.iter().chain(&self.notes).cloned().collect()
    }
}

/// A collector that could not produce anything usable.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The input is wrong; the message names the file, line and field.
    #[error("{0}")]
    Invalid(String),
    /// Reading the input failed.
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A collector configuration that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("collector '{collector}': {field}: {message}")]
pub struct ConfigError {
    /// Collector type, e.g. `inventory`.
    pub collector: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Checks a [`Collection`] against the contract in `collectors/README.md`:
/// non-empty ids and kinds, unique scopes, no self-relations, origins set.
/// Every collector's tests call this on what it returns.
pub fn check_contract(collection: &Collection) -> Result<(), String> {
    let mut scopes = std::collections::HashSet::new();
    for batch in &collection.batches {
        if batch.scope.is_empty() {
            return Err("a batch has an empty scope".into());
        }
        if !scopes.insert(batch.scope.as_str()) {
            return Err(format!("scope '{}' appears in two batches", batch.scope));
        }
        for r in &batch.resources {
            if r.id.trim().is_empty() || r.id != r.id.trim() {
                return Err(format!("resource id '{}' is empty or padded", r.id));
            }
            if !is_kind(&r.kind) {
                return Err(format!("resource '{}' has invalid kind '{}'", r.id, r.kind));
            }
        }
        for rel in &batch.relations {
            if rel.from == rel.to {
                return Err(format!(
                    "relation '{}' from '{}' to itself",
                    rel.kind, rel.from
                ));
            }
            if !is_kind(&rel.kind) {
                return Err(format!("relation has invalid kind '{}'", rel.kind));
            }
        }
    }
    Ok(())
}

/// Whether `key` can be a label key: non-empty, without the selector
/// syntax `=`, `!` and `,` (so every label can be selected on).
pub fn is_label_key(key: &str) -> bool {
    !key.is_empty() && !key.contains(['=', '!', ','])
}

/// The relation kinds a failure travels along (the README's table; the
/// graph's `ImpactRule::of` gives each its direction and rule, and a test
/// there checks that it knows exactly these).
pub const IMPACT_KINDS: [&str; 6] = [
    "depends_on",
    "runs_on",
    "contained_in",
    "attached_to",
    "instance_of",
    "routes_to",
];

/// A kind is a lowercase identifier: `[a-z][a-z0-9_]*`, at most 64 bytes.
pub fn is_kind(kind: &str) -> bool {
    let mut chars = kind.chars();
    matches!(chars.next(), Some('a'..='z'))
        && kind.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_merge_without_erasing_objects() {
        let m = |v: &[serde_json::Value]| merge_attributes(v.iter());
        assert_eq!(m(&[]), serde_json::Value::Null);
        assert_eq!(m(&[json!("a"), json!(null)]), json!("a"));
        assert_eq!(m(&[json!("a"), json!([1])]), json!([1]));
        assert_eq!(
            m(&[json!({"x": 1, "y": 1}), json!({"y": 2})]),
            json!({"x": 1, "y": 2})
        );
        // A scalar beside objects, before or after them, erases nothing.
        assert_eq!(
            m(&[json!({"endpoints": ["a:1"]}), json!("team-x")]),
            json!({"endpoints": ["a:1"], "value": "team-x"})
        );
        assert_eq!(m(&[json!(7), json!({"x": 1})]), json!({"value": 7, "x": 1}));
    }
}
