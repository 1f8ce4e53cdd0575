//! Ranking among the feasible nodes: spread one owner's replicas (across the topology
//! domains its pods name, then across nodes), then prefer the least allocated node.

use wasmkube_api::{Node, PREFERRED_NODE_ANNOTATION, Pod};

use crate::{NodeUsage, Spread};

/// Lower is better; compared field by field, the node's name last for determinism.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Score {
    /// Not the node the pod prefers (`PREFERRED_NODE_ANNOTATION`), when it names one.
    elsewhere: bool,
    in_domain: usize,
    on_node: usize,
    /// Per mille of the node's pod slots, memory and CPU in use after placing the pod (the
    /// largest).
    allocated: u64,
    name: String,
}

pub(crate) fn score(pod: &Pod, node: &Node, usage: NodeUsage, nodes: &[Node], spread: &Spread) -> Score {
    let name = node.metadata.name.clone();
    let replicas = pod.owner_uid().and_then(|owner| spread.get(owner));
    let on = |n: &Node| replicas.and_then(|r| r.get(&n.metadata.name)).copied().unwrap_or(0);
    let in_domain = pod
        .spec
        .topology_spread_constraints
        .iter()
        .map(|c| match node.metadata.labels.get(&c.topology_key) {
            Some(domain) => {
                nodes.iter().filter(|n| n.metadata.labels.get(&c.topology_key) == Some(domain)).map(on).sum()
            }
            // A node outside every domain of the key is the last choice.
            None => usize::MAX,
        })
        .max()
        .unwrap_or(0);
    let permille = |used: u64, total: u64| used.saturating_mul(1000).checked_div(total).unwrap_or(0);
    let after = usage.requested.plus(crate::Requests::of(pod));
    let memory = permille(after.memory, node.allocatable_memory());
    let cpu = permille(after.cpu, node.allocatable_cpu_millis());
    let slots = permille(usage.pods as u64 + 1, node.pod_capacity() as u64);
    let elsewhere = pod.metadata.annotations.get(PREFERRED_NODE_ANNOTATION).is_some_and(|n| *n != name);
    Score { elsewhere, in_domain, on_node: on(node), allocated: memory.max(cpu).max(slots), name }
}
