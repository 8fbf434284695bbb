//! The binary end to end: `schema` drift, `collect inventory`, `impact`,
//! `serve --config` with its scheduler, and `--database-url` on PostgreSQL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{bin, run_cli as run, text};

/// Each `args` fails (exit 1) with an error that contains its `says`.
fn refused(url: &str, cases: &[(&[&str], &str)]) {
    for (args, says) in cases {
        let out = run(url, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// The committed SDL must match what the binary prints. If this fails, run
/// `cargo run -- schema > schema/infragraph.graphql` and commit the result.
#[test]
fn committed_schema_matches_the_binary() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/infragraph.graphql"
    ))
    .unwrap();
    assert!(
        text(&out.stdout) == committed,
        "schema/infragraph.graphql is stale: run `cargo run -- schema > schema/infragraph.graphql`"
    );
    // The field types the core issue gives as a contract (descriptions
    // aside): clients generate code from them.
    let field = |ty: &str, name: &str| -> String {
        let start = committed
            .find(&format!("\ntype {ty} {{"))
            .unwrap_or_else(|| panic!("no type {ty}"));
        let body = &committed[start..];
        let body = &body[..body.find("\n}").unwrap()];
        body.lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{name}(")) || l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {ty}.{name}"))
            .to_string()
    };
    for (ty, want) in [
        ("Query", "resource(id: ID!): Resource"),
        ("Query", "impact(failed: [ID!]"),
        ("Query", "dependencies(id: ID!"),
        ("Resource", "id: ID!"),
        ("Resource", "kind: String!"),
        ("Resource", "name: String!"),
        ("Resource", "labels: [Label!]!"),
        ("Resource", "status: ResourceStatus!"),
        ("Resource", "firstSeen: DateTime!"),
        ("Resource", "sources: [Provenance!]!"),
        (
            "Resource",
            "relations(direction: Direction, kind: String): [Relation!]!",
        ),
        ("Relation", "kind: String!"),
        ("Relation", "from: Resource!"),
        ("Relation", "to: Resource!"),
        ("ResourceConnection", "totalCount: Int!"),
        ("ImpactedResource", "resource: Resource!"),
        ("ImpactedResource", "depth: Int!"),
        ("ImpactedResource", "path: [Relation!]!"),
        (
            "Mutation",
            "assertResource(id: ID!, kind: String!, name: String, labels: [LabelInput!]): Resource!",
        ),
        (
            "Mutation",
            "assertRelation(from: ID!, to: ID!, kind: String!): Relation!",
        ),
        ("Mutation", "retractResource(id: ID!): Boolean!"),
        (
            "Mutation",
            "retractRelation(from: ID!, to: ID!, kind: String!): Boolean!",
        ),
    ] {
        let name = want.split(['(', ':']).next().unwrap();
        let got = field(ty, name);
        assert!(
            got.starts_with(want),
            "{ty}.{name}: `{got}`, the contract says `{want}`"
        );
    }
}

#[test]
fn collect_and_impact_from_the_command_line() {
    let db = common::TestDb::sqlite();
    let out = run(
        &db.url,
        &[
            "collect",
            "inventory",
            common::demo_inventory().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok — 73 resources"),
        "{}",
        text(&out.stdout)
    );
    // The demo's relation kinds all carry impact: nothing to warn about,
    // and no log lines that repeat the outcome.
    let err = text(&out.stderr);
    assert!(!err.contains("warning") && !err.contains("WARN"), "{err}");

    let out = run(&db.url, &["impact", "host:db-1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let down = v["down"].as_array().unwrap();
    assert_eq!(
        down[0],
        json!({"id": "host:db-1", "kind": "host", "status": "down", "depth": 0, "path": []})
    );
    let checkout = down.iter().find(|d| d["id"] == "svc:checkout").unwrap();
    assert_eq!(checkout["depth"], 2);
    assert_eq!(
        checkout["path"],
        json!([{"from": "db:orders", "to": "host:db-1", "kind": "runs_on", "sources": [format!("inventory:{}", common::demo_inventory().display())]},
               {"from": "svc:checkout", "to": "db:orders", "kind": "depends_on", "sources": [format!("inventory:{}", common::demo_inventory().display())]}])
    );
    assert!(v["degraded"].is_array());

    let out = run(&db.url, &["impact", "host:db-1", "svc:nope", "host:zzz"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown resource ids 'svc:nope', 'host:zzz'"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&db.url, &["dependencies", "svc:checkout"]);
    assert!(
        text(&out.stdout).contains("host:db-1"),
        "{}",
        text(&out.stdout)
    );
}

/// `generate -o FILE` writes the format the file's extension names, so the
/// inventory collector, which reads by extension, loads it back.
#[test]
fn generated_estates_load_back_as_yaml_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["small.yaml", "small.json"] {
        let db = common::TestDb::sqlite();
        let path = dir.path().join(name);
        let out = bin()
            .args(["generate", "--size", "small", "-o"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let out = run(&db.url, &["collect", "inventory", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("ok — 1071 resources, 4800 relations"),
            "{name}: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_bad_inventory_file_is_rejected_with_file_and_line_and_writes_nothing() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let good = files.write("good.yaml", "resources:\n  - {id: a, kind: host}\n  - {id: b, kind: service}\nrelations:\n  - {from: b, to: a, kind: runs_on}\n");
    assert!(
        run(&db.url, &["collect", "inventory", good.to_str().unwrap()])
            .status
            .success()
    );
    let bad = files.write(
        "bad.yaml",
        "resources:\n  - {id: c, kind: service}\nrelations:\n  - {from: c, to: a, kind: runs_on}\n  - {from: c, to: svc:pay, kind: depends_on}\n",
    );
    let out = run(&db.url, &["collect", "inventory", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: relation 'depends_on' points to unknown resource 'svc:pay'",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    // Told once: by the error, not again by a log line.
    assert_eq!(
        err.matches("points to unknown resource").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("run failed"), "{err}");
    let out = run(&db.url, &["impact", "c"]);
    assert!(
        !out.status.success(),
        "c must not exist after the rejected run"
    );
    let out = run(&db.url, &["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[1]["status"], "ok");
}

#[test]
fn the_database_url_comes_from_the_environment_too() {
    let db = common::TestDb::sqlite();
    let out = bin()
        .env("INFRAGRAPH_DATABASE_URL", &db.url)
        .args([
            "collect",
            "inventory",
            common::demo_inventory().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&db.url, &["impact", "svc:dns"]);
    assert!(
        text(&out.stdout).contains("svc:storefront"),
        "{}",
        text(&out.stdout)
    );
    let out = run("mysql://root@localhost/x", &["runs"]);
    assert!(
        text(&out.stderr).contains("unsupported database url"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn postgres_collect_and_impact() {
    let Some(db) = common::TestDb::postgres("postgres_collect_and_impact").await else {
        return;
    };
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let a = run(
            &url,
            &[
                "collect",
                "inventory",
                common::demo_inventory().to_str().unwrap(),
            ],
        );
        let b = run(&url, &["impact", "host:db-1", "--json"]);
        // A database that is not there: PostgreSQL's words and code, not
        // the line of PostgreSQL's own source that raised it.
        let c = run(&format!("{url}_missing"), &["runs"]);
        (a, b, c)
    })
    .await
    .unwrap();
    let err = text(&out.2.stderr);
    assert_eq!(out.2.status.code(), Some(1), "{err}");
    assert!(
        err.contains("_missing\" does not exist (SQLSTATE 3D000)"),
        "{err}"
    );
    assert!(!err.contains("at line"), "{err}");
    assert!(out.0.status.success(), "{}", text(&out.0.stderr));
    let v: Value = serde_json::from_slice(&out.1.stdout).unwrap();
    assert!(
        v["down"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "svc:payments")
    );
}

struct Child(std::process::Child);

/// One GraphQL query to a server at `addr`.
async fn gql(addr: &str, query: &str) -> Value {
    reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Asks `query` until its answer contains `want` (30 s at most).
async fn wait_for(addr: &str, query: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = gql(addr, query).await;
        if v.to_string().contains(want) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `serve --config cfg` (which listens on port 0) and returns it with
/// the address it announced.
fn serve_child(cfg: &std::path::Path) -> (Child, String) {
    let mut child = Child(
        bin()
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("serving GraphQL at http://") {
                let rest = &line[pos + "serving GraphQL at http://".len()..];
                let addr = rest.split('/').next().unwrap().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server announced its address");
    (child, addr)
}
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_runs_the_configured_collectors_on_their_interval() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    files.write(
        "inv.yaml",
        "resources:\n  - {id: h1, kind: host}\n  - {id: s1, kind: service}\nrelations:\n  - {from: s1, to: h1, kind: runs_on}\n",
    );
    let cfg = files.write(
        "infragraph.toml",
        &format!(
            "database_url = \"{}\"\nlisten = \"127.0.0.1:0\"\n[[collectors]]\ntype = \"inventory\"\ninterval = \"1s\"\npaths = [\"inv.yaml\"]\n",
            db.url
        ),
    );
    let (_child, addr) = serve_child(&cfg);
    let gql = |q: &'static str| gql(&addr, q);
    let wait_for = |q: &'static str, want: &'static str| wait_for(&addr, q, want);
    wait_for(
        r#"{ impact(failed: ["h1"]) { down { resource { id } } } }"#,
        "\"s1\"",
    )
    .await;
    // Edit the file: s1 vanishes; the next scheduled run retires it.
    files.write("inv.yaml", "resources:\n  - {id: h1, kind: host}\n");
    wait_for(r#"{ resource(id: "s1") { status } }"#, "GONE").await;
    let v = gql(r#"{ runs(last: 10) { status collector } }"#).await;
    assert!(v["data"]["runs"].as_array().unwrap().len() >= 2, "{v}");
}

/// Regressions from review: an emptied file must not retire everything, a
/// GONE resource cannot be "failed", `./x` and `x` are one source, and
/// `--help` never prints the database password.
#[test]
fn emptied_files_gone_ids_path_spelling_and_help() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let p = files.write(
        "inv.yaml",
        "resources:\n  - {id: a, kind: host}\n  - {id: b, kind: host}\n",
    );
    let dir = files.dir.path();
    let collect = |arg: &str| {
        bin()
            .current_dir(dir)
            .arg("--database-url")
            .arg(&db.url)
            .args(["collect", "inventory", arg])
            .output()
            .unwrap()
    };
    assert!(collect("./inv.yaml").status.success());
    std::fs::write(&p, "resources:\n  - {id: a, kind: host}\n").unwrap();
    let out = collect("inv.yaml");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 retired"),
        "same source whatever the spelling: {}",
        text(&out.stdout)
    );

    std::fs::write(&p, "").unwrap();
    let out = collect("inv.yaml");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no 'resources:' list"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&db.url, &["impact", "b"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("resource 'b' is GONE"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&db.url, &["impact", "a"]);
    assert!(out.status.success());
    // Nor is a gone resource a path's end, nor does it need anything now.
    for args in [&["path", "a", "b"][..], &["dependencies", "b"][..]] {
        let out = run(&db.url, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("resource 'b' is GONE"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        run(&db.url, &["dependencies", "b", "--changed-since", "1h"])
            .status
            .success()
    );
    // Selector typos are errors naming the term, never "everything" or "none".
    refused(
        &db.url,
        &[
            (
                &["impact", "--where", "kind!=host"][..],
                "'kind!=host': kind takes '=' only",
            ),
            (
                &["impact", "--where", "kind=host,kind=service"][..],
                "kind given twice",
            ),
            (
                &["spofs", "--scope", "kind=hots"][..],
                "the scope 'kind=hots' matches no present resource",
            ),
            (
                &["spofs", "--critical", "tear=1"][..],
                "no present resource is critical by 'tear=1'",
            ),
        ],
    );

    let out = bin()
        .env(
            "INFRAGRAPH_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/x",
        )
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("hunter2"),
        "{}",
        text(&out.stdout)
    );
    // Nothing listens there: the refusal is said at once (the pool alone
    // retried for 30 s, then said "pool timed out"), each cause once, and
    // without the password.
    let started = std::time::Instant::now();
    let out = bin()
        .env(
            "INFRAGRAPH_DATABASE_URL",
            "postgres://u:hunter2@127.0.0.1:1/x",
        )
        .arg("runs")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// `agent --interval` has a floor: each report is a run in the store.
#[test]
fn agent_interval_below_five_seconds_is_refused() {
    let out = bin()
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--token-file",
            "/nonexistent",
            "--interval",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--interval") && err.contains("1s is shorter than the 5s minimum"),
        "{err}"
    );
}

/// `sources` lists who reports what; `retire-source` retires a source
/// nothing collects any more (here: a file renamed).
#[test]
fn a_renamed_file_s_old_source_is_listed_and_retired() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let old = files.write("old.yaml", "resources:\n  - {id: host:a, kind: host}\n");
    assert!(
        run(&db.url, &["collect", "inventory", old.to_str().unwrap()])
            .status
            .success()
    );
    let new = files.write("new.yaml", "resources:\n  - {id: host:b, kind: host}\n");
    assert!(
        run(&db.url, &["collect", "inventory", new.to_str().unwrap()])
            .status
            .success()
    );
    let out = run(&db.url, &["sources", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let old_src = format!("inventory:{}", old.display());
    assert_eq!(
        v[0]["source"],
        old_src.as_str(),
        "the longest silent first: {v}"
    );
    assert_eq!(v[0]["resources"], 1);
    assert!(v[0]["last_seen"].as_str().unwrap().ends_with('Z'));
    let text_out = text(&run(&db.url, &["sources"]).stdout);
    assert!(
        text_out.starts_with("SOURCE") && text_out.contains(" ago)"),
        "{text_out}"
    );

    let out = run(&db.url, &["retire-source", "inventory:nope.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("source 'inventory:nope.yaml' reports nothing now"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&db.url, &["retire-source", &old_src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 resources and relations went GONE"));
    let out = run(&db.url, &["impact", "host:a"]);
    assert!(
        text(&out.stderr).contains("'host:a' is GONE since"),
        "{}",
        text(&out.stderr)
    );
    assert!(run(&db.url, &["impact", "host:b"]).status.success());
}

/// `runs --last` takes a count of 1 or more: a negative one used to
/// print nothing and exit 0. (Usage errors exit 2, clap's code.)
#[test]
fn runs_last_must_be_a_count() {
    let db = common::TestDb::sqlite();
    for (arg, said) in [
        ("--last=-3", "invalid value '-3' for '--last <LAST>'"),
        ("--last=0", "invalid value '0' for '--last <LAST>'"),
    ] {
        let out = run(&db.url, &["runs", arg]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert!(text(&out.stderr).contains(said), "{}", text(&out.stderr));
    }
    assert!(run(&db.url, &["runs", "--last", "5"]).status.success());
}

/// `agent --server` without a scheme is refused with an example, not
/// reqwest's "relative URL without a base".
#[test]
fn agent_server_needs_a_scheme() {
    let files = common::Files::new();
    let token = files.write("t", "0123456789abcdef0123\n");
    let out = bin()
        .args(["agent", "--server", "127.0.0.1:9", "--once", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--server '127.0.0.1:9' is not an http:// or https:// URL"),
        "{err}"
    );
}

/// A server notices runs other processes commit into its store (here the
/// CLI on the same SQLite file; replicas on one PostgreSQL alike) and
/// reloads its graph by itself. No collector runs in this server, so only
/// the store check can show the new resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notices_runs_committed_by_other_processes() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let cfg = files.write(
        "infragraph.toml",
        &format!(
            "database_url = \"{}\"\nlisten = \"127.0.0.1:0\"\nstore_check_interval = \"200ms\"\n",
            db.url
        ),
    );
    let (_child, addr) = serve_child(&cfg);
    let q = r#"{ resource(id: "from-cli") { status } }"#;
    assert_eq!(gql(&addr, q).await["data"]["resource"], Value::Null);
    let inv = files.write("other.yaml", "resources:\n  - {id: from-cli, kind: host}\n");
    let out = run(&db.url, &["collect", "inventory", inv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(&addr, q, "PRESENT").await;
}

/// A relation kind with no impact rule is kept, and the run says so: with
/// the impact kind it is close to, where a typo would otherwise read as
/// "nothing breaks".
#[test]
fn collect_warns_of_relation_kinds_without_impact() {
    let db = common::TestDb::sqlite();
    let f = common::Files::new();
    let path = f.write(
        "typo.yaml",
        "resources:\n  - {id: a, kind: service}\n  - {id: b, kind: service}\nrelations:\n  - {from: a, to: b, kind: dependson}\n",
    );
    let out = run(&db.url, &["collect", "inventory", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("typo.yaml:5: relation kind 'dependson' (1 relation) has no impact rule: a failure does not travel along it (did you mean 'depends_on'?)"),
        "{err}"
    );
    assert_eq!(err.matches("dependson").count(), 1, "{err}");
    // The run is ok (nothing is incomplete) and keeps the note.
    let out = run(&db.url, &["runs", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "ok", "{v}");
    assert!(
        v[0]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("did you mean 'depends_on'?"),
        "{v}"
    );
    let out = run(&db.url, &["runs"]);
    assert!(
        text(&out.stdout).contains("typo.yaml:5: relation kind 'dependson'"),
        "{}",
        text(&out.stdout)
    );
    // Times: RFC 3339 in UTC for programs, marked UTC for people.
    let started = v[0]["started"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok() && started.ends_with('Z'),
        "{v}"
    );
    let fixed = f.write(
        "fixed.yaml",
        "resources:\n  - {id: a, kind: service}\n  - {id: b, kind: service}\nrelations:\n  - {from: a, to: b, kind: depends_on}\n",
    );
    let out = run(&db.url, &["collect", "inventory", fixed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &db.url,
        &["dependencies", "a", "--changed-since", "1h", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deps: Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = deps.to_string();
    let at = at
        .split("\"at\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no change time: {deps}"))
        .to_string();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{deps}");
    let out = run(&db.url, &["dependencies", "a", "--changed-since", "1h"]);
    assert!(text(&out.stdout).contains(" UTC"), "{}", text(&out.stdout));
    // Selectors that cannot mean what they say are refused, saying why.
    refused(
        &db.url,
        &[
            (
                &["spofs", "--critical", "kind=service"][..],
                "('kind' is read as a label key here: the critical set is chosen by labels only",
            ),
            (
                &["impact", "--where", "label:kind!=service"][..],
                "--where 'label:kind!=service' selects every present resource (2)",
            ),
        ],
    );
}

/// `--critical` takes commas as `--where` does (its own header printed
/// them and the flag refused them); `spofs` says on stderr when `--first`
/// cut the list; `cycles` names every member of a group, not only those on
/// the loop it shows; `impact` with nothing to fail says ids or `--where`.
#[test]
fn spofs_cycles_and_impact_say_what_they_mean() {
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let inv = files.write(
        "inv.yaml",
        "resources:
  - {id: host:h, kind: host}
  - {id: svc:a, kind: service, labels: {tier: \"1\", env: prod}}
  - {id: svc:b, kind: service, labels: {tier: \"1\", env: dev}}
  - {id: s1, kind: service}
  - {id: s2, kind: service}
  - {id: s3, kind: service}
  - {id: s4, kind: service}
relations:
  - {from: svc:a, to: host:h, kind: runs_on}
  - {from: svc:b, to: host:h, kind: runs_on}
  - {from: s1, to: s2, kind: depends_on}
  - {from: s2, to: s1, kind: depends_on}
  - {from: s2, to: s3, kind: depends_on}
  - {from: s3, to: s4, kind: depends_on}
  - {from: s4, to: s2, kind: depends_on}
",
    );
    let out = run(&db.url, &["collect", "inventory", inv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spofs = |args: &[&str]| {
        let out = run(&db.url, &[&["spofs", "--json"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let both = spofs(&["--critical", "tier=1,env=prod"]);
    assert_eq!(
        both,
        spofs(&["--critical", "tier=1", "--critical", "env=prod"])
    );
    assert_eq!(both[0]["id"], "host:h", "{both}");
    assert_eq!(both[0]["takes_down"], json!(["svc:a"]), "{both}");
    let out = run(&db.url, &["spofs", "--first", "0", "--json"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("listed 0 of ")
            && text(&out.stderr).contains("single points of failure; --first "),
        "{}",
        text(&out.stderr)
    );
    let out = run(&db.url, &["cycles"]);
    let said = text(&out.stdout);
    assert!(
        said.contains("  4 resources: s1, s2, s3, s4\n    one loop: s1 -[depends_on]-> s2 -[depends_on]-> s1\n"),
        "{said}"
    );
    let out = run(&db.url, &["impact"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("<IDS|--where <SELECTOR>>"),
        "{}",
        text(&out.stderr)
    );
}
