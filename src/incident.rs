//! Incident questions that need both the graph and the store's history:
//! "what changed upstream of the thing that broke?"

use std::collections::HashMap;

use crate::graph::{Dependency, Ix, Snapshot};
use crate::model::{Change, ImpactRule, Millis};
use crate::store::Store;

/// A dependency with the changes the store recorded for it in a window.
#[derive(Debug, Clone)]
pub struct ChangedDependency {
    /// The dependency (for a relation retired in the window, the resource it
    /// pointed to, one relation beyond the resource that needed it).
    pub dependency: Dependency,
    /// Its changes in the window (resource and relation changes), newest first.
    pub changes: Vec<Change>,
}

impl ChangedDependency {
    /// When it last changed.
    pub fn last_changed(&self) -> Millis {
        self.changes.first().map_or(0, |c| c.at)
    }
}

/// Everything `ix` needs (see [`Snapshot::dependencies`]) that changed since
/// `since`: created, updated, retired or revived, or whose relations did.
/// Relations retired in the window are followed too, and chains of them to
/// their end, so a dependency that was removed shows up, with what it
/// needed through relations also removed. Most recent change first.
pub async fn changed_dependencies(
    store: &Store,
    snap: &Snapshot,
    ix: Ix,
    max_depth: Option<u32>,
    since: Millis,
) -> anyhow::Result<Vec<ChangedDependency>> {
    let deps = snap.dependencies(ix, max_depth);
    let retired = store.retired_relations_since(since).await?;
    let deps = with_retired(snap, ix, max_depth, deps, &retired);
    let history = store
        .history_many(&ids_of(snap, &deps), Some(since))
        .await?;
    Ok(changed_of(snap, ix, deps, history))
}

/// The ids of dependencies, for [`Store::history_many`].
pub fn ids_of(snap: &Snapshot, deps: &[Dependency]) -> Vec<String> {
    deps.iter()
        .map(|d| snap.resource(d.node).id.clone())
        .collect()
}

/// The first step of [`changed_dependencies`], on the graph alone: `deps`
/// (the resource's present dependencies, [`Snapshot::dependencies`] with
/// the same `max_depth`) with what the `retired` relations (the store's
/// relation retirements in the window, oldest first) made it need.
pub fn with_retired(
    snap: &Snapshot,
    ix: Ix,
    max_depth: Option<u32>,
    mut deps: Vec<Dependency>,
    retired: &[Change],
) -> Vec<Dependency> {
    let mut depth_of: HashMap<Ix, usize> =
        deps.iter().enumerate().map(|(i, d)| (d.node, i)).collect();
    // Relations retired in the window whose failure semantics made `to` a
    // dependency of `from`, where `from` is the resource or one of its deps.
    // Each retired relation as needing end → (needed end, relation), in the
    // change log's order.
    let mut needs: HashMap<Ix, Vec<(Ix, Option<crate::graph::RelIx>)>> = HashMap::new();
    for c in retired {
        let (to, kind) = c.relation.as_ref().expect("filtered");
        let Some(rule) = ImpactRule::of(kind) else {
            continue;
        };
        let (needer, needed) = if rule.to_reaches_from {
            (c.resource_id.as_str(), to.as_str())
        } else {
            (to.as_str(), c.resource_id.as_str())
        };
        let (Some(needer), Some(needed)) = (snap.lookup(needer), snap.lookup(needed)) else {
            continue;
        };
        let rel = snap.lookup_relation(&c.resource_id, to, kind);
        needs.entry(needer).or_default().push((needed, rel));
    }
    // Breadth first, by depth, from the resource and everything it needs
    // now: a chain of retired relations (a → b → c, both dropped) is
    // followed to its end whatever order the ids sort in, and a resource
    // reached several ways gets its least depth.
    if !needs.is_empty() {
        use std::cmp::Reverse;
        // Least depth first; among equals, in the order they were found.
        let mut heap = std::collections::BinaryHeap::new();
        let mut seq = 0u64;
        heap.push(Reverse((0u32, seq, ix)));
        for d in &deps {
            seq += 1;
            heap.push(Reverse((d.depth, seq, d.node)));
        }
        while let Some(Reverse((depth, _, u))) = heap.pop() {
            if max_depth.is_some_and(|m| depth + 1 > m) {
                continue;
            }
            let Some(list) = needs.get(&u) else {
                continue;
            };
            let path = if u == ix {
                Vec::new()
            } else {
                deps[depth_of[&u]].path.clone()
            };
            for &(v, rel) in list {
                if v == ix || depth_of.contains_key(&v) {
                    continue;
                }
                let mut p = path.clone();
                p.extend(rel);
                depth_of.insert(v, deps.len());
                deps.push(Dependency {
                    node: v,
                    depth: depth + 1,
                    path: p,
                });
                seq += 1;
                heap.push(Reverse((depth + 1, seq, v)));
            }
        }
    }
    deps
}

/// The last step of [`changed_dependencies`]: the dependencies of `ix`
/// with their changes in `history` (by id, either end of a relation,
/// newest first), most recently changed first.
pub fn changed_of(
    snap: &Snapshot,
    ix: Ix,
    deps: Vec<Dependency>,
    mut history: HashMap<String, Vec<Change>>,
) -> Vec<ChangedDependency> {
    let root = snap.resource(ix).id.as_str();
    let mut out: Vec<ChangedDependency> = deps
        .into_iter()
        .filter_map(|d| {
            let id = &snap.resource(d.node).id;
            let changes = history.remove(id)?;
            let on_path: std::collections::HashSet<(&str, &str, &str)> = d
                .path
                .iter()
                .map(|&r| {
                    let r = snap.relation(r);
                    (r.from.as_str(), r.to.as_str(), r.kind.as_str())
                })
                .collect();
            // Its own changes and those of its outgoing relations (what it
            // needs); an incoming relation (a new dependant of a hub) is not
            // an upstream change unless it is on the path, or is the
            // resource's own need of it (a `runs_on` added beside a
            // `depends_on` that explains the dependency, a `depends_on`
            // dropped where another path still leads to it).
            let changes: Vec<Change> = changes
                .into_iter()
                .filter(|c| match &c.relation {
                    None => true,
                    Some((to, kind)) => {
                        c.resource_id == *id
                            || (c.resource_id == root
                                && to == id
                                && ImpactRule::of(kind).is_some_and(|r| r.to_reaches_from))
                            || on_path.contains(&(
                                c.resource_id.as_str(),
                                to.as_str(),
                                kind.as_str(),
                            ))
                    }
                })
                .collect();
            (!changes.is_empty()).then_some(ChangedDependency {
                dependency: d,
                changes,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.last_changed()
            .cmp(&a.last_changed())
            .then(a.dependency.depth.cmp(&b.dependency.depth))
            .then(a.dependency.node.cmp(&b.dependency.node))
    });
    out
}
