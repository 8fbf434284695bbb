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
use crate::graph::{ImpactResult, Impacted, Selector, Snapshot};
use crate::model::LabelSelector;
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
    #[arg(
        long,
        global = true,
        env = "INFRAGRAPH_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Log filter, e.g. debug or infragraph=debug [default: info for serve and agent; for collect, progress and warnings; error otherwise]
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
    /// Run on a host: report its facts, listening services and connections
    /// to the server every interval.
    Agent {
        /// The infragraph server, e.g. http://infragraph.internal:8080
        #[arg(long)]
        server: String,
        /// File holding this host's agent token
        #[arg(long)]
        token_file: PathBuf,
        /// Time between reports (at least 5s)
        #[arg(long, default_value = "60s", value_parser = agent_interval)]
        interval: humantime::Duration,
        /// Report under this host name instead of the kernel's (containers,
        /// network namespaces)
        #[arg(long)]
        hostname: Option<String>,
        /// Send one report and exit (non-zero if it was refused)
        #[arg(long)]
        once: bool,
        /// PEM file of a CA to trust for an https:// server, besides the
        /// system's roots (a private CA in front of the server)
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
    },
    /// Run a collector once into the store.
    Collect {
        #[command(subcommand)]
        collector: CollectCommand,
    },
    /// What is impacted if these resources fail.
    #[command(group(clap::ArgGroup::new("failed").required(true).multiple(true).args(["ids", "where"])))]
    Impact {
        /// Resource ids
        ids: Vec<String>,
        /// Also fail every present resource matching a selector, e.g.
        /// `contained_in=zone:eu-central-1a` or `kind=host,rack=r12`
        #[arg(long = "where", value_name = "SELECTOR")]
        r#where: Option<String>,
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
        /// Only those that changed since then: RFC 3339 time, or a duration ago (2h, 30m, 1d)
        #[arg(long, value_name = "WHEN")]
        changed_since: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Single points of failure: resources whose failure alone takes down a critical one.
    Spofs {
        /// Which resources count as critical: label selectors, ANDed, comma-separated or repeated
        #[arg(long, default_value = "tier=1", value_delimiter = ',')]
        critical: Vec<String>,
        /// Only try resources matching this selector (see impact --where)
        #[arg(long, value_name = "SELECTOR")]
        scope: Option<String>,
        /// How many to list (no upper bound here; GraphQL pages by 1,000)
        #[arg(long, default_value_t = 100)]
        first: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// How two resources are connected: the shortest chain of relations.
    Path {
        /// From
        from: String,
        /// To
        to: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Dependency cycles: resources that need each other in a loop (through
    /// depends_on, runs_on, instances, targets...).
    Cycles {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Recent collection runs.
    Runs {
        /// How many
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        last: u32,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// What each source reports now and when it last did, the longest silent first.
    Sources {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Retire everything one source reports (a renamed or removed file, a
    /// region no longer collected): marked GONE with the time, history kept,
    /// what other sources report stays. Recorded as a run of that source.
    RetireSource {
        /// The source, as `infragraph sources` names it (e.g. inventory:old.yaml)
        source: String,
    },
    /// Draw a diagram: the network, the service dependencies, or the impact of a failure.
    Diagram {
        #[command(subcommand)]
        view: DiagramCommand,
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
        /// Output file: .json for JSON, YAML otherwise; YAML to standard output when absent
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Diagram views. Without -o the DOT text goes to standard output.
#[derive(Subcommand, Debug)]
pub enum DiagramCommand {
    /// Region → VPC → zone → subnet → hosts, gateways, load balancers and their targets.
    Network {
        /// Only what is contained (transitively) in this resource, e.g. vpc:prod or subnet:prod-a
        #[arg(long, value_name = "ID")]
        scope: Option<String>,
        /// Draw security-group reachability (allows_traffic_from) as dashed edges
        #[arg(long)]
        show_reachability: bool,
        #[command(flatten)]
        out: DiagramOut,
    },
    /// Services (instances folded in), datastores, load balancers, external endpoints.
    Dependencies {
        /// Centre on this resource
        #[arg(long, value_name = "ID")]
        around: Option<String>,
        /// Hops around --around [default: 2]
        #[arg(long, requires = "around")]
        hops: Option<u32>,
        /// Cluster by this label, e.g. team
        #[arg(long, value_name = "LABEL")]
        group_by: Option<String>,
        #[command(flatten)]
        out: DiagramOut,
    },
    /// The blast radius: failed resources, what goes DOWN and what is DEGRADED.
    Impact {
        /// Failed resource ids
        #[arg(required = true)]
        ids: Vec<String>,
        /// Only resources within this many relations of a failed one
        #[arg(long)]
        hops: Option<u32>,
        #[command(flatten)]
        out: DiagramOut,
    },
}

/// Where a diagram goes.
#[derive(clap::Args, Debug)]
pub struct DiagramOut {
    /// Output file: .svg or .png (rendered by Graphviz `dot`) or .dot; DOT to standard output when absent
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Largest number of nodes drawn; larger scopes are folded and capped
    #[arg(long, default_value_t = crate::diagram::DEFAULT_MAX_NODES)]
    max_nodes: usize,
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
    /// This machine, straight into the store (single-machine mode): its
    /// facts, listening services and connections, as an agent would report.
    Host {
        /// Report under this host name instead of the kernel's
        #[arg(long)]
        hostname: Option<String>,
        /// Print the report as JSON instead of recording it
        #[arg(long)]
        print: bool,
    },
    /// Discover an AWS estate through the EC2 API (one scope per account and
    /// region). Credentials come from the standard AWS chain. Needs a binary
    /// built with `--features aws`.
    #[command(name = "aws-ec2")]
    AwsEc2(AwsEc2Args),
}

/// `collect aws-ec2` flags.
#[derive(clap::Args, Debug)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub struct AwsEc2Args {
    /// Regions to collect (comma-separated); default: the credentials' region
    #[arg(long, value_delimiter = ',', conflicts_with = "all_regions")]
    regions: Vec<String>,
    /// Collect every region enabled for each account
    #[arg(long)]
    all_regions: bool,
    /// Named profile of the shared AWS config and credentials files
    #[arg(long)]
    profile: Option<String>,
    /// Role to assume, one per account (repeatable, or comma-separated)
    #[arg(long = "assume-role", value_name = "ARN", value_delimiter = ',', num_args = 1..)]
    assume_role: Vec<String>,
    /// External id for the assumed roles
    #[arg(long)]
    external_id: Option<String>,
    /// Endpoint for every call (URL), or for one region's EC2 calls
    /// (REGION=URL); repeatable
    #[arg(long = "endpoint-url", value_name = "[REGION=]URL")]
    endpoint_url: Vec<String>,
    /// Tag key naming an instance's service (repeatable; first match wins;
    /// default: Service, service, app)
    #[arg(long = "service-tag", value_name = "KEY")]
    service_tag: Vec<String>,
    /// Attempts per API call, with the SDK's standard backoff
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Instances per DescribeInstances page (5-1000)
    #[arg(long, default_value_t = 1000)]
    page_size: i32,
}

#[cfg(feature = "aws")]
fn aws_ec2_collector(args: &AwsEc2Args) -> anyhow::Result<ConfiguredCollector> {
    let mut cfg = collectors::aws_ec2::AwsEc2Config {
        regions: args.regions.clone(),
        all_regions: args.all_regions,
        profile: args.profile.clone(),
        roles: args.assume_role.clone(),
        external_id: args.external_id.clone(),
        max_attempts: args.max_attempts,
        page_size: args.page_size,
        ..Default::default()
    };
    if !args.service_tag.is_empty() {
        cfg.service_tags = args.service_tag.clone();
    }
    for e in &args.endpoint_url {
        match e.split_once('=') {
            Some((region, url)) if !region.contains('/') => {
                cfg.region_endpoint_urls
                    .insert(region.to_string(), url.to_string());
            }
            _ => {
                if let Some(prev) = &cfg.endpoint_url {
                    anyhow::bail!("--endpoint-url given twice without a region ({prev}, {e})");
                }
                cfg.endpoint_url = Some(e.clone());
            }
        }
    }
    cfg.validate()?;
    Ok(ConfiguredCollector::AwsEc2(cfg))
}

#[cfg(not(feature = "aws"))]
fn aws_ec2_collector(_args: &AwsEc2Args) -> anyhow::Result<ConfiguredCollector> {
    anyhow::bail!(crate::collector::NO_AWS)
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
                    // The inventory collector reads a file by its extension.
                    if p.extension().is_some_and(|e| e == "json") {
                        crate::generate::write_json(&estate, &mut w)?;
                    } else {
                        crate::generate::write_yaml(&estate, &mut w)?;
                    }
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
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Agent { .. } => "info",
        // Collectors show their progress (per region, per file); the SDKs
        // and drivers below them only what went wrong.
        // (The outcome, an error included, is printed below: the log lines
        // that say the same are left out.)
        Command::Collect { .. } => {
            "warn,aws_config=error,collectors=info,infragraph::collector=off,infragraph::run_failed=off"
        }
        _ => "error",
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
                    agent_tokens_file: None,
                    service_ports: Default::default(),
                    agent_stale_after: None,
                    agent_gone_after: None,
                    store_check_interval: None,
                    query_timeout: None,
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
                    Ok(t) if !t.trim().is_empty() => {
                        let t = t.trim().to_string();
                        if t.len() < 16 {
                            anyhow::bail!(
                                "INFRAGRAPH_TOKEN: the token must be at least 16 characters"
                            );
                        }
                        Some(t)
                    }
                    _ => None,
                },
            };
            serve(&url, listen, token, cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            server,
            token_file,
            interval,
            hostname,
            once,
            ca_file,
        } => {
            let token = read_token(&token_file)?;
            crate::agent::run(
                &server,
                &token,
                interval.into(),
                hostname.as_deref(),
                once,
                ca_file.as_deref(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Collect { collector } => {
            let collector = match collector {
                CollectCommand::Inventory { files } => {
                    let cfg = collectors::inventory::InventoryConfig { paths: files };
                    cfg.validate()?;
                    ConfiguredCollector::Inventory(cfg)
                }
                CollectCommand::AwsEc2(args) => aws_ec2_collector(&args)?,
                CollectCommand::Host { hostname, print } => {
                    let report = crate::agent::gather(hostname.as_deref()).await;
                    // The same checks a posted report gets (e.g. a process
                    // name that cannot become a service id).
                    collectors::host::validate(&report)
                        .map_err(|e| anyhow::anyhow!("this machine's report is invalid: {e}"))?;
                    for l in &report.limitations {
                        eprintln!("note: {l}");
                    }
                    if print {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                        return Ok(ExitCode::SUCCESS);
                    }
                    let store = open(cli.database_url).await?;
                    let app = App::new(store, None).await?;
                    let run = crate::agent::record(&app, &report).await?;
                    println!(
                        "run {}: {} — host {}: {} listeners, {} connections; {} created, {} updated, {} retired",
                        run.id,
                        run.status.as_str(),
                        report.host.hostname,
                        report.listeners.len(),
                        report.connections.len(),
                        run.created,
                        run.updated,
                        run.retired
                    );
                    return Ok(if run.status == RunStatus::Failed {
                        eprintln!("error: {}", run.error.as_deref().unwrap_or("failed"));
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    });
                }
            };
            let store = open(cli.database_url).await?;
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
                    // Notes that do not make the run partial (relation
                    // kinds with no impact rule, an agent's limits).
                    for w in &run.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Impact {
            ids,
            r#where,
            max_depth,
            json,
        } => {
            let snap = load_snapshot(cli.database_url).await?;
            let mut failed = resolve_failed(&snap, &ids)?;
            if let Some(w) = &r#where {
                let sel = Selector::parse(w).map_err(|e| anyhow::anyhow!("--where: {e}"))?;
                let chosen = snap
                    .select(&sel)
                    .map_err(|e| anyhow::anyhow!("--where: {e}"))?;
                if chosen.is_empty() {
                    anyhow::bail!("--where '{w}' matches no present resource");
                }
                if let Some(why) = snap.selects_everything(&sel, chosen.len()) {
                    anyhow::bail!("--where {why}");
                }
                failed.extend(chosen);
            }
            if failed.is_empty() {
                anyhow::bail!("name the resources that fail, or give --where");
            }
            failed.sort_unstable();
            failed.dedup();
            let result = snap.impact(&failed, max_depth);
            let mut out = std::io::stdout().lock();
            if json {
                let items = |v: &[Impacted]| {
                    v.iter()
                        .map(|i| impacted_json(&snap, &result, i))
                        .collect::<Vec<_>>()
                };
                let doc = json!({"down": items(&result.down), "degraded": items(&result.degraded)});
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                writeln!(out, "DOWN ({}):", result.down.len())?;
                for i in &result.down {
                    writeln!(out, "  {}", describe(&snap, &result, i))?;
                }
                writeln!(out, "DEGRADED ({}):", result.degraded.len())?;
                for i in &result.degraded {
                    writeln!(out, "  {}", describe(&snap, &result, i))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dependencies {
            id,
            max_depth,
            changed_since,
            json,
        } => {
            let store = open(cli.database_url).await?;
            let snap = snapshot_of(&store).await?;
            let ix = resolve_ids(&snap, std::slice::from_ref(&id))?[0];
            let mut out = std::io::stdout().lock();
            match changed_since {
                None => {
                    refuse_gone(
                        &snap,
                        ix,
                        "it has no present relations, so it needs nothing now (with --changed-since, the relations it lost in that window are listed)",
                    )?;
                    let deps = snap.dependencies(ix, max_depth);
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
                }
                Some(when) => {
                    let since = parse_when(&when)?;
                    let found =
                        crate::incident::changed_dependencies(&store, &snap, ix, max_depth, since)
                            .await?;
                    if json {
                        let doc: Vec<_> = found
                            .iter()
                            .map(|c| {
                                let r = snap.resource(c.dependency.node);
                                let changes: Vec<_> = c.changes.iter().map(change_json).collect();
                                json!({"id": r.id, "kind": r.kind, "depth": c.dependency.depth,
                                       "path": path_json(&snap, &c.dependency.path), "changes": changes})
                            })
                            .collect();
                        serde_json::to_writer_pretty(&mut out, &doc)?;
                        writeln!(out)?;
                    } else {
                        writeln!(
                            out,
                            "{id} needs, changed since {} ({}):",
                            fmt_ms(since),
                            found.len()
                        )?;
                        for c in &found {
                            let r = snap.resource(c.dependency.node);
                            writeln!(
                                out,
                                "  [{}] {} ({}) via {}",
                                c.dependency.depth,
                                r.id,
                                r.kind,
                                path_text(&snap, &c.dependency.path)
                            )?;
                            for ch in &c.changes {
                                writeln!(
                                    out,
                                    "      {} {} by {}{}",
                                    fmt_ms(ch.at),
                                    ch.op.as_str(),
                                    ch.source,
                                    change_detail(ch)
                                )?;
                            }
                        }
                    }
                }
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Spofs {
            critical,
            scope,
            first,
            json,
        } => {
            let snap = load_snapshot(cli.database_url).await?;
            let critical = critical
                .iter()
                .map(|c| LabelSelector::parse(c).map_err(|e| anyhow::anyhow!("--critical: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let scope = scope
                .as_deref()
                .map(|s| Selector::parse(s).map_err(|e| anyhow::anyhow!("--scope: {e}")))
                .transpose()?;
            let found = snap
                .spofs(scope.as_ref(), &critical)
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = found
                    .iter()
                    .take(first)
                    .map(|s| {
                        let r = snap.resource(s.node);
                        let down: Vec<&str> = s.critical_down.iter().map(|&c| snap.resource(c).id.as_str()).collect();
                        json!({"id": r.id, "kind": r.kind, "takes_down": down, "down_count": s.down_count})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{} single points of failure (critical: {}):",
                    found.len(),
                    critical
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
                for s in found.iter().take(first) {
                    let r = snap.resource(s.node);
                    let names: Vec<&str> = s
                        .critical_down
                        .iter()
                        .take(5)
                        .map(|&c| snap.resource(c).id.as_str())
                        .collect();
                    let more = s.critical_down.len().saturating_sub(names.len());
                    writeln!(
                        out,
                        "  {} ({}) takes down {} critical: {}{}",
                        r.id,
                        r.kind,
                        s.critical_down.len(),
                        names.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )?;
                }
            }
            if json && found.len() > first {
                eprintln!(
                    "listed {first} of {} single points of failure; --first {} lists all",
                    found.len(),
                    found.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Path { from, to, json } => {
            let snap = load_snapshot(cli.database_url).await?;
            let ix = resolve_ids(&snap, &[from.clone(), to.clone()])?;
            for &i in &ix {
                refuse_gone(
                    &snap,
                    i,
                    "it has no present relations, so it connects to nothing now",
                )?;
            }
            let mut out = std::io::stdout().lock();
            match snap.path(ix[0], ix[1]) {
                Some(p) if json => {
                    serde_json::to_writer_pretty(&mut out, &path_json(&snap, &p))?;
                    writeln!(out)?;
                }
                Some(p) => writeln!(
                    out,
                    "{}",
                    if p.is_empty() {
                        "(the same resource)".to_string()
                    } else {
                        path_text(&snap, &p)
                    }
                )?,
                None if json => writeln!(out, "null")?,
                None => writeln!(out, "{from} and {to} are not connected")?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cycles { json } => {
            let snap = load_snapshot(cli.database_url).await?;
            let cycles = snap.cycles();
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = cycles
                    .iter()
                    .map(|(members, cycle)| {
                        let ids: Vec<&str> = members
                            .iter()
                            .map(|&m| snap.resource(m).id.as_str())
                            .collect();
                        json!({"resources": ids, "cycle": path_json(&snap, cycle)})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{} dependency cycles (groups of resources that need each other in a loop):",
                    cycles.len()
                )?;
                for (members, cycle) in &cycles {
                    let ids: Vec<&str> = members
                        .iter()
                        .take(20)
                        .map(|&m| snap.resource(m).id.as_str())
                        .collect();
                    let more = members.len() - ids.len();
                    writeln!(
                        out,
                        "  {} resources: {}{}",
                        members.len(),
                        ids.join(", "),
                        if more > 0 {
                            format!(" and {more} more (--json lists all)")
                        } else {
                            String::new()
                        }
                    )?;
                    writeln!(out, "    one loop: {}", loop_text(&snap, members[0], cycle))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { last, json } => {
            let store = open(cli.database_url).await?;
            let runs = store.runs(last.into()).await?;
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        json!({"id": r.id, "collector": r.collector, "scope": r.scope, "status": r.status.as_str(),
                               // Milliseconds since 1970 (as first given), and RFC 3339.
                               "started_at": r.started_at, "finished_at": r.finished_at,
                               "started": rfc3339_ms(r.started_at), "finished": rfc3339_ms(r.finished_at),
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
                        "{:>5}  {}  {:<8} {:<10} {}  seen {}/{} created {} updated {} retired {}{}",
                        r.id,
                        when.format("%Y-%m-%d %H:%M:%S UTC"),
                        r.status.as_str(),
                        r.collector,
                        r.scope,
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
                    for w in &r.warnings {
                        writeln!(out, "       warning: {w}")?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sources { json } => {
            let store = open(cli.database_url).await?;
            let sources = store.sources().await?;
            let now = crate::model::now_ms();
            let mut out = std::io::stdout().lock();
            if json {
                let doc: Vec<_> = sources
                    .iter()
                    .map(|s| {
                        json!({"source": s.source, "resources": s.resources, "relations": s.relations,
                               "last_seen": rfc3339_ms(s.last_seen), "last_seen_ms": s.last_seen})
                    })
                    .collect();
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else if sources.is_empty() {
                writeln!(out, "no source reports anything (collect something first)")?;
            } else {
                writeln!(
                    out,
                    "{:<48} {:>9} {:>9}  LAST SEEN",
                    "SOURCE", "RESOURCES", "RELATIONS"
                )?;
                for s in &sources {
                    writeln!(
                        out,
                        "{:<48} {:>9} {:>9}  {} ({} ago)",
                        s.source,
                        s.resources,
                        s.relations,
                        fmt_ms(s.last_seen),
                        humantime::format_duration(std::time::Duration::from_secs(
                            ((now - s.last_seen).max(0) / 1000) as u64
                        ))
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RetireSource { source } => {
            let store = open(cli.database_url).await?;
            let input = store
                .retire_source_input(&source)
                .await?
                .map_err(anyhow::Error::msg)?;
            let run = store.apply(input).await?;
            if let Some(e) = &run.error {
                anyhow::bail!("retiring {source} failed: {e}");
            }
            println!(
                "{source}: retired what it reported (run {}): {} resources and relations went GONE; what other sources report stays",
                run.id, run.retired
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagram { view } => {
            use crate::diagram::{Format, Kind, Options};
            let (kind, opts, out) = match view {
                DiagramCommand::Network {
                    scope,
                    show_reachability,
                    out,
                } => (
                    Kind::Network,
                    Options {
                        scope,
                        show_reachability,
                        max_nodes: out.max_nodes,
                        ..Options::default()
                    },
                    out,
                ),
                DiagramCommand::Dependencies {
                    around,
                    hops,
                    group_by,
                    out,
                } => (
                    Kind::Dependencies,
                    Options {
                        around,
                        hops,
                        group_by,
                        max_nodes: out.max_nodes,
                        ..Options::default()
                    },
                    out,
                ),
                DiagramCommand::Impact { ids, hops, out } => (
                    Kind::Impact,
                    Options {
                        failed: ids,
                        hops,
                        max_nodes: out.max_nodes,
                        ..Options::default()
                    },
                    out,
                ),
            };
            let format = match &out.output {
                None => Format::Dot,
                Some(p) => p
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(Format::from_extension)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "-o {}: the file name must end in .svg, .png or .dot",
                            p.display()
                        )
                    })?,
            };
            let snap = load_snapshot(cli.database_url).await?;
            let diagram = crate::diagram::build(&snap, kind, &opts)?;
            let dot = diagram.dot();
            for n in &diagram.notes {
                eprintln!("note: {n}");
            }
            match &out.output {
                None => std::io::stdout().lock().write_all(dot.as_bytes())?,
                Some(p) => {
                    let bytes =
                        tokio::task::spawn_blocking(move || crate::diagram::render(&dot, format))
                            .await??;
                    std::fs::write(p, bytes)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    eprintln!("wrote {} ({} nodes)", p.display(), diagram.nodes);
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
    let snap = snapshot_of(&store).await?;
    store.close().await;
    Ok(snap)
}

async fn snapshot_of(store: &Store) -> anyhow::Result<Snapshot> {
    let (resources, relations) = store.load_all().await?;
    Ok(Snapshot::build(
        resources,
        relations,
        crate::model::now_ms(),
    ))
}

/// `2026-11-27T10:00:00Z`, or a duration ago: `2h`, `30m`, `1d`.
fn parse_when(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        anyhow::anyhow!("--changed-since '{s}': expected an RFC 3339 time or a duration such as 2h")
    })?;
    let ago = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    crate::model::now_ms()
        .checked_sub(ago)
        .filter(|t| *t >= 0)
        .ok_or_else(|| anyhow::anyhow!("--changed-since '{s}' reaches back before 1970"))
}

/// A time for people: UTC, and saying so (a terminal in another zone must
/// not read it as local time).
fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// A time for programs: RFC 3339 in UTC, as the GraphQL API gives it.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn change_json(c: &crate::model::Change) -> serde_json::Value {
    json!({"at": rfc3339_ms(c.at), "op": c.op.as_str(), "source": c.source, "resource_id": c.resource_id,
           "relation": c.relation.as_ref().map(|(to, kind)| json!({"to": to, "kind": kind})), "diff": c.diff})
}

fn change_detail(c: &crate::model::Change) -> String {
    let mut s = String::new();
    if let Some((to, kind)) = &c.relation {
        s.push_str(&format!(" (relation {} -[{kind}]-> {to})", c.resource_id));
    }
    if let Some(obj) = c.diff.as_object() {
        let fields: Vec<&str> = obj.keys().map(String::as_str).collect();
        s.push_str(&format!(" changed {}", fields.join(", ")));
    }
    s
}

fn resolve_ids(snap: &Snapshot, ids: &[String]) -> anyhow::Result<Vec<u32>> {
    let unknown = snap.unknown(ids.iter().map(String::as_str));
    if !unknown.is_empty() {
        anyhow::bail!("{}", crate::graph::unknown_ids(&unknown));
    }
    Ok(ids.iter().filter_map(|id| snap.lookup(id)).collect())
}

/// Like [`resolve_ids`], and refuses GONE resources: their failure impacts
/// nothing in the current graph, which must not read as "nothing breaks".
fn resolve_failed(snap: &Snapshot, ids: &[String]) -> anyhow::Result<Vec<u32>> {
    let ixs = resolve_ids(snap, ids)?;
    for &ix in &ixs {
        refuse_gone(snap, ix, "its failure impacts nothing in the current graph")?;
    }
    Ok(ixs)
}

/// An error for a GONE resource, saying since when and what that means for
/// the question (`consequence`); Ok for a present one.
fn refuse_gone(snap: &Snapshot, ix: u32, consequence: &str) -> anyhow::Result<()> {
    let r = snap.resource(ix);
    if r.status != crate::model::Status::Present {
        anyhow::bail!(
            "resource '{}' is GONE since {} (no source reports it); {consequence}",
            r.id,
            r.gone_at.map(fmt_ms).unwrap_or_default()
        );
    }
    Ok(())
}

fn path_json(snap: &Snapshot, path: &[u32]) -> Vec<serde_json::Value> {
    path.iter()
        .map(|&r| {
            let r = snap.relation(r);
            let sources: Vec<&str> = r.sources.iter().map(|p| p.source.as_str()).collect();
            json!({"from": r.from, "to": r.to, "kind": r.kind, "sources": sources})
        })
        .collect()
}

/// A loop as one chain from `start`, each relation's arrow as stored:
/// `svc:a <-[instance_of]- svc:a@1` where the loop goes from a service to
/// the instance it needs.
fn loop_text(snap: &Snapshot, start: u32, cycle: &[u32]) -> String {
    let mut at = snap.resource(start).id.as_str();
    let mut text = at.to_string();
    for &r in cycle {
        let r = snap.relation(r);
        if r.from == at {
            text.push_str(&format!(" -[{}]-> {}", r.kind, r.to));
            at = &r.to;
        } else {
            text.push_str(&format!(" <-[{}]- {}", r.kind, r.from));
            at = &r.from;
        }
    }
    text
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

fn impacted_json(snap: &Snapshot, result: &ImpactResult, i: &Impacted) -> serde_json::Value {
    let r = snap.resource(i.node);
    let path = result.path(snap, i);
    let status = match i.status {
        crate::graph::ImpactStatus::Down => "down",
        crate::graph::ImpactStatus::Degraded => "degraded",
    };
    let mut v = json!({"id": r.id, "kind": r.kind, "status": status, "depth": i.depth, "path": path_json(snap, &path)});
    if let Some((left, total)) = i.aggregate {
        v["remaining"] = json!(left);
        v["total"] = json!(total);
    }
    v
}

fn describe(snap: &Snapshot, result: &ImpactResult, i: &Impacted) -> String {
    let r = snap.resource(i.node);
    let path = result.path(snap, i);
    let mut s = format!("[{}] {} ({})", i.depth, r.id, r.kind);
    if let Some((left, total)) = i.aggregate {
        s.push_str(&format!(" [{left}/{total} up]"));
    }
    if path.is_empty() {
        s.push_str(" — failed");
    } else {
        s.push_str(" via ");
        s.push_str(&path_text(snap, &path));
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
    tracing::info!(database = %crate::store::describe(url), "store ready");
    let agents = crate::agent::AgentSettings {
        tokens: match &cfg.agent_tokens_file {
            Some(p) => crate::agent::AgentTokens::load(p)?,
            None => Default::default(),
        },
        rules: collectors::host::NamingRules {
            ports: cfg.service_ports.clone(),
        },
        stale_after: cfg
            .agent_stale_after
            .unwrap_or(crate::agent::DEFAULT_STALE_AFTER),
        gone_after: cfg
            .agent_gone_after
            .unwrap_or(crate::agent::DEFAULT_GONE_AFTER),
    };
    let app = App::with_agents(store, token, agents).await?;
    if let Some(t) = cfg.query_timeout {
        app.set_query_timeout(t);
    }
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
    let sweeper = crate::agent::spawn_sweeper(app.clone(), rx.clone());
    let watch = app.spawn_store_watch(
        cfg.store_check_interval.unwrap_or(DEFAULT_STORE_CHECK),
        rx.clone(),
    );
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
    let _ = sweeper.await;
    let _ = watch.await;
    Ok(())
}

/// How often `serve` checks the store for runs other processes committed.
pub const DEFAULT_STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

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

/// `agent --interval`: a duration of at least 5 seconds (each report is a
/// run in the store; a fleet reporting every second would flood it).
fn agent_interval(v: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = v.parse().map_err(|e| format!("{e}"))?;
    if *d < std::time::Duration::from_secs(5) {
        return Err(format!("{v} is shorter than the 5s minimum"));
    }
    Ok(d)
}
