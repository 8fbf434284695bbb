//! Agent ingest: 1,000 hosts each posting a report of 200 established
//! connections (plus a few listeners) to a real server over HTTP, SQLite
//! store, 8 agents posting at once. Prints the wall time, reports per second
//! and the latency of one report.
//!
//! `cargo bench --bench agents` (`INFRAGRAPH_BENCH_HOSTS=N` to change the
//! number of hosts, `INFRAGRAPH_BENCH_CONCURRENCY=N` the agents posting at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use infragraph::app::App;
use infragraph::store::Store;
use serde_json::{Value, json};

fn report(i: usize, hosts: usize) -> Value {
    let ip = |h: usize| {
        let h = h + 1;
        format!("10.{}.{}.{}", (h >> 16) & 255, (h >> 8) & 255, h & 255)
    };
    let me = ip(i);
    let svc = |n: &str, pid: u32| json!({"pid": pid, "name": n, "unit": format!("{n}.service")});
    let mut connections = Vec::new();
    for c in 0..200usize {
        // Three quarters to other hosts' services, the rest to the outside.
        let (remote, port) = if c % 4 != 3 {
            let peer = (i + 1 + c * 7) % hosts;
            (ip(peer), if c % 2 == 0 { 5432 } else { 8080 })
        } else {
            (format!("93.184.{}.{}", c % 200, i % 250 + 1), 443)
        };
        connections.push(json!({
            "local_address": me, "local_port": 30000 + c,
            "remote_address": remote, "remote_port": port,
            "process": svc(if c % 3 == 0 { "worker" } else { "api" }, 100 + (c % 3) as u32),
        }));
    }
    json!({
        "version": 1,
        "host": {
            "hostname": format!("host-{i:05}"),
            "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-13-amd64", "cpus": 4,
            "interfaces": [{"name": "eth0", "addresses": [me]}],
        },
        "listeners": [
            {"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": svc("api", 101)},
            {"protocol": "tcp", "address": "0.0.0.0", "port": 5432, "process": svc("postgresql", 200)},
            {"protocol": "tcp", "address": "127.0.0.1", "port": 9100, "process": svc("node-exporter", 300)},
        ],
        "connections": connections,
    })
}

#[tokio::main]
async fn main() {
    let hosts: usize = std::env::var("INFRAGRAPH_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let concurrency: usize = std::env::var("INFRAGRAPH_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("agents.db").display());
    let store = Store::connect(&url).await.unwrap();
    const TOKEN: &str = "bench-admin-token-0123456789";
    let app: Arc<App> = App::new(store, Some(TOKEN.into())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(infragraph::cli::serve_on(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    let bodies: Vec<Vec<u8>> = (0..hosts)
        .map(|i| serde_json::to_vec(&report(i, hosts)).unwrap())
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            let resp = client
                .post(format!("http://{addr}/api/v1/agents/report"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
            t.elapsed()
        }
    };
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(hosts);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut it = bodies.into_iter();
    use futures_util::StreamExt;
    for b in it.by_ref().take(concurrency) {
        pending.push(post(b));
    }
    while let Some(l) = pending.next().await {
        latencies.push(l);
        if latencies.len().is_multiple_of(100) {
            eprintln!(
                "{} reports in {:.1} s",
                latencies.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(b) = it.next() {
            pending.push(post(b));
        }
    }
    let total = started.elapsed();
    latencies.sort();
    let snap = app.snapshot();
    let (nodes, edges) = snap.counts();
    let observed = snap
        .relations
        .iter()
        .filter(|r| r.kind == "depends_on" && r.status == infragraph::model::Status::Present)
        .count();
    // Where the time goes: the same reports again (hosts now known, as on
    // every later interval), one at a time, straight into the store
    // (matching + one transaction, no HTTP, no graph refresh).
    let mut store_times = Vec::new();
    for i in 0..hosts.min(50) {
        let r: collectors::host::HostReport = serde_json::from_value(report(i, hosts)).unwrap();
        let t = Instant::now();
        let input = infragraph::agent::run_input(&app, &r, true);
        let run = app.store.apply(input).await.unwrap();
        assert!(run.error.is_none(), "{:?}", run.error);
        store_times.push(t.elapsed());
    }
    store_times.sort();
    let t = Instant::now();
    app.refresh().await.unwrap();
    let refresh = t.elapsed();
    println!(
        "one report alone, matching + store transaction: p50 {:.0} ms, max {:.0} ms; one graph refresh: {:.0} ms",
        store_times[store_times.len() / 2].as_secs_f64() * 1000.0,
        store_times.last().unwrap().as_secs_f64() * 1000.0,
        refresh.as_secs_f64() * 1000.0
    );
    println!(
        "agent ingest: {hosts} reports × 200 connections ({} MB of JSON), {concurrency} at once: {:.1} s, {:.1} reports/s; one report p50 {:.0} ms, p99 {:.0} ms; graph after: {nodes} resources, {edges} relations ({observed} observed depends_on)",
        bytes / 1_000_000,
        total.as_secs_f64(),
        hosts as f64 / total.as_secs_f64(),
        latencies[latencies.len() / 2].as_secs_f64() * 1000.0,
        latencies[latencies.len() * 99 / 100].as_secs_f64() * 1000.0,
    );
}
