//! The AWS EC2 collector against a real EC2 API endpoint: moto's server on a
//! free loopback port (`moto_server -H 127.0.0.1 -p PORT`). Fixtures are made
//! through the EC2 API itself (aws-sdk-ec2 against moto); the collector runs
//! as users run it (the binary, credentials from the environment), and the
//! store and the GraphQL API are checked.
//!
//! `tests/run.sh` installs moto into the project's `.venv`. Without it these
//! tests print why they skipped; with CI=true they fail instead.
#![cfg(feature = "aws")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collectors::aws_ec2::sdk::aws_config::{BehaviorVersion, Region, SdkConfig};
use collectors::aws_ec2::sdk::aws_sdk_ec2 as ec2;
use collectors::aws_ec2::sdk::aws_sdk_sts as sts;
use ec2::config::{Credentials, SharedCredentialsProvider};
use ec2::types::{
    DomainType, InstanceStateName, InstanceType, IpPermission, ResourceType, Tag, TagSpecification,
    UserIdGroupPair,
};
use infragraph::app::App;
use infragraph::store::Store;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";

/// A moto server on a free port, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("INFRAGRAPH_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts moto, or returns `None` with the reason printed (a failure
    /// instead under CI=true).
    async fn start(test: &str) -> Option<Moto> {
        Self::start_with(test, &[]).await
    }

    /// Starts moto with extra environment (e.g. authentication on).
    async fn start_with(test: &str, env: &[(&str, &str)]) -> Option<Moto> {
        let Some(bin) = moto_binary() else {
            let why = "moto_server not found (tests/run.sh installs it: python3 -m venv .venv && .venv/bin/pip install 'moto[server]')";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {why}; CI must run the EC2 tests");
            }
            eprintln!("SKIPPED {test}: {why}");
            return None;
        };
        let port = free_port();
        let child = Command::new(&bin)
            .envs(env.iter().copied())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/moto-api/", moto.url)).await
                && r.status().is_success()
            {
                return Some(moto);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on {} within 60 s",
                moto.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sdk(&self, region: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "static",
            )))
            .build()
    }

    fn ec2(&self, region: &str) -> ec2::Client {
        ec2::Client::new(&self.sdk(region))
    }

    /// An EC2 client acting in another account, through an assumed role.
    async fn ec2_as(&self, role: &str, region: &str) -> ec2::Client {
        let creds = sts::Client::new(&self.sdk(region))
            .assume_role()
            .role_arn(role)
            .role_session_name("fixtures")
            .send()
            .await
            .unwrap()
            .credentials
            .unwrap();
        let conf = self
            .sdk(region)
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                creds.access_key_id,
                creds.secret_access_key,
                Some(creds.session_token),
                None,
                "assumed",
            )))
            .build();
        ec2::Client::new(&conf)
    }

    /// `infragraph collect aws-ec2 --endpoint-url URL ARGS...` with static
    /// credentials in the environment, as a user would run it.
    fn collect(&self, db: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_infragraph"))
            .env_remove("INFRAGRAPH_DATABASE_URL")
            .env_remove("INFRAGRAPH_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent/infragraph-test")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/infragraph-test",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["--database-url", db, "collect", "aws-ec2"])
            .args(["--endpoint-url", &self.url])
            .args(args)
            .output()
            .unwrap()
    }
}

/// The nodes of a Relay connection.
fn nodes(conn: &Value) -> Value {
    Value::Array(
        conn["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .collect(),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tags(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    let mut t = TagSpecification::builder().resource_type(resource);
    for (k, v) in pairs {
        t = t.tags(Tag::builder().key(*k).value(*v).build());
    }
    t.build()
}

fn arn(region: &str, account: &str, kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:{kind}/{id}")
}

async fn create_vpc(c: &ec2::Client, cidr: &str, name: &str) -> String {
    c.create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tags(ResourceType::Vpc, &[("Name", name)]))
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap()
}

async fn create_subnet(c: &ec2::Client, vpc: &str, cidr: &str, zone: &str) -> String {
    c.create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone(zone)
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap()
}

async fn create_sg(c: &ec2::Client, vpc: &str, name: &str) -> String {
    c.create_security_group()
        .vpc_id(vpc)
        .group_name(name)
        .description(format!("{name} tier"))
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap()
}

/// A route table in `vpc`, associated with `subnet`.
async fn route_table(c: &ec2::Client, vpc: &str, subnet: &str) -> String {
    let rt = c
        .create_route_table()
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap();
    c.associate_route_table()
        .route_table_id(&rt)
        .subnet_id(subnet)
        .send()
        .await
        .unwrap();
    rt
}

/// A VPC elastic IP; its allocation id.
async fn elastic_ip(c: &ec2::Client) -> String {
    c.allocate_address()
        .domain(DomainType::Vpc)
        .send()
        .await
        .unwrap()
        .allocation_id
        .unwrap()
}

/// Starts `n` instances; returns their ids.
async fn run_instances(
    c: &ec2::Client,
    subnet: &str,
    sg: &str,
    n: i32,
    tag_pairs: &[(&str, &str)],
) -> Vec<String> {
    let mut req = c
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(InstanceType::T3Micro)
        .min_count(n)
        .max_count(n)
        .subnet_id(subnet)
        .security_group_ids(sg)
        .key_name("ops");
    if !tag_pairs.is_empty() {
        req = req.tag_specifications(tags(ResourceType::Instance, tag_pairs));
    }
    req.send()
        .await
        .unwrap()
        .instances
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id.unwrap())
        .collect()
}

async fn terminate(c: &ec2::Client, id: &str) {
    c.terminate_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    // moto moves instances to `terminated` at once; make sure.
    let out = c
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
    let state = out.reservations()[0].instances()[0]
        .state()
        .and_then(|s| s.name())
        .cloned();
    assert_eq!(state, Some(InstanceStateName::Terminated));
}

/// A real server (port 0) over the store the CLI wrote.
struct Api(common::Running);

impl Api {
    async fn start(url: &str) -> Api {
        let store = Store::connect(url).await.unwrap();
        let app: Arc<App> = App::new(store, None).await.unwrap();
        Api(common::Running::start(app).await)
    }

    async fn gql(&self, query: &str, vars: Value) -> Value {
        self.0.data(query, vars, None).await
    }

    /// One resource with its outgoing relations (`KIND -> to id`).
    async fn resource(&self, id: &str) -> Value {
        self.gql(
            "query($id: ID!) { resource(id: $id) { id kind name status goneAt attributes \
             labels { key value } sources { source status } \
             relations(direction: OUTGOING) { kind attributes to { id kind } } } }",
            json!({"id": id}),
        )
        .await["resource"]
            .clone()
    }
}

/// `kind -> to` pairs of a resource's outgoing relations.
fn out_edges(r: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["to"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn has_edge(r: &Value, kind: &str, to: &str) -> bool {
    out_edges(r).iter().any(|(k, t)| k == kind && t == to)
}

fn edge_attrs<'a>(r: &'a Value, kind: &str, to: &str) -> &'a Value {
    r["relations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["to"]["id"] == to)
        .map(|e| &e["attributes"])
        .unwrap_or_else(|| panic!("no {kind} -> {to} in {r}"))
}

fn label<'a>(r: &'a Value, key: &str) -> Option<&'a str> {
    r["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == key)
        .and_then(|l| l["value"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_an_estate_across_regions_with_rules_volumes_gateways_and_services() {
    let Some(moto) = Moto::start("discovers_an_estate").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    // us-east-1: VPC A with a public and a private subnet in two zones.
    let vpc_a = create_vpc(&c, "10.0.0.0/16", "prod").await;
    let public = create_subnet(&c, &vpc_a, "10.0.1.0/24", "us-east-1a").await;
    let private = create_subnet(&c, &vpc_a, "10.0.2.0/24", "us-east-1b").await;
    let web_sg = create_sg(&c, &vpc_a, "web").await;
    let db_sg = create_sg(&c, &vpc_a, "db").await;
    // db accepts 5432 from the web group and from the public subnet's CIDR.
    c.authorize_security_group_ingress()
        .group_id(&db_sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(5432)
                .to_port(5432)
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&web_sg).build())
                .build(),
        )
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(6432)
                .to_port(6432)
                .ip_ranges(
                    ec2::types::IpRange::builder()
                        .cidr_ip("10.0.1.0/24")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let web = run_instances(
        &c,
        &public,
        &web_sg,
        2,
        &[
            ("Name", "web-1"),
            ("Service", "checkout"),
            ("team", "payments"),
        ],
    )
    .await;
    let db = run_instances(
        &c,
        &private,
        &db_sg,
        1,
        &[("Name", "ledger-db"), ("app", "ledger")],
    )
    .await;
    // A data volume on the first web host.
    let vol = c
        .create_volume()
        .availability_zone("us-east-1a")
        .size(50)
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    c.attach_volume()
        .volume_id(&vol)
        .instance_id(&web[0])
        .device("/dev/sdf")
        .send()
        .await
        .unwrap();
    // Internet gateway + route table for the public subnet.
    let igw = c
        .create_internet_gateway()
        .send()
        .await
        .unwrap()
        .internet_gateway
        .unwrap()
        .internet_gateway_id
        .unwrap();
    c.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc_a)
        .send()
        .await
        .unwrap();
    let rt_public = route_table(&c, &vpc_a, &public).await;
    c.create_route()
        .route_table_id(&rt_public)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    // NAT gateway in the public subnet; the private subnet routes through it.
    let nat_eip = elastic_ip(&c).await;
    let nat = c
        .create_nat_gateway()
        .subnet_id(&public)
        .allocation_id(&nat_eip)
        .send()
        .await
        .unwrap()
        .nat_gateway
        .unwrap()
        .nat_gateway_id
        .unwrap();
    let rt_private = route_table(&c, &vpc_a, &private).await;
    c.create_route()
        .route_table_id(&rt_private)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .unwrap();
    // An elastic IP on the database host.
    let eip = elastic_ip(&c).await;
    c.associate_address()
        .allocation_id(&eip)
        .instance_id(&db[0])
        .send()
        .await
        .unwrap();
    // A second VPC peered with the first, and a transit gateway.
    let vpc_b = create_vpc(&c, "10.1.0.0/16", "shared").await;
    let pcx = c
        .create_vpc_peering_connection()
        .vpc_id(&vpc_a)
        .peer_vpc_id(&vpc_b)
        .send()
        .await
        .unwrap()
        .vpc_peering_connection
        .unwrap()
        .vpc_peering_connection_id
        .unwrap();
    c.accept_vpc_peering_connection()
        .vpc_peering_connection_id(&pcx)
        .send()
        .await
        .unwrap();
    let tgw = c
        .create_transit_gateway()
        .description("core")
        .send()
        .await
        .unwrap()
        .transit_gateway
        .unwrap()
        .transit_gateway_id
        .unwrap();
    c.create_transit_gateway_vpc_attachment()
        .transit_gateway_id(&tgw)
        .vpc_id(&vpc_a)
        .subnet_ids(&private)
        .send()
        .await
        .unwrap();
    // eu-west-1: another VPC and an instance of another service.
    let e = moto.ec2("eu-west-1");
    let vpc_eu = create_vpc(&e, "10.2.0.0/16", "eu").await;
    let eu_subnet = create_subnet(&e, &vpc_eu, "10.2.1.0/24", "eu-west-1a").await;
    let eu_sg = create_sg(&e, &vpc_eu, "api").await;
    let eu = run_instances(
        &e,
        &eu_subnet,
        &eu_sg,
        1,
        &[("Name", "eu-api"), ("Service", "api")],
    )
    .await;
    // Another VPC reusing the same private range: the db group's CIDR rule
    // must not reach into it.
    let vpc_twin = create_vpc(&c, "10.0.0.0/16", "twin").await;
    let twin_subnet = create_subnet(&c, &vpc_twin, "10.0.1.0/24", "us-east-1a").await;
    let zones = c.describe_availability_zones().send().await.unwrap();
    let zone_1a = zones
        .availability_zones()
        .iter()
        .find(|z| z.zone_name() == Some("us-east-1a"))
        .and_then(|z| z.zone_id())
        .unwrap()
        .to_string();

    // The collector, in-process, keeps the collector contract.
    let collection = collectors::aws_ec2::collect_with(
        &collectors::aws_ec2::AwsEc2Config {
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            ..Default::default()
        },
        moto.sdk("us-east-1"),
    )
    .await
    .unwrap();
    collectors::check_contract(&collection).unwrap();
    assert!(collection.is_complete(), "{:?}", collection.warnings);
    let scopes: Vec<&str> = collection
        .batches
        .iter()
        .map(|b| b.scope.as_str())
        .collect();
    assert_eq!(
        scopes,
        [
            format!("{ACCOUNT}/eu-west-1"),
            format!("{ACCOUNT}/us-east-1")
        ]
    );

    // The binary, as a user runs it.
    let dbf = common::TestDb::sqlite();
    let out = moto.collect(&dbf.url, &["--regions", "us-east-1,eu-west-1"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(": ok"), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("us-east-1") && text(&out.stderr).contains("collected"),
        "progress per region on stderr: {}",
        text(&out.stderr)
    );

    let api = Api::start(&dbf.url).await;
    // Found by native id and by Name tag.
    let found = api
        .gql(
            "query($s: String) { resources(search: $s) { edges { node { id kind name } } } }",
            json!({"s": web[0]}),
        )
        .await;
    let web0 = arn("us-east-1", ACCOUNT, "instance", &web[0]);
    assert_eq!(
        nodes(&found["resources"]),
        json!([{"id": web0, "kind": "host", "name": "web-1"}])
    );
    let by_name = api
        .gql(
            "{ resources(search: \"ledger-db\") { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let db0 = arn("us-east-1", ACCOUNT, "instance", &db[0]);
    assert_eq!(nodes(&by_name["resources"]), json!([{"id": db0}]));

    // The instance: attributes, tags as labels, containment, service.
    let h = api.resource(&web0).await;
    assert_eq!(h["status"], "PRESENT");
    assert_eq!(h["attributes"]["provider"], "aws");
    assert_eq!(h["attributes"]["state"], "running");
    assert_eq!(h["attributes"]["instance_type"], "t3.micro");
    assert_eq!(h["attributes"]["image_id"], "ami-12c6146b");
    assert_eq!(h["attributes"]["availability_zone"], "us-east-1a");
    assert_eq!(h["attributes"]["key_name"], "ops");
    assert!(
        h["attributes"]["private_ip"]
            .as_str()
            .unwrap()
            .starts_with("10.0.1.")
    );
    assert!(h["attributes"]["launch_time"].is_string());
    assert_eq!(label(&h, "team"), Some("payments"));
    assert_eq!(label(&h, "Service"), Some("checkout"));
    assert_eq!(
        h["sources"],
        json!([{"source": format!("aws-ec2:{ACCOUNT}/us-east-1"), "status": "PRESENT"}])
    );
    let public_arn = arn("us-east-1", ACCOUNT, "subnet", &public);
    let private_arn = arn("us-east-1", ACCOUNT, "subnet", &private);
    let web_sg_arn = arn("us-east-1", ACCOUNT, "security-group", &web_sg);
    let db_sg_arn = arn("us-east-1", ACCOUNT, "security-group", &db_sg);
    let vpc_a_arn = arn("us-east-1", ACCOUNT, "vpc", &vpc_a);
    assert!(has_edge(&h, "contained_in", &public_arn), "{h}");
    assert!(has_edge(&h, "contained_in", &web_sg_arn), "{h}");
    assert!(has_edge(&h, "instance_of", "svc:checkout"), "{h}");
    let ledger = api.resource(&db0).await;
    assert!(
        has_edge(&ledger, "instance_of", "svc:ledger"),
        "app tag: {ledger}"
    );
    let checkout = api.resource("svc:checkout").await;
    assert_eq!(checkout["kind"], "service");
    assert_eq!(checkout["name"], "checkout");

    // Subnets, VPCs, zones, region.
    let s = api.resource(&public_arn).await;
    assert_eq!(s["kind"], "subnet");
    assert!(has_edge(&s, "contained_in", &vpc_a_arn), "{s}");
    assert!(
        has_edge(&s, "contained_in", &format!("aws:az/{zone_1a}")),
        "{s}"
    );
    let v = api.resource(&vpc_a_arn).await;
    assert_eq!(v["name"], "prod");
    assert!(has_edge(&v, "contained_in", "aws:region/us-east-1"), "{v}");
    let z = api.resource(&format!("aws:az/{zone_1a}")).await;
    assert_eq!(z["kind"], "availability_zone");
    assert_eq!(z["name"], "us-east-1a");
    assert!(has_edge(&z, "contained_in", "aws:region/us-east-1"));

    // Security groups: rules as attributes, reachability as relations.
    let g = api.resource(&db_sg_arn).await;
    assert_eq!(g["name"], "db");
    assert!(has_edge(&g, "contained_in", &vpc_a_arn));
    assert_eq!(
        edge_attrs(&g, "allows_traffic_from", &web_sg_arn),
        &json!({"ports": ["tcp/5432"]})
    );
    assert_eq!(
        edge_attrs(&g, "allows_traffic_from", &public_arn),
        &json!({"ports": ["tcp/6432"]})
    );
    assert!(
        !has_edge(&g, "allows_traffic_from", &private_arn),
        "10.0.1.0/24 does not cover the private subnet"
    );
    assert!(
        !has_edge(
            &g,
            "allows_traffic_from",
            &arn("us-east-1", ACCOUNT, "subnet", &twin_subnet)
        ),
        "a same-range subnet of another VPC is not covered: {g}"
    );
    assert_eq!(g["attributes"]["ingress"].as_array().unwrap().len(), 2);

    // Volume and interface attached to the instance.
    let vol_arn = arn("us-east-1", ACCOUNT, "volume", &vol);
    let vr = api.resource(&vol_arn).await;
    assert_eq!(vr["kind"], "volume");
    assert_eq!(vr["attributes"]["size_gib"], 50);
    assert_eq!(
        edge_attrs(&vr, "attached_to", &web0)["device"],
        json!("/dev/sdf")
    );
    let enis = api
        .gql(
            "query($id: ID!) { resource(id: $id) { relations(direction: INCOMING, kind: \"attached_to\") { from { id kind } } } }",
            json!({"id": web0}),
        )
        .await;
    let kinds: Vec<&str> = enis["resource"]["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["from"]["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"network_interface"), "{enis}");
    assert!(kinds.contains(&"volume"), "{enis}");

    // Routing: subnet -> route table -> gateway; NAT inside the public subnet.
    let igw_arn = arn("us-east-1", ACCOUNT, "internet-gateway", &igw);
    let nat_arn = arn("us-east-1", ACCOUNT, "natgateway", &nat);
    let rtp = arn("us-east-1", ACCOUNT, "route-table", &rt_public);
    let rtv = arn("us-east-1", ACCOUNT, "route-table", &rt_private);
    assert!(has_edge(&s, "depends_on", &rtp), "{s}");
    let rt = api.resource(&rtp).await;
    assert_eq!(
        edge_attrs(&rt, "depends_on", &igw_arn),
        &json!({"destinations": ["0.0.0.0/0"]})
    );
    assert!(has_edge(
        &api.resource(&private_arn).await,
        "depends_on",
        &rtv
    ));
    assert!(has_edge(&api.resource(&rtv).await, "depends_on", &nat_arn));
    let natr = api.resource(&nat_arn).await;
    assert_eq!(natr["kind"], "nat_gateway");
    assert!(has_edge(&natr, "contained_in", &public_arn));
    let igwr = api.resource(&igw_arn).await;
    assert!(has_edge(&igwr, "contained_in", &vpc_a_arn));

    // Peering, transit gateway, elastic IP.
    let pcx_arn = arn("us-east-1", ACCOUNT, "vpc-peering-connection", &pcx);
    let p = api.resource(&pcx_arn).await;
    assert!(has_edge(&p, "contained_in", &vpc_a_arn), "{p}");
    assert!(
        has_edge(
            &p,
            "contained_in",
            &arn("us-east-1", ACCOUNT, "vpc", &vpc_b)
        ),
        "{p}"
    );
    let tgws = api
        .gql(
            "{ resources(kind: \"transit_gateway\") { edges { node { id } } } }",
            json!({}),
        )
        .await;
    let tgw_id = nodes(&tgws["resources"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        tgw_id.ends_with(&format!("transit-gateway/{tgw}")),
        "{tgw_id}"
    );
    assert!(has_edge(&v, "connected_to", &tgw_id), "{v}");
    let eip_arn = arn("us-east-1", ACCOUNT, "elastic-ip", &eip);
    let er = api.resource(&eip_arn).await;
    assert_eq!(er["kind"], "elastic_ip");
    assert!(has_edge(&er, "associated_with", &db0), "{er}");

    // The other region.
    let eu0 = arn("eu-west-1", ACCOUNT, "instance", &eu[0]);
    let eur = api.resource(&eu0).await;
    assert_eq!(eur["attributes"]["region"], "eu-west-1");
    // A subnet with no explicit association depends on its VPC's main table.
    let eu_sub = api
        .resource(&arn("eu-west-1", ACCOUNT, "subnet", &eu_subnet))
        .await;
    let main = e
        .describe_route_tables()
        .filters(
            ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc_eu)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .route_tables
        .unwrap()
        .into_iter()
        .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
        .unwrap()
        .route_table_id
        .unwrap();
    assert_eq!(
        edge_attrs(
            &eu_sub,
            "depends_on",
            &arn("eu-west-1", ACCOUNT, "route-table", &main)
        ),
        &json!({"association": "main"})
    );
    assert!(has_edge(&eur, "instance_of", "svc:api"));

    // The network diagram places hosts in their subnets with IP and service,
    // draws security-group reachability, and leaves interfaces out.
    let dot = api
        .gql(
            "{ diagram(kind: NETWORK, showReachability: true) }",
            json!({}),
        )
        .await["diagram"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dot.contains("[checkout]"), "{dot}");
    assert!(dot.contains("allows traffic from"), "{dot}");
    assert!(dot.contains("subnet"), "{dot}");
    assert!(!dot.contains(":network-interface/"), "{dot}");

    // Collected relations carry impact: the internet gateway failing takes
    // the public subnet down (its route table routes through it), so both
    // checkout instances, so checkout; and the private subnet too, through
    // the NAT gateway that sits in the public subnet. The path says so.
    let imp = api
        .gql(
            "query($f: [ID!]!) { impact(failed: $f) { down { resource { id } path { kind from { id } to { id } } } } }",
            json!({"f": [igw_arn]}),
        )
        .await;
    let down = imp["impact"]["down"].as_array().unwrap();
    let ids: Vec<&str> = down
        .iter()
        .map(|d| d["resource"]["id"].as_str().unwrap())
        .collect();
    for want in [
        public_arn.as_str(),
        web0.as_str(),
        "svc:checkout",
        "svc:ledger",
    ] {
        assert!(ids.contains(&want), "{want} not DOWN: {ids:?}");
    }
    let ledger_path = down
        .iter()
        .find(|d| d["resource"]["id"] == "svc:ledger")
        .unwrap()["path"]
        .to_string();
    assert!(ledger_path.contains(&nat_arn), "{ledger_path}");
    assert!(
        !ids.contains(&eu0.as_str()),
        "eu-west-1 is not behind that gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_instance_is_marked_gone_by_the_next_run_and_keeps_its_history() {
    let Some(moto) = Moto::start("terminated_instance").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "prod").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
    let sg = create_sg(&c, &vpc, "web").await;
    let ids = run_instances(&c, &subnet, &sg, 2, &[("Service", "checkout")]).await;
    let db = common::TestDb::sqlite();
    let out = moto.collect(&db.url, &["--regions", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    terminate(&c, &ids[0]).await;
    let out = moto.collect(&db.url, &["--regions", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("retired"),
        "{}",
        text(&out.stdout)
    );

    let api = Api::start(&db.url).await;
    let gone = arn("us-east-1", ACCOUNT, "instance", &ids[0]);
    let r = api.resource(&gone).await;
    assert_eq!(r["status"], "GONE", "{r}");
    assert!(r["goneAt"].is_string());
    let kept = api
        .resource(&arn("us-east-1", ACCOUNT, "instance", &ids[1]))
        .await;
    assert_eq!(kept["status"], "PRESENT");
    // Still queryable: among gone resources, with its history.
    let h = api
        .gql(
            "query($id: ID!) { resources(status: GONE, kind: \"host\") { edges { node { id } } } \
             resource(id: $id) { history { op source } } }",
            json!({"id": gone}),
        )
        .await;
    assert_eq!(nodes(&h["resources"]), json!([{"id": gone}]));
    let ops: Vec<&str> = h["resource"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["op"].as_str().unwrap())
        .collect();
    assert!(ops.contains(&"create") && ops.contains(&"retire"), "{h}");
    // checkout has one instance left: failing it takes checkout down.
    let imp = api
        .gql(
            "query($f: [ID!]!) { impact(failed: $f) { down { resource { id } } } }",
            json!({"f": [arn("us-east-1", ACCOUNT, "instance", &ids[1])]}),
        )
        .await;
    assert!(
        imp.to_string().contains("svc:checkout"),
        "the only instance left takes checkout down: {imp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_region_makes_the_run_partial_and_nothing_there_is_retired() {
    let Some(moto) = Moto::start("failing_region").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let e = moto.ec2("eu-west-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "us").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
    let sg = create_sg(&c, &vpc, "web").await;
    let us = run_instances(&c, &subnet, &sg, 2, &[]).await;
    let evpc = create_vpc(&e, "10.1.0.0/16", "eu").await;
    let esubnet = create_subnet(&e, &evpc, "10.1.1.0/24", "eu-west-1a").await;
    let esg = create_sg(&e, &evpc, "web").await;
    let eu = run_instances(&e, &esubnet, &esg, 1, &[]).await;
    let db = common::TestDb::sqlite();
    let out = moto.collect(&db.url, &["--regions", "us-east-1,eu-west-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // eu-west-1's endpoint now refuses connections; us-east-1 changes.
    terminate(&c, &us[0]).await;
    let added = run_instances(&c, &subnet, &sg, 1, &[]).await;
    terminate(&e, &eu[0]).await;
    let dead = format!("eu-west-1=http://127.0.0.1:{}", free_port());
    let out = moto.collect(
        &db.url,
        &[
            "--regions",
            "us-east-1,eu-west-1",
            "--endpoint-url",
            &dead,
            "--max-attempts",
            "2",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "partial run exits 2: {stderr}");
    assert!(
        stderr.contains(&format!("warning: {ACCOUNT}/eu-west-1:")),
        "the warning names the account and region: {stderr}"
    );
    assert!(
        !stderr.contains("testing"),
        "no credentials in output: {stderr}"
    );

    let api = Api::start(&db.url).await;
    let runs = api
        .gql("{ runs(last: 1) { status collector warnings } }", json!({}))
        .await;
    assert_eq!(runs["runs"][0]["status"], "PARTIAL");
    assert_eq!(runs["runs"][0]["collector"], "aws-ec2");
    let w = runs["runs"][0]["warnings"].to_string();
    assert!(w.contains(&format!("{ACCOUNT}/eu-west-1")), "{w}");
    // The failed region is exactly as it was: its instance is still present
    // although moto has terminated it.
    let eu0 = api
        .resource(&arn("eu-west-1", ACCOUNT, "instance", &eu[0]))
        .await;
    assert_eq!(eu0["status"], "PRESENT", "{eu0}");
    // The healthy region was updated: the new instance is in, and the
    // instance the API reports terminated is marked gone (positive evidence,
    // not absence).
    let new = api
        .resource(&arn("us-east-1", ACCOUNT, "instance", &added[0]))
        .await;
    assert_eq!(new["status"], "PRESENT", "{new}");
    let t = api
        .resource(&arn("us-east-1", ACCOUNT, "instance", &us[0]))
        .await;
    assert_eq!(t["status"], "GONE", "{t}");
    let kept = api
        .resource(&arn("us-east-1", ACCOUNT, "instance", &us[1]))
        .await;
    assert_eq!(kept["status"], "PRESENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_roles_cover_several_accounts() {
    let Some(moto) = Moto::start("assumed_roles").await else {
        return;
    };
    let roles = [
        (
            "111111111111",
            "arn:aws:iam::111111111111:role/infragraph-read",
        ),
        (
            "222222222222",
            "arn:aws:iam::222222222222:role/infragraph-read",
        ),
    ];
    let mut want = Vec::new();
    for (account, role) in roles {
        let c = moto.ec2_as(role, "us-east-1").await;
        let vpc = create_vpc(&c, "10.0.0.0/16", account).await;
        let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
        let sg = create_sg(&c, &vpc, "web").await;
        let ids = run_instances(&c, &subnet, &sg, 1, &[("Service", "checkout")]).await;
        want.push((account, arn("us-east-1", account, "instance", &ids[0])));
    }
    let db = common::TestDb::sqlite();
    let out = moto.collect(
        &db.url,
        &[
            "--regions",
            "us-east-1",
            "--assume-role",
            roles[0].1,
            "--assume-role",
            roles[1].1,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api = Api::start(&db.url).await;
    for (account, id) in &want {
        let r = api.resource(id).await;
        assert_eq!(r["attributes"]["account"], *account, "{r}");
        assert_eq!(
            r["sources"][0]["source"],
            format!("aws-ec2:{account}/us-east-1")
        );
        assert!(has_edge(&r, "instance_of", "svc:checkout"));
    }
    // One service, with instances in both accounts.
    let s = api
        .gql(
            "{ resource(id: \"svc:checkout\") { relations(direction: INCOMING) { from { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        s["resource"]["relations"].as_array().unwrap().len(),
        2,
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_schedules_the_collector_from_its_config_file() {
    let Some(moto) = Moto::start("serve_schedules").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "prod").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
    let sg = create_sg(&c, &vpc, "web").await;
    let ids = run_instances(&c, &subnet, &sg, 1, &[("Name", "scheduled-1")]).await;
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let cfg = files.write(
        "infragraph.toml",
        &format!(
            "database_url = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n[[collectors]]\ntype = \"aws-ec2\"\ninterval = \"1h\"\nregions = [\"us-east-1\"]\nendpoint_url = \"{}\"\n",
            db.url, moto.url
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_infragraph"))
        .env_remove("INFRAGRAPH_DATABASE_URL")
        .env_remove("INFRAGRAPH_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/nonexistent/infragraph-test")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/infragraph-test",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("serving GraphQL at http://") {
                let rest = &line[pos + "serving GraphQL at http://".len()..];
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server address");
    let client = reqwest::Client::new();
    let start = Instant::now();
    let want = arn("us-east-1", ACCOUNT, "instance", &ids[0]);
    loop {
        let v: Value = client
            .post(format!("http://{addr}/graphql"))
            .json(&json!({"query": "{ resources(search: \"scheduled-1\") { edges { node { id } } } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v.to_string().contains(&want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "scheduled aws-ec2 run never showed {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_flags_and_config_are_refused_with_the_field_named() {
    let db = common::TestDb::sqlite();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_infragraph"))
            .args(["--database-url", &db.url, "collect", "aws-ec2"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--regions", "us-east-1,Mars"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("'Mars' is not a region name"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--assume-role", "infragraph-read"]);
    assert!(
        text(&out.stderr).contains("roles: 'infragraph-read' is not an IAM role ARN"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--endpoint-url", "ftp://x"]);
    assert!(
        text(&out.stderr).contains("endpoint_url: 'ftp://x'"),
        "{}",
        text(&out.stderr)
    );

    let files = common::Files::new();
    let cfg = files.write(
        "c.toml",
        "[[collectors]]\ntype = \"aws-ec2\"\nregion = \"us-east-1\"\n",
    );
    let err = infragraph::config::Config::load(&cfg).unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown field `region`"),
        "{err:#}"
    );
}

/// A fleet of 1,000 instances: all collected, with the time it took and how
/// much of that is the endpoint answering DescribeInstances alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_a_thousand_instances() {
    let Some(moto) = Moto::start("fleet").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "fleet").await;
    let subnets = [
        create_subnet(&c, &vpc, "10.0.0.0/20", "us-east-1a").await,
        create_subnet(&c, &vpc, "10.0.16.0/20", "us-east-1b").await,
    ];
    let sg = create_sg(&c, &vpc, "fleet").await;
    let t = Instant::now();
    for i in 0..10 {
        run_instances(
            &c,
            &subnets[i % 2],
            &sg,
            100,
            &[("Service", &format!("svc-{}", i % 5))],
        )
        .await;
    }
    let fixtures = t.elapsed();
    let t = Instant::now();
    let mut pages = c
        .describe_instances()
        .max_results(1000)
        .into_paginator()
        .send();
    let mut n = 0;
    while let Some(p) = pages.next().await {
        n += p
            .unwrap()
            .reservations()
            .iter()
            .map(|r| r.instances().len())
            .sum::<usize>();
    }
    let describe = t.elapsed();
    assert_eq!(n, 1000);
    let db = common::TestDb::sqlite();
    let t = Instant::now();
    // Small pages, so that pagination is exercised (moto pages by
    // reservation: 10 reservations of 100 instances, 5 per page).
    let out = moto.collect(&db.url, &["--regions", "us-east-1", "--page-size", "5"]);
    let total = t.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api = Api::start(&db.url).await;
    let hosts = api
        .gql(
            "{ resources(kind: \"host\", first: 10) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(hosts["resources"]["totalCount"], 1000, "{hosts}");
    let imp = api
        .gql(
            "query($f: [ID!]!) { impact(failed: $f) { downCount } }",
            json!({"f": [arn("us-east-1", ACCOUNT, "subnet", &subnets[0])]}),
        )
        .await;
    assert!(imp["impact"]["downCount"].as_i64().unwrap() >= 500, "{imp}");
    eprintln!(
        "FLEET 1000 instances: fixtures {:.1} s; collect (binary, end to end) {:.1} s; \
         of which one DescribeInstances sweep by moto alone {:.1} s; stdout: {}; log: {}",
        fixtures.as_secs_f64(),
        total.as_secs_f64(),
        describe.as_secs_f64(),
        text(&out.stdout).trim(),
        text(&out.stderr)
            .lines()
            .filter(|l| l.contains("collected") || l.contains("finished"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_regions_covers_every_region_the_account_has() {
    let Some(moto) = Moto::start("all_regions").await else {
        return;
    };
    let c = moto.ec2("ap-southeast-2");
    let vpc = create_vpc(&c, "10.0.0.0/16", "syd").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "ap-southeast-2a").await;
    let sg = create_sg(&c, &vpc, "web").await;
    let ids = run_instances(&c, &subnet, &sg, 1, &[("Name", "syd-1")]).await;
    let regions = moto
        .ec2("us-east-1")
        .describe_regions()
        .send()
        .await
        .unwrap()
        .regions
        .unwrap()
        .len();
    let db = common::TestDb::sqlite();
    let out = moto.collect(&db.url, &["--all-regions"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let api = Api::start(&db.url).await;
    let r = api
        .resource(&arn("ap-southeast-2", ACCOUNT, "instance", &ids[0]))
        .await;
    assert_eq!(r["name"], "syd-1");
    let got = api
        .gql(
            "{ resources(kind: \"region\", first: 100) { totalCount } runs(last: 1) { scope } }",
            json!({}),
        )
        .await;
    assert_eq!(got["resources"]["totalCount"], regions, "{got}");
    assert_eq!(got["runs"][0]["scope"], "all regions; default credentials");
}

/// A service tag naming an id an inventory declares as another kind: the
/// declared kind stands, the instances still join it, the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_tag_joins_a_declared_resource_of_another_kind() {
    let Some(moto) = Moto::start("service_tag_kind").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "prod").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
    let sg = create_sg(&c, &vpc, "db").await;
    let ids = run_instances(&c, &subnet, &sg, 2, &[("app", "ledger")]).await;
    let db = common::TestDb::sqlite();
    let files = common::Files::new();
    let inv = files.write(
        "inv.yaml",
        "resources:\n  - {id: svc:ledger, kind: database, name: ledger}\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_infragraph"))
        .args(["--database-url", &db.url, "collect", "inventory"])
        .arg(&inv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for _ in 0..2 {
        let out = moto.collect(&db.url, &["--regions", "us-east-1"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let api = Api::start(&db.url).await;
    let r = api.resource("svc:ledger").await;
    assert_eq!(r["kind"], "database", "{r}");
    let srcs = r["sources"].to_string();
    assert!(srcs.contains("inventory:"), "{srcs}");
    for id in &ids {
        let h = api
            .resource(&arn("us-east-1", ACCOUNT, "instance", id))
            .await;
        assert!(has_edge(&h, "instance_of", "svc:ledger"), "{h}");
    }
    // Both instances down: the declared database is down (all instances).
    let imp = api
        .gql(
            "query($f: [ID!]!) { impact(failed: $f) { down { id } } }",
            json!({"f": ids.iter().map(|i| arn("us-east-1", ACCOUNT, "instance", i)).collect::<Vec<_>>()}),
        )
        .await;
    assert!(imp.to_string().contains("svc:ledger"), "{imp}");
}

/// Credentials the endpoint refuses: the run fails, writes nothing, and the
/// secret appears nowhere (output, run record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_the_run_without_leaking_the_secret() {
    let Some(moto) = Moto::start_with(
        "refused_credentials",
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")],
    )
    .await
    else {
        return;
    };
    let secret = "Zq9-not-a-real-secret-7f3k2";
    let db = common::TestDb::sqlite();
    let out = Command::new(env!("CARGO_BIN_EXE_infragraph"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/nonexistent/infragraph-test")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/infragraph-test",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "--database-url",
            &db.url,
            "--log",
            "debug",
            "collect",
            "aws-ec2",
        ])
        .args(["--regions", "us-east-1", "--endpoint-url", &moto.url])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "the secret leaked:\n{stdout}\n{stderr}"
    );
    let api = Api::start(&db.url).await;
    let runs = api
        .gql("{ runs(last: 1) { status error warnings } }", json!({}))
        .await;
    assert_eq!(runs["runs"][0]["status"], "FAILED", "{runs}");
    assert!(!runs.to_string().contains(secret), "{runs}");
    let n = api
        .gql("{ resources(first: 1) { totalCount } }", json!({}))
        .await;
    assert_eq!(n["resources"]["totalCount"], 0, "nothing written");
}

/// The host agent and the EC2 collector describe one machine as ONE host:
/// by the instance identity (IMDS) or, without it, by a private IP that
/// exactly one collected instance has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_an_ec2_instance_joins_the_collected_host() {
    let Some(moto) = Moto::start("agent_join").await else {
        return;
    };
    let c = moto.ec2("us-east-1");
    let vpc = create_vpc(&c, "10.0.0.0/16", "prod").await;
    let subnet = create_subnet(&c, &vpc, "10.0.1.0/24", "us-east-1a").await;
    let sg = create_sg(&c, &vpc, "web").await;
    let ids = run_instances(&c, &subnet, &sg, 2, &[("Name", "web")]).await;
    let db = common::TestDb::sqlite();
    let out = moto.collect(&db.url, &["--regions", "us-east-1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second_ip = c
        .describe_instances()
        .instance_ids(&ids[1])
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .private_ip_address()
        .unwrap()
        .to_string();

    let store = Store::connect(&db.url).await.unwrap();
    let app = App::new(store, None).await.unwrap();
    let report = |host: &str, ip: &str, ec2: Value| -> collectors::host::HostReport {
        serde_json::from_value(json!({
            "version": 1,
            "host": {"hostname": host, "interfaces": [{"name": "eth0", "addresses": [ip]}], "ec2": ec2},
            "listeners": [{"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "process": {"pid": 7, "name": "web"}}],
        }))
        .unwrap()
    };
    // With the instance identity document.
    infragraph::agent::record(
        &app,
        &report(
            "ip-10-0-1-1",
            "10.0.1.250",
            json!({"instance_id": ids[0], "region": "us-east-1", "account_id": ACCOUNT}),
        ),
    )
    .await
    .unwrap();
    // Without it: joined by its private IP.
    infragraph::agent::record(&app, &report("ip-10-0-1-2", &second_ip, Value::Null))
        .await
        .unwrap();
    let (res, rels) = app.store.load_all().await.unwrap();
    for (id, agent) in [
        (&ids[0], "agent:ip-10-0-1-1"),
        (&ids[1], "agent:ip-10-0-1-2"),
    ] {
        let arn = arn("us-east-1", ACCOUNT, "instance", id);
        let h = res.iter().find(|r| r.id == arn).unwrap();
        let mut sources: Vec<&str> = h.sources.iter().map(|s| s.source.as_str()).collect();
        sources.sort();
        assert_eq!(
            sources,
            [agent, &format!("aws-ec2:{ACCOUNT}/us-east-1")],
            "{arn}"
        );
        assert!(
            rels.iter().any(|r| r.kind == "runs_on" && r.to == arn),
            "the agent's service runs on the EC2 host {arn}"
        );
    }
    assert!(
        !res.iter().any(|r| r.id.starts_with("host:ip-10-0-1")),
        "no second host resource"
    );
}
