//! Reconciliation: turning one collection run into rows, in one transaction.
//!
//! For each scope batch the source is `collector:scope`. Every observed
//! resource and relation gets its provenance row upserted; the merged view
//! over all present sources becomes the resource or relation row; creates,
//! updates (with a diff), retirements and revivals go to the change log. Only
//! a complete batch retires what its source reported before and no longer
//! does. Any error rolls the whole run back and records a failed run instead.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use collectors::{Collection, ObservedRelation, ObservedResource};
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use super::{
    Backend, MAX_PARAMS, Store, dynamic, parse_json, parse_labels, placeholders, provenance_json,
    values_clause,
};
use crate::model::{ChangeOp, Millis, Run, RunStatus, Status, now_ms};

/// One collection run to record.
#[derive(Debug, Clone)]
pub struct RunInput {
    /// Collector type, e.g. `inventory`, `manual`.
    pub collector: String,
    /// What the run covered (file list, account and regions).
    pub scope: String,
    /// When the collector started.
    pub started_at: Millis,
    /// What the collector returned, or why it produced nothing usable.
    pub outcome: Result<Collection, String>,
    /// Explicit retractions: `(scope, key)` pairs whose provenance by that
    /// source ends now, whatever the batch completeness (manual retracts).
    pub retract: Vec<(String, Key)>,
    /// Additive runs (manual assertions) never retire anything by absence
    /// and are `ok` although their batches are not complete enumerations.
    pub additive: bool,
}

/// A resource id, or a relation's `(from, to, kind)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A resource.
    Resource(String),
    /// A relation.
    Relation(String, String, String),
}

/// What a recorded run did.
pub type RunSummary = Run;

/// The source name for a collector and scope.
pub fn source_name(collector: &str, scope: &str) -> String {
    if scope.is_empty() {
        collector.to_string()
    } else {
        format!("{collector}:{scope}")
    }
}

enum Failure {
    Invalid(String),
    Db(anyhow::Error),
    Refused(anyhow::Error),
}

/// A run's precondition: record it only if `source` has reported nothing
/// since `before` (checked inside the run's transaction, after the writer
/// lock, so a report that lands meanwhile wins over a retirement decided
/// from an older snapshot).
#[derive(Debug, Clone)]
pub struct SilentSince {
    /// The source, e.g. `agent:web-1`.
    pub source: String,
    /// Its latest report must be older than this.
    pub before: Millis,
}

/// A run's precondition, checked inside its transaction after the writer
/// lock.
#[derive(Debug, Clone)]
pub enum Guard {
    /// See [`SilentSince`].
    SilentSince(SilentSince),
    /// Record the run only if no recorded run of the same collector and
    /// scope started at or after it: a host's report that arrives after a
    /// newer one (delayed, or replayed) is refused with [`OutOfOrder`].
    InOrder,
}

impl From<SilentSince> for Guard {
    fn from(g: SilentSince) -> Self {
        Guard::SilentSince(g)
    }
}

/// The error of a run refused by [`Guard::InOrder`]: nothing was written.
#[derive(Debug, Clone)]
pub struct OutOfOrder {
    /// The source, e.g. `agent:web-1`.
    pub source: String,
    /// When the refused run started (the report was sent).
    pub started_at: Millis,
    /// When the latest recorded run of the source started.
    pub last: Millis,
}

impl std::fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: this report (sent at {} ms since the epoch) is not newer than the last one recorded (sent at {}): nothing written",
            self.source, self.started_at, self.last
        )
    }
}

impl std::error::Error for OutOfOrder {}

/// The error of a run whose [`SilentSince`] precondition no longer held:
/// nothing was written.
#[derive(Debug, Clone)]
pub struct Superseded {
    /// The source that reported meanwhile.
    pub source: String,
    /// When it last reported.
    pub last_seen: Millis,
}

impl std::fmt::Display for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reported at {} ms since the epoch, after the run was decided: nothing written",
            self.source, self.last_seen
        )
    }
}

impl std::error::Error for Superseded {}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Db(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Db(e)
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    resources_seen: i64,
    relations_seen: i64,
    created: i64,
    updated: i64,
    retired: i64,
}

/// A run just recorded, read back. Its errors are made plain text: the
/// run is in, and a "database is locked" here must not make the caller
/// record it again.
fn read_back(got: anyhow::Result<Option<Run>>, id: i64) -> anyhow::Result<Run> {
    match got {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(anyhow::anyhow!("run {id} vanished after it was recorded")),
        Err(e) => Err(anyhow::anyhow!(
            "run {id} was recorded, but reading it back failed: {e:#}"
        )),
    }
}

/// How long a SQLite run waits for another process's run to finish.
pub const LOCKED_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The longest resource id, in bytes: a relation's key holds two, and a
/// PostgreSQL index entry at most about 2,700 bytes.
const MAX_ID_BYTES: usize = 1000;

/// The longest source name (`collector:scope`), in bytes: a relation's
/// source row is keyed by two ids, its kind (at most 64) and its source.
const MAX_SOURCE_BYTES: usize = 512;

/// Whether JSON holds a NUL character in a string or a key.
fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// The first field of a resource with a NUL character in it: PostgreSQL's
/// text and JSON cannot hold one (SQLite can), so it is refused on both,
/// by name, before anything is written.
fn nul_in_resource(r: &ObservedResource) -> Option<&'static str> {
    if r.id.contains('\0') {
        Some("id")
    } else if r.name.as_deref().is_some_and(|n| n.contains('\0')) {
        Some("name")
    } else if r.labels.keys().any(|k| k.contains('\0')) {
        Some("label keys")
    } else if r.labels.values().any(|v| v.contains('\0')) {
        Some("label values")
    } else if json_has_nul(&r.attributes) {
        Some("attributes")
    } else {
        None
    }
}

/// [`nul_in_resource`] for a relation.
fn nul_in_relation(r: &ObservedRelation) -> Option<&'static str> {
    if r.from.contains('\0') {
        Some("from")
    } else if r.to.contains('\0') {
        Some("to")
    } else if r.kind.contains('\0') {
        Some("kind")
    } else if json_has_nul(&r.attributes) {
        Some("attributes")
    } else {
        None
    }
}

/// Whether an error is SQLite's "database is locked" (SQLITE_BUSY, after
/// the connection's busy timeout).
fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>().is_some_and(|e| match e {
            sqlx::Error::Database(d) => {
                matches!(d.code().as_deref(), Some("5" | "517" | "261"))
                    || d.message().contains("database is locked")
            }
            _ => false,
        })
    })
}

impl Store {
    /// Records one run: reconciles its observations in one transaction, or,
    /// when the collector failed or its output is invalid, records a failed
    /// run and changes nothing else. Errors only when the database fails.
    #[tracing::instrument(skip_all, fields(collector = %input.collector, scope = %input.scope))]
    pub async fn apply(&self, input: RunInput) -> anyhow::Result<Run> {
        self.apply_unless_seen(input, None).await
    }

    /// [`Store::apply`], recorded only while `guard` holds; otherwise
    /// nothing is written and the error is a [`Superseded`].
    ///
    /// On SQLite, one database writer at a time: runs in this process wait
    /// their turn, and a run that finds the file locked by another process
    /// (a `collect` beside a running server) is tried again for up to
    /// [`LOCKED_FOR`], with a warning, instead of failing after the
    /// driver's 10 s wait and losing the run.
    pub async fn apply_unless_seen(
        &self,
        input: RunInput,
        guard: Option<Guard>,
    ) -> anyhow::Result<Run> {
        if self.backend() == Backend::Postgres {
            return self.apply_once(&input, guard.as_ref()).await;
        }
        let _turn = self.writer.lock().await;
        let started = std::time::Instant::now();
        let mut warned = std::time::Duration::ZERO;
        loop {
            match self.apply_once(&input, guard.as_ref()).await {
                Err(e) if is_locked(&e) && started.elapsed() < LOCKED_FOR => {
                    // Once, then every half minute.
                    if warned.is_zero()
                        || started.elapsed() - warned >= std::time::Duration::from_secs(30)
                    {
                        warned = started.elapsed();
                        tracing::warn!(
                            waited_s = warned.as_secs(),
                            "the SQLite store is locked by another process's run; waiting for it"
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&self, input: &RunInput, guard: Option<&Guard>) -> anyhow::Result<Run> {
        let collection = match &input.outcome {
            Ok(c) => c,
            Err(e) => return self.record_failed(input, e.clone()).await,
        };
        let mut status = if input.additive || collection.is_complete() {
            RunStatus::Ok
        } else {
            RunStatus::Partial
        };
        if collection.batches.is_empty()
            && input.retract.is_empty()
            && !collection.warnings.is_empty()
        {
            status = RunStatus::Failed;
        }
        let mut tx = self.pool().begin().await?;
        match reconcile(&mut tx, self.backend(), input, collection, status, guard).await {
            Ok((run_id, counts)) => {
                tx.commit().await?;
                tracing::info!(
                    run_id,
                    status = status.as_str(),
                    resources = counts.resources_seen,
                    relations = counts.relations_seen,
                    created = counts.created,
                    updated = counts.updated,
                    retired = counts.retired,
                    "run recorded"
                );
                read_back(self.run(run_id).await, run_id)
            }
            Err(Failure::Invalid(msg)) => {
                tx.rollback().await?;
                self.record_failed(input, msg).await
            }
            Err(Failure::Refused(why)) => {
                tx.rollback().await?;
                Err(why)
            }
            Err(Failure::Db(err)) if is_locked(&err) => {
                // Tried again by the caller; a failed run would need the
                // same lock to be recorded.
                tx.rollback().await.ok();
                Err(err)
            }
            Err(Failure::Db(err)) => {
                tx.rollback().await.ok();
                let msg = format!("database error: {}", super::error_text(&err));
                // Try to leave a trace of the failure; the original error wins.
                if let Err(e) = self.record_failed(input, msg.clone()).await {
                    tracing::warn!(error = %e, "could not record the failed run");
                }
                Err(anyhow::anyhow!(msg))
            }
        }
    }

    async fn record_failed(&self, input: &RunInput, error: String) -> anyhow::Result<Run> {
        // The error may quote input with a NUL in it (an id), which
        // PostgreSQL cannot store: the failure and its reason would be lost.
        let error = error.replace('\0', "\\u0000");
        // Its own target, so that `infragraph collect`, which prints the
        // error itself, can leave this line out.
        tracing::warn!(target: "infragraph::run_failed", error = %error, "run failed; nothing written");
        let warnings = match &input.outcome {
            Ok(c) => c.remarks(),
            Err(_) => Vec::new(),
        };
        let row = sqlx::query(
            "INSERT INTO runs (collector, scope, started_at, finished_at, status, error, warnings) \
             VALUES ($1, $2, $3, $4, 'failed', $5, $6) RETURNING id",
        )
        .bind(input.collector.clone())
        .bind(input.scope.clone())
        .bind(input.started_at)
        .bind(now_ms())
        .bind(error)
        .bind(serde_json::to_string(&warnings)?)
        .fetch_one(self.pool())
        .await
        .map_err(|e| anyhow::anyhow!(super::error_text(&e.into())))?;
        let id: i64 = row.try_get(0)?;
        read_back(self.run(id).await, id)
    }
}

/// A small map from source name to its row: almost every resource or
/// relation has one or two sources, and a BTreeMap allocates a whole node
/// (≈1 KB) per entry, which is what made a 5M-relation run run out of memory.
#[derive(Debug, Clone)]
struct Sources<T>(Vec<(String, T)>);

impl<T> Default for Sources<T> {
    fn default() -> Self {
        Sources(Vec::new())
    }
}

impl<T> Sources<T> {
    fn get(&self, source: &str) -> Option<&T> {
        self.0.iter().find(|(s, _)| s == source).map(|(_, t)| t)
    }
    fn get_mut(&mut self, source: &str) -> Option<&mut T> {
        self.0.iter_mut().find(|(s, _)| s == source).map(|(_, t)| t)
    }
    /// Inserts or replaces, keeping the entries sorted by source.
    fn insert(&mut self, source: String, row: T) {
        match self.0.binary_search_by(|(s, _)| s.as_str().cmp(&source)) {
            Ok(i) => self.0[i].1 = row,
            Err(i) => self.0.insert(i, (source, row)),
        }
    }
    fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter().map(|(s, t)| (s, t))
    }
    fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, t)| t)
    }
}

impl<'a, T> IntoIterator for &'a Sources<T> {
    type Item = (&'a String, &'a T);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, T)>,
        fn(&'a (String, T)) -> (&'a String, &'a T),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(s, t)| (s, t))
    }
}

/// Per-source observation of a resource, as stored in `resource_sources`.
#[derive(Debug, Clone)]
struct ResSource {
    name: Option<String>,
    labels: BTreeMap<String, String>,
    attributes: Value,
    status: Status,
    first_seen: Millis,
    last_seen: Millis,
    gone_at: Option<Millis>,
    run_id: Option<i64>,
    /// Only a placeholder's guess of the kind (see
    /// `ObservedResource::placeholder`): another source's kind replaces it.
    guess: bool,
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct ResRow {
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    attributes: Value,
    status: Status,
    first_seen: Millis,
    last_seen: Millis,
    gone_at: Option<Millis>,
}

#[derive(Debug, Clone)]
struct RelSource {
    attributes: Value,
    status: Status,
    first_seen: Millis,
    last_seen: Millis,
    gone_at: Option<Millis>,
    run_id: Option<i64>,
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct RelRow {
    attributes: Value,
    status: Status,
    first_seen: Millis,
    last_seen: Millis,
    gone_at: Option<Millis>,
}

type RelKey = (String, String, String);

/// A bind value for the generic multi-row writer.
enum V {
    T(String),
    OT(Option<String>),
    I(i64),
    OI(Option<i64>),
}

async fn reconcile(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    input: &RunInput,
    collection: &Collection,
    status: RunStatus,
    guard: Option<&Guard>,
) -> Result<(i64, Counts), Failure> {
    let now = now_ms();
    let row = sqlx::query(
        "INSERT INTO runs (collector, scope, started_at, finished_at, status) \
         VALUES ($1, $2, $3, $4, 'failed') RETURNING id",
    )
    .bind(input.collector.clone())
    .bind(input.scope.clone())
    .bind(input.started_at)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let run_id: i64 = row.try_get(0)?;
    let mut counts = Counts::default();
    if b == Backend::Postgres {
        // Runs read provenance, merge and write back: serialize them, so two
        // collectors (or a collector and a CLI run) reporting the same
        // resource cannot overwrite each other's merge. SQLite already
        // serializes writers at the first INSERT above.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(7243190)) AS l")
            .fetch_one(&mut **tx)
            .await?;
    }
    // The run's time is taken once it holds the store (the lock above, or
    // SQLite's at the INSERT): a run that waited a minute behind another
    // must not stamp its changes and last-seen times a minute early, before
    // those of the run it waited for.
    let now = now_ms();
    if let Some(Guard::InOrder) = guard {
        let row = sqlx::query(
            // Runs that saw something: a sweep's run (the server's
            // retirement of a silent host, at the server's time) is no
            // report to be newer than.
            "SELECT MAX(started_at) FROM runs WHERE collector = $1 AND scope = $2 AND status <> 'failed' AND resources_seen > 0 AND id <> $3",
        )
        .bind(input.collector.clone())
        .bind(input.scope.clone())
        .bind(run_id)
        .fetch_one(&mut **tx)
        .await?;
        let last: Option<i64> = row.try_get(0)?;
        if let Some(last) = last
            && last >= input.started_at
        {
            return Err(Failure::Refused(
                OutOfOrder {
                    source: source_name(&input.collector, &input.scope),
                    started_at: input.started_at,
                    last,
                }
                .into(),
            ));
        }
    }
    if let Some(Guard::SilentSince(g)) = guard {
        let row = sqlx::query(
            "SELECT MAX(last_seen) FROM resource_sources WHERE source = $1 AND status = 'present'",
        )
        .bind(g.source.clone())
        .fetch_one(&mut **tx)
        .await?;
        let last_seen: Option<i64> = row.try_get(0)?;
        if let Some(last_seen) = last_seen
            && last_seen >= g.before
        {
            return Err(Failure::Refused(
                Superseded {
                    source: g.source.clone(),
                    last_seen,
                }
                .into(),
            ));
        }
    }

    // --- What this run reports, per source -------------------------------
    let mut observed_res: Vec<(String, &ObservedResource)> = Vec::new();
    let mut observed_rel: Vec<(String, &ObservedRelation)> = Vec::new();
    let mut kinds: HashMap<&str, (&str, String)> = HashMap::default();
    let mut complete_sources: Vec<String> = Vec::new();
    let mut seen_by_source: HashSet<(String, Key)> = HashSet::default();
    // Ids so far reported only by placeholder observations (see
    // `ObservedResource::placeholder`): another kind wins over them.
    let mut placeholder_only: HashSet<&str> = HashSet::default();
    for batch in &collection.batches {
        let source = source_name(&input.collector, &batch.scope);
        if source.len() > MAX_SOURCE_BYTES {
            return Err(Failure::Invalid(format!(
                "source '{}…' is {} bytes long: a source name (collector:scope) may be at most {MAX_SOURCE_BYTES} bytes on either store (PostgreSQL indexes cannot hold longer keys; use a shorter path)",
                source.chars().take(60).collect::<String>().escape_debug(),
                source.len()
            )));
        }
        // Retirement by absence needs the whole run to be complete: a partial
        // run (any incomplete scope, any warning) retires nothing anywhere.
        if batch.complete && !input.additive && collection.is_complete() {
            complete_sources.push(source.clone());
        }
        for r in &batch.resources {
            let origin = r.origin.clone().unwrap_or_else(|| source.clone());
            if !collectors::is_kind(&r.kind) || r.id.trim().is_empty() {
                return Err(Failure::Invalid(format!(
                    "{origin}: resource '{}' has an empty id or an invalid kind '{}'",
                    r.id, r.kind
                )));
            }
            if r.id.len() > MAX_ID_BYTES {
                return Err(Failure::Invalid(format!(
                    "{origin}: resource id '{}…' is {} bytes long: ids may be at most {MAX_ID_BYTES} bytes (PostgreSQL indexes cannot hold longer keys)",
                    r.id.chars().take(60).collect::<String>().escape_debug(),
                    r.id.len()
                )));
            }
            if let Some(field) = nul_in_resource(r) {
                return Err(Failure::Invalid(format!(
                    "{origin}: resource '{}' has a NUL character (\\u0000) in its {field}: text may not contain one (PostgreSQL cannot store it)",
                    r.id.escape_debug()
                )));
            }
            match kinds.get(r.id.as_str()) {
                Some(_) if r.placeholder && placeholder_only.contains(r.id.as_str()) => {}
                Some((kind, _)) if r.placeholder && *kind != r.kind => continue,
                Some((kind, first)) if *kind != r.kind => {
                    if !placeholder_only.contains(r.id.as_str()) {
                        return Err(Failure::Invalid(format!(
                            "{origin}: resource '{}' reported as kind '{}' but {first} reports it as '{kind}'",
                            r.id, r.kind
                        )));
                    }
                    // A real report of another kind replaces placeholders.
                    placeholder_only.remove(r.id.as_str());
                    kinds.insert(&r.id, (&r.kind, origin));
                }
                Some(_) => {
                    if !r.placeholder {
                        placeholder_only.remove(r.id.as_str());
                    }
                }
                None => {
                    kinds.insert(&r.id, (&r.kind, origin));
                    if r.placeholder {
                        placeholder_only.insert(&r.id);
                    }
                }
            }
            seen_by_source.insert((source.clone(), Key::Resource(r.id.clone())));
            observed_res.push((source.clone(), r));
        }
        for rel in &batch.relations {
            if let Some(field) = nul_in_relation(rel) {
                let origin = rel.origin.clone().unwrap_or_else(|| source.clone());
                return Err(Failure::Invalid(format!(
                    "{origin}: relation '{}' -[{}]-> '{}' has a NUL character (\\u0000) in its {field}: text may not contain one (PostgreSQL cannot store it)",
                    rel.from.escape_debug(),
                    rel.kind.escape_debug(),
                    rel.to.escape_debug()
                )));
            }
            seen_by_source.insert((
                source.clone(),
                Key::Relation(rel.from.clone(), rel.to.clone(), rel.kind.clone()),
            ));
            observed_rel.push((source.clone(), rel));
        }
    }
    // Placeholders that lost to a real report of another kind in this run.
    let lost: Vec<(String, String)> = observed_res
        .iter()
        .filter(|(_, r)| {
            r.placeholder && kinds.get(r.id.as_str()).is_some_and(|(k, _)| *k != r.kind)
        })
        .map(|(src, r)| (src.clone(), r.id.clone()))
        .collect();
    for (src, id) in lost {
        observed_res.retain(|(s, r)| !(s == &src && r.id == id && r.placeholder));
        seen_by_source.remove(&(src, Key::Resource(id)));
    }
    counts.relations_seen = observed_rel.len() as i64;

    // --- Load what the store knows about everything touched ---------------
    let mut res_ids: BTreeSet<String> = observed_res.iter().map(|(_, r)| r.id.clone()).collect();
    for (_, rel) in &observed_rel {
        res_ids.insert(rel.from.clone());
        res_ids.insert(rel.to.clone());
    }
    let mut retire: Vec<(String, Key)> = input
        .retract
        .iter()
        .map(|(scope, key)| (source_name(&input.collector, scope), key.clone()))
        .collect();
    // Resources a source positively reports as gone (an instance the API
    // says is terminated) end that source's provenance even in a partial
    // run, together with that source's relations touching them.
    for batch in &collection.batches {
        if batch.gone.is_empty() {
            continue;
        }
        let source = source_name(&input.collector, &batch.scope);
        for id in &batch.gone {
            if seen_by_source.contains(&(source.clone(), Key::Resource(id.clone()))) {
                return Err(Failure::Invalid(format!(
                    "{source}: resource '{id}' is reported both present and gone"
                )));
            }
            retire.push((source.clone(), Key::Resource(id.clone())));
            let rows = sqlx::query(
                "SELECT from_id, to_id, kind FROM relation_sources \
                 WHERE source = $1 AND status = 'present' AND (from_id = $2 OR to_id = $3)",
            )
            .bind(source.clone())
            .bind(id.clone())
            .bind(id.clone())
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let key = Key::Relation(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                if !seen_by_source.contains(&(source.clone(), key.clone())) {
                    retire.push((source.clone(), key));
                }
            }
        }
    }
    for source in &complete_sources {
        let rows = sqlx::query(
            "SELECT resource_id FROM resource_sources WHERE source = $1 AND status = 'present'",
        )
        .bind(source.clone())
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = Key::Resource(row.try_get(0)?);
            if !seen_by_source.contains(&(source.clone(), key.clone())) {
                retire.push((source.clone(), key));
            }
        }
        let rows = sqlx::query(
            "SELECT from_id, to_id, kind FROM relation_sources WHERE source = $1 AND status = 'present'",
        )
        .bind(source.clone())
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            let key = Key::Relation(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !seen_by_source.contains(&(source.clone(), key.clone())) {
                retire.push((source.clone(), key));
            }
        }
    }
    let mut rel_from_ids: BTreeSet<String> =
        observed_rel.iter().map(|(_, r)| r.from.clone()).collect();
    for (_, key) in &retire {
        match key {
            Key::Resource(id) => {
                res_ids.insert(id.clone());
            }
            Key::Relation(from, _, _) => {
                rel_from_ids.insert(from.clone());
            }
        }
    }
    let ids: Vec<String> = res_ids.into_iter().collect();
    let mut existing = load_resources(tx, b, &ids).await?;
    let mut res_sources = load_resource_sources(tx, b, &ids).await?;
    let retiring: HashSet<(String, Key)> = retire.iter().cloned().collect();
    // Sources that report `id` now and will still report it after this run,
    // other than this run's own reports.
    let keeps_reporting = |id: &str, seen: &HashSet<(String, Key)>| -> bool {
        res_sources.get(id).is_some_and(|m| {
            m.iter().any(|(s, r)| {
                let key = (s.clone(), Key::Resource(id.to_string()));
                r.status == Status::Present && !seen.contains(&key) && !retiring.contains(&key)
            })
        })
    };
    // Placeholders for ids the store already has as another kind, which
    // another source keeps reporting: dropped; the resource keeps its kind
    // and relations to it stand.
    let stale: Vec<String> = placeholder_only
        .iter()
        .filter(|id| {
            existing.get(**id).is_some_and(|row| {
                row.status == Status::Present
                    && kinds.get(**id).is_some_and(|(k, _)| *k != row.kind)
            }) && keeps_reporting(id, &seen_by_source)
        })
        .map(|id| id.to_string())
        .collect();
    for id in &stale {
        tracing::info!(id = %id, "placeholder dropped: the store has it as another kind");
        kinds.remove(id.as_str());
        observed_res.retain(|(_, r)| r.id != *id);
        seen_by_source.retain(|(_, k)| *k != Key::Resource(id.clone()));
    }
    counts.resources_seen = observed_res.len() as i64;
    let from_ids: Vec<String> = rel_from_ids.into_iter().collect();
    let mut existing_rel = load_relations(tx, b, "from_id", &from_ids).await?;
    let mut rel_sources = load_relation_sources(tx, b, "from_id", &from_ids).await?;

    // --- Validate against the store --------------------------------------
    for (source, rel) in &observed_rel {
        for (end, role) in [(&rel.to, "points to"), (&rel.from, "starts at")] {
            let known = kinds.contains_key(end.as_str())
                || existing
                    .get(end)
                    .is_some_and(|r| r.status == Status::Present);
            if !known {
                let origin = rel.origin.clone().unwrap_or_else(|| source.clone());
                // One the store has as gone is named so: the fix is to
                // report it again, not to look for a typo.
                let what = match existing.get(end) {
                    Some(row) => format!(
                        "resource '{end}', which is gone (no source has reported it since {})",
                        chrono::DateTime::from_timestamp_millis(row.last_seen)
                            .unwrap_or_default()
                            .format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                    None => format!("unknown resource '{end}'"),
                };
                return Err(Failure::Invalid(format!(
                    "{origin}: relation '{}' {role} {what}",
                    rel.kind
                )));
            }
        }
    }
    for (id, (kind, origin)) in &kinds {
        let Some(row) = existing.get(*id) else {
            continue;
        };
        if row.status != Status::Present || row.kind == *kind {
            continue;
        }
        // A different kind is fine when only the sources of this very run
        // reported it (the file was edited), or the others only guessed it
        // (an agent's listener, a service an EC2 tag names: whichever came
        // first); otherwise two sources disagree.
        let others: Vec<&String> = res_sources
            .get(*id)
            .map(|m| {
                m.iter()
                    .filter(|(s, r)| {
                        let key = ((*s).clone(), Key::Resource(id.to_string()));
                        // Sources that retire it in this very run do not count.
                        r.status == Status::Present
                            && !r.guess
                            && !seen_by_source.contains(&key)
                            && !retiring.contains(&key)
                    })
                    .map(|(s, _)| s)
                    .collect()
            })
            .unwrap_or_default();
        if !others.is_empty() {
            return Err(Failure::Invalid(format!(
                "{origin}: resource '{id}' is reported as kind '{kind}' but is already a '{}' (reported by {})",
                row.kind,
                others
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }

    // --- Provenance rows --------------------------------------------------
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut reporter: HashMap<String, String> = HashMap::default();
    for (source, r) in &observed_res {
        let entry = res_sources.entry(r.id.clone()).or_default();
        let first_seen = entry
            .get(source)
            .filter(|s| s.status == Status::Present)
            .map_or(now, |s| s.first_seen);
        entry.insert(
            source.clone(),
            ResSource {
                name: r.name.clone(),
                labels: r.labels.clone(),
                attributes: r.attributes.clone(),
                status: Status::Present,
                first_seen,
                last_seen: now,
                gone_at: None,
                run_id: Some(run_id),
                guess: r.placeholder,
                dirty: true,
            },
        );
        touched.insert(r.id.clone());
        reporter
            .entry(r.id.clone())
            .or_insert_with(|| source.clone());
    }
    let mut rel_touched: BTreeSet<RelKey> = BTreeSet::new();
    let mut rel_reporter: HashMap<RelKey, String> = HashMap::default();
    for (source, rel) in &observed_rel {
        let key = (rel.from.clone(), rel.to.clone(), rel.kind.clone());
        let entry = rel_sources.entry(key.clone()).or_default();
        let first_seen = entry
            .get(source)
            .filter(|s| s.status == Status::Present)
            .map_or(now, |s| s.first_seen);
        entry.insert(
            source.clone(),
            RelSource {
                attributes: rel.attributes.clone(),
                status: Status::Present,
                first_seen,
                last_seen: now,
                gone_at: None,
                run_id: Some(run_id),
                dirty: true,
            },
        );
        rel_reporter
            .entry(key.clone())
            .or_insert_with(|| source.clone());
        rel_touched.insert(key);
    }
    for (source, key) in &retire {
        match key {
            Key::Resource(id) => {
                if let Some(row) = res_sources.get_mut(id).and_then(|m| m.get_mut(source))
                    && row.status == Status::Present
                {
                    row.status = Status::Gone;
                    row.gone_at = Some(now);
                    row.run_id = Some(run_id);
                    row.dirty = true;
                    touched.insert(id.clone());
                    reporter.entry(id.clone()).or_insert_with(|| source.clone());
                }
            }
            Key::Relation(from, to, kind) => {
                let k = (from.clone(), to.clone(), kind.clone());
                if let Some(row) = rel_sources.get_mut(&k).and_then(|m| m.get_mut(source))
                    && row.status == Status::Present
                {
                    row.status = Status::Gone;
                    row.gone_at = Some(now);
                    row.run_id = Some(run_id);
                    row.dirty = true;
                    rel_reporter
                        .entry(k.clone())
                        .or_insert_with(|| source.clone());
                    rel_touched.insert(k);
                }
            }
        }
    }

    // --- Merged views and the change log, written as they are computed ----
    let mut changes = Batch::new(CHANGES_INSERT, "", 9);
    let mut res_writes = Batch::new(RESOURCES_INSERT, RESOURCES_UPSERT, 11);
    let mut final_status: HashMap<String, Status> = HashMap::default();
    // Resources whose status flips in this run (retired or revived).
    let mut flipped: Vec<String> = Vec::new();
    for id in &touched {
        let sources = &res_sources[id];
        let old = existing.remove(id);
        let kind = kinds
            .get(id.as_str())
            .map(|(k, _)| k.to_string())
            .or_else(|| old.as_ref().map(|o| o.kind.clone()))
            .unwrap_or_default();
        let new = merge_resource(id, kind, sources, old.as_ref(), now);
        final_status.insert(id.clone(), new.status);
        if old.as_ref().is_some_and(|o| o.status != new.status) {
            flipped.push(id.clone());
        }
        let source = reporter.get(id).cloned().unwrap_or_default();
        let op = classify(old.as_ref().map(|o| o.status), new.status);
        let diff = match &old {
            Some(o) => resource_diff(o, &new),
            None => Value::Null,
        };
        let op = match op {
            Some(op) => Some(op),
            None if !diff.is_null() => Some(ChangeOp::Update),
            None => None,
        };
        if let Some(op) = op {
            match op {
                ChangeOp::Create | ChangeOp::Revive => counts.created += 1,
                ChangeOp::Update => counts.updated += 1,
                ChangeOp::Retire => counts.retired += 1,
            }
            changes
                .push(
                    tx,
                    b,
                    change_row(now, run_id, source, id.clone(), None, op, diff),
                )
                .await?;
        }
        let updated_at = if op.is_some() || old.is_none() {
            now
        } else {
            old.as_ref().map_or(now, |o| o.last_seen)
        };
        res_writes
            .push(
                tx,
                b,
                [
                    V::T(id.clone()),
                    V::T(new.kind),
                    V::T(new.name),
                    V::T(serde_json::to_string(&new.labels).map_err(anyhow::Error::from)?),
                    V::T(new.attributes.to_string()),
                    V::T(new.status.as_str().into()),
                    V::I(new.first_seen),
                    V::I(new.last_seen),
                    V::OI(new.gone_at),
                    V::I(updated_at),
                    V::T(provenance_json(sources.iter().map(|(src, r)| {
                        (src.as_str(), r.status, r.first_seen, r.last_seen, r.gone_at)
                    }))),
                ],
            )
            .await?;
    }
    res_writes.finish(tx, b).await?;
    // A relation this run reports must not point at a resource this run
    // retires (a file that drops a resource but keeps a relation to it).
    for (source, rel) in &observed_rel {
        for end in [&rel.from, &rel.to] {
            let gone = match final_status.get(end) {
                Some(st) => *st == Status::Gone,
                None => existing
                    .get(end)
                    .is_some_and(|r| r.status != Status::Present),
            };
            if gone {
                let origin = rel.origin.clone().unwrap_or_else(|| source.clone());
                return Err(Failure::Invalid(format!(
                    "{origin}: relation '{}' points to '{end}', which no source reports any more after this run",
                    rel.kind
                )));
            }
        }
    }
    let mut src_writes = Batch::new(RESOURCE_SOURCES_INSERT, RESOURCE_SOURCES_UPSERT, 11);
    for id in &touched {
        for (source, s) in &res_sources[id] {
            if !s.dirty {
                continue;
            }
            src_writes
                .push(
                    tx,
                    b,
                    [
                        V::T(id.clone()),
                        V::T(source.clone()),
                        V::OT(s.name.clone()),
                        V::T(serde_json::to_string(&s.labels).map_err(anyhow::Error::from)?),
                        V::T(s.attributes.to_string()),
                        V::T(s.status.as_str().into()),
                        V::I(s.first_seen),
                        V::I(s.last_seen),
                        V::OI(s.gone_at),
                        V::OI(s.run_id),
                        V::I(s.guess as i64),
                    ],
                )
                .await?;
        }
    }
    src_writes.finish(tx, b).await?;

    // Relations follow their ends: when a resource goes GONE (or comes
    // back), every relation touching it goes GONE (or comes back) in the
    // merged view with a change entry, whichever source asserted it. The
    // sources' own rows stay as they are, so a manual relation returns with
    // its end.
    if !flipped.is_empty() {
        let loaded: HashSet<String> = from_ids.iter().cloned().collect();
        let (went, back): (Vec<String>, Vec<String>) = flipped
            .iter()
            .cloned()
            .partition(|id| final_status.get(id) == Some(&Status::Gone));
        let mut keys: Vec<RelKey> = Vec::new();
        // Going: the present relations at its ends. Coming back: the GONE
        // ones some source still asserts. (Not the whole history.)
        let asserted = "AND EXISTS (SELECT 1 FROM relation_sources s WHERE s.from_id = r.from_id \
                        AND s.to_id = r.to_id AND s.kind = r.kind AND s.status = 'present')";
        for (ids, status, extra) in [(&went, "present", ""), (&back, "gone", asserted)] {
            if ids.is_empty() {
                continue;
            }
            for end in ["from_id", "to_id"] {
                let head = format!(
                    "SELECT r.from_id, r.to_id, r.kind FROM relations r WHERE r.status = '{status}' {extra} AND r.{end}"
                );
                for row in fetch_in(tx, b, &head, ids).await? {
                    keys.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
                }
            }
        }
        keys.retain(|k| !rel_touched.contains(k));
        keys.sort();
        keys.dedup();
        let wanted: HashSet<&RelKey> = keys.iter().collect();
        // Read by the flipped end, not by every `from` of the wanted keys:
        // a shared service that goes is the `to` of a relation from each
        // of its users, whose other relations are not wanted. (The flipped
        // resources this run loaded have their outgoing ones already.)
        let unloaded: Vec<String> = flipped
            .iter()
            .filter(|f| !loaded.contains(*f))
            .cloned()
            .collect();
        for (end, ids) in [("to_id", &flipped), ("from_id", &unloaded)] {
            if ids.is_empty() {
                continue;
            }
            for (k, v) in load_relations(tx, b, end, ids).await? {
                if wanted.contains(&k) {
                    existing_rel.entry(k).or_insert(v);
                }
            }
            for (k, v) in load_relation_sources(tx, b, end, ids).await? {
                if wanted.contains(&k) {
                    rel_sources.entry(k).or_insert(v);
                }
            }
        }
        let flipped: HashSet<&String> = flipped.iter().collect();
        for k in &keys {
            if rel_sources.contains_key(k) {
                let end = if flipped.contains(&k.0) { &k.0 } else { &k.1 };
                if let Some(src) = reporter.get(end) {
                    rel_reporter.entry(k.clone()).or_insert_with(|| src.clone());
                }
                rel_touched.insert(k.clone());
            }
        }
    }
    // The status of every end of a touched relation: this run's resources,
    // and the others' as stored.
    let unknown: Vec<String> = rel_touched
        .iter()
        .flat_map(|k| [&k.0, &k.1])
        .filter(|id| !final_status.contains_key(*id))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut other_status: HashMap<String, Status> = HashMap::default();
    for row in fetch_in(tx, b, "SELECT id, status FROM resources WHERE id", &unknown).await? {
        other_status.insert(row.try_get(0)?, st(&row, 1)?);
    }
    let end_present =
        |id: &str| final_status.get(id).or_else(|| other_status.get(id)) == Some(&Status::Present);

    let mut rel_writes = Batch::new(RELATIONS_INSERT, RELATIONS_UPSERT, 10);
    let mut rel_src_writes = Batch::new(RELATION_SOURCES_INSERT, RELATION_SOURCES_UPSERT, 10);
    for key in &rel_touched {
        let sources = &rel_sources[key];
        let old = existing_rel.remove(key);
        let mut new = merge_relation(sources, old.as_ref(), now);
        if new.status == Status::Present && !(end_present(&key.0) && end_present(&key.1)) {
            new.status = Status::Gone;
            new.gone_at = match &old {
                Some(o) if o.status == Status::Gone => o.gone_at.or(Some(now)),
                _ => Some(now),
            };
        }
        let op = classify(old.as_ref().map(|o| o.status), new.status);
        let diff = match &old {
            Some(o) if o.attributes != new.attributes => {
                json!({"attributes": {"old": o.attributes, "new": new.attributes}})
            }
            _ => Value::Null,
        };
        let op = op.or(if diff.is_null() {
            None
        } else {
            Some(ChangeOp::Update)
        });
        if let Some(op) = op {
            match op {
                ChangeOp::Create | ChangeOp::Revive => counts.created += 1,
                ChangeOp::Update => counts.updated += 1,
                ChangeOp::Retire => counts.retired += 1,
            }
            let source = rel_reporter.get(key).cloned().unwrap_or_default();
            let relation = Some((key.1.clone(), key.2.clone()));
            changes
                .push(
                    tx,
                    b,
                    change_row(now, run_id, source, key.0.clone(), relation, op, diff),
                )
                .await?;
        }
        let updated_at = if op.is_some() || old.is_none() {
            now
        } else {
            old.as_ref().map_or(now, |o| o.last_seen)
        };
        rel_writes
            .push(
                tx,
                b,
                [
                    V::T(key.0.clone()),
                    V::T(key.1.clone()),
                    V::T(key.2.clone()),
                    V::T(new.attributes.to_string()),
                    V::T(new.status.as_str().into()),
                    V::I(new.first_seen),
                    V::I(new.last_seen),
                    V::OI(new.gone_at),
                    V::I(updated_at),
                    V::T(provenance_json(sources.iter().map(|(src, r)| {
                        (src.as_str(), r.status, r.first_seen, r.last_seen, r.gone_at)
                    }))),
                ],
            )
            .await?;
        for (source, s) in sources {
            if !s.dirty {
                continue;
            }
            rel_src_writes
                .push(
                    tx,
                    b,
                    [
                        V::T(key.0.clone()),
                        V::T(key.1.clone()),
                        V::T(key.2.clone()),
                        V::T(source.clone()),
                        V::T(s.attributes.to_string()),
                        V::T(s.status.as_str().into()),
                        V::I(s.first_seen),
                        V::I(s.last_seen),
                        V::OI(s.gone_at),
                        V::OI(s.run_id),
                    ],
                )
                .await?;
        }
    }
    rel_writes.finish(tx, b).await?;
    rel_src_writes.finish(tx, b).await?;
    changes.finish(tx, b).await?;

    sqlx::query(
        "UPDATE runs SET finished_at = $1, status = $2, resources_seen = $3, relations_seen = $4, \
         created = $5, updated = $6, retired = $7, warnings = $8 WHERE id = $9",
    )
    .bind(now_ms())
    .bind(status.as_str())
    .bind(counts.resources_seen)
    .bind(counts.relations_seen)
    .bind(counts.created)
    .bind(counts.updated)
    .bind(counts.retired)
    .bind(serde_json::to_string(&collection.remarks()).map_err(anyhow::Error::from)?)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok((run_id, counts))
}

/// The change a status transition means, if any (updates are decided by diff).
fn classify(old: Option<Status>, new: Status) -> Option<ChangeOp> {
    match (old, new) {
        (None, Status::Present) => Some(ChangeOp::Create),
        (Some(Status::Gone), Status::Present) => Some(ChangeOp::Revive),
        (Some(Status::Present), Status::Gone) => Some(ChangeOp::Retire),
        _ => None,
    }
}

/// The merged view: present sources in report order, the latest wins for the
/// name, labels and attributes are merged key by key.
/// The order sources are merged in; where two sources disagree on a name,
/// label or attribute, the later one wins. The order depends on who the
/// sources are, never on who reported last, so two sources that disagree do
/// not flip the merged view (and log an update) on every run: discovered
/// sources first (older provenance first, then by name), then inventory
/// files, then manual assertions, which win.
fn precedence(source: &str, first_seen: Millis) -> (u8, Millis, &str) {
    let rank = if source == "manual" {
        2
    } else if source.starts_with("inventory:") {
        1
    } else {
        0
    };
    (rank, first_seen, source)
}

fn merge_resource(
    id: &str,
    kind: String,
    sources: &Sources<ResSource>,
    old: Option<&ResRow>,
    now: Millis,
) -> ResRow {
    let mut present: Vec<(&String, &ResSource)> = sources
        .iter()
        .filter(|(_, s)| s.status == Status::Present)
        .collect();
    let first_seen = sources.values().map(|s| s.first_seen).min().unwrap_or(now);
    let first_seen = old.map_or(first_seen, |o| o.first_seen.min(first_seen));
    if present.is_empty() {
        let mut row = old.cloned().unwrap_or(ResRow {
            kind,
            name: id.to_string(),
            labels: BTreeMap::new(),
            attributes: Value::Null,
            status: Status::Gone,
            first_seen,
            last_seen: now,
            gone_at: None,
        });
        if row.status == Status::Present || row.gone_at.is_none() {
            row.gone_at = Some(now);
        }
        row.status = Status::Gone;
        return row;
    }
    present.sort_by(|a, b| precedence(a.0, a.1.first_seen).cmp(&precedence(b.0, b.1.first_seen)));
    let mut name = None;
    let mut labels = BTreeMap::new();
    for (_, s) in &present {
        if s.name.is_some() {
            name = s.name.clone();
        }
        labels.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let attributes = collectors::merge_attributes(present.iter().map(|(_, s)| &s.attributes));
    ResRow {
        kind,
        name: name.unwrap_or_else(|| id.to_string()),
        labels,
        attributes,
        status: Status::Present,
        first_seen,
        // The latest report by any source: a source that stops reporting
        // it does not take its last report back.
        last_seen: present
            .iter()
            .map(|(_, s)| s.last_seen)
            .max()
            .unwrap_or(now)
            .max(old.map_or(0, |o| o.last_seen)),
        gone_at: None,
    }
}

fn merge_relation(sources: &Sources<RelSource>, old: Option<&RelRow>, now: Millis) -> RelRow {
    let mut present: Vec<(&String, &RelSource)> = sources
        .iter()
        .filter(|(_, s)| s.status == Status::Present)
        .collect();
    let first_seen = sources.values().map(|s| s.first_seen).min().unwrap_or(now);
    let first_seen = old.map_or(first_seen, |o| o.first_seen.min(first_seen));
    if present.is_empty() {
        let mut row = old.cloned().unwrap_or(RelRow {
            attributes: Value::Null,
            status: Status::Gone,
            first_seen,
            last_seen: now,
            gone_at: None,
        });
        if row.status == Status::Present || row.gone_at.is_none() {
            row.gone_at = Some(now);
        }
        row.status = Status::Gone;
        return row;
    }
    present.sort_by(|a, b| precedence(a.0, a.1.first_seen).cmp(&precedence(b.0, b.1.first_seen)));
    let attributes = collectors::merge_attributes(present.iter().map(|(_, s)| &s.attributes));
    RelRow {
        attributes,
        status: Status::Present,
        first_seen,
        // The latest report by any source: a source that stops reporting
        // it does not take its last report back.
        last_seen: present
            .iter()
            .map(|(_, s)| s.last_seen)
            .max()
            .unwrap_or(now)
            .max(old.map_or(0, |o| o.last_seen)),
        gone_at: None,
    }
}

/// `{field: {"old": .., "new": ..}}` for each changed field, or null.
fn resource_diff(old: &ResRow, new: &ResRow) -> Value {
    let mut diff = serde_json::Map::new();
    if old.kind != new.kind {
        diff.insert("kind".into(), json!({"old": old.kind, "new": new.kind}));
    }
    if old.name != new.name {
        diff.insert("name".into(), json!({"old": old.name, "new": new.name}));
    }
    if old.labels != new.labels {
        diff.insert(
            "labels".into(),
            json!({"old": old.labels, "new": new.labels}),
        );
    }
    if old.attributes != new.attributes {
        diff.insert(
            "attributes".into(),
            json!({"old": old.attributes, "new": new.attributes}),
        );
    }
    if diff.is_empty() {
        Value::Null
    } else {
        Value::Object(diff)
    }
}

const RESOURCES_INSERT: &str = "INSERT INTO resources (id, kind, name, labels, attributes, status, first_seen, last_seen, gone_at, updated_at, provenance) VALUES ";
const RESOURCES_UPSERT: &str = " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, labels = excluded.labels, \
     attributes = excluded.attributes, status = excluded.status, first_seen = excluded.first_seen, \
     last_seen = excluded.last_seen, gone_at = excluded.gone_at, updated_at = excluded.updated_at, \
     provenance = excluded.provenance";
const RESOURCE_SOURCES_INSERT: &str = "INSERT INTO resource_sources (resource_id, source, name, labels, attributes, status, first_seen, last_seen, gone_at, run_id, guess) VALUES ";
const RESOURCE_SOURCES_UPSERT: &str = " ON CONFLICT (resource_id, source) DO UPDATE SET name = excluded.name, labels = excluded.labels, \
     attributes = excluded.attributes, status = excluded.status, first_seen = excluded.first_seen, \
     last_seen = excluded.last_seen, gone_at = excluded.gone_at, run_id = excluded.run_id, guess = excluded.guess";
const RELATIONS_INSERT: &str = "INSERT INTO relations (from_id, to_id, kind, attributes, status, first_seen, last_seen, gone_at, updated_at, provenance) VALUES ";
const RELATIONS_UPSERT: &str = " ON CONFLICT (from_id, to_id, kind) DO UPDATE SET attributes = excluded.attributes, status = excluded.status, \
     first_seen = excluded.first_seen, last_seen = excluded.last_seen, gone_at = excluded.gone_at, \
     updated_at = excluded.updated_at, provenance = excluded.provenance";
const RELATION_SOURCES_INSERT: &str = "INSERT INTO relation_sources (from_id, to_id, kind, source, attributes, status, first_seen, last_seen, gone_at, run_id) VALUES ";
const RELATION_SOURCES_UPSERT: &str = " ON CONFLICT (from_id, to_id, kind, source) DO UPDATE SET attributes = excluded.attributes, \
     status = excluded.status, first_seen = excluded.first_seen, last_seen = excluded.last_seen, \
     gone_at = excluded.gone_at, run_id = excluded.run_id";
const CHANGES_INSERT: &str =
    "INSERT INTO changes (at, run_id, source, entity, resource_id, to_id, kind, op, diff) VALUES ";

/// One row of the change log.
fn change_row(
    now: Millis,
    run_id: i64,
    source: String,
    resource_id: String,
    relation: Option<(String, String)>,
    op: ChangeOp,
    diff: Value,
) -> [V; 9] {
    let (to, kind) = match relation {
        Some((to, kind)) => (Some(to), Some(kind)),
        None => (None, None),
    };
    [
        V::I(now),
        V::I(run_id),
        V::T(source),
        V::T(if to.is_some() { "relation" } else { "resource" }.into()),
        V::T(resource_id),
        V::OT(to),
        V::OT(kind),
        V::T(op.as_str().into()),
        V::T(diff.to_string()),
    ]
}

/// A multi-row upsert filled as rows are computed and flushed whenever it
/// holds a statement's worth of parameters, so a run's memory does not grow
/// with everything it writes.
struct Batch {
    head: &'static str,
    tail: &'static str,
    cols: usize,
    buf: Vec<V>,
}

impl Batch {
    fn new(head: &'static str, tail: &'static str, cols: usize) -> Batch {
        Batch {
            head,
            tail,
            cols,
            buf: Vec::new(),
        }
    }

    async fn push(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        b: Backend,
        row: impl IntoIterator<Item = V>,
    ) -> Result<(), Failure> {
        self.buf.extend(row);
        if self.buf.len() >= (MAX_PARAMS / self.cols).max(1) * self.cols {
            self.flush(tx, b).await?;
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        b: Backend,
    ) -> Result<(), Failure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(self.buf.len() % self.cols, 0);
        let rows = self.buf.len() / self.cols;
        let sql = format!(
            "{}{}{}",
            self.head,
            values_clause(b, rows, self.cols),
            self.tail
        );
        let mut q = dynamic(sql);
        for v in self.buf.drain(..) {
            q = match v {
                V::T(s) => q.bind(s),
                V::OT(s) => q.bind(s),
                V::I(i) => q.bind(i),
                V::OI(i) => q.bind(i),
            };
        }
        q.execute(&mut **tx).await?;
        Ok(())
    }

    async fn finish(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        b: Backend,
    ) -> Result<(), Failure> {
        self.flush(tx, b).await
    }
}

/// Runs `sql_head IN (...)` over `ids` in chunks.
async fn fetch_in(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    head: &str,
    ids: &[String],
) -> Result<Vec<sqlx::any::AnyRow>, Failure> {
    let mut out = Vec::new();
    for chunk in ids.chunks(MAX_PARAMS / 2) {
        let mut q = dynamic(format!("{head} IN ({})", placeholders(b, chunk.len())));
        for id in chunk {
            q = q.bind(id.clone());
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

fn st(row: &sqlx::any::AnyRow, at: usize) -> Result<Status, Failure> {
    let s: String = row.try_get(at)?;
    Status::parse(&s)
        .ok_or_else(|| Failure::Db(anyhow::anyhow!("unknown status '{s}' in database")))
}

async fn load_resources(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    ids: &[String],
) -> Result<HashMap<String, ResRow>, Failure> {
    let rows = fetch_in(
        tx,
        b,
        "SELECT id, kind, name, labels, attributes, status, first_seen, last_seen, gone_at FROM resources WHERE id",
        ids,
    )
    .await?;
    let mut out = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for row in rows {
        out.insert(
            row.try_get(0)?,
            ResRow {
                kind: row.try_get(1)?,
                name: row.try_get(2)?,
                labels: parse_labels(&row.try_get::<String, _>(3)?)?,
                attributes: parse_json(&row.try_get::<String, _>(4)?)?,
                status: st(&row, 5)?,
                first_seen: row.try_get(6)?,
                last_seen: row.try_get(7)?,
                gone_at: row.try_get(8)?,
            },
        );
    }
    Ok(out)
}

async fn load_resource_sources(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    ids: &[String],
) -> Result<HashMap<String, Sources<ResSource>>, Failure> {
    let rows = fetch_in(
        tx,
        b,
        "SELECT resource_id, source, name, labels, attributes, status, first_seen, last_seen, gone_at, run_id, guess \
         FROM resource_sources WHERE resource_id",
        ids,
    )
    .await?;
    let mut out: HashMap<String, Sources<ResSource>> = HashMap::default();
    for row in rows {
        out.entry(row.try_get(0)?).or_default().insert(
            row.try_get(1)?,
            ResSource {
                name: row.try_get(2)?,
                labels: parse_labels(&row.try_get::<String, _>(3)?)?,
                attributes: parse_json(&row.try_get::<String, _>(4)?)?,
                status: st(&row, 5)?,
                first_seen: row.try_get(6)?,
                last_seen: row.try_get(7)?,
                gone_at: row.try_get(8)?,
                run_id: row.try_get(9)?,
                guess: row.try_get::<i64, _>(10)? != 0,
                dirty: false,
            },
        );
    }
    Ok(out)
}

/// The relations whose `end` ("from_id" or "to_id") is one of `ids`.
async fn load_relations(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    end: &str,
    ids: &[String],
) -> Result<HashMap<RelKey, RelRow>, Failure> {
    let rows = fetch_in(
        tx,
        b,
        &format!("SELECT from_id, to_id, kind, attributes, status, first_seen, last_seen, gone_at FROM relations WHERE {end}"),
        ids,
    )
    .await?;
    let mut out = HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for row in rows {
        out.insert(
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
            RelRow {
                attributes: parse_json(&row.try_get::<String, _>(3)?)?,
                status: st(&row, 4)?,
                first_seen: row.try_get(5)?,
                last_seen: row.try_get(6)?,
                gone_at: row.try_get(7)?,
            },
        );
    }
    Ok(out)
}

/// The sources' rows of the relations whose `end` is one of `ids`.
async fn load_relation_sources(
    tx: &mut Transaction<'static, Any>,
    b: Backend,
    end: &str,
    ids: &[String],
) -> Result<HashMap<RelKey, Sources<RelSource>>, Failure> {
    let rows = fetch_in(
        tx,
        b,
        &format!(
            "SELECT from_id, to_id, kind, source, attributes, status, first_seen, last_seen, gone_at, run_id \
             FROM relation_sources WHERE {end}"
        ),
        ids,
    )
    .await?;
    let mut out: HashMap<RelKey, Sources<RelSource>> = HashMap::default();
    for row in rows {
        out.entry((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            .or_default()
            .insert(
                row.try_get(3)?,
                RelSource {
                    attributes: parse_json(&row.try_get::<String, _>(4)?)?,
                    status: st(&row, 5)?,
                    first_seen: row.try_get(6)?,
                    last_seen: row.try_get(7)?,
                    gone_at: row.try_get(8)?,
                    run_id: row.try_get(9)?,
                    dirty: false,
                },
            );
    }
    Ok(out)
}
