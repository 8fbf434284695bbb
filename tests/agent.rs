//! Host agents: the ingest endpoint over real HTTP (tokens, roles, bad
//! reports refused with nothing written; a report replacing the previous
//! one; dependencies across hosts), `collect host` on this machine, and real
//! hosts made of network namespaces (root only; CI runs them).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infragraph::agent::{AgentSettings, AgentTokens};
use infragraph::app::App;
use infragraph::store::Store;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";
const WEB1: &str = "agent-token-web-1-abcdef";
const DB1: &str = "agent-token-db-1-abcdef0";
const EVIL: &str = "agent-token-evil-abcdef0";

struct Server {
    run: common::Running,
    app: Arc<App>,
    _db: common::TestDb,
}

impl Server {
    async fn start() -> Server {
        let db = common::TestDb::sqlite();
        let store = Store::connect(&db.url).await.unwrap();
        let tokens = AgentTokens::parse(
            std::path::Path::new("tokens"),
            &format!("# host token\nweb-1 {WEB1}\ndb-1 {DB1}\nevil {EVIL}\n"),
        )
        .unwrap();
        let app: Arc<App> = App::with_agents(
            store,
            Some(ADMIN.into()),
            AgentSettings {
                tokens,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Server {
            run: common::Running::start(app.clone()).await,
            app,
            _db: db,
        }
    }

    async fn post(&self, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .run
            .client
            .post(format!("http://{}/api/v1/agents/report", self.run.addr))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        // The answer comes at commit; the graph catches up in the
        // background. Tests read their writes: wait for it.
        self.app.settle().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn gql(&self, query: &str) -> Value {
        self.run.data(query, json!({}), None).await
    }

    /// A mutation with the server's write token; fails the test on errors.
    async fn admin(&self, query: &str) {
        self.run.data(query, json!({}), Some(ADMIN)).await;
    }

    async fn counts(&self) -> (i64, usize) {
        let v = self
            .gql("{ resources(first: 1) { totalCount } runs(last: 100) { id } }")
            .await;
        (
            v["resources"]["totalCount"].as_i64().unwrap(),
            v["runs"].as_array().unwrap().len(),
        )
    }
}

fn report(host: &str, listeners: Value, connections: Value, addr: &str) -> Value {
    json!({
        "version": 1,
        "host": {
            "hostname": host,
            "os": "Debian GNU/Linux 12 (bookworm)",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "addresses": [addr]}],
        },
        "listeners": listeners,
        "connections": connections,
    })
}

/// db-1's report with `ledger` listening on 10.0.0.7:7000, and the
/// process that calls it from web-1.
fn ledger_on_db1() -> (Value, Value) {
    let ledger = json!({"pid": 70, "name": "ledgerd", "unit": "ledger.service"});
    let checkout = json!({"pid": 90, "name": "checkout", "unit": "checkout.service"});
    let db = report(
        "db-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 7000, "process": ledger}]),
        json!([]),
        "10.0.0.7",
    );
    (db, checkout)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// An EC2 instance as the EC2 collector reports it (account 123456789012,
/// us-east-1), with its private IP and, if given, private DNS name.
fn ec2_host(instance: &str, ip: &str, dns: Option<&str>) -> collectors::ObservedResource {
    let mut attributes = json!({"provider": "aws", "instance_id": instance, "region": "us-east-1", "account": "123456789012", "private_ip": ip});
    if let Some(d) = dns {
        attributes["private_dns"] = json!(d);
    }
    collectors::ObservedResource {
        id: format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}"),
        kind: "host".into(),
        name: Some(instance.into()),
        labels: Default::default(),
        attributes,
        origin: None,
        placeholder: false,
    }
}

/// A complete EC2 collector run that reports `hosts`.
fn ec2_run(hosts: Vec<collectors::ObservedResource>) -> infragraph::store::RunInput {
    infragraph::store::RunInput {
        collector: "aws".into(),
        scope: "123456789012/us-east-1".into(),
        started_at: 0,
        outcome: Ok(collectors::Collection {
            notes: Vec::new(),
            batches: vec![collectors::ScopeBatch {
                scope: "123456789012/us-east-1".into(),
                complete: true,
                resources: hosts,
                ..Default::default()
            }],
            warnings: Vec::new(),
        }),
        retract: Vec::new(),
        additive: false,
    }
}

#[tokio::test]
async fn bad_tokens_roles_and_reports_are_refused_and_nothing_is_written() {
    let s = Server::start().await;
    let good = report("web-1", json!([]), json!([]), "10.0.0.5");
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (None, bytes(&good), 401, "Authorization"),
        (
            Some("not-a-token-at-all-000"),
            bytes(&good),
            401,
            "unknown token",
        ),
        // An agent token reporting for another host.
        (
            Some(WEB1),
            bytes(&report("db-1", json!([]), json!([]), "10.0.0.7")),
            403,
            "only for host 'web-1', not 'db-1'",
        ),
        // Hostile process names are refused before they become ids.
        (
            Some(WEB1),
            bytes(&report(
                "web-1",
                json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 80, "process": {"pid": 1, "name": "a b@c"}}]),
                json!([]),
                "10.0.0.5",
            )),
            400,
            "listeners[0].process",
        ),
        (
            Some(WEB1),
            b"{\"version\": 1, \"host\": ".to_vec(),
            400,
            "malformed report",
        ),
        (
            Some(WEB1),
            bytes(&json!({"version": 1, "host": {"hostname": "web-1", "root": true}})),
            400,
            "unknown field `root`",
        ),
        (
            Some(WEB1),
            bytes(&json!({"version": 7, "host": {"hostname": "web-1"}})),
            400,
            "version: 7",
        ),
        (
            Some(ADMIN),
            bytes(&report("../../etc", json!([]), json!([]), "10.0.0.5")),
            400,
            "host.hostname",
        ),
        (
            Some(WEB1),
            bytes(&report(
                "web-1",
                json!([{"protocol": "sctp", "address": "0.0.0.0", "port": 1}]),
                json!([]),
                "10.0.0.5",
            )),
            400,
            "listeners[0].protocol",
        ),
        (
            Some(WEB1),
            bytes(&report(
                "web-1",
                json!([{"protocol": "tcp", "address": "10.0.0.5", "port": 70000}]),
                json!([]),
                "10.0.0.5",
            )),
            400,
            "malformed report",
        ),
    ];
    for (token, body, want, says) in cases {
        let (status, answer) = s.post(token, body).await;
        assert_eq!(status, want, "{answer}");
        assert!(
            answer.to_string().contains(says),
            "want '{says}' in {answer}"
        );
    }
    // Oversized: refused by the body limit before any parsing; an unknown
    // token is refused before its body is read at all.
    let (status, answer) = s.post(Some(WEB1), vec![b' '; 17 << 20]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.to_string().contains("larger than"), "{answer}");
    let (status, _) = s
        .post(Some("not-a-token-at-all-0000"), vec![b' '; 17 << 20])
        .await;
    assert_eq!(status, 401);
    assert_eq!(s.counts().await, (0, 0), "nothing written, not even a run");

    let (status, answer) = s.post(Some(WEB1), bytes(&good)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    let h = s
        .gql("{ resource(id: \"host:web-1\") { kind attributes sources { source } } }")
        .await;
    assert_eq!(h["resource"]["kind"], "host");
    assert_eq!(
        h["resource"]["attributes"]["os"],
        "Debian GNU/Linux 12 (bookworm)"
    );
    assert_eq!(h["resource"]["sources"][0]["source"], "agent:web-1");
}

/// An agent on EC2 always sends its instance identity. With an agent token
/// the claim joins the collected instance only when the EC2 collector
/// vouches for it (the instance's private DNS name is the token's
/// hostname); otherwise it is dropped and the report is recorded as
/// `host:HOSTNAME`, never refused. The scheme `bearer` is case-insensitive.
#[tokio::test]
async fn ec2_claims_from_agent_tokens_join_only_what_the_collector_vouches_for() {
    let s = Server::start().await;
    let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc";
    let instance = |dns: &str| ec2_host("i-0abc", "10.0.0.5", Some(dns));
    // A second instance whose Name tag is `twin`.
    let twin = |name: &str| {
        let mut r = ec2_host("i-0def", "10.0.0.8", Some("ip-10-0-0-8.ec2.internal"));
        r.labels.insert("Name".into(), name.into());
        r
    };
    let collect = |dns: &str, twin_name: &str| ec2_run(vec![instance(dns), twin(twin_name)]);
    let mut claim = report("web-1", json!([]), json!([]), "10.0.0.5");
    claim["host"]["ec2"] =
        json!({"instance_id": "i-0abc", "region": "us-east-1", "account_id": "123456789012"});
    let sources = |v: &Value| {
        v["resource"]["sources"].as_array().map(|a| {
            a.iter()
                .map(|s| s["source"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };

    let q = |id: &str| format!("{{ resource(id: \"{id}\") {{ status sources {{ source }} }} }}");
    // Not vouched for: the instance is someone else (its DNS name is not
    // web-1); or another instance is also called web-1 (a Name tag shared
    // by an auto-scaling group); or the report lacks its private address.
    let mut wrong_addr = claim.clone();
    wrong_addr["host"]["interfaces"][0]["addresses"] = json!(["10.0.0.6"]);
    for (dns, twin_name, body) in [
        ("ip-10-0-0-9.ec2.internal", "twin", &claim),
        ("web-1.ec2.internal", "web-1", &claim),
        ("web-1.ec2.internal", "twin", &wrong_addr),
    ] {
        s.app.apply(collect(dns, twin_name)).await.unwrap();
        s.app.settle().await.unwrap();
        let (status, answer) = s.post(Some(WEB1), bytes(body)).await;
        assert_eq!(status, 200, "{answer}");
        let own = s.gql(&q("host:web-1")).await;
        assert_eq!(
            (own["resource"]["status"].as_str(), sources(&own)),
            (Some("PRESENT"), Some(vec!["agent:web-1".to_string()])),
            "{dns} {twin_name}"
        );
        let ec2 = s.gql(&q(arn)).await;
        assert_eq!(
            sources(&ec2),
            Some(vec!["aws:123456789012/us-east-1".to_string()])
        );
    }

    // The collector says the instance is web-1: joined, one host with both
    // provenances; host:web-1 is retired (not deleted) by the same run.
    s.app
        .apply(collect("web-1.ec2.internal", "twin"))
        .await
        .unwrap();
    s.app.settle().await.unwrap();
    let resp = s
        .run
        .client
        .post(format!("http://{}/api/v1/agents/report", s.run.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("bearer {WEB1}"))
        .body(bytes(&claim))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "lower-case scheme accepted");
    s.app.settle().await.unwrap();
    let ec2 = s.gql(&q(arn)).await;
    let mut got = sources(&ec2).unwrap();
    got.sort();
    assert_eq!(got, vec!["agent:web-1", "aws:123456789012/us-east-1"]);
    let own = s.gql(&q("host:web-1")).await;
    assert_eq!(own["resource"]["status"], "GONE");

    // Joined, web-1 still owns its address: its listener is db-1's
    // dependency, not ambiguous with the instance it now is.
    let mut listening = report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": {"pid": 9, "name": "checkout"}}]),
        json!([]),
        "10.0.0.5",
    );
    listening["host"]["ec2"] = claim["host"]["ec2"].clone();
    let (status, answer) = s.post(Some(WEB1), bytes(&listening)).await;
    assert_eq!(status, 200, "{answer}");
    // Without a claim (IMDS unreachable, in a container) it joins the
    // same instance: the collector vouches for the hostname.
    listening["host"]["ec2"] = Value::Null;
    let (status, answer) = s.post(Some(WEB1), bytes(&listening)).await;
    assert_eq!(status, 200, "{answer}");
    let v = s.gql(&q("host:web-1")).await;
    assert_eq!(v["resource"]["status"], "GONE", "{v}");
    let client = report(
        "db-1",
        json!([]),
        json!([{"local_address": "10.0.0.7", "local_port": 40000, "remote_address": "10.0.0.5", "remote_port": 8080, "process": {"pid": 3, "name": "etl"}}]),
        "10.0.0.7",
    );
    let (status, answer) = s.post(Some(DB1), bytes(&client)).await;
    assert_eq!(status, 200, "{answer}");
    let v = s
        .gql("{ resource(id: \"svc:etl@db-1\") { relations(direction: OUTGOING, kind: \"depends_on\") { to { id } } } }")
        .await;
    assert_eq!(
        v["resource"]["relations"],
        json!([{"to": {"id": "svc:checkout@web-1"}}]),
        "{v}"
    );
    // Another host's agent cannot then take the instance over, even
    // with its name: db-1 claiming to be on i-0abc is not joined.
    let mut impostor = report("db-1", json!([]), json!([]), "10.0.0.5");
    impostor["host"]["ec2"] = claim["host"]["ec2"].clone();
    let (status, answer) = s.post(Some(DB1), bytes(&impostor)).await;
    assert_eq!(status, 200, "{answer}");
    let ec2 = s.gql(&q(arn)).await;
    let mut got = sources(&ec2).unwrap();
    got.sort();
    assert_eq!(got, vec!["agent:web-1", "aws:123456789012/us-east-1"]);
}

/// A report cannot take over another host's address: a listener on an
/// address another known host has (here an EC2 instance's private IP) is
/// ambiguous, so clients' connections there stay `ext:ADDRESS` naming both
/// candidates, never a dependency on the claimant.
#[tokio::test]
async fn a_report_cannot_take_over_another_hosts_address() {
    let s = Server::start().await;
    let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0db";
    s.app
        .apply(ec2_run(vec![ec2_host("i-0db", "10.0.0.9", None)]))
        .await
        .unwrap();
    s.app.settle().await.unwrap();
    // `evil` claims 10.0.0.9 and listens on 5432 there.
    let evil = report(
        "evil",
        json!([{"protocol": "tcp", "address": "10.0.0.9", "port": 5432, "process": {"pid": 5, "name": "fake"}}]),
        json!([]),
        "10.0.0.9",
    );
    let (status, answer) = s.post(Some(EVIL), bytes(&evil)).await;
    assert_eq!(status, 200, "{answer}");
    let web = report(
        "web-1",
        json!([]),
        json!([{"local_address": "10.0.0.5", "local_port": 40000, "remote_address": "10.0.0.9", "remote_port": 5432, "process": {"pid": 9, "name": "checkout"}}]),
        "10.0.0.5",
    );
    let (status, answer) = s.post(Some(WEB1), bytes(&web)).await;
    assert_eq!(status, 200, "{answer}");
    let v = s
        .gql("{ resource(id: \"svc:checkout@web-1\") { relations(direction: OUTGOING, kind: \"depends_on\") { to { id attributes } } } }")
        .await;
    let rels = v["resource"]["relations"].as_array().unwrap();
    assert_eq!(rels.len(), 1, "{v}");
    assert_eq!(rels[0]["to"]["id"], "ext:10.0.0.9", "{v}");
    assert_eq!(
        rels[0]["to"]["attributes"]["ambiguous_listeners"],
        json!([arn, "svc:fake@evil"]),
        "{v}"
    );
}

/// Reports carry `sent_at`; one not newer than the last recorded for its
/// host (delayed behind a newer one, or replayed) is refused with 409 and
/// writes nothing. A clock far from the server's is not used for ordering.
#[tokio::test]
async fn late_and_replayed_reports_are_refused() {
    let s = Server::start().await;
    let now = infragraph::model::now_ms();
    let with = |sent: i64, port: u16| {
        let mut r = report(
            "web-1",
            json!([{"protocol": "tcp", "address": "0.0.0.0", "port": port, "process": {"pid": 9, "name": format!("p{port}")}}]),
            json!([]),
            "10.0.0.5",
        );
        r["sent_at"] = json!(sent);
        bytes(&r)
    };
    let (status, answer) = s.post(Some(WEB1), with(now, 1000)).await;
    assert_eq!(status, 200, "{answer}");
    for (sent, why) in [(now - 1_000, "delayed"), (now, "replayed")] {
        let (status, answer) = s.post(Some(WEB1), with(sent, 2000)).await;
        assert_eq!(status, 409, "{why}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("not newer than the last one recorded"),
            "{answer}"
        );
    }
    let v = s
        .gql("{ a: resource(id: \"svc:p1000@web-1\") { status } b: resource(id: \"svc:p2000@web-1\") { status } }")
        .await;
    assert_eq!(v["a"]["status"], "PRESENT");
    assert!(v["b"].is_null(), "a refused report wrote nothing: {v}");
    let (status, answer) = s.post(Some(WEB1), with(now + 1_000, 3000)).await;
    assert_eq!(status, 200, "{answer}");
    // A clock a day behind still reports (in arrival order).
    let (status, answer) = s.post(Some(WEB1), with(now - 86_400_000, 4000)).await;
    assert_eq!(status, 200, "{answer}");
    let v = s
        .gql("{ resource(id: \"svc:p4000@web-1\") { status } }")
        .await;
    assert_eq!(v["resource"]["status"], "PRESENT");
}

/// A report whose agent could not inspect every process (not root) still
/// sees every socket, and names the ones it cannot tie to a process by port
/// the same way each time: it replaces the host's previous report like any
/// other (what vanished is retired), with its limitations noted on the run.
#[tokio::test]
async fn a_report_with_limitations_replaces_the_previous_one() {
    let s = Server::start().await;
    let checkout = json!({"pid": 900, "name": "checkout"});
    let limitations = json!([
        "3 processes could not be inspected (other users' processes need root); 2 sockets have no known process"
    ]);
    let mut first = report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": checkout},
               {"protocol": "tcp", "address": "0.0.0.0", "port": 5432}]),
        json!([{"local_address": "10.0.0.5", "local_port": 40000,
                "remote_address": "203.0.113.9", "remote_port": 443}]),
        "10.0.0.5",
    );
    first["limitations"] = limitations.clone();
    let (status, answer) = s.post(Some(WEB1), bytes(&first)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("ok")),
        "{answer}"
    );
    let v = s
        .gql(
            r#"{ port: resource(id: "svc:port-5432@web-1") { status }
                 client: resource(id: "svc:unknown@web-1") { status relations(direction: OUTGOING, kind: "depends_on") { to { id } } }
                 host: resource(id: "host:web-1") { attributes }
                 runs(last: 1) { status warnings } }"#,
        )
        .await;
    assert_eq!(v["port"]["status"], "PRESENT", "{v}");
    assert_eq!(v["client"]["status"], "PRESENT", "{v}");
    assert_eq!(
        v["client"]["relations"][0]["to"]["id"], "ext:203.0.113.9",
        "{v}"
    );
    assert_eq!(v["host"]["attributes"]["limited_view"], true, "{v}");
    assert_eq!(v["runs"][0]["status"], "OK", "{v}");
    assert!(
        v["runs"][0]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("could not be inspected"),
        "{v}"
    );
    // The next report, as limited: checkout and the unowned client
    // connection have ended; the unowned listener is named as before.
    let mut second = report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 5432}]),
        json!([]),
        "10.0.0.5",
    );
    second["limitations"] = limitations;
    let (_, answer) = s.post(Some(WEB1), bytes(&second)).await;
    assert_eq!(answer["status"], "ok", "{answer}");
    assert!(answer["retired"].as_i64().unwrap() >= 3, "{answer}");
    let v = s
        .gql(
            r#"{ checkout: resource(id: "svc:checkout@web-1") { status }
                 port: resource(id: "svc:port-5432@web-1") { status }
                 client: resource(id: "svc:unknown@web-1") { status } }"#,
        )
        .await;
    assert_eq!(v["checkout"]["status"], "GONE", "{v}");
    assert_eq!(v["client"]["status"], "GONE", "{v}");
    assert_eq!(v["port"]["status"], "PRESENT", "{v}");
}

/// A busy host's report (8,000 connections, over 1 MiB of JSON) is
/// accepted, and the graph takes it in by itself after the answer (a
/// background refresh; nobody calls `settle`).
#[tokio::test]
async fn large_reports_are_accepted_and_reach_the_graph_in_the_background() {
    let s = Server::start().await;
    let proc_ = json!({"pid": 900, "name": "checkout", "unit": "checkout.service"});
    let connections: Vec<Value> = (0..8000)
        .map(|i| {
            json!({"local_address": "10.0.0.5", "local_port": 20000 + i,
                   "remote_address": format!("10.9.{}.{}", i / 250, i % 250 + 1), "remote_port": 443,
                   "process": proc_})
        })
        .collect();
    let body = bytes(&report("web-1", json!([]), json!(connections), "10.0.0.5"));
    assert!(body.len() > 1 << 20, "{} bytes", body.len());
    let resp = s
        .run
        .client
        .post(format!("http://{}/api/v1/agents/report", s.run.addr))
        .bearer_auth(WEB1)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let start = Instant::now();
    loop {
        let v = s
            .gql("{ resource(id: \"svc:checkout@web-1\") { relations(direction: OUTGOING, kind: \"depends_on\") { to { kind } } } }")
            .await;
        let n = v["resource"]["relations"].as_array().map_or(0, Vec::len);
        if n == 8000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the graph never took the report in: {n} dependencies"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reports_connect_hosts_and_replace_the_previous_observation() {
    let s = Server::start().await;
    let postgres = json!({"pid": 700, "name": "postgres", "exe": "/usr/lib/postgresql/15/bin/postgres", "unit": "postgresql@15-main.service"});
    let checkout = json!({"pid": 900, "name": "checkout", "unit": "checkout.service"});
    // db-1 listens on every address, port 5432.
    let db = report(
        "db-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 5432, "process": postgres}]),
        json!([
            // The server side of web-1's connection: inbound, not a dependency.
            {"local_address": "10.0.0.7", "local_port": 5432, "remote_address": "10.0.0.5", "remote_port": 40000, "process": postgres}
        ]),
        "10.0.0.7",
    );
    let (status, answer) = s.post(Some(ADMIN), bytes(&db)).await;
    assert_eq!(status, 200, "{answer}");
    // web-1 talks to it (IPv4-mapped on its side would be the same address)
    // and to an address nobody reports.
    let web = report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": checkout}]),
        json!([
            {"local_address": "10.0.0.5", "local_port": 40000, "remote_address": "10.0.0.7", "remote_port": 5432, "process": checkout},
            {"local_address": "10.0.0.5", "local_port": 40001, "remote_address": "93.184.216.34", "remote_port": 443, "process": checkout}
        ]),
        "10.0.0.5",
    );
    let (status, answer) = s.post(Some(WEB1), bytes(&web)).await;
    assert_eq!(status, 200, "{answer}");

    let dep = "{ resource(id: \"svc:checkout@web-1\") { kind relations(direction: OUTGOING) { kind status attributes to { id kind } } } }";
    let v = s.gql(dep).await;
    let rels = v["resource"]["relations"].as_array().unwrap().clone();
    let find = |to: &str| {
        rels.iter()
            .find(|r| r["to"]["id"] == to)
            .unwrap_or_else(|| panic!("no relation to {to}: {rels:?}"))
            .clone()
    };
    let pg = find("svc:postgresql@15-main@db-1");
    assert_eq!(pg["kind"], "depends_on");
    assert_eq!(
        pg["attributes"],
        json!({"evidence": "observed", "ports": ["tcp/5432"]})
    );
    assert_eq!(find("host:web-1")["kind"], "runs_on");
    let ext = find("ext:93.184.216.34");
    assert_eq!(ext["to"]["kind"], "external_endpoint");
    // Evidence and drift: observed only, until a declaration arrives; a
    // declared dependency of a watched service that agents never saw.
    let d = s
        .gql("{ drift { observedNotDeclared { from { id } to { id } evidence } declaredNotObserved { to { id } } } }")
        .await;
    let ond = d["drift"]["observedNotDeclared"].as_array().unwrap();
    assert!(
        ond.iter()
            .any(|r| r["to"]["id"] == "svc:postgresql@15-main@db-1"
                && r["evidence"] == json!(["OBSERVED"])),
        "{d}"
    );
    // Impact follows observed dependencies: db-1 down takes checkout down.
    let imp = s
        .gql("{ impact(failed: [\"host:db-1\"]) { down { id } } }")
        .await;
    assert!(imp.to_string().contains("svc:checkout@web-1"), "{imp}");

    // The next report no longer has the database connection: it is retired
    // (with history), the rest stays.
    let web2 = report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": checkout}]),
        json!([
            {"local_address": "10.0.0.5", "local_port": 40001, "remote_address": "93.184.216.34", "remote_port": 443, "process": checkout}
        ]),
        "10.0.0.5",
    );
    let (status, answer) = s.post(Some(WEB1), bytes(&web2)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["retired"].as_i64().unwrap() >= 1, "{answer}");
    let v = s.gql(dep).await;
    let rels = v["resource"]["relations"].as_array().unwrap();
    assert!(
        !rels
            .iter()
            .any(|r| r["to"]["id"] == "svc:postgresql@15-main@db-1"),
        "the database dependency is no longer current: {rels:?}"
    );
    assert!(
        rels.iter()
            .any(|r| r["to"]["id"] == "ext:93.184.216.34" && r["status"] == "PRESENT")
    );
    let h = s
        .gql("{ resource(id: \"svc:checkout@web-1\") { history { op toId relationKind } } }")
        .await;
    assert!(
        h["resource"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| {
                c["op"] == "retire"
                    && c["toId"] == "svc:postgresql@15-main@db-1"
                    && c["relationKind"] == "depends_on"
            }),
        "retired with history: {h}"
    );

    s.admin("mutation { assertRelation(from: \"svc:checkout@web-1\", to: \"svc:postgresql@15-main@db-1\", kind: \"depends_on\") { kind } }").await;
    s.admin("mutation { assertResource(id: \"svc:payments\", kind: \"service\") { id } }")
        .await;
    s.admin("mutation { assertRelation(from: \"svc:checkout@web-1\", to: \"svc:payments\", kind: \"depends_on\") { kind } }").await;
    let d = s
        .gql("{ drift { observedNotDeclared { to { id } } declaredNotObserved { from { id } to { id } evidence } } }")
        .await;
    assert!(
        !d.to_string()
            .contains("\"observedNotDeclared\":[{\"to\":{\"id\":\"svc:postgresql"),
        "declared now: {d}"
    );
    let mut dno: Vec<String> = d["drift"]["declaredNotObserved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["from"]["id"], "svc:checkout@web-1");
            assert_eq!(r["evidence"], json!(["DECLARED"]));
            r["to"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    dno.sort();
    // payments was never seen; the database connection no longer is.
    assert_eq!(dno, ["svc:payments", "svc:postgresql@15-main@db-1"], "{d}");
    assert_eq!(
        d["drift"]["observedNotDeclared"],
        json!([{"to": {"id": "ext:93.184.216.34"}}])
    );
    // Agents no longer see the database connection; the declaration stands.
    let both = s
        .gql("{ path(from: \"svc:checkout@web-1\", to: \"svc:postgresql@15-main@db-1\") { evidence } }")
        .await;
    assert_eq!(both["path"][0]["evidence"], json!(["DECLARED"]));
}

#[test]
fn collect_host_records_this_machine() {
    let db = common::TestDb::sqlite();
    let out = Command::new(env!("CARGO_BIN_EXE_infragraph"))
        .env("INFRAGRAPH_IMDS_ENDPOINT", "off")
        .args([
            "--database-url",
            &db.url,
            "collect",
            "host",
            "--hostname",
            "this-machine",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok — host this-machine:"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_infragraph"))
        .args([
            "--database-url",
            &db.url,
            "path",
            "host:this-machine",
            "host:this-machine",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces as hosts, joined by a bridge in the root namespace
/// where the server listens. Removed on drop.
struct Netns {
    bridge: String,
    names: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sets up the bridge and two namespaces, or says why it cannot.
fn netns_hosts(tag: &str) -> Result<Netns, String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("network namespaces need root".into());
    }
    let mut n = Netns {
        bridge: format!("igbr{tag}"),
        names: Vec::new(),
        children: Vec::new(),
    };
    ip(&["link", "add", &n.bridge, "type", "bridge"])?;
    ip(&["addr", "add", "10.231.0.1/24", "dev", &n.bridge])?;
    ip(&["link", "set", &n.bridge, "up"])?;
    for (i, host) in ["a", "b"].iter().enumerate() {
        let ns = format!("ig{tag}{host}");
        ip(&["netns", "add", &ns])?;
        n.names.push(ns.clone());
        let (outer, inner) = (format!("ig{tag}{host}o"), format!("ig{tag}{host}i"));
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &outer, "master", &n.bridge])?;
        ip(&["link", "set", &outer, "up"])?;
        let addr = format!("10.231.0.{}/24", i + 2);
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_network_namespaces_reconstruct_hosts_services_and_the_dependency() {
    let tag = format!("{}", std::process::id() % 10000);
    let mut net = match netns_hosts(&tag) {
        Ok(n) => n,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("network namespace tests must run in CI: {why}");
            }
            eprintln!("SKIPPED agents_in_network_namespaces: {why}");
            return;
        }
    };
    let (ns_a, ns_b) = (net.names[0].clone(), net.names[1].clone());
    let files = common::Files::new();
    let db = common::TestDb::sqlite();
    let (tok_a, tok_b) = ("agent-token-host-a-000001", "agent-token-host-b-000002");
    files.write("tok_a", tok_a);
    files.write("tok_b", tok_b);
    files.write("agents", &format!("host-a {tok_a}\nhost-b {tok_b}\n"));
    let port = std::net::TcpListener::bind("10.231.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = files.write(
        "infragraph.toml",
        &format!(
            "database_url = \"{}\"\nlisten = \"10.231.0.1:{port}\"\nagent_tokens_file = \"agents\"\n\n[service_ports]\n\"7777\" = \"ledger-api\"\n",
            db.url
        ),
    );
    let bin = env!("CARGO_BIN_EXE_infragraph");
    net.children.push(
        Command::new(bin)
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env_remove("INFRAGRAPH_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A real server in host a, a real client in host b connected to it.
    let py_server = "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('10.231.0.2',7777))\ns.listen()\nc,_=s.accept()\ntime.sleep(120)";
    let py_client = "import socket,time\nfor i in range(100):\n  try:\n    c=socket.create_connection(('10.231.0.2',7777)); break\n  except OSError: time.sleep(0.1)\ntime.sleep(120)";
    for (ns, code) in [(&ns_a, py_server), (&ns_b, py_client)] {
        net.children.push(
            Command::new("ip")
                .args(["netns", "exec", ns, "python3", "-c", code])
                .spawn()
                .unwrap(),
        );
    }
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let established = Command::new("ip")
            .args(["netns", "exec", &ns_b, "cat", "/proc/net/tcp"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&established.stdout).to_string();
        let up = client
            .get(format!("http://10.231.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok();
        // 0200E70A:1E61 is 10.231.0.2:7777 as /proc prints it.
        if up && text.contains("0200E70A:1E61 01") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server or connection not up: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gql = |q: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://10.231.0.1:{port}/graphql"))
                .json(&json!({ "query": q }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // The graph takes a report in after the answer (a background refresh):
    // wait until a query shows it.
    let eventually = |q: &'static str, ok: fn(&Value) -> bool| {
        let gql = &gql;
        async move {
            let start = Instant::now();
            loop {
                let v = gql(q).await;
                if ok(&v) {
                    return v;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "never true for {q}: {v}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let agent_once = |ns: &str, name: &str, tok: &str| {
        Command::new("ip")
            .args(["netns", "exec", ns, bin, "agent"])
            .args(["--server", &format!("http://10.231.0.1:{port}")])
            .args(["--token-file", files.path(tok).to_str().unwrap()])
            .args(["--hostname", name, "--once"])
            .env("INFRAGRAPH_IMDS_ENDPOINT", "off")
            .output()
            .unwrap()
    };
    // The agents, each in its host, one report each: a first, and once its
    // listener is in the graph, b (whose connection is matched against it).
    for (ns, name, tok) in [(&ns_a, "host-a", "tok_a"), (&ns_b, "host-b", "tok_b")] {
        let out = agent_once(ns, name, tok);
        assert!(
            out.status.success(),
            "agent in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "host-a" {
            eventually("{ resource(id: \"svc:ledger-api@host-a\") { id } }", |v| {
                !v["data"]["resource"].is_null()
            })
            .await;
        }
    }
    // Host b's agent may not report for host a.
    let out = agent_once(&ns_b, "host-a", "tok_b");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("{ resource(id: \"host:host-b\") { id } }", |v| {
        !v["data"]["resource"].is_null()
    })
    .await;
    let v = gql("{ resource(id: \"svc:ledger-api@host-a\") { kind attributes relations(direction: BOTH) { kind attributes from { id } to { id } } } }").await;
    let r = &v["data"]["resource"];
    assert_eq!(r["kind"], "service", "{v}");
    assert!(
        r["attributes"]["endpoints"]
            .to_string()
            .contains("10.231.0.2:7777"),
        "{r}"
    );
    let rels = r["relations"].as_array().unwrap();
    assert!(
        rels.iter()
            .any(|x| x["kind"] == "runs_on" && x["to"]["id"] == "host:host-a"),
        "{r}"
    );
    let dep = rels
        .iter()
        .find(|x| {
            x["kind"] == "depends_on"
                && x["from"]["id"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("@host-b"))
        })
        .unwrap_or_else(|| panic!("no observed dependency from host-b: {r}"));
    assert_eq!(
        dep["attributes"],
        json!({"evidence": "observed", "ports": ["tcp/7777"]})
    );
    let h = gql("{ resource(id: \"host:host-b\") { attributes } }").await;
    assert!(
        h["data"]["resource"]["attributes"]["interfaces"]
            .to_string()
            .contains("10.231.0.3"),
        "{h}"
    );
}

/// A server whose agents go STALE after 50 ms and GONE after `gone_ms`, and
/// web-1's report (one listening service), not yet recorded.
async fn silent_host_app(gone_ms: u64) -> (common::TestDb, Arc<App>, collectors::host::HostReport) {
    let db = common::TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    let app: Arc<App> = App::with_agents(
        store,
        None,
        AgentSettings {
            stale_after: Duration::from_millis(50),
            gone_after: Duration::from_millis(gone_ms),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = serde_json::from_value(report(
        "web-1",
        json!([{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": {"pid": 9, "name": "checkout"}}]),
        json!([]),
        "10.0.0.5",
    ))
    .unwrap();
    (db, app, r)
}

/// A host whose agent goes silent: STALE after `stale_after`, and after
/// `gone_after` the sweep retires what it reported (GONE, history kept).
#[tokio::test]
async fn silent_hosts_go_stale_then_gone_and_keep_their_history() {
    let (_db, app, r) = silent_host_app(400).await;
    infragraph::agent::record(&app, &r).await.unwrap();
    let run = common::Running::start(app.clone()).await;
    let agents = || async {
        run.data(
            "{ agents { hostname freshness lastReport resource { id status } } }",
            json!({}),
            None,
        )
        .await["agents"][0]
            .clone()
    };
    // Nothing is retired before gone_after.
    assert!(infragraph::agent::sweep(&app).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = agents().await;
    assert_eq!(a["hostname"], "web-1");
    assert_eq!(a["freshness"], "STALE", "{a}");
    assert_eq!(a["resource"]["status"], "PRESENT");
    // Every resource the agent reports says so, not only the agents list.
    let fresh = || async {
        run.data(
            "{ resource(id: \"svc:checkout@web-1\") { agentFreshness status } }",
            json!({}),
            None,
        )
        .await["resource"]
            .clone()
    };
    assert_eq!(fresh().await["agentFreshness"], "STALE");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(infragraph::agent::sweep(&app).await.unwrap(), ["web-1"]);
    let a = agents().await;
    assert_eq!(a["freshness"], "GONE", "{a}");
    assert_eq!(a["resource"]["status"], "GONE");
    assert_eq!(fresh().await["agentFreshness"], "GONE");
    let (res, _) = app.store.load_all().await.unwrap();
    let svc = res.iter().find(|r| r.id == "svc:checkout@web-1").unwrap();
    assert_eq!(svc.status, infragraph::model::Status::Gone);
    // Sweeping again changes nothing; a new report revives the host, even
    // one sent (by the agent's clock, a little behind the server's) before
    // the sweep ran: the sweep is the server's, not a report to be newer
    // than (it used to be refused as out of order, 409).
    assert!(infragraph::agent::sweep(&app).await.unwrap().is_empty());
    let mut late = r.clone();
    late.sent_at = Some(infragraph::model::now_ms() - 200);
    let run = infragraph::agent::ingest(
        &app,
        infragraph::agent::Reporter::Admin,
        &serde_json::to_vec(&late).unwrap(),
    )
    .await
    .unwrap();
    assert!(run.created >= 1, "revived: {run:?}");
    app.settle().await.unwrap();
    assert_eq!(agents().await["freshness"], "FRESH");
}

/// The sweep decides from the graph snapshot; a report that lands after
/// that decision (here: written to the store, the snapshot not yet
/// refreshed, as on another replica) wins and nothing is retired.
#[tokio::test]
async fn a_report_landing_after_the_sweep_decided_wins() {
    let (_db, app, r) = silent_host_app(200).await;
    infragraph::agent::record(&app, &r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The host reports again; the snapshot still shows it silent.
    app.store
        .apply(infragraph::agent::run_input(&app, &r, true))
        .await
        .unwrap();
    let runs_before = app.store.runs(100).await.unwrap().len();
    assert!(
        infragraph::agent::sweep(&app).await.unwrap().is_empty(),
        "a host that just reported was retired"
    );
    assert_eq!(
        app.store.runs(100).await.unwrap().len(),
        runs_before,
        "nothing recorded"
    );
    let (res, _) = app.store.load_all().await.unwrap();
    for id in ["host:web-1", "svc:checkout@web-1"] {
        let x = res.iter().find(|x| x.id == id).unwrap();
        assert_eq!(x.status, infragraph::model::Status::Present, "{id}");
    }
    // Once it really is silent, the sweep retires it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.refresh().await.unwrap();
    assert_eq!(infragraph::agent::sweep(&app).await.unwrap(), ["web-1"]);
}

/// Drift at service level: agents' `svc:NAME@HOST` become instances of a
/// declared `svc:NAME`, so a declared `checkout → ledger` is confirmed by an
/// observed `checkout@web-1 → ledger@db-1`, a declared `checkout → cache`
/// nobody saw is listed, and so is an observed call nobody declared.
#[tokio::test]
async fn drift_compares_declared_services_with_observed_instances() {
    let s = Server::start().await;
    for q in [
        "mutation { assertResource(id: \"svc:checkout\", kind: \"service\") { id } }",
        "mutation { assertResource(id: \"svc:ledger\", kind: \"service\") { id } }",
        "mutation { assertResource(id: \"svc:cache\", kind: \"service\") { id } }",
        "mutation { assertRelation(from: \"svc:checkout\", to: \"svc:ledger\", kind: \"depends_on\") { kind } }",
        "mutation { assertRelation(from: \"svc:checkout\", to: \"svc:cache\", kind: \"depends_on\") { kind } }",
        "mutation { assertResource(id: \"svc:search\", kind: \"service\") { id } }",
        "mutation { assertRelation(from: \"svc:search\", to: \"svc:ledger\", kind: \"depends_on\") { kind } }",
        "mutation { assertResource(id: \"svc:reports\", kind: \"service\") { id } }",
        "mutation { assertRelation(from: \"svc:reports\", to: \"svc:ledger\", kind: \"depends_on\") { kind } }",
    ] {
        s.admin(q).await;
    }
    let (db, checkout) = ledger_on_db1();
    assert_eq!(s.post(Some(ADMIN), bytes(&db)).await.0, 200);
    let web = report(
        "web-1",
        json!([]),
        json!([
            {"local_address": "10.0.0.5", "local_port": 40000, "remote_address": "10.0.0.7", "remote_port": 7000, "process": checkout},
            {"local_address": "10.0.0.5", "local_port": 40001, "remote_address": "93.184.216.34", "remote_port": 443, "process": checkout}
        ]),
        "10.0.0.5",
    );
    assert_eq!(s.post(Some(WEB1), bytes(&web)).await.0, 200);
    // Declared to run on web-1, where the agent sees no such process:
    // search's declared call is not observed, and is listed. Reports runs
    // on a host no agent watches: its call says nothing.
    for q in [
        "mutation { assertResource(id: \"svc:search@web-1\", kind: \"service_instance\") { id } }",
        "mutation { assertRelation(from: \"svc:search@web-1\", to: \"svc:search\", kind: \"instance_of\") { kind } }",
        "mutation { assertRelation(from: \"svc:search@web-1\", to: \"host:web-1\", kind: \"runs_on\") { kind } }",
        "mutation { assertResource(id: \"host:batch-1\", kind: \"host\") { id } }",
        "mutation { assertRelation(from: \"svc:reports\", to: \"host:batch-1\", kind: \"runs_on\") { kind } }",
    ] {
        s.admin(q).await;
    }
    let d = s
        .gql("{ drift { declaredNotObserved { from { id } to { id } } observedNotDeclared { from { id } to { id } } } }")
        .await;
    assert_eq!(
        d["drift"]["declaredNotObserved"],
        json!([
            {"from": {"id": "svc:checkout"}, "to": {"id": "svc:cache"}},
            {"from": {"id": "svc:search"}, "to": {"id": "svc:ledger"}}
        ]),
        "{d}"
    );
    assert_eq!(
        d["drift"]["observedNotDeclared"],
        json!([{"from": {"id": "svc:checkout@web-1"}, "to": {"id": "ext:93.184.216.34"}}]),
        "{d}"
    );
    // The observed instances are instances of the declared services.
    let v = s
        .gql("{ resource(id: \"svc:checkout@web-1\") { relations(direction: OUTGOING, kind: \"instance_of\") { to { id } } } }")
        .await;
    assert_eq!(
        v["resource"]["relations"],
        json!([{"to": {"id": "svc:checkout"}}])
    );
}

/// The agent speaks HTTPS and checks the server's certificate: through a
/// TLS-terminating proxy (what a deployment puts in front of `serve`) whose
/// certificate a private CA signed, a report lands when the agent is given
/// that CA (`--ca-file`) and is refused by the agent without it.
// Multi-threaded: the agent runs as a blocking child process while this
// runtime also serves the in-process server it reports to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_over_https_and_verifies_the_certificate() {
    let have = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok();
    if !have("openssl") || !have("python3") {
        let why = "openssl or python3 missing";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the HTTPS agent test must run in CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let s = Server::start().await;
    let files = common::Files::new();
    let dir = files.dir.path();
    files.write(
        "leaf.ext",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for args in [
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=infragraph test CA",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls-proxy.py");
    let mut proxy = Command::new("python3")
        .arg(&script)
        .args(["leaf.pem", "leaf.key", &s.run.addr.port().to_string()])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("proxy said {line:?}"));
    files.write("token", WEB1);
    let agent = |ca: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_infragraph"));
        c.args(["agent", "--server", &format!("https://127.0.0.1:{port}")])
            .args(["--token-file", files.path("token").to_str().unwrap()])
            .args(["--hostname", "web-1", "--once"])
            .env("INFRAGRAPH_IMDS_ENDPOINT", "off");
        if let Some(ca) = ca {
            c.args(["--ca-file", files.path(ca).to_str().unwrap()]);
        }
        c.output().unwrap()
    };
    // Without the CA: the certificate is not trusted, nothing is sent.
    let out = agent(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    s.app.settle().await.unwrap();
    assert_eq!(s.counts().await, (0, 0), "nothing written");
    // A file that is not a certificate is a clear error.
    let out = agent(Some("leaf.ext"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("leaf.ext"), "{err}");
    // With it: the report goes through the proxy to the server.
    let out = agent(Some("ca.pem"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.app.settle().await.unwrap();
    let v = s
        .gql("{ resource(id: \"host:web-1\") { kind sources { source } } }")
        .await;
    assert_eq!(v["resource"]["kind"], "host", "{v}");
    assert_eq!(v["resource"]["sources"][0]["source"], "agent:web-1");
    proxy.kill().ok();
    proxy.wait().ok();
}

/// The stored boot time ignores the second or so a clock step moves it by
/// (no update logged), and changes with a reboot.
#[tokio::test]
async fn boot_time_changes_only_with_a_reboot() {
    let s = Server::start().await;
    let with = |boot: i64| {
        let mut r = report("web-1", json!([]), json!([]), "10.0.0.5");
        r["host"]["boot_time"] = json!(boot);
        bytes(&r)
    };
    let (_, answer) = s.post(Some(WEB1), with(1_764_400_000)).await;
    assert_eq!(answer["created"], 1, "{answer}");
    let (_, answer) = s.post(Some(WEB1), with(1_764_400_001)).await;
    assert_eq!(
        answer["updated"], 0,
        "a clock step is not a reboot: {answer}"
    );
    let (_, answer) = s.post(Some(WEB1), with(1_764_500_000)).await;
    assert_eq!(answer["updated"], 1, "a reboot: {answer}");
    let v = s
        .gql("{ resource(id: \"host:web-1\") { attributes } }")
        .await;
    assert_eq!(v["resource"]["attributes"]["boot_time"], 1_764_500_000);
    // With boot ids: the id decides, even for two boots 30 s apart.
    let booted = |boot: i64, id: &str| {
        let mut r = report("web-1", json!([]), json!([]), "10.0.0.5");
        r["host"]["boot_time"] = json!(boot);
        r["host"]["boot_id"] = json!(id);
        bytes(&r)
    };
    let (_, answer) = s.post(Some(WEB1), booted(1_764_600_000, "a-1")).await;
    assert_eq!(answer["updated"], 1, "{answer}");
    let (_, answer) = s.post(Some(WEB1), booted(1_764_600_100, "a-1")).await;
    assert_eq!(answer["updated"], 0, "same boot id: {answer}");
    let (_, answer) = s.post(Some(WEB1), booted(1_764_600_030, "b-2")).await;
    assert_eq!(answer["updated"], 1, "a quick reboot: {answer}");
    let v = s
        .gql("{ resource(id: \"host:web-1\") { attributes } }")
        .await;
    assert_eq!(v["resource"]["attributes"]["boot_time"], 1_764_600_030);
    assert_eq!(v["resource"]["attributes"]["boot_id"], "b-2");
}

/// The vouch's other conditions: a claim of another instance than the one
/// the collector vouches for is dropped, and an instance another host's
/// agent already reports is not joined, whatever the names say.
#[tokio::test]
async fn another_instance_or_one_another_agent_reports_is_not_joined() {
    let s = Server::start().await;
    let arn = "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc";
    s.app
        .apply(ec2_run(vec![ec2_host(
            "i-0abc",
            "10.0.0.5",
            Some("web-1.ec2.internal"),
        )]))
        .await
        .unwrap();
    s.app.settle().await.unwrap();
    let claiming = |host: &str, instance: &str| {
        let mut r = report(host, json!([]), json!([]), "10.0.0.5");
        r["host"]["ec2"] =
            json!({"instance_id": instance, "region": "us-east-1", "account_id": "123456789012"});
        bytes(&r)
    };
    let sources = |v: &Value| {
        let mut s: Vec<String> = v["resource"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["source"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    let q = |id: &str| format!("{{ resource(id: \"{id}\") {{ status sources {{ source }} }} }}");
    // web-1 claims i-0def; the collector vouches for i-0abc: dropped.
    let (status, answer) = s.post(Some(WEB1), claiming("web-1", "i-0def")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        s.gql(&q("host:web-1")).await["resource"]["status"],
        "PRESENT"
    );
    assert_eq!(
        sources(&s.gql(&q(arn)).await),
        ["aws:123456789012/us-east-1"]
    );
    // The write token joins db-1 to i-0abc (trusted); web-1's agent, whose
    // name the instance carries, then cannot take it over.
    let (status, answer) = s.post(Some(ADMIN), claiming("db-1", "i-0abc")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        sources(&s.gql(&q(arn)).await),
        ["agent:db-1", "aws:123456789012/us-east-1"]
    );
    for instance in ["i-0abc", "i-0def"] {
        let mut r: Value = serde_json::from_slice(&claiming("web-1", instance)).unwrap();
        r["sent_at"] = json!(infragraph::model::now_ms());
        let (status, answer) = s.post(Some(WEB1), bytes(&r)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            sources(&s.gql(&q(arn)).await),
            ["agent:db-1", "aws:123456789012/us-east-1"],
            "{instance}"
        );
        assert_eq!(
            s.gql(&q("host:web-1")).await["resource"]["status"],
            "PRESENT"
        );
    }
}

/// An inventory that already declares `svc:ledger@db-1` as a
/// service_instance (as the demo does for its instances): the agent's
/// observation of that service takes the declared kind instead of being
/// dropped, so its endpoint is kept and another host's connection to it
/// becomes a dependency on it, not on an external address.
#[tokio::test]
async fn a_service_the_inventory_declares_as_an_instance_keeps_its_endpoints() {
    let s = Server::start().await;
    s.admin(
        "mutation { assertResource(id: \"svc:ledger@db-1\", kind: \"service_instance\") { id } }",
    )
    .await;
    let (db, checkout) = ledger_on_db1();
    assert_eq!(s.post(Some(DB1), bytes(&db)).await.0, 200);
    let web = report(
        "web-1",
        json!([]),
        json!([
            {"local_address": "10.0.0.5", "local_port": 40000, "remote_address": "10.0.0.7", "remote_port": 7000, "process": checkout}
        ]),
        "10.0.0.5",
    );
    assert_eq!(s.post(Some(WEB1), bytes(&web)).await.0, 200);
    let v = s
        .gql("{ resource(id: \"svc:ledger@db-1\") { kind sources { source } relations(direction: INCOMING, kind: \"depends_on\") { from { id } } } }")
        .await;
    assert_eq!(v["resource"]["kind"], "service_instance", "{v}");
    let sources: Vec<&str> = v["resource"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&"agent:db-1"), "{v}");
    assert_eq!(
        v["resource"]["relations"],
        json!([{"from": {"id": "svc:checkout@web-1"}}]),
        "{v}"
    );
    let v = s.gql("{ resource(id: \"ext:10.0.0.7\") { id } }").await;
    assert!(v["resource"].is_null(), "{v}");
    // The agent took the declared kind as a guess: the declaration can
    // still change it, and the agent's next report takes the new kind.
    s.admin("mutation { assertResource(id: \"svc:ledger@db-1\", kind: \"container\") { id } }")
        .await;
    let mut again = db.clone();
    again["sent_at"] = json!(infragraph::model::now_ms());
    assert_eq!(s.post(Some(DB1), bytes(&again)).await.0, 200);
    s.app.settle().await.unwrap();
    let v = s
        .gql("{ resource(id: \"svc:ledger@db-1\") { kind sources { source status } } }")
        .await;
    assert_eq!(v["resource"]["kind"], "container", "{v}");
    assert!(
        v["resource"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["source"] == "agent:db-1" && p["status"] == "PRESENT"),
        "{v}"
    );
}
