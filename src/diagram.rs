//! Diagrams drawn from the graph: the network view (region → VPC → zone →
//! subnet → hosts, gateways and load balancers), the service dependency view
//! (instances folded into their services) and the incident view (the blast
//! radius of a failure, with a legend).
//!
//! Pure: each builder takes a [`Snapshot`] and options and returns a
//! graphviz-rust [`Graph`] (printed with [`to_dot`]). Output is deterministic:
//! nodes, clusters and edges are emitted sorted by id, so the same graph
//! gives byte-identical DOT. Every label and id is emitted as an escaped
//! quoted DOT string (never an HTML label), so names cannot break the DOT or
//! inject markup into the SVG. Large scopes are folded and capped at
//! `max_nodes`, with a note in the diagram saying what was folded.
//!
//! [`render`] runs Graphviz's `dot` to make SVG or PNG; it is the only IO here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use graphviz_rust::dot_structures::{
    Attribute, Edge, EdgeTy, Graph, GraphAttributes, Id, Node, NodeId, Stmt, Subgraph, Vertex,
};
use graphviz_rust::printer::{DotPrinter, PrinterContext};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::graph::{ImpactStatus, Ix, Snapshot};
use crate::model::{Relation, Resource, Status};

/// Default cap on the number of nodes drawn.
pub const DEFAULT_MAX_NODES: usize = 300;

/// The most nodes the server draws for a request (HTTP and GraphQL): it
/// renders for anyone who can reach it, and `dot` on tens of thousands of
/// nodes holds a core for minutes. The CLI has no such bound.
pub const SERVER_MAX_NODES: usize = 2000;

/// The server's check of a requested node cap.
pub fn server_max_nodes(n: usize) -> Result<usize, DiagramError> {
    if n > SERVER_MAX_NODES {
        return Err(DiagramError::Invalid(format!(
            "{n} nodes (max_nodes, or failed resources, which are always drawn) is over the server's limit of {SERVER_MAX_NODES}; draw larger diagrams with `infragraph diagram`"
        )));
    }
    Ok(n)
}
/// Default `--hops` around a resource in the dependency view.
pub const DEFAULT_HOPS: u32 = 2;

/// Which diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Region → VPC → zone → subnet → hosts.
    Network,
    /// Services and what they depend on.
    Dependencies,
    /// The blast radius of a failure.
    Impact,
}

/// Everything any diagram kind can be asked for; each kind reads its own fields.
#[derive(Debug, Clone)]
pub struct Options {
    /// Network: only what is contained (transitively) in this resource.
    pub scope: Option<String>,
    /// Network: draw security-group reachability (`allows_traffic_from`) as dashed edges.
    pub show_reachability: bool,
    /// Dependencies: centre on this resource.
    pub around: Option<String>,
    /// Dependencies: hops around `around` (default 2). Impact: depth drawn
    /// (the title still counts the whole impact; a note counts the rest).
    pub hops: Option<u32>,
    /// Dependencies: cluster by this label (e.g. `team`).
    pub group_by: Option<String>,
    /// Impact: the failed resources.
    pub failed: Vec<String>,
    /// Cap on the number of nodes drawn.
    pub max_nodes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scope: None,
            show_reachability: false,
            around: None,
            hops: None,
            group_by: None,
            failed: Vec::new(),
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

/// Why a diagram could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiagramError {
    /// Ids that name no present resource, every one of them, in the order
    /// given (worded as `infragraph impact` words them).
    #[error("{}", crate::graph::unknown_ids(.0))]
    Unknown(Vec<String>),
    /// A resource that no source reports any more (and since when): it is
    /// not in the current graph, so there is nothing to draw for it.
    #[error("resource '{id}' is GONE since {} (no source reports it); it is not in the current graph, so it cannot be drawn", gone_since(*.since))]
    Gone { id: String, since: Option<i64> },
    /// Options that make no sense.
    #[error("{0}")]
    Invalid(String),
}

/// A built diagram.
#[derive(Debug, Clone)]
pub struct Diagram {
    /// The graphviz-rust model.
    pub graph: Graph,
    /// Nodes drawn (not counting legend entries).
    pub nodes: usize,
    /// What was folded or left out, as also written into the diagram.
    pub notes: Vec<String>,
}

impl Diagram {
    /// The DOT text.
    pub fn dot(&self) -> String {
        to_dot(&self.graph)
    }
}

/// Builds a diagram of the given kind.
pub fn build(snap: &Snapshot, kind: Kind, opts: &Options) -> Result<Diagram, DiagramError> {
    if opts.max_nodes == 0 {
        return Err(DiagramError::Invalid("max_nodes must be at least 1".into()));
    }
    match kind {
        Kind::Network => network(snap, opts),
        Kind::Dependencies => dependencies(snap, opts),
        Kind::Impact => impact(snap, opts),
    }
}

/// Prints a graph as DOT text (one statement per line, trailing newline).
pub fn to_dot(graph: &Graph) -> String {
    let mut ctx = PrinterContext::default();
    ctx.with_semi();
    let mut s = graph.print(&mut ctx);
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------
// Escaping

/// A DOT quoted string for a label, with everything that could break out
/// of it escaped: backslashes, quotes, and line breaks (as `\n`, which
/// labels show as a new line); other control characters become spaces.
pub fn quote(s: &str) -> String {
    escape(s, false)
}

/// A DOT quoted string naming a node or a cluster: distinct for distinct
/// names. Escaped as [`quote`], except that every control character is
/// written as a backslash escape of its own (`\x09`, `\r`): Graphviz keeps
/// a backslash that does not start `\"` in a name, and a backslash of the
/// name itself is written doubled, so `a<TAB>b`, `a b` and the text `a\x09b`
/// stay three nodes. (In [`quote`], which labels use, they read the same,
/// which is harmless there.)
pub fn quote_id(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, distinct: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' if distinct => out.push_str("\\r"),
            '\r' => {}
            c if c.is_control() && distinct => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn qid(s: &str) -> Id {
    Id::Escaped(quote_id(s))
}

fn attr(k: &str, v: &str) -> Attribute {
    Attribute(Id::Plain(k.to_string()), Id::Escaped(quote(v)))
}

fn nid(s: &str) -> NodeId {
    NodeId(qid(s), None)
}

/// Shortens very long names so one hostile or generated label cannot make
/// a node the width of the page.
fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX - 1).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------------------
// A small sorted builder over the graphviz-rust model

#[derive(Default)]
struct Cluster {
    label: String,
    attrs: Vec<(&'static str, String)>,
}

type Attrs = Vec<(&'static str, String)>;

#[derive(Default)]
struct Builder {
    /// Cluster path (keys from the outermost) → cluster.
    clusters: BTreeMap<Vec<String>, Cluster>,
    /// Node id → (cluster path, attributes).
    nodes: BTreeMap<String, (Vec<String>, Attrs)>,
    /// (from, to, key) → attributes.
    edges: BTreeMap<(String, String, String), Attrs>,
}

impl Builder {
    fn cluster(&mut self, path: &[String], label: String, attrs: Vec<(&'static str, String)>) {
        self.clusters
            .entry(path.to_vec())
            .or_insert(Cluster { label, attrs });
    }

    fn node(&mut self, id: &str, path: Vec<String>, attrs: Vec<(&'static str, String)>) {
        self.nodes.insert(id.to_string(), (path, attrs));
    }

    fn edge(&mut self, from: &str, to: &str, key: &str, attrs: Vec<(&'static str, String)>) {
        self.edges
            .insert((from.to_string(), to.to_string(), key.to_string()), attrs);
    }

    fn has_node(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    /// The graph: global attributes, then clusters (nested, sorted) with
    /// their nodes, then top-level nodes, then edges, all sorted.
    fn finish(self, graph_attrs: Vec<(&'static str, String)>, extra: Vec<Stmt>) -> Graph {
        let mut stmts: Vec<Stmt> = Vec::new();
        stmts.push(Stmt::GAttribute(GraphAttributes::Graph(
            graph_attrs.iter().map(|(k, v)| attr(k, v)).collect(),
        )));
        stmts.push(Stmt::GAttribute(GraphAttributes::Node(vec![
            attr("fontname", "Helvetica"),
            attr("fontsize", "11"),
            attr("shape", "box"),
            attr("style", "rounded,filled"),
            attr("fillcolor", "white"),
        ])));
        stmts.push(Stmt::GAttribute(GraphAttributes::Edge(vec![
            attr("fontname", "Helvetica"),
            attr("fontsize", "9"),
            attr("color", "#555555"),
        ])));
        // Every ancestor of a used cluster path must exist.
        let mut by_path: BTreeMap<Vec<String>, Vec<Stmt>> = BTreeMap::new();
        for (id, (path, attrs)) in &self.nodes {
            let node = Stmt::Node(Node::new(
                nid(id),
                attrs.iter().map(|(k, v)| attr(k, v)).collect(),
            ));
            by_path.entry(path.clone()).or_default().push(node);
        }
        stmts.extend(by_path.remove(&Vec::new()).unwrap_or_default());
        let mut clusters = self.clusters;
        for path in by_path.keys() {
            for i in 1..=path.len() {
                clusters
                    .entry(path[..i].to_vec())
                    .or_insert_with(|| Cluster {
                        label: path[i - 1].clone(),
                        attrs: Vec::new(),
                    });
            }
        }
        let paths: Vec<Vec<String>> = clusters.keys().cloned().collect();
        fn emit(
            path: &[String],
            paths: &[Vec<String>],
            clusters: &BTreeMap<Vec<String>, Cluster>,
            by_path: &mut BTreeMap<Vec<String>, Vec<Stmt>>,
        ) -> Subgraph {
            let c = &clusters[path];
            let mut st: Vec<Stmt> = vec![Stmt::Attribute(attr("label", &c.label))];
            st.extend(c.attrs.iter().map(|(k, v)| Stmt::Attribute(attr(k, v))));
            for child in paths
                .iter()
                .filter(|p| p.len() == path.len() + 1 && p.starts_with(path))
            {
                st.push(Stmt::Subgraph(emit(child, paths, clusters, by_path)));
            }
            st.extend(by_path.remove(path).unwrap_or_default());
            Subgraph {
                id: qid(&format!("cluster_{}", path.join("/"))),
                stmts: st,
            }
        }
        for top in paths.iter().filter(|p| p.len() == 1) {
            stmts.push(Stmt::Subgraph(emit(top, &paths, &clusters, &mut by_path)));
        }
        for ((from, to, _), attrs) in &self.edges {
            stmts.push(Stmt::Edge(Edge {
                ty: EdgeTy::Pair(Vertex::N(nid(from)), Vertex::N(nid(to))),
                attributes: attrs.iter().map(|(k, v)| attr(k, v)).collect(),
            }));
        }
        stmts.extend(extra);
        Graph::DiGraph {
            id: qid("infragraph"),
            strict: false,
            stmts,
        }
    }
}

fn graph_attrs(title: &str, notes: &[String], rankdir: &str) -> Vec<(&'static str, String)> {
    let mut label = title.to_string();
    for n in notes {
        label.push('\n');
        label.push_str(n);
    }
    vec![
        ("fontname", "Helvetica".into()),
        ("fontsize", "12".into()),
        ("label", label),
        ("labelloc", "t".into()),
        ("labeljust", "l".into()),
        ("rankdir", rankdir.into()),
        ("nodesep", "0.3".into()),
        ("ranksep", "0.5".into()),
        ("compound", "true".into()),
    ]
}

// ---------------------------------------------------------------------------
// Shared graph helpers

fn present(snap: &Snapshot, ix: Ix) -> bool {
    snap.resource(ix).status == Status::Present
}

fn resolve(snap: &Snapshot, id: &str) -> Result<Ix, DiagramError> {
    Ok(resolve_all(snap, &[id.to_string()])?[0])
}

/// Every id resolved, or an error naming every unknown one (each once, in
/// the order given), or else the first that is GONE.
fn resolve_all(snap: &Snapshot, ids: &[String]) -> Result<Vec<Ix>, DiagramError> {
    let unknown = snap.unknown(ids.iter().map(String::as_str));
    if !unknown.is_empty() {
        return Err(DiagramError::Unknown(unknown));
    }
    ids.iter()
        .map(|id| {
            let ix = snap.lookup(id).expect("known");
            if present(snap, ix) {
                Ok(ix)
            } else {
                Err(DiagramError::Gone {
                    id: id.clone(),
                    since: snap.resource(ix).gone_at,
                })
            }
        })
        .collect()
}

/// When a resource went, in RFC 3339 (as the GraphQL API gives times).
fn gone_since(at: Option<i64>) -> String {
    at.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "an unknown time".into())
}

/// Present relations between present resources, as (from, to, relation).
fn live_relations(snap: &Snapshot) -> impl Iterator<Item = (Ix, Ix, &Relation)> {
    snap.relations.iter().filter_map(move |rel| {
        if rel.status != Status::Present {
            return None;
        }
        let f = snap.lookup(&rel.from)?;
        let t = snap.lookup(&rel.to)?;
        (present(snap, f) && present(snap, t)).then_some((f, t, rel))
    })
}

/// (declared, observed): how a relation is known.
fn evidence(rel: &Relation) -> (bool, bool) {
    let ev = rel
        .attributes
        .get("evidence")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let live = rel.sources.iter().filter(|s| s.status == Status::Present);
    let agent = live.clone().any(|s| s.source.starts_with("agent:"));
    let other = live.clone().any(|s| !s.source.starts_with("agent:"));
    let observed = agent || ev == "observed" || ev == "both";
    let declared = (other && ev != "observed") || ev == "declared" || ev == "both";
    (declared || !observed, observed)
}

fn evidence_style(declared: bool, observed: bool) -> (&'static str, &'static str) {
    match (declared, observed) {
        (true, true) => ("bold", "declared and observed"),
        (false, true) => ("dashed", "observed"),
        _ => ("solid", "declared"),
    }
}

/// The service an instance belongs to (its `instance_of` target).
fn instance_parents(snap: &Snapshot) -> FxHashMap<Ix, Ix> {
    let mut m = FxHashMap::default();
    for (f, t, rel) in live_relations(snap) {
        if rel.kind == "instance_of" {
            m.entry(f).or_insert(t);
        }
    }
    m
}

fn is_gateway(kind: &str) -> bool {
    kind.contains("gateway") || kind.contains("peering") || kind.contains("transit")
}

fn is_zone(kind: &str) -> bool {
    kind == "availability_zone" || kind == "zone"
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: usize, one: &str) -> String {
    let word = if n == 1 {
        one.to_string()
    } else if one.ends_with('s') {
        format!("{one}es")
    } else {
        format!("{one}s")
    };
    format!("{} {word}", thousands(n))
}

/// Node look by resource kind: (shape, fill colour).
fn look(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "service" => ("box", "#dbe9f6"),
        "database" | "database_instance" => ("cylinder", "#fff2cc"),
        "cache" => ("cylinder", "#fde2cf"),
        "queue" => ("cds", "#e4d7f0"),
        "load_balancer" => ("invhouse", "#d9ead3"),
        "external_endpoint" => ("octagon", "#eeeeee"),
        "host" => ("box", "#ffffff"),
        "service_instance" => ("box", "#eef4fb"),
        "volume" => ("folder", "#f3f3f3"),
        "security_group" => ("hexagon", "#f4f4f4"),
        k if is_gateway(k) => ("diamond", "#d0e0e3"),
        _ => ("box", "#ffffff"),
    }
}

fn styled(kind: &str, label: String) -> Vec<(&'static str, String)> {
    let (shape, fill) = look(kind);
    let mut style = "filled".to_string();
    if shape == "box" {
        style = "rounded,filled".into();
    }
    vec![
        ("label", label),
        ("shape", shape.into()),
        ("style", style),
        ("fillcolor", fill.into()),
        ("tooltip", kind.into()),
    ]
}

fn name_line(r: &Resource) -> String {
    clip(&r.name)
}

// ---------------------------------------------------------------------------
// Network view

/// Where a resource sits in the network: the containers it is directly in.
#[derive(Default, Clone)]
struct Place {
    region: Option<Ix>,
    vpc: Option<Ix>,
    zone: Option<Ix>,
    subnet: Option<Ix>,
}

fn network(snap: &Snapshot, opts: &Options) -> Result<Diagram, DiagramError> {
    let scope = opts
        .scope
        .as_deref()
        .map(|s| resolve(snap, s))
        .transpose()?;
    let n = snap.resources.len();
    let mut place: Vec<Place> = vec![Place::default(); n];
    let mut runs_on_host: FxHashMap<Ix, Vec<Ix>> = FxHashMap::default();
    // Hosts that are themselves instances of a service (EC2 instances tagged
    // with their service): shown like what runs on them.
    let mut host_services: FxHashMap<Ix, Vec<Ix>> = FxHashMap::default();
    let mut attached: FxHashMap<Ix, usize> = FxHashMap::default();
    let mut routes: Vec<(Ix, Ix)> = Vec::new();
    let mut others: Vec<(Ix, Ix, &Relation)> = Vec::new();
    for (f, t, rel) in live_relations(snap) {
        let tk = snap.resource(t).kind.as_str();
        match rel.kind.as_str() {
            "contained_in" | "attached_to" if tk == "region" => place[f as usize].region = Some(t),
            "contained_in" | "attached_to" if tk == "vpc" => place[f as usize].vpc = Some(t),
            "contained_in" | "attached_to" if is_zone(tk) => place[f as usize].zone = Some(t),
            "contained_in" | "attached_to" if tk == "subnet" => place[f as usize].subnet = Some(t),
            "attached_to" if snap.resource(f).kind == "volume" => {
                *attached.entry(t).or_default() += 1
            }
            "contained_in" => {}
            "runs_on" => runs_on_host.entry(t).or_default().push(f),
            "instance_of" if snap.resource(f).kind == "host" => {
                host_services.entry(f).or_default().push(t)
            }
            "routes_to" if snap.resource(f).kind == "load_balancer" => routes.push((f, t)),
            _ => others.push((f, t, rel)),
        }
    }
    // The cluster path of every container: region → VPC → zone → subnet.
    let region_of = |ix: Ix, place: &Vec<Place>| -> Option<Ix> {
        let p = &place[ix as usize];
        p.region
            .or_else(|| p.vpc.and_then(|v| place[v as usize].region))
            .or_else(|| p.zone.and_then(|z| place[z as usize].region))
            .or_else(|| {
                p.subnet
                    .and_then(|s| place[s as usize].vpc.and_then(|v| place[v as usize].region))
            })
    };
    // Path of a subnet; of a resource placed in a subnet/vpc/zone/region.
    let path_of = |ix: Ix| -> Vec<Ix> {
        let r = snap.resource(ix);
        let p = &place[ix as usize];
        let mut path = Vec::new();
        let (subnet, vpc, zone) = if r.kind == "subnet" {
            (Some(ix), p.vpc, p.zone)
        } else if let Some(s) = p.subnet {
            let sp = &place[s as usize];
            (Some(s), sp.vpc.or(p.vpc), sp.zone.or(p.zone))
        } else {
            (None, p.vpc, if p.vpc.is_some() { None } else { p.zone })
        };
        let region = subnet
            .and_then(|s| region_of(s, &place))
            .or_else(|| region_of(ix, &place))
            .or_else(|| vpc.and_then(|v| region_of(v, &place)));
        path.extend(region);
        path.extend(vpc);
        path.extend(zone);
        if r.kind != "subnet" {
            path.extend(subnet);
        }
        path
    };
    // Hosts (or anything placed in a subnet), gateways, security groups.
    let in_scope = |path: &[Ix], ix: Ix| scope.is_none_or(|s| s == ix || path.contains(&s));
    let mut members: Vec<(Ix, Vec<Ix>)> = Vec::new(); // drawn resources with their cluster path
    let mut subnets: BTreeSet<Ix> = BTreeSet::new();
    // Security groups placed in scope, drawn only with reachability.
    let mut hidden_groups = 0usize;
    for ix in 0..n as Ix {
        let r = snap.resource(ix);
        if r.status != Status::Present {
            continue;
        }
        let k = r.kind.as_str();
        if matches!(k, "region" | "vpc") || is_zone(k) {
            continue;
        }
        let p = &place[ix as usize];
        if k == "security_group" && !opts.show_reachability {
            if (p.subnet.is_some() || p.vpc.is_some()) && in_scope(&path_of(ix), ix) {
                hidden_groups += 1;
            }
            continue;
        }
        if k == "subnet" {
            let path = path_of(ix);
            if in_scope(&path, ix) {
                subnets.insert(ix);
            }
            continue;
        }
        let placed = p.subnet.is_some() || p.vpc.is_some();
        // Volumes are counted on their host; interfaces add nothing a host's
        // IP does not say.
        if !(placed || is_gateway(k))
            || matches!(k, "volume" | "service_instance" | "network_interface")
        {
            continue;
        }
        let path = path_of(ix);
        if in_scope(&path, ix) {
            members.push((ix, path));
        }
    }
    // Nothing to draw (load balancers are drawn only towards drawn hosts):
    // say why, not just "0 nodes".
    let mut notes = if members.is_empty() {
        nothing_placed(snap, &place, scope, subnets.len(), hidden_groups)
    } else {
        Vec::new()
    };
    let member_set: FxHashSet<Ix> = members.iter().map(|m| m.0).collect();
    // Load balancers: targets are instances (or hosts); draw LB → host.
    let mut lb_targets: BTreeMap<Ix, BTreeSet<Ix>> = BTreeMap::new();
    let mut host_of: FxHashMap<Ix, Ix> = FxHashMap::default();
    for (host, runners) in &runs_on_host {
        for &r in runners {
            host_of.insert(r, *host);
        }
    }
    let parents = instance_parents(snap);
    let mut lb_pools: BTreeMap<Ix, BTreeSet<String>> = BTreeMap::new();
    for &(lb, target) in &routes {
        let host = host_of.get(&target).copied().unwrap_or(target);
        if member_set.contains(&host) {
            lb_targets.entry(lb).or_default().insert(host);
            let svc = parents.get(&target).copied().unwrap_or(target);
            lb_pools
                .entry(lb)
                .or_default()
                .insert(snap.resource(svc).name.clone());
        }
    }
    // Count, then fold to fit the cap.
    let hosts_placed: usize = members
        .iter()
        .filter(|(ix, _)| !is_gateway(&snap.resource(*ix).kind))
        .count();
    let gateways = members.len() - hosts_placed;
    let lbs = lb_targets.len();
    let mut level = 0;
    if members.len() + lbs > opts.max_nodes {
        level = 1;
        // Subnet count nodes instead of hosts.
        if subnets.len() + gateways + 1 > opts.max_nodes {
            level = 2;
        }
    }
    let mut b = Builder::default();
    let key = |ix: Ix| snap.resource(ix).id.clone();
    let cluster_label = |ix: Ix| -> String {
        let r = snap.resource(ix);
        let mut l = format!("{} {}", r.kind.replace('_', " "), clip(&r.name));
        if let Some(c) = r.attributes.get("cidr").and_then(|c| c.as_str()) {
            l.push_str(&format!("  {}", clip(c)));
        }
        l
    };
    let style_of = |ix: Ix| -> Vec<(&'static str, String)> {
        match snap.resource(ix).kind.as_str() {
            "region" => vec![("style", "rounded".into()), ("color", "#888888".into())],
            "vpc" => vec![
                ("style", "rounded,filled".into()),
                ("fillcolor", "#f5f9ff".into()),
                ("color", "#6c8ebf".into()),
            ],
            "subnet" => vec![
                ("style", "rounded,filled".into()),
                ("fillcolor", "#ffffff".into()),
                ("color", "#82b366".into()),
            ],
            _ => vec![
                ("style", "rounded,dashed".into()),
                ("color", "#999999".into()),
            ],
        }
    };
    let add_path = |b: &mut Builder, path: &[Ix]| -> Vec<String> {
        let keys: Vec<String> = path.iter().map(|&p| key(p)).collect();
        for i in 1..=path.len() {
            b.cluster(
                &keys[..i],
                cluster_label(path[i - 1]),
                style_of(path[i - 1]),
            );
        }
        keys
    };
    let mut drawn = 0usize;
    match level {
        0 => {
            for &s in &subnets {
                let mut path = path_of(s);
                path.push(s);
                add_path(&mut b, &path);
            }
            for (ix, path) in &members {
                let r = snap.resource(*ix);
                let mut label = name_line(r);
                if let Some(ip) = ["ip", "private_ip"]
                    .iter()
                    .find_map(|k| r.attributes.get(*k).and_then(|v| v.as_str()))
                {
                    label.push_str(&format!("\n{}", clip(ip)));
                }
                let runners = runs_on_host.get(ix).into_iter().flatten();
                let services = host_services.get(ix).into_iter().flatten();
                if runs_on_host.contains_key(ix) || host_services.contains_key(ix) {
                    let mut names: Vec<String> = runners
                        .map(|&x| {
                            let svc = parents.get(&x).copied().unwrap_or(x);
                            clip(&snap.resource(svc).name)
                        })
                        .chain(services.map(|&x| clip(&snap.resource(x).name)))
                        .collect();
                    names.sort();
                    names.dedup();
                    let more = names.len().saturating_sub(3);
                    names.truncate(3);
                    let mut line = names.join(", ");
                    if more > 0 {
                        line.push_str(&format!(" +{more}"));
                    }
                    label.push_str(&format!("\n[{line}]"));
                }
                if let Some(v) = attached.get(ix) {
                    label.push_str(&format!("\n{}", plural(*v, "volume")));
                }
                let keys = add_path(&mut b, path);
                b.node(&r.id, keys, styled(&r.kind, label));
                drawn += 1;
            }
            // Lay each subnet's hosts out in rows of a few (invisible
            // edges), not one row as wide as the page.
            let mut by_cluster: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
            for (id, (path, _)) in &b.nodes {
                by_cluster.entry(path.clone()).or_default().push(id.clone());
            }
            for ids in by_cluster.values() {
                let cols = ((ids.len() as f64).sqrt().ceil() as usize).clamp(3, 6);
                for i in cols..ids.len() {
                    b.edge(
                        &ids[i - cols],
                        &ids[i],
                        "grid",
                        vec![("style", "invis".into())],
                    );
                }
            }
            for (lb, hosts) in &lb_targets {
                let r = snap.resource(*lb);
                let pools: Vec<String> = lb_pools[lb].iter().map(|s| clip(s)).collect();
                let label = format!("{}\n→ {}", name_line(r), pools.join(", "));
                let path = path_of(*lb);
                let keys = add_path(&mut b, &path);
                b.node(&r.id, keys, styled(&r.kind, label));
                drawn += 1;
                for h in hosts {
                    b.edge(
                        &r.id,
                        &key(*h),
                        "routes_to",
                        vec![("color", "#38761d".into()), ("arrowsize", "0.6".into())],
                    );
                }
            }
        }
        _ => {
            // Gateways stay; hosts fold into per-subnet (level 1) or per
            // VPC-zone (level 2) counts; load balancers into one count.
            let mut counts: BTreeMap<Vec<Ix>, BTreeMap<String, usize>> = BTreeMap::new();
            for &s in &subnets {
                let mut path = path_of(s);
                if level == 1 {
                    path.push(s);
                }
                counts.entry(path).or_default();
            }
            for (ix, path) in &members {
                let r = snap.resource(*ix);
                if is_gateway(&r.kind) {
                    continue;
                }
                let mut p = path.clone();
                if level == 2 && p.last().is_some_and(|&l| snap.resource(l).kind == "subnet") {
                    p.pop();
                }
                *counts
                    .entry(p)
                    .or_default()
                    .entry(r.kind.clone())
                    .or_default() += 1;
            }
            if level == 2 {
                // Subnets themselves are counted in their VPC-zone node.
                for &s in &subnets {
                    let p = path_of(s);
                    *counts
                        .entry(p)
                        .or_default()
                        .entry("subnet".into())
                        .or_default() += 1;
                }
            }
            // Gateways are drawn while they fit beside the counts; past
            // the cap (hundreds of VPCs) they are counted too.
            let fold_gateways =
                drawn + gateways + counts.len() + usize::from(lbs > 0) > opts.max_nodes;
            for (ix, path) in &members {
                let r = snap.resource(*ix);
                if !is_gateway(&r.kind) {
                    continue;
                }
                if fold_gateways {
                    *counts
                        .entry(path.clone())
                        .or_default()
                        .entry(r.kind.clone())
                        .or_default() += 1;
                } else {
                    let keys = add_path(&mut b, path);
                    b.node(&r.id, keys, styled(&r.kind, name_line(r)));
                    drawn += 1;
                }
            }
            // What the cap leaves out even as counts, said in the note.
            let room = opts.max_nodes.saturating_sub(drawn + usize::from(lbs > 0));
            let (mut left_groups, mut left_items) = (0usize, 0usize);
            for (i, (path, kinds)) in counts.iter().enumerate() {
                if i >= room {
                    left_groups += 1;
                    left_items += kinds.values().sum::<usize>();
                    continue;
                }
                let keys = add_path(&mut b, path);
                let mut lines: Vec<String> = kinds
                    .iter()
                    .map(|(k, c)| plural(*c, &k.replace('_', " ")))
                    .collect();
                if lines.is_empty() {
                    lines.push("empty".into());
                }
                let id = format!("fold:{}", keys.join("/"));
                b.node(
                    &id,
                    keys,
                    vec![
                        ("label", lines.join("\n")),
                        ("shape", "box3d".into()),
                        ("style", "filled".into()),
                        ("fillcolor", "#f3f3f3".into()),
                        ("tooltip", "folded".into()),
                    ],
                );
                drawn += 1;
            }
            if lbs > 0 {
                b.node(
                    "fold:load_balancers",
                    Vec::new(),
                    styled("load_balancer", plural(lbs, "load balancer")),
                );
                drawn += 1;
            }
            notes.push(format!(
                "{} hosts folded into per-{} counts{}{}; narrow with --scope ID (cap {} nodes)",
                thousands(hosts_placed),
                if level == 1 { "subnet" } else { "zone" },
                if fold_gateways {
                    format!(", {} gateways counted too", thousands(gateways))
                } else {
                    String::new()
                },
                if lbs > 0 {
                    format!(", {} load balancers into one", thousands(lbs))
                } else {
                    String::new()
                },
                opts.max_nodes
            ));
            if left_groups > 0 {
                notes.push(format!(
                    "{} more groups ({} resources) over the cap, not drawn",
                    thousands(left_groups),
                    thousands(left_items)
                ));
            }
        }
    }
    // Other relations between drawn nodes (gateway routes, peering, reachability).
    for (f, t, rel) in others {
        let (fi, ti) = (key(f), key(t));
        if !(b.has_node(&fi) && b.has_node(&ti)) {
            continue;
        }
        let reach = rel.kind == "allows_traffic_from";
        if reach && !opts.show_reachability {
            continue;
        }
        let (d, o) = evidence(rel);
        let (mut style, _) = evidence_style(d, o);
        if reach {
            style = "dashed";
        }
        b.edge(
            &fi,
            &ti,
            &rel.kind,
            vec![
                ("label", rel.kind.replace('_', " ")),
                ("style", style.into()),
                ("color", if reach { "#cc0000" } else { "#555555" }.into()),
            ],
        );
    }
    let title = match scope {
        Some(s) => format!(
            "Network: {} ({})",
            snap.resource(s).id,
            plural(drawn, "node")
        ),
        None => format!("Network ({})", plural(drawn, "node")),
    };
    let graph = b.finish(graph_attrs(&title, &notes, "TB"), Vec::new());
    Ok(Diagram {
        graph,
        nodes: drawn,
        notes,
    })
}

/// Why the network view drew nothing, what the graph (or the scope) holds
/// instead, and what the view draws: two notes.
fn nothing_placed(
    snap: &Snapshot,
    place: &[Place],
    scope: Option<Ix>,
    subnets: usize,
    hidden_groups: usize,
) -> Vec<String> {
    let mut why = match scope {
        Some(s) => format!(
            "nothing drawn in {}: it holds no gateway, and no host, load balancer or other resource contained_in (or attached_to) a subnet or VPC",
            snap.resource(s).id
        ),
        None => {
            // What is there but in no subnet or VPC.
            let mut unplaced: BTreeMap<&str, usize> = BTreeMap::new();
            for (ix, p) in place.iter().enumerate() {
                let r = snap.resource(ix as Ix);
                if r.status == Status::Present
                    && p.subnet.is_none()
                    && p.vpc.is_none()
                    && matches!(r.kind.as_str(), "host" | "load_balancer")
                {
                    *unplaced.entry(r.kind.as_str()).or_default() += 1;
                }
            }
            let unplaced: Vec<String> = unplaced
                .iter()
                .map(|(k, c)| plural(*c, &k.replace('_', " ")))
                .collect();
            format!(
                "nothing drawn: there is no gateway, and no host, load balancer or other resource is contained_in (or attached_to) a subnet or VPC{}",
                if unplaced.is_empty() {
                    String::new()
                } else {
                    format!(" ({} in none)", unplaced.join(" and "))
                }
            )
        }
    };
    if subnets > 0 {
        why.push_str(&format!(
            "; {} {} nothing to draw",
            plural(subnets, "subnet"),
            if subnets == 1 { "holds" } else { "hold" }
        ));
    }
    if hidden_groups > 0 {
        why.push_str(&format!(
            "; {} drawn only with --show-reachability",
            plural(hidden_groups, "security group")
        ));
    }
    vec![
        why,
        "the network view draws region → VPC → zone → subnet → what is contained_in (or attached_to) a subnet or VPC, gateways, and the load balancers routing to what it draws".into(),
    ]
}

// ---------------------------------------------------------------------------
// Dependency view

const SERVICE_KINDS: [&str; 6] = [
    "service",
    "database",
    "cache",
    "queue",
    "load_balancer",
    "external_endpoint",
];

/// The checks on a diagram's options that need no graph, made before a
/// server request waits for a render slot (and again by [`build`]).
pub fn check_options(kind: Kind, opts: &Options) -> Result<(), DiagramError> {
    if kind == Kind::Dependencies && opts.hops.is_some() && opts.around.is_none() {
        // As the CLI: hops count from a resource, and would otherwise be
        // dropped without a word.
        return Err(DiagramError::Invalid(
            "hops counts from a resource: give around as well".into(),
        ));
    }
    Ok(())
}

fn dependencies(snap: &Snapshot, opts: &Options) -> Result<Diagram, DiagramError> {
    check_options(Kind::Dependencies, opts)?;
    let around = opts
        .around
        .as_deref()
        .map(|s| resolve(snap, s))
        .transpose()?;
    let parents = instance_parents(snap);
    let fold = |ix: Ix| parents.get(&ix).copied().unwrap_or(ix);
    let mut instances: FxHashMap<Ix, usize> = FxHashMap::default();
    for p in parents.values() {
        *instances.entry(*p).or_default() += 1;
    }
    // Folded dependency edges: (from, to) → (declared, observed, kinds).
    let mut edges: BTreeMap<(Ix, Ix), (bool, bool, BTreeSet<&str>)> = BTreeMap::new();
    for (f, t, rel) in live_relations(snap) {
        if !matches!(rel.kind.as_str(), "depends_on" | "routes_to") {
            continue;
        }
        let (a, z) = (fold(f), fold(t));
        if a == z {
            continue;
        }
        let (d, o) = evidence(rel);
        let e = edges
            .entry((a, z))
            .or_insert((false, false, BTreeSet::new()));
        e.0 |= d;
        e.1 |= o;
        e.2.insert(rel.kind.as_str());
    }
    let mut adj: FxHashMap<Ix, Vec<Ix>> = FxHashMap::default();
    for &(a, z) in edges.keys() {
        adj.entry(a).or_default().push(z);
        adj.entry(z).or_default().push(a);
    }
    let mut notes = Vec::new();
    // Candidate nodes, in priority order.
    let candidates: Vec<Ix> = match around {
        Some(c) => {
            let c = fold(c);
            let hops = opts.hops.unwrap_or(DEFAULT_HOPS);
            let mut dist: FxHashMap<Ix, u32> = FxHashMap::default();
            dist.insert(c, 0);
            let mut q = VecDeque::from([c]);
            let mut order = Vec::new();
            while let Some(u) = q.pop_front() {
                order.push(u);
                let du = dist[&u];
                if du >= hops {
                    continue;
                }
                let mut next: Vec<Ix> = adj.get(&u).cloned().unwrap_or_default();
                next.sort_unstable();
                for v in next {
                    if let std::collections::hash_map::Entry::Vacant(e) = dist.entry(v) {
                        e.insert(du + 1);
                        q.push_back(v);
                    }
                }
            }
            order
        }
        None => {
            let mut all: Vec<Ix> = (0..snap.resources.len() as Ix)
                .filter(|&ix| {
                    let r = snap.resource(ix);
                    r.status == Status::Present
                        && !parents.contains_key(&ix)
                        && (SERVICE_KINDS.contains(&r.kind.as_str()) || adj.contains_key(&ix))
                })
                .collect();
            // Most connected first, then by id.
            all.sort_by_key(|&ix| (std::cmp::Reverse(adj.get(&ix).map_or(0, Vec::len)), ix));
            all
        }
    };
    let total = candidates.len();
    let mut keep: Vec<Ix> = candidates;
    if keep.len() > opts.max_nodes {
        keep.truncate(opts.max_nodes);
        notes.push(format!(
            "showing {} of {} services and datastores ({}); narrow with --around ID --hops N",
            thousands(keep.len()),
            thousands(total),
            if around.is_some() {
                "nearest first"
            } else {
                "most connected first"
            }
        ));
    }
    let kept: FxHashSet<Ix> = keep.iter().copied().collect();
    let folded: usize = keep
        .iter()
        .map(|ix| instances.get(ix).copied().unwrap_or(0))
        .sum();
    if folded > 0 {
        notes.insert(
            0,
            format!(
                "{} instances folded into their services (×N); line: declared, dashed: observed, bold: both",
                thousands(folded)
            ),
        );
    }
    let mut b = Builder::default();
    for &ix in &keep {
        let r = snap.resource(ix);
        let mut label = name_line(r);
        if let Some(c) = instances.get(&ix) {
            label.push_str(&format!(" ×{c}"));
        }
        let mut attrs = styled(&r.kind, label);
        if Some(ix) == around.map(fold) {
            attrs.push(("penwidth", "3".into()));
            attrs.push(("color", "#1c4587".into()));
        }
        let path = match &opts.group_by {
            Some(l) => r
                .labels
                .get(l)
                .map(|v| vec![format!("{l}: {}", clip(v))])
                .unwrap_or_default(),
            None => Vec::new(),
        };
        b.node(&r.id, path, attrs);
    }
    if let Some(l) = &opts.group_by {
        let groups: BTreeSet<Vec<String>> = b
            .nodes
            .values()
            .map(|(p, _)| p.clone())
            .filter(|p| !p.is_empty())
            .collect();
        for g in groups {
            let label = g[0].clone();
            b.cluster(
                &g,
                label,
                vec![
                    ("style", "rounded,dashed".into()),
                    ("color", "#999999".into()),
                ],
            );
        }
        let _ = l;
    }
    for (&(a, z), (d, o, kinds)) in &edges {
        if !(kept.contains(&a) && kept.contains(&z)) {
            continue;
        }
        let (style, how) = evidence_style(*d, *o);
        let kinds: Vec<&str> = kinds.iter().copied().collect();
        let mut attrs = vec![
            ("style", style.to_string()),
            ("tooltip", format!("{} ({how})", kinds.join(", "))),
        ];
        if kinds == ["routes_to"] {
            attrs.push(("color", "#38761d".into()));
        }
        b.edge(&key(snap, a), &key(snap, z), "dep", attrs);
    }
    let title = match around {
        Some(c) => format!(
            "Dependencies around {} ({} hops, {})",
            snap.resource(c).id,
            opts.hops.unwrap_or(DEFAULT_HOPS),
            plural(keep.len(), "node")
        ),
        None => format!("Dependencies ({})", plural(keep.len(), "node")),
    };
    let nodes = keep.len();
    let graph = b.finish(graph_attrs(&title, &notes, "LR"), Vec::new());
    Ok(Diagram {
        graph,
        nodes,
        notes,
    })
}

fn key(snap: &Snapshot, ix: Ix) -> String {
    snap.resource(ix).id.clone()
}

// ---------------------------------------------------------------------------
// Impact view

const DOWN_FILL: &str = "#e06666";
const FAILED_FILL: &str = "#990000";
const DEGRADED_FILL: &str = "#ffd966";
const CONTEXT_FILL: &str = "#f3f3f3";

fn impact(snap: &Snapshot, opts: &Options) -> Result<Diagram, DiagramError> {
    if opts.failed.is_empty() {
        return Err(DiagramError::Invalid(
            "impact needs at least one failed resource id".into(),
        ));
    }
    let mut failed: Vec<Ix> = resolve_all(snap, &opts.failed)?;
    failed.sort_unstable();
    failed.dedup();
    // The whole impact, counted as `infragraph impact` counts it (a failed
    // resource is DOWN): the title gives these counts whatever is drawn.
    // `hops` trims what is drawn, never what is counted.
    let result = snap.impact(&failed, None);
    let failed_set: FxHashSet<Ix> = failed.iter().copied().collect();
    let within = |i: &&crate::graph::Impacted| opts.hops.is_none_or(|h| i.depth <= h);
    // Nearest first: failed, then down and degraded interleaved by depth.
    let mut items: Vec<_> = result
        .down
        .iter()
        .chain(&result.degraded)
        .filter(within)
        .collect();
    items.sort_by_key(|i| (i.depth, i.status == ImpactStatus::Degraded, i.node));
    let budget = opts
        .max_nodes
        .saturating_sub(failed.len().min(opts.max_nodes));
    let mut notes = Vec::new();
    let shown: Vec<_> = items
        .iter()
        .filter(|i| failed_set.contains(&i.node))
        .chain(
            items
                .iter()
                .filter(|i| !failed_set.contains(&i.node))
                .take(budget),
        )
        .copied()
        .collect();
    let down_and_degraded = |v: &mut dyn Iterator<Item = &crate::graph::Impacted>| {
        v.fold((0usize, 0usize), |(d, g), i| match i.status {
            ImpactStatus::Down => (d + 1, g),
            ImpactStatus::Degraded => (d, g + 1),
        })
    };
    if let Some(h) = opts.hops {
        let (down, degraded) = down_and_degraded(
            &mut result
                .down
                .iter()
                .chain(&result.degraded)
                .filter(|i| i.depth > h),
        );
        if down + degraded > 0 {
            notes.push(format!(
                "not drawn: {} down and {} degraded more than {} from a failed resource (hops {h}); the title counts them",
                thousands(down),
                thousands(degraded),
                plural(h as usize, "hop"),
            ));
        }
    }
    if shown.len() < items.len() {
        let shown_nodes: FxHashSet<Ix> = shown.iter().map(|i| i.node).collect();
        let (down, degraded) = down_and_degraded(
            &mut items
                .iter()
                .copied()
                .filter(|i| !shown_nodes.contains(&i.node)),
        );
        notes.push(format!(
            "showing the nearest {} of {} impacted{}: {} down and {} degraded not drawn over the cap of {}{}; narrow with --hops N or raise --max-nodes",
            thousands(shown.len()),
            thousands(items.len()),
            match opts.hops {
                Some(h) => format!(" within {}", plural(h as usize, "hop")),
                None => String::new(),
            },
            thousands(down),
            thousands(degraded),
            plural(opts.max_nodes, "node"),
            // The failed resources are drawn whatever the cap: say why more
            // are shown than it allows.
            if failed.len() > opts.max_nodes {
                format!(" (the {} failed are always drawn)", thousands(failed.len()))
            } else {
                String::new()
            },
        ));
    }
    let shown_set: FxHashSet<Ix> = shown.iter().map(|i| i.node).collect();
    let mut b = Builder::default();
    for i in &shown {
        let r = snap.resource(i.node);
        let is_failed = failed_set.contains(&i.node);
        let mut label = format!("{}\n{}", name_line(r), clip(&r.id));
        let (fill, font, status) = if is_failed {
            (FAILED_FILL, "white", "FAILED".to_string())
        } else if i.status == ImpactStatus::Down {
            (DOWN_FILL, "black", "DOWN".to_string())
        } else {
            (DEGRADED_FILL, "black", "DEGRADED".to_string())
        };
        label.push_str(&format!("\n{status}"));
        // Redundancy counts where some was lost: `2/3 left`.
        if let Some((left, total)) = i.aggregate.filter(|(l, t)| l < t) {
            label.push_str(&format!(" · {left}/{total} left"));
        }
        let (shape, _) = look(&r.kind);
        b.node(
            &r.id,
            Vec::new(),
            vec![
                ("label", label),
                ("shape", shape.into()),
                (
                    "style",
                    if shape == "box" {
                        "rounded,filled,bold"
                    } else {
                        "filled,bold"
                    }
                    .into(),
                ),
                ("fillcolor", fill.into()),
                ("fontcolor", font.into()),
                ("tooltip", format!("{} ({status})", r.kind)),
            ],
        );
        // The edge that explains it: the last relation of its path, drawn
        // in the direction the failure travelled.
        let path = result.path(snap, i);
        if let Some(&last) = path.last() {
            let rel = snap.relation(last);
            let cause = if rel.to == r.id { &rel.from } else { &rel.to };
            if snap.lookup(cause).is_some_and(|c| shown_set.contains(&c)) {
                b.edge(
                    cause,
                    &r.id,
                    &rel.kind,
                    vec![
                        ("label", rel.kind.replace('_', " ")),
                        (
                            "color",
                            if i.status == ImpactStatus::Down {
                                "#cc0000"
                            } else {
                                "#bf9000"
                            }
                            .into(),
                        ),
                        ("penwidth", "1.5".into()),
                    ],
                );
            }
        }
    }
    // Just enough surroundings: where each failed resource lives, and what
    // else sits there (grey), so the reader can place the failure.
    let mut context = 0usize;
    let context_cap = opts.max_nodes.saturating_sub(shown.len()).min(12);
    for &f in &failed {
        for rx in snap.relations_of(f, true, false) {
            let rel = snap.relation(rx);
            if !matches!(rel.kind.as_str(), "contained_in" | "runs_on") {
                continue;
            }
            let Some(t) = snap.lookup(&rel.to) else {
                continue;
            };
            if shown_set.contains(&t) || context >= context_cap {
                continue;
            }
            let r = snap.resource(t);
            if !b.has_node(&r.id) {
                b.node(
                    &r.id,
                    Vec::new(),
                    vec![
                        ("label", format!("{}\n{}", name_line(r), clip(&r.id))),
                        ("style", "rounded,filled,dashed".into()),
                        ("fillcolor", CONTEXT_FILL.into()),
                        ("color", "#999999".into()),
                        ("fontcolor", "#666666".into()),
                        ("tooltip", format!("{} (unaffected)", r.kind)),
                    ],
                );
                context += 1;
            }
            b.edge(
                &snap.resource(f).id,
                &r.id,
                &rel.kind,
                vec![
                    ("label", rel.kind.replace('_', " ")),
                    ("style", "dotted".into()),
                    ("color", "#999999".into()),
                    ("arrowhead", "none".into()),
                ],
            );
        }
    }
    let failed_ids: Vec<&str> = failed
        .iter()
        .map(|&f| snap.resource(f).id.as_str())
        .collect();
    let title = format!(
        "Impact of {}: {} down (incl. {} failed), {} degraded",
        clip(&failed_ids.join(", ")),
        thousands(result.down.len()),
        thousands(failed.len()),
        thousands(result.degraded.len())
    );
    let nodes = b.nodes.len();
    let graph = b.finish(graph_attrs(&title, &notes, "LR"), vec![legend()]);
    Ok(Diagram {
        graph,
        nodes,
        notes,
    })
}

/// The impact legend: a cluster of sample nodes.
fn legend() -> Stmt {
    let entry = |id: &str, label: &str, fill: &str, font: &str, style: &str| {
        Stmt::Node(Node::new(
            nid(id),
            vec![
                attr("label", label),
                attr("style", style),
                attr("fillcolor", fill),
                attr("fontcolor", font),
                attr("fontsize", "9"),
            ],
        ))
    };
    let mut stmts = vec![
        Stmt::Attribute(attr("label", "Legend")),
        Stmt::Attribute(attr("style", "rounded")),
        Stmt::Attribute(attr("color", "#bbbbbb")),
        Stmt::Attribute(attr("fontsize", "10")),
        entry(
            "legend:failed",
            "FAILED\n(counted as down)",
            FAILED_FILL,
            "white",
            "rounded,filled,bold",
        ),
        entry(
            "legend:down",
            "DOWN\n(a hard input lost, or every instance/target)",
            DOWN_FILL,
            "black",
            "rounded,filled,bold",
        ),
        entry(
            "legend:degraded",
            "DEGRADED · 2/3 left\n(lost redundancy or a dependency degraded)",
            DEGRADED_FILL,
            "black",
            "rounded,filled,bold",
        ),
        entry(
            "legend:context",
            "unaffected\n(where it runs)",
            CONTEXT_FILL,
            "#666666",
            "rounded,filled,dashed",
        ),
    ];
    // Keep the entries in one column.
    for (a, z) in [
        ("legend:failed", "legend:down"),
        ("legend:down", "legend:degraded"),
        ("legend:degraded", "legend:context"),
    ] {
        stmts.push(Stmt::Edge(Edge {
            ty: EdgeTy::Pair(Vertex::N(nid(a)), Vertex::N(nid(z))),
            attributes: vec![attr("style", "invis")],
        }));
    }
    Stmt::Subgraph(Subgraph {
        id: qid("cluster_legend"),
        stmts,
    })
}

// ---------------------------------------------------------------------------
// Rendering with Graphviz `dot`

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DOT text (no Graphviz needed).
    Dot,
    /// SVG, rendered by `dot`.
    Svg,
    /// PNG, rendered by `dot`.
    Png,
}

impl Format {
    /// From a file extension: `dot`/`gv`, `svg`, `png`.
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "dot" | "gv" => Some(Format::Dot),
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Dot => "text/vnd.graphviz; charset=utf-8",
            Format::Svg => "image/svg+xml",
            Format::Png => "image/png",
        }
    }
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Graphviz is not installed (or not on PATH).
    #[error(
        "Graphviz `{0}` was not found, so SVG/PNG cannot be rendered: install Graphviz \
         (Debian/Ubuntu: apt-get install graphviz; Fedora: dnf install graphviz; \
         macOS: brew install graphviz) or set INFRAGRAPH_DOT to its path; DOT output works without it"
    )]
    DotMissing(String),
    /// `dot` ran and failed.
    #[error("Graphviz `dot` failed: {0}")]
    Failed(String),
    /// `dot` took too long and was stopped.
    #[error(
        "Graphviz `dot` took longer than {0} s and was stopped; narrow the diagram (--scope, --around, --hops) or lower max nodes"
    )]
    Timeout(u64),
}

/// How long `dot` may run.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(60);

/// The `dot` program: `INFRAGRAPH_DOT`, or `dot` on the PATH.
pub fn dot_program() -> String {
    std::env::var("INFRAGRAPH_DOT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "dot".into())
}

/// Renders DOT text with `dot` (see [`dot_program`]). DOT is returned as is.
pub fn render(dot: &str, format: Format) -> Result<Vec<u8>, RenderError> {
    render_with(&dot_program(), dot, format, RENDER_TIMEOUT)
}

/// Renders DOT text with the given `dot` program, stopping it after `timeout`.
pub fn render_with(
    program: &str,
    dot: &str,
    format: Format,
    timeout: Duration,
) -> Result<Vec<u8>, RenderError> {
    let flag = match format {
        Format::Dot => return Ok(dot.as_bytes().to_vec()),
        Format::Svg => "-Tsvg",
        Format::Png => "-Tpng",
    };
    let mut child = std::process::Command::new(program)
        .arg(flag)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RenderError::DotMissing(program.to_string())
            } else {
                RenderError::Failed(format!("cannot run '{program}': {e}"))
            }
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = dot.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RenderError::Timeout(timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(RenderError::Failed(e.to_string())),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(RenderError::Failed(format!(
            "{status}: {}",
            err.lines().take(5).collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_everything_that_breaks_dot() {
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote("a\\"), r#""a\\""#);
        assert_eq!(quote("x\ny"), r#""x\ny""#);
        assert_eq!(quote("}\u{7}"), "\"} \"");
        // Names stay distinct: a control character is an escape of its
        // own, never the same text as another name's.
        assert_eq!(quote_id("a\tb"), r#""a\x09b""#);
        assert_eq!(quote_id("a\rb"), r#""a\rb""#);
        assert_eq!(quote_id("a\nb"), r#""a\nb""#);
        assert_eq!(quote_id(r#"a"b\"#), r#""a\"b\\""#);
        let names = [
            "a\tb", "a b", "a\\x09b", "ab", "a\rb", "a\\rb", "a\nb", "a\\nb",
        ];
        let quoted: BTreeSet<String> = names.iter().map(|n| quote_id(n)).collect();
        assert_eq!(quoted.len(), names.len(), "{quoted:?}");
    }

    #[test]
    fn thousands_and_plurals() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(plural(1, "host"), "1 host");
        assert_eq!(plural(3, "host"), "3 hosts");
        assert_eq!(plural(2, "load balancer"), "2 load balancers");
    }
}
