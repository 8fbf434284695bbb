//! The running service's shared state: the store, the current graph snapshot
//! and the write token. Collector runs and mutations go through here so that
//! every write is followed by a graph refresh.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::collector::ConfiguredCollector;
use crate::graph::Snapshot;
use crate::model::{Run, now_ms};
use crate::store::{RunInput, SilentSince, Store};

/// Shared state of the server and the CLI commands that write.
pub struct App {
    /// The database.
    pub store: Store,
    graph: ArcSwap<Snapshot>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Writes committed through `apply`, and how many of them the current
    /// snapshot includes: concurrent writers share one refresh.
    committed: std::sync::atomic::AtomicU64,
    loaded: std::sync::atomic::AtomicU64,
    /// A background refresh is queued and has not started loading yet
    /// (see [`App::apply_deferred`]).
    refresh_queued: std::sync::atomic::AtomicBool,
    /// The bearer token that authorizes writes; `None` disables them.
    pub token: Option<String>,
    /// Agent tokens and service naming rules.
    pub agents: crate::agent::AgentSettings,
    /// The agents' listener index and the snapshot it was built from.
    pub(crate) listener_cache: ListenerCache,
    /// The store's run mark when the current snapshot was loaded:
    /// `(floor, highest run id, runs above floor)` (see [`Store::run_mark`]).
    store_mark: std::sync::Mutex<(i64, (i64, i64))>,
    /// Since when, and why, the store watch's checks have failed (`None`
    /// while they succeed): `/healthz` says so, so that a load balancer
    /// stops sending requests to a replica that lost its database.
    store_fault: std::sync::Mutex<Option<(crate::model::Millis, String)>>,
    /// How long a GraphQL request may take.
    query_timeout: Setting,
    /// Diagram renders (`dot` processes) that may run at once.
    render_slots: Arc<tokio::sync::Semaphore>,
    /// Graph computations of GraphQL requests that may run at once.
    compute_slots: Arc<tokio::sync::Semaphore>,
    /// How long a diagram request waits for a render slot.
    render_wait: Setting,
}

/// A duration the server reads per request and tests (or the
/// configuration) may change while it runs, kept in milliseconds.
struct Setting(std::sync::atomic::AtomicU64);

impl Setting {
    fn new(d: std::time::Duration) -> Setting {
        let s = Setting(Default::default());
        s.set(d);
        s
    }

    fn get(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set(&self, d: std::time::Duration) {
        self.0.store(
            d.as_millis().min(u64::MAX as u128) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Diagram renders that run at once: each `dot` may take a core for
/// seconds, and anyone who can reach the server can ask for one.
pub const RENDER_SLOTS: usize = 2;
/// How long a diagram request waits for a render slot before it is told to
/// come back (503).
pub const DEFAULT_RENDER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a GraphQL request may take unless `query_timeout` says
/// otherwise.
pub const DEFAULT_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How far below the highest run id the mark counts runs: a run that
/// commits this many ids late is still noticed.
const MARK_WINDOW: i64 = 1_000;

type ListenerCache = std::sync::Mutex<Option<(Arc<Snapshot>, Arc<crate::agent::AgentIndex>)>>;

impl App {
    /// Loads the graph from the store.
    pub async fn new(store: Store, token: Option<String>) -> anyhow::Result<Arc<App>> {
        Self::with_agents(store, token, Default::default()).await
    }

    /// Like [`App::new`], with agent tokens and naming rules.
    pub async fn with_agents(
        store: Store,
        token: Option<String>,
        agents: crate::agent::AgentSettings,
    ) -> anyhow::Result<Arc<App>> {
        let app = App {
            store,
            graph: ArcSwap::from_pointee(Snapshot::empty()),
            refresh_lock: tokio::sync::Mutex::new(()),
            committed: std::sync::atomic::AtomicU64::new(0),
            loaded: std::sync::atomic::AtomicU64::new(0),
            refresh_queued: std::sync::atomic::AtomicBool::new(false),
            token,
            agents,
            listener_cache: Default::default(),
            store_mark: std::sync::Mutex::new((0, (0, 0))),
            store_fault: std::sync::Mutex::new(None),
            query_timeout: Setting::new(DEFAULT_QUERY_TIMEOUT),
            render_slots: Arc::new(tokio::sync::Semaphore::new(RENDER_SLOTS)),
            compute_slots: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            render_wait: Setting::new(DEFAULT_RENDER_WAIT),
        };
        app.refresh().await?;
        Ok(Arc::new(app))
    }

    /// How long a GraphQL request may take before it is abandoned with a
    /// `TIMEOUT` error.
    pub fn query_timeout(&self) -> std::time::Duration {
        self.query_timeout.get()
    }

    /// Sets [`App::query_timeout`].
    pub fn set_query_timeout(&self, timeout: std::time::Duration) {
        self.query_timeout.set(timeout);
    }

    /// The diagram render slots ([`RENDER_SLOTS`]); a render holds one
    /// while `dot` runs.
    pub fn render_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.render_slots
    }

    /// The slots graph computations of GraphQL requests (impact, paths,
    /// scans, SPOFs, diagram builds) take on the blocking pool: twice the
    /// cores, so that CPU-bound work a timed-out request leaves behind
    /// cannot pile up without bound, and a long computation cannot keep
    /// the short ones of others waiting for long.
    pub fn compute_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.compute_slots
    }

    /// How long a diagram request waits for a render slot.
    pub fn render_wait(&self) -> std::time::Duration {
        self.render_wait.get()
    }

    /// Sets [`App::render_wait`].
    pub fn set_render_wait(&self, wait: std::time::Duration) {
        self.render_wait.set(wait);
    }

    /// The current snapshot. Hold it for the whole of a request so that every
    /// field sees the same graph.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.graph.load_full()
    }

    /// Rebuilds the snapshot from the store and swaps it in. Readers keep
    /// answering from the previous one meanwhile.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let _guard = self.refresh_lock.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        // Everything committed before this load is in the new snapshot.
        let target = self.committed.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        // Taken before the load: a run committed meanwhile changes the mark
        // and is picked up by the next check.
        let floor = self.store.last_run_id().await? - MARK_WINDOW;
        let mark = self.store.run_mark(floor).await?;
        let (resources, relations) = self.store.load_all().await?;
        let snap =
            tokio::task::spawn_blocking(move || Snapshot::build(resources, relations, now_ms()))
                .await?;
        let (nodes, edges) = snap.counts();
        self.graph.store(Arc::new(snap));
        self.loaded.fetch_max(target, Ordering::SeqCst);
        *self.store_mark.lock().unwrap_or_else(|e| e.into_inner()) = (floor, mark);
        tracing::info!(
            resources = nodes,
            relations = edges,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "graph refreshed"
        );
        Ok(())
    }

    /// Records a run and refreshes the graph. When several writers commit
    /// at once (agents reporting together), one refresh serves them all:
    /// each returns once the snapshot includes its own write.
    pub async fn apply(&self, input: RunInput) -> anyhow::Result<Run> {
        use std::sync::atomic::Ordering;
        let run = self.store.apply(input).await?;
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.refresh_lock.lock().await;
        if self.loaded.load(Ordering::SeqCst) < mine {
            self.refresh_locked().await?;
        }
        Ok(run)
    }

    /// [`App::apply`] under a precondition (see [`SilentSince`]): when it
    /// no longer holds nothing is written and the error is a
    /// [`crate::store::Superseded`].
    pub async fn apply_unless_seen(
        &self,
        input: RunInput,
        guard: SilentSince,
    ) -> anyhow::Result<Run> {
        use std::sync::atomic::Ordering;
        let run = self
            .store
            .apply_unless_seen(input, Some(guard.into()))
            .await?;
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = self.refresh_lock.lock().await;
        if self.loaded.load(Ordering::SeqCst) < mine {
            self.refresh_locked().await?;
        }
        Ok(run)
    }

    /// Records a run and returns once it is committed; the graph catches up
    /// in the background. Many writers (a fleet of agents reporting every
    /// minute) then cost one refresh per refresh time, not one each, and a
    /// report is not held while the whole graph reloads. Queries see the
    /// write within one refresh (`graph refreshed` in the log says how long).
    pub async fn apply_deferred(
        self: &Arc<Self>,
        input: RunInput,
        guard: Option<crate::store::Guard>,
    ) -> anyhow::Result<Run> {
        use std::sync::atomic::Ordering;
        let run = self.store.apply_unless_seen(input, guard).await?;
        self.committed.fetch_add(1, Ordering::SeqCst);
        self.queue_refresh();
        Ok(run)
    }

    /// Queues one background refresh unless one is already queued: writes
    /// committed while a refresh loads queue the next one, so the snapshot
    /// always ends up including every write.
    fn queue_refresh(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.refresh_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let app = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = app.refresh_lock.lock().await;
            // From here on, a new write queues another refresh.
            app.refresh_queued.store(false, Ordering::SeqCst);
            if app.loaded.load(Ordering::SeqCst) < app.committed.load(Ordering::SeqCst)
                && let Err(e) = app.refresh_locked().await
            {
                tracing::error!(error = %format!("{e:#}"), "background graph refresh failed; the next write retries");
            }
        });
    }

    /// The store's highest run id when runs were committed since the
    /// snapshot's mark was taken; `None` when none were, or the store
    /// cannot say (logged).
    async fn store_moved(&self) -> Option<i64> {
        let (floor, seen) = *self.store_mark.lock().unwrap_or_else(|e| e.into_inner());
        let mark = self.store.run_mark(floor).await;
        let mut fault = self.store_fault.lock().unwrap_or_else(|e| e.into_inner());
        match mark {
            Ok(now) => {
                if let Some((since, _)) = fault.take() {
                    tracing::info!(
                        down_ms = crate::model::now_ms() - since,
                        "the store answers again"
                    );
                }
                (now != seen).then_some(now.0)
            }
            Err(e) => {
                let why = crate::store::error_text(&e);
                tracing::warn!(error = %why, "cannot check the store for new runs");
                let since = fault.as_ref().map_or_else(crate::model::now_ms, |f| f.0);
                *fault = Some((since, why));
                None
            }
        }
    }

    /// Since when, and why, the store has not answered the store watch
    /// (see [`App::spawn_store_watch`]); `None` while it answers.
    pub fn store_fault(&self) -> Option<(crate::model::Millis, String)> {
        self.store_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the graph when other processes (replicas on the same
    /// PostgreSQL, `infragraph collect` on the same SQLite file) committed
    /// runs since the snapshot was loaded: checks the store's run mark every
    /// `every` until `stop` turns true.
    pub fn spawn_store_watch(
        self: &Arc<Self>,
        every: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let app = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                // Polled without the refresh lock, so a store that is slow
                // to answer does not hold up writers; then checked again
                // under it, because the mark compared must be the one the
                // last finished refresh loaded at, not one that a refresh in
                // progress (after this server's own run) was about to
                // replace: that stale mark reloaded the graph a second time
                // for the server's own run.
                if app.store_moved().await.is_none() {
                    continue;
                }
                let _guard = app.refresh_lock.lock().await;
                if let Some(run) = app.store_moved().await {
                    tracing::info!(run, "runs committed elsewhere: reloading the graph");
                    if let Err(e) = app.refresh_locked().await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot reload the graph; the next check retries");
                    }
                }
            }
        })
    }

    /// Waits until the snapshot includes every write committed so far
    /// (for tests and for callers that need to read their own writes).
    pub async fn settle(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering;
        let target = self.committed.load(Ordering::SeqCst);
        let _guard = self.refresh_lock.lock().await;
        if self.loaded.load(Ordering::SeqCst) < target {
            self.refresh_locked().await?;
        }
        Ok(())
    }

    /// Runs one collector, records the run and refreshes the graph.
    pub async fn collect(&self, collector: &ConfiguredCollector) -> anyhow::Result<Run> {
        let run = collector.run(&self.store).await?;
        if run.status != crate::model::RunStatus::Failed {
            self.refresh().await?;
        }
        Ok(run)
    }
}
