//! Load and query figures on a generated estate: write it to SQLite and to
//! PostgreSQL in one run each (and once more as an unchanged re-sync), load
//! it back into the graph, and time impact queries.
//!
//! `cargo bench --bench load` (medium); `INFRAGRAPH_BENCH_SIZE=small|large`
//! to change the size. PostgreSQL is skipped, with a note, when unreachable.

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
    let run = store.apply(input(batch)).await.unwrap();
    let first = t.elapsed();
    assert!(run.error.is_none(), "{:?}", run.error);
    let t = Instant::now();
    let run2 = store.apply(input(batch)).await.unwrap();
    let again = t.elapsed();
    assert_eq!(run2.created + run2.updated + run2.retired, 0);
    let t = Instant::now();
    let (res, rels) = store.load_all().await.unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let snap = Snapshot::build(res, rels, now_ms());
    let build = t.elapsed();
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn impact_figures(snap: &Snapshot) {
    let n = snap.resources.len() as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut times = Vec::new();
    let mut reached = 0usize;
    for _ in 0..200 {
        let ix = rng.random_range(0..n);
        let t = Instant::now();
        let r = snap.impact(&[ix], None);
        times.push(t.elapsed());
        reached += r.down.len() + r.degraded.len();
    }
    times.sort();
    println!(
        "impact, 200 random single failures: p50 {} p99 {} (mean reach {})",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        reached / 200
    );
    // The 10 resources with the largest fan-in (most relations pointing at them).
    let mut fan: Vec<(usize, u32)> = (0..n)
        .map(|ix| (snap.relations_of(ix, false, true).len(), ix))
        .collect();
    fan.sort_unstable_by(|a, b| b.cmp(a));
    let mut times = Vec::new();
    let mut worst = 0;
    for &(_, ix) in fan.iter().take(10) {
        let t = Instant::now();
        let r = snap.impact(&[ix], None);
        times.push(t.elapsed());
        worst = worst.max(r.down.len() + r.degraded.len());
    }
    times.sort();
    println!(
        "impact, 10 largest fan-in resources: p50 {} max {} (largest reach {worst})",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap())
    );
    if let Some(zone) = snap.lookup("zone:r0a") {
        let t = Instant::now();
        let r = snap.impact(&[zone], None);
        println!(
            "impact, availability zone zone:r0a fails: {} ({} down, {} degraded)",
            ms(t.elapsed()),
            r.down.len(),
            r.degraded.len()
        );
    }
}

#[tokio::main]
async fn main() {
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
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let snap = store_figures("sqlite", &sqlite, &batch).await;

    let admin = std::env::var("INFRAGRAPH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("infragraph_bench_{}", std::process::id());
    let created = async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await?;
        Ok::<_, sqlx::Error>(c)
    }
    .await;
    match created {
        Ok(mut admin_conn) => {
            let base = admin.rsplit_once('/').unwrap().0;
            store_figures("postgres", &format!("{base}/{name}"), &batch).await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut admin_conn)
            .await
            .unwrap();
        }
        Err(e) => println!("postgres: skipped ({e})"),
    }
    if let Some(snap) = snap {
        impact_figures(&snap);
    }
}
