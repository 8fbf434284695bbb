//! The command line: `serve`, `collect`, `impact`, `dependencies`, `runs`,
//! `schema`. Every command that touches the store takes `--database-url`
//! (or `INFRAGRAPH_DATABASE_URL`); the default is `sqlite://infragraph.db`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::App;
use crate::collector::ConfiguredCollector;
use crate::config::{Config, read_token};
use crate::graph::{Impacted, Snapshot};
use crate::model::RunStatus;
use crate::store::Store;

/// The default store: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://infragraph.db";
/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// infragraph: what you run, how it hangs together, and what breaks if this breaks.
#[derive(Parser, Debug)]
#[command(name = "infragraph", version, about)]
pub struct Cli {
    /// Store URL: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://infragraph.db]
    #[arg(long, global = true, env = "INFRAGRAPH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log filter, e.g. debug or infragraph=debug [default: info for serve, warn otherwise]
    #[arg(long, global = true, env = "INFRAGRAPH_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the GraphQL server (and the collectors of --config on their intervals).
    Serve {
        /// TOML config: database_url, listen, token_file, [[collectors]]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// File with the bearer token that authorizes mutations
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Run a collector once into the store.
    Collect {
        #[command(subcommand)]
        collector: CollectCommand,
    },
    /// What is impacted if these resources fail.
    Impact {
        /// Resource ids
        #[arg(required = true)]
        ids: Vec<String>,
        /// Only resources within this many relations
        #[arg(long)]
        max_depth: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// What a resource needs, transitively (root-cause candidates).
    Dependencies {
        /// Resource id
        id: String,
        /// Only dependencies within this many relations
        #[arg(long)]
        max_depth: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Recent collection runs.
    Runs {
        /// How many
        #[arg(long, default_value_t = 20)]
        last: i64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Generate a realistic estate as an inventory file (deterministic).
    Generate {
        /// small ≈ 1k resources, medium ≈ 100k, large ≈ 1M
        #[arg(long, value_enum, default_value = "small")]
        size: crate::generate::Size,
        /// Random seed: the same size and seed give the same estate
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file (.yaml); standard output when absent
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Collectors runnable from the command line.
#[derive(Subcommand, Debug)]
pub enum CollectCommand {
    /// Load inventory files (YAML or JSON, by extension).
    Inventory {
        /// Files to load; each is one source, `inventory:FILE`
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Schema => {
            print!("{}", crate::api::sdl());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Generate { size, seed, output } => {
            let estate = crate::generate::generate(*size, *seed);
            eprintln!(
                "generated {} resources and {} relations",
                estate.resources.len(),
                estate.relations.len()
            );
            match output {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    crate::generate::write_yaml(&estate, &mut w)?;
                    w.flush()?;
                }
                None => crate::generate::write_yaml(
                    &estate,
                    std::io::BufWriter::new(std::io::stdout().lock()),
                )?,
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log.as_deref().unwrap_or(default_level));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dispatch(cli))
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            token_file,
        } => {
            let cfg = match &config {
                Some(p) => Config::load(p)?,
                None => Config {
                    database_url: None,
                    listen: None,
                    token_file: None,
                    collectors: Vec::new(),
                },
            };
            let url = cli
                .database_url
                .or(cfg.database_url.clone())
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
            let listen = listen
                .or(cfg.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
            let token = match token_file.or(cfg.token_file.clone()) {
                Some(p) => Some(read_token(&p)?),
                None => match std::env::var("INFRAGRAPH_TOKEN") {
                    Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                    _ => None,
                },
            };
            serve(&url, listen, token, cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Collect { collector } => {
            let store = open(cli.database_url).await?;
            let collector = match collector {
                CollectCommand::Inventory { files } => {
                    let cfg = collectors::inventory::InventoryConfig { paths: files };
                    cfg.validate()?;
                    ConfiguredCollector::Inventory(cfg)
                }
            };
            let run = collector.run(&store).await?;
            store.close().await;
            let summary = format!(
                "run {}: {} — {} resources, {} relations seen; {} created, {} updated, {} retired",
                run.id,
                run.status.as_str(),
                run.resources_seen,
                run.relations_seen,
                run.created,
                run.updated,
                run.retired
            );
            match run.status {
                RunStatus::Failed => {
                    eprintln!(
                        "error: {}",
                        run.error.as_deref().unwrap_or("collection failed")
                    );
                    eprintln!("{summary}; nothing was written");
                    Ok(ExitCode::FAILURE)
                }
                RunStatus::Partial => {
                    for w in &run.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{summary}");
                    Ok(ExitCode::from(2))
                }
                RunStatus::Ok => {
                    println!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Impact {
            ids,
            max_depth,
            json,
        } => {
            let snap = load_snapshot(cli.database_url).await?;
            let failed = resolve_ids(&snap, &ids)?;
            let result = snap.impact(&failed, max_depth);
            let mut out = std::io::stdout().lock();
            if json {
                let items = |v: &[Impacted]| {
                    v.iter()
                        .map(|i| impacted_json(&snap, i))
                        .collect::<Vec<_>>()
                };
                let doc = json!({"down": items(&result.down), "degraded": items(&result.degraded)});
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                writeln!(out, "DOWN ({}):", result.down.len())?;
                for i in &result.down {
                    writeln!(out, "  {}", describe(&snap, i))?;
                }
                writeln!(out, "DEGRADED ({}):", result.degraded.len())?;
                for i in &result.degraded {
                    writeln!(out, "  {}", describe(&snap, i))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dependencies {
            id,
            max_depth,
            json,
        } => {
            let snap = load_snapshot(cli.database_url).await?;
            let ix = resolve_ids(&snap, std::slice::from_ref(&id))?[0];
            let deps = snap.dependencies(ix, max_depth);
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = deps
                    .iter()
                    .map(|d| {
                        let r = snap.resource(d.node);
                        json!({"id": r.id, "kind": r.kind, "depth": d.depth, "path": path_json(&snap, &d.path)})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{id} needs ({}):", deps.len())?;
                for d in &deps {
                    let r = snap.resource(d.node);
                    writeln!(
                        out,
                        "  [{}] {} ({}) via {}",
                        d.depth,
                        r.id,
                        r.kind,
                        path_text(&snap, &d.path)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { last, json } => {
            let store = open(cli.database_url).await?;
            let runs = store.runs(last).await?;
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        json!({"id": r.id, "collector": r.collector, "scope": r.scope, "status": r.status.as_str(),
                               "started_at": r.started_at, "finished_at": r.finished_at,
                               "resources_seen": r.resources_seen, "relations_seen": r.relations_seen,
                               "created": r.created, "updated": r.updated, "retired": r.retired,
                               "error": r.error, "warnings": r.warnings})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                for r in &runs {
                    let when =
                        chrono::DateTime::from_timestamp_millis(r.started_at).unwrap_or_default();
                    writeln!(
                        out,
                        "{:>5}  {}  {:<8} {:<10} {:<7} seen {}/{} created {} updated {} retired {}{}",
                        r.id,
                        when.format("%Y-%m-%d %H:%M:%S"),
                        r.status.as_str(),
                        r.collector,
                        "",
                        r.resources_seen,
                        r.relations_seen,
                        r.created,
                        r.updated,
                        r.retired,
                        r.error
                            .as_deref()
                            .map(|e| format!("  error: {e}"))
                            .unwrap_or_default()
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema | Command::Generate { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn open(url: Option<String>) -> anyhow::Result<Store> {
    let url = url.unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    Store::connect(&url).await
}

async fn load_snapshot(url: Option<String>) -> anyhow::Result<Snapshot> {
    let store = open(url).await?;
    let (resources, relations) = store.load_all().await?;
    store.close().await;
    Ok(Snapshot::build(
        resources,
        relations,
        crate::model::now_ms(),
    ))
}

fn resolve_ids(snap: &Snapshot, ids: &[String]) -> anyhow::Result<Vec<u32>> {
    let unknown: Vec<&str> = ids
        .iter()
        .filter(|id| snap.lookup(id).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "unknown resource id{} {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ids.iter().filter_map(|id| snap.lookup(id)).collect())
}

fn path_json(snap: &Snapshot, path: &[u32]) -> Vec<serde_json::Value> {
    path.iter()
        .map(|&r| {
            let r = snap.relation(r);
            json!({"from": r.from, "to": r.to, "kind": r.kind})
        })
        .collect()
}

fn path_text(snap: &Snapshot, path: &[u32]) -> String {
    path.iter()
        .map(|&r| {
            let r = snap.relation(r);
            format!("{} -[{}]-> {}", r.from, r.kind, r.to)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn impacted_json(snap: &Snapshot, i: &Impacted) -> serde_json::Value {
    let r = snap.resource(i.node);
    let mut v =
        json!({"id": r.id, "kind": r.kind, "depth": i.depth, "path": path_json(snap, &i.path)});
    if let Some((left, total)) = i.aggregate {
        v["remaining"] = json!(left);
        v["total"] = json!(total);
    }
    v
}

fn describe(snap: &Snapshot, i: &Impacted) -> String {
    let r = snap.resource(i.node);
    let mut s = format!("[{}] {} ({})", i.depth, r.id, r.kind);
    if let Some((left, total)) = i.aggregate {
        s.push_str(&format!(" [{left}/{total} up]"));
    }
    if i.path.is_empty() {
        s.push_str(" — failed");
    } else {
        s.push_str(" via ");
        s.push_str(&path_text(snap, &i.path));
    }
    s
}

/// Runs the server until Ctrl-C / SIGTERM.
pub async fn serve(
    url: &str,
    listen: SocketAddr,
    token: Option<String>,
    cfg: Config,
) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    tracing::info!(database = %crate::store::redact(url), "store ready");
    let app = App::new(store, token).await?;
    if app.token.is_none() {
        tracing::warn!(
            "no token configured (--token-file or INFRAGRAPH_TOKEN): mutations are disabled"
        );
    }
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback: put TLS and a firewall in front");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tasks = crate::scheduler::spawn(app.clone(), cfg.collectors, rx);
    tracing::info!(
        address = %listener.local_addr()?,
        "serving GraphQL at http://{}/graphql",
        listener.local_addr()?
    );
    serve_on(listener, app, async move {
        shutdown_signal().await;
    })
    .await?;
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Serves the API on a bound listener until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, crate::api::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
