//! The store suite: every case runs on SQLite and on PostgreSQL, each on a
//! fresh migrated database.

mod common;

use collectors::inventory::InventoryConfig;
use collectors::{Collection, ObservedRelation, ObservedResource, ScopeBatch};
use common::Files;
use infragraph::collector::ConfiguredCollector;
use infragraph::model::{ChangeOp, RunStatus, Status};
use infragraph::store::{Key, RunInput, Store};

both_backends!(
    full_run_retires_what_vanished_and_keeps_history,
    failed_runs_retire_nothing_and_write_nothing,
    partial_run_retires_only_in_complete_scopes,
    two_sources_make_one_resource_with_two_provenances,
    updates_are_logged_with_a_diff_and_gone_resources_revive,
    kind_conflict_between_sources_is_rejected,
    bulk_load_spans_many_statements,
    manual_assertions_are_additive_and_retractable,
    reported_gone_retires_even_in_a_partial_run,
    placeholders_yield_to_other_kinds,
    relations_follow_their_ends_whoever_asserted_them,
    disagreeing_sources_do_not_flip_the_merged_view,
    relations_ending_at_a_resource_are_read_through_an_index,
    attributes_of_any_json_merge_without_erasing_other_sources,
    a_source_nothing_collects_any_more_is_listed_and_can_be_retired,
    placeholders_stored_before_migration_5_are_guesses,
    a_load_sees_one_moment_while_runs_commit,
);

/// The graph is loaded as of one moment: a run that commits while the
/// load reads (in chunks, and table after table) is wholly in it or wholly
/// out. Another process rewrites every resource's name and every
/// relation's attributes to its generation in one transaction, again and
/// again; every load must see one generation everywhere.
async fn a_load_sees_one_moment_while_runs_commit(url: String) {
    use sqlx::Connection;
    let store = Store::connect(&url).await.unwrap();
    let n = 12_000; // more than two of the SQLite reader's chunks
    bulk(&store, n).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (first, first_done) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn({
        let (url, stop) = (url.clone(), stop.clone());
        let mut first = Some(first);
        async move {
            let url = if url.starts_with("sqlite") {
                format!("{url}?mode=rw")
            } else {
                url
            };
            let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
            let mut generation = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                generation += 1;
                let mut txn = other.begin().await.unwrap();
                sqlx::query("UPDATE resources SET name = $1")
                    .bind(format!("g{generation}"))
                    .execute(&mut *txn)
                    .await
                    .unwrap();
                sqlx::query("UPDATE relations SET attributes = $1")
                    .bind(format!("{{\"g\":{generation}}}"))
                    .execute(&mut *txn)
                    .await
                    .unwrap();
                txn.commit().await.unwrap();
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
            }
            generation
        }
    });
    first_done.await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..15 {
        let (res, rels) = store.load_all().await.unwrap();
        let names: std::collections::BTreeSet<&str> = res.iter().map(|r| r.name.as_str()).collect();
        let attrs: std::collections::BTreeSet<String> =
            rels.iter().map(|r| r.attributes.to_string()).collect();
        assert_eq!(names.len(), 1, "one load saw resources of several runs");
        assert_eq!(attrs.len(), 1, "one load saw relations of several runs");
        let name = names.into_iter().next().unwrap().to_string();
        let attr = attrs.into_iter().next().unwrap();
        assert_eq!(
            format!("{{\"g\":{}}}", &name[1..]),
            attr,
            "resources and relations of different runs"
        );
        seen.insert(name);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let generations = writer.await.unwrap();
    assert!(
        seen.len() >= 3 && generations >= 3,
        "the writer committed {generations} times and the loads saw {seen:?}: too few to tell"
    );
    // A row that cannot be read (in the middle of the SQLite reader's
    // chunks, decoded while others are): the load fails saying so.
    sqlx::query("UPDATE resources SET labels = 'not json' WHERE id = 'h6000'")
        .execute(
            &mut sqlx::AnyConnection::connect(&if url.starts_with("sqlite") {
                format!("{url}?mode=rw")
            } else {
                url.clone()
            })
            .await
            .unwrap(),
        )
        .await
        .unwrap();
    let err = format!("{:#}", store.load_all().await.unwrap_err());
    assert!(
        err.contains("corrupt labels in database: not json"),
        "{err}"
    );
    store.close().await;
}

/// A store written before `resource_sources.guess` (migration 0005): the
/// services EC2 tags and agents named are marked guesses on upgrade, so a
/// declaration of another kind replaces them instead of being refused.
async fn placeholders_stored_before_migration_5_are_guesses(url: String) {
    sqlx::any::install_default_drivers();
    let pg = url.starts_with("postgres");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(if pg {
        "migrations/postgres"
    } else {
        "migrations/sqlite"
    });
    let mut to_4 = sqlx::migrate::Migrator::new(dir).await.unwrap();
    to_4.migrations = to_4
        .migrations
        .iter()
        .filter(|m| m.version <= 4)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let pool = sqlx::AnyPool::connect(&if pg {
        url.clone()
    } else {
        format!("{url}?mode=rwc")
    })
    .await
    .unwrap();
    to_4.run(&pool).await.unwrap();
    for (id, source) in [
        ("svc:tagged", "aws-ec2:123456789012/us-east-1"),
        ("svc:nginx@web-1", "agent:web-1"),
        ("svc:declared", "inventory:old.yaml"),
    ] {
        sqlx::query(
            "INSERT INTO resources (id, kind, name, status, first_seen, last_seen, updated_at) \
             VALUES ($1, 'service', $2, 'present', 1, 1, 1)",
        )
        .bind(id)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO resource_sources (resource_id, source, status, first_seen, last_seen) \
             VALUES ($1, $2, 'present', 1, 1)",
        )
        .bind(id)
        .bind(source)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let store = Store::connect(&url).await.unwrap();
    for (id, ok) in [
        ("svc:tagged", true),
        ("svc:nginx@web-1", true),
        ("svc:declared", false),
    ] {
        let mut b = batch("decl", true, &[]);
        b.resources.push(ObservedResource::new(id, "database"));
        let run = apply(&store, vec![b], vec![]).await;
        assert_eq!(run.status == RunStatus::Ok, ok, "{id}: {:?}", run.error);
    }
    store.close().await;
}

/// A file renamed (or a region dropped) leaves its old source holding what
/// it reported, PRESENT: `sources` shows it, the longest silent first, and
/// retiring it marks GONE only what no other source reports, as a run of
/// that source, history kept.
async fn a_source_nothing_collects_any_more_is_listed_and_can_be_retired(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let old = f.write(
        "old.yaml",
        "resources:\n  - {id: host:a, kind: host}\n  - {id: host:b, kind: host}\n  - {id: svc:s, kind: service}\nrelations:\n  - {from: svc:s, to: host:b, kind: runs_on}\n",
    );
    let new = f.write("new.yaml", "resources:\n  - {id: host:a, kind: host}\n");
    load(&store, std::slice::from_ref(&old)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    load(&store, std::slice::from_ref(&new)).await;
    let sources = store.sources().await.unwrap();
    let name = |p: &std::path::Path| format!("inventory:{}", p.display());
    let (old_src, new_src) = (name(&old), name(&new));
    assert_eq!(
        sources
            .iter()
            .map(|s| (s.source.as_str(), s.resources, s.relations))
            .collect::<Vec<_>>(),
        [(old_src.as_str(), 3, 1), (new_src.as_str(), 1, 0)],
        "the longest silent first"
    );
    assert!(sources[0].last_seen < sources[1].last_seen);

    let err = store
        .retire_source_input("inventory:nope.yaml")
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.contains("source 'inventory:nope.yaml' reports nothing now; the sources that do: ")
            && err.contains(&old_src),
        "{err}"
    );
    let run = store
        .apply(store.retire_source_input(&old_src).await.unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    assert_eq!(
        run.warnings,
        ["retired on request (retire-source): everything this source reported"]
    );
    assert_eq!(
        (run.collector.as_str(), run.scope),
        ("inventory", old.display().to_string())
    );
    let (res, rels) = store.load_all().await.unwrap();
    let status = |id: &str| res.iter().find(|r| r.id == id).unwrap().status;
    assert_eq!(
        status("host:a"),
        Status::Present,
        "the other source keeps it"
    );
    assert_eq!(status("host:b"), Status::Gone);
    assert_eq!(status("svc:s"), Status::Gone);
    assert!(rels.iter().all(|r| r.status == Status::Gone));
    assert!(
        store
            .history("host:b", None)
            .await
            .unwrap()
            .iter()
            .any(|c| c.op == ChangeOp::Retire)
    );
    let sources = store.sources().await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].source, new_src);
    store.close().await;
}

/// Attributes may be any JSON. One source's scalar is kept as given; beside
/// another source's object it goes under `value`, and erases none of that
/// object's keys (an agent's endpoints, an instance's IP).
async fn attributes_of_any_json_merge_without_erasing_other_sources(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let a = f.write(
        "a.yaml",
        "resources:\n  - {id: svc:foo, kind: service, attributes: owned-by-x}\n  - {id: svc:bar, kind: service, attributes: [1, 2]}\n",
    );
    let b = f.write(
        "b.yaml",
        "resources:\n  - {id: svc:foo, kind: service, attributes: {endpoints: ['10.0.0.1:80']}}\n",
    );
    for p in [&a, &b] {
        assert_eq!(
            load(&store, std::slice::from_ref(p)).await.status,
            RunStatus::Ok
        );
    }
    let (res, _) = store.load_all().await.unwrap();
    let attrs = |id: &str| res.iter().find(|r| r.id == id).unwrap().attributes.clone();
    assert_eq!(attrs("svc:bar"), serde_json::json!([1, 2]));
    assert_eq!(
        attrs("svc:foo"),
        serde_json::json!({"endpoints": ["10.0.0.1:80"], "value": "owned-by-x"})
    );
    store.close().await;
}

async fn load(store: &Store, files: &[std::path::PathBuf]) -> infragraph::model::Run {
    ConfiguredCollector::Inventory(InventoryConfig {
        paths: files.to_vec(),
    })
    .run(store)
    .await
    .unwrap()
}

const V1: &str = "resources:
  - {id: host:a, kind: host}
  - {id: svc:x, kind: service, labels: {team: core}}
  - {id: svc:y, kind: service}
relations:
  - {from: svc:x, to: host:a, kind: runs_on}
  - {from: svc:y, to: svc:x, kind: depends_on}
";

async fn full_run_retires_what_vanished_and_keeps_history(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let p = f.write("inv.yaml", V1);
    let run = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(run.status, RunStatus::Ok);
    assert_eq!(
        (run.resources_seen, run.relations_seen, run.created),
        (3, 2, 5)
    );

    // svc:y and its relation vanish from the file.
    f.write(
        "inv.yaml",
        "resources:\n  - {id: host:a, kind: host}\n  - {id: svc:x, kind: service, labels: {team: core}}\nrelations:\n  - {from: svc:x, to: host:a, kind: runs_on}\n",
    );
    let run = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(run.status, RunStatus::Ok);
    assert_eq!(run.retired, 2, "svc:y and svc:y -> svc:x retired");
    let (res, rels) = store.load_all().await.unwrap();
    let y = res
        .iter()
        .find(|r| r.id == "svc:y")
        .expect("retired, never deleted");
    assert_eq!(y.status, Status::Gone);
    assert!(y.gone_at.is_some());
    assert_eq!(y.sources[0].status, Status::Gone);
    let rel = rels.iter().find(|r| r.from == "svc:y").unwrap();
    assert_eq!(rel.status, Status::Gone);
    let x = res.iter().find(|r| r.id == "svc:x").unwrap();
    assert_eq!(x.status, Status::Present);
    assert_eq!(x.sources[0].source, format!("inventory:{}", p.display()));

    let history = store.history("svc:y", None).await.unwrap();
    let ops: Vec<ChangeOp> = history
        .iter()
        .filter(|c| c.relation.is_none())
        .map(|c| c.op)
        .collect();
    assert_eq!(ops, vec![ChangeOp::Retire, ChangeOp::Create]);
    let runs = store.runs(10).await.unwrap();
    assert_eq!(runs.len(), 2);
    // Another file's relation to the retired resource is refused, saying
    // it is gone rather than unknown.
    let q = f.write(
        "other.yaml",
        "resources:\n  - {id: svc:z, kind: service}\nrelations:\n  - {from: svc:z, to: svc:y, kind: depends_on}\n",
    );
    let run = load(&store, std::slice::from_ref(&q)).await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.unwrap_or_default();
    assert!(
        err.contains(&format!(
            "{}:4: relation 'depends_on' points to resource 'svc:y', which is gone (no source has reported it since 20",
            q.display()
        )),
        "{err}"
    );
    store.close().await;
}

async fn failed_runs_retire_nothing_and_write_nothing(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let p = f.write("inv.yaml", V1);
    load(&store, std::slice::from_ref(&p)).await;
    let before = store.load_all().await.unwrap();

    // Each rejected file leaves the store exactly as it was.
    let long_id = format!(
        "resources:\n  - {{id: 'h:{}', kind: host}}\n",
        "x".repeat(2000)
    );
    let cases = [
        // unknown reference, with the line of the relation
        (
            "resources:\n  - {id: host:a, kind: host}\nrelations:\n  - {from: host:a, to: svc:pay, kind: depends_on}\n",
            "inv.yaml:4: relation 'depends_on' points to unknown resource 'svc:pay'",
        ),
        // repeated id with another kind
        (
            "resources:\n  - {id: host:a, kind: host}\n  - {id: host:a, kind: service}\n",
            "inv.yaml:3: resource 'host:a' repeated with kind 'service'",
        ),
        // malformed YAML
        ("resources:\n  - {id: host:a, kind: host\n", "inv.yaml:"),
        // missing field
        ("resources:\n  - {id: host:a}\n", "inv.yaml:2: "),
        // a NUL character, which PostgreSQL cannot store: refused on both
        // stores alike, naming the field
        (
            "resources:\n  - {id: host:a, kind: host, name: \"a\\0b\"}\n",
            "inv.yaml:2: resource 'host:a' has a NUL character (\\u0000) in its name",
        ),
        (
            "resources:\n  - {id: host:a, kind: host, labels: {team: \"x\\0\"}}\n",
            "inv.yaml:2: resource 'host:a' has a NUL character (\\u0000) in its label values",
        ),
        (
            "resources:\n  - {id: host:a, kind: host}\n  - {id: svc:a, kind: service}\nrelations:\n  - {from: svc:a, to: host:a, kind: runs_on, attributes: {note: \"\\0\"}}\n",
            "inv.yaml:5: relation 'svc:a' -[runs_on]-> 'host:a' has a NUL character (\\u0000) in its attributes",
        ),
        // a collector's own error quoting an id with a NUL in it: the
        // failed run and its reason are still recorded on PostgreSQL
        (
            "resources:\n  - {id: \"a\\0b\", kind: Bad Kind}\n",
            "inv.yaml:2: ",
        ),
        // an id longer than a PostgreSQL index entry can hold
        (long_id.as_str(), "inv.yaml:2: resource id 'h:xxxx"),
        // an empty (truncated?) file must not retire everything
        ("", "no 'resources:' list"),
        ("# nothing here\n", "no 'resources:' list"),
        // a relation to a resource this very file stops declaring
        (
            "resources:\n  - {id: svc:x, kind: service}\nrelations:\n  - {from: svc:x, to: host:a, kind: runs_on}\n",
            "inv.yaml:4: relation 'runs_on' points to 'host:a', which no source reports any more after this run",
        ),
    ];
    for (text, expected) in cases {
        f.write("inv.yaml", text);
        let run = load(&store, std::slice::from_ref(&p)).await;
        assert_eq!(run.status, RunStatus::Failed, "{text}");
        let err = run.error.unwrap();
        assert!(
            err.contains(expected),
            "error {err:?} should contain {expected:?}"
        );
        assert_eq!(
            store.load_all().await.unwrap(),
            before,
            "store changed after: {text}"
        );
    }
    // A missing file fails the run too, even next to a good one.
    f.write("inv.yaml", V1);
    let run = load(&store, &[p.clone(), f.path("missing.yaml")]).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("missing.yaml"));
    assert_eq!(store.load_all().await.unwrap(), before);
    let runs = store.runs(100).await.unwrap();
    assert_eq!(
        runs.iter()
            .filter(|r| r.status == RunStatus::Failed)
            .count(),
        13
    );
    // A source name too long for a PostgreSQL index entry beside two long
    // ids: refused by name on both stores, nothing written.
    let long = |c: &str| format!("h:{}", c.repeat(990));
    let (a, b) = (long("a"), long("b"));
    let mut big = batch(&"s".repeat(600), true, &[&a, &b]);
    big.relations
        .push(ObservedRelation::new(a.clone(), b.clone(), "depends_on"));
    let run = apply(&store, vec![big], vec![]).await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.unwrap();
    assert!(
        err.contains("source 'test:sss") && err.contains("is 605 bytes long"),
        "{err}"
    );
    assert_eq!(store.load_all().await.unwrap(), before);
    store.close().await;
}

fn batch(scope: &str, complete: bool, ids: &[&str]) -> ScopeBatch {
    ScopeBatch {
        scope: scope.into(),
        complete,
        resources: ids
            .iter()
            .map(|id| ObservedResource::new(*id, "host"))
            .collect(),
        relations: vec![],
        gone: Vec::new(),
    }
}

async fn apply(
    store: &Store,
    batches: Vec<ScopeBatch>,
    warnings: Vec<String>,
) -> infragraph::model::Run {
    store
        .apply(RunInput {
            collector: "test".into(),
            scope: "all".into(),
            started_at: infragraph::model::now_ms(),
            outcome: Ok(Collection {
                batches,
                warnings,
                notes: Vec::new(),
            }),
            retract: vec![],
            additive: false,
        })
        .await
        .unwrap()
}

async fn partial_run_retires_only_in_complete_scopes(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let run = apply(
        &store,
        vec![
            batch("r1", true, &["a", "b"]),
            batch("r2", true, &["c", "d"]),
        ],
        vec![],
    )
    .await;
    assert_eq!(run.status, RunStatus::Ok);
    // r2 failed half-way: it reports only c; r1 is complete and lost b.
    // A partial run retires nothing anywhere (issue 2: "a failed or partial
    // run retires nothing"), but it does record what it saw.
    let run = apply(
        &store,
        vec![batch("r1", true, &["a", "e"]), batch("r2", false, &["c"])],
        vec!["r2: timeout".into()],
    )
    .await;
    assert_eq!(run.status, RunStatus::Partial);
    assert_eq!(run.warnings, vec!["r2: timeout".to_string()]);
    assert_eq!((run.created, run.retired), (1, 0));
    let (res, _) = store.load_all().await.unwrap();
    let status = |res: &[infragraph::model::Resource], id: &str| {
        res.iter().find(|r| r.id == id).unwrap().status
    };
    for id in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            status(&res, id),
            Status::Present,
            "{id} after the partial run"
        );
    }
    // The next complete run retires what is really gone.
    let run = apply(
        &store,
        vec![batch("r1", true, &["a", "e"]), batch("r2", true, &["c"])],
        vec![],
    )
    .await;
    assert_eq!((run.status, run.retired), (RunStatus::Ok, 2));
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(status(&res, "b"), Status::Gone);
    assert_eq!(status(&res, "d"), Status::Gone);

    // A collector error retires nothing at all.
    let before = store.load_all().await.unwrap();
    let run = store
        .apply(RunInput {
            collector: "test".into(),
            scope: "all".into(),
            started_at: infragraph::model::now_ms(),
            outcome: Err("AccessDenied".into()),
            retract: vec![],
            additive: false,
        })
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("AccessDenied"));
    assert_eq!(store.load_all().await.unwrap(), before);
    store.close().await;
}

async fn two_sources_make_one_resource_with_two_provenances(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let a = f.write(
        "a.yaml",
        "resources:\n  - {id: host:x, kind: host, labels: {team: a}}\n",
    );
    let b = f.write(
        "b.yaml",
        "resources:\n  - {id: host:x, kind: host, name: x1, labels: {rack: r1}}\n",
    );
    load(&store, std::slice::from_ref(&a)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    load(&store, std::slice::from_ref(&b)).await;
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(res.len(), 1);
    let x = &res[0];
    assert_eq!(x.sources.len(), 2);
    assert_eq!(x.name, "x1");
    assert_eq!(x.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(x.labels.get("rack").map(String::as_str), Some("r1"));

    // b, the latest to report it, stops; a still reports it. Its last
    // report by any source stays b's: it does not go back to a's.
    let seen = x.last_seen;
    let b_text = std::fs::read_to_string(&b).unwrap();
    f.write("b.yaml", "resources: []\n");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    load(&store, std::slice::from_ref(&b)).await;
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(res[0].status, Status::Present);
    assert_eq!(res[0].last_seen, seen, "lastSeen went back");
    f.write("b.yaml", &b_text);
    load(&store, std::slice::from_ref(&b)).await;

    // a stops reporting it: still present through b, and a's labels go.
    f.write("a.yaml", "resources: []\n");
    load(&store, std::slice::from_ref(&a)).await;
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(res[0].status, Status::Present);
    assert!(!res[0].labels.contains_key("team"));
    let pa = res[0]
        .sources
        .iter()
        .find(|p| p.source.ends_with("a.yaml"))
        .unwrap();
    assert_eq!(pa.status, Status::Gone);

    f.write("b.yaml", "resources: []\n");
    load(&store, std::slice::from_ref(&b)).await;
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(res[0].status, Status::Gone);
    store.close().await;
}

/// Two sources that disagree settle on one merged view (the newer
/// provenance wins, whoever ran last) and log no update on later runs.
async fn disagreeing_sources_do_not_flip_the_merged_view(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let a = f.write(
        "a.yaml",
        "resources:\n  - {id: host:x, kind: host, name: from-a, labels: {team: a}, attributes: {os: debian}}\n",
    );
    let b = f.write(
        "b.yaml",
        "resources:\n  - {id: host:x, kind: host, name: from-b, labels: {team: b}, attributes: {os: ubuntu}}\n",
    );
    load(&store, std::slice::from_ref(&a)).await;
    load(&store, std::slice::from_ref(&b)).await;
    for file in [&a, &b, &a, &b] {
        let run = load(&store, std::slice::from_ref(file)).await;
        assert_eq!(
            (run.created, run.updated, run.retired),
            (0, 0, 0),
            "{file:?}"
        );
        let (res, _) = store.load_all().await.unwrap();
        assert_eq!(res[0].name, "from-b");
        assert_eq!(res[0].labels["team"], "b");
        assert_eq!(res[0].attributes["os"], "ubuntu");
    }
    let updates = store
        .history("host:x", None)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.op == ChangeOp::Update)
        .count();
    assert_eq!(updates, 1, "only b's arrival changed the merged view");
    // A manual assertion wins over both files, whoever runs after it.
    let mut m = ObservedResource::new("host:x", "host");
    m.name = Some("by-hand".into());
    store
        .apply(RunInput {
            collector: "manual".into(),
            scope: String::new(),
            started_at: infragraph::model::now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![ScopeBatch {
                    resources: vec![m],
                    ..Default::default()
                }],
                warnings: vec![],
            }),
            retract: vec![],
            additive: true,
        })
        .await
        .unwrap();
    for file in [&a, &b] {
        let run = load(&store, std::slice::from_ref(file)).await;
        assert_eq!(run.updated, 0, "{file:?}");
        let (res, _) = store.load_all().await.unwrap();
        assert_eq!(res[0].name, "by-hand");
        assert_eq!(res[0].labels["team"], "b");
    }
    store.close().await;
}

async fn updates_are_logged_with_a_diff_and_gone_resources_revive(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let p = f.write(
        "inv.yaml",
        "resources:\n  - {id: s, kind: service, labels: {team: a}}\n",
    );
    load(&store, std::slice::from_ref(&p)).await;
    f.write(
        "inv.yaml",
        "resources:\n  - {id: s, kind: service, labels: {team: b}}\n",
    );
    let run = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(run.updated, 1);
    // Same content again: no change logged.
    let run = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!((run.created, run.updated, run.retired), (0, 0, 0));
    f.write("inv.yaml", "resources: []\n");
    load(&store, std::slice::from_ref(&p)).await;
    f.write(
        "inv.yaml",
        "resources:\n  - {id: s, kind: service, labels: {team: b}}\n",
    );
    load(&store, std::slice::from_ref(&p)).await;
    let h = store.history("s", None).await.unwrap();
    let ops: Vec<ChangeOp> = h.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        vec![
            ChangeOp::Revive,
            ChangeOp::Retire,
            ChangeOp::Update,
            ChangeOp::Create
        ]
    );
    let update = &h[2];
    assert_eq!(update.diff["labels"]["old"]["team"], "a");
    assert_eq!(update.diff["labels"]["new"]["team"], "b");
    let (res, _) = store.load_all().await.unwrap();
    assert_eq!(res[0].status, Status::Present);
    assert_eq!(res[0].gone_at, None);
    store.close().await;
}

async fn kind_conflict_between_sources_is_rejected(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let a = f.write("a.yaml", "resources:\n  - {id: x, kind: host}\n");
    let b = f.write("b.yaml", "# b\nresources:\n  - {id: x, kind: database}\n");
    load(&store, std::slice::from_ref(&a)).await;
    let run = load(&store, std::slice::from_ref(&b)).await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.unwrap();
    assert!(
        err.contains(
            "b.yaml:3: resource 'x' is reported as kind 'database' but is already a 'host'"
        ),
        "{err}"
    );
    // The same source may change the kind (the file was edited).
    f.write("a.yaml", "resources:\n  - {id: x, kind: database}\n");
    let run = load(&store, std::slice::from_ref(&a)).await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    store.close().await;
}

/// `n` hosts h0..h{n-1}, each but h0 depending on h{i/2}, in one run.
async fn bulk(store: &Store, n: usize) -> infragraph::model::Run {
    let resources: Vec<ObservedResource> = (0..n)
        .map(|i| ObservedResource::new(format!("h{i}"), "host"))
        .collect();
    let relations: Vec<ObservedRelation> = (1..n)
        .map(|i| ObservedRelation::new(format!("h{i}"), format!("h{}", i / 2), "depends_on"))
        .collect();
    let run = apply(
        store,
        vec![ScopeBatch {
            scope: "bulk".into(),
            complete: true,
            resources,
            relations,
            gone: Vec::new(),
        }],
        vec![],
    )
    .await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    run
}

async fn bulk_load_spans_many_statements(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let n = 5_000;
    let run = bulk(&store, n).await;
    assert_eq!(run.created, (2 * n - 1) as i64);
    let (res, rels) = store.load_all().await.unwrap();
    assert_eq!((res.len(), rels.len()), (n, n - 1));
    store.close().await;
}

async fn manual_assertions_are_additive_and_retractable(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let manual = |batch: ScopeBatch, retract: Vec<(String, Key)>| RunInput {
        collector: "manual".into(),
        scope: String::new(),
        started_at: infragraph::model::now_ms(),
        outcome: Ok(Collection {
            notes: Vec::new(),
            batches: vec![batch],
            warnings: vec![],
        }),
        retract,
        additive: true,
    };
    let run = store
        .apply(manual(batch("", false, &["m1"]), vec![]))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Ok);
    store
        .apply(manual(batch("", false, &["m2"]), vec![]))
        .await
        .unwrap();
    let (res, _) = store.load_all().await.unwrap();
    assert!(
        res.iter().all(|r| r.status == Status::Present),
        "asserting m2 must not retire m1"
    );
    assert_eq!(res[0].sources[0].source, "manual");
    store
        .apply(manual(
            ScopeBatch::default(),
            vec![(String::new(), Key::Resource("m1".into()))],
        ))
        .await
        .unwrap();
    let (res, _) = store.load_all().await.unwrap();
    let m1 = res.iter().find(|r| r.id == "m1").unwrap();
    assert_eq!(m1.status, Status::Gone);
    store.close().await;
}

mod changed {
    use super::*;
    both_backends!(
        changed_dependencies_follow_the_change_log,
        changed_dependencies_follow_chains_of_removed_relations
    );
}

/// A chain of relations removed in the window (top → mid → bottom, both
/// dropped) is followed to its end, whatever order the ids sort in: the
/// change log lists the retirements by time and id, and the one from mid
/// may come before the one that makes mid a dependency at all.
async fn changed_dependencies_follow_chains_of_removed_relations(url: String) {
    // Ids in each order: the needer of the second link sorting before and
    // after the first link's.
    for (top, mid, bottom) in [
        ("svc:a", "svc:b", "db:z"),
        ("svc:z-top", "svc:a-mid", "db:c"),
    ] {
        let store = Store::connect(&url).await.unwrap();
        let f = Files::new();
        // The same resources each time; `chain` says whether the removed
        // links are there. The present chain top → p1 → p2 → p3 stays.
        let inventory = |chain: bool| {
            let mut text = format!(
                "resources:
  - {{id: '{top}', kind: service}}
  - {{id: '{mid}', kind: service}}
  - {{id: '{bottom}', kind: database}}
  - {{id: '{top}-p1', kind: service}}
  - {{id: '{top}-p2', kind: service}}
  - {{id: '{top}-p3', kind: service}}
relations:
  - {{from: '{top}', to: '{top}-p1', kind: depends_on}}
  - {{from: '{top}-p1', to: '{top}-p2', kind: depends_on}}
  - {{from: '{top}-p2', to: '{top}-p3', kind: depends_on}}
"
            );
            if chain {
                text.push_str(&format!(
                    "  - {{from: '{top}', to: '{mid}', kind: depends_on}}
  - {{from: '{mid}', to: '{bottom}', kind: depends_on}}
  - {{from: '{top}-p3', to: '{bottom}', kind: depends_on}}
"
                ));
            }
            text
        };
        let p = f.write("inv.yaml", &inventory(true));
        load(&store, std::slice::from_ref(&p)).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let since = infragraph::model::now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // The three links to and from the chain go in one run; the
        // resources stay.
        f.write("inv.yaml", &inventory(false));
        load(&store, std::slice::from_ref(&p)).await;
        let (res, rels) = store.load_all().await.unwrap();
        let snap = infragraph::graph::Snapshot::build(res, rels, 0);
        let ix = snap.lookup(top).unwrap();
        let changed = infragraph::incident::changed_dependencies(&store, &snap, ix, None, since)
            .await
            .unwrap();
        let mut got: Vec<(String, u32)> = changed
            .iter()
            .map(|c| {
                (
                    snap.resource(c.dependency.node).id.clone(),
                    c.dependency.depth,
                )
            })
            .collect();
        got.sort();
        // bottom was needed two ways, both removed: through mid (depth 2)
        // and through the still-present chain p1 → p2 → p3 (depth 4); p3
        // changed (it lost a relation it needed).
        let mut want = vec![
            (mid.to_string(), 1),
            (bottom.to_string(), 2),
            (format!("{top}-p3"), 3),
        ];
        want.sort();
        assert_eq!(got, want, "{top} → {mid} → {bottom}");
        // With a depth limit, the chain stops there.
        let one = infragraph::incident::changed_dependencies(&store, &snap, ix, Some(1), since)
            .await
            .unwrap();
        assert_eq!(one.len(), 1, "{top} → {mid} → {bottom}, depth 1");
        assert_eq!(snap.resource(one[0].dependency.node).id, mid);
        store.close().await;
        drop(f);
    }
}

/// `dependencies(changedSince)`: the incident question "what changed
/// upstream?", checked against the store's own history.
async fn changed_dependencies_follow_the_change_log(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let p = f.write(
        "inv.yaml",
        "resources:
  - {id: web, kind: service}
  - {id: db, kind: database, labels: {v: '1'}}
  - {id: cache, kind: cache}
  - {id: host, kind: host}
relations:
  - {from: web, to: db, kind: depends_on}
  - {from: web, to: cache, kind: depends_on}
  - {from: db, to: host, kind: runs_on}
",
    );
    load(&store, std::slice::from_ref(&p)).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = infragraph::model::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // db changes a label; web stops depending on cache; host is untouched.
    f.write(
        "inv.yaml",
        "resources:
  - {id: web, kind: service}
  - {id: db, kind: database, labels: {v: '2'}}
  - {id: cache, kind: cache}
  - {id: host, kind: host}
  - {id: other, kind: service}
relations:
  - {from: web, to: db, kind: depends_on}
  - {from: db, to: host, kind: runs_on}
  - {from: other, to: host, kind: runs_on}
",
    );
    load(&store, std::slice::from_ref(&p)).await;
    let (res, rels) = store.load_all().await.unwrap();
    let snap = infragraph::graph::Snapshot::build(res, rels, 0);
    let web = snap.lookup("web").unwrap();
    let all = snap.dependencies(web, None);
    assert_eq!(all.len(), 2, "db and host; cache is no longer a dependency");
    let changed = infragraph::incident::changed_dependencies(&store, &snap, web, None, since)
        .await
        .unwrap();
    let ids: Vec<&str> = changed
        .iter()
        .map(|c| snap.resource(c.dependency.node).id.as_str())
        .collect();
    let dbg: Vec<_> = changed
        .iter()
        .map(|c| {
            (
                snap.resource(c.dependency.node).id.clone(),
                c.changes.clone(),
            )
        })
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "host only gained a dependant, which is not an upstream change: {dbg:?}"
    );
    assert!(ids.contains(&"db") && ids.contains(&"cache"), "{ids:?}");
    let db = changed
        .iter()
        .find(|c| snap.resource(c.dependency.node).id == "db")
        .unwrap();
    assert!(
        db.changes
            .iter()
            .any(|c| c.op == ChangeOp::Update && c.diff["labels"]["new"]["v"] == "2")
    );
    let cache = changed
        .iter()
        .find(|c| snap.resource(c.dependency.node).id == "cache")
        .unwrap();
    assert!(
        cache
            .changes
            .iter()
            .any(|c| c.op == ChangeOp::Retire && c.relation.is_some())
    );
    assert_eq!(snap.relation(cache.dependency.path[0]).to, "cache");
    // Nothing changed before the first load's window.
    let later = infragraph::model::now_ms() + 1000;
    assert!(
        infragraph::incident::changed_dependencies(&store, &snap, web, None, later)
            .await
            .unwrap()
            .is_empty()
    );

    // The resource's own needs change: web gains two relations to host
    // (only one can explain the dependency), then loses one of them while
    // the other still leads there. Each is a change of the dependency
    // host, whether or not it is on the explaining path.
    let third = "resources:
  - {id: web, kind: service}
  - {id: db, kind: database, labels: {v: '2'}}
  - {id: cache, kind: cache}
  - {id: host, kind: host}
  - {id: other, kind: service}
relations:
  - {from: web, to: db, kind: depends_on}
  - {from: db, to: host, kind: runs_on}
  - {from: other, to: host, kind: runs_on}
  - {from: web, to: host, kind: runs_on}
";
    let host_changes = |since: i64| {
        let store = &store;
        async move {
            let (res, rels) = store.load_all().await.unwrap();
            let snap = infragraph::graph::Snapshot::build(res, rels, 0);
            let web = snap.lookup("web").unwrap();
            infragraph::incident::changed_dependencies(store, &snap, web, None, since)
                .await
                .unwrap()
                .into_iter()
                .filter(|c| snap.resource(c.dependency.node).id == "host")
                .flat_map(|c| c.changes)
                .map(|c| (c.op, c.relation.map(|(_, kind)| kind)))
                .collect::<Vec<_>>()
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = infragraph::model::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.write(
        "inv.yaml",
        &third.replace(
            "  - {from: web, to: host, kind: runs_on}\n",
            "  - {from: web, to: host, kind: runs_on}\n  - {from: web, to: host, kind: depends_on}\n",
        ),
    );
    load(&store, std::slice::from_ref(&p)).await;
    let mut got = host_changes(since).await;
    got.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        got,
        [
            (ChangeOp::Create, Some("depends_on".to_string())),
            (ChangeOp::Create, Some("runs_on".to_string())),
        ]
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let since = infragraph::model::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.write("inv.yaml", third);
    load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(
        host_changes(since).await,
        [(ChangeOp::Retire, Some("depends_on".to_string()))]
    );
    store.close().await;
}

/// A source that positively reports a resource gone (an instance the API says
/// is terminated) retires it, and its own relations touching it, even when
/// the run is partial; other sources' provenance is untouched.
async fn reported_gone_retires_even_in_a_partial_run(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let mut r1 = batch("r1", true, &["a", "b", "svc"]);
    r1.relations = vec![
        ObservedRelation::new("a", "svc", "instance_of"),
        ObservedRelation::new("b", "svc", "instance_of"),
    ];
    let run = apply(&store, vec![r1, batch("r2", true, &["x"])], vec![]).await;
    assert_eq!(run.status, RunStatus::Ok);
    // Another source also reports b.
    store
        .apply(RunInput {
            collector: "other".into(),
            scope: "all".into(),
            started_at: infragraph::model::now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![batch("o", true, &["b"])],
                warnings: vec![],
            }),
            retract: vec![],
            additive: false,
        })
        .await
        .unwrap();

    let mut r1 = batch("r1", true, &["svc"]);
    r1.gone = vec!["a".into(), "b".into(), "never-seen".into()];
    let run = apply(
        &store,
        vec![r1, batch("r2", false, &[])],
        vec!["r2: timeout".into()],
    )
    .await;
    assert_eq!(run.status, RunStatus::Partial);
    let (res, rels) = store.load_all().await.unwrap();
    let status = |id: &str| res.iter().find(|r| r.id == id).map(|r| r.status);
    assert_eq!(status("a"), Some(Status::Gone), "reported gone");
    assert_eq!(
        status("b"),
        Some(Status::Present),
        "still reported by other"
    );
    assert_eq!(
        status("x"),
        Some(Status::Present),
        "partial: nothing retired by absence"
    );
    assert_eq!(
        status("never-seen"),
        None,
        "gone for an unknown id is a no-op"
    );
    let instance_of: Vec<_> = rels.iter().filter(|r| r.kind == "instance_of").collect();
    assert_eq!(instance_of.len(), 2);
    for rel in instance_of {
        // b's relation goes too: only the "other" source reports b, and it
        // never reported the relation.
        assert_eq!(rel.status, Status::Gone, "{} -> {}", rel.from, rel.to);
    }

    // Present and gone in one report is a contradiction, refused.
    let mut r1 = batch("r1", true, &["svc", "x"]);
    r1.gone = vec!["x".into()];
    let err = store
        .apply(RunInput {
            collector: "test".into(),
            scope: "all".into(),
            started_at: infragraph::model::now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![r1],
                warnings: vec![],
            }),
            retract: vec![],
            additive: false,
        })
        .await
        .unwrap();
    assert_eq!(err.status, RunStatus::Failed);
    assert!(
        err.error
            .unwrap()
            .contains("reported both present and gone"),
        "names the contradiction"
    );
    store.close().await;
}

/// A placeholder (a service an EC2 tag names) never causes a kind conflict:
/// a real report of another kind wins, in the same run (either order) or
/// already in the store; without a conflict it is an ordinary observation.
async fn placeholders_yield_to_other_kinds(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let placeholder = |id: &str| {
        let mut r = ObservedResource::new(id, "service");
        r.placeholder = true;
        r
    };
    let mut b1 = batch("a", true, &["h1"]);
    b1.resources.push(placeholder("svc:x"));
    b1.relations = vec![ObservedRelation::new("h1", "svc:x", "instance_of")];
    let mut b2 = batch("b", true, &[]);
    b2.resources
        .push(ObservedResource::new("svc:x", "database"));
    let mut b3 = batch("c", true, &[]);
    b3.resources.push(placeholder("svc:x"));
    // Placeholder first, the real report after; then another placeholder.
    let run = apply(&store, vec![b1, b2, b3], vec![]).await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    let (res, rels) = store.load_all().await.unwrap();
    let x = res.iter().find(|r| r.id == "svc:x").unwrap();
    assert_eq!(x.kind, "database");
    assert_eq!(x.sources.len(), 1, "only the real report: {:?}", x.sources);
    assert_eq!(rels.len(), 1);

    // Later, the placeholder alone: the store's kind stands.
    let mut b1 = batch("a", true, &["h1"]);
    b1.resources.push(placeholder("svc:x"));
    b1.relations = vec![ObservedRelation::new("h1", "svc:x", "instance_of")];
    let run = apply(
        &store,
        vec![b1, batch("b", true, &[]), batch("c", true, &[])],
        vec![],
    )
    .await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    let (res, _) = store.load_all().await.unwrap();
    let x = res.iter().find(|r| r.id == "svc:x").unwrap();
    // b no longer reports it (retired by absence in this run), so nothing
    // else keeps it a database: the placeholder keeps it, as a service.
    assert_eq!((x.kind.as_str(), x.status), ("service", Status::Present));

    // No conflict: a placeholder is an ordinary observation.
    let mut b = batch("d", true, &["h2"]);
    b.resources.push(placeholder("svc:y"));
    b.relations = vec![ObservedRelation::new("h2", "svc:y", "instance_of")];
    let run = apply(&store, vec![b], vec![]).await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    let (res, _) = store.load_all().await.unwrap();
    let y = res.iter().find(|r| r.id == "svc:y").unwrap();
    assert_eq!((y.kind.as_str(), y.status), ("service", Status::Present));

    // The store remembers a guess: a later source that declares the id as
    // another kind replaces it, whichever came first (an agent's listener
    // or an EC2 tag before the inventory, say).
    let mut e = batch("e", true, &[]);
    e.resources.push(ObservedResource::new("svc:y", "database"));
    let run = apply(&store, vec![e], vec![]).await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    let (res, _) = store.load_all().await.unwrap();
    let y = res.iter().find(|r| r.id == "svc:y").unwrap();
    assert_eq!((y.kind.as_str(), y.status), ("database", Status::Present));
    let history = store.history("svc:y", None).await.unwrap();
    assert!(
        history
            .iter()
            .any(|c| c.op == ChangeOp::Update && c.diff.to_string().contains("database")),
        "the kind's change is in the history: {history:?}"
    );
    // The guesser's next report leaves the declared kind alone.
    let mut d = batch("d", true, &["h2"]);
    d.resources.push(placeholder("svc:y"));
    d.relations = vec![ObservedRelation::new("h2", "svc:y", "instance_of")];
    let run = apply(&store, vec![d], vec![]).await;
    assert_eq!(run.status, RunStatus::Ok, "{:?}", run.error);
    let (res, rels) = store.load_all().await.unwrap();
    let y = res.iter().find(|r| r.id == "svc:y").unwrap();
    assert_eq!((y.kind.as_str(), y.status), ("database", Status::Present));
    assert!(
        rels.iter()
            .any(|r| r.from == "h2" && r.to == "svc:y" && r.status == Status::Present)
    );
    // A kind reported for real still conflicts.
    let mut f = batch("f", true, &[]);
    f.resources.push(ObservedResource::new("svc:y", "queue"));
    let run = apply(&store, vec![f], vec![]).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.as_deref().unwrap_or_default().contains(
            "is reported as kind 'queue' but is already a 'database' (reported by test:e)"
        ),
        "{:?}",
        run.error
    );
    store.close().await;
}

/// An additive run of the `manual` collector: these resources (as
/// services) and relations, asserted by hand.
async fn by_hand(store: &Store, resources: &[&str], relations: &[(&str, &str, &str)]) {
    let mut b = ScopeBatch::default();
    for id in resources {
        b.resources.push(ObservedResource::new(*id, "service"));
    }
    for (from, to, kind) in relations {
        b.relations.push(ObservedRelation {
            from: (*from).into(),
            to: (*to).into(),
            kind: (*kind).into(),
            attributes: serde_json::Value::Null,
            origin: None,
        });
    }
    store
        .apply(RunInput {
            collector: "manual".into(),
            scope: String::new(),
            started_at: infragraph::model::now_ms(),
            outcome: Ok(Collection {
                notes: Vec::new(),
                batches: vec![b],
                warnings: vec![],
            }),
            retract: vec![],
            additive: true,
        })
        .await
        .unwrap();
}

/// A relation another source asserted (here by hand) goes GONE with its end
/// and comes back with it, each time with a change entry; the manual
/// assertion itself is never ended by another source's run.
async fn relations_follow_their_ends_whoever_asserted_them(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let f = Files::new();
    let p = f.write("inv.yaml", V1);
    load(&store, std::slice::from_ref(&p)).await;
    // By hand: svc:y runs on host:a, and m:1 (asserted by hand too, so no
    // other run loads its relations) depends on svc:y.
    by_hand(
        &store,
        &["m:1"],
        &[
            ("svc:y", "host:a", "runs_on"),
            ("m:1", "svc:y", "depends_on"),
        ],
    )
    .await;
    let rel = |rels: &[infragraph::model::Relation], from: &str, to: &str| {
        rels.iter()
            .find(|r| r.from == from && r.to == to)
            .map(|r| r.status)
            .unwrap()
    };
    let status = |rels: &[infragraph::model::Relation]| rel(rels, "svc:y", "host:a");
    let (_, rels) = store.load_all().await.unwrap();
    assert_eq!(status(&rels), Status::Present);
    let into = |rels: &[infragraph::model::Relation]| rel(rels, "m:1", "svc:y");
    assert_eq!(into(&rels), Status::Present);

    // The file drops svc:y: the manual relations from and to it go too.
    f.write(
        "inv.yaml",
        "resources:\n  - {id: host:a, kind: host}\n  - {id: svc:x, kind: service, labels: {team: core}}\nrelations:\n  - {from: svc:x, to: host:a, kind: runs_on}\n",
    );
    let run = load(&store, std::slice::from_ref(&p)).await;
    let (res, rels) = store.load_all().await.unwrap();
    assert_eq!(
        res.iter().find(|r| r.id == "svc:y").unwrap().status,
        Status::Gone
    );
    assert_eq!(status(&rels), Status::Gone);
    assert_eq!(into(&rels), Status::Gone);
    let h = store.history("m:1", None).await.unwrap();
    assert_eq!(h[0].op, ChangeOp::Retire, "{h:?}");
    assert_eq!(h[0].relation, Some(("svc:y".into(), "depends_on".into())));
    let manual_rel = |h: &[infragraph::model::Change]| {
        h.iter()
            .filter(|c| {
                c.relation == Some(("host:a".into(), "runs_on".into())) && c.resource_id == "svc:y"
            })
            .map(|c| (c.op, c.run_id, c.source.clone()))
            .collect::<Vec<_>>()
    };
    let h = store.history("host:a", None).await.unwrap();
    assert_eq!(
        manual_rel(&h)[0],
        (
            ChangeOp::Retire,
            Some(run.id),
            format!("inventory:{}", p.display())
        ),
        "{h:?}"
    );

    // svc:y comes back: so does the relation, still asserted by hand.
    f.write("inv.yaml", V1);
    let run = load(&store, std::slice::from_ref(&p)).await;
    let (_, rels) = store.load_all().await.unwrap();
    assert_eq!(status(&rels), Status::Present);
    assert_eq!(into(&rels), Status::Present);
    let h = store.history("host:a", None).await.unwrap();
    assert_eq!(manual_rel(&h)[0].0, ChangeOp::Revive, "{h:?}");
    assert_eq!(manual_rel(&h)[0].1, Some(run.id));

    // A resource the file lists with no relation of its own, which a
    // manual relation starts at: it goes, and the relation with it.
    let with_q = V1.replace("relations:", "  - {id: db:q, kind: database}\nrelations:");
    f.write("inv.yaml", &with_q);
    load(&store, std::slice::from_ref(&p)).await;
    by_hand(&store, &[], &[("db:q", "host:a", "runs_on")]).await;
    let q = |rels: &[infragraph::model::Relation]| rel(rels, "db:q", "host:a");
    assert_eq!(q(&store.load_all().await.unwrap().1), Status::Present);
    f.write("inv.yaml", V1);
    load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(q(&store.load_all().await.unwrap().1), Status::Gone);
    // It comes back, and the relation with it.
    f.write("inv.yaml", &with_q);
    load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(q(&store.load_all().await.unwrap().1), Status::Present);

    // Both ends of a manual relation go in one run, then both come back:
    // the relation is read from either end, and changes once each time.
    let with_pair = V1.replace(
        "relations:",
        "  - {id: db:q, kind: database}\n  - {id: db:r, kind: database}\nrelations:",
    );
    f.write("inv.yaml", &with_pair);
    load(&store, std::slice::from_ref(&p)).await;
    by_hand(&store, &[], &[("db:q", "db:r", "depends_on")]).await;
    let qr = |rels: &[infragraph::model::Relation]| rel(rels, "db:q", "db:r");
    assert_eq!(qr(&store.load_all().await.unwrap().1), Status::Present);
    let pair_changes = |h: &[infragraph::model::Change]| {
        h.iter()
            .filter(|c| c.relation == Some(("db:r".into(), "depends_on".into())))
            .map(|c| (c.op, c.run_id))
            .collect::<Vec<_>>()
    };
    f.write("inv.yaml", V1);
    let gone = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(qr(&store.load_all().await.unwrap().1), Status::Gone);
    f.write("inv.yaml", &with_pair);
    let back = load(&store, std::slice::from_ref(&p)).await;
    assert_eq!(qr(&store.load_all().await.unwrap().1), Status::Present);
    let h = store.history("db:q", None).await.unwrap();
    let changes = pair_changes(&h);
    assert_eq!(
        changes
            .iter()
            .filter(|c| c.1 == Some(gone.id) || c.1 == Some(back.id))
            .copied()
            .collect::<Vec<_>>(),
        vec![
            (ChangeOp::Revive, Some(back.id)),
            (ChangeOp::Retire, Some(gone.id))
        ],
        "{h:?}"
    );
    store.close().await;
}

/// A run that retires or revives a resource reads every source's assertion
/// of the relations ending at it, by `to_id`: that read goes through an
/// index, not a scan of every assertion in the store. (PostgreSQL plans a
/// scan for a table this small, so sequential scans are turned off to see
/// whether the index can serve the query at all.)
async fn relations_ending_at_a_resource_are_read_through_an_index(url: String) {
    use sqlx::{Connection, Row};
    Store::connect(&url).await.unwrap();
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    // The plan's text: SQLite's fourth column, PostgreSQL's only one.
    let (explain, column) = if url.starts_with("sqlite") {
        (
            "EXPLAIN QUERY PLAN SELECT from_id, to_id, kind, source FROM relation_sources WHERE to_id IN ('host:a', 'host:b')",
            3,
        )
    } else {
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut c)
            .await
            .unwrap();
        (
            "EXPLAIN SELECT from_id, to_id, kind, source FROM relation_sources WHERE to_id IN ('host:a', 'host:b')",
            0,
        )
    };
    let plan = sqlx::query(explain)
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(column).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("relation_sources_to"), "the plan: {plan}");
}

/// SQLite has one writer at a time. A run that finds the file locked by
/// another process (a `collect` beside a running server's long run) waits
/// and goes in once the lock is free, instead of failing after the
/// driver's 10 s and leaving no record; runs in one process take turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_run_waits_for_another_writer_instead_of_failing() {
    use sqlx::Connection;
    let db = common::TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    // The other process: a connection of its own holding the write lock.
    let mut other = sqlx::AnyConnection::connect(&format!("{}?mode=rw", db.url))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let (s1, s2) = (store.clone(), store.clone());
    let first =
        tokio::spawn(async move { apply(&s1, vec![batch("r1", true, &["a"])], vec![]).await });
    let second =
        tokio::spawn(async move { apply(&s2, vec![batch("r2", true, &["b"])], vec![]).await });
    // Past the driver's busy timeout.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    assert!(!first.is_finished() && !second.is_finished());
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    for run in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(run.status, RunStatus::Ok, "{run:?}");
    }
    let (res, _) = store.load_all().await.unwrap();
    let mut ids: Vec<&str> = res.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(store.runs(10).await.unwrap().len(), 2, "no failed runs");
    store.close().await;
}
