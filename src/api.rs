//! The HTTP edge: GraphQL (async-graphql on axum), GraphiQL, `/healthz`.
//!
//! Every request takes one graph snapshot and resolves all nested fields from
//! it in memory, so a deep query costs no SQL per object. Only `runs`,
//! `history` (batched through a DataLoader) and `dependencies` with
//! `changedSince` read the store. Writes
//! (mutations) need the bearer token and go through [`App`], which refreshes
//! the graph afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, InputObject, Json, Object, Schema,
    SimpleObject,
};
use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, TimeZone, Utc};
use collectors::{Collection, ObservedRelation, ObservedResource, ScopeBatch};

use crate::app::App;
use crate::graph::{
    ImpactResult, ImpactStatus as GStatus, Impacted, Ix, RelIx, Selector, Snapshot,
};
use crate::model::{self, LabelSelector, Millis, now_ms};
use crate::store::{Key, RunInput};

/// The GraphQL schema type.
pub type InfraSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest query accepted (GraphiQL's introspection query needs 13).
pub const MAX_DEPTH: usize = 16;
/// Largest query complexity accepted. Lists count: `resources(first: N)`
/// costs N times its selection, a resource's `relations` 10 times theirs, so
/// nesting relations four deep is refused however small the estate.
pub const MAX_COMPLEXITY: usize = 50_000;
/// What the whole-graph questions cost against [`MAX_COMPLEXITY`], so that
/// aliases cannot repeat them without bound: `spofs` (every resource tried)
/// at most 4 times a query, `impact` and `dependencies` 50 times,
/// `diagram`, `cycles`, `drift` and `agents` 25 times, `path` and a
/// filtered `resources` (a scan) 500 times.
pub const SPOFS_COST: usize = 10_000;
/// See [`SPOFS_COST`].
pub const IMPACT_COST: usize = 1_000;
/// See [`SPOFS_COST`].
pub const DIAGRAM_COST: usize = 2_000;
/// See [`SPOFS_COST`].
pub const PATH_COST: usize = 100;
/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;
/// Largest agent report accepted, in bytes: room for the most sockets a
/// report may hold (`collectors::host::MAX_SOCKETS` listeners and as many
/// connections). Read only once the token is checked.
pub const MAX_REPORT_BODY: usize = 16 << 20;
/// Largest page of `resources`.
pub const MAX_PAGE: usize = 10_000;
/// Most objects one request may list (resources of a page, relations of a
/// resource, entries of an impact list or table, dependencies, the critical
/// resources a SPOF takes down), counted as they are resolved.
/// The complexity limit is checked before anything runs and cannot know
/// that a hub has thousands of relations: nesting `relations` three deep
/// through one would list millions. A hub's whole impact on the medium
/// estate (46,000 entries) is well within it.
pub const MAX_OBJECTS: usize = 250_000;

/// What a request has listed so far, against [`MAX_OBJECTS`].
#[derive(Default)]
struct Listed(std::sync::atomic::AtomicUsize);

/// Gives every request its own [`Listed`] counter, whichever way it is
/// executed: the budget is part of the schema, not of one HTTP handler.
struct ObjectBudget;

impl async_graphql::extensions::ExtensionFactory for ObjectBudget {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(ObjectBudget)
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for ObjectBudget {
    async fn prepare_request(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        request: async_graphql::Request,
        next: async_graphql::extensions::NextPrepareRequest<'_>,
    ) -> async_graphql::ServerResult<async_graphql::Request> {
        next.run(
            ctx,
            request.data(Listed::default()).data(RequestSlots(Arc::new(
                tokio::sync::Semaphore::new(SLOTS_PER_REQUEST),
            ))),
        )
        .await
    }

    /// Every field checks the deadline before it resolves: fields answered
    /// from memory (introspection, a shared history, counts) reach neither
    /// `compute` nor `list`, and a tokio timeout cannot interrupt them.
    async fn resolve(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        info: async_graphql::extensions::ResolveInfo<'_>,
        next: async_graphql::extensions::NextResolve<'_>,
    ) -> async_graphql::ServerResult<Option<async_graphql::Value>> {
        if let Some(d) = ctx.data_opt::<Deadline>()
            && d.passed()
        {
            let e = timed_out(d.timeout);
            let mut err = async_graphql::ServerError::new(e.message, None);
            err.extensions = e.extensions;
            err.path = std::iter::once(info.path_node)
                .chain(info.path_node.parents())
                .map(|n| match n.segment {
                    async_graphql::context::QueryPathSegment::Name(f) => {
                        async_graphql::PathSegment::Field(f.to_string())
                    }
                    async_graphql::context::QueryPathSegment::Index(i) => {
                        async_graphql::PathSegment::Index(i)
                    }
                })
                .collect();
            err.path.reverse();
            return Err(err);
        }
        next.run(ctx, info).await
    }
}

/// Compute slots one request may hold at once: many aliases of a heavy
/// field run a few at a time, leaving the server's other slots to other
/// requests.
const SLOTS_PER_REQUEST: usize = 2;

/// A request's own share of the compute slots ([`SLOTS_PER_REQUEST`]).
struct RequestSlots(Arc<tokio::sync::Semaphore>);

/// When a request must be answered by, and its timeout. Checked before
/// every field and where work starts or lists (`compute`, `list`): a tokio
/// timeout only fires when the request waits, and a query answered from
/// memory may never wait. A mutation's write, which may wait for the store
/// as long as it takes, starts it again once applied: what follows it gets
/// the whole timeout.
struct Deadline {
    /// When the request started; `at` counts from here, in nanoseconds.
    base: std::time::Instant,
    at: std::sync::atomic::AtomicU64,
    timeout: std::time::Duration,
}

impl Deadline {
    fn new(timeout: std::time::Duration) -> Deadline {
        let d = Deadline {
            base: std::time::Instant::now(),
            at: Default::default(),
            timeout,
        };
        d.restart();
        d
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos().min(u64::MAX as u128) as u64
    }

    fn passed(&self) -> bool {
        self.now() >= self.at.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn restart(&self) {
        let at = self
            .now()
            .saturating_add(self.timeout.as_nanos().min(u64::MAX as u128) as u64);
        self.at.store(at, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The error of a query past its deadline.
fn timed_out(timeout: std::time::Duration) -> async_graphql::Error {
    client_error(
        "TIMEOUT",
        format!(
            "the request took longer than {} ms (query_timeout) and was stopped: what it had not resolved by then is not in the answer; ask for less (page lists, narrow selectors, fewer aliases)",
            timeout.as_millis()
        ),
    )
}

/// An error once the request is past its deadline.
fn check_deadline(ctx: &Context<'_>) -> async_graphql::Result<()> {
    match ctx.data_opt::<Deadline>() {
        Some(d) if d.passed() => Err(timed_out(d.timeout)),
        _ => Ok(()),
    }
}

/// Counts `n` more listed objects; an error once the request is over
/// [`MAX_OBJECTS`]. Every request carries its counter ([`ObjectBudget`]);
/// one without would be a bug, and is refused rather than left unbounded.
fn list(ctx: &Context<'_>, n: usize) -> async_graphql::Result<()> {
    let Some(listed) = ctx.data_opt::<Listed>() else {
        return Err(internal(anyhow::anyhow!(
            "a request without its object budget (the schema lacks the ObjectBudget extension)"
        )));
    };
    let before = listed.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    if before + n > MAX_OBJECTS {
        return Err(client_error(
            "TOO_LARGE",
            format!(
                "this answer would list more than {MAX_OBJECTS} objects: page the lists that take first/offset, filter relations by kind or direction, or nest relations less deep"
            ),
        ));
    }
    check_deadline(ctx)
}

/// `items`, counted with [`list`].
fn listed<T>(ctx: &Context<'_>, items: Vec<T>) -> async_graphql::Result<Vec<T>> {
    list(ctx, items.len())?;
    Ok(items)
}

/// A count argument (`maxDepth`, `first`, `offset`, `hops`, ...): none, or 0
/// or more. A negative one is refused by name, never read as 0.
fn count_arg(name: &str, v: Option<i32>) -> async_graphql::Result<Option<u32>> {
    match v {
        Some(n) if n < 0 => Err(client_error(
            "BAD_INPUT",
            format!("{name} must be 0 or more, not {n}"),
        )),
        Some(n) => Ok(Some(n as u32)),
        None => Ok(None),
    }
}

/// Builds the schema with its limits. Data is attached per request.
pub fn schema() -> InfraSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(ObjectBudget)
        .finish()
}

/// The SDL as committed in `schema/infragraph.graphql`.
pub fn sdl() -> String {
    schema().sdl()
}

#[derive(Clone)]
struct AppState {
    app: Arc<App>,
    schema: InfraSchema,
}

/// The router: `POST /graphql`, GraphiQL at `GET /graphql`, `/healthz`.
pub fn router(app: Arc<App>) -> Router {
    let state = AppState {
        app,
        schema: schema(),
    };
    // Reports have their own, larger limit, applied in the handler once
    // the token is known.
    let agents = Router::new().route("/api/v1/agents/report", axum::routing::post(agent_report));
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/healthz", get(healthz))
        .route("/diagrams/{file}", get(diagram_http))
        .route("/", get(|| async { Redirect::temporary("/graphql") }))
        // Applied by the body extractors, so an oversized GraphQL request
        // gets a GraphQL-shaped 413 (a layer answered in plain text).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .merge(agents)
        .with_state(state)
}

/// `POST /api/v1/agents/report`: a host agent's report (JSON, see the
/// README). The server's write token may report for any host; an agent
/// token only for its own host name. Answers 200 with the run, or 4xx with
/// `{"error": ...}` and nothing written.
async fn agent_report(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    use crate::agent::Reporter;
    let error = |status: StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let Some(presented) = presented else {
        return error(
            StatusCode::UNAUTHORIZED,
            "reports need 'Authorization: Bearer <agent token>'".into(),
        );
    };
    let who = if state
        .app
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
    {
        Reporter::Admin
    } else if let Some(h) = state.app.agents.tokens.host_for(presented) {
        Reporter::Agent(h.to_string())
    } else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unknown token: not an agent token or the server's write token".into(),
        );
    };
    // The body is read only for a known token.
    let body = match axum::body::to_bytes(body, MAX_REPORT_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_big {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("report larger than {MAX_REPORT_BODY} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the report: {e}"),
                )
            };
        }
    };
    match crate::agent::ingest(&state.app, who, &body).await {
        // Recorded as a failed run (e.g. it raced a retirement): tell the
        // agent, which retries with its next report.
        Ok(run) if run.status == model::RunStatus::Failed => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "report not recorded (run {}): {}",
                run.id,
                run.error.as_deref().unwrap_or("failed")
            ),
        ),
        Ok(run) => axum::Json(serde_json::json!({
            "run": run.id,
            "status": run.status.as_str(),
            "created": run.created,
            "updated": run.updated,
            "retired": run.retired,
            "error": run.error,
        }))
        .into_response(),
        Err(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() {
                tracing::error!(error = %r.message, "agent report failed");
                error(status, "internal error".into())
            } else {
                error(status, r.message)
            }
        }
    }
}

/// Whether the request carried the write token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No token configured on the server: writes are disabled.
    Disabled,
    /// A token is configured and the request did not present it.
    Missing,
    /// The request presented the token.
    Writer,
}

/// The credentials of an `Authorization: Bearer TOKEN` header; the scheme
/// is case-insensitive (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

fn authenticate(headers: &HeaderMap, token: Option<&str>) -> Auth {
    let Some(expected) = token else {
        return Auth::Disabled;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => Auth::Writer,
        _ => Auth::Missing,
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Batches `Resource.history` over all resources of one request.
pub struct HistoryLoader {
    store: crate::store::Store,
}

/// A resource id and the `since` of a history request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HistoryKey(String, Option<Millis>);

impl Loader<HistoryKey> for HistoryLoader {
    type Value = Vec<model::Change>;
    type Error = Arc<String>;

    async fn load(
        &self,
        keys: &[HistoryKey],
    ) -> Result<std::collections::HashMap<HistoryKey, Self::Value>, Self::Error> {
        let mut by_since: BTreeMap<Option<Millis>, Vec<String>> = BTreeMap::new();
        for k in keys {
            by_since.entry(k.1).or_default().push(k.0.clone());
        }
        let mut out = std::collections::HashMap::new();
        for (since, ids) in by_since {
            let mut found = self
                .store
                .history_many(&ids, since)
                .await
                .map_err(|e| Arc::new(format!("{e:#}")))?;
            for id in ids {
                let changes = found.remove(&id).unwrap_or_default();
                out.insert(HistoryKey(id, since), changes);
            }
        }
        Ok(out)
    }
}

async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // The body is read here, not by async-graphql's extractor, so a body
    // over the limit is 413 whether or not it announced its length (a
    // chunked one was a 400 with the extractor's debug text).
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body larger than {MAX_BODY} bytes")
            } else {
                rejection.body_text()
            };
            return graphql_error(status, message);
        }
    };
    let req: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return graphql_error(
                StatusCode::BAD_REQUEST,
                format!("not a GraphQL request (JSON with a 'query'): {e}"),
            );
        }
    };
    let auth = authenticate(&headers, state.app.token.as_deref());
    let loader = DataLoader::new(
        HistoryLoader {
            store: state.app.store.clone(),
        },
        tokio::spawn,
    );
    let req = req
        .data(loader)
        .data(state.app.snapshot())
        .data(state.app.clone())
        .data(auth);
    // A query is abandoned after the timeout, its answer written into the
    // response included; what it left on the blocking pool finishes there,
    // in its compute slot. A mutation is not: each of its fields is a run
    // of its own, committed as it goes, and cutting it off would leave some
    // applied behind an answer that says none was (writes wait for the
    // store instead, as `collect` does). Its fields check the deadline
    // before they start, as a query's do, so a write that has not started
    // by then is not, and the answer says which fields were resolved.
    let mut req = req;
    let (mutation, doc) = operation_of(&mut req);
    // Fragments that multiply (a few kilobytes naming millions of fields)
    // are refused before async-graphql expands them: every field costs at
    // least 1 in the complexity count, so this many is over its limit.
    let cap = 4 * MAX_COMPLEXITY as u64;
    if doc
        .as_ref()
        .and_then(|d| expanded_fields(&d.doc, cap))
        .is_some_and(|n| n > cap)
    {
        let mut answer =
            async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(
                "Query is too complex.",
                None,
            )]);
        explain_limits(&mut answer);
        return GraphQLResponse::from(answer).into_response();
    }
    let timeout = state.app.query_timeout();
    let req = req.data(Deadline::new(timeout));
    if mutation {
        // Run to the end on a task of its own, even if the client goes
        // away meanwhile (which drops this handler).
        let schema = state.schema.clone();
        return match tokio::spawn(async move { schema.execute(req).await }).await {
            Ok(mut answer) => {
                settle_mutation(&mut answer);
                in_query_order(doc.as_ref(), &mut answer.data);
                explain_limits(&mut answer);
                GraphQLResponse::from(answer).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "mutation task failed");
                graphql_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the server log has the details".into(),
                )
            }
        };
    }
    let answer = async {
        let mut answer = state.schema.execute(req).await;
        explain_limits(&mut answer);
        let has = |answer: &async_graphql::Response, code: &str| {
            answer.errors.iter().any(|e| {
                e.extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .is_some_and(|c| *c == async_graphql::Value::from(code))
            })
        };
        // Past the deadline inside the execution: the same 503 as past it
        // while waiting.
        let late = has(&answer, "TIMEOUT");
        if late || has(&answer, "TOO_LARGE") {
            // Stopped part way: what was resolved is not the answer (the
            // rest of a list is missing, or null where the schema says it
            // cannot be), so none of it is sent.
            answer.data = async_graphql::Value::Null;
            once_each(&mut answer);
        } else {
            propagate_nulls(doc.as_ref(), &mut answer);
            in_query_order(doc.as_ref(), &mut answer.data);
        }
        let mut response = GraphQLResponse::from(answer).into_response();
        if late {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "query abandoned after the query timeout"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "errors": [{
                    "message": timed_out(timeout).message,
                    "extensions": { "code": "TIMEOUT" },
                }] })),
            )
                .into_response()
        }
    }
}

/// A mutation's answer, where limits stopped it: a field refused at the
/// deadline wrote nothing, and says so; a field whose write landed but
/// whose selection was stopped is null (async-graphql leaves a failed
/// field's key out, so what remained would pass for the whole selection)
/// with one error at its own path saying the write was applied.
fn settle_mutation(answer: &mut async_graphql::Response) {
    let stopped_code = |e: &async_graphql::ServerError| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|c| {
                *c == async_graphql::Value::from("TIMEOUT")
                    || *c == async_graphql::Value::from("TOO_LARGE")
            })
    };
    let mut nulled = Vec::new();
    for e in answer.errors.iter_mut().filter(|e| stopped_code(e)) {
        let Some(async_graphql::PathSegment::Field(top)) = e.path.first().cloned() else {
            continue;
        };
        if e.path.len() == 1 {
            e.message = format!("not started, nothing written: {}", e.message);
        } else {
            e.message = format!(
                "applied (the write landed), but its selection was not resolved: {}",
                e.message
            );
            e.path.truncate(1);
            nulled.push(top);
        }
    }
    if let async_graphql::Value::Object(fields) = &mut answer.data {
        for top in nulled {
            fields.insert(async_graphql::Name::new(top), async_graphql::Value::Null);
        }
    }
    once_each(answer);
}

/// async-graphql's refusals for the depth and complexity limits say only
/// "Query is too complex." / "Query is nested too deep.": given a code, the
/// limit, and what to do, as the other limits are.
fn explain_limits(answer: &mut async_graphql::Response) {
    for e in &mut answer.errors {
        let (code, message) = match e.message.as_str() {
            "Query is too complex." => (
                "TOO_COMPLEX",
                format!(
                    "query is too complex: its cost is over {MAX_COMPLEXITY} (a list costs its length, first: or 100 by default, times its fields; whole-graph fields such as spofs, impact and diagram cost more, see the README's limits): ask for smaller pages or fewer aliases"
                ),
            ),
            "Query is nested too deep." => (
                "TOO_DEEP",
                format!("query is nested deeper than {MAX_DEPTH} levels"),
            ),
            _ => continue,
        };
        e.message = message;
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

/// Keeps one error per message and top-level field: an item of a long list
/// past a limit fails each following item the same way (thousands of
/// copies), while the fields that failed stay named.
fn once_each(answer: &mut async_graphql::Response) {
    let mut seen = std::collections::HashSet::new();
    answer.errors.retain(|e| {
        let top = match e.path.first() {
            Some(async_graphql::PathSegment::Field(f)) => f.clone(),
            _ => String::new(),
        };
        seen.insert((e.message.clone(), top))
    });
}

/// The operation a request runs, read from its document before it runs:
/// whether it is a mutation (a document that does not parse is not: its
/// execution answers the syntax error), and the document with the
/// operation's name, to put the answer's keys in the query's order once it
/// has run ([`in_query_order`]).
fn operation_of(req: &mut async_graphql::Request) -> (bool, Option<QueryDoc>) {
    use async_graphql::parser::types::OperationType;
    let name = req.operation_name.clone();
    // Parsed once: execution reuses the document.
    let Ok(doc) = req.parsed_query() else {
        return (false, None);
    };
    let doc = QueryDoc {
        doc: doc.clone(),
        name,
        vars: req.variables.clone(),
    };
    // Variables' defaults, where the request gives none, into the request:
    // async-graphql 7.2 reads only the request's variables for @skip and
    // @include (a `$s: Boolean = true` it reads as false), where arguments
    // get their defaults. So the query that runs is the one the key order
    // and null propagation read.
    if let Some(op) = doc.operation() {
        req.variables = doc.vars_of(op);
    }
    let mutation = doc
        .operation()
        .is_some_and(|op| op.ty == OperationType::Mutation);
    (mutation, Some(doc))
}

/// How many fields a document names with its fragments expanded, up to
/// `cap`; None past `cap` levels of nesting or for a fragment cycle (which
/// validation refuses cheaply on its own). Fragments are counted once each
/// (memoized), so this costs what the document's text does, where
/// async-graphql's complexity check expands them: ten aliases a level over
/// seven levels of fragments (2 KB) took it 6–24 s of one worker before it
/// answered TOO_COMPLEX.
fn expanded_fields(
    doc: &async_graphql::parser::types::ExecutableDocument,
    cap: u64,
) -> Option<u64> {
    use async_graphql::parser::types::{Selection, SelectionSet};
    struct Walk<'a> {
        doc: &'a async_graphql::parser::types::ExecutableDocument,
        memo: HashMap<&'a async_graphql::Name, u64>,
        open: std::collections::HashSet<&'a async_graphql::Name>,
        cap: u64,
    }
    impl<'a> Walk<'a> {
        fn set(&mut self, set: &'a SelectionSet, depth: usize) -> Option<u64> {
            if depth > 64 {
                return None;
            }
            let mut n = 0u64;
            for sel in &set.items {
                n = n.saturating_add(match &sel.node {
                    Selection::Field(f) => {
                        1u64.saturating_add(self.set(&f.node.selection_set.node, depth + 1)?)
                    }
                    Selection::InlineFragment(f) => {
                        self.set(&f.node.selection_set.node, depth + 1)?
                    }
                    Selection::FragmentSpread(f) => {
                        let name = &f.node.fragment_name.node;
                        match self.memo.get(name) {
                            Some(&m) => m,
                            None => {
                                let def = self.doc.fragments.get(name)?;
                                if !self.open.insert(name) {
                                    return None;
                                }
                                let m = self.set(&def.node.selection_set.node, depth + 1)?;
                                self.open.remove(name);
                                self.memo.insert(name, m);
                                m
                            }
                        }
                    }
                });
                if n > self.cap {
                    return Some(n);
                }
            }
            Some(n)
        }
    }
    let mut walk = Walk {
        doc,
        memo: HashMap::new(),
        open: Default::default(),
        cap,
    };
    let mut n = 0u64;
    for (_, op) in doc.operations.iter() {
        n = n.saturating_add(walk.set(&op.node.selection_set.node, 0)?);
    }
    Some(n)
}

/// A request's document, kept for [`in_query_order`].
struct QueryDoc {
    doc: async_graphql::parser::types::ExecutableDocument,
    name: Option<String>,
    /// The request's variables (for `@skip(if: $x)` and `@include`).
    vars: async_graphql::Variables,
}

impl QueryDoc {
    /// The request's variables with the operation's defaults where the
    /// request gives none.
    fn vars_of(
        &self,
        op: &async_graphql::parser::types::OperationDefinition,
    ) -> async_graphql::Variables {
        let mut vars = self.vars.clone();
        for def in &op.variable_definitions {
            if let Some(default) = &def.node.default_value
                && !vars.contains_key(&def.node.name.node)
            {
                vars.insert(def.node.name.node.clone(), default.node.clone());
            }
        }
        vars
    }

    /// The operation that runs: the named one, or the only one.
    fn operation(&self) -> Option<&async_graphql::parser::types::OperationDefinition> {
        use async_graphql::parser::types::DocumentOperations;
        match &self.doc.operations {
            DocumentOperations::Single(op) => Some(&op.node),
            DocumentOperations::Multiple(ops) => match &self.name {
                Some(name) => ops
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .map(|(_, op)| &op.node),
                None if ops.len() == 1 => ops.values().next().map(|op| &op.node),
                None => None,
            },
        }
    }
}

/// Puts the answer's objects in the order the query names their keys, as
/// GraphQL asks ("ordered by the order in which they appear in the
/// query"). async-graphql resolves an object's fields concurrently and
/// keeps them in the order they finish, so a field that waits (a store
/// read, a graph computation on the blocking pool) came after those that
/// did not: `{ a: spofs b: cycles }` came back as b, a, or a, b, by chance.
///
/// Only an answer with data is walked: its document has passed
/// validation (no fragment cycles, the depth and complexity limits), and
/// the walk follows the answer, expanding a field's selections only where
/// the answer has that key, so it costs what the answer costs.
fn in_query_order(doc: Option<&QueryDoc>, data: &mut async_graphql::Value) {
    let (Some(doc), async_graphql::Value::Object(_)) = (doc, &*data) else {
        return;
    };
    let Some(op) = doc.operation() else {
        return;
    };
    let vars = doc.vars_of(op);
    let q = KeyOrder {
        doc: &doc.doc,
        vars: &vars,
    };
    order_value(&q, &[&op.selection_set.node], data);
}

/// Field types by object type and field name, from the schema's own SDL.
type FieldTypes = HashMap<String, HashMap<String, async_graphql::parser::types::Type>>;

fn field_types() -> &'static FieldTypes {
    static TYPES: std::sync::OnceLock<FieldTypes> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
        let doc = async_graphql::parser::parse_schema(schema().sdl())
            .expect("the schema's own SDL parses");
        let mut types = HashMap::new();
        for def in doc.definitions {
            if let TypeSystemDefinition::Type(t) = def
                && let TypeKind::Object(o) = t.node.kind
            {
                let fields = o
                    .fields
                    .into_iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node))
                    .collect();
                types.insert(t.node.name.node.to_string(), fields);
            }
        }
        types
    })
}

/// Where the answer's errors are: a trie of their paths.
#[derive(Default)]
struct ErrorPaths(HashMap<Seg, ErrorPaths>);

/// One step of an error's path (async-graphql's `PathSegment` is not Hash).
#[derive(PartialEq, Eq, Hash)]
enum Seg {
    Field(String),
    Index(usize),
}

impl From<&async_graphql::PathSegment> for Seg {
    fn from(s: &async_graphql::PathSegment) -> Seg {
        match s {
            async_graphql::PathSegment::Field(k) => Seg::Field(k.clone()),
            async_graphql::PathSegment::Index(i) => Seg::Index(*i),
        }
    }
}

impl ErrorPaths {
    fn get(&self, seg: Seg) -> Option<&ErrorPaths> {
        self.0.get(&seg)
    }
}

/// Nulls propagated as GraphQL asks: a field that failed is null, and a
/// null where the schema says there cannot be one makes its parent null,
/// up to the nearest field that may be null, or the whole `data`.
/// async-graphql leaves a failed field's key out of its object (and nulls
/// an object when none of its fields is left), and stops there:
/// `{"spofs": [null]}` for a `[Spof!]!`, no `impact` key for an `Impact!`,
/// which typed clients reject. Walked only for a query whose answer has
/// errors with paths; a field is taken as failed only where an error's
/// path says so.
fn propagate_nulls(doc: Option<&QueryDoc>, answer: &mut async_graphql::Response) {
    use async_graphql::parser::types::OperationType;
    use async_graphql::{PathSegment, Value};
    let mut failed = ErrorPaths::default();
    for e in &answer.errors {
        let mut node = &mut failed;
        for seg in &e.path {
            node = node.0.entry(Seg::from(seg)).or_default();
        }
    }
    let Some(doc) = doc else {
        return;
    };
    let Some(op) = doc.operation().filter(|op| op.ty == OperationType::Query) else {
        return;
    };
    // Without errors only an object all of whose fields were skipped can
    // be null where it may not (async-graphql's doing): walked only when
    // the document has a condition at all.
    if failed.0.is_empty() && !has_conditions(&doc.doc) {
        return;
    }
    // Each failed field's key, null, in its object (made an object again
    // where async-graphql nulled it for having no field left).
    for e in &answer.errors {
        let Some((last, ancestors)) = e.path.split_last() else {
            continue;
        };
        let mut cur = Some(&mut answer.data);
        for seg in ancestors {
            cur = cur.and_then(|v| {
                if matches!(v, Value::Null) && matches!(seg, PathSegment::Field(_)) {
                    *v = Value::Object(Default::default());
                }
                match (seg, v) {
                    (PathSegment::Field(k), Value::Object(map)) => {
                        map.get_mut(&async_graphql::Name::new(k))
                    }
                    (PathSegment::Index(i), Value::List(items)) => items.get_mut(*i),
                    _ => None,
                }
            });
        }
        let Some(cur) = cur else {
            continue;
        };
        if matches!(cur, Value::Null) {
            *cur = Value::Object(Default::default());
        }
        if let (PathSegment::Field(k), Value::Object(map)) = (last, cur) {
            map.entry(async_graphql::Name::new(k))
                .or_insert(Value::Null);
        }
    }
    let vars = doc.vars_of(op);
    let q = KeyOrder {
        doc: &doc.doc,
        vars: &vars,
    };
    let plan = plan_of(&q, &[&op.selection_set.node]);
    if object_violates(
        &q,
        &plan,
        "Query",
        &mut answer.data,
        field_types(),
        Some(&failed),
    ) {
        answer.data = Value::Null;
    }
}

/// Whether a document has an `@skip` or `@include` anywhere.
fn has_conditions(doc: &async_graphql::parser::types::ExecutableDocument) -> bool {
    use async_graphql::Positioned;
    use async_graphql::parser::types::{Directive, Selection, SelectionSet};
    fn conditional(directives: &[Positioned<Directive>]) -> bool {
        directives
            .iter()
            .any(|d| matches!(d.node.name.node.as_str(), "skip" | "include"))
    }
    fn in_set(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(f) => {
                conditional(&f.node.directives) || in_set(&f.node.selection_set.node)
            }
            Selection::FragmentSpread(s) => conditional(&s.node.directives),
            Selection::InlineFragment(i) => {
                conditional(&i.node.directives) || in_set(&i.node.selection_set.node)
            }
        })
    }
    doc.operations
        .iter()
        .any(|(_, op)| in_set(&op.node.selection_set.node))
        || doc
            .fragments
            .values()
            .any(|f| in_set(&f.node.selection_set.node))
}

/// Whether an object of type `ty` has a null where its type forbids one,
/// once what may be null below it has been nulled. `failed`: the errors
/// at and below this object.
fn object_violates<'a>(
    q: &KeyOrder<'a>,
    plan: &Plan<'a>,
    ty: &str,
    value: &mut async_graphql::Value,
    types: &FieldTypes,
    failed: Option<&ErrorPaths>,
) -> bool {
    let (async_graphql::Value::Object(map), Some(fields)) = (value, types.get(ty)) else {
        return false;
    };
    for (k, v) in map.iter_mut() {
        // Introspection and __typename are not in the SDL: not checked.
        let Some((e, field_ty)) = plan
            .get(k)
            .and_then(|e| fields.get(e.name.as_str()).map(|t| (e, t)))
        else {
            continue;
        };
        let below = (e.sets.iter().any(|s| !s.items.is_empty()))
            .then(|| e.below.get_or_init(|| plan_of(q, &e.sets)));
        let failed = failed.and_then(|f| f.get(Seg::Field(k.to_string())));
        if value_violates(q, below, field_ty, v, types, failed) {
            return true;
        }
    }
    false
}

/// Whether `v`, of type `ty`, is null where `ty` forbids it, once what may
/// be null within it has been nulled (a list with a null item its type
/// forbids is null, and so is an object with such a field). A null that no
/// error explains is async-graphql's for an object none of whose fields is
/// left (all skipped): an empty object, not a failure.
fn value_violates<'a>(
    q: &KeyOrder<'a>,
    below: Option<&Plan<'a>>,
    ty: &async_graphql::parser::types::Type,
    v: &mut async_graphql::Value,
    types: &FieldTypes,
    failed: Option<&ErrorPaths>,
) -> bool {
    use async_graphql::parser::types::BaseType;
    if matches!(v, async_graphql::Value::Null) {
        if ty.nullable {
            return false;
        }
        if failed.is_none()
            && let BaseType::Named(name) = &ty.base
            && types.contains_key(name.as_str())
        {
            *v = async_graphql::Value::Object(Default::default());
            return false;
        }
        return failed.is_some();
    }
    let bad = match (&ty.base, &mut *v) {
        (BaseType::List(inner), async_graphql::Value::List(items)) => {
            items.iter_mut().enumerate().any(|(i, item)| {
                let failed = failed.and_then(|f| f.get(Seg::Index(i)));
                value_violates(q, below, inner, item, types, failed)
            })
        }
        (BaseType::Named(name), async_graphql::Value::Object(_)) => {
            below.is_some_and(|plan| object_violates(q, plan, name, v, types, failed))
        }
        _ => false,
    };
    if bad {
        *v = async_graphql::Value::Null;
        !ty.nullable
    } else {
        false
    }
}

/// The document an answer is ordered by, with the request's variables.
struct KeyOrder<'a> {
    doc: &'a async_graphql::parser::types::ExecutableDocument,
    vars: &'a async_graphql::Variables,
}

impl KeyOrder<'_> {
    /// Whether a selection with these directives is in the answer:
    /// `@skip(if: true)` and `@include(if: false)` leave it out. A
    /// condition this cannot read counts as included (validation has
    /// refused a missing or mistyped one before any data was made).
    fn included(
        &self,
        directives: &[async_graphql::Positioned<async_graphql::parser::types::Directive>],
    ) -> bool {
        directives.iter().all(|d| {
            let skip_when = match d.node.name.node.as_str() {
                "skip" => true,
                "include" => false,
                _ => return true,
            };
            // A literal, or a variable's value.
            let cond = d.node.get_argument("if").and_then(|v| {
                match v
                    .node
                    .clone()
                    .into_const_with(|name| self.vars.get(&name).cloned().ok_or(()))
                {
                    Ok(async_graphql::Value::Boolean(b)) => Some(b),
                    _ => None,
                }
            });
            cond != Some(skip_when)
        })
    }
}

/// For each key a set of selection sets names: its place in the query's
/// order, the selection sets under it (fragments expanded, each once per
/// level; type conditions ignored: a key the object lacks is skipped), and
/// the plan of those, made when the answer first has an object there and
/// kept for the other items of the list.
type Plan<'a> = HashMap<&'a async_graphql::Name, PlanEntry<'a>>;

struct PlanEntry<'a> {
    at: usize,
    /// The field's name (an alias's field).
    name: &'a async_graphql::Name,
    sets: Vec<&'a async_graphql::parser::types::SelectionSet>,
    below: std::cell::OnceCell<Plan<'a>>,
}

fn plan_of<'a>(
    q: &KeyOrder<'a>,
    sets: &[&'a async_graphql::parser::types::SelectionSet],
) -> Plan<'a> {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn collect<'a>(
        q: &KeyOrder<'a>,
        set: &'a SelectionSet,
        plan: &mut Plan<'a>,
        spread: &mut std::collections::HashSet<&'a async_graphql::Name>,
    ) {
        for sel in &set.items {
            match &sel.node {
                Selection::Field(f) if !q.included(&f.node.directives) => {}
                Selection::FragmentSpread(f) if !q.included(&f.node.directives) => {}
                Selection::InlineFragment(f) if !q.included(&f.node.directives) => {}
                Selection::Field(f) => {
                    let at = plan.len();
                    plan.entry(&f.node.response_key().node)
                        .or_insert_with(|| PlanEntry {
                            at,
                            name: &f.node.name.node,
                            sets: Vec::new(),
                            below: Default::default(),
                        })
                        .sets
                        .push(&f.node.selection_set.node);
                }
                Selection::FragmentSpread(f) => {
                    // A fragment spread twice at one level names the same
                    // keys twice; validation has refused cycles.
                    let name = &f.node.fragment_name.node;
                    if spread.insert(name)
                        && let Some(def) = q.doc.fragments.get(name)
                    {
                        collect(q, &def.node.selection_set.node, plan, spread);
                    }
                }
                Selection::InlineFragment(f) => {
                    collect(q, &f.node.selection_set.node, plan, spread)
                }
            }
        }
    }
    let (mut plan, mut spread) = (HashMap::new(), Default::default());
    for set in sets {
        collect(q, set, &mut plan, &mut spread);
    }
    plan
}

fn order_value<'a>(
    q: &KeyOrder<'a>,
    sets: &[&'a async_graphql::parser::types::SelectionSet],
    value: &mut async_graphql::Value,
) {
    order_object(q, &plan_of(q, sets), value);
}

fn order_object<'a>(q: &KeyOrder<'a>, plan: &Plan<'a>, value: &mut async_graphql::Value) {
    match value {
        // A list's items (lists of lists too) under the same selections.
        async_graphql::Value::List(items) => {
            for item in items {
                order_object(q, plan, item);
            }
        }
        async_graphql::Value::Object(map) => {
            let at = |k: &async_graphql::Name| plan.get(k).map_or(usize::MAX, |e| e.at);
            // In order already (the usual case): no copy.
            let positions: Vec<usize> = map.keys().map(at).collect();
            if !positions.windows(2).all(|w| w[0] <= w[1]) {
                let mut entries: Vec<(usize, (async_graphql::Name, async_graphql::Value))> =
                    positions.into_iter().zip(std::mem::take(map)).collect();
                entries.sort_by_key(|e| e.0);
                map.extend(entries.into_iter().map(|e| e.1));
            }
            for (k, v) in map.iter_mut() {
                if !matches!(
                    v,
                    async_graphql::Value::Object(_) | async_graphql::Value::List(_)
                ) {
                    continue;
                }
                if let Some(e) = plan.get(k)
                    && e.sets.iter().any(|s| !s.items.is_empty())
                {
                    let below = e.below.get_or_init(|| plan_of(q, &e.sets));
                    order_object(q, below, v);
                }
            }
        }
        _ => {}
    }
}

/// A GraphQL-shaped error answer for a request that never reached the
/// schema.
fn graphql_error(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "errors": [{ "message": message }] })),
    )
        .into_response()
}

async fn graphiql() -> Html<String> {
    // GraphiQL 4, whose headers pane can carry `Authorization: Bearer ...`
    // for mutations (the older page could not send one).
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .title("infragraph")
            .finish(),
    )
}

/// `GET /healthz`: 200 while the store answers the store watch, 503 with
/// the reason once it does not (queries would go on from a graph that no
/// longer sees other replicas' writes, and writes would fail).
async fn healthz(State(state): State<AppState>) -> Response {
    let snap = state.app.snapshot();
    let (resources, relations) = snap.counts();
    let mut body = serde_json::json!({
        "status": "ok",
        "resources": resources,
        "relations": relations,
        "graph_built_at": to_dt(snap.built_at).to_rfc3339(),
    });
    let mut code = StatusCode::OK;
    if let Some((since, why)) = state.app.store_fault() {
        code = StatusCode::SERVICE_UNAVAILABLE;
        body["status"] = "store unreachable".into();
        body["store_error"] = why.into();
        body["store_unreachable_since"] = to_dt(since).to_rfc3339().into();
    }
    (code, axum::Json(body)).into_response()
}

/// `GET /diagrams/{network|dependencies|impact}.{svg|png|dot}`: query
/// parameters `scope`, `show_reachability`, `around`, `hops`, `group_by`,
/// `failed` (repeated or comma-separated), `max_nodes`. Errors are plain
/// text with the reason: 400 bad input, 404 unknown id or view, 503 when
/// Graphviz is missing or too slow, or when no render slot (SVG and PNG)
/// or compute slot (every format) frees within the render wait, 500 when
/// it fails.
async fn diagram_http(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
    axum::extract::Query(params): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    use crate::diagram::{DiagramError, Format, Kind, Options, RenderError};
    let text = |code: StatusCode, msg: String| {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            msg + "\n",
        )
            .into_response()
    };
    let Some((view, ext)) = file.rsplit_once('.') else {
        return text(
            StatusCode::NOT_FOUND,
            "expected /diagrams/VIEW.FORMAT, e.g. /diagrams/network.svg".into(),
        );
    };
    let kind = match view {
        "network" => Kind::Network,
        "dependencies" => Kind::Dependencies,
        "impact" => Kind::Impact,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no diagram '{view}': network, dependencies or impact"),
            );
        }
    };
    let Some(format) = Format::from_extension(ext) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no format '{ext}': svg, png or dot"),
        );
    };
    let mut opts = Options::default();
    for (k, v) in params {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{k} must be a non-negative integer, not '{v}'"))
        };
        let res: Result<(), String> = match k.as_str() {
            "scope" => {
                opts.scope = Some(v);
                Ok(())
            }
            "around" => {
                opts.around = Some(v);
                Ok(())
            }
            "group_by" | "groupBy" => {
                opts.group_by = Some(v);
                Ok(())
            }
            "show_reachability" | "showReachability" => {
                opts.show_reachability = matches!(v.as_str(), "" | "1" | "true" | "yes");
                Ok(())
            }
            "hops" => num(&v).map(|h| opts.hops = Some(h)),
            "max_nodes" | "maxNodes" => num(&v).map(|h| opts.max_nodes = h as usize),
            "failed" => {
                opts.failed.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
                Ok(())
            }
            _ => Err(format!("unknown parameter '{k}'")),
        };
        if let Err(e) = res {
            return text(StatusCode::BAD_REQUEST, e);
        }
    }
    if let Err(e) = crate::diagram::server_max_nodes(opts.max_nodes.max(opts.failed.len())) {
        return text(StatusCode::BAD_REQUEST, e.to_string());
    }
    if let Err(e) = crate::diagram::check_options(kind, &opts) {
        return text(StatusCode::BAD_REQUEST, e.to_string());
    }
    // The build is a graph computation like a query's, in any format: it
    // takes a compute slot, on the same terms, and gives it back before
    // the render.
    let compute_slot = match tokio::time::timeout(
        state.app.render_wait(),
        state.app.compute_slots().clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: the server's graph computations are all taken; try again shortly".into(),
            );
        }
    };
    let snap = state.app.snapshot();
    let built = tokio::task::spawn_blocking(move || {
        // Held by the work itself, not by the request that may go away.
        let _slot = compute_slot;
        crate::diagram::build(&snap, kind, &opts).map(|d| d.dot())
    })
    .await;
    let result = match built {
        Ok(Ok(dot)) => {
            // Two `dot` processes at a time; a request that waits longer
            // than the render wait for its turn is told to come back. DOT
            // text needs none.
            let permit = if format == Format::Dot {
                None
            } else {
                let slots = state.app.render_slots().clone();
                match tokio::time::timeout(state.app.render_wait(), slots.acquire_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "busy: other diagrams are being rendered; try again shortly".into(),
                        );
                    }
                }
            };
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                crate::diagram::render(&dot, format).map_err(DiagramOrRender::Render)
            })
            .await
        }
        Ok(Err(e)) => Ok(Err(DiagramOrRender::Diagram(e))),
        Err(e) => Err(e),
    };
    match result {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, format.content_type()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(DiagramOrRender::Diagram(
            e @ (DiagramError::Unknown(_) | DiagramError::Gone { .. }),
        ))) => text(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(DiagramOrRender::Diagram(e))) => text(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(DiagramOrRender::Render(
            e @ (RenderError::DotMissing(_) | RenderError::Timeout(_)),
        ))) => text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Err(DiagramOrRender::Render(e))) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("diagram task failed: {e}"),
        ),
    }
}

enum DiagramOrRender {
    Diagram(crate::diagram::DiagramError),
    Render(crate::diagram::RenderError),
}

impl From<crate::diagram::DiagramError> for DiagramOrRender {
    fn from(e: crate::diagram::DiagramError) -> Self {
        DiagramOrRender::Diagram(e)
    }
}

/// Which diagram `Query.diagram` draws.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum DiagramKind {
    /// Region → VPC → zone → subnet → hosts, gateways, load balancers.
    Network,
    /// Services (instances folded in), datastores, load balancers, external endpoints.
    Dependencies,
    /// The blast radius of `failed`, with a legend.
    Impact,
}

fn to_dt(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn snap<'a>(ctx: &'a Context<'_>) -> &'a Arc<Snapshot> {
    ctx.data_unchecked::<Arc<Snapshot>>()
}

/// Runs a graph computation on the blocking pool, in one of the server's
/// compute slots ([`App::compute_slots`]). An impact, a scan of a million
/// resources or a path search takes milliseconds to a second of CPU; on an
/// async worker it would hold up other requests, `/healthz` among them,
/// and the query timeout could not answer until it ended. The slot is
/// waited for within the request's deadline and held by the computation
/// itself, so work a timed-out request leaves behind still counts, and
/// abandoned requests cannot pile up computations without bound.
async fn compute<T: Send + 'static>(
    ctx: &Context<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> async_graphql::Result<T> {
    check_deadline(ctx)?;
    let closed =
        |e: tokio::sync::AcquireError| internal(anyhow::anyhow!("compute slots closed: {e}"));
    let own = match ctx.data_opt::<RequestSlots>() {
        Some(slots) => Some(slots.0.clone().acquire_owned().await.map_err(closed)?),
        None => None,
    };
    let slot = match ctx.data_opt::<Arc<App>>() {
        Some(app) => Some(
            app.compute_slots()
                .clone()
                .acquire_owned()
                .await
                .map_err(closed)?,
        ),
        None => None,
    };
    check_deadline(ctx)?;
    tokio::task::spawn_blocking(move || {
        let _slots = (own, slot);
        f()
    })
    .await
    .map_err(|e| internal(anyhow::anyhow!("query task failed: {e}")))
}

/// A client error with a code in `extensions.code`.
fn client_error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

/// An internal error: logged in full once, shown to the client only as a reference.
fn internal(err: anyhow::Error) -> async_graphql::Error {
    tracing::error!(error = crate::store::error_text(&err), "request failed");
    client_error("INTERNAL", "internal error; the server log has the details")
}

/// Resolves the ids of a failed set: every unknown id is named, and a GONE
/// resource is refused (failing something that is already gone answers nothing).
fn resolve_failed(snap: &Snapshot, ids: &[async_graphql::ID]) -> async_graphql::Result<Vec<Ix>> {
    let unknown = snap.unknown(ids.iter().map(|id| id.as_str()));
    if !unknown.is_empty() {
        return Err(client_error(
            "UNKNOWN_RESOURCE",
            crate::graph::unknown_ids(&unknown),
        ));
    }
    let ixs: Vec<Ix> = ids.iter().filter_map(|id| snap.lookup(id)).collect();
    for &ix in &ixs {
        refuse_gone(snap, ix, "its failure impacts nothing in the current graph")?;
    }
    Ok(ixs)
}

/// An error for a GONE resource, saying since when and what that means for
/// the question (`consequence`); Ok for a present one.
fn refuse_gone(snap: &Snapshot, ix: Ix, consequence: &str) -> async_graphql::Result<()> {
    let r = snap.resource(ix);
    if r.status == model::Status::Present {
        return Ok(());
    }
    Err(client_error(
        "GONE_RESOURCE",
        format!(
            "resource '{}' is GONE since {} (no source reports it); {consequence}",
            r.id,
            r.gone_at.map(|t| to_dt(t).to_rfc3339()).unwrap_or_default()
        ),
    ))
}

fn resolve(snap: &Snapshot, id: &str) -> async_graphql::Result<Ix> {
    snap.lookup(id)
        .ok_or_else(|| client_error("UNKNOWN_RESOURCE", format!("unknown resource id '{id}'")))
}

/// Present or gone.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ResourceStatus {
    /// Reported by at least one source.
    Present,
    /// No longer reported by any source; kept with its history.
    Gone,
}

impl From<model::Status> for ResourceStatus {
    fn from(s: model::Status) -> Self {
        match s {
            model::Status::Present => ResourceStatus::Present,
            model::Status::Gone => ResourceStatus::Gone,
        }
    }
}

/// Which relations of a resource to list.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Direction {
    /// Relations where the resource is `from`.
    Outgoing,
    /// Relations where the resource is `to`.
    Incoming,
    /// Both.
    Both,
}

/// Whether an impacted resource is down or degraded.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ImpactStatus {
    /// Failed, or forced down by the failure rules.
    Down,
    /// Reached by the failure but still up.
    Degraded,
}

/// A string label.
#[derive(SimpleObject)]
pub struct Label {
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// A label to set on a resource.
#[derive(InputObject)]
pub struct LabelInput {
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// Which source reported something, and when.
#[derive(SimpleObject)]
pub struct Provenance {
    /// `collector:scope`, e.g. `inventory:examples/demo.yaml`, or `manual`.
    pub source: String,
    /// Whether this source still reports it.
    pub status: ResourceStatus,
    /// When this source started reporting it: its first report, or the
    /// first after it stopped (the resource's own `firstSeen` keeps the
    /// very first; the history has each gap).
    pub first_seen: DateTime<Utc>,
    /// Latest report by this source.
    pub last_seen: DateTime<Utc>,
    /// When this source stopped reporting it.
    pub gone_at: Option<DateTime<Utc>>,
}

fn provenance(p: &[model::Provenance]) -> Vec<Provenance> {
    p.iter()
        .map(|p| Provenance {
            source: p.source.clone(),
            status: p.status.into(),
            first_seen: to_dt(p.first_seen),
            last_seen: to_dt(p.last_seen),
            gone_at: p.gone_at.map(to_dt),
        })
        .collect()
}

/// A resource: a host, service, database, load balancer, network, ...
pub struct Resource {
    snap: Arc<Snapshot>,
    ix: Ix,
}

impl Resource {
    fn r(&self) -> &model::Resource {
        self.snap.resource(self.ix)
    }
}

#[Object]
impl Resource {
    /// Globally unique, stable id.
    async fn id(&self) -> async_graphql::ID {
        async_graphql::ID(self.r().id.clone())
    }
    /// Kind: host, service, database, load_balancer, vpc, subnet, ...
    async fn kind(&self) -> &str {
        &self.r().kind
    }
    /// Display name (the id when no source names it).
    async fn name(&self) -> &str {
        &self.r().name
    }
    /// Labels, sorted by key.
    async fn labels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Label>> {
        let labels = &self.r().labels;
        list(ctx, labels.len())?;
        Ok(labels
            .iter()
            .map(|(k, v)| Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect())
    }
    /// Free-form attributes merged over all sources.
    async fn attributes(&self) -> Option<Json<serde_json::Value>> {
        let a = &self.r().attributes;
        (!a.is_null()).then(|| Json(a.clone()))
    }
    /// PRESENT while any source reports it, GONE after.
    async fn status(&self) -> ResourceStatus {
        self.r().status.into()
    }
    /// First report by any source.
    async fn first_seen(&self) -> DateTime<Utc> {
        to_dt(self.r().first_seen)
    }
    /// Latest report by any source.
    async fn last_seen(&self) -> DateTime<Utc> {
        to_dt(self.r().last_seen)
    }
    /// When it was retired, if it is gone.
    async fn gone_at(&self) -> Option<DateTime<Utc>> {
        self.r().gone_at.map(to_dt)
    }
    /// Every source that reported it.
    async fn sources(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Provenance>> {
        listed(ctx, provenance(&self.r().sources))
    }
    /// For what host agents report (hosts, their services, the endpoints
    /// they talk to): FRESH while any agent reporting it reported within
    /// `agent_stale_after`, STALE when all of them have been silent longer,
    /// GONE when they retired it. Null when no agent reports it.
    async fn agent_freshness(&self, ctx: &Context<'_>) -> Option<AgentFreshness> {
        let app = ctx.data_unchecked::<Arc<App>>();
        crate::agent::freshness(self.r(), &app.agents, now_ms()).map(AgentFreshness::from)
    }
    /// Its present relations; both directions by default, optionally one kind.
    #[graphql(complexity = "10 * child_complexity")]
    async fn relations(
        &self,
        ctx: &Context<'_>,
        direction: Option<Direction>,
        kind: Option<String>,
    ) -> async_graphql::Result<Vec<Relation>> {
        let (out, inc) = match direction.unwrap_or(Direction::Both) {
            Direction::Outgoing => (true, false),
            Direction::Incoming => (false, true),
            Direction::Both => (true, true),
        };
        let all = self.snap.relations_of(self.ix, out, inc);
        // Every relation read counts, matching or not: aliases of a kind
        // that matches none would otherwise scan a hub for free.
        list(ctx, all.len())?;
        let found: Vec<Relation> = all
            .into_iter()
            .filter(|&r| {
                kind.as_ref()
                    .is_none_or(|k| &self.snap.relation(r).kind == k)
            })
            .map(|ix| Relation {
                snap: self.snap.clone(),
                ix,
            })
            .collect();
        Ok(found)
    }
    /// Its change log (and that of its relations), newest first. Batched:
    /// the history of a page of resources costs one query.
    async fn history(
        &self,
        ctx: &Context<'_>,
        since: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Vec<Change>> {
        let loader = ctx.data_unchecked::<DataLoader<HistoryLoader>>();
        let changes = loader
            .load_one(HistoryKey(
                self.r().id.clone(),
                since.map(|d| d.timestamp_millis()),
            ))
            .await
            .map_err(|e| internal(anyhow::anyhow!("{e}")))?
            .unwrap_or_default();
        list(ctx, changes.len())?;
        Ok(changes.into_iter().map(Change::from).collect())
    }
}

/// A relation `from -[kind]-> to`.
pub struct Relation {
    snap: Arc<Snapshot>,
    ix: RelIx,
}

impl Relation {
    fn r(&self) -> &model::Relation {
        self.snap.relation(self.ix)
    }
    fn end(&self, id: &str) -> Resource {
        Resource {
            snap: self.snap.clone(),
            ix: self
                .snap
                .lookup(id)
                .expect("relation endpoints are resources"),
        }
    }
}

#[Object]
impl Relation {
    /// depends_on, runs_on, contained_in, attached_to, instance_of, routes_to, or any other kind.
    async fn kind(&self) -> &str {
        &self.r().kind
    }
    /// Where the relation starts.
    async fn from(&self) -> Resource {
        self.end(&self.r().from)
    }
    /// Where it points.
    async fn to(&self) -> Resource {
        self.end(&self.r().to)
    }
    /// Free-form attributes (ports, evidence).
    async fn attributes(&self) -> Option<Json<serde_json::Value>> {
        let a = &self.r().attributes;
        (!a.is_null()).then(|| Json(a.clone()))
    }
    /// PRESENT while any source reports it.
    async fn status(&self) -> ResourceStatus {
        self.r().status.into()
    }
    /// Every source that reported it.
    async fn sources(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Provenance>> {
        listed(ctx, provenance(&self.r().sources))
    }
    /// How we know: DECLARED (an inventory, a cloud API, a manual edit)
    /// and/or OBSERVED (host agents saw the traffic), from the sources that
    /// still report it.
    async fn evidence(&self) -> Vec<Evidence> {
        evidence_of(self.r())
    }
    /// First report by any source.
    async fn first_seen(&self) -> DateTime<Utc> {
        to_dt(self.r().first_seen)
    }
    /// Latest report by any source.
    async fn last_seen(&self) -> DateTime<Utc> {
        to_dt(self.r().last_seen)
    }
}

/// How a relation is known.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Evidence {
    /// Reported by an inventory, a cloud API or a manual edit.
    Declared,
    /// Seen by host agents (`agent:HOST` sources).
    Observed,
}

fn evidence_of(r: &model::Relation) -> Vec<Evidence> {
    let present = r
        .sources
        .iter()
        .filter(|s| s.status == model::Status::Present);
    let (mut declared, mut observed) = (false, false);
    for s in present {
        if s.source.starts_with("agent:") {
            observed = true;
        } else {
            declared = true;
        }
    }
    let mut out = Vec::new();
    if declared {
        out.push(Evidence::Declared);
    }
    if observed {
        out.push(Evidence::Observed);
    }
    out
}

/// How recently a host's agent reported.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum AgentFreshness {
    /// Within `agent_stale_after`.
    Fresh,
    /// Silent for longer than `agent_stale_after`.
    Stale,
    /// Silent for longer than `agent_gone_after`: what it reported is retired.
    Gone,
}

/// A host with an agent.
pub struct AgentHost {
    snap: Arc<Snapshot>,
    host: crate::agent::AgentHost,
}

#[Object]
impl AgentHost {
    /// Host name the agent reports as.
    async fn hostname(&self) -> &str {
        &self.host.hostname
    }
    /// The host resource (`host:NAME`, or the EC2 instance ARN).
    async fn resource(&self) -> Resource {
        Resource {
            snap: self.snap.clone(),
            ix: self.host.resource,
        }
    }
    /// When its agent last reported.
    async fn last_report(&self) -> DateTime<Utc> {
        to_dt(self.host.last_report)
    }
    /// FRESH, STALE or GONE.
    async fn freshness(&self) -> AgentFreshness {
        self.host.freshness.into()
    }
}

impl From<crate::agent::Freshness> for AgentFreshness {
    fn from(f: crate::agent::Freshness) -> Self {
        match f {
            crate::agent::Freshness::Fresh => AgentFreshness::Fresh,
            crate::agent::Freshness::Stale => AgentFreshness::Stale,
            crate::agent::Freshness::Gone => AgentFreshness::Gone,
        }
    }
}

/// Declared and observed dependencies that disagree.
#[derive(SimpleObject)]
pub struct Drift {
    /// Declared `depends_on` relations whose client an agent watches (it,
    /// or one of its instances, runs on a host an agent reports, whoever
    /// declared that), but which no agent has observed — between the
    /// resources or their services.
    pub declared_not_observed: Vec<Relation>,
    /// `depends_on` relations agents observed that nothing declares, between
    /// the resources or their services.
    pub observed_not_declared: Vec<Relation>,
}

/// Relay page info.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// More results after this page.
    pub has_next_page: bool,
    /// Results before this page.
    pub has_previous_page: bool,
    /// Cursor of the first edge.
    pub start_cursor: Option<String>,
    /// Cursor of the last edge; pass it as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// One resource in a page.
#[derive(SimpleObject)]
pub struct ResourceEdge {
    /// Opaque cursor.
    pub cursor: String,
    /// The resource.
    pub node: Resource,
}

/// A page of resources.
#[derive(SimpleObject)]
pub struct ResourceConnection {
    /// How many resources match, over all pages.
    pub total_count: i64,
    /// This page.
    pub edges: Vec<ResourceEdge>,
    /// Paging state.
    pub page_info: PageInfo,
}

/// One resource reached by a failure.
pub struct ImpactedResource {
    snap: Arc<Snapshot>,
    result: Arc<ImpactResult>,
    item: Impacted,
}

#[Object]
impl ImpactedResource {
    /// The resource's id (the same as `resource { id }`, cheaper for long lists).
    async fn id(&self) -> async_graphql::ID {
        async_graphql::ID(self.snap.resource(self.item.node).id.clone())
    }
    /// The resource's kind.
    async fn kind(&self) -> &str {
        &self.snap.resource(self.item.node).kind
    }
    /// The resource's name.
    async fn name(&self) -> &str {
        &self.snap.resource(self.item.node).name
    }
    /// The resource.
    async fn resource(&self) -> Resource {
        Resource {
            snap: self.snap.clone(),
            ix: self.item.node,
        }
    }
    /// DOWN or DEGRADED.
    async fn status(&self) -> ImpactStatus {
        match self.item.status {
            GStatus::Down => ImpactStatus::Down,
            GStatus::Degraded => ImpactStatus::Degraded,
        }
    }
    /// Relations between a failed resource and this one (0 for a failed one).
    async fn depth(&self) -> i32 {
        self.item.depth as i32
    }
    /// The explaining path: relations from a failed resource to this one,
    /// each with its kind and sources.
    async fn path(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Relation>> {
        check_deadline(ctx)?;
        let path = self.result.path(&self.snap, &self.item);
        list(ctx, path.len())?;
        Ok(path
            .into_iter()
            .map(|ix| Relation {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
    /// For services with instances and load balancers with targets: how
    /// many are still up.
    async fn remaining(&self) -> Option<i32> {
        self.item.aggregate.map(|(left, _)| left as i32)
    }
    /// For services with instances and load balancers with targets: how many there are.
    async fn total(&self) -> Option<i32> {
        self.item.aggregate.map(|(_, total)| total as i32)
    }
    /// `remaining/total`, e.g. `2/3`.
    async fn redundancy(&self) -> Option<String> {
        self.item
            .aggregate
            .map(|(left, total)| format!("{left}/{total}"))
    }
}

/// A field of `ImpactedResource` that the fast list path can fill.
enum FlatField {
    /// `resource { ... }` with only `id`, `kind`, `name`, `status`,
    /// `__typename` selected.
    Resource(Vec<(async_graphql::Name, ResourceField)>),
    Id,
    Kind,
    Name,
    Status,
    Depth,
    Remaining,
    Total,
    Redundancy,
    Typename,
}

/// A scalar field of `Resource` the fast path fills.
#[derive(Clone, Copy)]
enum ResourceField {
    Id,
    Kind,
    Name,
    Status,
    Typename,
}

/// The fast path's reading of a selection: `None` when it needs the
/// generic resolver (directives, arguments, other fields, or a key named
/// twice, `resource { id } resource { kind }`, whose selections GraphQL
/// merges: the fast path kept only the last).
fn simple_selection<T>(
    field: &async_graphql::SelectionField<'_>,
    mut pick: impl FnMut(&async_graphql::SelectionField<'_>) -> Option<T>,
) -> Option<Vec<(async_graphql::Name, T)>> {
    let mut out: Vec<(async_graphql::Name, T)> = Vec::new();
    for f in field.selection_set() {
        if !f.directives().is_ok_and(|d| d.is_empty()) || !f.arguments().is_ok_and(|a| a.is_empty())
        {
            return None;
        }
        let key = async_graphql::Name::new(f.alias().unwrap_or(f.name()));
        if out.iter().any(|(k, _)| *k == key) {
            return None;
        }
        out.push((key, pick(&f)?));
    }
    Some(out)
}

/// `[ImpactedResource!]` with a fast path. async-graphql resolves a list
/// element by element through boxed futures, ≈ 2 µs per object: 90 ms for a
/// hub's 45k resources. When the selection is only scalar fields (`id`,
/// `kind`, `name`, `status`, `depth`, `remaining`, `total`, `redundancy`,
/// `__typename`, aliases and fragments allowed, no directives), the list is
/// built directly as values; anything else (`resource { ... }`, `path`)
/// takes the generic path. The schema type is exactly `[ImpactedResource!]`.
pub struct ImpactList {
    items: Vec<ImpactedResource>,
    flat: Option<Vec<(async_graphql::Name, FlatField)>>,
}

impl ImpactList {
    fn new(ctx: &Context<'_>, items: Vec<ImpactedResource>) -> Self {
        let flat = simple_selection(&ctx.field(), |f| {
            let scalar = f.selection_set().next().is_none();
            Some(match f.name() {
                "resource" if !scalar => FlatField::Resource(simple_selection(f, |g| {
                    if g.selection_set().next().is_some() {
                        return None;
                    }
                    Some(match g.name() {
                        "id" => ResourceField::Id,
                        "kind" => ResourceField::Kind,
                        "name" => ResourceField::Name,
                        "status" => ResourceField::Status,
                        "__typename" => ResourceField::Typename,
                        _ => return None,
                    })
                })?),
                _ if !scalar => return None,
                "id" => FlatField::Id,
                "kind" => FlatField::Kind,
                "name" => FlatField::Name,
                "status" => FlatField::Status,
                "depth" => FlatField::Depth,
                "remaining" => FlatField::Remaining,
                "total" => FlatField::Total,
                "redundancy" => FlatField::Redundancy,
                "__typename" => FlatField::Typename,
                _ => return None,
            })
        });
        ImpactList { items, flat }
    }

    fn flat_value(
        item: &ImpactedResource,
        fields: &[(async_graphql::Name, FlatField)],
        down: &async_graphql::Value,
        degraded: &async_graphql::Value,
        typename: &async_graphql::Value,
    ) -> async_graphql::Value {
        use async_graphql::Value as V;
        let r = item.snap.resource(item.item.node);
        let mut m = async_graphql::indexmap::IndexMap::with_capacity(fields.len());
        for (key, field) in fields {
            let v = match field {
                FlatField::Id => V::String(r.id.clone()),
                FlatField::Kind => V::String(r.kind.clone()),
                FlatField::Name => V::String(r.name.clone()),
                FlatField::Status => match item.item.status {
                    GStatus::Down => down.clone(),
                    GStatus::Degraded => degraded.clone(),
                },
                FlatField::Depth => V::Number((item.item.depth as i32).into()),
                FlatField::Remaining => item
                    .item
                    .aggregate
                    .map_or(V::Null, |(left, _)| V::Number((left as i32).into())),
                FlatField::Total => item
                    .item
                    .aggregate
                    .map_or(V::Null, |(_, total)| V::Number((total as i32).into())),
                FlatField::Redundancy => item.item.aggregate.map_or(V::Null, |(left, total)| {
                    V::String(format!("{left}/{total}"))
                }),
                FlatField::Typename => typename.clone(),
                FlatField::Resource(sub) => {
                    let mut o = async_graphql::indexmap::IndexMap::with_capacity(sub.len());
                    for (k, f) in sub {
                        let v = match f {
                            ResourceField::Id => V::String(r.id.clone()),
                            ResourceField::Kind => V::String(r.kind.clone()),
                            ResourceField::Name => V::String(r.name.clone()),
                            ResourceField::Status => {
                                V::Enum(async_graphql::Name::new(match r.status {
                                    model::Status::Present => "PRESENT",
                                    model::Status::Gone => "GONE",
                                }))
                            }
                            ResourceField::Typename => V::String("Resource".into()),
                        };
                        o.insert(k.clone(), v);
                    }
                    V::Object(o)
                }
            };
            m.insert(key.clone(), v);
        }
        V::Object(m)
    }
}

impl async_graphql::OutputType for ImpactList {
    fn type_name() -> std::borrow::Cow<'static, str> {
        <Vec<ImpactedResource> as async_graphql::OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<ImpactedResource> as async_graphql::OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        <Vec<ImpactedResource> as async_graphql::OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &async_graphql::ContextSelectionSet<'_>,
        field: &async_graphql::Positioned<async_graphql::parser::types::Field>,
    ) -> async_graphql::ServerResult<async_graphql::Value> {
        match &self.flat {
            Some(fields) => {
                let down = async_graphql::Value::Enum(async_graphql::Name::new("DOWN"));
                let degraded = async_graphql::Value::Enum(async_graphql::Name::new("DEGRADED"));
                let typename = async_graphql::Value::String("ImpactedResource".into());
                Ok(async_graphql::Value::List(
                    self.items
                        .iter()
                        .map(|i| Self::flat_value(i, fields, &down, &degraded, &typename))
                        .collect(),
                ))
            }
            None => {
                async_graphql::resolver_utils::resolve_list(
                    ctx,
                    field,
                    self.items.iter(),
                    Some(self.items.len()),
                )
                .await
            }
        }
    }
}

/// `Impact.table`: a `JSON` value built directly as response values
/// (going through `serde_json::Value` first cost as much again).
pub struct ImpactTable {
    snap: Arc<Snapshot>,
    result: Arc<ImpactResult>,
}

impl async_graphql::OutputType for ImpactTable {
    fn type_name() -> std::borrow::Cow<'static, str> {
        <Json<serde_json::Value> as async_graphql::OutputType>::type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        <Json<serde_json::Value> as async_graphql::OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        _ctx: &async_graphql::ContextSelectionSet<'_>,
        _field: &async_graphql::Positioned<async_graphql::parser::types::Field>,
    ) -> async_graphql::ServerResult<async_graphql::Value> {
        use async_graphql::{Name, Value as V};
        let keys = ["id", "kind", "status", "depth", "remaining", "total"].map(Name::new);
        let (down, degraded) = (V::String("DOWN".into()), V::String("DEGRADED".into()));
        let row = |i: &Impacted, status: &V| {
            let r = self.snap.resource(i.node);
            let mut m = async_graphql::indexmap::IndexMap::with_capacity(6);
            m.insert(keys[0].clone(), V::String(r.id.clone()));
            m.insert(keys[1].clone(), V::String(r.kind.clone()));
            m.insert(keys[2].clone(), status.clone());
            m.insert(keys[3].clone(), V::Number(i.depth.into()));
            if let Some((left, total)) = i.aggregate {
                m.insert(keys[4].clone(), V::Number(left.into()));
                m.insert(keys[5].clone(), V::Number(total.into()));
            }
            V::Object(m)
        };
        Ok(V::List(
            self.result
                .down
                .iter()
                .map(|i| row(i, &down))
                .chain(self.result.degraded.iter().map(|i| row(i, &degraded)))
                .collect(),
        ))
    }
}

/// How many resources of one kind a failure takes down or degrades.
#[derive(SimpleObject)]
pub struct KindCount {
    /// Resource kind.
    pub kind: String,
    /// How many of that kind are down.
    pub down: i32,
    /// How many of that kind are degraded.
    pub degraded: i32,
}

/// What a failure takes down and degrades.
pub struct Impact {
    snap: Arc<Snapshot>,
    result: Arc<ImpactResult>,
    failed: Vec<Ix>,
    /// `countsByKind`, computed with the impact (a walk over the answer,
    /// which aliases would otherwise repeat on the async worker).
    by_kind: Vec<(String, usize, usize)>,
}

impl Impact {
    fn page(
        &self,
        items: &[Impacted],
        first: Option<i32>,
        offset: Option<i32>,
    ) -> async_graphql::Result<Vec<ImpactedResource>> {
        let first = count_arg("first", first)?;
        let offset = count_arg("offset", offset)?;
        let start = (offset.unwrap_or(0) as usize).min(items.len());
        let end = match first {
            Some(f) => (start + f as usize).min(items.len()),
            None => items.len(),
        };
        Ok(items[start..end]
            .iter()
            .map(|i| ImpactedResource {
                snap: self.snap.clone(),
                result: self.result.clone(),
                item: *i,
            })
            .collect())
    }
}

#[Object]
impl Impact {
    /// The resources that failed: the ids given plus those the `where` selector chose.
    async fn failed(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Resource>> {
        list(ctx, self.failed.len())?;
        Ok(self
            .failed
            .iter()
            .map(|&ix| Resource {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
    /// The failed resources and everything the rules force down, by depth
    /// then id. Page with `first` and `offset`.
    async fn down(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> async_graphql::Result<ImpactList> {
        let page = self.page(&self.result.down, first, offset)?;
        list(ctx, page.len())?;
        Ok(ImpactList::new(ctx, page))
    }
    /// Reached by the failure but still up, by depth then id. Page with
    /// `first` and `offset`.
    async fn degraded(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> async_graphql::Result<ImpactList> {
        let page = self.page(&self.result.degraded, first, offset)?;
        list(ctx, page.len())?;
        Ok(ImpactList::new(ctx, page))
    }
    /// How many resources are down.
    async fn down_count(&self) -> i32 {
        self.result.down.len() as i32
    }
    /// How many resources are degraded.
    async fn degraded_count(&self) -> i32 {
        self.result.degraded.len() as i32
    }
    /// The whole answer as one JSON array, for clients that want every
    /// impacted resource of a large failure fast: `[{"id", "kind", "status",
    /// "depth", "remaining", "total"}]`, down first. No paths (ask `down` /
    /// `degraded` for those).
    async fn table(&self, ctx: &Context<'_>) -> async_graphql::Result<ImpactTable> {
        list(ctx, self.result.down.len() + self.result.degraded.len())?;
        Ok(ImpactTable {
            snap: self.snap.clone(),
            result: self.result.clone(),
        })
    }
    /// Down and degraded counts per resource kind.
    async fn counts_by_kind(&self) -> Vec<KindCount> {
        self.by_kind
            .iter()
            .map(|(kind, down, degraded)| KindCount {
                kind: kind.clone(),
                down: *down as i32,
                degraded: *degraded as i32,
            })
            .collect()
    }
}

/// Selects resources: conditions are ANDed.
#[derive(InputObject, Default)]
pub struct SelectorInput {
    /// Resource kind.
    pub kind: Option<String>,
    /// Label selectors: `team=payments`, `tier!=3`, `env`.
    pub labels: Option<Vec<String>>,
    /// Everything inside this container (zone, subnet, rack, ...), transitively via contained_in.
    pub contained_in: Option<async_graphql::ID>,
}

impl SelectorInput {
    fn parse(&self) -> async_graphql::Result<Selector> {
        Ok(Selector {
            kind: match self.kind.as_deref().map(str::trim) {
                Some("") => {
                    return Err(client_error(
                        "BAD_SELECTOR",
                        "kind needs a value (leave it out to match every kind)",
                    ));
                }
                kind => kind.map(str::to_string),
            },
            labels: self
                .labels
                .iter()
                .flatten()
                .map(|s| LabelSelector::parse(s).map_err(|e| client_error("BAD_SELECTOR", e)))
                .collect::<Result<_, _>>()?,
            contained_in: self.contained_in.as_ref().map(|c| c.trim().to_string()),
        })
    }
}

/// `spofs` and `spofCount`: the whole answer, most critical taken down
/// first.
async fn spofs_of(
    ctx: &Context<'_>,
    snap: &Arc<Snapshot>,
    scope: Option<SelectorInput>,
    critical: Option<Vec<String>>,
) -> async_graphql::Result<Vec<crate::graph::Spof>> {
    let scope = scope.map(|s| s.parse()).transpose()?;
    if critical.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(client_error(
            "BAD_SELECTOR",
            "critical must name at least one label selector (default: tier=1)",
        ));
    }
    let critical = critical
        .unwrap_or_else(|| vec!["tier=1".into()])
        .iter()
        .map(|s| LabelSelector::parse(s).map_err(|e| client_error("BAD_SELECTOR", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let snap = snap.clone();
    compute(ctx, move || snap.spofs(scope.as_ref(), &critical))
        .await?
        .map_err(|e| match e {
            crate::graph::SpofError::UnknownResource(m) => client_error("UNKNOWN_RESOURCE", m),
            crate::graph::SpofError::NoMatch(m) => client_error("BAD_SELECTOR", m),
        })
}

/// A single point of failure.
pub struct Spof {
    snap: Arc<Snapshot>,
    spof: crate::graph::Spof,
}

#[Object]
impl Spof {
    /// The resource whose failure alone takes critical resources down.
    async fn resource(&self) -> Resource {
        Resource {
            snap: self.snap.clone(),
            ix: self.spof.node,
        }
    }
    /// The critical resources it takes down (not itself), by id.
    async fn takes_down(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Resource>> {
        let n = count_arg("first", first)?.map_or(usize::MAX, |f| f as usize);
        list(ctx, n.min(self.spof.critical_down.len()))?;
        Ok(self
            .spof
            .critical_down
            .iter()
            .take(n)
            .map(|&ix| Resource {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
    /// How many critical resources it takes down.
    async fn takes_down_count(&self) -> i32 {
        self.spof.critical_down.len() as i32
    }
    /// How many resources in all its failure takes down, itself included.
    async fn down_count(&self) -> i32 {
        self.spof.down_count as i32
    }
}

/// A dependency cycle: resources that need each other in a loop.
pub struct Cycle {
    snap: Arc<Snapshot>,
    members: Vec<Ix>,
    cycle: Vec<RelIx>,
}

#[Object]
impl Cycle {
    /// Every resource in the strongly connected group, by id.
    async fn resources(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Resource>> {
        list(ctx, self.members.len())?;
        Ok(self
            .members
            .iter()
            .map(|&ix| Resource {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
    /// One loop through the group's first resource, in "needs" order
    /// (each relation as stored: an instance's `instance_of` points at the
    /// service that needs it).
    async fn relations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Relation>> {
        list(ctx, self.cycle.len())?;
        Ok(self
            .cycle
            .iter()
            .map(|&ix| Relation {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
}

/// Something a resource needs, transitively: a root-cause candidate.
pub struct Dependency {
    snap: Arc<Snapshot>,
    dep: crate::graph::Dependency,
    changes: Option<Vec<model::Change>>,
}

#[Object]
impl Dependency {
    /// The resource needed.
    async fn resource(&self) -> Resource {
        Resource {
            snap: self.snap.clone(),
            ix: self.dep.node,
        }
    }
    /// Relations between the two.
    async fn depth(&self) -> i32 {
        self.dep.depth as i32
    }
    /// Relations from the asking resource to this one.
    async fn path(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Relation>> {
        list(ctx, self.dep.path.len())?;
        Ok(self
            .dep
            .path
            .iter()
            .map(|&ix| Relation {
                snap: self.snap.clone(),
                ix,
            })
            .collect())
    }
    /// With `changedSince`: its changes in the window, newest first; otherwise null.
    async fn changes(&self) -> Option<Vec<Change>> {
        self.changes
            .as_ref()
            .map(|c| c.iter().cloned().map(Change::from).collect())
    }
    /// With `changedSince`: when it last changed.
    async fn last_changed_at(&self) -> Option<DateTime<Utc>> {
        self.changes
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| to_dt(c.at))
    }
}

/// Outcome of a run.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum RunStatus {
    /// Every scope complete.
    Ok,
    /// Some scope incomplete: nothing retired there.
    Partial,
    /// Nothing written.
    Failed,
}

/// What one source reports now.
#[derive(SimpleObject)]
pub struct SourceSummary {
    /// The source, e.g. `inventory:examples/demo.yaml`.
    pub source: String,
    /// Resources it reports now.
    pub resources: i64,
    /// Relations it reports now.
    pub relations: i64,
    /// Its latest report of any of them.
    pub last_seen: DateTime<Utc>,
}

/// A recorded collection run.
#[derive(SimpleObject)]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// Collector type.
    pub collector: String,
    /// What it covered.
    pub scope: String,
    /// OK, PARTIAL or FAILED.
    pub status: RunStatus,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Resources reported.
    pub resources_seen: i64,
    /// Relations reported.
    pub relations_seen: i64,
    /// Resources and relations created or revived.
    pub created: i64,
    /// Resources and relations changed.
    pub updated: i64,
    /// Resources and relations retired.
    pub retired: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Incomplete scopes and other warnings.
    pub warnings: Vec<String>,
}

impl From<model::Run> for Run {
    fn from(r: model::Run) -> Self {
        Run {
            id: r.id,
            collector: r.collector,
            scope: r.scope,
            status: match r.status {
                model::RunStatus::Ok => RunStatus::Ok,
                model::RunStatus::Partial => RunStatus::Partial,
                model::RunStatus::Failed => RunStatus::Failed,
            },
            started_at: to_dt(r.started_at),
            finished_at: to_dt(r.finished_at),
            resources_seen: r.resources_seen,
            relations_seen: r.relations_seen,
            created: r.created,
            updated: r.updated,
            retired: r.retired,
            error: r.error,
            warnings: r.warnings,
        }
    }
}

/// One entry of the change log.
#[derive(SimpleObject)]
pub struct Change {
    /// When.
    pub at: DateTime<Utc>,
    /// create, update, retire or revive.
    pub op: String,
    /// The source whose report caused it.
    pub source: String,
    /// The run that caused it.
    pub run_id: Option<i64>,
    /// The resource, or the relation's `from`.
    pub resource_id: String,
    /// For relation changes: the relation's `to`.
    pub to_id: Option<String>,
    /// For relation changes: the relation kind.
    pub relation_kind: Option<String>,
    /// For updates: `{field: {old, new}}`.
    pub diff: Option<Json<serde_json::Value>>,
}

impl From<model::Change> for Change {
    fn from(c: model::Change) -> Self {
        let (to_id, relation_kind) = match c.relation {
            Some((to, kind)) => (Some(to), Some(kind)),
            None => (None, None),
        };
        Change {
            at: to_dt(c.at),
            op: c.op.as_str().to_string(),
            source: c.source,
            run_id: c.run_id,
            resource_id: c.resource_id,
            to_id,
            relation_kind,
            diff: (!c.diff.is_null()).then_some(Json(c.diff)),
        }
    }
}

/// Read access to the inventory and the graph.
pub struct Query;

#[Object]
impl Query {
    /// One resource by id, present or gone; null for an unknown id.
    async fn resource(&self, ctx: &Context<'_>, id: async_graphql::ID) -> Option<Resource> {
        let snap = snap(ctx);
        snap.lookup(&id).map(|ix| Resource {
            snap: snap.clone(),
            ix,
        })
    }

    /// Resources by kind, label selectors (`team=payments`, `tier!=3`, `env`;
    /// ANDed) and a case-insensitive search over id and name. Present ones
    /// unless `status` says otherwise. Relay-paginated by id.
    #[allow(clippy::too_many_arguments)]
    #[graphql(
        complexity = "first.unwrap_or(100).max(1) as usize * child_complexity + if search.is_some() || labels.is_some() || kind.is_some() || status.is_some() { PATH_COST } else { 0 }"
    )]
    async fn resources(
        &self,
        ctx: &Context<'_>,
        kind: Option<String>,
        labels: Option<Vec<String>>,
        search: Option<String>,
        status: Option<ResourceStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ResourceConnection> {
        let snap = snap(ctx);
        let selectors = labels
            .unwrap_or_default()
            .iter()
            .map(|s| LabelSelector::parse(s).map_err(|e| client_error("BAD_SELECTOR", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let first = first.unwrap_or(100);
        if first < 0 || first as usize > MAX_PAGE {
            return Err(client_error(
                "BAD_PAGE",
                format!("first must be between 0 and {MAX_PAGE}"),
            ));
        }
        let want = status.unwrap_or(ResourceStatus::Present);
        let needle = search.map(|s| s.to_lowercase());
        let scanned = snap.clone();
        let matching: Vec<Ix> = compute(ctx, move || {
            let snap = scanned;
            (0..snap.resources.len() as Ix)
                .filter(|&ix| {
                    let r = snap.resource(ix);
                    ResourceStatus::from(r.status) == want
                        && kind.as_ref().is_none_or(|k| &r.kind == k)
                        && selectors.iter().all(|s| s.matches(&r.labels))
                        && needle.as_ref().is_none_or(|n| {
                            r.id.to_lowercase().contains(n) || r.name.to_lowercase().contains(n)
                        })
                })
                .collect()
        })
        .await?;
        let start = match &after {
            // Resources are sorted by id, so the cursor (an id) finds its place
            // even when that resource has since gone.
            Some(c) => matching.partition_point(|&ix| snap.resource(ix).id.as_str() <= c.as_str()),
            None => 0,
        };
        let page = &matching[start..(start + first as usize).min(matching.len())];
        list(ctx, page.len())?;
        let edges: Vec<ResourceEdge> = page
            .iter()
            .map(|&ix| ResourceEdge {
                cursor: snap.resource(ix).id.clone(),
                node: Resource {
                    snap: snap.clone(),
                    ix,
                },
            })
            .collect();
        Ok(ResourceConnection {
            total_count: matching.len() as i64,
            page_info: PageInfo {
                has_next_page: start + page.len() < matching.len(),
                has_previous_page: start > 0,
                start_cursor: edges.first().map(|e| e.cursor.clone()),
                end_cursor: edges.last().map(|e| e.cursor.clone()),
            },
            edges,
        })
    }

    /// What goes DOWN and what is DEGRADED if every resource in `failed`,
    /// and every resource the `where` selector picks, fails (e.g. `where:
    /// {containedIn: "zone:eu-central-1a"}` for a zone outage). Each with its
    /// depth and explaining path. `maxDepth` trims the answer to resources
    /// within that many relations. A `where` that matches no present
    /// resource is an error (BAD_SELECTOR).
    #[graphql(complexity = "IMPACT_COST + child_complexity")]
    async fn impact(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] failed: Vec<async_graphql::ID>,
        r#where: Option<SelectorInput>,
        max_depth: Option<i32>,
    ) -> async_graphql::Result<Impact> {
        let snap = snap(ctx).clone();
        let max_depth = count_arg("maxDepth", max_depth)?;
        let mut ixs = resolve_failed(&snap, &failed)?;
        let sel = match r#where {
            Some(w) => {
                let sel = w.parse()?;
                if sel.is_empty() {
                    return Err(client_error(
                        "BAD_SELECTOR",
                        "where selects every resource: give kind, labels or containedIn",
                    ));
                }
                Some(sel)
            }
            None => None,
        };
        compute(ctx, move || {
            if let Some(sel) = sel {
                let chosen = snap
                    .select(&sel)
                    .map_err(|e| client_error("UNKNOWN_RESOURCE", e))?;
                if chosen.is_empty() {
                    // As the CLI: a typo in the selector must not quietly
                    // shrink the failed set.
                    return Err(client_error(
                        "BAD_SELECTOR",
                        format!("where '{sel}' matches no present resource"),
                    ));
                }
                if let Some(why) = snap.selects_everything(&sel, chosen.len()) {
                    return Err(client_error("BAD_SELECTOR", format!("where {why}")));
                }
                ixs.extend(chosen);
            }
            ixs.sort_unstable();
            ixs.dedup();
            if ixs.is_empty() {
                return Err(client_error(
                    "BAD_INPUT",
                    "nothing failed: name resources in failed, or a where selector that matches some",
                ));
            }
            let result = snap.impact(&ixs, max_depth);
            let by_kind = result.counts_by_kind(&snap);
            Ok(Impact {
                snap,
                result: Arc::new(result),
                failed: ixs,
                by_kind,
            })
        })
        .await?
    }

    /// A diagram as Graphviz DOT text (render it with `dot -Tsvg`, or fetch
    /// `/diagrams/KIND.svg`). `scope` and `showReachability` are for the
    /// network, `around`, `hops` and `groupBy` for dependencies, `failed`
    /// and `hops` for impact. Larger scopes are folded and capped at
    /// `maxNodes` (default 300), with a note in the diagram.
    #[graphql(complexity = "DIAGRAM_COST + child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn diagram(
        &self,
        ctx: &Context<'_>,
        kind: DiagramKind,
        scope: Option<String>,
        show_reachability: Option<bool>,
        around: Option<String>,
        hops: Option<i32>,
        group_by: Option<String>,
        #[graphql(default)] failed: Vec<async_graphql::ID>,
        max_nodes: Option<i32>,
    ) -> async_graphql::Result<String> {
        use crate::diagram::{DiagramError, Kind, Options};
        let snap = snap(ctx).clone();
        let opts = Options {
            scope,
            show_reachability: show_reachability.unwrap_or(false),
            around,
            hops: count_arg("hops", hops)?,
            group_by,
            failed: failed.into_iter().map(|f| f.0).collect(),
            max_nodes: crate::diagram::server_max_nodes(
                count_arg("maxNodes", max_nodes)?
                    .map_or(crate::diagram::DEFAULT_MAX_NODES, |m| m as usize),
            )
            .map_err(|e| client_error("BAD_INPUT", e.to_string()))?,
        };
        crate::diagram::server_max_nodes(opts.failed.len()).map_err(|e| {
            client_error("BAD_INPUT", format!("failed lists too many resources: {e}"))
        })?;
        let kind = match kind {
            DiagramKind::Network => Kind::Network,
            DiagramKind::Dependencies => Kind::Dependencies,
            DiagramKind::Impact => Kind::Impact,
        };
        let d = compute(ctx, move || crate::diagram::build(&snap, kind, &opts))
            .await?
            .map_err(|e| match e {
                DiagramError::Unknown(_) => client_error("UNKNOWN_RESOURCE", e.to_string()),
                DiagramError::Gone { .. } => client_error("GONE_RESOURCE", e.to_string()),
                DiagramError::Invalid(_) => client_error("BAD_INPUT", e.to_string()),
            })?;
        Ok(d.dot())
    }

    /// What a resource needs, transitively, nearest first: the root-cause
    /// candidates when it breaks. With `changedSince`, only those whose
    /// history shows a change since then (added, modified, retired, revived,
    /// or their relations), most recent first, each with its changes.
    #[graphql(complexity = "IMPACT_COST + 10 * child_complexity")]
    async fn dependencies(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        max_depth: Option<i32>,
        changed_since: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Vec<Dependency>> {
        let snap = snap(ctx);
        let ix = resolve(snap, &id)?;
        let max_depth = count_arg("maxDepth", max_depth)?;
        match changed_since {
            None => {
                refuse_gone(
                    snap,
                    ix,
                    "it has no present relations, so it needs nothing now (with changedSince, the relations it lost in that window are listed)",
                )?;
                let walked = snap.clone();
                let deps = compute(ctx, move || walked.dependencies(ix, max_depth)).await?;
                list(ctx, deps.len())?;
                Ok(deps
                    .into_iter()
                    .map(|dep| Dependency {
                        snap: snap.clone(),
                        dep,
                        changes: None,
                    })
                    .collect())
            }
            Some(since) => {
                let app = ctx.data_unchecked::<Arc<App>>();
                // The store's reads here, the graph's work on the blocking
                // pool.
                use crate::incident::{changed_of, ids_of, with_retired};
                let since = since.timestamp_millis();
                let retired = app
                    .store
                    .retired_relations_since(since)
                    .await
                    .map_err(internal)?;
                let walked = snap.clone();
                let (deps, ids) = compute(ctx, move || {
                    let deps = walked.dependencies(ix, max_depth);
                    let deps = with_retired(&walked, ix, max_depth, deps, &retired);
                    let ids = ids_of(&walked, &deps);
                    (deps, ids)
                })
                .await?;
                let history = app
                    .store
                    .history_many(&ids, Some(since))
                    .await
                    .map_err(internal)?;
                let walked = snap.clone();
                let found = compute(ctx, move || changed_of(&walked, ix, deps, history)).await?;
                // Each dependency and each of its changes.
                list(
                    ctx,
                    found.len() + found.iter().map(|c| c.changes.len()).sum::<usize>(),
                )?;
                Ok(found
                    .into_iter()
                    .map(|c| Dependency {
                        snap: snap.clone(),
                        dep: c.dependency,
                        changes: Some(c.changes),
                    })
                    .collect())
            }
        }
    }

    /// Single points of failure: resources whose failure alone takes down at
    /// least one critical resource (label selectors in `critical`, ANDed,
    /// default `tier=1`), most critical resources taken down first. `scope`
    /// limits which resources are tried. A page of the answer: `first`
    /// (default 100, at most 1,000: more is read as 1,000) after `offset`
    /// (default 0); `spofCount` says how many there are in all.
    /// A critical set or scope that matches no present resource is an error
    /// (BAD_SELECTOR), not an empty answer.
    #[graphql(
        complexity = "SPOFS_COST + first.unwrap_or(100).clamp(1, 1000) as usize * child_complexity"
    )]
    async fn spofs(
        &self,
        ctx: &Context<'_>,
        scope: Option<SelectorInput>,
        critical: Option<Vec<String>>,
        first: Option<i32>,
        offset: Option<i32>,
    ) -> async_graphql::Result<Vec<Spof>> {
        // Read as at most 1,000, as it always was (clients asking for more
        // keep working); `offset` and `spofCount` page through the rest.
        let take = count_arg("first", first)?.unwrap_or(100).min(1000);
        let skip = count_arg("offset", offset)?.unwrap_or(0) as usize;
        let snap = snap(ctx);
        let found = spofs_of(ctx, snap, scope, critical).await?;
        Ok(found
            .into_iter()
            .skip(skip)
            .take(take as usize)
            .map(|spof| Spof {
                snap: snap.clone(),
                spof,
            })
            .collect())
    }

    /// How many single points of failure `spofs` finds with the same
    /// `scope` and `critical`, in all.
    #[graphql(complexity = "SPOFS_COST")]
    async fn spof_count(
        &self,
        ctx: &Context<'_>,
        scope: Option<SelectorInput>,
        critical: Option<Vec<String>>,
    ) -> async_graphql::Result<i32> {
        let found = spofs_of(ctx, snap(ctx), scope, critical).await?;
        Ok(found.len() as i32)
    }

    /// How two resources are connected: the shortest chain of present
    /// relations, followed in either direction. Null when unconnected.
    #[graphql(complexity = "PATH_COST + 10 * child_complexity")]
    async fn path(
        &self,
        ctx: &Context<'_>,
        from: async_graphql::ID,
        to: async_graphql::ID,
    ) -> async_graphql::Result<Option<Vec<Relation>>> {
        let snap = snap(ctx);
        let (a, b) = (resolve(snap, &from)?, resolve(snap, &to)?);
        for ix in [a, b] {
            refuse_gone(
                snap,
                ix,
                "it has no present relations, so it connects to nothing now",
            )?;
        }
        let walked = snap.clone();
        let found = compute(ctx, move || walked.path(a, b)).await?;
        list(ctx, found.as_ref().map_or(0, Vec::len))?;
        Ok(found.map(|p| {
            p.into_iter()
                .map(|ix| Relation {
                    snap: snap.clone(),
                    ix,
                })
                .collect()
        }))
    }

    /// Hosts with agents: when each last reported, and whether it is
    /// FRESH, STALE (silent longer than `agent_stale_after`) or GONE
    /// (longer than `agent_gone_after`; what it reported is retired).
    #[graphql(complexity = "DIAGRAM_COST + 10 * child_complexity")]
    async fn agents(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AgentHost>> {
        let snap = snap(ctx).clone();
        let app = ctx.data_unchecked::<Arc<App>>().clone();
        compute(ctx, move || {
            crate::agent::hosts(&snap, &app.agents, now_ms())
                .into_iter()
                .map(|host| AgentHost {
                    snap: snap.clone(),
                    host,
                })
                .collect::<Vec<_>>()
        })
        .await
        .and_then(|hosts| listed(ctx, hosts))
    }

    /// Where declarations and observations disagree: declared dependencies
    /// never observed (only where an agent watches the client's host, so
    /// that "not observed" means something) and observed dependencies never
    /// declared.
    #[graphql(complexity = "DIAGRAM_COST + child_complexity")]
    async fn drift(&self, ctx: &Context<'_>) -> async_graphql::Result<Drift> {
        let owned = snap(ctx).clone();
        compute(ctx, move || {
            let snap = &owned;
            // Watched: hosts an agent reports, and whatever runs on them,
            // whoever says so (an inventory's instance on a watched host
            // that the agent does not see is the worst drift of all).
            let agent_hosts: std::collections::HashSet<&str> = snap
                .resources
                .iter()
                .filter(|r| {
                    r.status == model::Status::Present
                        && r.kind == "host"
                        && r.sources.iter().any(|s| {
                            s.status == model::Status::Present && s.source.starts_with("agent:")
                        })
                })
                .map(|r| r.id.as_str())
                .collect();
            let watched: std::collections::HashSet<&str> = snap
                .relations
                .iter()
                .filter(|r| {
                    r.status == model::Status::Present
                        && r.kind == "runs_on"
                        && agent_hosts.contains(r.to.as_str())
                })
                .map(|r| r.from.as_str())
                .chain(agent_hosts.iter().copied())
                .collect();
            // Compare at service level: an instance stands for its service.
            let mut service_of: std::collections::HashMap<&str, &str> = Default::default();
            for r in snap.relations.iter() {
                if r.status == model::Status::Present && r.kind == "instance_of" {
                    service_of.entry(r.from.as_str()).or_insert(r.to.as_str());
                }
            }
            let key =
                |id: &'_ str| -> String { service_of.get(id).copied().unwrap_or(id).to_string() };
            let watched_keys: std::collections::HashSet<String> =
                watched.iter().map(|id| key(id)).collect();
            let deps: Vec<(usize, &model::Relation, Vec<Evidence>)> = snap
                .relations
                .iter()
                .enumerate()
                .filter(|(_, r)| r.status == model::Status::Present && r.kind == "depends_on")
                .map(|(ix, r)| (ix, r, evidence_of(r)))
                .collect();
            let observed: std::collections::HashSet<(String, String)> = deps
                .iter()
                .filter(|(_, _, ev)| ev.contains(&Evidence::Observed))
                .map(|(_, r, _)| (key(&r.from), key(&r.to)))
                .collect();
            let declared: std::collections::HashSet<(String, String)> = deps
                .iter()
                .filter(|(_, _, ev)| ev.contains(&Evidence::Declared))
                .map(|(_, r, _)| (key(&r.from), key(&r.to)))
                .collect();
            let mut declared_not_observed = Vec::new();
            let mut observed_not_declared = Vec::new();
            for (ix, r, ev) in &deps {
                let pair = (key(&r.from), key(&r.to));
                let rel = || Relation {
                    snap: snap.clone(),
                    ix: *ix as crate::graph::RelIx,
                };
                if *ev == [Evidence::Declared]
                    && watched_keys.contains(&pair.0)
                    && !observed.contains(&pair)
                {
                    declared_not_observed.push(rel());
                } else if *ev == [Evidence::Observed] && !declared.contains(&pair) {
                    observed_not_declared.push(rel());
                }
            }
            Drift {
                declared_not_observed,
                observed_not_declared,
            }
        })
        .await
        .and_then(|d| {
            list(
                ctx,
                d.declared_not_observed.len() + d.observed_not_declared.len(),
            )?;
            Ok(d)
        })
    }

    /// Dependency cycles: groups of resources that need each other in a
    /// loop, along any relation a failure travels (depends_on, runs_on,
    /// contained_in, attached_to, a service through its instances, a load
    /// balancer through its targets), largest first.
    #[graphql(complexity = "DIAGRAM_COST + 10 * child_complexity")]
    async fn cycles(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Cycle>> {
        let snap = snap(ctx).clone();
        compute(ctx, move || {
            snap.cycles()
                .into_iter()
                .map(|(members, cycle)| Cycle {
                    snap: snap.clone(),
                    members,
                    cycle,
                })
                .collect::<Vec<_>>()
        })
        .await
        .and_then(|cycles| listed(ctx, cycles))
    }

    /// Every source that reports something now, with how much and when it
    /// last did, the longest silent first. A source nothing collects any
    /// more (a renamed file, a region dropped) keeps what it reported
    /// PRESENT until `retireSource`.
    #[graphql(complexity = "DIAGRAM_COST + child_complexity")]
    async fn sources(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SourceSummary>> {
        let app = ctx.data_unchecked::<Arc<App>>();
        let sources = app.store.sources().await.map_err(internal)?;
        listed(
            ctx,
            sources
                .into_iter()
                .map(|s| SourceSummary {
                    source: s.source,
                    resources: s.resources,
                    relations: s.relations,
                    last_seen: to_dt(s.last_seen),
                })
                .collect(),
        )
    }

    /// Recent collection runs, newest first (default 20, at most 1000).
    #[graphql(complexity = "last.unwrap_or(20).clamp(1, 1000) as usize * child_complexity")]
    async fn runs(&self, ctx: &Context<'_>, last: Option<i32>) -> async_graphql::Result<Vec<Run>> {
        let app = ctx.data_unchecked::<Arc<App>>();
        let last = count_arg("last", last)?.unwrap_or(20);
        if last > 1000 {
            return Err(client_error(
                "BAD_PAGE",
                format!("last must be between 0 and 1000, not {last}"),
            ));
        }
        let runs = app.store.runs(last as i64).await.map_err(internal)?;
        // A run's warnings are as many as its collector wrote (one per
        // failed scope or skipped item): counted with the runs when asked for.
        let warnings = if ctx.look_ahead().field("warnings").exists() {
            runs.iter().map(|r| r.warnings.len()).sum::<usize>()
        } else {
            0
        };
        list(ctx, runs.len() + warnings)?;
        Ok(runs.into_iter().map(Run::from).collect())
    }
}

/// Manual edits, recorded under the source `manual`. Each needs the bearer token.
pub struct Mutation;

fn writer(ctx: &Context<'_>) -> async_graphql::Result<Arc<App>> {
    match ctx.data_unchecked::<Auth>() {
        Auth::Writer => Ok(ctx.data_unchecked::<Arc<App>>().clone()),
        Auth::Disabled => Err(client_error(
            "WRITES_DISABLED",
            "mutations are disabled: start the server with --token-file FILE, token_file in the configuration file, or INFRAGRAPH_TOKEN",
        )),
        Auth::Missing => Err(client_error(
            "UNAUTHORIZED",
            "mutations need the header 'Authorization: Bearer <token>' with the server's token",
        )),
    }
}

async fn manual(
    ctx: &Context<'_>,
    app: &App,
    batch: ScopeBatch,
    retract: Vec<(String, Key)>,
) -> async_graphql::Result<()> {
    let run = app
        .apply(RunInput {
            collector: "manual".into(),
            scope: String::new(),
            started_at: now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![batch],
                warnings: Vec::new(),
            }),
            retract,
            additive: true,
        })
        .await
        .map_err(internal)?;
    if let Some(d) = ctx.data_opt::<Deadline>() {
        d.restart();
    }
    if let Some(err) = run.error {
        return Err(client_error("BAD_INPUT", err));
    }
    Ok(())
}

#[Object]
impl Mutation {
    /// Asserts a resource by hand (source `manual`).
    async fn assert_resource(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        kind: String,
        name: Option<String>,
        labels: Option<Vec<LabelInput>>,
    ) -> async_graphql::Result<Resource> {
        let app = writer(ctx)?;
        if id.trim().is_empty() || id.trim() != id.as_str() {
            return Err(client_error(
                "BAD_INPUT",
                "id must be non-empty without surrounding spaces",
            ));
        }
        if !collectors::is_kind(&kind) {
            return Err(client_error(
                "BAD_INPUT",
                format!(
                    "invalid kind '{kind}' (expected a lowercase identifier such as 'service')"
                ),
            ));
        }
        let labels = labels.unwrap_or_default();
        if let Some(l) = labels.iter().find(|l| !collectors::is_label_key(&l.key)) {
            return Err(client_error(
                "BAD_INPUT",
                format!("label key '{}' is empty or contains '=', '!' or ','", l.key),
            ));
        }
        let mut r = ObservedResource::new(id.to_string(), kind);
        r.name = name;
        r.labels = labels
            .into_iter()
            .map(|l| (l.key, l.value))
            .collect::<BTreeMap<_, _>>();
        r.origin = Some(format!("assertResource(id: {:?})", id.as_str()));
        let batch = ScopeBatch {
            scope: String::new(),
            complete: false,
            resources: vec![r],
            relations: vec![],
            gone: Vec::new(),
        };
        manual(ctx, &app, batch, vec![]).await?;
        let snap = app.snapshot();
        let ix = resolve(&snap, &id)?;
        Ok(Resource { snap, ix })
    }

    /// Asserts a relation by hand (source `manual`); both ends must exist.
    async fn assert_relation(
        &self,
        ctx: &Context<'_>,
        from: async_graphql::ID,
        to: async_graphql::ID,
        kind: String,
    ) -> async_graphql::Result<Relation> {
        let app = writer(ctx)?;
        if !collectors::is_kind(&kind) {
            return Err(client_error(
                "BAD_INPUT",
                format!("invalid relation kind '{kind}'"),
            ));
        }
        if from == to {
            return Err(client_error(
                "BAD_INPUT",
                format!("relation from '{}' to itself", from.as_str()),
            ));
        }
        let mut rel = ObservedRelation::new(from.to_string(), to.to_string(), kind.clone());
        rel.origin = Some("assertRelation".into());
        let batch = ScopeBatch {
            scope: String::new(),
            complete: false,
            resources: vec![],
            relations: vec![rel],
            gone: Vec::new(),
        };
        manual(ctx, &app, batch, vec![]).await?;
        let snap = app.snapshot();
        let ix = snap
            .lookup_relation(&from, &to, &kind)
            .ok_or_else(|| internal(anyhow::anyhow!("asserted relation missing after refresh")))?;
        Ok(Relation { snap, ix })
    }

    /// Ends the manual assertion of a resource. It goes GONE unless another
    /// source still reports it. False when there was no manual assertion.
    async fn retract_resource(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<bool> {
        let app = writer(ctx)?;
        let snap = app.snapshot();
        let ix = resolve(&snap, &id)?;
        let asserted = snap
            .resource(ix)
            .sources
            .iter()
            .any(|p| p.source == "manual" && p.status == model::Status::Present);
        if !asserted {
            return Ok(false);
        }
        manual(
            ctx,
            &app,
            ScopeBatch::default(),
            vec![(String::new(), Key::Resource(id.to_string()))],
        )
        .await?;
        Ok(true)
    }

    /// Ends the manual assertion of a relation. False when there was none.
    async fn retract_relation(
        &self,
        ctx: &Context<'_>,
        from: async_graphql::ID,
        to: async_graphql::ID,
        kind: String,
    ) -> async_graphql::Result<bool> {
        let app = writer(ctx)?;
        let snap = app.snapshot();
        let Some(ix) = snap.lookup_relation(&from, &to, &kind) else {
            return Ok(false);
        };
        let asserted = snap
            .relation(ix)
            .sources
            .iter()
            .any(|p| p.source == "manual" && p.status == model::Status::Present);
        if !asserted {
            return Ok(false);
        }
        manual(
            ctx,
            &app,
            ScopeBatch::default(),
            vec![(
                String::new(),
                Key::Relation(from.to_string(), to.to_string(), kind),
            )],
        )
        .await?;
        Ok(true)
    }

    /// Retires everything one source reports (a renamed or removed file, a
    /// region no longer collected): GONE with the time, history kept, what
    /// other sources report stays. The run is the source's; `sources`
    /// lists them.
    async fn retire_source(&self, ctx: &Context<'_>, source: String) -> async_graphql::Result<Run> {
        let app = writer(ctx)?;
        let input = app
            .store
            .retire_source_input(&source)
            .await
            .map_err(internal)?
            .map_err(|why| client_error("UNKNOWN_SOURCE", why))?;
        let run = app.apply(input).await.map_err(internal)?;
        if let Some(d) = ctx.data_opt::<Deadline>() {
            d.restart();
        }
        match run.error {
            Some(err) => Err(client_error("BAD_INPUT", err)),
            None => Ok(Run::from(run)),
        }
    }
}
