//! The impact rules on hand-built graphs: every row of the relation table,
//! redundancy, cycles, multiple failures, paths, and a property test against
//! a naive fixed-point computation.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use infragraph::graph::{ImpactStatus, Snapshot};
use infragraph::model::{Provenance, Relation, Resource, Status};
use proptest::prelude::*;

fn resource(id: &str) -> Resource {
    Resource {
        id: id.into(),
        kind: "thing".into(),
        name: id.into(),
        labels: BTreeMap::new(),
        attributes: serde_json::Value::Null,
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
        sources: vec![Provenance {
            source: "test".into(),
            status: Status::Present,
            first_seen: 0,
            last_seen: 0,
            gone_at: None,
        }],
    }
}

fn relation(from: &str, to: &str, kind: &str) -> Relation {
    Relation {
        from: from.into(),
        to: to.into(),
        kind: kind.into(),
        attributes: serde_json::Value::Null,
        status: Status::Present,
        first_seen: 0,
        last_seen: 0,
        gone_at: None,
        sources: vec![],
    }
}

/// Builds a snapshot from `from kind to` triples; resources are implied.
fn graph(rels: &[(&str, &str, &str)]) -> Snapshot {
    let mut ids = BTreeSet::new();
    for (f, _, t) in rels {
        ids.insert(*f);
        ids.insert(*t);
    }
    Snapshot::build(
        ids.into_iter().map(resource).collect(),
        rels.iter().map(|(f, k, t)| relation(f, t, k)).collect(),
        0,
    )
}

#[derive(Debug, PartialEq)]
struct Answer {
    down: Vec<String>,
    degraded: Vec<String>,
}

fn impact(s: &Snapshot, failed: &[&str]) -> Answer {
    let ix: Vec<u32> = failed
        .iter()
        .map(|id| s.lookup(id).expect("known id"))
        .collect();
    let r = s.impact(&ix, None);
    let names = |v: &[infragraph::graph::Impacted]| {
        let mut n: Vec<String> = v.iter().map(|i| s.resource(i.node).id.clone()).collect();
        n.sort();
        n
    };
    Answer {
        down: names(&r.down),
        degraded: names(&r.degraded),
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn depends_on_runs_on_contained_in_carry_failure_from_to_to_from() {
    for kind in ["depends_on", "runs_on", "contained_in"] {
        let s = graph(&[("a", kind, "b")]);
        let a = impact(&s, &["b"]);
        assert_eq!(
            a.down,
            ids(&["a", "b"]),
            "{kind}: a failure of to reaches from"
        );
        let a = impact(&s, &["a"]);
        assert_eq!(
            a.down,
            ids(&["a"]),
            "{kind}: a failure of from does not reach to"
        );
        assert!(a.degraded.is_empty());
    }
}

#[test]
fn attached_to_carries_failure_from_the_volume_to_the_host_only() {
    let s = graph(&[("vol", "attached_to", "host")]);
    assert_eq!(impact(&s, &["vol"]).down, ids(&["host", "vol"]));
    assert_eq!(
        impact(&s, &["host"]).down,
        ids(&["host"]),
        "a host failure does not fail its volume"
    );
}

#[test]
fn instance_of_is_down_only_when_all_instances_are() {
    let s = graph(&[
        ("i1", "instance_of", "svc"),
        ("i2", "instance_of", "svc"),
        ("i3", "instance_of", "svc"),
    ]);
    // 1 of 3 down: degraded, with 2/3 left.
    let ix = s.lookup("i1").unwrap();
    let r = s.impact(&[ix], None);
    assert_eq!(r.down.len(), 1);
    assert_eq!(r.degraded.len(), 1);
    assert_eq!(s.resource(r.degraded[0].node).id, "svc");
    assert_eq!(r.degraded[0].aggregate, Some((2, 3)));
    assert_eq!(r.degraded[0].status, ImpactStatus::Degraded);
    // 3 of 3 down: down, 0/3 left.
    let a = impact(&s, &["i1", "i2", "i3"]);
    assert_eq!(a.down, ids(&["i1", "i2", "i3", "svc"]));
    let l = |id: &str| s.lookup(id).unwrap();
    let r = s.impact(&[l("i1"), l("i2"), l("i3")], None);
    let svc = r.down.iter().find(|i| i.node == l("svc")).unwrap();
    assert_eq!(
        svc.aggregate,
        Some((0, 3)),
        "a down service counts its down instances"
    );
    // The service failed itself with one instance down: 2/3 still up.
    let r = s.impact(&[l("svc"), l("i1")], None);
    let svc = r.down.iter().find(|i| i.node == l("svc")).unwrap();
    assert_eq!(svc.aggregate, Some((2, 3)));
    // The service failing does not fail its instances.
    assert_eq!(impact(&s, &["svc"]).down, ids(&["svc"]));
}

#[test]
fn routes_to_is_down_only_when_all_targets_are() {
    let s = graph(&[("lb", "routes_to", "t1"), ("lb", "routes_to", "t2")]);
    let a = impact(&s, &["t1"]);
    assert_eq!(a.down, ids(&["t1"]));
    assert_eq!(a.degraded, ids(&["lb"]));
    assert_eq!(impact(&s, &["t1", "t2"]).down, ids(&["lb", "t1", "t2"]));
    assert_eq!(
        impact(&s, &["lb"]).down,
        ids(&["lb"]),
        "an LB failure does not fail its targets"
    );
}

#[test]
fn a_load_balancer_without_targets_is_not_down_through_redundancy() {
    // lb routes to nothing; it only depends on its subnet.
    let s = graph(&[
        ("lb", "contained_in", "subnet"),
        ("other", "depends_on", "x"),
    ]);
    assert_eq!(impact(&s, &["x"]).down, ids(&["other", "x"]));
    assert_eq!(s.aggregate_inputs(s.lookup("lb").unwrap()), 0);
}

#[test]
fn redundancy_propagates_degradation_to_dependants() {
    // web depends on svc; svc has instances on h1, h2, h3.
    let s = graph(&[
        ("i1", "instance_of", "svc"),
        ("i2", "instance_of", "svc"),
        ("i3", "instance_of", "svc"),
        ("i1", "runs_on", "h1"),
        ("i2", "runs_on", "h2"),
        ("i3", "runs_on", "h3"),
        ("web", "depends_on", "svc"),
    ]);
    let a = impact(&s, &["h1"]);
    assert_eq!(a.down, ids(&["h1", "i1"]));
    assert_eq!(a.degraded, ids(&["svc", "web"]));
    let a = impact(&s, &["h1", "h2", "h3"]);
    assert_eq!(
        a.down,
        ids(&["h1", "h2", "h3", "i1", "i2", "i3", "svc", "web"])
    );
    assert!(a.degraded.is_empty());
}

#[test]
fn mixed_hard_and_aggregate_inputs() {
    // svc has two instances and also depends on a database.
    let s = graph(&[
        ("i1", "instance_of", "svc"),
        ("i2", "instance_of", "svc"),
        ("svc", "depends_on", "db"),
    ]);
    assert_eq!(
        impact(&s, &["db"]).down,
        ids(&["db", "svc"]),
        "any hard input down: down"
    );
    let a = impact(&s, &["i1"]);
    assert_eq!(a.degraded, ids(&["svc"]));
    assert_eq!(
        impact(&s, &["i1", "i2"]).down,
        ids(&["i1", "i2", "svc"]),
        "all aggregate inputs down: down"
    );
}

#[test]
fn a_cycle_does_not_keep_itself_down() {
    // a and b depend on each other and each has a redundant instance pair;
    // a cycle through aggregates must not go down on its own.
    let s = graph(&[
        ("a", "depends_on", "b"),
        ("b", "depends_on", "a"),
        ("c", "depends_on", "a"),
        ("ia1", "instance_of", "svc"),
        ("ia2", "instance_of", "svc"),
        ("ia1", "depends_on", "svc2"),
        ("svc2", "depends_on", "svc"),
    ]);
    assert_eq!(impact(&s, &["a"]).down, ids(&["a", "b", "c"]));
    assert_eq!(impact(&s, &["c"]).down, ids(&["c"]));
    // ia1 fails → svc degraded (1/2) → svc2 degraded → ia1 already down; svc stays up.
    let a = impact(&s, &["ia1"]);
    assert_eq!(a.down, ids(&["ia1"]));
    assert_eq!(a.degraded, ids(&["svc", "svc2"]));
}

#[test]
fn multiple_failures_and_paths_explain_each_resource() {
    let s = graph(&[
        ("app", "runs_on", "host"),
        ("host", "contained_in", "subnet"),
        ("api", "depends_on", "app"),
        ("vol", "attached_to", "host"),
    ]);
    let ix = s.lookup("subnet").unwrap();
    let r = s.impact(&[ix], None);
    let api = r
        .down
        .iter()
        .find(|i| s.resource(i.node).id == "api")
        .unwrap();
    assert_eq!(api.depth, 3);
    let path: Vec<(String, String, String)> = r
        .path(&s, api)
        .iter()
        .map(|&p| {
            let p = s.relation(p);
            (p.from.clone(), p.kind.clone(), p.to.clone())
        })
        .collect();
    assert_eq!(
        path,
        vec![
            ("host".into(), "contained_in".into(), "subnet".into()),
            ("app".into(), "runs_on".into(), "host".into()),
            ("api".into(), "depends_on".into(), "app".into()),
        ]
    );
    // maxDepth trims the answer.
    let r = s.impact(&[ix], Some(1));
    assert_eq!(r.down.len(), 2);
    // Two failures at once.
    let a = impact(&s, &["vol", "app"]);
    assert_eq!(a.down, ids(&["api", "app", "host", "vol"]));
}

#[test]
fn kinds_without_semantics_carry_no_impact_and_gone_relations_are_ignored() {
    let mut rels = vec![
        relation("a", "b", "allows_traffic_from"),
        relation("c", "b", "depends_on"),
    ];
    rels[1].status = Status::Gone;
    let s = Snapshot::build(vec![resource("a"), resource("b"), resource("c")], rels, 0);
    let ix = s.lookup("b").unwrap();
    let r = s.impact(&[ix], None);
    assert_eq!(r.down.len(), 1);
    assert!(r.degraded.is_empty());
}

#[test]
fn dependencies_are_everything_whose_failure_reaches_a_resource() {
    let s = graph(&[
        ("api", "depends_on", "db"),
        ("db", "runs_on", "h1"),
        ("vol", "attached_to", "h1"),
        ("i1", "instance_of", "api"),
        ("other", "depends_on", "api"),
    ]);
    let ix = s.lookup("api").unwrap();
    let deps = s.dependencies(ix, None);
    let names: HashSet<&str> = deps
        .iter()
        .map(|d| s.resource(d.node).id.as_str())
        .collect();
    assert_eq!(names, HashSet::from(["db", "h1", "vol", "i1"]));
    let vol = deps
        .iter()
        .find(|d| s.resource(d.node).id == "vol")
        .unwrap();
    assert_eq!(vol.depth, 3);
    assert_eq!(s.relation(vol.path[0]).to, "db");
    assert_eq!(s.dependencies(ix, Some(1)).len(), 2);
}

// --- Property: the answer matches a naive fixed point and plain reachability.

const KINDS: [&str; 7] = [
    "depends_on",
    "runs_on",
    "contained_in",
    "attached_to",
    "instance_of",
    "routes_to",
    "peers_with",
];

/// Relations (from, kind index, to) among `n` resources from raw proptest
/// triples: no self-relations, no repeats.
fn random_relations(n: usize, raw: Vec<(usize, usize, usize)>) -> Vec<(usize, usize, usize)> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .map(|(f, k, t)| (f % n, k, t % n))
        .filter(|(f, k, t)| f != t && seen.insert((*f, *k, *t)))
        .collect()
}

/// The reference model's impact edges, from the core table of relation
/// kinds: (the resource whose failure spreads, the one it reaches,
/// aggregate?).
fn impact_edges(rels: &[(usize, usize, usize)]) -> Vec<(usize, usize, bool)> {
    rels.iter()
        .filter_map(|&(f, k, t)| match KINDS[k] {
            "depends_on" | "runs_on" | "contained_in" => Some((t, f, false)),
            "attached_to" => Some((f, t, false)),
            "instance_of" => Some((f, t, true)),
            "routes_to" => Some((t, f, true)),
            _ => None,
        })
        .collect()
}

/// The reference model's impact edges grouped by the resource they reach:
/// for each, (the resource whose failure spreads to it, aggregate?).
fn inputs(n: usize, rels: &[(usize, usize, usize)]) -> Vec<Vec<(usize, bool)>> {
    let mut ins = vec![Vec::new(); n];
    for (s, d, agg) in impact_edges(rels) {
        ins[d].push((s, agg));
    }
    ins
}

/// The reference model: DOWN as the least fixed point, found by applying
/// the rules until nothing changes, and plain reachability.
fn naive(
    n: usize,
    rels: &[(usize, usize, usize)],
    failed: &[usize],
) -> (BTreeSet<usize>, BTreeSet<usize>) {
    let ins = inputs(n, rels);
    let mut down = vec![false; n];
    for &f in failed {
        down[f] = true;
    }
    loop {
        let mut changed = false;
        for v in 0..n {
            if down[v] {
                continue;
            }
            let hard_down = ins[v].iter().any(|&(s, agg)| !agg && down[s]);
            let mut aggs = ins[v].iter().filter(|i| i.1).peekable();
            let agg_down = aggs.peek().is_some() && aggs.all(|&(s, _)| down[s]);
            if hard_down || agg_down {
                down[v] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut reach = vec![false; n];
    for &f in failed {
        reach[f] = true;
    }
    loop {
        let mut changed = false;
        for v in 0..n {
            if !reach[v] && ins[v].iter().any(|&(s, _)| reach[s]) {
                reach[v] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let set = |b: Vec<bool>| (0..n).filter(|&v| b[v]).collect();
    (set(down), set(reach))
}

/// Reference depths: a DOWN resource's is the length of the shortest
/// chain that takes it down (one more than its nearest down hard input, or
/// than the last of its aggregate inputs to go down, whichever comes first);
/// any reached resource's reach depth is its plain breadth-first distance.
/// Computed by relaxing to a fixed point, independently of the traversal.
fn naive_depths(
    n: usize,
    rels: &[(usize, usize, usize)],
    failed: &[usize],
    down: &BTreeSet<usize>,
) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
    let ins = inputs(n, rels);
    let mut dd: Vec<Option<u32>> = vec![None; n];
    let mut rd: Vec<Option<u32>> = vec![None; n];
    for &f in failed {
        dd[f] = Some(0);
        rd[f] = Some(0);
    }
    let best = |a: Option<u32>, b: Option<u32>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    };
    loop {
        let mut changed = false;
        for v in 0..n {
            if dd[v] == Some(0) && rd[v] == Some(0) {
                continue; // failed
            }
            let mut r = None;
            for &(s, _) in &ins[v] {
                r = best(r, rd[s].map(|x| x + 1));
            }
            let mut want = None;
            if down.contains(&v) {
                for &(s, agg) in &ins[v] {
                    if !agg && down.contains(&s) {
                        want = best(want, dd[s].map(|x| x + 1));
                    }
                }
                let aggs: Vec<usize> = ins[v].iter().filter(|i| i.1).map(|i| i.0).collect();
                if !aggs.is_empty() && aggs.iter().all(|i| dd[*i].is_some()) {
                    let last = aggs.iter().map(|i| dd[*i].unwrap()).max().unwrap();
                    want = best(want, Some(last + 1));
                }
            }
            if want.is_some() && dd[v].is_none_or(|x| want.unwrap() < x) {
                dd[v] = want;
                changed = true;
            }
            if r.is_some() && rd[v].is_none_or(|x| r.unwrap() < x) {
                rd[v] = r;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    (dd, rd)
}

/// Checks an impact answer against the reference model: the model numbers
/// resources `0..n`, `node[i]` is model resource `i` in the snapshot, and
/// `failed` is in model numbers. DOWN is the least fixed point, DOWN ∪
/// DEGRADED is reachability, depths are the shortest, aggregates count
/// what is left, lists are by depth then id, paths are chains of relations
/// from a failed resource (through DOWN resources for a DOWN one), and
/// `max_depth` (`cut`) trims the answer, never the computation.
fn check_answer(
    s: &Snapshot,
    node: &[u32],
    rels: &[(usize, usize, usize)],
    failed: &[usize],
    r: &infragraph::graph::ImpactResult,
    cut: u32,
) -> Result<(), TestCaseError> {
    let n = node.len();
    let model: BTreeMap<u32, usize> = node.iter().enumerate().map(|(i, &x)| (x, i)).collect();
    let me = |x: u32| -> usize { model[&x] };
    let (down, reach) = naive(n, rels, failed);
    let got_down: BTreeSet<usize> = r.down.iter().map(|i| me(i.node)).collect();
    let got_degraded: BTreeSet<usize> = r.degraded.iter().map(|i| me(i.node)).collect();
    prop_assert_eq!(&got_down, &down);
    let all: BTreeSet<usize> = got_down.union(&got_degraded).copied().collect();
    prop_assert_eq!(&all, &reach);
    prop_assert!(got_down.is_disjoint(&got_degraded));
    // Depths are the shortest ones: through down resources for DOWN,
    // along any impact edge for DEGRADED.
    let (down_depth, reach_depth) = naive_depths(n, rels, failed, &down);
    for item in &r.down {
        let id = &s.resource(item.node).id;
        prop_assert_eq!(
            Some(item.depth),
            down_depth[me(item.node)],
            "down depth of {}",
            id
        );
    }
    for item in &r.degraded {
        let id = &s.resource(item.node).id;
        prop_assert_eq!(
            Some(item.depth),
            reach_depth[me(item.node)],
            "reach depth of {}",
            id
        );
    }
    // Aggregates: how many of their instances/targets are left, counted
    // from the reference's down set.
    for item in r.down.iter().chain(r.degraded.iter()) {
        let m = me(item.node);
        let inputs: Vec<usize> = rels
            .iter()
            .filter_map(|&(f, k, t)| match KINDS[k] {
                "instance_of" if t == m => Some(f),
                "routes_to" if f == m => Some(t),
                _ => None,
            })
            .collect();
        let want = (!inputs.is_empty()).then(|| {
            let left = inputs.iter().filter(|i| !down.contains(i)).count() as u32;
            (left, inputs.len() as u32)
        });
        prop_assert_eq!(
            item.aggregate,
            want,
            "aggregate of {}",
            s.resource(item.node).id
        );
    }
    // Both lists by depth, then id.
    for list in [&r.down, &r.degraded] {
        let keys: Vec<(u32, u32)> = list.iter().map(|i| (i.depth, i.node)).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        prop_assert_eq!(keys, sorted);
    }
    // Every path is a chain of relations from a failed resource to the
    // resource; a DOWN resource's path runs through DOWN resources only.
    let id = |m: usize| s.resource(node[m]).id.clone();
    let failed_ids: BTreeSet<String> = failed.iter().map(|&f| id(f)).collect();
    let down_ids: BTreeSet<String> = got_down.iter().map(|&d| id(d)).collect();
    for item in r.down.iter().chain(r.degraded.iter()) {
        let path = r.path(s, item);
        prop_assert_eq!(path.len() as u32, item.depth);
        let me = s.resource(item.node).id.clone();
        if path.is_empty() {
            prop_assert!(failed_ids.contains(&me));
            continue;
        }
        let first = s.relation(path[0]);
        let mut at = if failed_ids.contains(&first.from) {
            first.from.clone()
        } else {
            first.to.clone()
        };
        prop_assert!(failed_ids.contains(&at), "path starts at a failed resource");
        for &p in &path {
            let rel = s.relation(p);
            let next = if rel.from == at {
                rel.to.clone()
            } else if rel.to == at {
                rel.from.clone()
            } else {
                return Err(TestCaseError::fail(format!("path is not a chain at {at}")));
            };
            if item.status == ImpactStatus::Down {
                prop_assert!(
                    down_ids.contains(&next),
                    "DOWN path passes through {next}, not down"
                );
            }
            at = next;
        }
        prop_assert_eq!(at, me);
    }
    // max_depth trims the answer, never the computation: the same items
    // up to that depth.
    let failed_ix: Vec<u32> = failed.iter().map(|&f| node[f]).collect();
    let trimmed = s.impact(&failed_ix, Some(cut));
    let keep = |l: &[infragraph::graph::Impacted]| -> Vec<infragraph::graph::Impacted> {
        l.iter().filter(|i| i.depth <= cut).copied().collect()
    };
    prop_assert_eq!(&trimmed.down, &keep(&r.down));
    prop_assert_eq!(&trimmed.degraded, &keep(&r.degraded));
    Ok(())
}

/// `spofs` over the whole graph as (resource, critical ones it takes down,
/// how many go down), in its order.
fn spofs_as_tuples(
    s: &Snapshot,
    critical: &[infragraph::model::LabelSelector],
) -> Vec<(u32, Vec<u32>, usize)> {
    // A graph with nothing critical has no SPOFs; `spofs` says so as an
    // error (a typo must not read as "none").
    let found = match s.spofs(None, critical) {
        Err(infragraph::graph::SpofError::NoMatch(_)) => Vec::new(),
        other => other.unwrap(),
    };
    found
        .into_iter()
        .map(|f| (f.node, f.critical_down, f.down_count))
        .collect()
}

/// The SPOF answer computed the slow way, one impact per resource: each
/// resource whose failure alone takes a critical one down, with those it
/// takes down (sorted) and how many go down, ordered as `spofs` orders them.
fn spofs_by_impact(
    s: &Snapshot,
    critical: &infragraph::model::LabelSelector,
) -> Vec<(u32, Vec<u32>, usize)> {
    let mut want = Vec::new();
    for x in 0..s.resources.len() as u32 {
        let r = s.impact(&[x], None);
        let mut crit: Vec<u32> = r
            .down
            .iter()
            .map(|d| d.node)
            .filter(|&d| d != x && critical.matches(&s.resource(d).labels))
            .collect();
        crit.sort_unstable();
        if !crit.is_empty() {
            want.push((x, crit, r.down.len()));
        }
    }
    want.sort_by(|a, b| {
        b.1.len()
            .cmp(&a.1.len())
            .then(b.2.cmp(&a.2))
            .then(a.0.cmp(&b.0))
    });
    want
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn down_is_the_least_fixed_point_and_down_plus_degraded_is_reachability(
        n in 2usize..14,
        raw in proptest::collection::vec((0usize..14, 0usize..7, 0usize..14), 0..40),
        failed_raw in proptest::collection::vec(0usize..14, 1..4),
        // Unrelated resources, whose ids sort among the related ones
        // (`r03` < `r03z017` < `r04`), so that related resources fall in
        // several 64-node words and on both sides of a split. With many,
        // the answer is a small share of the estate and takes the sparse
        // path (BFS order, sorted), with few the dense one (id-order scan,
        // bucketed by depth).
        padding in 0usize..300,
        // The down pass beside the reach pass on a second core, and the
        // upper id range collected there (what large failures do), or all
        // on one; and, when beside, whether the system refuses the thread.
        beside in proptest::bool::ANY,
        refused in proptest::bool::ANY,
    ) {
        let rels = random_relations(n, raw);
        let failed: Vec<usize> = failed_raw.into_iter().map(|f| f % n).collect();
        let name = |i: usize| format!("r{i:02}");
        let mut s = Snapshot::build(
            (0..n)
                .map(|i| resource(&name(i)))
                .chain((0..padding).map(|j| resource(&format!("r{:02}z{j:03}", j % n))))
                .collect(),
            rels.iter().map(|&(f, k, t)| relation(&name(f), &name(t), KINDS[k])).collect(),
            0,
        );
        if beside {
            s.set_parallel_from(0);
            s.assume_two_cores(true);
            s.refuse_threads(refused);
        }
        let node: Vec<u32> = (0..n).map(|i| s.lookup(&name(i)).unwrap()).collect();
        let ix: Vec<u32> = failed.iter().map(|&f| node[f]).collect();
        let r = s.impact(&ix, None);
        check_answer(&s, &node, &rels, &failed, &r, 1 + (padding % 3) as u32)?;
    }

    /// The SPOF search (its own node order, candidates pruned to ancestors
    /// of critical resources) lists exactly what one impact per resource
    /// finds, with the same critical lists and down counts, on random graphs
    /// with cycles nothing else reaches.
    #[test]
    fn spofs_are_exactly_one_impact_per_resource(
        n in 2usize..14,
        raw in proptest::collection::vec((0usize..14, 0usize..7, 0usize..14), 0..40),
        critical_mask in 0u32..(1 << 14),
        // Gone resources keep their labels and their relations in the
        // store, but are in no impact edge: neither SPOFs nor taken down.
        gone_mask in 0u32..(1 << 14),
        // Unrelated resources among the related ones (see above), some of
        // them critical: the search's node numbers and its ranks of
        // aggregate nodes then span several 64-node words.
        padding in 0usize..300,
    ) {
        use infragraph::model::LabelSelector;
        let rels = random_relations(n, raw);
        let name = |i: usize| format!("r{i:02}");
        let s = Snapshot::build(
            (0..n)
                .map(|i| {
                    let tier = if critical_mask & (1 << i) != 0 { "1" } else { "2" };
                    let mut r = labelled(&name(i), "thing", &[("tier", tier)]);
                    if gone_mask & (1 << i) != 0 && i % 3 == 0 {
                        r.status = Status::Gone;
                    }
                    r
                })
                .chain((0..padding).map(|j| {
                    let tier = if j % 5 == 0 { "1" } else { "3" };
                    labelled(&format!("r{:02}z{j:03}", j % n), "thing", &[("tier", tier)])
                }))
                .collect(),
            rels.iter().map(|&(f, k, t)| relation(&name(f), &name(t), KINDS[k])).collect(),
            0,
        );
        let critical = [LabelSelector::parse("tier=1").unwrap()];
        prop_assert_eq!(spofs_as_tuples(&s, &critical), spofs_by_impact(&s, &critical[0]));
    }
}

fn labelled(id: &str, kind: &str, labels: &[(&str, &str)]) -> Resource {
    let mut r = resource(id);
    r.kind = kind.into();
    r.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    r
}

fn build(res: Vec<Resource>, rels: &[(&str, &str, &str)]) -> Snapshot {
    Snapshot::build(
        res,
        rels.iter().map(|(f, k, t)| relation(f, t, k)).collect(),
        0,
    )
}

/// The generated estate (small) as a snapshot, with the resources for
/// which `gone(i)` holds (the i-th generated) gone, their labels and
/// relations kept.
fn generated_snapshot(
    estate: &infragraph::generate::Estate,
    gone: impl Fn(usize) -> bool,
) -> Snapshot {
    let res: Vec<Resource> = estate
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut x = labelled(&r.id, &r.kind, &[]);
            x.labels = r.labels.clone();
            if gone(i) {
                x.status = Status::Gone;
            }
            x
        })
        .collect();
    let rels: Vec<Relation> = estate
        .relations
        .iter()
        .map(|r| relation(&r.from, &r.to, &r.kind))
        .collect();
    Snapshot::build(res, rels, 0)
}

#[test]
fn selectors_pick_kinds_labels_and_everything_inside_a_container() {
    use infragraph::graph::Selector;
    let s = build(
        vec![
            labelled("zone:a", "availability_zone", &[]),
            labelled("zone:b", "availability_zone", &[]),
            labelled("subnet:a1", "subnet", &[]),
            labelled("h1", "host", &[("rack", "r12")]),
            labelled("h2", "host", &[("rack", "r7")]),
            labelled("h3", "host", &[("rack", "r12")]),
            labelled("app", "service", &[]),
        ],
        &[
            ("subnet:a1", "contained_in", "zone:a"),
            ("h1", "contained_in", "subnet:a1"),
            ("h2", "contained_in", "subnet:a1"),
            ("h3", "contained_in", "zone:b"),
            ("app", "runs_on", "h3"),
        ],
    );
    let names = |v: Vec<u32>| {
        v.into_iter()
            .map(|i| s.resource(i).id.clone())
            .collect::<Vec<_>>()
    };
    let sel = Selector::parse("contained_in=zone:a").unwrap();
    assert_eq!(
        names(s.select(&sel).unwrap()),
        vec!["h1", "h2", "subnet:a1"]
    );
    let sel = Selector::parse("kind=host,rack=r12").unwrap();
    assert_eq!(names(s.select(&sel).unwrap()), vec!["h1", "h3"]);
    let sel = Selector::parse("in=zone:a,label:rack!=r12,kind=host").unwrap();
    assert_eq!(names(s.select(&sel).unwrap()), vec!["h2"]);
    assert!(
        s.select(&Selector::parse("contained_in=zone:nope").unwrap())
            .unwrap_err()
            .contains("zone:nope")
    );
    assert!(Selector::parse("").is_err());
    // Reserved words take `=` once: anything else is an error naming the
    // term, never a label condition that matches everything.
    for (bad, says) in [
        ("kind!=host", "'kind!=host': kind takes '=' only"),
        ("in!=zone:a", "'in!=zone:a': contained_in takes '=' only"),
        ("kind", "'kind': kind needs a value"),
        (
            "kind=host,kind=service",
            "kind given twice ('host' and 'service')",
        ),
        ("in=zone:a,contained_in=zone:b", "contained_in given twice"),
    ] {
        let err = Selector::parse(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let sel = Selector::parse(" kind = host ,kind=host").unwrap();
    assert_eq!(names(s.select(&sel).unwrap()), vec!["h1", "h2", "h3"]);
    assert_eq!(sel.to_string(), "kind=host");
    // A label that happens to be called `kind`, by the escape.
    let sel = Selector::parse("label:kind!=x,rack=r12").unwrap();
    assert_eq!(sel.labels.len(), 2);
    assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
    // A zone outage as a selector: the same DOWN set as failing the zone, minus the zone.
    let chosen = s
        .select(&Selector::parse("contained_in=zone:b").unwrap())
        .unwrap();
    let a = s.impact(&chosen, None);
    let down: Vec<String> = a
        .down
        .iter()
        .map(|i| s.resource(i.node).id.clone())
        .collect();
    assert_eq!(down, vec!["h3", "app"]);
}

#[test]
fn spofs_are_resources_whose_failure_alone_takes_down_a_critical_one() {
    use infragraph::graph::Selector;
    use infragraph::model::LabelSelector;
    let s = build(
        vec![
            labelled("svc", "service", &[("tier", "1")]),
            labelled("i1", "service_instance", &[]),
            labelled("i2", "service_instance", &[]),
            labelled("h1", "host", &[]),
            labelled("h2", "host", &[]),
            labelled("h3", "host", &[]),
            labelled("db", "database", &[("tier", "2")]),
            labelled("batch", "service", &[("tier", "3")]),
        ],
        &[
            ("i1", "instance_of", "svc"),
            ("i2", "instance_of", "svc"),
            ("i1", "runs_on", "h2"),
            ("i2", "runs_on", "h3"),
            ("svc", "depends_on", "db"),
            ("db", "runs_on", "h1"),
            ("batch", "depends_on", "svc"),
        ],
    );
    let tier1 = [LabelSelector::parse("tier=1").unwrap()];
    let found = s.spofs(None, &tier1).unwrap();
    let names: Vec<(&str, Vec<&str>)> = found
        .iter()
        .map(|f| {
            (
                s.resource(f.node).id.as_str(),
                f.critical_down
                    .iter()
                    .map(|&c| s.resource(c).id.as_str())
                    .collect(),
            )
        })
        .collect();
    // h1 takes db and svc (and batch) down: the most down first; redundant
    // instances and their hosts are not single points of failure.
    assert_eq!(names, vec![("h1", vec!["svc"]), ("db", vec!["svc"])]);
    assert_eq!(found[0].down_count, 4);
    // Scope: only hosts are tried.
    let hosts = Selector::parse("kind=host").unwrap();
    let found = s.spofs(Some(&hosts), &tier1).unwrap();
    assert_eq!(found.len(), 1);
    // Another notion of critical.
    let tier2 = [LabelSelector::parse("tier=2").unwrap()];
    let found = s.spofs(None, &tier2).unwrap();
    assert_eq!(
        found
            .iter()
            .map(|f| s.resource(f.node).id.as_str())
            .collect::<Vec<_>>(),
        vec!["h1"]
    );
    // A typo in the critical set or the scope is an error, not "no SPOFs".
    use infragraph::graph::SpofError;
    let tear = [LabelSelector::parse("tear=1").unwrap()];
    assert!(matches!(
        s.spofs(None, &tear),
        Err(SpofError::NoMatch(m)) if m.contains("'tear=1'")
    ));
    let hots = Selector::parse("kind=hots").unwrap();
    assert!(matches!(
        s.spofs(Some(&hots), &tier1),
        Err(SpofError::NoMatch(m)) if m.contains("'kind=hots'")
    ));
    let nowhere = Selector::parse("in=zone:nope").unwrap();
    assert!(matches!(
        s.spofs(Some(&nowhere), &tier1),
        Err(SpofError::UnknownResource(m)) if m.contains("zone:nope")
    ));
}

/// Most SPOF candidates (hosts, instances) are settled from their own row,
/// without a down pass: a host takes down its instances and volumes and
/// nothing more, unless those instances are all a service has, or all a
/// load balancer's targets, or one of them has a hard edge onward. Each of
/// those boundaries, next to a host that stays inside them.
/// `spofs` by id, in id order: each SPOF, the critical resources it takes
/// down (sorted), and how many go down.
fn spofs_by_id(
    s: &Snapshot,
    critical: &[infragraph::model::LabelSelector],
) -> Vec<(String, Vec<String>, usize)> {
    let mut found: Vec<(String, Vec<String>, usize)> = s
        .spofs(None, critical)
        .unwrap()
        .iter()
        .map(|f| {
            let mut crit: Vec<String> = f
                .critical_down
                .iter()
                .map(|&c| s.resource(c).id.clone())
                .collect();
            crit.sort();
            (s.resource(f.node).id.clone(), crit, f.down_count)
        })
        .collect();
    found.sort();
    found
}

/// One expected SPOF, as `spofs_by_id` gives it.
fn want(id: &str, crit: &[&str], down: usize) -> (String, Vec<String>, usize) {
    (
        id.to_string(),
        crit.iter().map(|c| c.to_string()).collect(),
        down,
    )
}

#[test]
fn spofs_settled_from_a_hosts_row_are_exact_at_each_boundary() {
    use infragraph::model::LabelSelector;
    let g: Vec<String> = (0..65).map(|i| format!("g{i:02}")).collect();
    let s = build(
        vec![
            // h1 runs both instances of svc: svc goes down with it.
            labelled("svc", "service", &[("tier", "1")]),
            labelled("a1", "service_instance", &[]),
            labelled("a2", "service_instance", &[]),
            labelled("h1", "host", &[]),
            // h2 and h3 run one of two instances each: nothing beyond, but
            // h2 also runs x1, critical itself and on h2's own row.
            labelled("pay", "service", &[("tier", "1")]),
            labelled("b1", "service_instance", &[]),
            labelled("b2", "service_instance", &[]),
            labelled("h2", "host", &[]),
            labelled("h3", "host", &[]),
            labelled("x1", "service_instance", &[("tier", "1")]),
            // A load balancer whose two targets both run on h4.
            labelled("lb", "load_balancer", &[("tier", "1")]),
            labelled("c1", "service_instance", &[]),
            labelled("c2", "service_instance", &[]),
            labelled("h4", "host", &[]),
            // h5's instance has a hard dependent onward: a pass is needed.
            labelled("d1", "service_instance", &[]),
            labelled("h5", "host", &[]),
            labelled("job", "service", &[("tier", "1")]),
            // e1 is solo's only instance: its own aggregate edge counts.
            labelled("e1", "service_instance", &[]),
            labelled("solo", "service", &[("tier", "1")]),
            // h6 reaches the critical f1 through two relations (one target).
            labelled("f1", "service_instance", &[("tier", "1")]),
            labelled("h6", "host", &[]),
        ]
        .into_iter()
        // h7 runs 65 instances (more than the row check reads), g00 critical.
        .chain(std::iter::once(labelled("h7", "host", &[])))
        .chain(g.iter().enumerate().map(|(i, g)| {
            let tier = if i == 0 { "1" } else { "3" };
            labelled(g, "service_instance", &[("tier", tier)])
        }))
        .collect(),
        &[
            ("a1", "instance_of", "svc"),
            ("a2", "instance_of", "svc"),
            ("a1", "runs_on", "h1"),
            ("a2", "runs_on", "h1"),
            ("b1", "instance_of", "pay"),
            ("b2", "instance_of", "pay"),
            ("b1", "runs_on", "h2"),
            ("b2", "runs_on", "h3"),
            ("x1", "runs_on", "h2"),
            ("lb", "routes_to", "c1"),
            ("lb", "routes_to", "c2"),
            ("c1", "runs_on", "h4"),
            ("c2", "runs_on", "h4"),
            ("d1", "runs_on", "h5"),
            ("job", "depends_on", "d1"),
            ("e1", "instance_of", "solo"),
            ("f1", "runs_on", "h6"),
            ("f1", "contained_in", "h6"),
        ]
        .into_iter()
        .chain(g.iter().map(|g| (g.as_str(), "runs_on", "h7")))
        .collect::<Vec<_>>(),
    );
    let tier1 = [LabelSelector::parse("tier=1").unwrap()];
    assert_eq!(
        spofs_by_id(&s, &tier1),
        vec![
            want("d1", &["job"], 2),
            want("e1", &["solo"], 2),
            want("h1", &["svc"], 4),
            want("h2", &["x1"], 3),
            want("h4", &["lb"], 4),
            want("h5", &["job"], 3),
            want("h6", &["f1"], 2),
            want("h7", &["g00"], 66),
        ]
    );
    // The same answer as one impact per resource.
    assert_eq!(spofs_as_tuples(&s, &tier1), spofs_by_impact(&s, &tier1[0]));
}

/// Resources with the same impact edges are tried together, one pass for
/// the group where that is exact. The groups: two shared services every
/// instance needs (one pass answers for both); a pair where the first
/// tried takes the second down; a pair where the first tried is taken
/// down again by its own cascade (those two must each get their own; so
/// must a-root and k, whose only edge is to m). `edge` is reached by one
/// edge and leads nowhere: the pass counts it without marking it.
#[test]
fn spofs_of_resources_with_the_same_dependants_share_a_pass_only_when_exact() {
    use infragraph::model::LabelSelector;
    let s = build(
        vec![
            // dns and auth: both instances of app need both.
            labelled("dns", "service", &[]),
            labelled("auth", "service", &[]),
            labelled("app", "service", &[("tier", "1")]),
            labelled("i1", "service_instance", &[]),
            labelled("i2", "service_instance", &[]),
            labelled("edge", "service", &[("tier", "1")]),
            // x1 and y1 both take down t1, which takes down y1.
            labelled("x1", "service", &[]),
            labelled("y1", "service", &[]),
            labelled("t1", "service", &[("tier", "1")]),
            // m and z-q both take down k, which takes down m; a-root comes
            // first in the graph's order and leads to m, so m is tried
            // first.
            labelled("a-root", "host", &[]),
            labelled("m", "service", &[("tier", "1")]),
            labelled("k", "service", &[("tier", "1")]),
            labelled("z-q", "service", &[]),
        ],
        &[
            ("i1", "instance_of", "app"),
            ("i2", "instance_of", "app"),
            ("i1", "depends_on", "dns"),
            ("i1", "depends_on", "auth"),
            ("i2", "depends_on", "dns"),
            ("i2", "depends_on", "auth"),
            ("edge", "depends_on", "app"),
            ("t1", "depends_on", "x1"),
            ("t1", "depends_on", "y1"),
            ("y1", "depends_on", "t1"),
            ("m", "runs_on", "a-root"),
            ("k", "depends_on", "m"),
            ("k", "depends_on", "z-q"),
            ("m", "depends_on", "k"),
        ],
    );
    let tier1 = [LabelSelector::parse("tier=1").unwrap()];
    assert_eq!(
        spofs_by_id(&s, &tier1),
        vec![
            want("a-root", &["k", "m"], 3),
            want("app", &["edge"], 2),
            want("auth", &["app", "edge"], 5),
            want("dns", &["app", "edge"], 5),
            want("k", &["m"], 2),
            want("m", &["k"], 2),
            want("x1", &["t1"], 3),
            want("y1", &["t1"], 2),
            want("z-q", &["k", "m"], 3),
        ]
    );
    assert_eq!(spofs_as_tuples(&s, &tier1), spofs_by_impact(&s, &tier1[0]));
    // And the shortcuts are taken. All 13 are candidates (critical, or
    // leading to one). From their rows: i1 and i2 (each one of app's two
    // instances), app (it takes down edge, which takes down nothing) and
    // edge. Passes: dns, whose answer is auth's as well; x1 and y1; m and
    // z-q; t1, a-root and k.
    let (_, work) = s.spofs_counted(None, &tier1).unwrap();
    assert_eq!(
        work,
        infragraph::graph::SpofWork {
            candidates: 13,
            from_rows: 4,
            passes: 8,
            shared: 1
        }
    );
}

#[test]
fn selectors_on_the_generated_estate_pick_what_a_scan_of_every_record_picks() {
    use infragraph::graph::Selector;
    // Selectors read lists by kind and label value; a scan of every
    // record is the reference. Every tenth resource is gone: gone
    // resources match nothing, whatever their labels.
    let estate = infragraph::generate::generate(infragraph::generate::Size::Small, 7);
    let s = generated_snapshot(&estate, |i| i % 10 == 3);
    let scan = |sel: &Selector| -> Vec<u32> {
        (0..s.resources.len() as u32)
            .filter(|&ix| {
                let r = s.resource(ix);
                r.status == Status::Present
                    && sel.kind.as_ref().is_none_or(|k| &r.kind == k)
                    && sel.labels.iter().all(|l| l.matches(&r.labels))
            })
            .collect()
    };
    let rack = s
        .resources
        .iter()
        .find_map(|r| r.labels.get("rack").cloned())
        .expect("generated hosts have racks");
    let cases = [
        "kind=host".to_string(),
        "kind=service".into(),
        "kind=nothing-of-this-kind".into(),
        "tier=1".into(),
        "tier!=1".into(),
        "tier".into(),
        "kind=service,tier=1,env=prod".into(),
        "kind=service,tier!=3,team".into(),
        format!("kind=host,rack={rack}"),
        format!("rack!={rack}"),
        "nosuchlabel".into(),
        "nosuchlabel!=x".into(),
        "tier=no-such-value".into(),
    ];
    for text in &cases {
        let sel = Selector::parse(text).unwrap();
        let want = scan(&sel);
        assert_eq!(s.select(&sel).unwrap(), want, "{text}");
        // The same selector twice: the lists are built once and kept.
        assert_eq!(s.select(&sel).unwrap(), want, "{text}, again");
    }
    // Non-trivial answers among them, and gone resources that a
    // label-blind reading would have picked.
    let all = scan(&Selector::parse("tier").unwrap());
    assert!(all.len() > 50, "{}", all.len());
    assert!(
        s.resources
            .iter()
            .any(|r| r.status == Status::Gone && r.labels.contains_key("tier"))
    );
    // Inside a container as well: the walk and the lists together, against
    // a walk of the estate's own contained_in relations between present
    // resources (a gone subnet no longer holds its hosts).
    let present = |id: &str| s.resource(s.lookup(id).unwrap()).status == Status::Present;
    let mut inside: HashSet<String> = HashSet::from(["zone:r0a".to_string()]);
    loop {
        let before = inside.len();
        for r in &estate.relations {
            if r.kind == "contained_in" && inside.contains(&r.to) && present(&r.from) {
                inside.insert(r.from.clone());
            }
        }
        if inside.len() == before {
            break;
        }
    }
    inside.remove("zone:r0a");
    let everything = scan(&Selector::parse("tier!=no-such-value").unwrap());
    assert_eq!(
        everything.len(),
        s.resources
            .iter()
            .filter(|r| r.status == Status::Present)
            .count()
    );
    for (text, kind) in [
        ("contained_in=zone:r0a,kind=host", Some("host")),
        ("contained_in=zone:r0a", None),
    ] {
        let want: Vec<u32> = everything
            .iter()
            .copied()
            .filter(|&ix| {
                let r = s.resource(ix);
                inside.contains(&r.id) && kind.is_none_or(|k| r.kind == k)
            })
            .collect();
        let got = s.select(&Selector::parse(text).unwrap()).unwrap();
        assert!(got.len() > 10, "{text}: {}", got.len());
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn spofs_agree_with_one_impact_per_resource() {
    use infragraph::model::LabelSelector;
    // A generated estate: the optimized search must find exactly what the
    // naive one does.
    // Every twentieth resource is gone, its labels and relations kept.
    let estate = infragraph::generate::generate(infragraph::generate::Size::Small, 3);
    let s = generated_snapshot(&estate, |i| i % 20 == 7);
    let critical = [LabelSelector::parse("tier=1").unwrap()];
    // Hundreds of candidates: several blocks, shared by the worker threads.
    assert!(s.resources.len() > 600, "{}", s.resources.len());
    let fast = spofs_as_tuples(&s, &critical);
    let naive = spofs_by_impact(&s, &critical[0]);
    assert!(naive.len() > 10, "{}", naive.len());
    assert_eq!(fast, naive);
    // Most candidates are settled from their own row, and the shared
    // platform services (DNS, auth, logging…) by one pass among them.
    let (_, work) = s.spofs_counted(None, &critical).unwrap();
    assert!(work.shared >= 4, "{work:?}");
    assert!(work.from_rows > work.candidates / 2, "{work:?}");
    assert_eq!(
        work.candidates,
        work.from_rows + work.passes + work.shared,
        "{work:?}"
    );
    // Scoped: exactly the unscoped answer's SPOFs that the scope selects.
    for text in ["contained_in=zone:r0a", "kind=host", "kind=service,tier!=1"] {
        let scope = infragraph::graph::Selector::parse(text).unwrap();
        let chosen: HashSet<u32> = s.select(&scope).unwrap().into_iter().collect();
        let scoped: Vec<(u32, Vec<u32>, usize)> = s
            .spofs(Some(&scope), &critical)
            .unwrap()
            .into_iter()
            .map(|f| (f.node, f.critical_down, f.down_count))
            .collect();
        let want: Vec<_> = naive
            .iter()
            .filter(|f| chosen.contains(&f.0))
            .cloned()
            .collect();
        assert!(!want.is_empty(), "{text}");
        assert!(want.len() < naive.len(), "{text}");
        assert_eq!(scoped, want, "{text}");
    }
}

#[test]
fn the_generated_estate_matches_the_reference_on_every_path() {
    // Every single failure on the generated estate, and random sets of
    // several, answered on one thread against the reference model; then
    // the same failures with the down pass and the upper id range on a
    // second core, and with that thread refused: the same lists, in the
    // same order, with the same paths. One thread answers them all in
    // turn, so each answer also checks that the last one left its scratch
    // space clean (small answers empty their bits member by member, large
    // ones wholesale).
    let estate = infragraph::generate::generate(infragraph::generate::Size::Small, 5);
    let build = || generated_snapshot(&estate, |_| false);
    let one = build();
    let mut two = build();
    two.set_parallel_from(0);
    two.assume_two_cores(true);
    let mut refused = build();
    refused.set_parallel_from(0);
    refused.assume_two_cores(true);
    refused.refuse_threads(true);
    // The model numbers resources as the snapshot does.
    let n = one.resources.len();
    let node: Vec<u32> = (0..n as u32).collect();
    let rels: Vec<(usize, usize, usize)> = estate
        .relations
        .iter()
        .map(|r| {
            let k = KINDS
                .iter()
                .position(|k| *k == r.kind)
                .expect("a kind the model knows");
            (
                one.lookup(&r.from).unwrap() as usize,
                k,
                one.lookup(&r.to).unwrap() as usize,
            )
        })
        .collect();
    let mut failures: Vec<Vec<usize>> = (0..n).map(|x| vec![x]).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    for _ in 0..100 {
        let k = 2 + next() % 4;
        failures.push((0..k).map(|_| next() % n).collect());
    }
    let (mut large, mut large_down) = (0, 0);
    for failed in &failures {
        let ix: Vec<u32> = failed.iter().map(|&f| f as u32).collect();
        let a = one.impact(&ix, None);
        if let Err(e) = check_answer(&one, &node, &rels, failed, &a, 2) {
            panic!("failing {failed:?}: {e}");
        }
        let trimmed = one.impact(&ix, Some(2));
        for (other, s) in [("beside", &two), ("refused", &refused)] {
            let b = s.impact(&ix, None);
            assert_eq!(a.down, b.down, "{other}: {failed:?}");
            assert_eq!(a.degraded, b.degraded, "{other}: {failed:?}");
            let c = s.impact(&ix, Some(2));
            assert_eq!(trimmed.down, c.down, "{other}, max depth 2: {failed:?}");
            assert_eq!(
                trimmed.degraded, c.degraded,
                "{other}, max depth 2: {failed:?}"
            );
            for (x, y) in a
                .down
                .iter()
                .zip(&b.down)
                .chain(a.degraded.iter().zip(&b.degraded))
            {
                assert_eq!(a.path(&one, x), b.path(s, y), "{other}: {failed:?}");
            }
        }
        // Large enough for the id-order scan, split between two ranges.
        large += usize::from((a.down.len() + a.degraded.len()) * 16 > n);
        // Large enough for the DOWN list's own id-order scan.
        large_down += usize::from(a.down.len() * 16 > n);
    }
    assert!(large > 20, "{large} large answers");
    assert!(large_down > 10, "{large_down} large DOWN lists");
}

#[test]
fn a_resource_number_past_the_graph_panics_and_leaves_the_thread_able_to_answer() {
    // A larger graph first, so that this thread's scratch is sized past
    // the small one's.
    let big = graph(&[
        ("a", "depends_on", "b"),
        ("c", "depends_on", "b"),
        ("d", "runs_on", "b"),
    ]);
    let small = graph(&[("x", "depends_on", "y")]);
    let before = impact(&big, &["b"]);
    let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        small.impact(&[3], None);
    }));
    let message = past.expect_err("a number past the graph panics");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("not in this graph of 2"), "{message}");
    // The same thread answers on both graphs as before.
    assert_eq!(impact(&big, &["b"]), before);
    let y = impact(&small, &["y"]);
    assert_eq!(y.down, ids(&["y", "x"]));
}

/// A loop is a loop whatever relations it passes through: two services
/// whose instances call each other, a load balancer in front of one, and a
/// host that needs the DNS service running on it. A service's instance on
/// a host the service does not need is in no loop.
#[test]
fn cycles_pass_through_instances_targets_and_hosts() {
    let s = graph(&[
        ("svc:a@1", "instance_of", "svc:a"),
        ("svc:a@1", "depends_on", "lb:b"),
        ("lb:b", "routes_to", "svc:b@1"),
        ("svc:b@1", "instance_of", "svc:b"),
        ("svc:b@1", "depends_on", "svc:a"),
        ("host:h", "depends_on", "svc:dns"),
        ("svc:dns@h", "instance_of", "svc:dns"),
        ("svc:dns@h", "runs_on", "host:h"),
        ("svc:c@1", "instance_of", "svc:c"),
        ("svc:c@1", "runs_on", "host:h"),
    ]);
    let found: Vec<(Vec<&str>, Vec<String>)> = s
        .cycles()
        .iter()
        .map(|(members, cycle)| {
            (
                members.iter().map(|&m| s.resource(m).id.as_str()).collect(),
                cycle
                    .iter()
                    .map(|&r| {
                        let r = s.relation(r);
                        format!("{} -[{}]-> {}", r.from, r.kind, r.to)
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            (
                vec!["lb:b", "svc:a", "svc:a@1", "svc:b@1"],
                vec![
                    "lb:b -[routes_to]-> svc:b@1".to_string(),
                    "svc:b@1 -[depends_on]-> svc:a".into(),
                    "svc:a@1 -[instance_of]-> svc:a".into(),
                    "svc:a@1 -[depends_on]-> lb:b".into(),
                ]
            ),
            (
                vec!["host:h", "svc:dns", "svc:dns@h"],
                vec![
                    "host:h -[depends_on]-> svc:dns".to_string(),
                    "svc:dns@h -[instance_of]-> svc:dns".into(),
                    "svc:dns@h -[runs_on]-> host:h".into(),
                ]
            ),
        ]
    );
}

#[test]
fn path_follows_relations_either_way_and_cycles_are_found() {
    let s = graph(&[
        ("a", "depends_on", "b"),
        ("c", "runs_on", "b"),
        ("c", "depends_on", "d"),
        ("d", "depends_on", "e"),
        ("e", "depends_on", "c"),
        ("x", "depends_on", "y"),
    ]);
    let l = |id: &str| s.lookup(id).unwrap();
    let p = s.path(l("a"), l("d")).unwrap();
    let hops: Vec<(String, String)> = p
        .iter()
        .map(|&r| (s.relation(r).from.clone(), s.relation(r).to.clone()))
        .collect();
    assert_eq!(
        hops,
        vec![
            ("a".into(), "b".into()),
            ("c".into(), "b".into()),
            ("c".into(), "d".into())
        ]
    );
    assert_eq!(s.path(l("a"), l("x")), None);
    assert_eq!(s.path(l("a"), l("a")), Some(vec![]));
    let cycles = s.cycles();
    assert_eq!(cycles.len(), 1);
    let members: Vec<&str> = cycles[0]
        .0
        .iter()
        .map(|&m| s.resource(m).id.as_str())
        .collect();
    assert_eq!(members, vec!["c", "d", "e"]);
    let cycle: Vec<(String, String)> = cycles[0]
        .1
        .iter()
        .map(|&r| (s.relation(r).from.clone(), s.relation(r).to.clone()))
        .collect();
    assert_eq!(
        cycle,
        vec![
            ("c".into(), "d".into()),
            ("d".into(), "e".into()),
            ("e".into(), "c".into())
        ]
    );
}
