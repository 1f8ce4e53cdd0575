//! Feasibility: can this node take this pod at all? The first check that fails names why.

use wasmkube_api::{Node, Pod};

use crate::NodeUsage;

/// Why a node cannot take a pod, worded as Kubernetes' scheduler words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unfit {
    NotReady,
    Cordoned,
    Selector,
    TooManyPods,
    Memory,
    Cpu,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unfit::NotReady => "node(s) were not ready",
            Unfit::Cordoned => "node(s) were unschedulable",
            Unfit::Selector => "node(s) didn't match node selector",
            Unfit::TooManyPods => "Too many pods",
            Unfit::Memory => "Insufficient memory",
            Unfit::Cpu => "Insufficient cpu",
        })
    }
}

pub(crate) fn check(pod: &Pod, node: &Node, usage: NodeUsage) -> Option<Unfit> {
    if !node.is_ready() {
        return Some(Unfit::NotReady);
    }
    if node.spec.unschedulable {
        return Some(Unfit::Cordoned);
    }
    let labels = &node.metadata.labels;
    if !pod.spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return Some(Unfit::Selector);
    }
    if usage.pods >= node.pod_capacity() {
        return Some(Unfit::TooManyPods);
    }
    let request = crate::Requests::of(pod);
    let after = usage.requested.plus(request);
    if request.memory > 0 && after.memory > node.allocatable_memory() {
        return Some(Unfit::Memory);
    }
    if request.cpu > 0 && after.cpu > node.allocatable_cpu_millis() {
        return Some(Unfit::Cpu);
    }
    None
}
