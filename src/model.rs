//! The domain model: resources, relations, provenance, runs and changes, and
//! the failure semantics of relation kinds. Plain types: no database or
//! GraphQL traits here (the store and the API adapt them).

use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the unix epoch, UTC. Stored as BIGINT in both databases.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Whether a resource, relation or provenance is still reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Reported by at least one source's latest run.
    Present,
    /// No longer reported by any source; kept with its history.
    Gone,
}

impl Status {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Gone => "gone",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "present" => Some(Status::Present),
            "gone" => Some(Status::Gone),
            _ => None,
        }
    }
}

/// Which source reported a resource or relation, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// `collector:scope`, e.g. `inventory:examples/demo.yaml`, or `manual`.
    pub source: String,
    /// Present while the source still reports it.
    pub status: Status,
    /// When this source first reported it.
    pub first_seen: Millis,
    /// When this source last reported it.
    pub last_seen: Millis,
    /// When this source stopped reporting it.
    pub gone_at: Option<Millis>,
}

/// A resource: the merged view over every source that reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Globally unique, stable id.
    pub id: String,
    /// `host`, `service`, `database`, ...
    pub kind: String,
    /// Display name (the id when no source names it).
    pub name: String,
    /// String labels.
    pub labels: BTreeMap<String, String>,
    /// Free-form attributes (an object, or null).
    pub attributes: serde_json::Value,
    /// Present or gone.
    pub status: Status,
    /// First time any source reported it.
    pub first_seen: Millis,
    /// Last time any source reported it.
    pub last_seen: Millis,
    /// When it was retired, if it is gone.
    pub gone_at: Option<Millis>,
    /// One entry per source that ever reported it.
    pub sources: Vec<Provenance>,
}

/// A relation `from -[kind]-> to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Id of the resource the relation starts at.
    pub from: String,
    /// Id of the resource it points to.
    pub to: String,
    /// Relation kind; see [`ImpactRule::of`] for the ones with failure semantics.
    pub kind: String,
    /// Free-form attributes (ports, evidence), or null.
    pub attributes: serde_json::Value,
    /// Present or gone.
    pub status: Status,
    /// First time any source reported it.
    pub first_seen: Millis,
    /// Last time any source reported it.
    pub last_seen: Millis,
    /// When it was retired, if it is gone.
    pub gone_at: Option<Millis>,
    /// One entry per source that ever reported it.
    pub sources: Vec<Provenance>,
}

/// How a failure travels along a relation (the README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpactRule {
    /// True when a failure of `to` reaches `from`; false when `from` reaches `to`.
    pub to_reaches_from: bool,
    /// True for redundancy: the receiver is down only when ALL such inputs are.
    pub aggregate: bool,
}

impl ImpactRule {
    /// The failure semantics of a relation kind; `None` for kinds without impact.
    pub fn of(kind: &str) -> Option<ImpactRule> {
        let (to_reaches_from, aggregate) = match kind {
            "depends_on" | "runs_on" | "contained_in" => (true, false),
            "attached_to" => (false, false),
            "instance_of" => (false, true),
            "routes_to" => (true, true),
            _ => return None,
        };
        Some(ImpactRule {
            to_reaches_from,
            aggregate,
        })
    }
}

/// Outcome of a collection run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every scope complete, no warnings.
    Ok,
    /// Something was written but some scope was incomplete: nothing retired there.
    Partial,
    /// Nothing was written.
    Failed,
}

impl RunStatus {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "ok" => Some(RunStatus::Ok),
            "partial" => Some(RunStatus::Partial),
            "failed" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

/// What one source reports now: `infragraph sources`, GraphQL `sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// The source, e.g. `inventory:examples/demo.yaml`.
    pub source: String,
    /// Resources it reports now.
    pub resources: i64,
    /// Relations it reports now.
    pub relations: i64,
    /// Its latest report of any of them.
    pub last_seen: Millis,
}

/// A recorded collection run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Store-assigned id.
    pub id: i64,
    /// Collector type, e.g. `inventory`.
    pub collector: String,
    /// What the run covered, e.g. the file list.
    pub scope: String,
    /// When it started.
    pub started_at: Millis,
    /// When it finished.
    pub finished_at: Millis,
    /// ok, partial or failed.
    pub status: RunStatus,
    /// Resources reported.
    pub resources_seen: i64,
    /// Relations reported.
    pub relations_seen: i64,
    /// Resources and relations created (or revived).
    pub created: i64,
    /// Resources and relations whose content changed.
    pub updated: i64,
    /// Resources and relations retired.
    pub retired: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// What it warned about (incomplete scopes).
    pub warnings: Vec<String>,
}

/// What happened to a resource or relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// First seen.
    Create,
    /// Content changed; the diff says how.
    Update,
    /// No longer reported by any source.
    Retire,
    /// Reported again after being retired.
    Revive,
}

impl ChangeOp {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Retire => "retire",
            ChangeOp::Revive => "revive",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<ChangeOp> {
        Some(match s {
            "create" => ChangeOp::Create,
            "update" => ChangeOp::Update,
            "retire" => ChangeOp::Retire,
            "revive" => ChangeOp::Revive,
            _ => return None,
        })
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// When it happened.
    pub at: Millis,
    /// The run that caused it (none for manual edits outside a run).
    pub run_id: Option<i64>,
    /// The source whose report caused it.
    pub source: String,
    /// The resource, or the relation's `from`.
    pub resource_id: String,
    /// For relations: `to` and the kind.
    pub relation: Option<(String, String)>,
    /// What happened.
    pub op: ChangeOp,
    /// For updates: `{field: {"old": .., "new": ..}}`.
    pub diff: serde_json::Value,
}

/// A label selector: `key=value`, `key!=value` or `key` (present). Several
/// selectors are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSelector {
    /// `key=value`
    Eq(String, String),
    /// `key!=value` (also true when the key is absent)
    Ne(String, String),
    /// `key`
    Has(String),
}

impl LabelSelector {
    /// Parses `key=value`, `key!=value` or `key`.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let s = s.trim();
        let bad =
            || format!("invalid label selector '{s}' (expected key=value, key!=value or key)");
        if let Some((k, v)) = s.split_once("!=") {
            let k = k.trim();
            if k.is_empty() {
                return Err(bad());
            }
            return Ok(LabelSelector::Ne(k.into(), v.trim().into()));
        }
        if let Some((k, v)) = s.split_once('=') {
            let k = k.trim();
            if k.is_empty() {
                return Err(bad());
            }
            return Ok(LabelSelector::Eq(k.into(), v.trim().into()));
        }
        if s.is_empty() || s.contains(['!', ',']) {
            return Err(bad());
        }
        Ok(LabelSelector::Has(s.into()))
    }

    /// Whether the labels satisfy this selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelSelector::Eq(k, v) => labels.get(k) == Some(v),
            LabelSelector::Ne(k, v) => labels.get(k) != Some(v),
            LabelSelector::Has(k) => labels.contains_key(k),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelSelector::Eq(k, v) => write!(f, "{k}={v}"),
            LabelSelector::Ne(k, v) => write!(f, "{k}!={v}"),
            LabelSelector::Has(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collectors' list of impact kinds (their run notes name the kinds
    /// outside it) is the one the graph's rules know.
    #[test]
    fn impact_rules_cover_exactly_the_listed_impact_kinds() {
        for k in collectors::IMPACT_KINDS {
            assert!(ImpactRule::of(k).is_some(), "{k}");
        }
        for k in [
            "allows_traffic_from",
            "connected_to",
            "associated_with",
            "dependson",
        ] {
            assert!(ImpactRule::of(k).is_none(), "{k}");
        }
    }

    #[test]
    fn selectors_parse_and_match() {
        let labels: BTreeMap<String, String> =
            [("team".to_string(), "payments".to_string())].into();
        assert!(
            LabelSelector::parse("team=payments")
                .unwrap()
                .matches(&labels)
        );
        assert!(
            !LabelSelector::parse("team!=payments")
                .unwrap()
                .matches(&labels)
        );
        assert!(LabelSelector::parse("tier!=3").unwrap().matches(&labels));
        assert!(LabelSelector::parse("team").unwrap().matches(&labels));
        assert!(!LabelSelector::parse("env").unwrap().matches(&labels));
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("").is_err());
    }

    #[test]
    fn impact_rules_follow_the_table() {
        let r = |k| ImpactRule::of(k).unwrap();
        assert!(r("depends_on").to_reaches_from && !r("depends_on").aggregate);
        assert!(r("runs_on").to_reaches_from);
        assert!(r("contained_in").to_reaches_from);
        assert!(!r("attached_to").to_reaches_from && !r("attached_to").aggregate);
        assert!(!r("instance_of").to_reaches_from && r("instance_of").aggregate);
        assert!(r("routes_to").to_reaches_from && r("routes_to").aggregate);
        assert_eq!(ImpactRule::of("allows_traffic_from"), None);
    }
}
