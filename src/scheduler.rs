//! Runs the configured collectors inside `serve`: each on its own interval,
//! one run at a time per collector (the next starts `interval` after the
//! previous one ended), each run recorded, the graph refreshed after each.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Scheduled;

/// Starts one task per collector. The first run starts at once. Tasks stop
/// when `shutdown` becomes true (a run in progress is finished first).
pub fn spawn(
    app: Arc<App>,
    collectors: Vec<Scheduled>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    collectors
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let app = app.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    if *shutdown.borrow() {
                        break;
                    }
                    tracing::info!(
                        collector = s.collector.type_name(),
                        entry = i,
                        scope = %s.collector.scope(),
                        "collector run starting"
                    );
                    match app.collect(&s.collector).await {
                        Ok(run) => tracing::info!(
                            collector = s.collector.type_name(),
                            run_id = run.id,
                            status = run.status.as_str(),
                            resources = run.resources_seen,
                            relations = run.relations_seen,
                            error = run.error.as_deref().unwrap_or(""),
                            // What they say: `runs` (each run's warnings).
                            warnings = run.warnings.len(),
                            "collector run finished"
                        ),
                        Err(err) => tracing::error!(
                            collector = s.collector.type_name(),
                            error = format!("{err:#}"),
                            "collector run could not be recorded"
                        ),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(s.interval) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            })
        })
        .collect()
}
