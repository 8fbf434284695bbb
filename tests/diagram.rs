//! Diagrams: the DOT of each view on a hand-built graph parses back with
//! graphviz-rust's parser and has the expected clusters, nodes and styled
//! edges; output is deterministic; hostile names stay inside their strings;
//! large scopes are folded and capped; with Graphviz installed every view
//! renders to SVG and PNG; the HTTP endpoints and the GraphQL field serve them.
//!
//! Rendering tests skip (with the reason printed) when `dot` is missing,
//! except with CI=true, where they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graphviz_rust::dot_structures::{Attribute, EdgeTy, Graph, GraphAttributes, Id, Stmt, Vertex};
use infragraph::diagram::{self, DiagramError, Format, Kind, Options, RenderError};
use infragraph::graph::Snapshot;
use infragraph::model::{Provenance, Relation, Resource, Status};
use serde_json::json;

fn prov(source: &str) -> Provenance {
    Provenance {
        source: source.into(),
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
    }
}

fn res(id: &str, kind: &str, name: &str, labels: &[(&str, &str)]) -> Resource {
    Resource {
        id: id.into(),
        kind: kind.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        attributes: serde_json::Value::Null,
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
        sources: vec![prov("inventory:test")],
    }
}

fn rel(from: &str, to: &str, kind: &str) -> Relation {
    rel_from(from, to, kind, &["inventory:test"])
}

fn rel_from(from: &str, to: &str, kind: &str, sources: &[&str]) -> Relation {
    Relation {
        from: from.into(),
        to: to.into(),
        kind: kind.into(),
        attributes: serde_json::Value::Null,
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
        sources: sources.iter().map(|s| prov(s)).collect(),
    }
}

/// A small estate: one region, one VPC over two zones with a subnet each,
/// three hosts, a gateway pair, a service with two instances behind a load
/// balancer, a database, and dependencies declared, observed and both.
fn estate() -> (Vec<Resource>, Vec<Relation>) {
    let mut r = vec![
        res("region:r1", "region", "r1", &[]),
        res("zone:a", "availability_zone", "zone-a", &[]),
        res("zone:b", "availability_zone", "zone-b", &[]),
        res("vpc:main", "vpc", "main", &[]),
        res("subnet:a", "subnet", "sub-a", &[]),
        res("subnet:b", "subnet", "sub-b", &[]),
        res("host:h1", "host", "h1", &[]),
        res("host:h2", "host", "h2", &[]),
        res("host:h3", "host", "h3", &[]),
        res("volume:v3", "volume", "v3", &[]),
        res("igw:main", "internet_gateway", "igw", &[]),
        res("nat:a", "nat_gateway", "nat-a", &[]),
        res("svc:web", "service", "web", &[("team", "front")]),
        res(
            "svc:web@h1",
            "service_instance",
            "web on h1",
            &[("team", "front")],
        ),
        res(
            "svc:web@h2",
            "service_instance",
            "web on h2",
            &[("team", "front")],
        ),
        res("svc:api", "service", "api", &[("team", "back")]),
        res(
            "svc:api@h2",
            "service_instance",
            "api on h2",
            &[("team", "back")],
        ),
        res("db:main", "database", "main-db", &[("team", "back")]),
        res("ext:pay", "external_endpoint", "pay.example", &[]),
        res("lb:front", "load_balancer", "front", &[("team", "front")]),
    ];
    r[6].attributes = json!({"ip": "10.0.1.1"});
    let l = vec![
        rel("zone:a", "region:r1", "contained_in"),
        rel("zone:b", "region:r1", "contained_in"),
        rel("vpc:main", "region:r1", "contained_in"),
        rel("subnet:a", "vpc:main", "contained_in"),
        rel("subnet:a", "zone:a", "contained_in"),
        rel("subnet:b", "vpc:main", "contained_in"),
        rel("subnet:b", "zone:b", "contained_in"),
        rel("host:h1", "subnet:a", "contained_in"),
        rel("host:h2", "subnet:a", "contained_in"),
        rel("host:h3", "subnet:b", "contained_in"),
        rel("volume:v3", "host:h3", "attached_to"),
        rel("igw:main", "vpc:main", "contained_in"),
        rel("nat:a", "subnet:a", "contained_in"),
        rel("nat:a", "igw:main", "routes_via"),
        rel("svc:web@h1", "svc:web", "instance_of"),
        rel("svc:web@h1", "host:h1", "runs_on"),
        rel("svc:web@h2", "svc:web", "instance_of"),
        rel("svc:web@h2", "host:h2", "runs_on"),
        rel("svc:api@h2", "svc:api", "instance_of"),
        rel("svc:api@h2", "host:h2", "runs_on"),
        rel("db:main", "host:h3", "runs_on"),
        rel("lb:front", "svc:web@h1", "routes_to"),
        rel("lb:front", "svc:web@h2", "routes_to"),
        // declared
        rel("svc:web", "svc:api", "depends_on"),
        // observed by an agent only
        rel_from("svc:api", "db:main", "depends_on", &["agent:h2"]),
        // both
        rel_from(
            "svc:api",
            "ext:pay",
            "depends_on",
            &["inventory:test", "agent:h2"],
        ),
    ];
    (r, l)
}

fn snapshot() -> Snapshot {
    let (r, l) = estate();
    Snapshot::build(r, l, 0)
}

/// What a parsed DOT graph holds: clusters (id → parent), nodes (id →
/// cluster, attributes) and edges (from, to, attributes).
#[derive(Default, Debug)]
struct Parsed {
    clusters: BTreeMap<String, Option<String>>,
    cluster_labels: BTreeMap<String, String>,
    nodes: BTreeMap<String, (Option<String>, BTreeMap<String, String>)>,
    edges: Vec<(String, String, BTreeMap<String, String>)>,
}

/// The text of a DOT id: quoted strings unquoted and unescaped.
fn text(id: &Id) -> String {
    match id {
        Id::Escaped(s) => {
            let inner = &s[1..s.len() - 1];
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(o) => out.push(o),
                        None => out.push('\\'),
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        Id::Html(s) | Id::Plain(s) | Id::Anonymous(s) => s.clone(),
    }
}

fn attrs(a: &[Attribute]) -> BTreeMap<String, String> {
    a.iter().map(|Attribute(k, v)| (text(k), text(v))).collect()
}

fn walk(stmts: &[Stmt], cluster: Option<&str>, out: &mut Parsed) {
    for s in stmts {
        match s {
            Stmt::Subgraph(sg) => {
                let id = text(&sg.id);
                out.clusters.insert(id.clone(), cluster.map(String::from));
                for st in &sg.stmts {
                    if let Stmt::Attribute(Attribute(k, v)) = st
                        && text(k) == "label"
                    {
                        out.cluster_labels.insert(id.clone(), text(v));
                    }
                }
                walk(&sg.stmts, Some(&id), out);
            }
            Stmt::Node(n) => {
                out.nodes.insert(
                    text(&n.id.0),
                    (cluster.map(String::from), attrs(&n.attributes)),
                );
            }
            Stmt::Edge(e) => {
                if let EdgeTy::Pair(Vertex::N(a), Vertex::N(b)) = &e.ty {
                    out.edges
                        .push((text(&a.0), text(&b.0), attrs(&e.attributes)));
                }
            }
            _ => {}
        }
    }
}

fn parse(dot: &str) -> Parsed {
    let g = graphviz_rust::parse(dot).unwrap_or_else(|e| panic!("DOT does not parse: {e}\n{dot}"));
    let Graph::DiGraph { stmts, .. } = g else {
        panic!("not a digraph")
    };
    let mut p = Parsed::default();
    walk(&stmts, None, &mut p);
    p
}

fn build(snap: &Snapshot, kind: Kind, opts: &Options) -> (String, Parsed) {
    let d = diagram::build(snap, kind, opts).unwrap();
    let dot = d.dot();
    let p = parse(&dot);
    (dot, p)
}

/// The graph's label: its title, then one line per note.
fn graph_label(dot: &str) -> String {
    let g = graphviz_rust::parse(dot).unwrap_or_else(|e| panic!("DOT does not parse: {e}\n{dot}"));
    let Graph::DiGraph { stmts, .. } = g else {
        panic!("not a digraph")
    };
    stmts
        .iter()
        .find_map(|s| match s {
            Stmt::GAttribute(GraphAttributes::Graph(a)) => attrs(a).remove("label"),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no graph label: {dot}"))
}

fn visible_edge<'a>(p: &'a Parsed, from: &str, to: &str) -> Option<&'a BTreeMap<String, String>> {
    p.edges
        .iter()
        .find(|(a, b, at)| {
            a == from && b == to && at.get("style").map(String::as_str) != Some("invis")
        })
        .map(|e| &e.2)
}

#[test]
fn network_has_nested_clusters_hosts_gateways_and_load_balancer_targets() {
    let snap = snapshot();
    let (_, p) = build(&snap, Kind::Network, &Options::default());
    let region = "cluster_region:r1";
    let vpc = "cluster_region:r1/vpc:main";
    let zone_a = "cluster_region:r1/vpc:main/zone:a";
    let subnet_a = "cluster_region:r1/vpc:main/zone:a/subnet:a";
    let subnet_b = "cluster_region:r1/vpc:main/zone:b/subnet:b";
    assert_eq!(p.clusters[region], None);
    assert_eq!(p.clusters[vpc].as_deref(), Some(region));
    assert_eq!(p.clusters[zone_a].as_deref(), Some(vpc));
    assert_eq!(p.clusters[subnet_a].as_deref(), Some(zone_a));
    assert!(p.clusters.contains_key(subnet_b));
    // Hosts in their subnet, with what runs there and their volumes.
    let (c, a) = &p.nodes["host:h1"];
    assert_eq!(c.as_deref(), Some(subnet_a));
    assert_eq!(a["label"], "h1\n10.0.1.1\n[web]");
    assert_eq!(p.nodes["host:h2"].1["label"], "h2\n[api, web]");
    assert_eq!(p.nodes["host:h3"].1["label"], "h3\n[main-db]\n1 volume");
    assert_eq!(p.nodes["host:h3"].0.as_deref(), Some(subnet_b));
    // Gateways: the internet gateway at the VPC edge, the NAT in its subnet, the route between.
    assert_eq!(p.nodes["igw:main"].0.as_deref(), Some(vpc));
    assert_eq!(p.nodes["nat:a"].0.as_deref(), Some(subnet_a));
    assert_eq!(
        visible_edge(&p, "nat:a", "igw:main").unwrap()["label"],
        "routes via"
    );
    // The load balancer points at the hosts of its target pool.
    assert!(p.nodes["lb:front"].1["label"].contains("→ web"));
    assert!(visible_edge(&p, "lb:front", "host:h1").is_some());
    assert!(visible_edge(&p, "lb:front", "host:h2").is_some());
    // Instances, services, volumes are not network nodes.
    for id in ["svc:web", "svc:web@h1", "volume:v3", "db:main"] {
        assert!(!p.nodes.contains_key(id), "{id}");
    }
}

#[test]
fn network_scope_narrows_to_a_container() {
    let snap = snapshot();
    let opts = Options {
        scope: Some("subnet:b".into()),
        ..Options::default()
    };
    let (_, p) = build(&snap, Kind::Network, &opts);
    let ids: BTreeSet<&str> = p.nodes.keys().map(String::as_str).collect();
    assert_eq!(ids, BTreeSet::from(["host:h3"]));
    let err = diagram::build(
        &snap,
        Kind::Network,
        &Options {
            scope: Some("subnet:nope".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert_eq!(err, DiagramError::Unknown(vec!["subnet:nope".into()]));
    assert_eq!(err.to_string(), "unknown resource id 'subnet:nope'");
}

#[test]
fn dependencies_fold_instances_and_style_edges_by_evidence() {
    let snap = snapshot();
    let opts = Options {
        group_by: Some("team".into()),
        ..Options::default()
    };
    let (_, p) = build(&snap, Kind::Dependencies, &opts);
    assert_eq!(p.nodes["svc:web"].1["label"], "web ×2");
    assert_eq!(p.nodes["svc:api"].1["label"], "api ×1");
    assert!(!p.nodes.contains_key("svc:web@h1"));
    assert_eq!(p.nodes["db:main"].1["shape"], "cylinder");
    // Clusters by team.
    assert_eq!(p.nodes["svc:web"].0.as_deref(), Some("cluster_team: front"));
    assert_eq!(p.nodes["db:main"].0.as_deref(), Some("cluster_team: back"));
    assert_eq!(p.nodes["ext:pay"].0, None);
    // Declared solid, observed dashed, both bold; the LB → service edge from folded routes.
    assert_eq!(
        visible_edge(&p, "svc:web", "svc:api").unwrap()["style"],
        "solid"
    );
    assert_eq!(
        visible_edge(&p, "svc:api", "db:main").unwrap()["style"],
        "dashed"
    );
    assert_eq!(
        visible_edge(&p, "svc:api", "ext:pay").unwrap()["style"],
        "bold"
    );
    assert!(visible_edge(&p, "lb:front", "svc:web").is_some());
    // Hosts are not in the service view.
    assert!(!p.nodes.contains_key("host:h1"));
}

#[test]
fn dependencies_around_a_resource_stop_at_hops() {
    let snap = snapshot();
    let opts = Options {
        around: Some("db:main".into()),
        hops: Some(1),
        ..Options::default()
    };
    let (_, p) = build(&snap, Kind::Dependencies, &opts);
    let ids: BTreeSet<&str> = p.nodes.keys().map(String::as_str).collect();
    assert_eq!(ids, BTreeSet::from(["db:main", "svc:api"]));
    assert_eq!(p.nodes["db:main"].1["penwidth"], "3");
    let opts = Options {
        around: Some("svc:web@h1".into()), // an instance centres on its service
        hops: Some(2),
        ..Options::default()
    };
    let (_, p) = build(&snap, Kind::Dependencies, &opts);
    let ids: BTreeSet<&str> = p.nodes.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["db:main", "ext:pay", "lb:front", "svc:api", "svc:web"])
    );
}

#[test]
fn impact_colours_down_and_degraded_and_has_a_legend() {
    let snap = snapshot();
    let opts = Options {
        failed: vec!["host:h1".into()],
        ..Options::default()
    };
    let (_, p) = build(&snap, Kind::Impact, &opts);
    let h1 = &p.nodes["host:h1"].1;
    assert!(h1["label"].ends_with("FAILED"), "{}", h1["label"]);
    let inst = &p.nodes["svc:web@h1"].1;
    assert!(inst["label"].ends_with("DOWN"));
    let web = &p.nodes["svc:web"].1;
    assert!(
        web["label"].ends_with("DEGRADED · 1/2 left"),
        "{}",
        web["label"]
    );
    assert_ne!(inst["fillcolor"], web["fillcolor"]);
    assert_ne!(inst["fillcolor"], h1["fillcolor"]);
    // The failure's path, in the direction it travelled.
    assert_eq!(
        visible_edge(&p, "host:h1", "svc:web@h1").unwrap()["label"],
        "runs on"
    );
    assert!(visible_edge(&p, "svc:web@h1", "svc:web").is_some());
    assert!(visible_edge(&p, "svc:web@h1", "lb:front").is_some());
    // Context: where the failed host lives, unaffected.
    assert!(p.nodes["subnet:a"].1["tooltip"].contains("unaffected"));
    // Unaffected resources beyond that are left out.
    assert!(!p.nodes.contains_key("host:h3"));
    // The legend.
    assert_eq!(p.cluster_labels["cluster_legend"], "Legend");
    for id in [
        "legend:failed",
        "legend:down",
        "legend:degraded",
        "legend:context",
    ] {
        assert_eq!(p.nodes[id].0.as_deref(), Some("cluster_legend"), "{id}");
    }
    assert!(matches!(
        diagram::build(&snap, Kind::Impact, &Options::default()),
        Err(DiagramError::Invalid(_))
    ));
}

/// The title counts what `infragraph impact` reports, failed resources as
/// DOWN (D8), and the whole impact even when `hops` draws less (D7).
#[test]
fn impact_title_counts_the_whole_impact_as_the_impact_command_does() {
    let snap = snapshot();
    let h2 = snap.lookup("host:h2").unwrap();
    // What `infragraph impact host:h2` prints: DOWN (n) counts host:h2.
    let whole = snap.impact(&[h2], None);
    let (down, degraded) = (whole.down.len(), whole.degraded.len());
    assert!(whole.down.iter().any(|i| i.node == h2));
    assert_eq!((down, degraded), (5, 1), "the estate changed");
    let want = format!("Impact of host:h2: {down} down (incl. 1 failed), {degraded} degraded");
    for hops in [None, Some(0), Some(1), Some(2), Some(9)] {
        let opts = Options {
            failed: vec!["host:h2".into()],
            hops,
            ..Options::default()
        };
        let d = diagram::build(&snap, Kind::Impact, &opts).unwrap();
        let label = graph_label(&d.dot());
        assert_eq!(label.lines().next().unwrap(), want, "hops {hops:?}");
        // Whatever is drawn, the notes are in the diagram too.
        for n in &d.notes {
            assert!(label.contains(n.as_str()), "hops {hops:?}: {n}");
        }
    }
    // The failed resource is drawn as FAILED, and the legend says it is
    // counted as down.
    let (_, p) = build(
        &snap,
        Kind::Impact,
        &Options {
            failed: vec!["host:h2".into()],
            ..Options::default()
        },
    );
    assert!(p.nodes["host:h2"].1["label"].ends_with("FAILED"));
    assert!(p.nodes["legend:failed"].1["label"].contains("counted as down"));
}

/// When hops leave part of the impact out, the diagram says how many down
/// and degraded resources are not drawn, and why (D7); with no hops, or
/// hops that reach everything, there is no such note.
#[test]
fn impact_hops_say_what_they_leave_out() {
    let snap = snapshot();
    let h2 = snap.lookup("host:h2").unwrap();
    let whole = snap.impact(&[h2], None);
    let beyond = |h: u32| {
        (
            whole.down.iter().filter(|i| i.depth > h).count(),
            whole.degraded.iter().filter(|i| i.depth > h).count(),
        )
    };
    assert_eq!(beyond(1), (2, 1), "the estate changed");
    for h in [0u32, 1, 2] {
        let opts = Options {
            failed: vec!["host:h2".into()],
            hops: Some(h),
            ..Options::default()
        };
        let d = diagram::build(&snap, Kind::Impact, &opts).unwrap();
        let (down, degraded) = beyond(h);
        let p = parse(&d.dot());
        // Drawn: exactly the impacted resources within h hops.
        for i in whole.down.iter().chain(&whole.degraded) {
            let id = &snap.resource(i.node).id;
            assert_eq!(p.nodes.contains_key(id), i.depth <= h, "hops {h}: {id}");
        }
        let hop_notes: Vec<&String> = d.notes.iter().filter(|n| n.contains("(hops ")).collect();
        if down + degraded == 0 {
            assert!(hop_notes.is_empty(), "hops {h}: {:?}", d.notes);
            continue;
        }
        let want = format!(
            "not drawn: {down} down and {degraded} degraded more than {h} hop{} from a failed resource (hops {h})",
            if h == 1 { "" } else { "s" }
        );
        assert_eq!(hop_notes.len(), 1, "hops {h}: {:?}", d.notes);
        assert!(hop_notes[0].starts_with(&want), "hops {h}: {:?}", d.notes);
        assert!(graph_label(&d.dot()).contains(&want), "hops {h}");
    }
    let d = diagram::build(
        &snap,
        Kind::Impact,
        &Options {
            failed: vec!["host:h2".into()],
            ..Options::default()
        },
    )
    .unwrap();
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

/// A cap under hops: the cap's note counts, in the same rule, what it
/// leaves out of what the hops reach; the hops' note what they leave out.
#[test]
fn impact_cap_and_hops_notes_add_up() {
    let snap = generated(infragraph::generate::Size::Small);
    let failed = snap.lookup("subnet:r0-v0-z0-0").unwrap();
    let whole = snap.impact(&[failed], None);
    let (down, degraded) = (whole.down.len(), whole.degraded.len());
    let opts = Options {
        failed: vec!["subnet:r0-v0-z0-0".into()],
        hops: Some(2),
        max_nodes: 40,
        ..Options::default()
    };
    let d = diagram::build(&snap, Kind::Impact, &opts).unwrap();
    let label = graph_label(&d.dot());
    assert!(
        label.starts_with(&format!(
            "Impact of subnet:r0-v0-z0-0: {} down (incl. 1 failed), {} degraded\n",
            thousands(down),
            thousands(degraded)
        )),
        "{label}"
    );
    // Numbers after "not drawn: " / ": " in each note.
    let counts = |note: &str, after: &str| -> (usize, usize) {
        let rest = &note[note.find(after).unwrap() + after.len()..];
        let words: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!((words[1], words[4]), ("down", "degraded"), "{note}");
        let n = |w: &str| w.replace(',', "").parse::<usize>().unwrap();
        (n(words[0]), n(words[3]))
    };
    let hop_note = d.notes.iter().find(|n| n.contains("(hops 2)")).unwrap();
    let cap_note = d
        .notes
        .iter()
        .find(|n| n.starts_with("showing the nearest 40 of "))
        .unwrap_or_else(|| panic!("{:?}", d.notes));
    let (hd, hg) = counts(hop_note, "not drawn: ");
    let (cd, cg) = counts(cap_note, "impacted within 2 hops: ");
    // This failure has down and degraded beyond 2 hops, and more than
    // the cap within them.
    assert!(hd > 0 && hg > 0 && cd > 0, "{:?}", d.notes);
    let p = parse(&d.dot());
    let drawn = |status: &str| {
        p.nodes
            .iter()
            .filter(|(k, (_, a))| {
                !k.starts_with("legend:")
                    && a.get("label")
                        .is_some_and(|l| l.lines().last().unwrap().starts_with(status))
            })
            .count()
    };
    let (dd, dg) = (drawn("DOWN") + drawn("FAILED"), drawn("DEGRADED"));
    assert_eq!(dd + dg, 40);
    assert_eq!(hd + cd + dd, down, "{:?}", d.notes);
    assert_eq!(hg + cg + dg, degraded, "{:?}", d.notes);

    // More failed than the cap: they are all drawn, and the note says why
    // it shows more than the cap allows.
    let opts = Options {
        failed: vec!["subnet:r0-v0-z0-0".into(), "subnet:r0-v0-z1-0".into()],
        max_nodes: 1,
        ..Options::default()
    };
    let d = diagram::build(&snap, Kind::Impact, &opts).unwrap();
    let cap_note = d
        .notes
        .iter()
        .find(|n| n.starts_with("showing the nearest 2 of "))
        .unwrap_or_else(|| panic!("{:?}", d.notes));
    assert!(
        cap_note.contains("over the cap of 1 node (the 2 failed are always drawn)"),
        "{cap_note}"
    );
}

use diagram::thousands;

/// Every unknown id is named, in the wording of `infragraph impact` (D9).
#[test]
fn impact_names_every_unknown_id() {
    let snap = snapshot();
    let opts = Options {
        failed: vec![
            "host:x".into(),
            "host:h1".into(),
            "host:y".into(),
            "host:x".into(),
        ],
        ..Options::default()
    };
    let err = diagram::build(&snap, Kind::Impact, &opts).unwrap_err();
    assert_eq!(
        err,
        DiagramError::Unknown(vec!["host:x".into(), "host:y".into()])
    );
    assert_eq!(err.to_string(), "unknown resource ids 'host:x', 'host:y'");
    let opts = Options {
        failed: vec!["host:h1".into(), "host:x".into()],
        ..Options::default()
    };
    let err = diagram::build(&snap, Kind::Impact, &opts).unwrap_err();
    assert_eq!(err.to_string(), "unknown resource id 'host:x'");

    // A resource no source reports any more is named GONE, with the time,
    // as `infragraph impact` names it, in every view that takes ids.
    let (mut r, l) = estate();
    let gone = r.iter_mut().find(|r| r.id == "host:h1").unwrap();
    gone.status = Status::Gone;
    gone.gone_at = Some(1_700_000_000_000);
    let snap = Snapshot::build(r, l, 0);
    let said = "resource 'host:h1' is GONE since 2023-11-14T22:13:20.000Z (no source reports it)";
    for (kind, opts) in [
        (
            Kind::Impact,
            Options {
                failed: vec!["host:h1".into()],
                ..Options::default()
            },
        ),
        (
            Kind::Dependencies,
            Options {
                around: Some("host:h1".into()),
                ..Options::default()
            },
        ),
        (
            Kind::Network,
            Options {
                scope: Some("host:h1".into()),
                ..Options::default()
            },
        ),
    ] {
        let err = diagram::build(&snap, kind, &opts).unwrap_err();
        assert!(
            matches!(err, DiagramError::Gone { .. }),
            "{kind:?}: {err:?}"
        );
        assert!(err.to_string().starts_with(said), "{kind:?}: {err}");
    }
    // Unknown ids are named before a GONE one.
    let opts = Options {
        failed: vec!["host:h1".into(), "host:x".into()],
        ..Options::default()
    };
    let err = diagram::build(&snap, Kind::Impact, &opts).unwrap_err();
    assert_eq!(err.to_string(), "unknown resource id 'host:x'");
}

/// Hosts and load balancers in no subnet: the network view draws nothing,
/// and says why in the diagram (D10).
#[test]
fn network_with_nothing_placed_says_why() {
    let r = vec![
        res("region:r1", "region", "r1", &[]),
        res("vpc:main", "vpc", "main", &[]),
        res("subnet:a", "subnet", "sub-a", &[]),
        res("zone:a", "availability_zone", "zone-a", &[]),
        res("host:h1", "host", "h1", &[]),
        res("host:h2", "host", "h2", &[]),
        res("svc:web", "service", "web", &[]),
        res("svc:web@h1", "service_instance", "web on h1", &[]),
        res("lb:front", "load_balancer", "front", &[]),
        res("sg:web", "security_group", "web", &[]),
    ];
    let l = vec![
        rel("vpc:main", "region:r1", "contained_in"),
        rel("subnet:a", "vpc:main", "contained_in"),
        // In a zone, but in no subnet or VPC.
        rel("host:h1", "zone:a", "contained_in"),
        rel("svc:web@h1", "svc:web", "instance_of"),
        rel("svc:web@h1", "host:h1", "runs_on"),
        rel("lb:front", "svc:web@h1", "routes_to"),
        rel("sg:web", "vpc:main", "contained_in"),
    ];
    let snap = Snapshot::build(r, l, 0);
    let d = diagram::build(&snap, Kind::Network, &Options::default()).unwrap();
    assert_eq!(d.nodes, 0);
    assert_eq!(
        d.notes,
        [
            "nothing drawn: there is no gateway, and no host, load balancer or other resource is contained_in (or attached_to) a subnet or VPC (2 hosts and 1 load balancer in none); 1 subnet holds nothing to draw; 1 security group drawn only with --show-reachability",
            "the network view draws region → VPC → zone → subnet → what is contained_in (or attached_to) a subnet or VPC, gateways, and the load balancers routing to what it draws",
        ]
    );
    // In the diagram itself, under the title.
    let label = graph_label(&d.dot());
    assert_eq!(
        label,
        format!("Network (0 nodes)\n{}\n{}", d.notes[0], d.notes[1])
    );
    // With reachability the security group is drawn, and there is no note.
    let d = diagram::build(
        &snap,
        Kind::Network,
        &Options {
            show_reachability: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(d.nodes, 1);
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    // A scope with nothing placed in it says so.
    let d = diagram::build(
        &snap,
        Kind::Network,
        &Options {
            scope: Some("subnet:a".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(d.nodes, 0);
    assert!(
        d.notes[0].starts_with("nothing drawn in subnet:a: it holds no gateway, and no host, load balancer or other resource contained_in (or attached_to) a subnet or VPC; 1 subnet holds nothing to draw"),
        "{:?}",
        d.notes
    );
    // The estate with hosts in subnets has no such note.
    let d = diagram::build(&snapshot(), Kind::Network, &Options::default()).unwrap();
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

#[test]
fn the_same_graph_gives_byte_identical_dot() {
    let (mut r, mut l) = estate();
    let a = Snapshot::build(r.clone(), l.clone(), 0);
    r.reverse();
    l.reverse();
    let b = Snapshot::build(r, l, 99);
    for kind in [Kind::Network, Kind::Dependencies, Kind::Impact] {
        let opts = Options {
            failed: vec!["host:h2".into()],
            group_by: Some("team".into()),
            ..Options::default()
        };
        let x = diagram::build(&a, kind, &opts).unwrap().dot();
        let y = diagram::build(&b, kind, &opts).unwrap().dot();
        assert_eq!(x, y, "{kind:?}");
    }
}

const HOSTILE: &str = "evil \"quote\" } ] ; <script>alert(1)</script>\nline2 \\";

fn hostile_snapshot() -> Snapshot {
    let (mut r, mut l) = estate();
    for x in r.iter_mut() {
        if x.id == "host:h1" || x.id == "svc:web" {
            x.name = HOSTILE.into();
        }
    }
    let bad_id = "svc:\"x\"}<b>\n";
    let mut s = res(bad_id, "service", HOSTILE, &[("team", HOSTILE)]);
    s.attributes = json!({"ip": HOSTILE});
    r.push(s);
    l.push(rel(bad_id, "svc:web", "depends_on"));
    l.push(rel(bad_id, "subnet:a", "contained_in"));
    Snapshot::build(r, l, 0)
}

#[test]
fn hostile_names_stay_inside_their_strings() {
    let snap = hostile_snapshot();
    for kind in [Kind::Network, Kind::Dependencies, Kind::Impact] {
        let opts = Options {
            failed: vec!["host:h1".into()],
            group_by: Some("team".into()),
            ..Options::default()
        };
        let (dot, p) = build(&snap, kind, &opts);
        assert!(!dot.contains("<script>\n"), "{dot}");
        // Every hostile label came back whole, as one label.
        let hostile_nodes: Vec<_> = p
            .nodes
            .values()
            .filter(|(_, a)| {
                a.get("label")
                    .is_some_and(|l| l.starts_with("evil \"quote\" } ] ; <script>"))
            })
            .collect();
        assert!(!hostile_nodes.is_empty(), "{kind:?}: {dot}");
        for (_, a) in hostile_nodes {
            assert!(
                a["label"].contains("<script>alert(1)</script>\nline2 \\"),
                "{:?}",
                a["label"]
            );
        }
    }
    let (_, p) = build(&snap, Kind::Dependencies, &Options::default());
    assert!(
        p.nodes.contains_key("svc:\"x\"}<b>\n"),
        "{:?}",
        p.nodes.keys()
    );
}

/// Whether `dot` can run here; in CI it must.
fn dot_available(test: &str) -> bool {
    let ok = std::process::Command::new(diagram::dot_program())
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: Graphviz `dot` is required in CI (CI=true) but cannot run");
        }
        eprintln!("SKIPPED {test}: Graphviz `dot` is not installed (apt-get install graphviz)");
    }
    ok
}

#[test]
fn every_view_renders_to_svg_and_png_with_node_titles() {
    if !dot_available("every_view_renders_to_svg_and_png_with_node_titles") {
        return;
    }
    let snap = snapshot();
    let opts = Options {
        failed: vec!["host:h1".into()],
        ..Options::default()
    };
    for (kind, titles) in [
        (
            Kind::Network,
            &["host:h1", "host:h3", "lb:front", "igw:main"][..],
        ),
        (Kind::Dependencies, &["svc:web", "svc:api", "db:main"][..]),
        (
            Kind::Impact,
            &["host:h1", "svc:web@h1", "svc:web", "legend:down"][..],
        ),
    ] {
        let dot = diagram::build(&snap, kind, &opts).unwrap().dot();
        let svg = String::from_utf8(diagram::render(&dot, Format::Svg).unwrap()).unwrap();
        assert!(svg.contains("<svg"), "{kind:?}");
        for t in titles {
            assert!(svg.contains(&format!("<title>{t}</title>")), "{kind:?} {t}");
        }
        let png = diagram::render(&dot, Format::Png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{kind:?}");
    }
}

#[test]
fn hostile_names_render_as_text_not_markup() {
    if !dot_available("hostile_names_render_as_text_not_markup") {
        return;
    }
    let snap = hostile_snapshot();
    for kind in [Kind::Network, Kind::Dependencies, Kind::Impact] {
        let opts = Options {
            failed: vec!["host:h1".into()],
            ..Options::default()
        };
        let dot = diagram::build(&snap, kind, &opts).unwrap().dot();
        let svg = String::from_utf8(diagram::render(&dot, Format::Svg).unwrap()).unwrap();
        assert!(!svg.contains("<script"), "{kind:?}");
        assert!(!svg.contains("<b>"), "{kind:?}");
        assert!(svg.contains("&lt;script&gt;"), "{kind:?}");
    }
}

/// Names that differ only in control characters are different resources,
/// and stay different nodes in the DOT and in what `dot` draws.
#[test]
fn names_differing_in_control_characters_stay_separate_nodes() {
    let (mut r, mut l) = estate();
    let names = ["svc:a\tb", "svc:a b", "svc:a\\x09b", "svc:ab", "svc:a\rb"];
    for n in names {
        r.push(res(n, "service", "twin", &[]));
        l.push(rel(n, "svc:web", "depends_on"));
    }
    let snap = Snapshot::build(r, l, 0);
    let (dot, p) = build(&snap, Kind::Dependencies, &Options::default());
    let twins = p
        .nodes
        .values()
        .filter(|(_, a)| a.get("label").is_some_and(|l| l.starts_with("twin")))
        .count();
    assert_eq!(twins, names.len(), "{dot}");
    if !dot_available("names_differing_in_control_characters_stay_separate_nodes") {
        return;
    }
    let svg = String::from_utf8(diagram::render(&dot, Format::Svg).unwrap()).unwrap();
    // Each node is a group with its label's text; one per name.
    assert_eq!(svg.matches(">twin<").count(), names.len(), "{svg}");
}

#[test]
fn missing_dot_says_how_to_install_it() {
    let err = diagram::render_with(
        "/nonexistent/graphviz/dot",
        "digraph { a }",
        Format::Svg,
        std::time::Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(matches!(err, RenderError::DotMissing(_)));
    let msg = err.to_string();
    assert!(msg.contains("apt-get install graphviz"), "{msg}");
    assert!(msg.contains("DOT output works"), "{msg}");
    // DOT needs no Graphviz at all.
    let dot = diagram::render_with(
        "/nonexistent/graphviz/dot",
        "digraph { a }",
        Format::Dot,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(dot, b"digraph { a }");
}

/// A generated estate as a snapshot, without a database.
fn generated(size: infragraph::generate::Size) -> Snapshot {
    let e = infragraph::generate::generate(size, 42);
    let resources = e
        .resources
        .into_iter()
        .map(|o| Resource {
            name: o.name.clone().unwrap_or_else(|| o.id.clone()),
            id: o.id,
            kind: o.kind,
            labels: o.labels,
            attributes: o.attributes,
            status: Status::Present,
            first_seen: 0,
            last_seen: 0,
            gone_at: None,
            sources: vec![prov("generated")],
        })
        .collect();
    let relations = e
        .relations
        .into_iter()
        .map(|o| Relation {
            from: o.from,
            to: o.to,
            kind: o.kind,
            attributes: o.attributes,
            status: Status::Present,
            first_seen: 0,
            last_seen: 0,
            gone_at: None,
            sources: vec![prov("generated")],
        })
        .collect();
    Snapshot::build(resources, relations, 0)
}

#[test]
fn large_scopes_are_folded_and_capped_with_a_note() {
    let snap = generated(infragraph::generate::Size::Small);
    let opts = Options {
        max_nodes: 40,
        failed: vec!["svc:platform-dns".into()],
        ..Options::default()
    };
    for kind in [Kind::Network, Kind::Dependencies, Kind::Impact] {
        let d = diagram::build(&snap, kind, &opts).unwrap();
        let p = parse(&d.dot());
        let drawn = p.nodes.keys().filter(|k| !k.starts_with("legend:")).count();
        assert!(drawn <= 40 + 12, "{kind:?}: {drawn} nodes");
        assert!(!d.notes.is_empty(), "{kind:?}: no note");
        // The note is in the diagram itself.
        assert!(
            d.dot().contains(&diagram::quote(&d.notes[0])[1..20]),
            "{kind:?}"
        );
    }
    let net = diagram::build(&snap, Kind::Network, &opts).unwrap();
    assert!(net.notes[0].contains("folded"), "{:?}", net.notes);
    let p = parse(&net.dot());
    assert!(p.nodes.keys().any(|k| k.starts_with("fold:")));
    // Instances folded with their count in the dependency view.
    let deps = diagram::build(&snap, Kind::Dependencies, &opts).unwrap();
    let p = parse(&deps.dot());
    assert!(p.nodes.values().any(|(_, a)| a["label"].contains(" ×")));
}

/// Hundreds of VPCs, each with a gateway: the gateways alone are over the
/// cap, so they are counted with the hosts instead of drawn, every host is
/// in a count, and the note says so.
#[test]
fn gateways_over_the_cap_are_counted_not_drawn() {
    let mut r = vec![
        res("region:r1", "region", "r1", &[]),
        res("zone:a", "availability_zone", "zone-a", &[]),
    ];
    let mut l = vec![rel("zone:a", "region:r1", "contained_in")];
    for v in 0..400 {
        let vpc = format!("vpc:{v}");
        r.push(res(&vpc, "vpc", &format!("v{v}"), &[]));
        l.push(rel(&vpc, "region:r1", "contained_in"));
        let igw = format!("igw:{v}");
        r.push(res(&igw, "internet_gateway", "igw", &[]));
        l.push(rel(&igw, &vpc, "contained_in"));
        for sn in 0..2 {
            let subnet = format!("subnet:{v}-{sn}");
            r.push(res(&subnet, "subnet", &subnet, &[]));
            l.push(rel(&subnet, &vpc, "contained_in"));
            l.push(rel(&subnet, "zone:a", "contained_in"));
            let host = format!("host:{v}-{sn}");
            r.push(res(&host, "host", &host, &[]));
            l.push(rel(&host, &subnet, "contained_in"));
        }
    }
    let snap = Snapshot::build(r, l, 0);
    let d = diagram::build(&snap, Kind::Network, &Options::default()).unwrap();
    let p = parse(&d.dot());
    let drawn = p.nodes.keys().filter(|k| !k.starts_with("legend:")).count();
    assert!(drawn <= 300, "{drawn} nodes");
    assert!(
        !p.nodes.keys().any(|k| k.starts_with("igw:")),
        "gateways drawn"
    );
    // Every host, gateway and subnet is in a drawn count, or in the note's
    // rest.
    let counted = |what: &str| -> usize {
        p.nodes
            .iter()
            .filter(|(k, _)| k.starts_with("fold:"))
            .flat_map(|(_, (_, a))| a["label"].lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|line| {
                let (n, rest) = line.split_once(' ')?;
                rest.starts_with(what)
                    .then(|| n.replace(',', "").parse::<usize>().unwrap())
            })
            .sum()
    };
    let rest: usize = d
        .notes
        .iter()
        .find_map(|n| {
            let (_, after) = n.split_once(" groups (")?;
            after.split_once(' ')?.0.replace(',', "").parse().ok()
        })
        .unwrap_or(0);
    // Subnets are counted in their VPC-zone node at this level.
    assert_eq!(
        counted("host") + counted("internet gateway") + counted("subnet") + rest,
        800 + 400 + 800,
        "{:?}",
        d.notes
    );
    assert!(counted("host") > 0, "{:?}", d.notes);
    assert!(
        d.notes[0].contains("400 gateways counted too"),
        "{:?}",
        d.notes
    );
}

mod http {
    use super::*;
    use infragraph::app::App;
    use infragraph::collector::ConfiguredCollector;
    use infragraph::store::Store;

    async fn start() -> (
        std::net::SocketAddr,
        common::TestDb,
        tokio::sync::oneshot::Sender<()>,
        Arc<App>,
    ) {
        let db = common::TestDb::sqlite();
        let store = Store::connect(&db.url).await.unwrap();
        let collector = ConfiguredCollector::Inventory(collectors::inventory::InventoryConfig {
            paths: vec![common::demo_inventory()],
        });
        let app: Arc<App> = App::new(store, None).await.unwrap();
        app.collect(&collector).await.unwrap();
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
        (addr, db, tx, app)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.bytes().await.unwrap().to_vec())
    }

    async fn graphql(addr: std::net::SocketAddr, query: &str) -> serde_json::Value {
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

    /// The HTTP endpoint and the GraphQL field share the builder: both
    /// title an impact with the counts the GraphQL `impact` field gives
    /// (failed resources DOWN), whatever `hops` draws (D7, D8), and name
    /// every unknown id as that field does (D9).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn impact_diagrams_count_and_name_ids_as_the_impact_field() {
        let (addr, _db, _stop, _app) = start().await;
        for (ids, hops, want) in [
            (
                &["host:app-1"][..],
                None,
                "Impact of host:app-1: 3 down (incl. 1 failed), 4 degraded",
            ),
            (
                &["host:app-1", "host:cache-1"][..],
                Some(1),
                "Impact of host:app-1, host:cache-1: 5 down (incl. 2 failed), 5 degraded",
            ),
        ] {
            let list = ids
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let v = graphql(
                addr,
                &format!("{{ impact(failed: [{list}]) {{ downCount degradedCount }} }}"),
            )
            .await;
            let (down, degraded) = (
                &v["data"]["impact"]["downCount"],
                &v["data"]["impact"]["degradedCount"],
            );
            assert_eq!(
                want,
                format!(
                    "Impact of {}: {down} down (incl. {} failed), {degraded} degraded",
                    ids.join(", "),
                    ids.len()
                ),
                "{v}"
            );
            let (s, _, body) = get(
                addr,
                &format!(
                    "/diagrams/impact.dot?failed={}{}",
                    ids.join(","),
                    hops.map(|h| format!("&hops={h}")).unwrap_or_default()
                ),
            )
            .await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            let http = graph_label(std::str::from_utf8(&body).unwrap());
            let v = graphql(
                addr,
                &format!(
                    "{{ diagram(kind: IMPACT, failed: [{list}]{}) }}",
                    hops.map(|h| format!(", hops: {h}")).unwrap_or_default()
                ),
            )
            .await;
            let gql = graph_label(
                v["data"]["diagram"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{v}")),
            );
            assert_eq!(http, gql);
            assert_eq!(http.lines().next().unwrap(), want);
            if let Some(h) = hops {
                assert!(
                    http.contains(&format!("hop from a failed resource (hops {h})")),
                    "{http}"
                );
            }
        }
        let v = graphql(
            addr,
            "{ impact(failed: [\"host:x\", \"host:y\"]) { downCount } }",
        )
        .await;
        let impact_msg = v["errors"][0]["message"].as_str().unwrap().to_string();
        assert_eq!(impact_msg, "unknown resource ids 'host:x', 'host:y'");
        let v = graphql(
            addr,
            "{ diagram(kind: IMPACT, failed: [\"host:x\", \"host:app-1\", \"host:y\"]) }",
        )
        .await;
        assert_eq!(v["errors"][0]["message"], impact_msg.as_str(), "{v}");
        assert_eq!(v["errors"][0]["extensions"]["code"], "UNKNOWN_RESOURCE");
        let (s, _, body) = get(addr, "/diagrams/impact.svg?failed=host:x,host:app-1,host:y").await;
        assert_eq!(s, 404);
        assert_eq!(String::from_utf8_lossy(&body), format!("{impact_msg}\n"));
    }

    /// Renders take turns on the server's render slots: with every slot
    /// busy, an image waits for one and, past the render wait, is told to
    /// come back (503) without running `dot`; DOT text needs no slot; a
    /// slot that frees in time serves the waiting request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renders_wait_for_a_slot_and_are_turned_away_after_the_wait() {
        let (addr, _db, _stop, app) = start().await;
        app.set_render_wait(std::time::Duration::from_millis(300));
        let held = app
            .render_slots()
            .clone()
            .acquire_many_owned(infragraph::app::RENDER_SLOTS as u32)
            .await
            .unwrap();
        let t = std::time::Instant::now();
        let (s, _, body) = get(addr, "/diagrams/network.svg").await;
        assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains("other diagrams are being rendered"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(300));
        let (s, _, _) = get(addr, "/diagrams/network.dot").await;
        assert_eq!(s, 200);
        // Bad options are refused at once, not after the wait (a 503).
        let (s, _, _) = get(addr, "/diagrams/dependencies.svg?hops=1").await;
        assert_eq!(s, 400);
        // A diagram's build takes a compute slot, whatever the format: with
        // them all taken, DOT text waits and is turned away too.
        let computing = app
            .compute_slots()
            .clone()
            .acquire_many_owned(app.compute_slots().available_permits() as u32)
            .await
            .unwrap();
        let (s, _, body) = get(addr, "/diagrams/network.dot").await;
        assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains("graph computations are all taken"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        drop(computing);
        if !dot_available("renders_wait_for_a_slot_and_are_turned_away_after_the_wait") {
            return;
        }
        app.set_render_wait(std::time::Duration::from_secs(60));
        let waiting = tokio::spawn(get(addr, "/diagrams/network.svg"));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "rendered without a free slot");
        drop(held);
        let (s, ct, _) = waiting.await.unwrap();
        assert_eq!(s, 200);
        assert_eq!(ct, "image/svg+xml");
        // Every slot is back once the render is done.
        assert_eq!(
            app.render_slots().available_permits(),
            infragraph::app::RENDER_SLOTS
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_serve_dot_svg_png_and_graphql() {
        let (addr, _db, _stop, _app) = start().await;
        let (s, ct, body) = get(addr, "/diagrams/network.dot?scope=vpc:prod").await;
        assert_eq!(s, 200);
        assert!(ct.starts_with("text/vnd.graphviz"), "{ct}");
        let p = parse(std::str::from_utf8(&body).unwrap());
        assert!(p.nodes.contains_key("host:web-1"));
        let (s, _, body) = get(addr, "/diagrams/impact.dot?failed=host:app-1,host:app-3").await;
        assert_eq!(s, 200);
        let p = parse(std::str::from_utf8(&body).unwrap());
        assert!(p.nodes["svc:checkout"].1["label"].contains("DEGRADED · 1/3 left"));
        // Errors carry their reason.
        let (s, _, body) = get(addr, "/diagrams/impact.svg?failed=host:nope").await;
        assert_eq!(s, 404);
        assert!(String::from_utf8_lossy(&body).contains("unknown resource id 'host:nope'"));
        let (s, _, body) = get(addr, "/diagrams/impact.svg").await;
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&body).contains("at least one failed"));
        let (s, _, _) = get(addr, "/diagrams/dependencies.svg?hops=x").await;
        assert_eq!(s, 400);
        // Hops without a resource to count from are refused, not dropped.
        let (s, _, body) = get(addr, "/diagrams/dependencies.dot?hops=1").await;
        assert_eq!(s, 400);
        assert!(
            String::from_utf8_lossy(&body).contains("give around as well"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let v = graphql(addr, "{ diagram(kind: DEPENDENCIES, hops: 1) }").await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_INPUT", "{v}");
        let (s, _, _) = get(addr, "/diagrams/flowchart.svg").await;
        assert_eq!(s, 404);
        // The server draws at most 2,000 nodes a request, and says so.
        let (s, _, _) = get(addr, "/diagrams/network.dot?max_nodes=2000").await;
        assert_eq!(s, 200);
        let (s, _, body) = get(addr, "/diagrams/network.svg?max_nodes=100000").await;
        assert_eq!(s, 400);
        assert!(
            String::from_utf8_lossy(&body).contains("over the server's limit of 2000"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let v = graphql(addr, "{ diagram(kind: NETWORK, maxNodes: 100000) }").await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_INPUT", "{v}");
        // GraphQL: DOT text.
        let v = graphql(
            addr,
            "{ diagram(kind: DEPENDENCIES, around: \"svc:checkout\", hops: 1) }",
        )
        .await;
        let dot = v["data"]["diagram"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"));
        let p = parse(dot);
        assert!(p.nodes["svc:checkout"].1["label"].starts_with("checkout ×3"));
        assert!(p.nodes.contains_key("db:orders"));
        let v = graphql(addr, "{ diagram(kind: IMPACT, failed: [\"nope\"]) }").await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "UNKNOWN_RESOURCE");
        if !dot_available("endpoints_serve_dot_svg_png_and_graphql (svg/png part)") {
            return;
        }
        for path in [
            "/diagrams/network.svg",
            "/diagrams/dependencies.svg?around=svc:checkout&hops=2&group_by=team",
            "/diagrams/impact.svg?failed=host:app-1",
        ] {
            let (s, ct, body) = get(addr, path).await;
            assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&body));
            assert_eq!(ct, "image/svg+xml");
            assert!(String::from_utf8_lossy(&body).contains("<svg"), "{path}");
        }
        let (s, ct, body) = get(addr, "/diagrams/impact.png?failed=host:app-1").await;
        assert_eq!(s, 200);
        assert_eq!(ct, "image/png");
        assert_eq!(&body[..4], b"\x89PNG");
    }
}

/// The binary: `diagram impact` titles what `impact` prints (DOWN (n)
/// counts the failed resources), with `--hops` too, notes on stderr what
/// hops leave out (D7, D8), and names unknown ids in `impact`'s words (D9).
mod cli {
    use super::*;
    use common::{run_cli as run, text};

    #[test]
    fn diagram_impact_counts_and_names_ids_as_impact_does() {
        let db = common::TestDb::sqlite();
        let demo = common::demo_inventory();
        let out = run(&db.url, &["collect", "inventory", demo.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        for (ids, hops) in [
            (&["host:app-1"][..], None),
            (&["host:app-1", "host:cache-1"][..], Some("1")),
        ] {
            let out = run(&db.url, &[&["impact"][..], ids].concat());
            assert!(out.status.success(), "{}", text(&out.stderr));
            let listed = text(&out.stdout);
            let count = |head: &str| -> String {
                let line = listed.lines().find(|l| l.starts_with(head)).unwrap();
                line[head.len()..line.find(')').unwrap()].to_string()
            };
            let (down, degraded) = (count("DOWN ("), count("DEGRADED ("));
            let mut args = [&["diagram", "impact"][..], ids].concat();
            if let Some(h) = hops {
                args.extend(["--hops", h]);
            }
            let out = run(&db.url, &args);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let label = graph_label(&text(&out.stdout));
            assert_eq!(
                label.lines().next().unwrap(),
                format!(
                    "Impact of {}: {down} down (incl. {} failed), {degraded} degraded",
                    ids.join(", "),
                    ids.len()
                )
            );
            let notes = text(&out.stderr);
            if hops.is_some() {
                assert!(
                    notes.contains("note: not drawn: 0 down and 5 degraded more than 1 hop from a failed resource (hops 1)"),
                    "{notes}"
                );
            } else {
                assert!(notes.is_empty(), "{notes}");
            }
        }
        let impact = run(&db.url, &["impact", "host:x", "host:y"]);
        let drawn = run(&db.url, &["diagram", "impact", "host:x", "host:y"]);
        assert!(!impact.status.success() && !drawn.status.success());
        assert_eq!(
            text(&impact.stderr).trim(),
            "error: unknown resource ids 'host:x', 'host:y'"
        );
        assert_eq!(text(&drawn.stderr), text(&impact.stderr));
    }
}
