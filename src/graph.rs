//! The in-memory graph: an immutable snapshot of the store (present and gone
//! resources, relations, provenance) with two petgraph graphs over the
//! present part: relations as stored, and impact edges in the direction a
//! failure travels. Impact and dependency analysis live here.
//!
//! This module does no IO. A new snapshot is built after each run and
//! swapped in; readers keep the one they hold.

use std::collections::{HashMap, VecDeque};

use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::model::{ImpactRule, Millis, Relation, Resource, Status};

/// Index of a resource in [`Snapshot::resources`].
pub type Ix = u32;
/// Index of a relation in [`Snapshot::relations`].
pub type RelIx = u32;

const NONE: u32 = u32::MAX;

/// An edge in the failure direction: a failure of its source reaches its target.
#[derive(Debug, Clone, Copy)]
pub struct ImpactEdge {
    /// The relation this edge comes from.
    pub rel: RelIx,
    /// True for instance_of / routes_to: the target is down only when all
    /// its aggregate inputs are.
    pub aggregate: bool,
}

/// An immutable view of the whole inventory.
pub struct Snapshot {
    /// Every resource, present and gone, sorted by id.
    pub resources: Vec<Resource>,
    /// Every relation, present and gone, sorted by (from, to, kind).
    pub relations: Vec<Relation>,
    index: HashMap<String, Ix>,
    /// Present relations between present resources, as stored (from → to).
    graph: DiGraph<(), RelIx, u32>,
    /// The same relations with failure semantics, in the failure direction.
    impact: DiGraph<(), ImpactEdge, u32>,
    /// Per resource: how many aggregate inputs (instances, targets) it has.
    agg_total: Vec<u32>,
    /// When the snapshot was built.
    pub built_at: Millis,
}

/// Whether an impacted resource is down or only degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImpactStatus {
    /// Failed, or forced down by the rules.
    Down,
    /// Reached by the failure but still up (lost some redundancy, or depends
    /// on something that did).
    Degraded,
}

/// One resource reached by a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Impacted {
    /// The resource.
    pub node: Ix,
    /// Down or degraded.
    pub status: ImpactStatus,
    /// Relations on the explaining path (0 for a failed resource).
    pub depth: u32,
    /// The explaining path: relations from a failed resource to this one.
    pub path: Vec<RelIx>,
    /// For resources with instances/targets: (still up, total).
    pub aggregate: Option<(u32, u32)>,
}

/// The answer to "what if these fail".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImpactResult {
    /// Down resources, by depth then id.
    pub down: Vec<Impacted>,
    /// Degraded resources, by depth then id.
    pub degraded: Vec<Impacted>,
}

/// Something a resource needs, transitively.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// The resource needed.
    pub node: Ix,
    /// Relations between the two.
    pub depth: u32,
    /// Relations from the asking resource to this one.
    pub path: Vec<RelIx>,
}

impl Snapshot {
    /// Builds a snapshot from everything the store holds.
    pub fn build(
        mut resources: Vec<Resource>,
        mut relations: Vec<Relation>,
        built_at: Millis,
    ) -> Snapshot {
        resources.sort_by(|a, b| a.id.cmp(&b.id));
        relations.sort_by(|a, b| (&a.from, &a.to, &a.kind).cmp(&(&b.from, &b.to, &b.kind)));
        let n = resources.len();
        let index: HashMap<String, Ix> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i as Ix))
            .collect();
        let present_rel = relations
            .iter()
            .filter(|r| r.status == Status::Present)
            .count();
        let mut graph = DiGraph::with_capacity(n, present_rel);
        let mut impact = DiGraph::with_capacity(n, present_rel);
        for _ in 0..n {
            graph.add_node(());
            impact.add_node(());
        }
        let mut agg_total = vec![0u32; n];
        for (ri, rel) in relations.iter().enumerate() {
            if rel.status != Status::Present {
                continue;
            }
            let (Some(&f), Some(&t)) = (index.get(&rel.from), index.get(&rel.to)) else {
                continue;
            };
            if resources[f as usize].status != Status::Present
                || resources[t as usize].status != Status::Present
            {
                continue;
            }
            let (fi, ti) = (NodeIndex::new(f as usize), NodeIndex::new(t as usize));
            graph.add_edge(fi, ti, ri as RelIx);
            if let Some(rule) = ImpactRule::of(&rel.kind) {
                let (src, dst) = if rule.to_reaches_from {
                    (ti, fi)
                } else {
                    (fi, ti)
                };
                impact.add_edge(
                    src,
                    dst,
                    ImpactEdge {
                        rel: ri as RelIx,
                        aggregate: rule.aggregate,
                    },
                );
                if rule.aggregate {
                    agg_total[dst.index()] += 1;
                }
            }
        }
        Snapshot {
            resources,
            relations,
            index,
            graph,
            impact,
            agg_total,
            built_at,
        }
    }

    /// An empty snapshot.
    pub fn empty() -> Snapshot {
        Snapshot::build(Vec::new(), Vec::new(), 0)
    }

    /// The index of a resource id.
    pub fn lookup(&self, id: &str) -> Option<Ix> {
        self.index.get(id).copied()
    }

    /// The resource at an index.
    pub fn resource(&self, ix: Ix) -> &Resource {
        &self.resources[ix as usize]
    }

    /// The relation at an index.
    pub fn relation(&self, ix: RelIx) -> &Relation {
        &self.relations[ix as usize]
    }

    /// Index of a relation by its key.
    pub fn lookup_relation(&self, from: &str, to: &str, kind: &str) -> Option<RelIx> {
        self.relations
            .binary_search_by(|r| {
                (r.from.as_str(), r.to.as_str(), r.kind.as_str()).cmp(&(from, to, kind))
            })
            .ok()
            .map(|i| i as RelIx)
    }

    /// Present relations at a resource: outgoing (it is `from`), incoming, or both.
    pub fn relations_of(&self, ix: Ix, outgoing: bool, incoming: bool) -> Vec<RelIx> {
        let n = NodeIndex::new(ix as usize);
        let mut out = Vec::new();
        if outgoing {
            out.extend(
                self.graph
                    .edges_directed(n, Direction::Outgoing)
                    .map(|e| *e.weight()),
            );
        }
        if incoming {
            out.extend(
                self.graph
                    .edges_directed(n, Direction::Incoming)
                    .map(|e| *e.weight()),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How many aggregate inputs (instances, targets) a resource has.
    pub fn aggregate_inputs(&self, ix: Ix) -> u32 {
        self.agg_total[ix as usize]
    }

    /// What goes down and what is degraded when every resource in `failed`
    /// fails. See the README for the rules; `max_depth` trims the answer,
    /// never the computation.
    pub fn impact(&self, failed: &[Ix], max_depth: Option<u32>) -> ImpactResult {
        let n = self.resources.len();
        // DOWN: the least fixed point, propagated from the failed set only, so a
        // cycle never keeps itself down.
        let mut down_depth = vec![NONE; n];
        let mut down_parent: Vec<u32> = vec![NONE; n];
        let mut agg_down = vec![0u32; n];
        let mut queue = VecDeque::new();
        for &f in failed {
            if down_depth[f as usize] == NONE {
                down_depth[f as usize] = 0;
                queue.push_back(f);
            }
        }
        while let Some(u) = queue.pop_front() {
            let du = down_depth[u as usize];
            for e in self.impact.edges(NodeIndex::new(u as usize)) {
                let v = e.target().index();
                if down_depth[v] != NONE {
                    continue;
                }
                if e.weight().aggregate {
                    agg_down[v] += 1;
                    if agg_down[v] < self.agg_total[v] {
                        continue;
                    }
                }
                down_depth[v] = du + 1;
                down_parent[v] = e.id().index() as u32;
                queue.push_back(v as Ix);
            }
        }
        // Reachability along every impact edge: DOWN ∪ DEGRADED.
        let mut reach_depth = vec![NONE; n];
        let mut reach_parent: Vec<u32> = vec![NONE; n];
        let mut order = Vec::new();
        for &f in failed {
            if reach_depth[f as usize] == NONE {
                reach_depth[f as usize] = 0;
                queue.push_back(f);
            }
        }
        while let Some(u) = queue.pop_front() {
            order.push(u);
            let du = reach_depth[u as usize];
            for e in self.impact.edges(NodeIndex::new(u as usize)) {
                let v = e.target().index();
                if reach_depth[v] == NONE {
                    reach_depth[v] = du + 1;
                    reach_parent[v] = e.id().index() as u32;
                    queue.push_back(v as Ix);
                }
            }
        }
        let mut result = ImpactResult::default();
        for u in order {
            let ui = u as usize;
            let total = self.agg_total[ui];
            let aggregate = (total > 0).then(|| (total - agg_down[ui].min(total), total));
            let (status, depth, parents) = if down_depth[ui] != NONE {
                (ImpactStatus::Down, down_depth[ui], &down_parent)
            } else {
                (ImpactStatus::Degraded, reach_depth[ui], &reach_parent)
            };
            if max_depth.is_some_and(|m| depth > m) {
                continue;
            }
            let item = Impacted {
                node: u,
                status,
                depth,
                path: self.path_back(u, parents),
                aggregate,
            };
            match status {
                ImpactStatus::Down => result.down.push(item),
                ImpactStatus::Degraded => result.degraded.push(item),
            }
        }
        let key = |i: &Impacted| (i.depth, i.node);
        result.down.sort_by_key(key);
        result.degraded.sort_by_key(key);
        result
    }

    /// Follows parent edges back to a failed resource; returns relations in
    /// failure order.
    fn path_back(&self, mut node: Ix, parents: &[u32]) -> Vec<RelIx> {
        let mut path = Vec::new();
        while parents[node as usize] != NONE {
            let e = EdgeIndex::new(parents[node as usize] as usize);
            path.push(self.impact[e].rel);
            let (src, _) = self.impact.edge_endpoints(e).expect("parent edge exists");
            node = src.index() as Ix;
        }
        path.reverse();
        path
    }

    /// Everything `ix` needs, transitively: every resource whose failure
    /// reaches it. Each with its shortest path, nearest first.
    pub fn dependencies(&self, ix: Ix, max_depth: Option<u32>) -> Vec<Dependency> {
        let n = self.resources.len();
        let mut depth = vec![NONE; n];
        let mut parent: Vec<u32> = vec![NONE; n];
        let mut queue = VecDeque::from([ix]);
        depth[ix as usize] = 0;
        let mut out = Vec::new();
        while let Some(u) = queue.pop_front() {
            let du = depth[u as usize];
            if u != ix {
                // Path from the asking resource outwards to u.
                let mut path = Vec::new();
                let mut cur = u;
                while parent[cur as usize] != NONE {
                    let e = EdgeIndex::new(parent[cur as usize] as usize);
                    path.push(self.impact[e].rel);
                    let (_, dst) = self.impact.edge_endpoints(e).expect("parent edge exists");
                    cur = dst.index() as Ix;
                }
                path.reverse();
                out.push(Dependency {
                    node: u,
                    depth: du,
                    path,
                });
            }
            if max_depth.is_some_and(|m| du >= m) {
                continue;
            }
            for e in self
                .impact
                .edges_directed(NodeIndex::new(u as usize), Direction::Incoming)
            {
                let v = e.source().index();
                if depth[v] == NONE {
                    depth[v] = du + 1;
                    parent[v] = e.id().index() as u32;
                    queue.push_back(v as Ix);
                }
            }
        }
        out.sort_by_key(|d| (d.depth, d.node));
        out
    }

    /// Number of present resources and present relations in the graph.
    pub fn counts(&self) -> (usize, usize) {
        let present = self
            .resources
            .iter()
            .filter(|r| r.status == Status::Present)
            .count();
        (present, self.graph.edge_count())
    }
}
