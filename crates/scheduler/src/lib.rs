//! Placement: which node a pod should run on. A pure function over a snapshot of nodes and
//! pods (Nomad's shape): filter the nodes that can take the pod, score the rest, pick the best.
//! It never writes anything; the controller commits the binding through Raft.

use std::collections::HashMap;

use wasmkube_api::{Node, Pod};

/// Why no node could take a pod; the message goes into an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable(pub String);

/// Pods bound to each node, by node name: kept up to date by the caller as it places pods,
/// so a placement costs O(nodes), not O(pods).
pub type NodeLoad = HashMap<String, usize>;

/// The load of every node as `pods` bind them.
pub fn node_load<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> NodeLoad {
    let mut load = NodeLoad::new();
    for node in pods.into_iter().filter_map(|p| p.spec.node_name.as_ref()) {
        *load.entry(node.clone()).or_default() += 1;
    }
    load
}

/// Picks a node for `pod`: Ready, not cordoned, with a free pod slot; then the one running
/// the fewest pods (spreading replicas), ties broken by name for determinism.
pub fn place(pod: &Pod, nodes: &[Node], loads: &NodeLoad) -> Result<String, Unschedulable> {
    let load = |node: &Node| loads.get(&node.metadata.name).copied().unwrap_or(0);
    let mut reasons = Vec::new();
    let best = nodes
        .iter()
        .filter(|n| {
            let why = if !n.is_ready() {
                Some("not Ready")
            } else if n.spec.unschedulable {
                Some("cordoned")
            } else if load(n) >= n.pod_capacity() {
                Some("full")
            } else {
                None
            };
            if let Some(why) = why {
                reasons.push(format!("{}: {why}", n.metadata.name));
            }
            why.is_none()
        })
        .min_by(|a, b| load(a).cmp(&load(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    match best {
        Some(node) => Ok(node.metadata.name.clone()),
        None if nodes.is_empty() => {
            Err(Unschedulable(format!("no nodes to place pod {}", pod.metadata.name)))
        }
        None => {
            Err(Unschedulable(format!("0/{} nodes can take the pod ({})", nodes.len(), reasons.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkube_api::{Condition, NodeStatus, ObjectMeta};

    fn node(name: &str, ready: bool, slots: usize) -> Node {
        Node {
            metadata: ObjectMeta::named(None, name),
            status: Some(NodeStatus {
                capacity: [("pods".to_string(), slots.to_string())].into(),
                conditions: vec![Condition::new("Ready", ready)],
                addresses: vec![],
            }),
            ..Default::default()
        }
    }

    fn pod_on(name: &str, node: Option<&str>) -> Pod {
        let mut p = Pod { metadata: ObjectMeta::named(Some("default"), name), ..Default::default() };
        p.spec.node_name = node.map(str::to_string);
        p
    }

    #[test]
    fn spreads_to_the_least_loaded_ready_node() {
        let nodes = [node("a", true, 10), node("b", true, 10), node("c", false, 10)];
        let pods = [pod_on("p1", Some("a")), pod_on("p2", Some("a")), pod_on("p3", Some("b"))];
        assert_eq!(place(&pod_on("new", None), &nodes, &node_load(&pods)), Ok("b".to_string()));
    }

    #[test]
    fn refuses_with_reasons_when_nothing_fits() {
        let mut cordoned = node("b", true, 10);
        cordoned.spec.unschedulable = true;
        let nodes = [node("a", true, 1), cordoned, node("c", false, 10)];
        let pods = [pod_on("p1", Some("a"))];
        let err = place(&pod_on("new", None), &nodes, &node_load(&pods)).unwrap_err();
        assert_eq!(err.0, "0/3 nodes can take the pod (a: full, b: cordoned, c: not Ready)");
    }
}
