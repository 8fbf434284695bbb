//! Load and query figures on a generated estate: write it to SQLite and to
//! PostgreSQL in one run each (and once more as an unchanged re-sync), load
//! it back into the graph, and time impact queries.
//!
//! `cargo bench --bench load` (medium); `INFRAGRAPH_BENCH_SIZE=small|large`
//! to change the size; `INFRAGRAPH_BENCH_PG=0` skips PostgreSQL;
//! `INFRAGRAPH_BENCH_RESYNC=0` skips the unchanged
//! re-sync; `INFRAGRAPH_BENCH_SQLITE_FILE=PATH` keeps the SQLite store in
//! PATH, and a later run on the same file skips the first load (with
//! `INFRAGRAPH_BENCH_LOAD_ONLY=1`, only the read-back and build are
//! timed: a large estate's load in seconds instead of minutes); `INFRAGRAPH_BENCH_STORE=memory` builds the graph straight from
//! the generator and prints only the query figures (with
//! `INFRAGRAPH_BENCH_IDS=bfs`, on ids renamed into a locality order; see
//! `bfs_ids`). `INFRAGRAPH_BENCH_ZONE_LOOP=N` (with the memory store) runs
//! only the zone what-if, N times per zone, for a profiler;
//! `INFRAGRAPH_BENCH_SPOFS_LOOP=N` only `spofs`, N times.
//! `INFRAGRAPH_BENCH_SIZE=ratio` builds medium and large in memory and
//! times each query on both, round after round, for the large/medium ratio
//! (see `ratio_figures`). PostgreSQL is skipped, with a note, when
//! unreachable.

use std::time::{Duration, Instant};

use collectors::{Collection, ScopeBatch};
use infragraph::generate::{Size, generate};
use infragraph::graph::Snapshot;
use infragraph::model::now_ms;
use infragraph::store::{RunInput, Store};
use rand::{Rng, SeedableRng};

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn input(batch: &ScopeBatch) -> RunInput {
    RunInput {
        collector: "bench".into(),
        scope: "generated".into(),
        started_at: now_ms(),
        outcome: Ok(Collection {
            notes: Vec::new(),
            batches: vec![batch.clone()],
            warnings: vec![],
        }),
        retract: vec![],
        additive: false,
    }
}

async fn store_figures(name: &str, url: &str, batch: &ScopeBatch) -> Option<Snapshot> {
    let store = match Store::connect(url).await {
        Ok(s) => s,
        Err(e) => {
            println!("{name}: skipped ({e:#})");
            return None;
        }
    };
    let t = Instant::now();
    let run = if store.last_run_id().await.unwrap() > 0 {
        // INFRAGRAPH_BENCH_SQLITE_FILE from an earlier run: read it back only.
        println!("{name}: the store already holds a run: first load skipped");
        let run = store.runs(1).await.unwrap().remove(0);
        assert_eq!(
            (run.resources_seen as usize, run.relations_seen as usize),
            (batch.resources.len(), batch.relations.len()),
            "INFRAGRAPH_BENCH_SQLITE_FILE holds another estate (another size or seed)"
        );
        run
    } else {
        store.apply(input(batch)).await.unwrap()
    };
    let first = t.elapsed();
    assert!(run.error.is_none(), "{:?}", run.error);
    let again = if std::env::var("INFRAGRAPH_BENCH_RESYNC").as_deref() == Ok("0") {
        Duration::ZERO
    } else {
        let t = Instant::now();
        let run2 = store.apply(input(batch)).await.unwrap();
        assert_eq!(run2.created + run2.updated + run2.retired, 0);
        t.elapsed()
    };
    let t = Instant::now();
    let (res, rels) = store.load_all().await.unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let snap = Snapshot::build(res, rels, now_ms());
    let build = t.elapsed();
    let rels = snap.relations.len().max(1);
    println!(
        "{name}: memory: snapshot ≈ {} MB ≈ {} bytes per relation (records, provenance, index and graph); graph structures alone {} bytes per relation; process resident {} MB",
        snap.memory_estimate() / (1 << 20),
        snap.memory_estimate() / rels,
        snap.graph_bytes() / rels,
        rss_bytes() / (1 << 20)
    );
    println!(
        "{name}: first load {} ({} resources, {} relations); unchanged re-sync {}; read back {}; graph build {}; total to graph {}",
        secs(first),
        run.resources_seen,
        run.relations_seen,
        secs(again),
        secs(load),
        secs(build),
        secs(load + build)
    );
    store.close().await;
    Some(snap)
}

/// The snapshot the store would load after one run of `batch`, built
/// without a store (`INFRAGRAPH_BENCH_STORE=memory`).
fn in_memory(batch: ScopeBatch) -> Snapshot {
    use infragraph::model::{Provenance, Relation, Resource, Status};
    let now = now_ms();
    let prov = || {
        vec![Provenance {
            source: "bench:generated".into(),
            status: Status::Present,
            first_seen: now,
            last_seen: now,
            gone_at: None,
        }]
    };
    let resources = batch
        .resources
        .into_iter()
        .map(|r| Resource {
            name: r.name.unwrap_or_else(|| r.id.clone()),
            id: r.id,
            kind: r.kind,
            labels: r.labels,
            attributes: r.attributes,
            status: Status::Present,
            first_seen: now,
            last_seen: now,
            gone_at: None,
            sources: prov(),
        })
        .collect();
    let relations = batch
        .relations
        .into_iter()
        .map(|r| Relation {
            from: r.from,
            to: r.to,
            kind: r.kind,
            attributes: r.attributes,
            status: Status::Present,
            first_seen: now,
            last_seen: now,
            gone_at: None,
            sources: prov(),
        })
        .collect();
    Snapshot::build(resources, relations, now)
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Minor page faults of this process so far, from /proc (0 where
/// unavailable): memory the kernel had to hand over on first touch.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// "×N: p50 … min … max …" of a loop's times (at least one).
fn spread(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "×{}: p50 {} min {} max {}",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(times[0]),
        ms(times[times.len() - 1])
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The ten resources with the largest fan-in (most relations pointing at
/// them), largest first.
fn hubs(snap: &Snapshot) -> Vec<u32> {
    let mut fan: Vec<(usize, u32)> = (0..snap.resources.len() as u32)
        .map(|ix| (snap.relations_of(ix, false, true).len(), ix))
        .collect();
    fan.sort_unstable_by(|a, b| b.cmp(a));
    fan.iter().take(10).map(|f| f.1).collect()
}

/// The first region's zones: the AZ what-if's failures.
fn zones(snap: &Snapshot) -> Vec<u32> {
    ["zone:r0a", "zone:r0b", "zone:r0c"]
        .iter()
        .filter_map(|z| snap.lookup(z))
        .collect()
}

/// Prints impact figures; returns the id of the largest-reach hub.
fn impact_figures(snap: &Snapshot) -> String {
    let n = snap.resources.len() as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // (time, reach) per failure: the two estates draw different resources,
    // so the reach at the p99 says what that figure measured.
    let mut runs: Vec<(Duration, usize)> = (0..200)
        .map(|_| {
            let ix = rng.random_range(0..n);
            let t = Instant::now();
            let r = snap.impact(&[ix], None);
            (t.elapsed(), r.down.len() + r.degraded.len())
        })
        .collect();
    runs.sort();
    let reached: usize = runs.iter().map(|r| r.1).sum();
    let p99 = runs[((runs.len() - 1) as f64 * 0.99).round() as usize];
    println!(
        "impact, 200 random single failures: p50 {} p99 {} (mean reach {}, reach at the p99 {}, largest {})",
        ms(runs[runs.len() / 2].0),
        ms(p99.0),
        reached / runs.len(),
        p99.1,
        runs.iter().map(|r| r.1).max().unwrap_or(0)
    );
    let hubs = hubs(snap);
    // Ten rounds over the ten, so that one noisy moment on a shared
    // machine does not decide the figure.
    let mut times = Vec::new();
    let mut worst = 0;
    let mut hub = String::new();
    let mut total = 0usize;
    for _ in 0..10 {
        for &ix in &hubs {
            let t = Instant::now();
            let r = snap.impact(&[ix], None);
            times.push(t.elapsed());
            total += r.down.len() + r.degraded.len();
            if r.down.len() + r.degraded.len() > worst {
                worst = r.down.len() + r.degraded.len();
                hub = snap.resource(ix).id.clone();
            }
        }
    }
    times.sort();
    println!(
        "impact, 10 largest fan-in resources ×10: p50 {} max {} (largest reach {worst}, mean reach {})",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap()),
        total / times.len()
    );
    // The same with every path materialized (what a client asking for all
    // paths makes the server do).
    // The median of five: one run alone is at the mercy of a noisy moment.
    if let Some(ix) = snap.lookup(&hub) {
        let mut times = Vec::new();
        let (mut reach, mut hops) = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            let r = snap.impact(&[ix], None);
            hops = r
                .down
                .iter()
                .chain(r.degraded.iter())
                .map(|i| r.path(snap, i).len())
                .sum::<usize>();
            times.push(t.elapsed());
            reach = r.down.len() + r.degraded.len();
        }
        times.sort();
        println!(
            "impact of {hub} with all {reach} paths materialized ({hops} relations), 5 runs: median {} best {}",
            ms(percentile(&times, 0.5)),
            ms(times[0])
        );
    }
    // Each zone of the first region, thirty times: the median (on a shared
    // machine, ten rounds left the figure at the mercy of a noisy moment).
    let mut times = Vec::new();
    let mut reach = 0usize;
    for _ in 0..30 {
        for &zone in &zones(snap) {
            let t = Instant::now();
            let r = snap.impact(&[zone], None);
            times.push(t.elapsed());
            reach += r.down.len() + r.degraded.len();
        }
    }
    if !times.is_empty() {
        times.sort();
        println!(
            "impact, one availability zone fails (3 zones ×30): p50 {} max {} (mean reach {})",
            ms(percentile(&times, 0.5)),
            ms(*times.last().unwrap()),
            reach / times.len()
        );
    }
    let critical = [infragraph::model::LabelSelector::parse("tier=1").unwrap()];
    let mut times = Vec::new();
    let mut spofs = Vec::new();
    let mut work = infragraph::graph::SpofWork::default();
    for _ in 0..5 {
        let t = Instant::now();
        (spofs, work) = snap.spofs_counted(None, &critical).unwrap();
        times.push(t.elapsed());
    }
    // The first call also builds the snapshot's locality-ordered copy of
    // the edges and its selector catalog; the median and best are the
    // later calls.
    let first = times[0];
    times.sort();
    let taken: usize = spofs.iter().map(|s| s.down_count).sum();
    println!(
        "spofs over the whole estate (critical: tier=1), 5 runs: median {} best {} first {} ({} found, taking down {taken} resources in all)",
        ms(percentile(&times, 0.5)),
        ms(times[0]),
        ms(first),
        spofs.len(),
    );
    println!(
        "  {} candidates: {} answered from their own row, {} passes, {} answers shared with another's pass",
        work.candidates, work.from_rows, work.passes, work.shared
    );
    // Where that work goes: the SPOFs by kind, largest share first.
    let mut by_kind: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for s in &spofs {
        let e = by_kind
            .entry(snap.resource(s.node).kind.as_str())
            .or_default();
        e.0 += 1;
        e.1 += s.down_count;
    }
    let mut by_kind: Vec<_> = by_kind.into_iter().collect();
    by_kind.sort_by_key(|(_, (_, w))| std::cmp::Reverse(*w));
    let shares: Vec<String> = by_kind
        .iter()
        .map(|(k, (n, w))| format!("{k} {n} ({}%)", w * 100 / taken.max(1)))
        .collect();
    println!("  SPOFs by kind (share of the work): {}", shares.join(", "));
    hub
}

/// One estate's snapshot built straight from the generator.
fn generated_snapshot(size: Size) -> Snapshot {
    let estate = generate(size, 42);
    in_memory(ScopeBatch {
        scope: "generated".into(),
        complete: true,
        resources: estate.resources,
        relations: estate.relations,
        gone: Vec::new(),
    })
}

/// `INFRAGRAPH_BENCH_SIZE=ratio`: the large estate against the medium one
/// in one process, each query's batch run on medium and then at once on
/// large, round after round. Issue 4 asks for large within 12× of medium:
/// on a shared machine whose speed drifts from minute to minute, two
/// separate runs can differ by half; a round's two batches run seconds
/// apart, so the median of the rounds' ratios is the steadier figure.
fn ratio_figures() {
    let t = Instant::now();
    let medium = generated_snapshot(Size::Medium);
    let large = generated_snapshot(Size::Large);
    println!("ratio: medium and large built in {}", secs(t.elapsed()));
    let critical = [infragraph::model::LabelSelector::parse("tier=1").unwrap()];
    // Per estate: the ten largest fan-in resources, the first region's
    // zones, and 200 random resources.
    let targets = |snap: &Snapshot| {
        let n = snap.resources.len() as u32;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let singles: Vec<u32> = (0..200).map(|_| rng.random_range(0..n)).collect();
        [singles, hubs(snap), zones(snap)]
    };
    let sets = [targets(&medium), targets(&large)];
    // One batch: the median time of its queries (spofs: one call), each
    // batch run once untimed first, so that both estates are timed with
    // their data as warm as a batch leaves it (the other estate's batch
    // has just run through the cache).
    let batch = |snap: &Snapshot, which: usize, ixs: &[u32]| -> Duration {
        if which == 3 {
            std::hint::black_box(snap.spofs(None, &critical).unwrap());
            let t = Instant::now();
            std::hint::black_box(snap.spofs(None, &critical).unwrap());
            return t.elapsed();
        }
        for &ix in ixs {
            std::hint::black_box(snap.impact(&[ix], None));
        }
        let mut times: Vec<Duration> = ixs
            .iter()
            .map(|&ix| {
                let t = Instant::now();
                std::hint::black_box(snap.impact(&[ix], None));
                t.elapsed()
            })
            .collect();
        times.sort();
        percentile(&times, 0.5)
    };
    let names = [
        "single failure p50",
        "hub (10 largest fan-in) p50",
        "zone what-if p50",
        "spofs",
    ];
    let rounds = 15;
    // Warm both (the first spofs call builds each snapshot's local copy).
    for which in 0..4 {
        for (snap, set) in [(&medium, &sets[0]), (&large, &sets[1])] {
            batch(snap, which, set.get(which).map_or(&[][..], |v| &v[..]));
        }
    }
    let mut seen: Vec<[Vec<Duration>; 2]> = vec![Default::default(); 4];
    for _ in 0..rounds {
        for (which, seen) in seen.iter_mut().enumerate() {
            for (side, snap) in [&medium, &large].into_iter().enumerate() {
                let ixs = sets[side].get(which).map_or(&[][..], |v| &v[..]);
                seen[side].push(batch(snap, which, ixs));
            }
        }
    }
    for (name, [m, l]) in names.iter().zip(&seen) {
        let mut ratios: Vec<f64> = m
            .iter()
            .zip(l)
            .map(|(m, l)| l.as_secs_f64() / m.as_secs_f64().max(1e-9))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let (mut m, mut l) = (m.clone(), l.clone());
        m.sort();
        l.sort();
        println!(
            "ratio, {name} ({rounds} paired rounds): medium {} large {}: large/medium median {:.1}× (rounds {:.1}–{:.1}×)",
            ms(percentile(&m, 0.5)),
            ms(percentile(&l, 0.5)),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }
}

/// The same blast radius (plain reachability, redundancy-blind) as one
/// recursive SQL query on PostgreSQL.
async fn recursive_sql(url: &str, hub: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let sql = "WITH RECURSIVE edges(src, dst) AS (
            SELECT to_id, from_id FROM relations
             WHERE status = 'present' AND kind IN ('depends_on', 'runs_on', 'contained_in', 'routes_to')
            UNION ALL
            SELECT from_id, to_id FROM relations
             WHERE status = 'present' AND kind IN ('attached_to', 'instance_of')),
          reach(id) AS (SELECT $1::text UNION SELECT e.dst FROM reach JOIN edges e ON e.src = reach.id)
        SELECT count(*) FROM reach";
    let t = Instant::now();
    let n: i64 = sqlx::query_scalar(sql)
        .bind(hub)
        .fetch_one(&mut c)
        .await
        .unwrap();
    println!(
        "postgres recursive SQL, same hub {hub} (plain reachability): {n} resources in {}",
        ms(t.elapsed())
    );
}

/// GraphQL end to end over HTTP: the hub's whole impact list.
async fn graphql_figures(sqlite: &str, hub: &str) {
    let store = Store::connect(sqlite).await.unwrap();
    let app = infragraph::app::App::new(store, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(infragraph::cli::serve_on(
        listener,
        app,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    for (label, q) in [
        (
            "nested resource { id } status depth",
            format!(
                "{{ impact(failed: [\"{hub}\"]) {{ down {{ resource {{ id }} status depth }} degraded {{ resource {{ id }} status depth redundancy }} }} }}"
            ),
        ),
        (
            "flat id status depth",
            format!(
                "{{ impact(failed: [\"{hub}\"]) {{ down {{ id status depth }} degraded {{ id status depth redundancy }} }} }}"
            ),
        ),
        (
            "table (one JSON value)",
            format!("{{ impact(failed: [\"{hub}\"]) {{ table }} }}"),
        ),
    ] {
        graphql_one(&client, addr, hub, label, &q).await;
    }
}

async fn graphql_one(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    hub: &str,
    label: &str,
    q: &str,
) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = client
            .post(format!("http://{addr}/graphql"))
            .json(&serde_json::json!({"query": q}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        times.push(t.elapsed());
        bytes = body.len();
        // On large the hub reaches more than a request may list: the
        // server refuses it by design (page it, or ask for the counts).
        if body.contains("\"TOO_LARGE\"") {
            println!(
                "graphql over HTTP, impact of {hub}, every resource listed as {label}: not measured: over the server's object budget ({} objects; the GraphQL target is on medium)",
                infragraph::api::MAX_OBJECTS
            );
            return;
        }
        assert!(
            !body.contains("\"errors\""),
            "{}",
            &body[..body.len().min(300)]
        );
    }
    times.sort();
    println!(
        "graphql over HTTP, impact of {hub}, every resource listed as {label}: median {} ({} KB)",
        ms(percentile(&times, 0.5)),
        bytes / 1024,
    );
}

#[tokio::main]
async fn main() {
    if std::env::var("INFRAGRAPH_BENCH_SIZE").as_deref() == Ok("ratio") {
        ratio_figures();
        return;
    }
    let size = match std::env::var("INFRAGRAPH_BENCH_SIZE").as_deref() {
        Ok("small") => Size::Small,
        Ok("large") => Size::Large,
        _ => Size::Medium,
    };
    let t = Instant::now();
    let estate = generate(size, 42);
    println!(
        "generated {size:?}: {} resources, {} relations in {}",
        estate.resources.len(),
        estate.relations.len(),
        secs(t.elapsed())
    );
    let batch = ScopeBatch {
        scope: "generated".into(),
        complete: true,
        resources: estate.resources,
        relations: estate.relations,
        gone: Vec::new(),
    };
    if std::env::var("INFRAGRAPH_BENCH_STORE").as_deref() == Ok("memory") {
        // Query figures only: the snapshot straight from the generator.
        let t = Instant::now();
        let batch = if std::env::var("INFRAGRAPH_BENCH_IDS").as_deref() == Ok("bfs") {
            bfs_ids(batch)
        } else {
            batch
        };
        let snap = in_memory(batch);
        println!("memory: graph build {}", secs(t.elapsed()));
        if let Ok(rounds) = std::env::var("INFRAGRAPH_BENCH_ZONE_LOOP") {
            // For a profiler: only the zone what-if, `rounds` times each zone.
            let rounds: usize = rounds
                .parse()
                .ok()
                .filter(|&r| r > 0)
                .expect("INFRAGRAPH_BENCH_ZONE_LOOP: a number above 0");
            let zones = zones(&snap);
            let mut times = Vec::new();
            let faults = minor_faults();
            for _ in 0..rounds {
                for &z in &zones {
                    let t = Instant::now();
                    let r = snap.impact(&[z], None);
                    times.push(t.elapsed());
                    drop(std::hint::black_box(r));
                }
            }
            let faults = minor_faults().saturating_sub(faults) / times.len().max(1) as u64;
            println!(
                "zone what-if {} ({faults} page faults per query)",
                spread(times)
            );
            return;
        }
        if let Ok(rounds) = std::env::var("INFRAGRAPH_BENCH_SPOFS_LOOP") {
            // For a profiler, or to compare two builds: only `spofs`.
            let rounds: usize = rounds
                .parse()
                .ok()
                .filter(|&r| r > 0)
                .expect("INFRAGRAPH_BENCH_SPOFS_LOOP: a number above 0");
            let critical = [infragraph::model::LabelSelector::parse("tier=1").unwrap()];
            std::hint::black_box(snap.spofs(None, &critical).unwrap());
            let faults = minor_faults();
            let times: Vec<Duration> = (0..rounds)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(snap.spofs(None, &critical).unwrap());
                    t.elapsed()
                })
                .collect();
            let faults = minor_faults().saturating_sub(faults) / rounds as u64;
            println!("spofs {} ({faults} page faults per call)", spread(times));
            return;
        }
        impact_figures(&snap);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = match std::env::var("INFRAGRAPH_BENCH_SQLITE_FILE") {
        Ok(file) => format!("sqlite://{file}"),
        Err(_) => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let snap = store_figures("sqlite", &sqlite, &batch).await;
    if std::env::var("INFRAGRAPH_BENCH_LOAD_ONLY").as_deref() == Ok("1") {
        return;
    }

    let admin = std::env::var("INFRAGRAPH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("infragraph_bench_{}", std::process::id());
    let skip_pg = std::env::var("INFRAGRAPH_BENCH_PG").as_deref() == Ok("0");
    let created = async {
        use sqlx::Connection;
        if skip_pg {
            return Err(sqlx::Error::Configuration("INFRAGRAPH_BENCH_PG=0".into()));
        }
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await?;
        Ok::<_, sqlx::Error>(c)
    }
    .await;
    let hub = snap.as_ref().map(impact_figures);
    drop(snap);
    if let Some(hub) = &hub {
        graphql_figures(&sqlite, hub).await;
    }
    match created {
        Ok(mut admin_conn) => {
            let base = admin.rsplit_once('/').unwrap().0;
            let url = format!("{base}/{name}");
            store_figures("postgres", &url, &batch).await;
            if let Some(hub) = &hub {
                recursive_sql(&url, hub).await;
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut admin_conn)
            .await
            .unwrap();
        }
        Err(e) => println!("postgres: skipped ({e})"),
    }
}

/// `INFRAGRAPH_BENCH_IDS=bfs`: renames every resource (zones excepted) so
/// that id order is a breadth-first order along the impact edges, from the
/// resources nothing reaches. The graph numbers nodes in id order, so this
/// measures what memory locality alone would buy the traversals, without
/// changing the code under test (see ARCHITECTURE.md, "Node order").
fn bfs_ids(mut batch: ScopeBatch) -> ScopeBatch {
    use std::collections::{HashMap, VecDeque};
    let mut ids: Vec<String> = batch.resources.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let ix: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let n = ids.len();
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut indeg = vec![0u32; n];
    for r in &batch.relations {
        let (f, t) = (ix[r.from.as_str()] as u32, ix[r.to.as_str()] as u32);
        let Some(rule) = infragraph::model::ImpactRule::of(&r.kind) else {
            continue;
        };
        let (src, dst) = if rule.to_reaches_from { (t, f) } else { (f, t) };
        adj[src as usize].push(dst);
        indeg[dst as usize] += 1;
    }
    for a in &mut adj {
        a.sort_unstable();
    }
    let mut rank = vec![u32::MAX; n];
    let mut next = 0u32;
    let mut queue = VecDeque::new();
    for root in (0..n).filter(|&i| indeg[i] == 0).chain(0..n) {
        if rank[root] != u32::MAX {
            continue;
        }
        rank[root] = next;
        next += 1;
        queue.push_back(root as u32);
        while let Some(u) = queue.pop_front() {
            for &v in &adj[u as usize] {
                if rank[v as usize] == u32::MAX {
                    rank[v as usize] = next;
                    next += 1;
                    queue.push_back(v);
                }
            }
        }
    }
    let name: Vec<String> = (0..n)
        .map(|i| {
            if ids[i].starts_with("zone:") {
                ids[i].clone()
            } else {
                format!("~{:08}|{}", rank[i], ids[i])
            }
        })
        .collect();
    let rename = |s: &str| name[ix[s]].clone();
    let relations: Vec<_> = batch
        .relations
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.from = rename(&r.from);
            r.to = rename(&r.to);
            r
        })
        .collect();
    for r in &mut batch.resources {
        r.id = rename(&r.id);
    }
    batch.relations = relations;
    batch
}
