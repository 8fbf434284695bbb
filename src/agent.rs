//! Host agents: the agent loop (`infragraph agent`), the local collection
//! (`infragraph collect host`), and the server's ingest of reports
//! (`POST /api/v1/agents/report`).
//!
//! A report becomes one run of collector `agent` with one complete scope,
//! the host name: it replaces that host's previous observation atomically
//! (what the host no longer reports is retired, with history).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use collectors::host::{self, HostReport, Interface, ListenerIndex, NamingRules};
use collectors::{Collection, ScopeBatch};

use crate::app::App;
use crate::graph::Snapshot;
use crate::model::{Run, now_ms};
use crate::store::{RunInput, SilentSince, Superseded};

/// The collector name agent reports are recorded under.
pub const COLLECTOR: &str = "agent";

/// Agent tokens: each may report for one host name only.
#[derive(Debug, Clone, Default)]
pub struct AgentTokens {
    entries: Vec<(String, String)>,
}

impl AgentTokens {
    /// Parses a tokens file: one `HOSTNAME TOKEN` per line, `#` comments.
    /// Errors name the file and line (never the token).
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<AgentTokens> {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(host), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                anyhow::bail!("{}:{}: expected `HOSTNAME TOKEN`", path.display(), n + 1);
            };
            if token.len() < 16 {
                anyhow::bail!(
                    "{}:{}: the token for {host} is shorter than 16 characters",
                    path.display(),
                    n + 1
                );
            }
            // One token for two hosts would let one host's agent report
            // as the other, and the other's be refused: never the token
            // in the error, only where it is.
            if let Some((line, other)) = lines
                .iter()
                .zip(&entries)
                .find(|(_, (h, t))| h != host && t == token)
                .map(|(l, (h, _))| (*l, h))
            {
                anyhow::bail!(
                    "{}:{}: the token for {host} is also the token for {other} (line {line}): each host needs its own",
                    path.display(),
                    n + 1
                );
            }
            entries.push((host.to_string(), token.to_string()));
            lines.push(n + 1);
        }
        Ok(AgentTokens { entries })
    }

    /// Loads a tokens file.
    pub fn load(path: &Path) -> anyhow::Result<AgentTokens> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read agent tokens file {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// The host a token may report for.
    pub fn host_for(&self, token: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, t)| crate::api::constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(h, _)| h.as_str())
    }
}

/// What the server needs for agents.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Per-host tokens (the `agent` role).
    pub tokens: AgentTokens,
    /// How services are named.
    pub rules: NamingRules,
    /// A host silent for longer is STALE (shown, nothing changes).
    pub stale_after: Duration,
    /// A host silent for longer is GONE: what its agent reported is retired.
    pub gone_after: Duration,
}

/// Default [`AgentSettings::stale_after`]: five missed one-minute reports.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Default [`AgentSettings::gone_after`].
pub const DEFAULT_GONE_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            tokens: AgentTokens::default(),
            rules: NamingRules::default(),
            stale_after: DEFAULT_STALE_AFTER,
            gone_after: DEFAULT_GONE_AFTER,
        }
    }
}

/// Freshness of a host's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Reported within `stale_after`.
    Fresh,
    /// Silent for longer than `stale_after`.
    Stale,
    /// Silent for longer than `gone_after`: its observations are retired.
    Gone,
}

/// One host an agent reports (or reported) for.
#[derive(Debug, Clone)]
pub struct AgentHost {
    /// Host name (the source's scope).
    pub hostname: String,
    /// Index of the host resource in the snapshot.
    pub resource: crate::graph::Ix,
    /// Its agent's latest report.
    pub last_report: crate::model::Millis,
    /// Fresh, stale or gone.
    pub freshness: Freshness,
}

fn provenance_freshness(
    p: &crate::model::Provenance,
    settings: &AgentSettings,
    now: crate::model::Millis,
) -> Freshness {
    let silent = (now - p.last_seen).max(0) as u128;
    if p.status != crate::model::Status::Present {
        Freshness::Gone
    } else if silent > settings.stale_after.as_millis() {
        Freshness::Stale
    } else {
        Freshness::Fresh
    }
}

/// How fresh the agents' word on a resource is: FRESH while any agent
/// that reports it reported within `stale_after`, STALE when every such
/// agent has been silent longer, GONE when they all retired it; `None` for
/// resources no agent reports.
pub fn freshness(
    r: &crate::model::Resource,
    settings: &AgentSettings,
    now: crate::model::Millis,
) -> Option<Freshness> {
    r.sources
        .iter()
        .filter(|p| p.source.starts_with("agent:"))
        .map(|p| provenance_freshness(p, settings, now))
        .min_by_key(|f| match f {
            Freshness::Fresh => 0,
            Freshness::Stale => 1,
            Freshness::Gone => 2,
        })
}

/// Hosts with agents, from the snapshot's provenance, by host name.
pub fn hosts(
    snap: &Snapshot,
    settings: &AgentSettings,
    now: crate::model::Millis,
) -> Vec<AgentHost> {
    let mut out = Vec::new();
    for (ix, r) in snap.resources.iter().enumerate() {
        if r.kind != "host" {
            continue;
        }
        for p in &r.sources {
            let Some(hostname) = p.source.strip_prefix("agent:") else {
                continue;
            };
            let freshness = provenance_freshness(p, settings, now);
            out.push(AgentHost {
                hostname: hostname.to_string(),
                resource: ix as crate::graph::Ix,
                last_report: p.last_seen,
                freshness,
            });
        }
    }
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    out
}

/// Retires what agents of hosts silent for longer than `gone_after`
/// reported (one run per host, recorded like any other: nothing is
/// deleted, history stays). Returns the host names it retired.
pub async fn sweep(app: &App) -> anyhow::Result<Vec<String>> {
    let now = now_ms();
    let silent: Vec<String> = hosts(&app.snapshot(), &app.agents, now)
        .into_iter()
        .filter(|h| {
            h.freshness != Freshness::Gone
                && (now - h.last_report).max(0) as u128 > app.agents.gone_after.as_millis()
        })
        .map(|h| h.hostname)
        .collect();
    let before = now - app.agents.gone_after.as_millis() as i64;
    let mut retired = Vec::new();
    for host in silent {
        tracing::warn!(host = %host, gone_after = ?app.agents.gone_after, "agent silent: marking what it reported gone");
        // The decision above came from the snapshot; a report that landed
        // since (on this replica or another) wins: checked in the run's
        // transaction.
        let guard = SilentSince {
            source: crate::store::source_name(COLLECTOR, &host),
            before,
        };
        let input = RunInput {
            collector: COLLECTOR.into(),
            scope: host.clone(),
            started_at: now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![ScopeBatch {
                    scope: host.clone(),
                    complete: true,
                    ..Default::default()
                }],
                warnings: Vec::new(),
            }),
            retract: Vec::new(),
            additive: false,
        };
        match app.apply_unless_seen(input, guard).await {
            Ok(_) => retired.push(host),
            Err(e) if e.downcast_ref::<Superseded>().is_some() => {
                tracing::info!(host = %host, "agent reported again meanwhile: nothing retired");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(retired)
}

/// Runs [`sweep`] every half `stale_after` (at most every minute) until
/// `stop` turns true.
pub fn spawn_sweeper(
    app: std::sync::Arc<App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = (app.agents.stale_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = sweep(&app).await {
                tracing::warn!(error = %format!("{e:#}"), "agent sweep failed");
            }
        }
    })
}

/// Who is posting a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporter {
    /// The server's write token: may report for any host.
    Admin,
    /// An agent token bound to this host name.
    Agent(String),
}

/// Why a report was refused, with the HTTP status to answer.
#[derive(Debug)]
pub struct Refused {
    /// 400, 401, 403, 413, 500.
    pub status: u16,
    /// What was wrong (never a token).
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// What reports are matched against, from the graph: the listening
/// endpoints agents published, which host has which address, and the EC2
/// instances by the names an agent could report for them. Built once per
/// snapshot and shared by every report matched against it.
#[derive(Debug, Default)]
pub struct AgentIndex {
    /// Listeners and address owners.
    pub listeners: ListenerIndex,
    /// Present EC2 instances (`provider: aws` hosts) by private DNS name,
    /// its first label, and `Name` tag.
    ec2_by_name: std::collections::HashMap<String, Vec<crate::graph::Ix>>,
}

/// The [`AgentIndex`] of a snapshot (cached).
pub fn agent_index(app: &App, snap: &Arc<Snapshot>) -> Arc<AgentIndex> {
    let mut cache = app.listener_cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((s, index)) = cache.as_ref()
        && Arc::ptr_eq(s, snap)
    {
        return Arc::clone(index);
    }
    let mut index = AgentIndex::default();
    for (ix, r) in snap.resources.iter().enumerate() {
        if r.status != crate::model::Status::Present {
            continue;
        }
        let attr = |k: &str| r.attributes.get(k).and_then(|v| v.as_str());
        match r.kind.as_str() {
            // An agent's services, under the kind an inventory gave them.
            "service" | "service_instance" => {
                let Some(host) = attr("host") else {
                    continue;
                };
                for ep in host::endpoints_of(&r.attributes) {
                    index.listeners.insert(ep, host, r.id.clone());
                }
            }
            "host" => {
                // Owners are named as services name their host: by the
                // hostname of each agent reporting it, else by id.
                let mut owners: Vec<&str> = r
                    .sources
                    .iter()
                    .filter(|p| p.status == crate::model::Status::Present)
                    .filter_map(|p| p.source.strip_prefix("agent:"))
                    .collect();
                if owners.is_empty() {
                    owners.push(&r.id);
                }
                let mut addrs: Vec<IpAddr> = attr("private_ip")
                    .and_then(|a| a.parse().ok())
                    .into_iter()
                    .collect();
                if let Some(list) = r.attributes.get("interfaces").and_then(|i| i.as_array()) {
                    for i in list {
                        let a = i.get("addresses").and_then(|a| a.as_array());
                        addrs.extend(
                            a.into_iter()
                                .flatten()
                                .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok()),
                        );
                    }
                }
                for a in addrs {
                    let a = a.to_canonical();
                    if !a.is_loopback() && !a.is_unspecified() {
                        for o in &owners {
                            index.listeners.claim(a, o);
                        }
                    }
                }
                if attr("provider") == Some("aws") {
                    let mut names: Vec<&str> = Vec::new();
                    if let Some(d) = attr("private_dns") {
                        names.push(d);
                        if let Some((first, _)) = d.split_once('.') {
                            names.push(first);
                        }
                    }
                    if let Some(n) = r.labels.get("Name") {
                        names.push(n);
                    }
                    names.sort_unstable();
                    names.dedup();
                    for n in names {
                        index
                            .ec2_by_name
                            .entry(n.to_string())
                            .or_default()
                            .push(ix as crate::graph::Ix);
                    }
                }
            }
            _ => {}
        }
    }
    let index = Arc::new(index);
    *cache = Some((Arc::clone(snap), Arc::clone(&index)));
    index
}

/// Validates and records one report. Nothing is written unless it is
/// accepted.
///
/// The answer comes once the report is committed; the graph includes it
/// after the next background refresh (see [`App::apply_deferred`]).
pub async fn ingest(app: &Arc<App>, who: Reporter, body: &[u8]) -> Result<Run, Refused> {
    let report: HostReport =
        serde_json::from_slice(body).map_err(|e| refused(400, format!("malformed report: {e}")))?;
    host::validate(&report).map_err(|e| refused(400, format!("invalid report: {e}")))?;
    if let Reporter::Agent(h) = &who
        && *h != report.host.hostname
    {
        return Err(refused(
            403,
            format!(
                "this agent token may report only for host '{h}', not '{}'",
                report.host.hostname
            ),
        ));
    }
    let mut report = report;
    host::canonicalize(&mut report);
    // An agent token alone cannot vouch for an EC2 identity (the document
    // is not verified). A report with an agent token is joined to the
    // instance the EC2 collector vouches for (see `ec2_vouched`), with or
    // without a claim; a claim of another instance is dropped (the report is
    // recorded as `host:HOSTNAME`), never refused: an agent on EC2 always
    // sends its identity.
    let join = who == Reporter::Admin;
    let snap = app.snapshot();
    if !join {
        let index = agent_index(app, &snap);
        let vouched = ec2_vouched(&snap, &index, &report.host)
            .and_then(|ix| ec2_identity_of(snap.resource(ix)));
        match (&report.host.ec2, vouched) {
            (Some(claim), Some(id)) if claim.instance_id == id.instance_id => {
                report.host.ec2 = Some(id);
            }
            (None, Some(id)) => report.host.ec2 = Some(id),
            (Some(claim), _) => {
                // Every report of such a host says so: debug, not info.
                tracing::debug!(
                    host = %report.host.hostname,
                    instance = %claim.instance_id,
                    "EC2 identity from an agent token not joined: the EC2 collector does not vouch for it (one instance known by this hostname, with one of the report's addresses, no other host's agent on it)"
                );
                report.host.ec2 = None;
            }
            (None, None) => {}
        }
    }
    let mut input = run_input(app, &report, join);
    // Reports are ordered by the agent's clock when it agrees with ours
    // (within MAX_SKEW): a report not newer than the last recorded one is
    // refused. A skewed clock is not trusted for ordering (it could lock
    // the host out), and the run starts at the server's time.
    let mut guard = None;
    if let Some(sent) = report.sent_at {
        if (sent - input.started_at).abs() <= MAX_SKEW_MS {
            // The run starts when the agent gathered the report, by its
            // clock (so up to MAX_SKEW_MS after the server's end time):
            // clamping it would let a replay of a report from a clock
            // slightly ahead pass as newer.
            input.started_at = sent;
            guard = Some(crate::store::Guard::InOrder);
        } else {
            tracing::warn!(
                host = %report.host.hostname,
                skew_s = (sent - input.started_at) / 1000,
                "the agent's clock differs from the server's: its reports are not ordered"
            );
        }
    }
    app.apply_deferred(input, guard).await.map_err(|e| {
        if e.downcast_ref::<crate::store::OutOfOrder>().is_some() {
            refused(409, format!("{e:#}"))
        } else {
            refused(500, format!("{e:#}"))
        }
    })
}

/// How far an agent's clock may be from the server's for its `sent_at` to
/// order its reports.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// The EC2 instance the EC2 collector vouches is the reporting host:
/// exactly one present `provider: aws` host is known by the report's
/// hostname (its private DNS name, that name's first label, or its `Name`
/// tag), its private IP is one of the report's addresses, and no other
/// host's agent reports it.
pub fn ec2_vouched(
    snap: &Snapshot,
    index: &AgentIndex,
    facts: &host::HostFacts,
) -> Option<crate::graph::Ix> {
    let &[ix] = index.ec2_by_name.get(&facts.hostname)?.as_slice() else {
        return None;
    };
    let r = snap.resource(ix);
    let own_source = crate::store::source_name(COLLECTOR, &facts.hostname);
    let ok = r.kind == "host"
        && r.status == crate::model::Status::Present
        && r.attributes
            .get("private_ip")
            .and_then(|v| v.as_str())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .is_some_and(|ip| {
                facts
                    .interfaces
                    .iter()
                    .flat_map(|i| i.addresses.iter())
                    .any(|a| *a == ip)
            })
        && !r.sources.iter().any(|p| {
            p.status == crate::model::Status::Present
                && p.source.starts_with("agent:")
                && p.source != own_source
        });
    ok.then_some(ix)
}

/// When a report has no EC2 identity (the metadata service was not
/// reachable), finds the EC2 instance the EC2 collector reported with one of
/// the report's private addresses: exactly one present `provider: aws` host
/// with that `private_ip` (several, in different VPCs, is ambiguous: no join).
pub fn ec2_by_private_ip(snap: &Snapshot, report: &HostReport) -> Option<host::Ec2Identity> {
    let addrs: Vec<String> = report
        .host
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter())
        .filter(|a| !a.is_loopback())
        .map(|a| a.to_string())
        .collect();
    let mut found: Vec<&crate::model::Resource> = snap
        .resources
        .iter()
        .filter(|r| {
            r.kind == "host"
                && r.status == crate::model::Status::Present
                && r.attributes.get("provider").and_then(|p| p.as_str()) == Some("aws")
                && r.attributes
                    .get("private_ip")
                    .and_then(|p| p.as_str())
                    .is_some_and(|ip| addrs.iter().any(|a| a == ip))
        })
        .collect();
    if found.len() != 1 {
        if found.len() > 1 {
            tracing::info!(host = %report.host.hostname, candidates = found.len(), "private IP matches several EC2 instances: not joined");
        }
        return None;
    }
    ec2_identity_of(found.pop()?)
}

/// The instance identity of a host the EC2 collector reported.
fn ec2_identity_of(r: &crate::model::Resource) -> Option<host::Ec2Identity> {
    let s = |k: &str| {
        r.attributes
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Some(host::Ec2Identity {
        instance_id: s("instance_id")?,
        region: s("region")?,
        account_id: s("account")?,
        availability_zone: s("availability_zone"),
        private_ip: s("private_ip"),
    })
}

/// Turns a report into a run and records it, joining it to an EC2
/// instance when it can (trusted callers: `collect host`, the write token).
pub async fn record(app: &App, report: &HostReport) -> anyhow::Result<Run> {
    record_with(app, report, true).await
}

/// [`record`], with the EC2 join by private address allowed or not.
pub async fn record_with(app: &App, report: &HostReport, join: bool) -> anyhow::Result<Run> {
    app.apply(run_input(app, report, join)).await
}

/// The run a report becomes, matched against the current snapshot (the
/// EC2 join by private address only when `join`).
pub fn run_input(app: &App, report: &HostReport, join: bool) -> RunInput {
    let started_at = now_ms();
    let snap = app.snapshot();
    let index = agent_index(app, &snap);
    let joined;
    let report = if join
        && report.host.ec2.is_none()
        && let Some(ec2) = ec2_by_private_ip(&snap, report)
    {
        let mut r = report.clone();
        r.host.ec2 = Some(ec2);
        joined = r;
        &joined
    } else {
        report
    };
    let mut batch: ScopeBatch = host::observations(report, &index.listeners, &app.agents.rules);
    // The kernel's boot time moves by a second or so when the clock is
    // stepped (NTP). The same boot (the same boot id; without one, a boot
    // time within a minute of the stored one) keeps the stored value, so it
    // logs no update.
    let host_id = host::host_id(&report.host);
    if let Some(r) = batch.resources.iter_mut().find(|r| r.id == host_id)
        && let Some(new) = r.attributes.get("boot_time").and_then(|b| b.as_i64())
        && let Some(stored) = snap
            .lookup(&host_id)
            .map(|ix| &snap.resource(ix).attributes)
        && let Some(old) = stored.get("boot_time").and_then(|b| b.as_i64())
    {
        let same_boot = match (
            r.attributes.get("boot_id").and_then(|b| b.as_str()),
            stored.get("boot_id").and_then(|b| b.as_str()),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => (new - old).abs() <= 60,
        };
        if same_boot {
            r.attributes["boot_time"] = old.into();
        }
    }
    // An inventory may already call `svc:NAME@HOST` something else (a
    // service_instance, as the demo does): the agent's observation takes
    // that kind instead of being dropped as a conflicting guess, so the
    // agent is one of its sources and its endpoints are kept, and other
    // hosts' connections to them find it. It stays a placeholder: the
    // agent still only guesses what the thing is.
    for r in &mut batch.resources {
        if !(r.placeholder && r.kind == "service") {
            continue;
        }
        if let Some(ix) = snap.lookup(&r.id) {
            let stored = snap.resource(ix);
            if stored.status == crate::model::Status::Present && stored.kind != r.kind {
                // Still a guess (the declared kind, taken): a declaration
                // that changes the kind later must not find the agent
                // reporting the old one for real.
                r.kind = stored.kind.clone();
            }
        }
    }
    // An agent's `svc:NAME@HOST` is an instance of the declared `svc:NAME`
    // when there is one: redundancy and drift then work at service level.
    let mut links = Vec::new();
    for r in &batch.resources {
        let Some(name) = r.name.as_deref() else {
            continue;
        };
        if r.kind != "service" {
            continue;
        }
        let declared = format!("svc:{name}");
        let known = snap
            .lookup(&declared)
            .map(|ix| snap.resource(ix))
            .is_some_and(|d| d.status == crate::model::Status::Present && d.kind == "service");
        if known && declared != r.id {
            links.push(collectors::ObservedRelation {
                from: r.id.clone(),
                to: declared,
                kind: collectors::kinds::INSTANCE_OF.into(),
                attributes: serde_json::json!({"evidence": "observed", "matched": "name"}),
                origin: None,
            });
        }
    }
    batch.relations.extend(links);
    RunInput {
        collector: COLLECTOR.into(),
        scope: report.host.hostname.clone(),
        started_at,
        // A report replaces the host's previous one, limitations or not.
        // An agent that cannot inspect other users' processes still sees
        // every socket (/proc/net lists them all): it names their services
        // by port (`port-5432`) or `unknown`, the same way every time, so
        // what is absent from its report is gone. Its limitations are
        // noted on the run, which stays complete (it was partial, and a
        // non-root agent never retired a connection that ended).
        outcome: Ok(Collection {
            notes: report.limitations.clone(),
            batches: vec![batch],
            warnings: Vec::new(),
        }),
        retract: Vec::new(),
        additive: false,
    }
}

/// This machine's interfaces: addresses from the kernel, MACs from /sys.
pub fn interfaces() -> Vec<Interface> {
    let mut by_name: std::collections::BTreeMap<String, Vec<IpAddr>> = Default::default();
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            for i in list {
                by_name.entry(i.name.clone()).or_default().push(i.ip());
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list network interfaces"),
    }
    by_name
        .into_iter()
        .map(|(name, addresses)| Interface {
            mac: std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
                .ok()
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty() && m != "00:00:00:00:00:00"),
            name,
            addresses,
        })
        .collect()
}

/// The EC2 instance identity from the instance metadata service (IMDSv2),
/// with a short timeout; `None` off EC2. `INFRAGRAPH_IMDS_ENDPOINT`
/// overrides the address (tests), `off` disables the lookup.
pub async fn ec2_identity() -> Option<host::Ec2Identity> {
    let endpoint = std::env::var("INFRAGRAPH_IMDS_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    if endpoint == "off" {
        return None;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .ok()?;
    let token = client
        .put(format!("{endpoint}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let doc: serde_json::Value = client
        .get(format!(
            "{endpoint}/latest/dynamic/instance-identity/document"
        ))
        .header("X-aws-ec2-metadata-token", token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    let s = |k: &str| doc.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Some(host::Ec2Identity {
        instance_id: s("instanceId")?,
        region: s("region")?,
        account_id: s("accountId")?,
        availability_zone: s("availabilityZone"),
        private_ip: s("privateIp"),
    })
}

/// Gathers this machine's report.
pub async fn gather(hostname: Option<&str>) -> HostReport {
    let mut report =
        tokio::task::block_in_place(|| host::gather(Path::new("/"), hostname, interfaces()));
    report.host.ec2 = ec2_identity().await;
    report
}

/// Posts one report; returns the server's answer.
pub async fn post(
    client: &reqwest::Client,
    server: &str,
    token: &str,
    report: &HostReport,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/api/v1/agents/report", server.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .bearer_auth(token)
        .json(report)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url} refused the report: {status}: {}", text.trim());
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// The HTTP client the agent posts with: HTTPS with the system's roots, plus
/// the CA in `ca_file` when given; certificates are always verified.
pub fn client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .use_rustls_tls();
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{}: no certificate in it", path.display());
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    Ok(builder.build()?)
}

/// The agent loop: gather, post, sleep; with `once`, a single report.
pub async fn run(
    server: &str,
    token: &str,
    interval: Duration,
    hostname: Option<&str>,
    once: bool,
    ca_file: Option<&Path>,
) -> anyhow::Result<()> {
    let client = client(ca_file)?;
    // `127.0.0.1:8080` parses as a URL of scheme "127.0.0.1": ask for one
    // that says how to talk to the server.
    let parsed = reqwest::Url::parse(server)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if parsed.is_none() {
        anyhow::bail!(
            "--server '{server}' is not an http:// or https:// URL (e.g. https://infragraph.example:8080 or http://127.0.0.1:8080)"
        );
    }
    if let Some(url) = parsed {
        let host = url.host_str().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback());
        if url.scheme() == "http" && !loopback {
            tracing::warn!(server = %server, "the agent token travels in clear over plain HTTP: use an https:// server (TLS in front of infragraph)");
        }
    }
    loop {
        let report = gather(hostname).await;
        for l in &report.limitations {
            tracing::warn!("{l}");
        }
        match post(&client, server, token, &report).await {
            Ok(answer) => tracing::info!(
                host = %report.host.hostname,
                listeners = report.listeners.len(),
                connections = report.connections.len(),
                answer = %answer,
                "report accepted"
            ),
            Err(e) if once => return Err(e),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "report failed; retrying next interval")
            }
        }
        if once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors name the file and line, never the token; one token for two
    /// hosts is refused (one host could report as the other, and the
    /// other's agent would be refused).
    #[test]
    fn agent_tokens_name_the_line_and_refuse_a_shared_token() {
        let p = Path::new("agents.txt");
        let t = AgentTokens::parse(
            p,
            "# host token\nweb-1 aaaaaaaaaaaaaaaa\n\nweb-2 bbbbbbbbbbbbbbbb\nweb-1 cccccccccccccccc\n",
        )
        .unwrap();
        assert_eq!(t.host_for("bbbbbbbbbbbbbbbb"), Some("web-2"));
        assert_eq!(t.host_for("cccccccccccccccc"), Some("web-1"));
        assert_eq!(t.host_for("dddddddddddddddd"), None);
        for (text, said) in [
            ("web-1\n", "agents.txt:1: expected `HOSTNAME TOKEN`"),
            (
                "web-1 short\n",
                "agents.txt:1: the token for web-1 is shorter than 16 characters",
            ),
            (
                "web-1 aaaaaaaaaaaaaaaa\n# x\nweb-2 aaaaaaaaaaaaaaaa\n",
                "agents.txt:3: the token for web-2 is also the token for web-1 (line 1): each host needs its own",
            ),
        ] {
            let e = format!("{:#}", AgentTokens::parse(p, text).unwrap_err());
            assert!(e.contains(said), "{text}: {e}");
            assert!(!e.contains("aaaaaaaaaaaaaaaa"), "{e}");
        }
    }
}
