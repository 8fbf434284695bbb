//! The in-memory graph: an immutable snapshot of the store (present and gone
//! resources, relations, provenance), a petgraph graph of the present
//! relations as stored, and compact CSR adjacency arrays of the impact edges
//! (the direction a failure travels) for the hot path. Impact, dependencies,
//! selectors, single points of failure, paths and cycles live here.
//!
//! This module does no IO. A new snapshot is built after each run and
//! swapped in; readers keep the one they hold.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use rustc_hash::FxHashMap;

use crate::model::{ImpactRule, LabelSelector, Millis, Relation, Resource, Status};

/// Index of a resource in [`Snapshot::resources`].
pub type Ix = u32;
/// Index of a relation in [`Snapshot::relations`].
pub type RelIx = u32;

const NONE: u32 = u32::MAX;

/// The top bit of a [`Csr`] `other` entry: the edge is an aggregate input.
const AGG: u32 = 1 << 31;
/// In the SPOF search's copy of the edges ([`Local`]) only: the edge leads
/// to a node with no impact edges of its own, which so never needs a place
/// in the pass's queue.
const LEAF: u32 = 1 << 30;
/// Likewise: the edge is the only impact edge into its node. With [`LEAF`],
/// the pass counts the node and marks nothing: no other edge can reach it.
const ONCE: u32 = 1 << 29;
/// The node number in an `other` entry, under the flags.
const NODE: u32 = ONCE - 1;

/// Compressed sparse rows: the impact edges leaving each node.
#[derive(Default)]
struct Csr {
    /// `off[v]..off[v+1]` are v's edges.
    off: Vec<u32>,
    /// The node at the other end, with [`AGG`] set for aggregate
    /// (instance_of / routes_to) edges: one array read per edge, not two.
    other: Vec<u32>,
    /// The relation behind the edge.
    rel: Vec<u32>,
}

impl Csr {
    /// `edges` are (from, to, rel, aggregate); rows are indexed by `from`.
    /// Also returns where each input edge landed.
    fn build(n: usize, edges: &[(u32, u32, u32, bool)]) -> (Csr, Vec<u32>) {
        let mut off = vec![0u32; n + 1];
        for e in edges {
            off[e.0 as usize + 1] += 1;
        }
        for i in 0..n {
            off[i + 1] += off[i];
        }
        let mut pos: Vec<u32> = off[..n].to_vec();
        let m = edges.len();
        let (mut other, mut rel) = (vec![0u32; m], vec![0u32; m]);
        let mut landed = Vec::with_capacity(m);
        for e in edges {
            let p = pos[e.0 as usize] as usize;
            pos[e.0 as usize] += 1;
            other[p] = e.1 | if e.3 { AGG } else { 0 };
            rel[p] = e.2;
            landed.push(p as u32);
        }
        (Csr { off, other, rel }, landed)
    }

    #[inline]
    fn range(&self, v: u32) -> std::ops::Range<usize> {
        self.off[v as usize] as usize..self.off[v as usize + 1] as usize
    }

    /// The node at the other end of edge `p`.
    #[inline]
    fn to(&self, p: usize) -> u32 {
        self.other[p] & NODE
    }

    /// Whether edge `p` is an aggregate input.
    #[inline]
    fn is_agg(&self, p: usize) -> bool {
        self.other[p] & AGG != 0
    }

    fn bytes(&self) -> usize {
        self.off.len() * 4 + self.other.len() * 4 + self.rel.len() * 4
    }
}

type IdIndex = HashMap<String, Ix, foldhash::fast::RandomState>;

/// An immutable view of the whole inventory.
pub struct Snapshot {
    /// Every resource, present and gone, sorted by id.
    pub resources: Vec<Resource>,
    /// Every relation, present and gone, sorted by (from, to, kind).
    pub relations: Vec<Relation>,
    /// Id to index. foldhash: several times faster than the standard
    /// SipHash on a million ids. It is seeded at random per process but
    /// only minimally resistant to crafted collisions; ids come from
    /// collectors and token-holding agents, and the worst a flood could do
    /// is slow this one map down.
    index: IdIndex,
    /// Present relations between present resources, as stored (from → to).
    graph: DiGraph<(), RelIx, u32>,
    /// Impact edges in the failure direction (a failure of v reaches `other`).
    fwd: Csr,
    /// The same edges reversed (what v needs).
    rev: Csr,
    /// For each forward position, the position of the same edge in `rev`.
    twin: Vec<u32>,
    /// Per resource: how many aggregate inputs (instances, targets) it has.
    agg_total: Vec<u32>,
    /// The forward edges again, in a locality order, for the SPOF search;
    /// built on its first use.
    local: std::sync::OnceLock<Local>,
    /// Which resources are present, as bits.
    present: Vec<u64>,
    /// Present resources by kind and label, for selectors; built on the
    /// first selector that names a kind or a label (`spofs` names its
    /// critical labels).
    catalog: std::sync::OnceLock<Catalog>,
    /// See [`Snapshot::set_parallel_from`].
    parallel_from: usize,
    /// See [`Snapshot::refuse_threads`].
    refuse_threads: bool,
    /// See [`Snapshot::assume_two_cores`].
    assume_two: bool,
    /// When the snapshot was built.
    pub built_at: Millis,
}

/// The forward impact edges with the nodes renumbered breadth-first along
/// them, from the resources nothing reaches (see ARCHITECTURE.md, "Node
/// order"). A failure spreads the same way, so a cascade's state sits close
/// together in memory: on a million-resource estate the SPOF search, which
/// runs one down-propagation per candidate, takes about half the time it
/// takes in id order. Impact answers keep id order (they are listed by
/// depth, then id) and do not use it.
struct Local {
    /// Resource index of each local node number.
    ix_of: Vec<Ix>,
    /// Local node number of each resource index (the inverse of `ix_of`).
    local_of: Vec<u32>,
    /// Forward edges between local numbers (no relations), each row in
    /// ascending order of the entry (hard edges first, each part by node),
    /// so that two nodes with the same edges have the same row.
    fwd: Csr,
    /// The local nodes that have aggregate inputs (services, databases,
    /// load balancers), as bits, with how many come before each 64-node word:
    /// their rank indexes `agg_total` and the SPOF pass's counts, which so
    /// hold only those nodes (see [`SpofPass`]).
    agg_bits: Vec<u64>,
    agg_before: Vec<u32>,
    /// Aggregate inputs of each node with any, by rank.
    agg_total: Vec<u32>,
    /// For each local node whose single failure provably takes down only
    /// itself and its hard targets (see [`Local::simple_downs`]): how many
    /// that is, itself included; 0 for every other node.
    simple: Vec<u32>,
    /// Nodes with the same impact edges, two or more to a group, among
    /// those [`Local::simple`] does not settle (see [`Local::same_rows`]),
    /// and which nodes are in one, as bits.
    groups: Vec<Vec<u32>>,
    grouped: Vec<u64>,
}

impl Local {
    fn build(fwd: &Csr, agg_total: &[u32]) -> Local {
        let n = agg_total.len();
        let mut indeg = vec![0u32; n];
        for p in 0..fwd.other.len() {
            indeg[fwd.to(p) as usize] += 1;
        }
        let mut local_of = vec![NONE; n];
        let mut ix_of: Vec<Ix> = Vec::with_capacity(n);
        let roots = (0..n).filter(|&v| indeg[v] == 0).chain(0..n);
        for root in roots {
            if local_of[root] != NONE {
                continue;
            }
            local_of[root] = ix_of.len() as u32;
            let mut head = ix_of.len();
            ix_of.push(root as Ix);
            // `ix_of` doubles as the queue.
            while head < ix_of.len() {
                let u = ix_of[head];
                head += 1;
                for p in fwd.range(u) {
                    let v = fwd.to(p) as usize;
                    if local_of[v] == NONE {
                        local_of[v] = ix_of.len() as u32;
                        ix_of.push(v as Ix);
                    }
                }
            }
        }
        let mut off = Vec::with_capacity(n + 1);
        let mut other = Vec::with_capacity(fwd.other.len());
        off.push(0u32);
        for &ix in &ix_of {
            let start = other.len();
            for p in fwd.range(ix) {
                other.push(local_of[fwd.to(p) as usize] | (fwd.other[p] & AGG));
            }
            other[start..].sort_unstable();
            off.push(other.len() as u32);
        }
        for t in &mut other {
            let v = *t & NODE;
            if off[v as usize] == off[v as usize + 1] {
                *t |= LEAF;
            }
            if indeg[ix_of[v as usize] as usize] == 1 {
                *t |= ONCE;
            }
        }
        let mut agg_bits = vec![0u64; n.div_ceil(64)];
        let mut agg_before = Vec::with_capacity(agg_bits.len());
        let mut totals = Vec::new();
        for (w, word) in agg_bits.iter_mut().enumerate() {
            agg_before.push(totals.len() as u32);
            for (b, &ix) in ix_of[w * 64..n.min(w * 64 + 64)].iter().enumerate() {
                let total = agg_total[ix as usize];
                if total > 0 {
                    *word |= 1 << b;
                    totals.push(total);
                }
            }
        }
        let mut local = Local {
            ix_of,
            local_of,
            fwd: Csr {
                off,
                other,
                rel: Vec::new(),
            },
            agg_bits,
            agg_before,
            agg_total: totals,
            simple: Vec::new(),
            groups: Vec::new(),
            grouped: Vec::new(),
        };
        local.simple = local.simple_downs();
        local.groups = local.same_rows();
        local.grouped = vec![0u64; n.div_ceil(64)];
        for &v in local.groups.iter().flatten() {
            local.grouped[v as usize / 64] |= 1 << (v % 64);
        }
        local
    }

    /// Which nodes' single failure is settled by their own row: a host
    /// takes down its instances and volumes, an instance only itself, and
    /// nothing further, because none of those has a hard edge onward and
    /// no service, database or load balancer loses all its inputs to them.
    /// For such a node x, DOWN({x}) is x and its hard targets exactly (rule
    /// 2 adds the targets; they have no hard edges; rule 3 adds nothing,
    /// since every aggregate input edge leaving that set, counted with
    /// multiplicity as the pass counts it, leaves its aggregate short). The
    /// SPOF search reads the count from here and the critical targets from
    /// the node's own row, instead of running a pass: most candidates on a
    /// generated estate are such nodes, and the pass's aggregate counters
    /// are what misses the cache on a million resources. Nodes with more
    /// than 64 hard targets, or whose set feeds more than 256 aggregates,
    /// are not checked (0: run the pass).
    fn simple_downs(&self) -> Vec<u32> {
        const MAX_TARGETS: usize = 64;
        const MAX_AGGREGATES: usize = 256;
        let fwd = &self.fwd;
        let n = self.ix_of.len();
        let mut out = vec![0u32; n];
        let mut shorts: Vec<(u32, u32)> = Vec::new();
        let mut set: Vec<u32> = Vec::new();
        'node: for x in 0..n as u32 {
            set.clear();
            set.push(x);
            for p in fwd.range(x) {
                let t = fwd.other[p];
                if t & AGG == 0 {
                    let y = t & NODE;
                    if y == x || set.contains(&y) {
                        continue;
                    }
                    if set.len() > MAX_TARGETS || fwd.range(y).any(|q| fwd.other[q] & AGG == 0) {
                        continue 'node;
                    }
                    set.push(y);
                }
            }
            // Aggregate input edges leaving the set, by target.
            shorts.clear();
            for &u in &set {
                for p in fwd.range(u) {
                    let t = fwd.other[p];
                    if t & AGG == 0 {
                        continue;
                    }
                    let a = t & NODE;
                    if set.contains(&a) {
                        continue;
                    }
                    if let Some((_, c)) = shorts.iter_mut().find(|(v, _)| *v == a) {
                        *c += 1;
                    } else if shorts.len() == MAX_AGGREGATES {
                        // A linear search: past a few hundred aggregates
                        // (a backend behind every load balancer), the pass.
                        continue 'node;
                    } else {
                        shorts.push((a, 1));
                    }
                }
            }
            if shorts
                .iter()
                .all(|&(a, c)| c < self.agg_total[self.agg_rank(a as usize)])
            {
                out[x as usize] = set.len() as u32;
            }
        }
        out
    }

    /// Nodes that the pass must try and whose impact edges are the same,
    /// target for target and kind for kind: the shared platform services
    /// that every instance needs (DNS, auth, logging…) are such a group,
    /// and each of them takes down most of the estate. One pass answers
    /// for the whole group when it does not come back to the node it
    /// started from (see [`SpofPass::shared`]).
    fn same_rows(&self) -> Vec<Vec<u32>> {
        use std::hash::{Hash, Hasher};
        let fwd = &self.fwd;
        let mut by_hash: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        for x in 0..self.ix_of.len() as u32 {
            if self.simple[x as usize] > 0 || fwd.range(x).is_empty() {
                continue;
            }
            let mut h = rustc_hash::FxHasher::default();
            fwd.other[fwd.range(x)].hash(&mut h);
            by_hash.entry(h.finish()).or_default().push(x);
        }
        let mut groups = Vec::new();
        for (_, mut nodes) in by_hash {
            // Split a bucket by the rows themselves: a hash is not proof.
            while nodes.len() > 1 {
                let row = &fwd.other[fwd.range(nodes[0])];
                let (same, rest): (Vec<u32>, Vec<u32>) = nodes
                    .iter()
                    .partition(|&&y| &fwd.other[fwd.range(y)] == row);
                if same.len() > 1 {
                    groups.push(same);
                }
                nodes = rest;
            }
        }
        groups.sort_unstable();
        groups
    }

    /// The rank of local node `v`, which has aggregate inputs.
    #[inline]
    fn agg_rank(&self, v: usize) -> usize {
        let w = v >> 6;
        debug_assert!(
            self.agg_bits[w] >> (v & 63) & 1 != 0,
            "{v} has no aggregate inputs"
        );
        self.agg_before[w] as usize
            + (self.agg_bits[w] & ((1u64 << (v & 63)) - 1)).count_ones() as usize
    }

    fn bytes(&self) -> usize {
        (self.ix_of.len() + self.local_of.len()) * 4
            + self.fwd.bytes()
            + self.agg_bits.len() * 8
            + (self.agg_before.len() + self.agg_total.len() + self.simple.len()) * 4
            + self.groups.iter().map(|g| 24 + g.len() * 4).sum::<usize>()
            + self.grouped.len() * 8
    }
}

/// Present resources by kind and by label value, each list in id order:
/// what selectors read (`Snapshot::select`, the SPOF search's critical
/// set), so that choosing among a million resources reads the lists it
/// names instead of every resource's record and labels (≈ 130 ms on a
/// million resources, per call).
#[derive(Default)]
struct Catalog {
    kinds: FxHashMap<String, Vec<Ix>>,
    /// Label key → value → resources.
    labels: FxHashMap<String, FxHashMap<String, Vec<Ix>>>,
}

impl Catalog {
    fn build(resources: &[Resource]) -> Catalog {
        fn push(lists: &mut FxHashMap<String, Vec<Ix>>, key: &str, ix: usize) {
            match lists.get_mut(key) {
                Some(list) => list.push(ix as Ix),
                None => {
                    lists.insert(key.to_string(), vec![ix as Ix]);
                }
            }
        }
        let mut c = Catalog::default();
        for (ix, r) in resources.iter().enumerate() {
            if r.status != Status::Present {
                continue;
            }
            push(&mut c.kinds, &r.kind, ix);
            for (k, v) in &r.labels {
                if !c.labels.contains_key(k.as_str()) {
                    c.labels.insert(k.clone(), FxHashMap::default());
                }
                push(c.labels.get_mut(k.as_str()).expect("inserted"), v, ix);
            }
        }
        c
    }

    fn bytes(&self) -> usize {
        let lists = |m: &FxHashMap<String, Vec<Ix>>| -> usize {
            m.iter().map(|(k, l)| 64 + k.len() + l.capacity() * 4).sum()
        };
        lists(&self.kinds)
            + self
                .labels
                .iter()
                .map(|(k, m)| 64 + k.len() + lists(m))
                .sum::<usize>()
    }
}

/// `bits` &= the members of `lists` (or &= !them, if `without`).
fn keep_only<'a>(bits: &mut [u64], lists: impl Iterator<Item = &'a Vec<Ix>>, without: bool) {
    let mut these = vec![0u64; bits.len()];
    for list in lists {
        for &ix in list {
            these[ix as usize >> 6] |= 1 << (ix & 63);
        }
    }
    for (b, t) in bits.iter_mut().zip(these) {
        *b &= if without { !t } else { t };
    }
}

/// The members of a bitset, in order.
fn members(bits: &[u64]) -> impl Iterator<Item = Ix> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            (rest != 0).then(|| {
                let b = rest.trailing_zeros();
                rest &= rest - 1;
                (w as u32) << 6 | b
            })
        })
    })
}

/// Whether an impacted resource is down or only degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImpactStatus {
    /// Failed, or forced down by the rules.
    Down,
    /// Reached by the failure but still up (lost some redundancy, or depends
    /// on something that did).
    Degraded,
}

/// One resource reached by a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impacted {
    /// The resource.
    pub node: Ix,
    /// Down or degraded.
    pub status: ImpactStatus,
    /// Relations on the explaining path (0 for a failed resource).
    pub depth: u32,
    /// For resources with instances/targets: (still up, total).
    pub aggregate: Option<(u32, u32)>,
}

/// The answer to "what if these fail". Paths are computed on demand with
/// [`ImpactResult::path`], so a hub failure reaching tens of thousands of
/// resources costs no more than the traversal.
#[derive(Debug, Clone, Default)]
pub struct ImpactResult {
    /// Down resources, by depth then id.
    pub down: Vec<Impacted>,
    /// Degraded resources, by depth then id.
    pub degraded: Vec<Impacted>,
    /// Per reached node: (forward-CSR position of its down parent edge, of its reach parent edge).
    parents: Parents,
}

/// Parent edges of the reached nodes: a hash map for small answers; for
/// answers that are a sizeable share of the estate, where hashing would cost
/// more than the traversal, the pairs in id order with the reached set as
/// bits and a count per 64-node word to find a node's pair (its rank).
#[derive(Debug, Clone)]
enum Parents {
    Sparse(FxHashMap<Ix, (u32, u32)>),
    Ranked {
        bits: Vec<u64>,
        /// Reached nodes before each word of `bits`.
        before: Vec<u32>,
        pairs: Vec<(u32, u32)>,
    },
}

impl Default for Parents {
    fn default() -> Self {
        Parents::Sparse(FxHashMap::default())
    }
}

impl Parents {
    fn get(&self, node: Ix) -> Option<(u32, u32)> {
        match self {
            Parents::Sparse(m) => m.get(&node).copied(),
            Parents::Ranked {
                bits,
                before,
                pairs,
            } => {
                let w = node as usize >> 6;
                let bit = 1u64 << (node & 63);
                let word = *bits.get(w)?;
                (word & bit != 0)
                    .then(|| pairs[before[w] as usize + (word & (bit - 1)).count_ones() as usize])
            }
        }
    }
}

impl ImpactResult {
    /// The explaining path of an impacted resource: relations from a failed
    /// resource to it, in failure order.
    pub fn path(&self, snap: &Snapshot, item: &Impacted) -> Vec<RelIx> {
        let down = item.status == ImpactStatus::Down;
        let mut path = Vec::with_capacity(item.depth as usize);
        let mut node = item.node;
        while let Some((dp, rp)) = self.parents.get(node) {
            let p = if down { dp } else { rp };
            if p == NONE {
                break;
            }
            let p = snap.twin[p as usize];
            path.push(snap.rev_rel_at(p));
            node = snap.rev.to(p as usize);
        }
        path.reverse();
        path
    }

    /// How many down and degraded resources there are of each kind, by kind.
    pub fn counts_by_kind(&self, snap: &Snapshot) -> Vec<(String, usize, usize)> {
        let mut m: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for i in &self.down {
            m.entry(&snap.resource(i.node).kind).or_default().0 += 1;
        }
        for i in &self.degraded {
            m.entry(&snap.resource(i.node).kind).or_default().1 += 1;
        }
        m.into_iter()
            .map(|(k, (d, g))| (k.to_string(), d, g))
            .collect()
    }
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

/// Which resources a query means: ANDed conditions over present resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// Resource kind.
    pub kind: Option<String>,
    /// Label selectors, ANDed.
    pub labels: Vec<LabelSelector>,
    /// Everything inside this container, transitively (contained_in).
    pub contained_in: Option<String>,
}

impl Selector {
    /// Parses `kind=host,contained_in=zone:a,rack=r12,tier!=3,env`: `kind`
    /// and `contained_in` (or `in`) are reserved and take `=` once each;
    /// `label:EXPR` or any other term is a label selector (`label:kind=x`
    /// for a label named `kind`). Terms are ANDed.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut sel = Selector::default();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(expr) = term.strip_prefix("label:") {
                sel.labels.push(LabelSelector::parse(expr)?);
                continue;
            }
            let parsed = LabelSelector::parse(term)?;
            let key = match &parsed {
                LabelSelector::Eq(k, _) | LabelSelector::Ne(k, _) | LabelSelector::Has(k) => k,
            };
            let (name, slot) = match key.as_str() {
                "kind" => ("kind", &mut sel.kind),
                "contained_in" | "in" => ("contained_in", &mut sel.contained_in),
                _ => {
                    sel.labels.push(parsed);
                    continue;
                }
            };
            let value = match &parsed {
                LabelSelector::Eq(_, v) if !v.is_empty() => v,
                LabelSelector::Ne(..) => {
                    return Err(format!(
                        "'{term}': {name} takes '=' only (for a label named {key}, write label:{term})"
                    ));
                }
                _ => return Err(format!("'{term}': {name} needs a value, as {name}=...")),
            };
            match slot {
                Some(before) if before != value => {
                    return Err(format!(
                        "{name} given twice ('{before}' and '{value}'): terms are ANDed, so give one"
                    ));
                }
                _ => *slot = Some(value.clone()),
            }
        }
        if sel.is_empty() {
            return Err(format!("empty selector '{s}'"));
        }
        Ok(sel)
    }

    /// True when it selects nothing in particular (every resource).
    pub fn is_empty(&self) -> bool {
        self.kind.is_none() && self.labels.is_empty() && self.contained_in.is_none()
    }
}

impl std::fmt::Display for Selector {
    /// The selector as [`Selector::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut terms: Vec<String> = Vec::new();
        if let Some(k) = &self.kind {
            terms.push(format!("kind={k}"));
        }
        if let Some(c) = &self.contained_in {
            terms.push(format!("contained_in={c}"));
        }
        for l in &self.labels {
            terms.push(format!("label:{l}"));
        }
        f.write_str(&terms.join(","))
    }
}

/// Why [`Snapshot::spofs`] has no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SpofError {
    /// The scope names a container that is not in the inventory.
    UnknownResource(String),
    /// No present resource is critical, or the scope matches none: a typo
    /// that would otherwise read as "no single points of failure".
    NoMatch(String),
}

impl std::fmt::Display for SpofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpofError::UnknownResource(m) | SpofError::NoMatch(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SpofError {}

/// A single point of failure: its failure alone takes critical resources down.
#[derive(Debug, Clone, PartialEq)]
pub struct Spof {
    /// The resource.
    pub node: Ix,
    /// The critical resources its failure takes down (not counting itself).
    pub critical_down: Vec<Ix>,
    /// Everything its failure takes down, itself included.
    pub down_count: usize,
}

/// How a SPOF search got its answers (see [`Snapshot::spofs_counted`]):
/// what it cost, for benchmarks, and proof in tests that the shortcuts
/// are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpofWork {
    /// Resources tried: the ancestors of critical resources in scope.
    pub candidates: usize,
    /// Of those, answered from their own row, without a pass (a host and
    /// its instances, see `Local::simple_downs`).
    pub from_rows: usize,
    /// Down-propagations run.
    pub passes: usize,
    /// Answered by another member's pass (the same impact edges, see
    /// `Local::same_rows`).
    pub shared: usize,
}

/// One node's state in the down pass: which pass stamped it, at what
/// depth, through which forward-CSR edge, and how many of its aggregate
/// inputs are down. Kept together, 16 bytes aligned, so that a visit
/// touches one cache line, not three (on a million-resource estate the
/// arrays do not fit in cache and the traversal is bound by memory misses).
#[derive(Clone, Copy, Default)]
#[repr(align(16))]
struct Slot {
    stamp: u32,
    /// [`PENDING`] in the down pass: touched (an aggregate input is down)
    /// but not down itself.
    depth: u32,
    parent: u32,
    agg: u32,
}

/// See [`Slot::depth`].
const PENDING: u32 = u32::MAX;

/// The default for [`Snapshot::set_parallel_from`].
const PARALLEL_FROM: usize = 8192;

/// How the reach pass reached a node: at what depth, through which
/// forward-CSR edge. Valid where [`Scratch::seen`] has the node.
#[derive(Clone, Copy, Default)]
struct Hop {
    depth: u32,
    parent: u32,
}

/// A set of nodes as bits, emptied in time proportional to its size or to
/// its members (whichever is less), so that both a one-resource failure
/// and one reaching half the estate pay little for it.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn grow(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if self.0.len() < words {
            self.0.resize(words, 0);
        }
    }

    #[inline]
    fn has(&self, v: usize) -> bool {
        self.0[v >> 6] >> (v & 63) & 1 != 0
    }

    /// Adds `v`; false if it was there.
    #[inline]
    fn insert(&mut self, v: usize) -> bool {
        let (w, bit) = (&mut self.0[v >> 6], 1u64 << (v & 63));
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    /// Empties the set; `members` must list every member.
    fn clear(&mut self, members: &[u32]) {
        if members.len() * 8 > self.0.len() {
            self.0.fill(0);
        } else {
            for &v in members {
                self.0[v as usize >> 6] = 0;
            }
        }
    }
}

/// Per-thread scratch space for traversals, reset in time proportional to
/// the last answer (bits) or in O(1) by bumping an epoch (slots).
///
/// The reach pass keeps its visited set as bits: most edges it follows
/// lead to a resource it has already reached, and on a million resources
/// that test is a hit in a 128 KB bitmap that stays in the core's cache
/// instead of a miss to memory for a 16-byte slot. How a node was reached
/// is written once, when it is.
#[derive(Default)]
struct Scratch {
    epoch: u32,
    /// The down pass's slots, stamped with `epoch`.
    down: Vec<Slot>,
    /// The nodes the down pass took down.
    down_bits: Bits,
    /// The down pass's breadth-first queue, which is also its visit order
    /// (every member of `down_bits`).
    down_order: Vec<u32>,
    /// The nodes the reach pass reached.
    seen: Bits,
    /// How each of them was reached.
    hops: Vec<Hop>,
    /// The reach pass's queue and visit order (every member of `seen`).
    order: Vec<u32>,
    /// A large DOWN list being collected, by depth, each in id order:
    /// kept between calls (see [`keep_buckets`]) so that their memory is
    /// warm and sized.
    down_buckets: Buckets,
    /// The same for a large DEGRADED list.
    buckets: Buckets,
    /// The same for its upper id range, collected on a second core.
    buckets_beside: Buckets,
    /// Set while an answer is being computed: if it is still set when the
    /// next one begins, that answer panicked part-way and `order` may not
    /// list every member of `seen` (nor `down_order` of `down_bits`), so
    /// the bits are emptied in full.
    busy: bool,
}

/// A large list being collected, by depth.
type Buckets = Vec<Vec<Impacted>>;

/// Appends `it` to the bucket of its depth.
fn push_at_depth(buckets: &mut Buckets, it: Impacted) {
    let d = it.depth as usize;
    if buckets.len() <= d {
        buckets.resize_with(d + 1, Vec::new);
    }
    buckets[d].push(it);
}

/// The order of both lists of an answer.
fn by_depth_then_id(i: &Impacted) -> u64 {
    ((i.depth as u64) << 32) | i.node as u64
}

/// One id range of a large answer: its parent pairs in id order, how many
/// of them come before each 64-node word, and how many DEGRADED items it
/// kept.
#[derive(Default)]
struct Part {
    pairs: Vec<(u32, u32)>,
    before: Vec<u32>,
    kept: usize,
}

/// The buckets to keep for the next large answer: these (drained), unless
/// together they hold room for more than twice the estate (lists grow by
/// doubling, so one answer can leave up to twice its size), each depth's
/// list header counted as an item: answers of different shapes cannot make
/// one thread's scratch grow without bound. A thread keeps at most 2`n`
/// items of 24 bytes (48 MB on a million resources).
fn keep_buckets(lists: [&mut Buckets; 3], n: usize) {
    let room: usize = lists
        .iter()
        .map(|b| b.capacity() + b.iter().map(Vec::capacity).sum::<usize>())
        .sum();
    if room > 2 * n {
        for b in lists {
            *b = Buckets::default();
        }
    }
}

/// The word of `bits` that splits its `count` members about in half, and
/// how many members come before it.
fn halfway(bits: &[u64], count: usize) -> (usize, usize) {
    let mut seen = 0;
    for (w, word) in bits.iter().enumerate() {
        seen += word.count_ones() as usize;
        if seen * 2 >= count {
            return (w + 1, seen);
        }
    }
    (bits.len(), seen)
}

impl Scratch {
    fn begin(&mut self, n: usize) {
        if self.down.len() < n {
            self.down.resize(n, Slot::default());
            self.hops.resize(n, Hop::default());
        }
        self.seen.grow(n);
        self.down_bits.grow(n);
        if std::mem::replace(&mut self.busy, true) {
            self.seen.0.fill(0);
            self.down_bits.0.fill(0);
            for b in [
                &mut self.down_buckets,
                &mut self.buckets,
                &mut self.buckets_beside,
            ] {
                b.iter_mut().for_each(Vec::clear);
            }
        } else {
            self.seen.clear(&self.order);
            self.down_bits.clear(&self.down_order);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.down.fill(Slot::default());
            self.epoch = 1;
        }
        self.order.clear();
        self.down_order.clear();
    }
}

/// One list of the answer from its buckets by depth, those of the lower
/// id range before those of the upper within a depth (each in id order):
/// by depth then id, with no sort and no second scatter pass. Leaves the
/// buckets empty, their room kept.
fn drain_by_depth(
    low: &mut [Vec<Impacted>],
    high: &mut [Vec<Impacted>],
    total: usize,
) -> Vec<Impacted> {
    let mut out = Vec::with_capacity(total);
    for d in 0..low.len().max(high.len()) {
        for b in [low.get_mut(d), high.get_mut(d)].into_iter().flatten() {
            out.extend_from_slice(b);
            b.clear();
        }
    }
    out
}

/// Queues the failed nodes (once each) at depth 0 of the reach pass.
fn seed_reach(seen: &mut Bits, hops: &mut [Hop], order: &mut Vec<u32>, failed: &[u32]) {
    for &f in failed {
        if seen.insert(f as usize) {
            hops[f as usize] = Hop {
                depth: 0,
                parent: NONE,
            };
            order.push(f);
        }
    }
}

/// Where a breadth-first pass is: the next node to pop from the queue, the
/// end of the level being popped, and that level's depth.
struct Level {
    head: usize,
    end: usize,
    depth: u32,
}

impl Level {
    /// After seeding: the queue holds level 0.
    fn start(order: &[u32]) -> Level {
        Level {
            head: 0,
            end: order.len(),
            depth: 0,
        }
    }
}

/// Breadth-first along `fwd`, one level after another, with `order` as the
/// queue (and the visit order once done): for each edge `p` into `v`,
/// `enter(p, v, v's depth)` says whether `v` joins, recording it if so. A
/// node's depth is its level, so popping a node reads nothing. Pops at most
/// `budget` nodes; returns whether the pass is done.
#[inline(always)]
fn bfs(
    fwd: &Csr,
    order: &mut Vec<u32>,
    at: &mut Level,
    budget: usize,
    mut enter: impl FnMut(usize, usize, u32) -> bool,
) -> bool {
    let stop = at.head.saturating_add(budget);
    while at.head < order.len() {
        if at.head == stop {
            return false;
        }
        if at.head == at.end {
            at.depth += 1;
            at.end = order.len();
        }
        let u = order[at.head];
        at.head += 1;
        for p in fwd.range(u) {
            let v = fwd.to(p) as usize;
            if enter(p, v, at.depth + 1) {
                order.push(v as u32);
            }
        }
    }
    true
}

/// DOWN: the least fixed point, propagated from the failed set only, so a
/// cycle never keeps itself down. Leaves the down nodes in `bits` and in
/// `order`, in breadth-first order.
fn down_pass(
    fwd: &Csr,
    agg_total: &[u32],
    slots: &mut [Slot],
    bits: &mut Bits,
    order: &mut Vec<u32>,
    e: u32,
    failed: &[u32],
) {
    for &f in failed {
        if bits.insert(f as usize) {
            slots[f as usize] = Slot {
                stamp: e,
                depth: 0,
                parent: NONE,
                agg: 0,
            };
            order.push(f);
        }
    }
    let mut at = Level::start(order);
    bfs(fwd, order, &mut at, usize::MAX, |p, v, depth| {
        let agg = fwd.is_agg(p);
        if !agg && bits.has(v) {
            return false;
        }
        let d = &mut slots[v];
        if d.stamp != e {
            *d = Slot {
                stamp: e,
                depth: PENDING,
                parent: NONE,
                agg: 0,
            };
        }
        if agg {
            // Counted even once v is down: the answer reports how many of
            // its instances/targets are left.
            d.agg += 1;
            if d.depth != PENDING || d.agg < agg_total[v] {
                return false;
            }
        }
        d.depth = depth;
        d.parent = p as u32;
        bits.insert(v);
        true
    });
}

/// The down pass's share of an answer: its state, and the DOWN list it
/// makes once done (on a second core for large answers, beside the reach
/// pass).
struct DownSide<'a> {
    slots: &'a mut [Slot],
    bits: &'a mut Bits,
    order: &'a mut Vec<u32>,
    buckets: &'a mut Buckets,
}

impl DownSide<'_> {
    /// The down pass, then the DOWN list by depth then id (up to
    /// `max_depth`): for a large one, a scan of the down bits in id order
    /// into buckets by depth; for a small one, a sort of the visit order.
    fn run(
        &mut self,
        fwd: &Csr,
        agg_total: &[u32],
        e: u32,
        failed: &[u32],
        max_depth: Option<u32>,
    ) -> Vec<Impacted> {
        down_pass(fwd, agg_total, self.slots, self.bits, self.order, e, failed);
        let n = agg_total.len();
        let item = |v: usize| {
            let (d, total) = (self.slots[v], agg_total[v]);
            Impacted {
                node: v as u32,
                status: ImpactStatus::Down,
                depth: d.depth,
                // Counted even once v was down.
                aggregate: (total > 0).then(|| (total - d.agg.min(total), total)),
            }
        };
        let wanted = |it: &Impacted| max_depth.is_none_or(|m| it.depth <= m);
        if self.order.len() * 16 > n {
            let mut kept = 0;
            for (w, &word) in self.bits.0[..n.div_ceil(64)].iter().enumerate() {
                let mut rest = word;
                while rest != 0 {
                    let v = (w << 6) | rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    let it = item(v);
                    if wanted(&it) {
                        push_at_depth(self.buckets, it);
                        kept += 1;
                    }
                }
            }
            drain_by_depth(self.buckets, &mut [], kept)
        } else {
            let mut list: Vec<Impacted> = self
                .order
                .iter()
                .map(|&v| item(v as usize))
                .filter(wanted)
                .collect();
            list.sort_unstable_by_key(by_depth_then_id);
            list
        }
    }
}

/// DOWN ∪ DEGRADED: breadth-first from the seeded failed set, a node
/// joining the first time any impact edge reaches it. Resumable: pops at
/// most `budget` nodes; returns whether it is done.
fn reach_pass(
    fwd: &Csr,
    seen: &mut Bits,
    hops: &mut [Hop],
    order: &mut Vec<u32>,
    at: &mut Level,
    budget: usize,
) -> bool {
    bfs(fwd, order, at, budget, |p, v, depth| {
        if !seen.insert(v) {
            return false;
        }
        hops[v] = Hop {
            depth,
            parent: p as u32,
        };
        true
    })
}

/// A scoped thread named `name` running `f`, or none if the system will
/// not give one (or if `refuse`: tests take that path on purpose).
fn beside<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    refuse: bool,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<std::thread::ScopedJoinHandle<'scope, T>> {
    if refuse {
        return None;
    }
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, f)
        .ok()
}

/// Whether this machine has a second core for a large impact's down pass.
fn two_cores() -> bool {
    static TWO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TWO.get_or_init(|| std::thread::available_parallelism().is_ok_and(|p| p.get() > 1))
}

/// The down propagation of one failed resource, for the SPOF search: the
/// same rules as [`down_pass`], with only what that search needs (no depth,
/// no parent, no counts once a node is down).
///
/// Whether a node is down is a bit: most edges lead to a node that is
/// already down, or that one hard edge takes down, and on a million
/// resources that test is a hit in a 128 KB bitmap that stays in the
/// core's cache. Only aggregate edges touch a per-node word (the pass
/// stamp and the aggregate inputs down so far), and only services,
/// databases and load balancers have those: the words are kept for them
/// alone, found by rank (about 9 % of the generated estates: 720 KB per
/// worker on a million resources, not 8 MB). Epochs cannot wrap: a pass
/// is built per worker per call and runs once per candidate, and the
/// graph numbers fewer than 2^29 resources.
struct SpofPass {
    down: Bits,
    /// The nodes down in this run that have impact edges, in the order they
    /// went down (the pass's queue, and members of `down` to clear for the
    /// next).
    order: Vec<u32>,
    /// The nodes down in this run that have none, and that more than one
    /// edge reaches (the rest of `down` to clear). Those that one edge
    /// alone reaches are only counted: they are never marked.
    leaves: Vec<u32>,
    /// For each node with aggregate inputs, by rank ([`Local::agg_rank`]):
    /// stamp << 32 | inputs down so far.
    counts: Vec<u64>,
    epoch: u32,
}

impl SpofPass {
    fn new(local: &Local) -> SpofPass {
        let mut down = Bits::default();
        down.grow(local.ix_of.len());
        SpofPass {
            down,
            order: Vec::new(),
            leaves: Vec::new(),
            counts: vec![0; local.agg_total.len()],
            epoch: 0,
        }
    }

    /// Fails `x` alone on the local edges; pushes the critical resources it
    /// takes down (other than itself) onto `crit`, in local numbers, and
    /// returns how many resources go down, itself included.
    fn run(&mut self, local: &Local, crit_bits: &[u64], x: u32, crit: &mut Vec<u32>) -> usize {
        self.epoch += 1;
        let e = self.epoch as u64;
        let tag = e << 32;
        let (fwd, down, order, leaves, counts) = (
            &local.fwd,
            &mut self.down,
            &mut self.order,
            &mut self.leaves,
            &mut self.counts,
        );
        down.clear(order);
        down.clear(leaves);
        order.clear();
        leaves.clear();
        // Nodes with no edges onward that only one edge reaches: that edge
        // is followed once per pass, so each is down once, and x is not
        // one of them (a pass never comes back to a node without edges).
        let mut once = 0;
        down.insert(x as usize);
        order.push(x);
        let mut head = 0;
        while head < order.len() {
            let u = order[head];
            head += 1;
            for p in fwd.range(u) {
                let t = fwd.other[p];
                let v = (t & NODE) as usize;
                if t & (LEAF | ONCE) == LEAF | ONCE {
                    // An aggregate input alone is its node's only one.
                    once += 1;
                    if crit_bits[v / 64] >> (v % 64) & 1 != 0 {
                        crit.push(v as u32);
                    }
                    continue;
                }
                if down.has(v) {
                    continue;
                }
                if t & AGG != 0 {
                    let r = local.agg_rank(v);
                    let c = counts[r];
                    let cur = if c >> 32 == e { c as u32 } else { 0 } + 1;
                    if cur < local.agg_total[r] {
                        counts[r] = tag | cur as u64;
                        continue;
                    }
                }
                down.insert(v);
                if crit_bits[v / 64] >> (v % 64) & 1 != 0 {
                    crit.push(v as u32);
                }
                if t & LEAF != 0 {
                    leaves.push(v as u32);
                } else {
                    order.push(v as u32);
                }
            }
        }
        order.len() + leaves.len() + once
    }
}

impl SpofPass {
    /// After a pass from `x`, for the other members of x's group (nodes
    /// with the same impact edges): those whose answer is x's. DOWN({y})
    /// is DOWN({x}) with y for x, and the same critical resources go down,
    /// when y did not go down and no down node has an edge back into x:
    /// the fixed point from {y} then follows the one from {x} step for
    /// step, the same edges leaving the same nodes, and nothing it reaches
    /// leads to x. `into_x` are the nodes with an impact edge into x.
    /// Returns the shared and the others, which need their own pass.
    fn shared(
        &self,
        into_x: impl IntoIterator<Item = u32>,
        others: &[u32],
    ) -> (Vec<u32>, Vec<u32>) {
        // The unmarked nodes (no edges onward) have no edge into x, and y,
        // which has edges, is marked when down.
        if into_x.into_iter().any(|u| self.down.has(u as usize)) {
            return (Vec::new(), others.to_vec());
        }
        others.iter().partition(|&&y| !self.down.has(y as usize))
    }
}

/// "unknown resource id 'a'", or "unknown resource ids 'a', 'b'": how the
/// CLI, the GraphQL API and the diagrams name ids that name no resource.
pub fn unknown_ids(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!(
        "unknown resource id{} {}",
        if ids.len() > 1 { "s" } else { "" },
        quoted.join(", ")
    )
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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
        // Node numbers are u32 under three flag bits (`AGG` marks aggregate
        // edges; `LEAF` and `ONCE` are the SPOF search's), and u32::MAX
        // means "none".
        assert!(
            n < NODE as usize,
            "{n} resources: more than the graph can number"
        );
        let mut index = IdIndex::with_capacity_and_hasher(n, Default::default());
        index.extend(
            resources
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i as Ix)),
        );
        let mut present = vec![0u64; n.div_ceil(64)];
        for (i, r) in resources.iter().enumerate() {
            if r.status == Status::Present {
                present[i >> 6] |= 1 << (i & 63);
            }
        }
        let present_rel = relations
            .iter()
            .filter(|r| r.status == Status::Present)
            .count();
        let mut graph = DiGraph::with_capacity(n, present_rel);
        for _ in 0..n {
            graph.add_node(());
        }
        let mut agg_total = vec![0u32; n];
        let mut edges: Vec<(u32, u32, u32, bool)> = Vec::with_capacity(present_rel);
        // Relations are sorted by `from`: one lookup per run of them.
        let mut last_from: Option<(&str, Option<Ix>)> = None;
        for (ri, rel) in relations.iter().enumerate() {
            if rel.status != Status::Present {
                continue;
            }
            let from = match last_from {
                Some((id, ix)) if id == rel.from => ix,
                _ => {
                    let ix = index.get(&rel.from).copied();
                    last_from = Some((&rel.from, ix));
                    ix
                }
            };
            let (Some(f), Some(&t)) = (from, index.get(&rel.to)) else {
                continue;
            };
            if resources[f as usize].status != Status::Present
                || resources[t as usize].status != Status::Present
            {
                continue;
            }
            graph.add_edge(
                NodeIndex::new(f as usize),
                NodeIndex::new(t as usize),
                ri as RelIx,
            );
            if let Some(rule) = ImpactRule::of(&rel.kind) {
                let (src, dst) = if rule.to_reaches_from { (t, f) } else { (f, t) };
                edges.push((src, dst, ri as RelIx, rule.aggregate));
                if rule.aggregate {
                    agg_total[dst as usize] += 1;
                }
            }
        }
        let (fwd, fwd_at) = Csr::build(n, &edges);
        let reversed: Vec<(u32, u32, u32, bool)> =
            edges.iter().map(|&(s, d, r, a)| (d, s, r, a)).collect();
        let (rev, rev_at) = Csr::build(n, &reversed);
        let mut twin = vec![0u32; edges.len()];
        for (f, r) in fwd_at.into_iter().zip(rev_at) {
            twin[f as usize] = r;
        }
        Snapshot {
            resources,
            relations,
            index,
            graph,
            fwd,
            rev,
            twin,
            agg_total,
            local: std::sync::OnceLock::new(),
            present,
            catalog: std::sync::OnceLock::new(),
            parallel_from: PARALLEL_FROM,
            refuse_threads: false,
            assume_two: false,
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

    /// The ids that name no resource, present or gone: each once, in the
    /// order given.
    pub fn unknown<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut unknown: Vec<String> = Vec::new();
        for id in ids {
            if self.lookup(id).is_none() && !unknown.iter().any(|u| u == id) {
                unknown.push(id.to_string());
            }
        }
        unknown
    }

    /// The resource at an index.
    pub fn resource(&self, ix: Ix) -> &Resource {
        &self.resources[ix as usize]
    }

    /// The relation at an index.
    pub fn relation(&self, ix: RelIx) -> &Relation {
        &self.relations[ix as usize]
    }

    fn rev_rel_at(&self, pos: u32) -> RelIx {
        self.rev.rel[pos as usize]
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

    /// How many impact edges leave a resource (how many resources its failure reaches directly).
    pub fn fan_out(&self, ix: Ix) -> usize {
        self.fwd.range(ix).len()
    }

    /// What goes down and what is degraded when every resource in `failed`
    /// fails. See the README for the rules; `max_depth` trims the answer,
    /// never the computation.
    pub fn impact(&self, failed: &[Ix], max_depth: Option<u32>) -> ImpactResult {
        SCRATCH.with(|s| self.impact_in(&mut s.borrow_mut(), failed, max_depth))
    }

    /// Failures that reach more than this many resources run the down pass
    /// on a second core beside the reach pass (they are independent: own
    /// state, read-only edges). Smaller ones stay on one thread, where a
    /// thread hand-off (tens of microseconds) would cost more than it saves.
    /// Tests lower it to take the parallel path on small graphs.
    pub fn set_parallel_from(&mut self, reached: usize) {
        self.parallel_from = reached;
    }

    /// For tests: answer as if no second thread could be had (the path a
    /// large answer takes when the system refuses a thread).
    #[doc(hidden)]
    pub fn refuse_threads(&mut self, refuse: bool) {
        self.refuse_threads = refuse;
    }

    /// For tests: take the paths meant for a second core even where the
    /// machine has only one (the threads then share it), so that those
    /// paths are tested everywhere.
    #[doc(hidden)]
    pub fn assume_two_cores(&mut self, assume: bool) {
        self.assume_two = assume;
    }

    fn use_two_cores(&self) -> bool {
        self.assume_two || two_cores()
    }

    fn impact_in(&self, s: &mut Scratch, failed: &[Ix], max_depth: Option<u32>) -> ImpactResult {
        let n = self.resources.len();
        // Callers resolve ids first (unknown ids are the caller's error);
        // a number past the graph is a bug, caught before the scratch
        // space is touched. (The scratch is sized for the largest graph
        // this thread has seen, so indexing alone would not catch it.)
        if let Some(f) = failed.iter().find(|&&f| f as usize >= n) {
            panic!("impact: resource number {f} is not in this graph of {n}");
        }
        s.begin(n);
        let e = s.epoch;
        let mut result = ImpactResult::default();
        {
            let Scratch {
                down,
                down_bits,
                down_order,
                down_buckets,
                seen,
                hops,
                order,
                ..
            } = s;
            let (fwd, agg_total) = (&self.fwd, &self.agg_total[..]);
            let mut side = DownSide {
                slots: down,
                bits: down_bits,
                order: down_order,
                buckets: down_buckets,
            };
            seed_reach(seen, hops, order, failed);
            let mut at = Level::start(order);
            if reach_pass(fwd, seen, hops, order, &mut at, self.parallel_from)
                || !self.use_two_cores()
            {
                reach_pass(fwd, seen, hops, order, &mut at, usize::MAX);
                result.down = side.run(fwd, agg_total, e, failed, max_depth);
            } else {
                // The down pass, and then the DOWN list, on a second core
                // while the reach pass (the longer of the two) finishes.
                let beside = std::thread::scope(|scope| {
                    let other = beside(scope, "impact-down", self.refuse_threads, || {
                        side.run(fwd, agg_total, e, failed, max_depth)
                    });
                    reach_pass(fwd, seen, hops, order, &mut at, usize::MAX);
                    other.map(|h| h.join().expect("impact down pass"))
                });
                // No thread to be had: the down pass runs here.
                result.down =
                    beside.unwrap_or_else(|| side.run(fwd, agg_total, e, failed, max_depth));
            }
        }
        let reached = s.order.len();
        // One reached node: its (down, reach) parent edges as forward-CSR
        // positions (`path` maps them to the reverse CSR, whose `other` is
        // the node the failure came from, only for the paths a caller asks
        // for), and its DEGRADED item if it is not down.
        let item = |v: usize| {
            let hop = s.hops[v];
            if s.down_bits.has(v) {
                return ((s.down[v].parent, hop.parent), None);
            }
            let total = self.agg_total[v];
            let aggregate = (total > 0).then(|| {
                // Inputs down, counted by the down pass (its slot is read
                // only where it can say something).
                let d = s.down[v];
                let agg_down = if d.stamp == e { d.agg } else { 0 };
                (total - agg_down.min(total), total)
            });
            let item = Impacted {
                node: v as u32,
                status: ImpactStatus::Degraded,
                depth: hop.depth,
                aggregate,
            };
            let wanted = max_depth.is_none_or(|m| hop.depth <= m);
            ((NONE, hop.parent), wanted.then_some(item))
        };
        if reached * 16 > n {
            // Large answers: visit the reached nodes in id order (a scan of
            // the bits, and every per-node array read in order) into buckets
            // by depth, so that "by depth then id" needs no comparison sort
            // (nor a scatter pass over a pre-filled list), and the parents
            // are a compact id-ordered array. With a second core, the upper
            // id range is collected beside the lower one into its own
            // buckets: the lower range's items come first within each depth.
            let bits = s.seen.0[..n.div_ceil(64)].to_vec();
            // `room`: how many pairs the part's list is made to hold.
            let collect = |words: std::ops::Range<usize>, room: usize, buckets: &mut Buckets| {
                let mut part = Part {
                    before: Vec::with_capacity(words.len()),
                    pairs: Vec::with_capacity(room),
                    kept: 0,
                };
                for w in words {
                    part.before.push(part.pairs.len() as u32);
                    let mut rest = bits[w];
                    while rest != 0 {
                        let v = (w << 6) | rest.trailing_zeros() as usize;
                        rest &= rest - 1;
                        let (pair, it) = item(v);
                        part.pairs.push(pair);
                        if let Some(it) = it {
                            push_at_depth(buckets, it);
                            part.kept += 1;
                        }
                    }
                }
                part
            };
            let mut low = std::mem::take(&mut s.buckets);
            let mut high = std::mem::take(&mut s.buckets_beside);
            let (split, below) = if reached > self.parallel_from && self.use_two_cores() {
                halfway(&bits, reached)
            } else {
                (bits.len(), reached)
            };
            // The lower part's pairs list is made to hold them all: the
            // upper part's are appended to it.
            let (mut lo, hi) = if split < bits.len() {
                let upper = split..bits.len();
                let (lo, hi) = std::thread::scope(|scope| {
                    let side = beside(scope, "impact-collect", self.refuse_threads, || {
                        collect(upper.clone(), reached - below, &mut high)
                    });
                    let lo = collect(0..split, reached, &mut low);
                    (lo, side.map(|h| h.join().expect("impact collection")))
                });
                // No thread to be had: the upper range is collected here.
                let hi = hi.unwrap_or_else(|| collect(upper, reached - below, &mut high));
                (lo, hi)
            } else {
                (collect(0..bits.len(), reached, &mut low), Part::default())
            };
            let offset = lo.pairs.len() as u32;
            lo.before.extend(hi.before.iter().map(|b| b + offset));
            lo.pairs.extend_from_slice(&hi.pairs);
            result.degraded = drain_by_depth(&mut low, &mut high, lo.kept + hi.kept);
            result.parents = Parents::Ranked {
                bits,
                before: lo.before,
                pairs: lo.pairs,
            };
            keep_buckets([&mut low, &mut high, &mut s.down_buckets], n);
            s.buckets = low;
            s.buckets_beside = high;
        } else {
            let mut parents = FxHashMap::default();
            parents.reserve(reached);
            result.degraded.reserve(reached - s.down_order.len());
            for &v in &s.order {
                let (pair, it) = item(v as usize);
                parents.insert(v, pair);
                result.degraded.extend(it);
            }
            result.parents = Parents::Sparse(parents);
            result.degraded.sort_unstable_by_key(by_depth_then_id);
        }
        s.busy = false;
        result
    }

    /// Everything `ix` needs, transitively: every resource whose failure
    /// reaches it. Each with its shortest path, nearest first.
    pub fn dependencies(&self, ix: Ix, max_depth: Option<u32>) -> Vec<Dependency> {
        let mut depth: FxHashMap<u32, (u32, u32)> = FxHashMap::default(); // node -> (depth, fwd pos to child)
        let mut queue = VecDeque::from([ix]);
        depth.insert(ix, (0, NONE));
        let mut order = Vec::new();
        while let Some(u) = queue.pop_front() {
            let du = depth[&u].0;
            if u != ix {
                order.push(u);
            }
            if max_depth.is_some_and(|m| du >= m) {
                continue;
            }
            for p in self.rev.range(u) {
                let v = self.rev.to(p);
                if let std::collections::hash_map::Entry::Vacant(slot) = depth.entry(v) {
                    slot.insert((du + 1, p as u32));
                    queue.push_back(v);
                }
            }
        }
        let mut out: Vec<Dependency> = order
            .into_iter()
            .map(|u| {
                let mut path = Vec::new();
                let mut cur = u;
                loop {
                    let (_, p) = depth[&cur];
                    if p == NONE {
                        break;
                    }
                    path.push(self.rev.rel[p as usize]);
                    // rev edge p goes from the needing node to `cur`; find the needing node.
                    cur = self.rev_source(p);
                }
                path.reverse();
                Dependency {
                    node: u,
                    depth: depth[&u].0,
                    path,
                }
            })
            .collect();
        out.sort_by_key(|d| (d.depth, d.node));
        out
    }

    /// The row (source node) of a reverse-CSR position.
    fn rev_source(&self, pos: u32) -> u32 {
        // off is sorted: the row is the last v with off[v] <= pos.
        (self.rev.off.partition_point(|&o| o <= pos) - 1) as u32
    }

    /// Present resources matching a selector, by id.
    pub fn select(&self, sel: &Selector) -> Result<Vec<Ix>, String> {
        Ok(members(&self.selected(sel)?).collect())
    }

    /// [`Snapshot::select`] as bits.
    fn selected(&self, sel: &Selector) -> Result<Vec<u64>, String> {
        let mut bits = self.matching(sel.kind.as_deref(), &sel.labels);
        if let Some(id) = &sel.contained_in {
            let c = self
                .lookup(id)
                .ok_or_else(|| format!("unknown resource id '{id}'"))?;
            // Everything inside, transitively (not the container itself,
            // unless a cycle of containment puts it inside itself).
            let mut inside = Bits(vec![0; bits.len()]);
            let mut stack = vec![c];
            while let Some(u) = stack.pop() {
                for e in self
                    .graph
                    .edges_directed(NodeIndex::new(u as usize), Direction::Incoming)
                {
                    if self.relations[*e.weight() as usize].kind == "contained_in" {
                        let v = e.source().index();
                        if inside.insert(v) {
                            stack.push(v as Ix);
                        }
                    }
                }
            }
            for (b, i) in bits.iter_mut().zip(&inside.0) {
                *b &= i;
            }
        }
        Ok(bits)
    }

    /// Present resources of `kind` (if given) matching every label
    /// selector, as bits.
    fn matching(&self, kind: Option<&str>, labels: &[LabelSelector]) -> Vec<u64> {
        let mut bits = self.present.clone();
        if kind.is_none() && labels.is_empty() {
            return bits;
        }
        let cat = self.catalog.get_or_init(|| Catalog::build(&self.resources));
        if let Some(kind) = kind {
            keep_only(&mut bits, cat.kinds.get(kind).into_iter(), false);
        }
        for l in labels {
            let values = |k: &str| cat.labels.get(k).into_iter().flat_map(|m| m.values());
            let value = |k: &str, v: &str| cat.labels.get(k).and_then(|m| m.get(v));
            match l {
                LabelSelector::Eq(k, v) => keep_only(&mut bits, value(k, v).into_iter(), false),
                LabelSelector::Ne(k, v) => keep_only(&mut bits, value(k, v).into_iter(), true),
                LabelSelector::Has(k) => keep_only(&mut bits, values(k), false),
            }
        }
        bits
    }

    /// Single points of failure: every candidate (present resources, or
    /// those matching `scope`) whose failure alone takes down at least one
    /// resource matching `critical` other than itself. Sorted by how many
    /// critical resources each takes down, most first. An error when no
    /// present resource matches `critical`, or none matches `scope`: a typo
    /// must not read as "no single points of failure".
    ///
    /// Only ancestors of critical resources in the impact graph can qualify,
    /// so only they are tried; each try is a down-propagation in per-thread
    /// scratch space (no allocation), spread over the available cores.
    pub fn spofs(
        &self,
        scope: Option<&Selector>,
        critical: &[LabelSelector],
    ) -> Result<Vec<Spof>, SpofError> {
        self.spofs_counted(scope, critical).map(|(found, _)| found)
    }

    /// [`Snapshot::spofs`], with how the answers were got.
    pub fn spofs_counted(
        &self,
        scope: Option<&Selector>,
        critical: &[LabelSelector],
    ) -> Result<(Vec<Spof>, SpofWork), SpofError> {
        let n = self.resources.len();
        let in_scope = match scope {
            Some(s) if !s.is_empty() => {
                let bits = self.selected(s).map_err(SpofError::UnknownResource)?;
                if bits.iter().all(|&w| w == 0) {
                    return Err(SpofError::NoMatch(format!(
                        "the scope '{s}' matches no present resource"
                    )));
                }
                Some(bits)
            }
            _ => None,
        };
        let is_critical = self.matching(None, critical);
        // A typo in either selector must not read as "no single points of
        // failure".
        if is_critical.iter().all(|&w| w == 0) {
            let names: Vec<String> = critical.iter().map(|c| c.to_string()).collect();
            // `kind=database` reads as a label named kind: say so.
            let not_labels: Vec<&str> = critical
                .iter()
                .map(|c| match c {
                    LabelSelector::Eq(k, _) | LabelSelector::Ne(k, _) | LabelSelector::Has(k) => {
                        k.as_str()
                    }
                })
                .filter(|k| matches!(*k, "kind" | "contained_in" | "containedIn" | "id"))
                .collect();
            let hint = match not_labels.first() {
                Some(k) => format!(
                    " ('{k}' is read as a label key here: the critical set is chosen by labels only, e.g. tier=1)"
                ),
                None => String::new(),
            };
            return Err(SpofError::NoMatch(format!(
                "no present resource is critical by '{}': nothing to take down (check the label, or name the critical set){hint}",
                names.join(",")
            )));
        }
        // The search runs on the locality-ordered copy of the edges, and
        // tries candidates in that order: consecutive candidates are near
        // each other in the graph, so their passes share cached state.
        let local = self.local();
        let to_local = |bits: &[u64]| {
            let mut out = vec![0u64; n.div_ceil(64)];
            for ix in members(bits) {
                let u = local.local_of[ix as usize] as usize;
                out[u / 64] |= 1 << (u % 64);
            }
            out
        };
        // Critical flags in local numbering, as a bitset (128 KB for a
        // million resources: it stays in cache).
        let crit_bits = to_local(&is_critical);
        // Ancestors of critical resources: the only resources that can take
        // one down. (Impact edges join present resources only, so they are
        // all present.) Found by sweeps over the local rows, which read
        // memory in order, where a walk back from the critical resources
        // along the reverse edges jumps about a million-resource graph
        // (80 ms on the large estate; the sweeps take 20). The first sweep
        // goes from the last node to the first: an edge to a higher number
        // leads to a node it has settled. The nodes it leaves out that have
        // edges are listed, and swept again, in alternate directions, until
        // a sweep adds none: each finds those whose edge to an ancestor
        // leads the other way, and a node once in is not read again.
        let has = |bits: &[u64], v: usize| bits[v / 64] >> (v % 64) & 1 != 0;
        let fwd = &local.fwd;
        let reaches = |anc: &[u64], u: u32| {
            fwd.range(u)
                .any(|p| has(anc, (fwd.other[p] & NODE) as usize))
        };
        let mut anc = crit_bits.clone();
        let mut rest = Vec::new();
        for u in (0..n as u32).rev() {
            if has(&anc, u as usize) || fwd.range(u).is_empty() {
                continue;
            }
            if reaches(&anc, u) {
                anc[u as usize / 64] |= 1 << (u % 64);
            } else {
                rest.push(u);
            }
        }
        // `rest` is in descending order; the next sweep goes up.
        let mut up = true;
        loop {
            let before = rest.len();
            if up {
                rest.reverse();
            }
            rest.retain(|&u| {
                let found = reaches(&anc, u);
                if found {
                    anc[u as usize / 64] |= 1 << (u % 64);
                }
                !found
            });
            if up {
                rest.reverse();
            }
            if rest.len() == before {
                break;
            }
            up = !up;
        }
        if let Some(scope) = &in_scope {
            for (a, s) in anc.iter_mut().zip(to_local(scope)) {
                *a &= s;
            }
        }
        // Nodes with the same impact edges as others are tried as a group
        // (see `Local::same_rows`); the rest one by one.
        let candidates: Vec<u32> = members(&anc)
            .filter(|&u| !has(&local.grouped, u as usize))
            .collect();
        let groups: Vec<Vec<u32>> = local
            .groups
            .iter()
            .map(|g| {
                g.iter()
                    .copied()
                    .filter(|&u| has(&anc, u as usize))
                    .collect::<Vec<u32>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .clamp(1, 8);
        // Candidates are handed out in blocks, in locality order: a thread's
        // consecutive candidates are neighbours (their cascades share cached
        // state), and a thread that drew cheap ones takes more blocks (the
        // estate's roots come first and take down far more than its leaves,
        // so equal halves would leave one thread idle). Groups go first,
        // one at a time: each is at least one pass, often a large one.
        const BLOCK: usize = 256;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let next_group = std::sync::atomic::AtomicUsize::new(0);
        let refused: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
        let workers = threads
            .min(candidates.len().div_ceil(BLOCK) + groups.len())
            .max(1);
        // A SPOF's record, when x takes down a critical resource.
        let record = |out: &mut Vec<Spof>, x: u32, down_count: usize, crit: &[u32]| {
            if !crit.is_empty() {
                // In id order, sorted here: on every worker at once.
                let mut critical_down: Vec<Ix> =
                    crit.iter().map(|&v| local.ix_of[v as usize]).collect();
                critical_down.sort_unstable();
                out.push(Spof {
                    node: local.ix_of[x as usize],
                    critical_down,
                    down_count,
                });
            }
        };
        let (mut found, mut work): (Vec<Spof>, SpofWork) = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (crit_bits, next, next_group, candidates, groups, record, refused) = (
                        &crit_bits,
                        &next,
                        &next_group,
                        &candidates,
                        &groups,
                        &record,
                        &refused,
                    );
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        let mut work = SpofWork::default();
                        let mut pass = SpofPass::new(local);
                        let mut crit = Vec::new();
                        loop {
                            let g = next_group.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(group) = groups.get(g) else {
                                break;
                            };
                            let x = group[0];
                            crit.clear();
                            let down_count = pass.run(local, crit_bits, x, &mut crit);
                            work.passes += 1;
                            let ix = local.ix_of[x as usize];
                            let into_x = self
                                .rev
                                .range(ix)
                                .map(|p| local.local_of[self.rev.to(p) as usize]);
                            let (shared, own) = pass.shared(into_x, &group[1..]);
                            record(&mut out, x, down_count, &crit);
                            work.shared += shared.len();
                            for y in shared {
                                record(&mut out, y, down_count, &crit);
                            }
                            // The others are anyone's: a large group of
                            // them must not keep one worker busy alone.
                            refused.lock().expect("spof worker").extend(own);
                        }
                        loop {
                            let start = next.fetch_add(BLOCK, std::sync::atomic::Ordering::Relaxed);
                            if start >= candidates.len() {
                                break;
                            }
                            let end = (start + BLOCK).min(candidates.len());
                            for &x in &candidates[start..end] {
                                crit.clear();
                                let simple = local.simple[x as usize] as usize;
                                let down_count = if simple > 0 {
                                    work.from_rows += 1;
                                    // Its hard targets are all it takes
                                    // down; the row is sorted, so a
                                    // repeated target is adjacent.
                                    let mut last = x;
                                    for p in local.fwd.range(x) {
                                        let t = local.fwd.other[p];
                                        let v = t & NODE;
                                        if t & AGG == 0
                                            && v != x
                                            && v != last
                                            && has(crit_bits, v as usize)
                                        {
                                            crit.push(v);
                                            last = v;
                                        }
                                    }
                                    simple
                                } else {
                                    work.passes += 1;
                                    pass.run(local, crit_bits, x, &mut crit)
                                };
                                record(&mut out, x, down_count, &crit);
                            }
                        }
                        loop {
                            let Some(y) = refused.lock().expect("spof worker").pop() else {
                                break;
                            };
                            crit.clear();
                            let down_count = pass.run(local, crit_bits, y, &mut crit);
                            work.passes += 1;
                            record(&mut out, y, down_count, &crit);
                        }
                        (out, work)
                    })
                })
                .collect();
            let mut found = Vec::new();
            let mut work = SpofWork::default();
            for h in handles {
                let (out, w) = h.join().expect("spof worker");
                found.extend(out);
                work.from_rows += w.from_rows;
                work.passes += w.passes;
                work.shared += w.shared;
            }
            (found, work)
        });
        work.candidates = candidates.len() + groups.iter().map(Vec::len).sum::<usize>();
        found.sort_by(|a, b| {
            b.critical_down
                .len()
                .cmp(&a.critical_down.len())
                .then(b.down_count.cmp(&a.down_count))
                .then(a.node.cmp(&b.node))
        });
        Ok((found, work))
    }

    /// The shortest chain of present relations between two resources,
    /// following relations in either direction. `None` when unconnected.
    pub fn path(&self, from: Ix, to: Ix) -> Option<Vec<RelIx>> {
        if from == to {
            return Some(Vec::new());
        }
        let mut prev: FxHashMap<u32, (u32, RelIx)> = FxHashMap::default();
        let mut queue = VecDeque::from([from]);
        prev.insert(from, (NONE, NONE));
        while let Some(u) = queue.pop_front() {
            let un = NodeIndex::new(u as usize);
            let out = self
                .graph
                .edges_directed(un, Direction::Outgoing)
                .map(|e| (e.target(), *e.weight()));
            let inc = self
                .graph
                .edges_directed(un, Direction::Incoming)
                .map(|e| (e.source(), *e.weight()));
            for (v, rel) in out.chain(inc) {
                let v = v.index() as u32;
                if prev.contains_key(&v) {
                    continue;
                }
                prev.insert(v, (u, rel));
                if v == to {
                    let mut path = Vec::new();
                    let mut cur = to;
                    while let Some(&(p, rel)) = prev.get(&cur) {
                        if p == NONE {
                            break;
                        }
                        path.push(rel);
                        cur = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(v);
            }
        }
        None
    }

    /// Dependency cycles: strongly connected groups of resources that need
    /// each other in a loop, along the relations a failure travels (the
    /// impact rules' edges: `depends_on`, `runs_on`, `contained_in`,
    /// `attached_to`, and a service through its instances, a load balancer
    /// through its targets), so two services whose instances call each
    /// other are one. Each comes with one cycle through its first member,
    /// in "needs" order, as an explanation. Sorted by size, largest first.
    pub fn cycles(&self) -> Vec<(Vec<Ix>, Vec<RelIx>)> {
        let n = self.resources.len();
        // `rev` rows go from a resource to what it needs.
        let mut needs: DiGraph<(), ()> = DiGraph::with_capacity(n, self.rev.rel.len());
        for _ in 0..n {
            needs.add_node(());
        }
        for v in 0..n as u32 {
            for p in self.rev.range(v) {
                needs.add_edge(
                    NodeIndex::new(v as usize),
                    NodeIndex::new(self.rev.to(p) as usize),
                    (),
                );
            }
        }
        let mut out: Vec<(Vec<Ix>, Vec<RelIx>)> = petgraph::algo::tarjan_scc(&needs)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut members: Vec<Ix> = c.iter().map(|n| n.index() as Ix).collect();
                members.sort_unstable();
                let set: rustc_hash::FxHashSet<Ix> = members.iter().copied().collect();
                // BFS from the first member back to itself inside the group.
                let start = members[0];
                let mut prev: FxHashMap<u32, (u32, RelIx)> = FxHashMap::default();
                let mut queue = VecDeque::from([start]);
                let mut cycle = Vec::new();
                'bfs: while let Some(u) = queue.pop_front() {
                    for p in self.rev.range(u) {
                        let (v, rel) = (self.rev.to(p), self.rev.rel[p]);
                        if !set.contains(&v) {
                            continue;
                        }
                        if v == start {
                            cycle.push(rel);
                            let mut cur = u;
                            while cur != start {
                                let (p, r) = prev[&cur];
                                cycle.push(r);
                                cur = p;
                            }
                            cycle.reverse();
                            break 'bfs;
                        }
                        if let std::collections::hash_map::Entry::Vacant(slot) = prev.entry(v) {
                            slot.insert((u, rel));
                            queue.push_back(v);
                        }
                    }
                }
                (members, cycle)
            })
            .collect();
        out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0[0].cmp(&b.0[0])));
        out
    }

    /// The locality-ordered copy of the forward edges, built on first use.
    fn local(&self) -> &Local {
        self.local
            .get_or_init(|| Local::build(&self.fwd, &self.agg_total))
    }

    /// Why a what-if's selector is refused when it chose every present
    /// resource (`chosen` of them), or None. "Everything fails" answers
    /// nothing, and it is what a typo in a negated label gives
    /// (`kind!=host` as a label: no resource has a label `kind`).
    pub fn selects_everything(&self, sel: &Selector, chosen: usize) -> Option<String> {
        let present: usize = self.present.iter().map(|w| w.count_ones() as usize).sum();
        (chosen >= present && present > 1).then(|| {
            format!(
                "'{sel}' selects every present resource ({present}): a what-if of everything failing answers nothing; check the selector (a label condition key!=value also matches resources without the label, and kind or containedIn are not labels)"
            )
        })
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

    /// Approximate heap bytes of the whole snapshot: resource and relation
    /// records (strings, labels, attributes, provenance), the id index and the
    /// graph structures.
    pub fn memory_estimate(&self) -> usize {
        fn s(x: &str) -> usize {
            x.len()
        }
        fn json(v: &serde_json::Value) -> usize {
            if v.is_null() {
                0
            } else {
                v.to_string().len() * 3
            }
        }
        fn prov(p: &[crate::model::Provenance]) -> usize {
            p.iter()
                .map(|p| std::mem::size_of::<crate::model::Provenance>() + s(&p.source))
                .sum()
        }
        let res: usize = self
            .resources
            .iter()
            .map(|r| {
                std::mem::size_of::<Resource>()
                    + s(&r.id)
                    + s(&r.kind)
                    + s(&r.name)
                    + r.labels.iter().map(|(k, v)| 48 + s(k) + s(v)).sum::<usize>()
                    + json(&r.attributes)
                    + prov(&r.sources)
                    // the id index: a key copy, the value, hash table overhead
                    + s(&r.id) + std::mem::size_of::<String>() + 8
            })
            .sum();
        let rel: usize = self
            .relations
            .iter()
            .map(|r| {
                std::mem::size_of::<Relation>()
                    + s(&r.from)
                    + s(&r.to)
                    + s(&r.kind)
                    + json(&r.attributes)
                    + prov(&r.sources)
            })
            .sum();
        res + rel + self.graph_bytes()
    }

    /// Approximate bytes held by the graph structures (not the resource and
    /// relation records): petgraph, the two CSR indexes, the present bits,
    /// and, once built, the SPOF search's locality copy and the selector
    /// catalog.
    pub fn graph_bytes(&self) -> usize {
        self.graph.node_count() * 8
            + self.graph.edge_count() * 16
            + self.fwd.bytes()
            + self.rev.bytes()
            + self.twin.len() * 4
            + self.agg_total.len() * 4
            + self.local.get().map_or(0, Local::bytes)
            + self.present.len() * 8
            + self.catalog.get().map_or(0, Catalog::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_empty_member_by_member_or_wholesale() {
        let mut b = Bits::default();
        b.grow(64 * 100);
        // Few members: only their words are zeroed.
        assert!(b.insert(3) && b.insert(6399) && !b.insert(3));
        b.clear(&[3, 6399]);
        assert!(b.0.iter().all(|&w| w == 0));
        // Many: the whole set.
        let many: Vec<u32> = (0..6400).step_by(7).collect();
        for &v in &many {
            b.insert(v as usize);
        }
        assert!(many.iter().all(|&v| b.has(v as usize)) && !b.has(1));
        b.clear(&many);
        assert!(b.0.iter().all(|&w| w == 0));
    }

    #[test]
    fn halfway_splits_the_members_at_a_word() {
        let mut bits = vec![0u64; 8];
        bits[0] = 0b1111; // 4 members
        bits[5] = 0b111; // 3
        bits[7] = 1; // 1
        assert_eq!(halfway(&bits, 8), (1, 4));
        bits[0] = 1;
        assert_eq!(halfway(&bits, 5), (6, 4));
        assert_eq!(halfway(&[0, 0], 0), (1, 0));
    }

    #[test]
    fn buckets_are_kept_only_while_they_hold_less_than_twice_the_estate() {
        // Items are 24 bytes: the cap's bytes in its doc depend on it.
        assert_eq!(std::mem::size_of::<Impacted>(), 24);
        let filled = |items: usize| -> Buckets { vec![Vec::with_capacity(items)] };
        let (mut a, mut b, mut c) = (filled(600), filled(600), filled(600));
        keep_buckets([&mut a, &mut b, &mut c], 1000);
        assert!([&a, &b, &c].iter().all(|x| x[0].capacity() >= 600));
        // The three lists' room is counted together, with each depth's
        // header: over 2n, all three start again.
        let (mut a, mut b, mut c) = (filled(600), filled(600), filled(800));
        keep_buckets([&mut a, &mut b, &mut c], 1000);
        assert!([&a, &b, &c].iter().all(|x| x.capacity() == 0));
    }
}
