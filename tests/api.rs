//! The GraphQL API over real HTTP: a server on port 0 backed by a fresh
//! store loaded with the demo inventory.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use infragraph::app::App;
use infragraph::collector::ConfiguredCollector;
use infragraph::store::Store;
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789";

struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    _db: common::TestDb,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start(token: Option<&str>) -> Server {
        Self::start_on(common::TestDb::sqlite(), token).await
    }

    /// A server on `db`, loaded with the demo inventory.
    async fn start_on(db: common::TestDb, token: Option<&str>) -> Server {
        let store = Store::connect(&db.url).await.unwrap();
        let collector = ConfiguredCollector::Inventory(collectors::inventory::InventoryConfig {
            paths: vec![common::demo_inventory()],
        });
        let app: Arc<App> = App::new(store, token.map(String::from)).await.unwrap();
        let run = app.collect(&collector).await.unwrap();
        assert_eq!(
            run.status,
            infragraph::model::RunStatus::Ok,
            "{:?}",
            run.error
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(infragraph::cli::serve_on(
            listener,
            app.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            app,
            _db: db,
            client: reqwest::Client::new(),
            stop: Some(tx),
        }
    }

    async fn gql_with(&self, query: &str, vars: Value, token: Option<&str>) -> Value {
        let mut req = self
            .client
            .post(format!("http://{}/graphql", self.addr))
            .json(&json!({"query": query, "variables": vars}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn gql(&self, query: &str, vars: Value) -> Value {
        self.gql_with(query, vars, None).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn error_message(v: &Value) -> String {
    v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn resource_and_nested_relations_resolve_from_the_graph() {
    let s = Server::start(None).await;
    let v = s
        .gql(
            r#"query($id: ID!) { resource(id: $id) { id kind name status labels { key value }
                 sources { source status }
                 relations(direction: OUTGOING, kind: "depends_on") { kind to { id relations(direction: OUTGOING, kind: "runs_on") { to { id kind } } } } } }"#,
            json!({"id": "svc:payments"}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let r = &v["data"]["resource"];
    assert_eq!(r["kind"], "service");
    assert_eq!(r["status"], "PRESENT");
    assert!(
        r["labels"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "team", "value": "payments"}))
    );
    assert!(
        r["sources"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("inventory:")
    );
    let deps: Vec<&str> = r["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["to"]["id"].as_str().unwrap())
        .collect();
    assert!(
        deps.contains(&"db:payments") && deps.contains(&"ext:stripe"),
        "{deps:?}"
    );
    let db = r["relations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["to"]["id"] == "db:payments")
        .unwrap();
    assert_eq!(db["to"]["relations"][0]["to"]["id"], "host:db-1");

    let v = s.gql(r#"{ resource(id: "nope") { id } }"#, json!({})).await;
    assert!(v["errors"].is_null());
    assert!(v["data"]["resource"].is_null(), "unknown id is null");
}

#[tokio::test]
async fn resources_filter_and_paginate() {
    let s = Server::start(None).await;
    let q = r#"query($after: String) { resources(kind: "host", labels: ["role=app", "env"], first: 4, after: $after) {
                 totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }"#;
    let v = s.gql(q, json!({})).await;
    let c = &v["data"]["resources"];
    assert_eq!(c["totalCount"], 6, "{v}");
    assert_eq!(c["edges"].as_array().unwrap().len(), 4);
    assert_eq!(c["pageInfo"]["hasNextPage"], true);
    let v = s.gql(q, json!({"after": c["pageInfo"]["endCursor"]})).await;
    let c2 = &v["data"]["resources"];
    assert_eq!(c2["edges"].as_array().unwrap().len(), 2);
    assert_eq!(c2["pageInfo"]["hasNextPage"], false);
    assert_eq!(c2["edges"][1]["node"]["id"], "host:app-6");

    let v = s
        .gql(
            r#"{ resources(search: "PAYMENTS-ledger") { edges { node { id } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        v["data"]["resources"]["edges"][0]["node"]["id"],
        "db:payments"
    );
    let v = s
        .gql(
            r#"{ resources(labels: ["tier!=1", "team=payments", "tier"]) { totalCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["resources"]["totalCount"], 0, "{v}");
    let v = s
        .gql(r#"{ resources(labels: ["=x"]) { totalCount } }"#, json!({}))
        .await;
    assert!(
        error_message(&v).contains("invalid label selector '=x'"),
        "{v}"
    );
}

#[tokio::test]
async fn impact_over_graphql_explains_down_and_degraded() {
    let s = Server::start(None).await;
    let q = r#"query($f: [ID!]!) { impact(failed: $f) { downCount degradedCount
        down { resource { id } depth path { kind from { id } to { id } } }
        degraded { resource { id } status remaining total redundancy } } }"#;
    let v = s.gql(q, json!({"f": ["host:app-1"]})).await;
    assert!(v["errors"].is_null(), "{v}");
    let imp = &v["data"]["impact"];
    let down: Vec<&str> = imp["down"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        down,
        vec!["host:app-1", "svc:auth@app-1", "svc:checkout@app-1"]
    );
    let auth = imp["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["id"] == "svc:auth")
        .unwrap();
    assert_eq!(auth["redundancy"], "2/3");
    assert_eq!(auth["status"], "DEGRADED");
    assert_eq!(imp["downCount"], 3);
    let inst = &imp["down"][1];
    assert_eq!(inst["path"][0]["kind"], "runs_on");
    assert_eq!(inst["path"][0]["to"]["id"], "host:app-1");

    let v = s.gql(q, json!({"f": ["host:app-1", "svc:nope"]})).await;
    assert_eq!(error_message(&v), "unknown resource id 'svc:nope'");
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNKNOWN_RESOURCE");

    let v = s
        .gql(r#"{ dependencies(id: "svc:payments", maxDepth: 2) { resource { id } depth path { kind } } }"#, json!({}))
        .await;
    let deps: Vec<&str> = v["data"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(
        deps.contains(&"db:payments") && deps.contains(&"host:db-1"),
        "{deps:?}"
    );
}

#[tokio::test]
async fn runs_and_history_come_from_the_store() {
    let s = Server::start(None).await;
    let v = s
        .gql(r#"{ runs(last: 5) { collector scope status resourcesSeen relationsSeen created error } }"#, json!({}))
        .await;
    let run = &v["data"]["runs"][0];
    assert_eq!(run["collector"], "inventory");
    assert_eq!(run["status"], "OK");
    assert!(run["resourcesSeen"].as_i64().unwrap() > 50);
    let v = s
        .gql(
            r#"{ resource(id: "svc:auth") { history { op source } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["resource"]["history"][0]["op"], "create", "{v}");
}

#[tokio::test]
async fn mutations_need_the_token() {
    let s = Server::start(Some(TOKEN)).await;
    let m = r#"mutation { assertResource(id: "svc:new", kind: "service", name: "new", labels: [{key: "team", value: "x"}]) { id status sources { source } } }"#;
    let v = s.gql(m, json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHORIZED", "{v}");
    let v = s
        .gql_with(m, json!({}), Some("wrong-token-wrong-token"))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
    let v = s
        .gql(r#"{ resource(id: "svc:new") { id } }"#, json!({}))
        .await;
    assert!(
        v["data"]["resource"].is_null(),
        "nothing written without the token"
    );

    // Label keys follow the inventory files' rules.
    let bad = r#"mutation { assertResource(id: "svc:bad", kind: "service", labels: [{key: "team=x", value: "y"}]) { id } }"#;
    let v = s.gql_with(bad, json!({}), Some(TOKEN)).await;
    assert_eq!(
        error_message(&v),
        "label key 'team=x' is empty or contains '=', '!' or ','"
    );
    // The scheme is case-insensitive.
    let resp = s
        .client
        .post(format!("http://{}/graphql", s.addr))
        .header("authorization", format!("BEARER {TOKEN}"))
        .json(&json!({"query": m}))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(
        v["data"]["assertResource"]["sources"][0]["source"],
        "manual"
    );
    let v = s
        .gql_with(
            r#"mutation { assertRelation(from: "svc:new", to: "svc:auth", kind: "depends_on") { kind from { id } to { id } } }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    // The new dependency shows in impact at once.
    let v = s
        .gql(
            r#"{ impact(failed: ["svc:auth"]) { down { resource { id } } } }"#,
            json!({}),
        )
        .await;
    assert!(v.to_string().contains("svc:new"), "{v}");
    let v = s
        .gql_with(r#"mutation { assertRelation(from: "svc:new", to: "svc:ghost", kind: "depends_on") { kind } }"#, json!({}), Some(TOKEN))
        .await;
    assert!(
        error_message(&v).contains("points to unknown resource 'svc:ghost'"),
        "{v}"
    );
    let v = s
        .gql_with(
            r#"mutation { retractRelation(from: "svc:new", to: "svc:auth", kind: "depends_on") }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(v["data"]["retractRelation"], true);
    let v = s
        .gql_with(
            r#"mutation { retractResource(id: "svc:new") }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(v["data"]["retractResource"], true);
    let v = s
        .gql(
            r#"{ resource(id: "svc:new") { status goneAt } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["resource"]["status"], "GONE");
    // Retracting something only the inventory asserted is refused politely.
    let v = s
        .gql_with(
            r#"mutation { retractResource(id: "svc:auth") }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert_eq!(v["data"]["retractResource"], false);
}

#[tokio::test]
async fn mutations_are_disabled_without_a_configured_token() {
    let s = Server::start(None).await;
    let v = s
        .gql(r#"mutation { retractResource(id: "svc:auth") }"#, json!({}))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "WRITES_DISABLED");
    assert!(error_message(&v).contains("--token-file"));
    assert!(error_message(&v).contains("token_file"));
}

#[tokio::test]
async fn limits_on_depth_and_body_size_and_the_edges() {
    let s = Server::start(None).await;
    // Depth: relations nested far beyond the limit.
    let mut q = String::from("{ resource(id: \"svc:auth\") { id ");
    for _ in 0..12 {
        q.push_str("relations { to { id ");
    }
    for _ in 0..12 {
        q.push_str("} } ");
    }
    q.push_str("} }");
    let v = s.gql(&q, json!({})).await;
    let msg = error_message(&v).to_lowercase();
    assert!(
        msg.contains("nested too deep") || msg.contains("too complex"),
        "{v}"
    );
    // Deep but cheap: the depth limit alone refuses it.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "} ".repeat(14)
    );
    let v = s.gql(&deep, json!({})).await;
    assert_eq!(
        error_message(&v),
        "query is nested deeper than 16 levels",
        "{v}"
    );
    assert_eq!(v["errors"][0]["extensions"]["code"], "TOO_DEEP", "{v}");
    // Costly but shallow: the complexity limit, with its figure and a hint.
    let aliases: String = (0..6)
        .map(|i| format!(" s{i}: spofs {{ downCount }}"))
        .collect();
    let v = s.gql(&format!("{{{aliases} }}"), json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "TOO_COMPLEX", "{v}");
    assert!(
        error_message(&v).starts_with("query is too complex: its cost is over 50000"),
        "{v}"
    );
    // Counts are 0 or more: a negative one is refused by name.
    for (q, says) in [
        (
            r#"{ impact(failed: ["svc:auth"], maxDepth: -1) { downCount } }"#,
            "maxDepth must be 0 or more, not -1",
        ),
        (
            r#"{ impact(failed: ["svc:auth"]) { down(first: -1) { depth } } }"#,
            "first must be 0 or more, not -1",
        ),
        (
            r#"{ dependencies(id: "svc:auth", maxDepth: -2) { depth } }"#,
            "maxDepth must be 0 or more, not -2",
        ),
        (
            r#"{ runs(last: -1) { id } }"#,
            "last must be 0 or more, not -1",
        ),
    ] {
        let v = s.gql(q, json!({})).await;
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "BAD_INPUT",
            "{q}: {v}"
        );
        assert_eq!(error_message(&v), says, "{q}: {v}");
    }
    // A failed field's null goes up as far as the schema asks: to the
    // whole data when every field above it is non-null (async-graphql
    // stopped at `"spofs": [null]` and `"impact": null`); a field that may
    // be null is null alone.
    for q in [
        "{ spofs(first: 1) { takesDown(first: -5) { id } } }",
        r#"{ impact(failed: ["host:app-1"]) { down(first: -1) { resource { id } } } }"#,
        r#"{ a: impact(failed: ["host:app-1"]) { downCount } b: spofs(first: 1) { takesDown(first: -5) { id } } }"#,
    ] {
        let v = s.gql(q, json!({})).await;
        assert!(v["data"].is_null(), "{q}: {v}");
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "BAD_INPUT",
            "{q}: {v}"
        );
    }
    // A failed field's key, which async-graphql leaves out beside fields
    // that did not fail, is null too, and goes up the same way.
    for q in [
        r#"{ runs(last: 1) { id } impact(failed: ["nope"]) { downCount } }"#,
        "{ spofs(first: 1) { resource { id } takesDown(first: -5) { id } } }",
        r#"{ runs(last: 1) { id } dependencies(id: "nope") { depth } }"#,
    ] {
        let v = s.gql(q, json!({})).await;
        assert!(v["data"].is_null(), "{q}: {v}");
    }
    let v = s
        .gql(
            r#"{ runs(last: 1) { id } path(from: "nope", to: "host:app-1") { kind } }"#,
            json!({}),
        )
        .await;
    assert!(v["data"]["path"].is_null(), "{v}");
    assert_eq!(v["data"]["runs"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNKNOWN_RESOURCE",
        "{v}"
    );
    // Only what failed is null: a repeated key merges (the impact list's
    // fast path kept only the last `resource`, and its missing `id` was
    // then taken for a failure), and objects whose every field failed are
    // objects again, with those fields null.
    let repeated = r#"impact(failed: ["cache:sessions"]) { downCount down(first: 2) { resource { id } resource { kind } } }"#;
    for q in [
        format!("{{ {repeated} }}"),
        format!(r#"{{ p: path(from: "nope", to: "x") {{ kind }} {repeated} }}"#),
    ] {
        let v = s.gql(&q, json!({})).await;
        let first = &v["data"]["impact"]["down"][0]["resource"];
        assert!(
            first["id"].is_string() && first["kind"].is_string(),
            "{q}: {v}"
        );
    }
    let v = s
        .gql(
            r#"{ a: path(from: "nope", to: "x") { kind } b: path(from: "n2", to: "x") { kind } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"], json!({"a": null, "b": null}), "{v}");
    let v = s
        .gql(
            r#"{ p: path(from: "nope", to: "x") { kind } resources(first: 1) { pageInfo @skip(if: true) { hasNextPage } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"], json!({"p": null, "resources": {}}), "{v}");
    // The same without an error in the answer: an object whose every
    // field is skipped is an empty object, not null (in a fragment too).
    for q in [
        r#"{ resources(first: 1) { pageInfo @skip(if: true) { hasNextPage } } }"#,
        r#"query { ...F } fragment F on Query { resources(first: 1) { pageInfo @include(if: false) { hasNextPage } } }"#,
    ] {
        let v = s.gql(q, json!({})).await;
        assert_eq!(v, json!({"data": {"resources": {}}}), "{q}: {v}");
    }
    // A field skipped by a variable's default is not run (async-graphql
    // read a missing variable as false).
    let v = s
        .gql(
            r#"query Q($s: Boolean = true) { impact(failed: ["host:app-1"]) @skip(if: $s) { down(first: -1) { depth } } runs(last: 1) { id } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    assert!(v["data"].get("impact").is_none(), "{v}");
    let v = s
        .gql(
            r#"{ resource(id: "nope") { id } impact(failed: ["host:app-1"]) { downCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        v["data"],
        json!({"resource": null, "impact": {"downCount": 3}}),
        "{v}"
    );
    // Past the largest page: refused, as resources(first:) is, not cut.
    let v = s.gql("{ runs(last: 1001) { id } }", json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_PAGE", "{v}");
    assert_eq!(
        error_message(&v),
        "last must be between 0 and 1000, not 1001",
        "{v}"
    );
    // GraphiQL's introspection query stays within the limits: the older
    // page's, and GraphiQL 4's (graphql-js 16: nine levels of ofType,
    // deprecated arguments, isOneOf), which the server's page loads.
    let v = s.gql(INTROSPECTION, json!({})).await;
    assert!(v["errors"].is_null(), "{v}");
    let type_ref = format!(
        "kind name {}{}",
        "ofType { kind name ".repeat(9),
        "} ".repeat(9)
    );
    let graphiql4 = format!(
        r#"query IntrospectionQuery {{
  __schema {{
    description
    queryType {{ name kind }} mutationType {{ name kind }} subscriptionType {{ name kind }}
    types {{ ...FullType }}
    directives {{ name description isRepeatable locations args(includeDeprecated: true) {{ ...InputValue }} }}
  }}
}}
fragment FullType on __Type {{
  kind name description specifiedByURL isOneOf
  fields(includeDeprecated: true) {{ name description args(includeDeprecated: true) {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }}
  inputFields(includeDeprecated: true) {{ ...InputValue }}
  interfaces {{ ...TypeRef }}
  enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }}
  possibleTypes {{ ...TypeRef }}
}}
fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue isDeprecated deprecationReason }}
fragment TypeRef on __Type {{ {type_ref} }}"#
    );
    let v = s.gql(&graphiql4, json!({})).await;
    assert!(v["errors"].is_null(), "{v}");
    assert!(v["data"]["__schema"]["types"].as_array().unwrap().len() > 20);
    // Body size.
    let big = "x".repeat(2 << 20);
    let resp = s
        .client
        .post(format!("http://{}/graphql", s.addr))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"query\": \"{{ resource(id: \\\"{big}\\\") {{ id }} }}\"}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Said as GraphQL says errors, not in plain text.
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        error_message(&v),
        "request body larger than 1048576 bytes",
        "{v}"
    );
    // The same without a length announced (chunked): 413 too, said plainly.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..20 {
            let head = format!("{:x}\r\n", chunk.len());
            // The server may answer and close before the last chunk.
            if c.write_all(head.as_bytes()).await.is_err()
                || c.write_all(&chunk).await.is_err()
                || c.write_all(b"\r\n").await.is_err()
            {
                break;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n").await;
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains("request body larger than 1048576 bytes"),
            "{answer}"
        );
    }
    // Not JSON: 400 saying so.
    let resp = s
        .client
        .post(format!("http://{}/graphql", s.addr))
        .header("content-type", "application/json")
        .body("{ resource }")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        error_message(&v).starts_with("not a GraphQL request"),
        "{v}"
    );
    // Health and GraphiQL.
    let h: Value = s
        .client
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert!(h["resources"].as_u64().unwrap() > 50);
    let page = s
        .client
        .get(format!("http://{}/graphql", s.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.to_lowercase().contains("graphiql"));
    // GraphiQL 4: its headers pane carries the token for mutations.
    assert!(page.contains("graphiql@4"), "{page}");
}

/// The introspection query GraphiQL sends on load.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

/// The example operations in schema/examples (which the README shows) run
/// against the demo inventory without errors and return data.
#[tokio::test]
async fn example_operations_in_schema_examples_work() {
    let s = Server::start(None).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let q = std::fs::read_to_string(&path).unwrap();
        let v = s.gql(&q, json!({})).await;
        assert!(v["errors"].is_null(), "{}: {v}", path.display());
        let data = v["data"].as_object().unwrap();
        assert!(
            data.values().all(|d| !d.is_null()),
            "{}: {v}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5, "expected the example operations, found {n}");
}

/// `history` on every resource of a page resolves (batched) and a relation's
/// change shows in the history of both of its ends.
#[tokio::test]
async fn history_of_a_page_of_resources() {
    let s = Server::start(None).await;
    let v = s
        .gql(
            r#"{ resources(kind: "database", first: 10) { edges { node { id history { op resourceId toId relationKind } } } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let edges = v["data"]["resources"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 5);
    for e in edges {
        let h = e["node"]["history"].as_array().unwrap();
        assert!(
            h.iter().any(|c| c["op"] == "create" && c["toId"].is_null()),
            "{e}"
        );
    }
    let orders = edges
        .iter()
        .find(|e| e["node"]["id"] == "db:orders")
        .unwrap();
    let h = orders["node"]["history"].as_array().unwrap();
    assert!(
        h.iter().any(|c| c["resourceId"] == "svc:checkout"
            && c["toId"] == "db:orders"
            && c["relationKind"] == "depends_on"),
        "{orders}"
    );
}

/// The incident queries over GraphQL on the demo: a zone outage by selector,
/// counts and paging, single points of failure, paths, cycles and
/// "what changed upstream".
#[tokio::test]
async fn incident_queries_over_graphql() {
    let s = Server::start(None).await;
    let v = s
        .gql(
            r#"{ impact(where: {containedIn: "zone:eu-central-1a"}) { downCount degradedCount
                 failed { id } countsByKind { kind down degraded } down(first: 2, offset: 1) { resource { id } } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let imp = &v["data"]["impact"];
    let failed: Vec<&str> = imp["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&"host:web-1")
            && failed.contains(&"subnet:prod-a")
            && !failed.contains(&"host:web-2")
    );
    assert_eq!(imp["down"].as_array().unwrap().len(), 2);
    let hosts = imp["countsByKind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "host")
        .unwrap();
    assert_eq!(hosts["down"], 10, "{imp}");
    let total: i64 = imp["countsByKind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["down"].as_i64().unwrap())
        .sum();
    assert_eq!(total, imp["downCount"].as_i64().unwrap());

    let v = s
        .gql(r#"{ impact(failed: []) { downCount } }"#, json!({}))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_INPUT", "{v}");
    let v = s
        .gql(
            r#"{ impact(where: {containedIn: "zone:mars"}) { downCount } }"#,
            json!({}),
        )
        .await;
    assert!(error_message(&v).contains("zone:mars"), "{v}");

    let v = s
        .gql(r#"{ spofs(critical: ["tier=1"]) { resource { id } takesDownCount takesDown(first: 3) { id } downCount } }"#, json!({}))
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let spofs = v["data"]["spofs"].as_array().unwrap();
    let ids: Vec<&str> = spofs
        .iter()
        .map(|x| x["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"host:db-1"),
        "db-1 carries orders and payments: {ids:?}"
    );
    assert!(
        !ids.contains(&"host:app-1"),
        "app-1 only hosts redundant instances: {ids:?}"
    );
    // Paged: spofCount gives the total, offset the rest; past 1,000 at
    // once is refused, not cut.
    let v = s
        .gql(
            r#"{ n: spofCount(critical: ["tier=1"]) a: spofs(first: 2) { resource { id } } b: spofs(first: 1000, offset: 2) { resource { id } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let paged: Vec<&str> = ["a", "b"]
        .iter()
        .flat_map(|k| v["data"][k].as_array().unwrap())
        .map(|x| x["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, ids, "{v}");
    assert_eq!(v["data"]["n"], json!(ids.len()), "{v}");
    // More than 1,000 at once is read as 1,000 (as before offset came).
    let v = s
        .gql("{ spofs(first: 5000) { resource { id } } }", json!({}))
        .await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["spofs"].as_array().unwrap().len(), ids.len());

    let v = s
        .gql(
            r#"{ path(from: "lb:public", to: "db:orders") { kind from { id } to { id } } }"#,
            json!({}),
        )
        .await;
    let path = v["data"]["path"].as_array().unwrap();
    assert_eq!(path.first().unwrap()["from"]["id"], "lb:public");
    assert_eq!(path.last().unwrap()["to"]["id"], "db:orders");
    let v = s
        .gql(
            r#"{ cycles { resources { id } relations { kind } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["cycles"], json!([]), "the demo has no cycles");

    let v = s
        .gql(
            r#"{ dependencies(id: "svc:checkout", changedSince: "2000-01-01T00:00:00Z") { resource { id } lastChangedAt changes { op } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let deps = v["data"]["dependencies"].as_array().unwrap();
    assert!(deps.iter().all(|d| d["changes"][0]["op"] == "create"));
    assert!(deps.iter().any(|d| d["resource"]["id"] == "db:orders"));
    let v = s
        .gql(r#"{ dependencies(id: "svc:checkout", changedSince: "2999-01-01T00:00:00Z") { resource { id } } }"#, json!({}))
        .await;
    assert_eq!(v["data"]["dependencies"], json!([]));
}

/// The lean shapes for large answers: flat fields and the JSON table agree
/// with the nested lists.
#[tokio::test]
async fn impact_table_and_flat_fields_match_the_lists() {
    let s = Server::start(None).await;
    let v = s
        .gql(
            r#"{ impact(failed: ["host:app-1"]) { table down { id kind resource { id } } degraded { id redundancy } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    let imp = &v["data"]["impact"];
    for d in imp["down"].as_array().unwrap() {
        assert_eq!(d["id"], d["resource"]["id"]);
    }
    let table = imp["table"].as_array().unwrap();
    assert_eq!(
        table.len(),
        imp["down"].as_array().unwrap().len() + imp["degraded"].as_array().unwrap().len()
    );
    let auth = table.iter().find(|r| r["id"] == "svc:auth").unwrap();
    assert_eq!(auth["status"], "DEGRADED");
    assert_eq!(
        (auth["remaining"].as_i64(), auth["total"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        table[0],
        json!({"id": "host:app-1", "kind": "host", "status": "DOWN", "depth": 0})
    );
}

/// The fast path for scalar-only impact lists gives exactly what the generic
/// resolver gives: same order, aliases, fragments, nulls, enum values and
/// `__typename`; directives and nested fields fall back to the generic path.
#[tokio::test]
async fn impact_lists_fast_path_matches_the_generic_resolver() {
    let s = Server::start(None).await;
    let fields = "__typename id k: kind name status depth remaining total redundancy";
    // The same selection, once scalar-only (fast) and once with a nested
    // field that forces the generic path; fragments and aliases too.
    let q = format!(
        "fragment F on ImpactedResource {{ {fields} }} \
         {{ impact(failed: [\"host:app-1\", \"host:app-3\", \"host:app-5\"]) {{ \
            fastDown: down {{ ...F r: resource {{ id kind status __typename }} }} \
            slowDown: down {{ ...F r: resource {{ id kind status __typename sources {{ source }} }} }} \
            fastDeg: degraded(first: 3, offset: 1) {{ {fields} }} \
            slowDeg: degraded(first: 3, offset: 1) {{ {fields} path {{ kind }} }} \
            skipped: degraded {{ id @skip(if: true) depth }} }} }}"
    );
    let v = s.gql(&q, json!({})).await;
    assert!(v["errors"].is_null(), "{v}");
    let imp = &v["data"]["impact"];
    let strip = |list: &Value, extra: &str| -> Vec<Value> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let mut o = o.as_object().unwrap().clone();
                o.remove(extra);
                Value::Object(o)
            })
            .collect()
    };
    let fast = strip(&imp["fastDown"], "");
    assert!(fast.len() >= 6, "{imp}");
    let slow: Vec<Value> = strip(&imp["slowDown"], "")
        .into_iter()
        .map(|mut o| {
            o["r"].as_object_mut().unwrap().remove("sources");
            o
        })
        .collect();
    assert_eq!(fast, slow);
    assert_eq!(fast[0]["r"]["status"], "PRESENT");
    assert_eq!(fast[0]["r"]["__typename"], "Resource");
    assert_eq!(strip(&imp["fastDeg"], ""), strip(&imp["slowDeg"], "path"));
    assert_eq!(fast[0]["__typename"], "ImpactedResource");
    let checkout = fast.iter().find(|o| o["id"] == "svc:checkout").unwrap();
    assert_eq!(checkout["status"], "DOWN");
    assert_eq!(checkout["k"], "service");
    assert_eq!(checkout["redundancy"], "0/3");
    assert_eq!(fast[0]["remaining"], Value::Null);
    // @skip is honoured (generic path).
    for o in imp["skipped"].as_array().unwrap() {
        assert!(o.get("id").is_none() && o.get("depth").is_some(), "{o}");
    }
}

/// Regressions from review: lists count towards the complexity limit, so a
/// small query cannot fan out exponentially; GONE and unknown ids in a failed
/// set are named; `critical: []` is refused; a GONE resource is not a path
/// end; a selector typo is an error, not an empty answer.
#[tokio::test]
async fn list_amplification_gone_ids_and_empty_critical_are_refused() {
    let s = Server::start(Some(TOKEN)).await;
    let mut q = String::from("{ resources(first: 10000) { edges { node { ");
    for _ in 0..4 {
        q.push_str("relations { from { ");
    }
    q.push_str("id");
    for _ in 0..4 {
        q.push_str(" } }");
    }
    q.push_str(" } } } }");
    let v = s.gql(&q, json!({})).await;
    assert!(error_message(&v).to_lowercase().contains("complex"), "{v}");
    // A normal page with one level of relations stays fine.
    let v = s
        .gql(
            r#"{ resources(first: 100) { edges { node { id relations { kind to { id } } } } } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    // Whole-graph questions weigh their cost: aliases cannot repeat them.
    let aliased = |field: &str, n: usize| {
        let body: String = (0..n).map(|i| format!(" a{i}: {field}")).collect();
        format!("{{{body} }}")
    };
    for (field, ok, refused) in [
        ("spofs { resource { id } }", 3, 5),
        ("impact(failed: [\"host:app-1\"]) { downCount }", 40, 60),
        ("cycles { resources { id } }", 20, 30),
        ("agents { hostname }", 20, 30),
        (
            "resources(first: 0, search: \"app\") { totalCount }",
            400,
            600,
        ),
        ("runs(last: 1000) { id }", 40, 60),
    ] {
        let v = s.gql(&aliased(field, ok), json!({})).await;
        assert!(v["errors"].is_null(), "{ok} x {field}: {v}");
        let v = s.gql(&aliased(field, refused), json!({})).await;
        assert!(
            error_message(&v).to_lowercase().contains("complex"),
            "{refused} x {field}: {v}"
        );
    }

    let v = s
        .gql(
            r#"{ impact(failed: ["x:1", "x:2", "x:1"]) { downCount } }"#,
            json!({}),
        )
        .await;
    assert_eq!(error_message(&v), "unknown resource ids 'x:1', 'x:2'");
    let v = s
        .gql_with(
            r#"mutation { assertResource(id: "tmp:1", kind: "host") { id } }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    s.gql_with(
        r#"mutation { retractResource(id: "tmp:1") }"#,
        json!({}),
        Some(TOKEN),
    )
    .await;
    let v = s
        .gql(r#"{ impact(failed: ["tmp:1"]) { downCount } }"#, json!({}))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "GONE_RESOURCE", "{v}");

    // Sources, and retiring one: everything `manual` asserts goes GONE,
    // what the inventory reports stays.
    s.gql_with(
        r#"mutation { assertResource(id: "tmp:2", kind: "host") { id } }"#,
        json!({}),
        Some(TOKEN),
    )
    .await;
    let v = s
        .gql(
            "{ sources { source resources relations lastSeen } }",
            json!({}),
        )
        .await;
    let sources = v["data"]["sources"].as_array().unwrap();
    let of = |name: &str| sources.iter().find(|x| x["source"] == name).cloned();
    assert_eq!(of("manual").unwrap()["resources"], 1, "{v}");
    assert!(
        sources
            .iter()
            .any(|x| x["source"].as_str().unwrap().starts_with("inventory:")
                && x["resources"].as_i64().unwrap() > 50),
        "{v}"
    );
    let retire = |source: &str| {
        format!(r#"mutation {{ retireSource(source: "{source}") {{ collector retired }} }}"#)
    };
    let v = s.gql(&retire("manual"), json!({})).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "UNAUTHORIZED", "{v}");
    let v = s
        .gql_with(&retire("inventory:nope"), json!({}), Some(TOKEN))
        .await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"], "UNKNOWN_SOURCE",
        "{v}"
    );
    assert!(error_message(&v).contains("the sources that do: "), "{v}");
    let v = s.gql_with(&retire("manual"), json!({}), Some(TOKEN)).await;
    assert_eq!(
        v["data"]["retireSource"],
        json!({"collector": "manual", "retired": 1}),
        "{v}"
    );
    let v = s
        .gql(
            r#"{ resource(id: "tmp:2") { status } sources { source } }"#,
            json!({}),
        )
        .await;
    assert_eq!(v["data"]["resource"]["status"], "GONE", "{v}");
    assert!(
        !v["data"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["source"] == "manual"),
        "{v}"
    );

    // The gone resource cannot be a path's end, nor list what it needs
    // now; with changedSince it may (what it lost in the window).
    for q in [
        r#"{ path(from: "tmp:1", to: "svc:auth") { kind } }"#,
        r#"{ dependencies(id: "tmp:1") { depth } }"#,
    ] {
        let v = s.gql(q, json!({})).await;
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "GONE_RESOURCE",
            "{q}: {v}"
        );
        assert!(error_message(&v).contains("'tmp:1' is GONE since"), "{v}");
    }
    let v = s
        .gql(
            r#"{ dependencies(id: "tmp:1", changedSince: "2000-01-01T00:00:00Z") { depth } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");

    let v = s
        .gql(r#"{ spofs(critical: []) { downCount } }"#, json!({}))
        .await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_SELECTOR", "{v}");
    // A typo in a selector is an error, never an empty or shrunken answer.
    for (q, says) in [
        (
            r#"{ spofs(critical: ["tear=1"]) { downCount } }"#,
            "no present resource is critical by 'tear=1'",
        ),
        (
            r#"{ spofs(scope: {kind: "hots"}) { downCount } }"#,
            "the scope 'kind=hots' matches no present resource",
        ),
        (
            r#"{ impact(failed: ["host:app-1"], where: {kind: "hots"}) { downCount } }"#,
            "where 'kind=hots' matches no present resource",
        ),
        // `kind!=host` as a label: no resource has a label kind, so it
        // matched all 73, and everything failed.
        (
            r#"{ impact(where: {labels: ["kind!=host"]}) { downCount } }"#,
            "where 'label:kind!=host' selects every present resource (73)",
        ),
    ] {
        let v = s.gql(q, json!({})).await;
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "BAD_SELECTOR",
            "{q}: {v}"
        );
        assert!(error_message(&v).starts_with(says), "{q}: {v}");
    }
}

/// A server state on a new SQLite store holding the inventory `text`
/// (written into `f`), with `token` for writes.
async fn app_with(
    f: &common::Files,
    text: &str,
    token: Option<&str>,
) -> (Arc<App>, common::TestDb) {
    let path = f.write("inventory.yaml", text);
    let db = common::TestDb::sqlite();
    let store = Store::connect(&db.url).await.unwrap();
    let app: Arc<App> = App::new(store, token.map(String::from)).await.unwrap();
    let run = app
        .collect(&ConfiguredCollector::Inventory(
            collectors::inventory::InventoryConfig { paths: vec![path] },
        ))
        .await
        .unwrap();
    assert_eq!(
        run.status,
        infragraph::model::RunStatus::Ok,
        "{:?}",
        run.error
    );
    (app, db)
}

/// The complexity limit cannot know that a hub has hundreds of relations:
/// relations nested three deep through one would list each of them for
/// each of them. Listing stops at `MAX_OBJECTS` with an error that says
/// what to do; the same hub's relations two deep are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_through_a_hub_stop_at_the_object_budget() {
    let f = common::Files::new();
    // The hub also has 600 labels.
    let labels: Vec<String> = (0..600).map(|i| format!("k{i}: v")).collect();
    let mut inv = format!(
        "resources:\n  - {{id: 'svc:hub', kind: service, labels: {{{}}}}}\n",
        labels.join(", ")
    );
    for i in 0..600 {
        inv.push_str(&format!("  - {{id: 'svc:s{i}', kind: service}}\n"));
    }
    inv.push_str("relations:\n");
    for i in 0..600 {
        inv.push_str(&format!(
            "  - {{from: 'svc:s{i}', to: 'svc:hub', kind: depends_on}}\n"
        ));
    }
    let (app, db) = app_with(&f, &inv, Some(TOKEN)).await;
    let s = common::Running::start(app.clone()).await;
    let s = &s;
    let gql = |q: String| async move { s.graphql(&q, json!({}), None).await };
    // 600 + 600 × 600 relations: over the budget.
    let v = gql(r#"{ resource(id: "svc:hub") { relations { from { relations { to { relations { kind } } } } } } }"#.to_string()).await;
    assert_eq!(
        v["errors"][0]["extensions"]["code"],
        "TOO_LARGE",
        "{}",
        &v.to_string()[..300.min(v.to_string().len())]
    );
    assert!(error_message(&v).contains("more than 250000 objects"));
    // The budget belongs to the schema, not to the HTTP handler: the same
    // query executed on the schema directly is refused the same way.
    let direct = infragraph::api::schema()
        .execute(
            async_graphql::Request::new(
                r#"{ resource(id: "svc:hub") { relations { from { relations { to { relations { kind } } } } } } }"#,
            )
            .data(app.snapshot())
            .data(app.clone()),
        )
        .await;
    let direct = serde_json::to_value(&direct).unwrap();
    assert_eq!(
        direct["errors"][0]["extensions"]["code"],
        "TOO_LARGE",
        "{}",
        &direct.to_string()[..300.min(direct.to_string().len())]
    );
    // 600 + 600: fine.
    let v = gql(
        r#"{ resource(id: "svc:hub") { relations { from { relations { kind } } } } }"#.to_string(),
    )
    .await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(
        v["data"]["resource"]["relations"].as_array().unwrap().len(),
        600
    );
    // A mutation's selection has the same budget. Its write lands; the
    // stopped selection is null, with one error at the field saying so.
    let v = s
        .graphql(
            r#"mutation { assertResource(id: "svc:hub", kind: "service") { id relations { from { relations { to { relations { kind } } } } } } }"#,
            json!({}),
            Some(TOKEN),
        )
        .await;
    let shown = &v.to_string()[..400.min(v.to_string().len())];
    assert_eq!(v["errors"][0]["extensions"]["code"], "TOO_LARGE", "{shown}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(v["errors"][0]["path"], json!(["assertResource"]), "{shown}");
    assert!(
        error_message(&v)
            .starts_with("applied (the write landed), but its selection was not resolved"),
        "{shown}"
    );
    assert!(v["data"]["assertResource"].is_null(), "{shown}");
    let v = gql(r#"{ resource(id: "svc:hub") { sources { source } } }"#.to_string()).await;
    assert!(v.to_string().contains("\"manual\""), "{v}");
    // Relations read count whether they match or not: 500 aliases of a
    // kind that matches none of the hub's 600 read 300,000.
    let aliases: String = (0..500)
        .map(|i| format!(" a{i}: relations(kind: \"zzz\") {{ kind }}"))
        .collect();
    let q = format!(r#"{{ resource(id: "svc:hub") {{ id{aliases} }} }}"#);
    let v = gql(q).await;
    assert_eq!(v["errors"][0]["extensions"]["code"], "TOO_LARGE", "{v}");
    // The impact table too: aliases of a 601-entry table, 420 × 601 over
    // the budget, 10 within it.
    for (n, over) in [(420, true), (10, false)] {
        let tables: String = (0..n).map(|i| format!(" t{i}: table")).collect();
        let q = format!(r#"{{ impact(failed: ["svc:hub"]) {{ downCount{tables} }} }}"#);
        let v = gql(q).await;
        if over {
            assert_eq!(
                v["errors"][0]["extensions"]["code"], "TOO_LARGE",
                "{n} tables"
            );
        } else {
            assert!(v["errors"].is_null(), "{n} tables");
            assert_eq!(v["data"]["impact"]["downCount"], 601);
        }
    }
    // Labels count too: 420 aliases of the hub's 600 are over the budget,
    // 10 are not.
    for (n, over) in [(420, true), (10, false)] {
        let aliases: String = (0..n).map(|i| format!(" l{i}: labels {{ key }}")).collect();
        let q = format!(r#"{{ resource(id: "svc:hub") {{ id{aliases} }} }}"#);
        let v = gql(q).await;
        if over {
            assert_eq!(
                v["errors"][0]["extensions"]["code"], "TOO_LARGE",
                "{n} label lists"
            );
        } else {
            assert!(v["errors"].is_null(), "{n} label lists: {v}");
            assert_eq!(
                v["data"]["resource"]["l9"].as_array().map(Vec::len),
                Some(600)
            );
        }
    }
    drop(db);
}

/// A query that runs past `query_timeout` is abandoned with a GraphQL
/// error saying so (503, code TIMEOUT), and the server goes on. The slow
/// query reads a table another connection holds locked: slow for as long
/// as the test says, on any machine. Meanwhile `/healthz` and queries
/// answered from the graph go on, and once the lock is gone the store
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_timeout_is_abandoned_with_a_timeout_error() {
    use sqlx::Connection;
    let test = "a_query_past_the_timeout_is_abandoned_with_a_timeout_error";
    let Some(db) = common::TestDb::postgres(test).await else {
        return;
    };
    let url = db.url.clone();
    let s = Server::start_on(db, None).await;
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut other)
        .await
        .unwrap();
    s.app
        .set_query_timeout(std::time::Duration::from_millis(500));
    let t = std::time::Instant::now();
    let resp = s
        .client
        .post(format!("http://{}/graphql", s.addr))
        .json(&json!({ "query": "{ runs(last: 1) { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "TIMEOUT", "{v}");
    assert!(
        error_message(&v).contains("longer than 500 ms (query_timeout)"),
        "{v}"
    );
    let health = s
        .client
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let v = s
        .gql(
            r#"{ impact(failed: ["host:db-1"]) { downCount } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let v = s.gql("{ runs(last: 1) { id status } }", json!({})).await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["runs"][0]["status"], "OK", "{v}");
    drop(other);

    // The database goes away under the server: /healthz says so (503 with
    // the reason), so a load balancer stops sending it requests that would
    // be answered from a graph that no longer sees other replicas' writes.
    let (_stop, watching) = tokio::sync::watch::channel(false);
    let _watch = s
        .app
        .spawn_store_watch(std::time::Duration::from_millis(100), watching);
    let health = || async {
        let r = s
            .client
            .get(format!("http://{}/healthz", s.addr))
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (code, v) = health().await;
    assert_eq!(
        (code.as_u16(), v["status"].as_str()),
        (200, Some("ok")),
        "{v}"
    );
    let name = url.rsplit('/').next().unwrap().to_string();
    let mut admin = sqlx::PgConnection::connect(&common::pg_admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let (code, v) = loop {
        // (The first failures may be the pool's connections being cut;
        // then new ones find no database.)
        let (code, v) = health().await;
        let gone = v["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist"));
        if gone || start.elapsed() > std::time::Duration::from_secs(20) {
            break (code, v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(code.as_u16(), 503, "{v}");
    assert_eq!(v["status"], "store unreachable", "{v}");
    assert!(
        v["store_error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v}"
    );
    // In the database's words, once, without the driver's "at line N" (a
    // line of PostgreSQL's own source).
    let said = v["store_error"].as_str().unwrap();
    assert!(!said.contains("at line"), "{v}");
    assert_eq!(said.matches("does not exist").count(), 1, "{v}");
    assert!(v["store_unreachable_since"].is_string(), "{v}");
    assert!(v["resources"].as_u64().unwrap() > 50, "{v}");
}

/// A mutation is not cut off by `query_timeout`: each of its fields is a
/// run committed as it goes, and an answer saying "abandoned" after some
/// landed would lie. Held up by SQLite's lock (another connection's write)
/// past the timeout, it waits and lands; one whose client went away
/// meanwhile lands too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_waits_past_the_timeout_and_lands_even_if_its_client_left() {
    use sqlx::Connection;
    let s = Server::start(Some(TOKEN)).await;
    let mut other = sqlx::AnyConnection::connect(&format!("{}?mode=rw", s._db.url))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    s.app
        .set_query_timeout(std::time::Duration::from_millis(200));
    let post = |id: &str| {
        let req = s
            .client
            .post(format!("http://{}/graphql", s.addr))
            .bearer_auth(TOKEN)
            .json(&json!({ "query": format!(
                r#"mutation {{ assertResource(id: "{id}", kind: "service") {{ id }} }}"#
            ) }));
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    // A write that has not started by the deadline is not started: with
    // no time at all the field is refused, and nothing is written.
    s.app.set_query_timeout(std::time::Duration::ZERO);
    let resp = post("svc:never").await.unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "TIMEOUT", "{v}");
    assert_eq!(v["errors"][0]["path"], json!(["assertResource"]), "{v}");
    assert!(
        error_message(&v).starts_with("not started, nothing written"),
        "{v}"
    );
    s.app
        .set_query_timeout(std::time::Duration::from_millis(200));
    let waits = post("svc:late");
    let leaves = post("svc:left");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert!(!waits.is_finished(), "answered while the store was locked");
    leaves.abort();
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let resp = waits.await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["assertResource"]["id"], "svc:late");
    // The other one lands although nobody waits for its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (resources, _) = s.app.store.load_all().await.unwrap();
        if resources.iter().any(|r| r.id == "svc:left") {
            assert!(!resources.iter().any(|r| r.id == "svc:never"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a mutation whose client left was dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The deadline is checked inside the execution too, before every field
/// and where work starts or lists: a query answered from memory in one go,
/// which a tokio timeout never interrupts, stops there. With no time at
/// all, every query answers TIMEOUT (503), introspection included, with no
/// data.
#[tokio::test]
async fn the_deadline_holds_inside_a_query_answered_from_memory() {
    let s = Server::start(None).await;
    s.app.set_query_timeout(std::time::Duration::ZERO);
    for q in [
        r#"{ impact(failed: ["host:db-1"]) { downCount } }"#,
        r#"{ resources(first: 5) { edges { node { id } } } }"#,
        r#"{ resource(id: "svc:payments") { relations { kind } } }"#,
        r#"{ resource(id: "svc:payments") { id kind } }"#,
        r#"{ __schema { types { name fields { name } } } }"#,
    ] {
        let resp = s
            .client
            .post(format!("http://{}/graphql", s.addr))
            .json(&json!({ "query": q }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{q}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "TIMEOUT", "{q}: {v}");
        assert!(v["data"].is_null(), "{q}: {v}");
        assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{q}: {v}");
    }
    s.app
        .set_query_timeout(infragraph::app::DEFAULT_QUERY_TIMEOUT);
    let v = s
        .gql(
            r#"{ impact(failed: ["host:db-1"]) { downCount } }"#,
            json!({}),
        )
        .await;
    assert!(v["errors"].is_null(), "{v}");
}

/// Paths count against the object budget: the dependencies of the head of
/// a chain of 800 services list 800 paths of 1 to 800 relations (320,400
/// in all), over the budget; their depths alone are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_count_against_the_object_budget() {
    let f = common::Files::new();
    let mut inv = String::from("resources:\n");
    for i in 0..801 {
        inv.push_str(&format!("  - {{id: 'svc:c{i}', kind: service}}\n"));
    }
    inv.push_str("relations:\n");
    for i in 0..800 {
        inv.push_str(&format!(
            "  - {{from: 'svc:c{i}', to: 'svc:c{}', kind: depends_on}}\n",
            i + 1
        ));
    }
    let (app, _db) = app_with(&f, &inv, None).await;
    let s = common::Running::start(app).await;
    // Over the budget, and stopped part way: no partial answer that could
    // pass for a whole one, and the reason once.
    let too_large = |v: &Value| {
        let shown = &v.to_string()[..300.min(v.to_string().len())];
        assert_eq!(v["errors"][0]["extensions"]["code"], "TOO_LARGE", "{shown}");
        assert!(v["data"].is_null(), "{shown}");
        assert_eq!(v["errors"].as_array().unwrap().len(), 1, "{shown}");
    };
    let q = |q: &'static str| s.graphql(q, json!({}), None);
    too_large(&q(r#"{ dependencies(id: "svc:c0") { depth path { kind } } }"#).await);
    let v = q(r#"{ dependencies(id: "svc:c0") { depth } }"#).await;
    assert!(v["errors"].is_null(), "{v}");
    assert_eq!(v["data"]["dependencies"].as_array().unwrap().len(), 800);
    // The same through impact: the tail's failure takes the chain down.
    too_large(&q(r#"{ impact(failed: ["svc:c800"]) { down { path { kind } } } }"#).await);
}

/// An answer's keys come in the order the query names them, at every
/// level, whichever field finished first: a resource's history reads the
/// store and used to come after its id; whole-graph aliases run on the
/// blocking pool and used to come back in the order they finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_the_order_of_the_query() {
    let f = common::Files::new();
    let inv = "resources:\n  - {id: 'svc:a', kind: service, labels: {tier: '1'}}\n  - {id: 'svc:b', kind: service}\nrelations:\n  - {from: 'svc:a', to: 'svc:b', kind: depends_on}\n  - {from: 'svc:b', to: 'svc:a', kind: depends_on}\n";
    let (app, db) = app_with(&f, inv, None).await;
    let s = common::Running::start(app).await;
    let s = &s;
    let raw = |q: String| async move { s.raw(&q).await };
    // Each key after the one before it.
    let in_order = |text: &str, keys: &[&str]| {
        let mut at = 0;
        for k in keys {
            let found = text[at..].find(&format!("\"{k}\":"));
            assert!(found.is_some(), "{k} not after {at}: {keys:?}: {text}");
            at += found.unwrap_or(0) + 1;
        }
    };
    let text = raw(
        r#"{ z: runs(last: 1) { id } resource(id: "svc:a") { history { at } ...more } }
           fragment more on Resource { id k: kind }"#
            .into(),
    )
    .await;
    in_order(&text, &["z", "resource", "history", "at", "id", "k"]);
    // A key whose first mention is skipped takes its place from the
    // mention that is kept: @skip and @include, literal, from a variable,
    // and from a variable's default.
    let text = raw(r#"query Q($no: Boolean = true) { resource(id: "svc:a") {
             history @skip(if: $no) { at }
             kind @include(if: false)
             ... on Resource @skip(if: true) { name }
             id ...H name kind } }
           fragment H on Resource { history { at } }"#
        .into())
    .await;
    in_order(&text, &["resource", "id", "history", "at", "name", "kind"]);
    let text = s
        .client
        .post(format!("http://{}/graphql", s.addr))
        .json(&json!({
            "query": r#"query Q($no: Boolean = false) { resource(id: "svc:a") { history @include(if: $no) { at } id history { at } } }"#,
            "variables": {"no": false},
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    in_order(&text, &["resource", "id", "history"]);
    for _ in 0..10 {
        let text = raw(
            "{ a0: spofs { resource { id } } a1: cycles { resources { id } } a2: spofs { takesDownCount } x: runs { id } }".into(),
        )
        .await;
        in_order(&text, &["a0", "a1", "a2", "x"]);
    }
    // Documents validation refuses are not walked: a fragment cycle (it
    // overflowed the server's stack when the order was planned before
    // validation; so did a chain of 5,000 fragments, here 500), and ten
    // aliases a level over seven levels of fragments (half a gigabyte of
    // plan, and 6–24 s of async-graphql's own complexity check: now
    // refused as TOO_COMPLEX from the document's text, before it). Each is
    // refused, and the server goes on.
    let chain: String = (0..500)
        .map(|i| format!("fragment F{i} on Query {{ a: resource(id: \"x\") {{ ...G{i} }} }} fragment G{i} on Resource {{ id }} "))
        .collect();
    let wide: String = (0..7)
        .map(|i| {
            let aliases: String = (0..10)
                .map(|j| format!(" a{j}: resource(id: \"svc:a\") {{ ...W{} }}", i + 1))
                .collect();
            format!("fragment W{i} on Resource {{ id relations {{ kind }}{aliases} }} ")
        })
        .collect();
    for q in [
        r#"{ resource(id: "svc:a") { ...A } } fragment A on Resource { id dependents { ...A } }"#
            .to_string(),
        format!("{{ ...F0 }} {chain}"),
        format!(
            r#"{{ resource(id: "svc:a") {{ ...W0 }} }} {wide} fragment W7 on Resource {{ id }}"#
        ),
    ] {
        let wide = q.contains("W7");
        let text = raw(q).await;
        assert!(
            text.contains("\"errors\""),
            "{}",
            &text[..text.len().min(300)]
        );
        if wide {
            assert!(text.contains("TOO_COMPLEX"), "{text}");
        }
        let health = s
            .client
            .get(format!("http://{}/healthz", s.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    // Thousands of keys out of order are put back in order in one sort.
    let many: String = (0..5000).map(|i| format!(" t{i}: __typename")).collect();
    let text = raw(format!(
        r#"{{ a: resource(id: "svc:a") {{ history {{ at }} }}{many} }}"#
    ))
    .await;
    in_order(&text, &["a", "t0", "t1", "t4999"]);
    drop(db);
}
