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
    let mut deps: Vec<Dependency> = snap.dependencies(ix, max_depth);
    let mut depth_of: HashMap<Ix, usize> =
        deps.iter().enumerate().map(|(i, d)| (d.node, i)).collect();
    // Relations retired in the window whose failure semantics made `to` a
    // dependency of `from`, where `from` is the resource or one of its deps.
    let retired: Vec<Change> = store.retired_relations_since(since).await?;
    // Followed in rounds until one adds nothing, each round from what the
    // ones before it found: a chain of retired relations (a → b → c, both
    // dropped) is followed to its end whatever the order of the ids, and a
    // resource found two ways gets the shorter (the earlier round's) depth.
    loop {
        let mut found: Vec<(Ix, Dependency)> = Vec::new();
        for c in &retired {
            let (to, kind) = c.relation.as_ref().expect("filtered");
            let Some(rule) = ImpactRule::of(kind) else {
                continue;
            };
            // The needing end and the needed end of the retired relation.
            let (needer, needed) = if rule.to_reaches_from {
                (c.resource_id.as_str(), to.as_str())
            } else {
                (to.as_str(), c.resource_id.as_str())
            };
            let (Some(needer), Some(needed)) = (snap.lookup(needer), snap.lookup(needed)) else {
                continue;
            };
            if needed == ix || depth_of.contains_key(&needed) {
                continue;
            }
            let base = if needer == ix {
                Some((0, Vec::new()))
            } else {
                depth_of
                    .get(&needer)
                    .map(|&i| (deps[i].depth, deps[i].path.clone()))
            };
            let Some((depth, mut path)) = base else {
                continue;
            };
            if max_depth.is_some_and(|m| depth + 1 > m) {
                continue;
            }
            if found
                .iter()
                .any(|(n, d)| *n == needed && d.depth <= depth + 1)
            {
                continue;
            }
            if let Some(rel) = snap.lookup_relation(&c.resource_id, to, kind) {
                path.push(rel);
            }
            found.retain(|(n, _)| *n != needed);
            found.push((
                needed,
                Dependency {
                    node: needed,
                    depth: depth + 1,
                    path,
                },
            ));
        }
        if found.is_empty() {
            break;
        }
        for (needed, dep) in found {
            depth_of.insert(needed, deps.len());
            deps.push(dep);
        }
    }
    let ids: Vec<String> = deps
        .iter()
        .map(|d| snap.resource(d.node).id.clone())
        .collect();
    let mut history = store.history_many(&ids, Some(since)).await?;
    let mut out: Vec<ChangedDependency> = deps
        .into_iter()
        .filter_map(|d| {
            let id = &snap.resource(d.node).id;
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
            // an upstream change unless it is on the path.
            let changes: Vec<Change> = history
                .remove(id)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| match &c.relation {
                    None => true,
                    Some((to, kind)) => {
                        c.resource_id == *id
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
    Ok(out)
}
