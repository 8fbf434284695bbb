//! The store: the only module that talks to the database. It owns the schema
//! (migrations for SQLite and PostgreSQL), reconciles collection runs into
//! resources, relations, provenance and the change log in ONE transaction,
//! and loads everything back for the in-memory graph.
//!
//! Both databases run the same SQL through `sqlx::Any`; see ARCHITECTURE.md
//! for why.

mod reconcile;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Row};

use crate::model::{
    Change, ChangeOp, Millis, Provenance, Relation, Resource, Run, RunStatus, Status,
};

pub use reconcile::{
    Guard, Key, OutOfOrder, RunInput, RunSummary, SilentSince, Superseded, source_name,
};

/// Which database the store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A handle on the inventory database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Runs in this process, one at a time on SQLite (see
    /// [`Store::apply`]); PostgreSQL serializes them with a lock of its own.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Rows per multi-row statement stay under this many bind parameters
/// (SQLite allows 32,766, PostgreSQL 65,535).
const MAX_PARAMS: usize = 16_000;

/// A database's refusal in its own words and SQLSTATE code, with its
/// detail and hint. (sqlx adds "at line N", the line of the database
/// server's own source that raised it: no help to the reader.)
fn said(db: &dyn sqlx::error::DatabaseError) -> String {
    let mut said = db.message().to_string();
    if let Some(code) = db.code() {
        said.push_str(&format!(" (SQLSTATE {code})"));
    }
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        for (what, text) in [("detail", pg.detail()), ("hint", pg.hint())] {
            if let Some(text) = text {
                said.push_str(&format!("; {what}: {text}"));
            }
        }
    }
    said
}

/// [`said`] for an error that may be the database's.
fn server_said(err: sqlx::Error) -> anyhow::Error {
    match err.as_database_error() {
        Some(db) => anyhow::anyhow!("the database refused: {}", said(db)),
        None => err.into(),
    }
}

/// An error's chain as text, a database's refusal in [`said`]'s words and
/// ending there (what follows it in the chain is the driver's own error,
/// "at line N" included).
pub fn error_text(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for c in err.chain() {
        if let Some(db) = c
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
        {
            parts.push(format!("the database refused: {}", said(db)));
            break;
        }
        parts.push(c.to_string());
    }
    parts.join(": ")
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://...`), creating a
    /// SQLite file if needed, and runs the embedded migrations.
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = normalize_url(url)?;
        tracing::Span::current().record("backend", format!("{backend:?}"));
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        // sqlx logs every statement, and slow ones at WARN with their full
        // text: a 16,000-parameter upsert would flood the log. Runs log their
        // own summary instead.
        let options = sqlx::any::AnyConnectOptions::from_str(&url)
            .with_context(|| format!("invalid database url {}", redact(&url)))?
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, std::time::Duration::from_secs(60));
        // One connection first, on its own: a pool retries a refused or
        // failed connection until its acquire timeout (30 s) and then says
        // only "pool timed out"; this says why, at once.
        {
            use sqlx::ConnectOptions;
            let probe = tokio::time::timeout(std::time::Duration::from_secs(30), options.connect())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "cannot open database {}: no answer within 30 s",
                        redact(&url)
                    )
                })?
                .map_err(server_said)
                .with_context(|| format!("cannot open database {}", redact(&url)))?;
            use sqlx::Connection;
            let _ = probe.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open database {}", redact(&url)))?;
        if backend == Backend::Sqlite {
            // WAL lets readers (the API) go on while a run writes.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate database {}", redact(&url)))?;
        Ok(Store {
            pool,
            backend,
            writer: Default::default(),
        })
    }

    /// The database kind.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Every resource and relation, present and gone, with provenance, as
    /// of one moment: the reads run in one read-only transaction, so a run
    /// that commits meanwhile is wholly in or wholly out (read
    /// statement by statement, a relation could be read before a run
    /// created its resource, and its edge would be missing from the graph
    /// until the next refresh).
    #[tracing::instrument(skip_all)]
    pub async fn load_all(&self) -> anyhow::Result<(Vec<Resource>, Vec<Relation>)> {
        if self.backend == Backend::Sqlite {
            return self.load_all_sqlite().await;
        }
        use futures_util::TryStreamExt;
        let mut txn = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *txn)
            .await?;
        let mut resources = Vec::new();
        {
            let mut rows = sqlx::query(
                "SELECT id, kind, name, labels, attributes, status, first_seen, last_seen, gone_at, provenance \
                 FROM resources",
            )
            .fetch(&mut *txn);
            while let Some(row) = rows.try_next().await? {
                resources.push(Resource {
                    id: row.try_get(0)?,
                    kind: row.try_get(1)?,
                    name: row.try_get(2)?,
                    labels: parse_labels(row.try_get_unchecked::<&str, _>(3)?)?,
                    attributes: parse_json(row.try_get_unchecked::<&str, _>(4)?)?,
                    status: status(&row, 5)?,
                    first_seen: row.try_get(6)?,
                    last_seen: row.try_get(7)?,
                    gone_at: row.try_get(8)?,
                    sources: parse_provenance(row.try_get_unchecked::<&str, _>(9)?)?,
                });
            }
        }
        let mut relations = Vec::new();
        {
            let mut rows = sqlx::query(
                "SELECT from_id, to_id, kind, attributes, status, first_seen, last_seen, gone_at, provenance \
                 FROM relations",
            )
            .fetch(&mut *txn);
            while let Some(row) = rows.try_next().await? {
                relations.push(Relation {
                    from: row.try_get(0)?,
                    to: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    attributes: parse_json(row.try_get_unchecked::<&str, _>(3)?)?,
                    status: status(&row, 4)?,
                    first_seen: row.try_get(5)?,
                    last_seen: row.try_get(6)?,
                    gone_at: row.try_get(7)?,
                    sources: parse_provenance(row.try_get_unchecked::<&str, _>(8)?)?,
                });
            }
        }
        txn.rollback().await?;
        Ok((resources, relations))
    }

    /// SQLite's driver hands every row from its worker thread to the async
    /// task; with 600k rows the context switches cost more than the reading.
    /// So SQLite returns chunks of rows as one JSON array each, decoded on
    /// blocking threads, two chunks at a time, while SQLite builds the next
    /// on its connection's thread: decoding is the larger half of the work,
    /// and the two cores share it. All chunks are read in one transaction
    /// (one WAL snapshot).
    async fn load_all_sqlite(&self) -> anyhow::Result<(Vec<Resource>, Vec<Relation>)> {
        const CHUNK: i64 = 5_000;
        const DECODING: usize = 2;
        enum Decoded {
            Resources(Vec<Resource>),
            Relations(Vec<Relation>),
        }
        let mut resources = Vec::new();
        let mut relations = Vec::new();
        // In chunk order, so the rows keep the store's order (the graph
        // build's sorts find them nearly sorted).
        let mut decoding = std::collections::VecDeque::new();
        let mut txn = self.pool.begin().await?;
        // Rows are never deleted, so the highest rowid is about the count:
        // room for every row at once, instead of growing by doubling
        // (copying a gigabyte of relations on large, onto fresh pages).
        let sizes = sqlx::query(
            "SELECT (SELECT max(rowid) FROM resources), (SELECT max(rowid) FROM relations)",
        )
        .fetch_one(&mut *txn)
        .await?;
        let room = |at: usize| -> anyhow::Result<usize> {
            Ok(sizes
                .try_get::<Option<i64>, _>(at)?
                .unwrap_or(0)
                .clamp(0, 1 << 27) as usize)
        };
        // A hint only: a store whose rowids jumped (restored, edited by
        // hand) must not abort the load for want of memory up front.
        let _ = resources.try_reserve(room(0)?);
        let _ = relations.try_reserve(room(1)?);
        let mut take = |decoded: Result<anyhow::Result<Decoded>, tokio::task::JoinError>| {
            match decoded.context("the decoder of the stored rows failed")?? {
                Decoded::Resources(chunk) => resources.extend(chunk),
                Decoded::Relations(chunk) => relations.extend(chunk),
            }
            anyhow::Ok(())
        };
        for (is_relations, sql) in [
            (
                false,
                "SELECT max(r), json_group_array(json_array(id, kind, name, labels, attributes, status, \
                 first_seen, last_seen, gone_at, provenance)) FROM (SELECT rowid AS r, * FROM resources \
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
            ),
            (
                true,
                "SELECT max(r), json_group_array(json_array(from_id, to_id, kind, attributes, status, \
                 first_seen, last_seen, gone_at, provenance)) FROM (SELECT rowid AS r, * FROM relations \
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
            ),
        ] {
            let mut after = i64::MIN;
            loop {
                let fetch = sqlx::query(sql)
                    .bind(after)
                    .bind(CHUNK)
                    .fetch_one(&mut *txn);
                // The oldest decode is awaited while SQLite builds the next chunk.
                let oldest = async {
                    if decoding.len() >= DECODING {
                        let oldest: tokio::task::JoinHandle<_> =
                            decoding.pop_front().expect("a decode in flight");
                        Some(oldest.await)
                    } else {
                        None
                    }
                };
                let (row, done) = tokio::join!(fetch, oldest);
                if let Some(done) = done {
                    take(done)?;
                }
                let row = row?;
                let Some(last) = row.try_get::<Option<i64>, _>(0)? else {
                    break;
                };
                after = last;
                let text: String = row.try_get(1)?;
                decoding.push_back(tokio::task::spawn_blocking(move || {
                    Ok(if is_relations {
                        Decoded::Relations(decode_relations(&text)?)
                    } else {
                        Decoded::Resources(decode_resources(&text)?)
                    })
                }));
            }
        }
        txn.rollback().await?;
        while let Some(done) = decoding.pop_front() {
            take(done.await)?;
        }
        Ok((resources, relations))
    }

    /// A mark of the runs committed so far, to notice other processes'
    /// writes: the highest run id, and how many recorded runs have an id
    /// above `floor` (on PostgreSQL a run with a lower id can commit after
    /// one with a higher id; the count catches it). Failed runs wrote
    /// nothing and are left out.
    pub async fn run_mark(&self, floor: i64) -> anyhow::Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(id), 0), COUNT(*) FROM runs WHERE id > $1 AND status <> 'failed'",
        )
        .bind(floor)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The highest run id (0 without runs).
    pub async fn last_run_id(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM runs")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The most recent `last` runs, newest first.
    pub async fn runs(&self, last: i64) -> anyhow::Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT id, collector, scope, started_at, finished_at, status, resources_seen, relations_seen, \
             created, updated, retired, error, warnings FROM runs ORDER BY id DESC LIMIT $1",
        )
        .bind(last.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Every source that reports something now, with how much and when it
    /// last did, the longest silent first: a source nothing collects any
    /// more (a renamed file, a region dropped from `--regions`) keeps what
    /// it reported PRESENT until it is retired ([`Store::retire_source`]).
    pub async fn sources(&self) -> anyhow::Result<Vec<crate::model::SourceSummary>> {
        let mut by: BTreeMap<String, crate::model::SourceSummary> = BTreeMap::new();
        for (table, relations) in [("resource_sources", false), ("relation_sources", true)] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT source, COUNT(*), MAX(last_seen) FROM {table} WHERE status = 'present' GROUP BY source"
            )))
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let source: String = row.try_get(0)?;
                let (n, last): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
                let e = by
                    .entry(source.clone())
                    .or_insert(crate::model::SourceSummary {
                        source,
                        resources: 0,
                        relations: 0,
                        last_seen: last,
                    });
                if relations {
                    e.relations = n;
                } else {
                    e.resources = n;
                }
                e.last_seen = e.last_seen.max(last);
            }
        }
        let mut out: Vec<_> = by.into_values().collect();
        out.sort_by(|a, b| a.last_seen.cmp(&b.last_seen).then(a.source.cmp(&b.source)));
        Ok(out)
    }

    /// The run that retires everything `source` reports (as a complete run
    /// of that source that saw nothing would): what other sources report
    /// stays, history is kept. `Ok(Err(why))`, naming the sources there
    /// are, when `source` reports nothing now.
    pub async fn retire_source_input(
        &self,
        source: &str,
    ) -> anyhow::Result<Result<RunInput, String>> {
        let sources = self.sources().await?;
        if !sources.iter().any(|s| s.source == source) {
            let mut known: Vec<&str> = sources.iter().map(|s| s.source.as_str()).collect();
            known.sort_unstable();
            let more = known.len().saturating_sub(20);
            known.truncate(20);
            return Ok(Err(format!(
                "source '{source}' reports nothing now; the sources that do: {}{}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
                if more > 0 {
                    format!(" and {more} more (infragraph sources)")
                } else {
                    String::new()
                }
            )));
        }
        let (collector, scope) = source.split_once(':').unwrap_or((source, ""));
        Ok(Ok(RunInput {
            collector: collector.to_string(),
            scope: scope.to_string(),
            started_at: crate::model::now_ms(),
            outcome: Ok(collectors::Collection {
                // Told apart from a run that found nothing, in `runs`.
                notes: vec![
                    "retired on request (retire-source): everything this source reported".into(),
                ],
                batches: vec![collectors::ScopeBatch {
                    scope: scope.to_string(),
                    complete: true,
                    ..Default::default()
                }],
                warnings: Vec::new(),
            }),
            retract: Vec::new(),
            additive: false,
        }))
    }

    /// One run by id.
    pub async fn run(&self, id: i64) -> anyhow::Result<Option<Run>> {
        let row = sqlx::query(
            "SELECT id, collector, scope, started_at, finished_at, status, resources_seen, relations_seen, \
             created, updated, retired, error, warnings FROM runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// The change log of a resource (and of relations starting or ending at
    /// it) since `since`, newest first.
    pub async fn history(&self, id: &str, since: Option<Millis>) -> anyhow::Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT at, run_id, source, entity, resource_id, to_id, kind, op, diff FROM changes \
             WHERE (resource_id = $1 OR to_id = $1) AND at >= $2 ORDER BY at DESC, id DESC",
        )
        .bind(id.to_string())
        .bind(since.unwrap_or(i64::MIN))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    /// The change logs of many resources at once (for batched API loads):
    /// per id, newest first, including changes of relations at either end.
    pub async fn history_many(
        &self,
        ids: &[String],
        since: Option<Millis>,
    ) -> anyhow::Result<HashMap<String, Vec<Change>>> {
        let mut out: HashMap<String, Vec<Change>> = HashMap::new();
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        for chunk in ids.chunks(MAX_PARAMS / 4) {
            let mut sql = String::from(
                "SELECT at, run_id, source, entity, resource_id, to_id, kind, op, diff FROM changes WHERE (resource_id IN (",
            );
            let mut n = 0;
            let mut list = |sql: &mut String| {
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push(',');
                    }
                    n += 1;
                    self.backend.param(n, sql);
                }
            };
            list(&mut sql);
            sql.push_str(") OR to_id IN (");
            list(&mut sql);
            sql.push_str(")) AND at >= ");
            self.backend.param(2 * chunk.len() + 1, &mut sql);
            sql.push_str(" ORDER BY at DESC, id DESC");
            let mut q = dynamic(sql);
            for _ in 0..2 {
                for id in chunk {
                    q = q.bind(id.clone());
                }
            }
            let rows = q
                .bind(since.unwrap_or(i64::MIN))
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                let c = change_from_row(row)?;
                if wanted.contains(c.resource_id.as_str()) {
                    out.entry(c.resource_id.clone())
                        .or_default()
                        .push(c.clone());
                }
                if let Some((to, _)) = &c.relation
                    && wanted.contains(to.as_str())
                    && *to != c.resource_id
                {
                    out.entry(to.clone()).or_default().push(c);
                }
            }
        }
        Ok(out)
    }

    /// Relations retired at or after `since`, oldest first.
    pub async fn retired_relations_since(&self, since: Millis) -> anyhow::Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT at, run_id, source, entity, resource_id, to_id, kind, op, diff FROM changes \
             WHERE at >= $1 AND op = 'retire' AND entity = 'relation' ORDER BY at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(change_from_row).collect()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Resolves the URL forms we accept into one sqlx understands.
fn normalize_url(url: &str) -> anyhow::Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.is_empty() || rest == "//" {
            anyhow::bail!("database url '{url}' names no file (try sqlite://infragraph.db)");
        }
        if rest.contains(":memory:") {
            anyhow::bail!(
                "in-memory SQLite is not supported: each connection would see its own database"
            );
        }
        let mut url = url.to_string();
        if !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        return Ok((Backend::Sqlite, url));
    }
    anyhow::bail!(
        "unsupported database url '{}': use sqlite://PATH or postgres://USER@HOST/DB",
        redact(url)
    )
}

/// Where a store is, for the log: a SQLite URL with its file's absolute
/// path (a relative one is relative to the working directory, so the same
/// config started elsewhere opens another file: the log says which), any
/// other redacted.
pub fn describe(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if let Ok(abs) = std::path::absolute(path) {
            return format!("sqlite://{}", abs.display());
        }
    }
    redact(url)
}

/// Hides a password in a URL before it reaches a log or an error: the one
/// in the user part (up to the last `@`, since an unescaped `@` may be in
/// the password) and any query parameter whose name contains "password"
/// (`?password=`, `?sslpassword=`, which the drivers accept too).
pub fn redact(url: &str) -> String {
    // The user part ends at the last `@` of the URL (an unescaped `?` or
    // `@` may be in the password); the query starts after it.
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((u, a)) => (Some(u), a),
        None => (None, rest),
    };
    let (host, query) = match after.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (after, None),
    };
    let mut out = String::new();
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(u) = userinfo {
        match u.split_once(':') {
            Some((user, _password)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str(u),
        }
        out.push('@');
    }
    out.push_str(host);
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn status(row: &AnyRow, at: usize) -> anyhow::Result<Status> {
    let s: String = row.try_get(at)?;
    Status::parse(&s).with_context(|| format!("unknown status '{s}' in database"))
}

/// The provenance summary column: `[[source, status, first_seen, last_seen, gone_at], ...]`.
/// One chunk of [`Store::load_all_sqlite`]'s resource rows.
fn decode_resources(text: &str) -> anyhow::Result<Vec<Resource>> {
    let chunk: Vec<ResourceRow> =
        serde_json::from_str(text).context("corrupt resource rows in database")?;
    let mut out = Vec::with_capacity(chunk.len());
    for ResourceRow(id, kind, name, labels, attributes, st, first_seen, last_seen, gone_at, prov) in
        chunk
    {
        out.push(Resource {
            id,
            kind,
            name,
            labels: parse_labels(&labels)?,
            attributes: parse_json(&attributes)?,
            status: Status::parse(&st)
                .with_context(|| format!("unknown status '{st}' in database"))?,
            first_seen,
            last_seen,
            gone_at,
            sources: parse_provenance(&prov)?,
        });
    }
    Ok(out)
}

/// A resource row as [`Store::load_all_sqlite`] reads it: the columns
/// parsed again (labels, attributes) or only looked at (status) are
/// borrowed from the chunk's text where they need no unescaping, one
/// allocation each fewer.
#[derive(serde::Deserialize)]
struct ResourceRow<'a>(
    String,
    String,
    String,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    Millis,
    Millis,
    Option<Millis>,
    #[serde(borrow)] Cow<'a, str>,
);

/// A relation row, as [`ResourceRow`].
#[derive(serde::Deserialize)]
struct RelationRow<'a>(
    String,
    String,
    String,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    Millis,
    Millis,
    Option<Millis>,
    #[serde(borrow)] Cow<'a, str>,
);

/// One chunk of [`Store::load_all_sqlite`]'s relation rows.
fn decode_relations(text: &str) -> anyhow::Result<Vec<Relation>> {
    let chunk: Vec<RelationRow> =
        serde_json::from_str(text).context("corrupt relation rows in database")?;
    let mut out = Vec::with_capacity(chunk.len());
    for RelationRow(from, to, kind, attributes, st, first_seen, last_seen, gone_at, prov) in chunk {
        out.push(Relation {
            from,
            to,
            kind,
            attributes: parse_json(&attributes)?,
            status: Status::parse(&st)
                .with_context(|| format!("unknown status '{st}' in database"))?,
            first_seen,
            last_seen,
            gone_at,
            sources: parse_provenance(&prov)?,
        });
    }
    Ok(out)
}

fn parse_provenance(s: &str) -> anyhow::Result<Vec<Provenance>> {
    type Row<'a> = (String, &'a str, Millis, Millis, Option<Millis>);
    let rows: Vec<Row> =
        serde_json::from_str(s).with_context(|| format!("corrupt provenance in database: {s}"))?;
    let mut out = rows
        .into_iter()
        .map(|(source, st, first_seen, last_seen, gone_at)| {
            Ok(Provenance {
                status: Status::parse(st)
                    .with_context(|| format!("unknown status '{st}' in provenance"))?,
                source,
                first_seen,
                last_seen,
                gone_at,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(out)
}

/// Renders the provenance summary column.
pub(crate) fn provenance_json<'a>(
    rows: impl Iterator<Item = (&'a str, Status, Millis, Millis, Option<Millis>)>,
) -> String {
    let v: Vec<serde_json::Value> = rows
        .map(|(source, st, first, last, gone)| {
            serde_json::json!([source, st.as_str(), first, last, gone])
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

pub(crate) fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    if s == "{}" {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(s).with_context(|| format!("corrupt labels in database: {s}"))
}

pub(crate) fn parse_json(s: &str) -> anyhow::Result<serde_json::Value> {
    if s == "null" {
        return Ok(serde_json::Value::Null);
    }
    serde_json::Value::from_str(s).with_context(|| format!("corrupt JSON in database: {s}"))
}

fn run_from_row(row: &AnyRow) -> anyhow::Result<Run> {
    let status: String = row.try_get(5)?;
    let warnings: String = row.try_get(12)?;
    Ok(Run {
        id: row.try_get(0)?,
        collector: row.try_get(1)?,
        scope: row.try_get(2)?,
        started_at: row.try_get(3)?,
        finished_at: row.try_get(4)?,
        status: RunStatus::parse(&status)
            .with_context(|| format!("unknown run status '{status}'"))?,
        resources_seen: row.try_get(6)?,
        relations_seen: row.try_get(7)?,
        created: row.try_get(8)?,
        updated: row.try_get(9)?,
        retired: row.try_get(10)?,
        error: row.try_get(11)?,
        warnings: serde_json::from_str(&warnings).unwrap_or_default(),
    })
}

fn change_from_row(row: &AnyRow) -> anyhow::Result<Change> {
    let entity: String = row.try_get(3)?;
    let op: String = row.try_get(7)?;
    let to: Option<String> = row.try_get(5)?;
    let kind: Option<String> = row.try_get(6)?;
    Ok(Change {
        at: row.try_get(0)?,
        run_id: row.try_get(1)?,
        source: row.try_get(2)?,
        resource_id: row.try_get(4)?,
        relation: match (entity.as_str(), to, kind) {
            ("relation", Some(to), Some(kind)) => Some((to, kind)),
            _ => None,
        },
        op: ChangeOp::parse(&op).with_context(|| format!("unknown change op '{op}'"))?,
        diff: parse_json(&row.try_get::<String, _>(8)?)?,
    })
}

impl Backend {
    /// The `n`th (1-based) bind parameter. SQLite gets anonymous `?`: for
    /// numbered or named ones (`$n`, `?n`) each bind looks the parameter up by
    /// a linear walk, which makes a 16,000-parameter statement quadratic
    /// (measured: 85% of a bulk load's time). Anonymous ones bind in order.
    fn param(self, n: usize, out: &mut String) {
        match self {
            Backend::Sqlite => out.push('?'),
            Backend::Postgres => {
                out.push('$');
                out.push_str(&n.to_string());
            }
        }
    }
}

/// `($1,$2,$3),($4,$5,$6)` for `rows` rows of `cols` columns.
fn values_clause(b: Backend, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            b.param(n, &mut s);
            n += 1;
        }
        s.push(')');
    }
    s
}

/// `$1,$2,...,$n`
fn placeholders(b: Backend, n: usize) -> String {
    let mut s = String::with_capacity(n * 4);
    for i in 1..=n {
        if i > 1 {
            s.push(',');
        }
        b.param(i, &mut s);
    }
    s
}

/// A statement whose text we built from fixed fragments and placeholders only.
fn dynamic(sql: String) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized_and_redacted() {
        assert_eq!(
            normalize_url("sqlite://infragraph.db").unwrap(),
            (Backend::Sqlite, "sqlite://infragraph.db?mode=rwc".into())
        );
        assert_eq!(
            normalize_url("postgres://u@h/db").unwrap().0,
            Backend::Postgres
        );
        let err = normalize_url("mysql://root:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("postgres://u:se@cret@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(
            redact("postgres://u@h:1/db?password=s3cretpw&sslmode=disable&SSLPassword=k3y"),
            "postgres://u@h:1/db?password=***&sslmode=disable&SSLPassword=***"
        );
        assert_eq!(
            redact("sqlite:///tmp/a.db?mode=rwc"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
        assert_eq!(redact("postgres://u:p?w@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        let err = normalize_url("mysql://root@h/db?password=hunter2")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(values_clause(Backend::Postgres, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(values_clause(Backend::Sqlite, 1, 2), "(?,?)");
        assert_eq!(placeholders(Backend::Postgres, 3), "$1,$2,$3");
    }

    /// The log names the SQLite file by its absolute path, and hides a
    /// PostgreSQL password.
    #[test]
    fn describe_gives_the_sqlite_file_and_hides_passwords() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            describe("sqlite://x.db?mode=rwc"),
            format!("sqlite://{}", cwd.join("x.db").display())
        );
        assert_eq!(describe("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert!(!describe("postgres://u:hunter2@h/db").contains("hunter2"));
    }
}
