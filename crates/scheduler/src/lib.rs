//! Placement: which node a pod should run on, in Nomad's shape — feasibility checks remove
//! the nodes that cannot take the pod, ranking orders the rest — over a snapshot of nodes and
//! what is already placed on them. A pure library: it never writes anything; the controllers
//! commit the bindings through Raft.
//!
//! Feasible: Ready, not cordoned, matching the pod's `nodeSelector`, a free pod slot, and room
//! for the pod's memory and CPU requests within the node's allocatable memory and CPU.
//! Ranked: the node the pod prefers (`PREFERRED_NODE_ANNOTATION`) first, then fewest replicas of the same owner in the pod's topology domain, then on the node
//! (spread), then least allocated (slots, memory or CPU, whichever is fullest). A pod that fits nowhere gets Kubernetes' explanation:
//! `0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't match node selector.`

mod feasible;
mod rank;

use std::collections::HashMap;

use wasmkube_api::{Node, Pod};

pub use feasible::Unfit;

/// Why no node could take a pod; the message goes into a FailedScheduling event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable(pub String);

/// What a pod asks the scheduler to reserve for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Bytes.
    pub memory: u64,
    /// Millicores.
    pub cpu: u64,
}

impl Requests {
    pub fn of(pod: &Pod) -> Self {
        Requests { memory: pod.memory_request(), cpu: pod.cpu_request_millis() }
    }

    pub fn plus(self, other: Requests) -> Self {
        Requests { memory: self.memory.saturating_add(other.memory), cpu: self.cpu.saturating_add(other.cpu) }
    }

    pub fn minus(self, other: Requests) -> Self {
        Requests { memory: self.memory.saturating_sub(other.memory), cpu: self.cpu.saturating_sub(other.cpu) }
    }
}

/// What is placed on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    pub pods: usize,
    /// Sum of the placed pods' requests.
    pub requested: Requests,
}

impl NodeUsage {
    pub fn add(&mut self, pod: &Pod) {
        self.pods += 1;
        self.requested = self.requested.plus(Requests::of(pod));
    }
}

/// Usage by node name.
pub type Usage = HashMap<String, NodeUsage>;

/// Replicas of each owner (Deployment uid) by node name.
pub type Spread = HashMap<String, HashMap<String, usize>>;

/// One round of placements over a snapshot: each placement is recorded, so the next sees
/// the pods placed before it (Nomad's plan), at O(nodes) per pod.
pub struct Scheduler<'a> {
    nodes: &'a [Node],
    usage: Usage,
    spread: Spread,
}

impl<'a> Scheduler<'a> {
    pub fn new(nodes: &'a [Node], usage: Usage, spread: Spread) -> Self {
        Scheduler { nodes, usage, spread }
    }

    /// Picks a node for `pod` and records it there, or explains why none can take it.
    pub fn place(&mut self, pod: &Pod) -> Result<String, Unschedulable> {
        let mut unfit: HashMap<Unfit, usize> = HashMap::new();
        let mut best: Option<(rank::Score, &Node)> = None;
        for node in self.nodes {
            let usage = self.usage.get(&node.metadata.name).copied().unwrap_or_default();
            if let Some(why) = feasible::check(pod, node, usage) {
                *unfit.entry(why).or_default() += 1;
                continue;
            }
            let score = rank::score(pod, node, usage, self.nodes, &self.spread);
            if best.as_ref().is_none_or(|(b, _)| score < *b) {
                best = Some((score, node));
            }
        }
        let Some((_, node)) = best else { return Err(explain(self.nodes.len(), unfit)) };
        let name = node.metadata.name.clone();
        self.usage.entry(name.clone()).or_default().add(pod);
        if let Some(owner) = pod.owner_uid() {
            *self.spread.entry(owner.to_string()).or_default().entry(name.clone()).or_default() += 1;
        }
        Ok(name)
    }
}

/// Kubernetes' FitError text: counts of each reason, reasons in a stable order.
fn explain(nodes: usize, unfit: HashMap<Unfit, usize>) -> Unschedulable {
    if nodes == 0 {
        return Unschedulable("no nodes available to schedule pods".into());
    }
    let mut reasons: Vec<(String, usize)> = unfit.into_iter().map(|(why, n)| (why.to_string(), n)).collect();
    reasons.sort();
    let reasons: Vec<String> = reasons.into_iter().map(|(why, n)| format!("{n} {why}")).collect();
    Unschedulable(format!("0/{nodes} nodes are available: {}.", reasons.join(", ")))
}

#[cfg(test)]
mod tests;
