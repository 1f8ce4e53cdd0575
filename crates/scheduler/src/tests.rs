use std::collections::BTreeMap;

use wasmkube_api::{
    Condition, Container, NodeStatus, ObjectMeta, OwnerReference, PodSpec, ResourceRequirements,
    TopologySpreadConstraint,
};

use super::*;

fn node(name: &str, memory: &str, slots: usize, labels: &[(&str, &str)]) -> Node {
    let mut metadata = ObjectMeta::named(None, name);
    metadata.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Node {
        metadata,
        status: Some(NodeStatus {
            allocatable: [
                ("pods".to_string(), slots.to_string()),
                ("memory".to_string(), memory.to_string()),
                ("cpu".to_string(), "2".to_string()),
            ]
            .into(),
            conditions: vec![Condition::new("Ready", true)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(memory: Option<&str>, selector: &[(&str, &str)]) -> Pod {
    let resources = memory.map(|m| ResourceRequirements {
        requests: [("memory".to_string(), m.to_string())].into(),
        limits: BTreeMap::new(),
    });
    let mut metadata = ObjectMeta::named(Some("default"), "p");
    metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "d".into(),
        uid: "d-uid".into(),
        controller: Some(true),
    }];
    Pod {
        metadata,
        spec: PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "x".into(),
                resources,
                ..Default::default()
            }],
            node_selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn memory_requests_fill_nodes_and_the_rest_is_explained() {
    let nodes = [node("a", "256Mi", 110, &[]), node("b", "256Mi", 110, &[]), node("c", "256Mi", 110, &[])];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    let p = pod(Some("100Mi"), &[]);
    let placed: Vec<String> = (0..6).map(|_| s.place(&p).expect("fits")).collect();
    let mut per_node = placed.clone();
    per_node.sort();
    assert_eq!(per_node, ["a", "a", "b", "b", "c", "c"], "two per node, spread");
    assert_eq!(s.place(&p), Err(Unschedulable("0/3 nodes are available: 3 Insufficient memory.".into())));
}

#[test]
fn cpu_requests_fill_nodes_too_and_a_limit_alone_counts_as_the_request() {
    let nodes = [node("a", "1Gi", 110, &[]), node("b", "1Gi", 110, &[]), node("c", "1Gi", 110, &[])];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    let mut p = pod(None, &[]);
    let limits = [("cpu".to_string(), "700m".to_string())].into();
    p.spec.containers[0].resources = Some(ResourceRequirements { requests: BTreeMap::new(), limits });
    // 700m each: two fit in a node's 2 cores, a third does not.
    let mut placed: Vec<String> = (0..6).map(|_| s.place(&p).expect("fits")).collect();
    placed.sort();
    assert_eq!(placed, ["a", "a", "b", "b", "c", "c"]);
    assert_eq!(s.place(&p), Err(Unschedulable("0/3 nodes are available: 3 Insufficient cpu.".into())));
    // A pod that requests no CPU still fits (as Kubernetes' BestEffort pods do).
    assert!(s.place(&pod(None, &[])).is_ok());
    // 500m: the 600m left on each node still take one.
    let requests = [("cpu".to_string(), "500m".to_string())].into();
    p.spec.containers[0].resources = Some(ResourceRequirements { requests, limits: BTreeMap::new() });
    assert!(s.place(&p).is_ok());
}

#[test]
fn every_reason_is_counted_in_kubernetes_words() {
    let mut cordoned = node("b", "1Gi", 110, &[]);
    cordoned.spec.unschedulable = true;
    let mut not_ready = node("c", "1Gi", 110, &[("zone", "x")]);
    if let Some(status) = not_ready.status.as_mut() {
        status.conditions = vec![Condition::new("Ready", false)];
    }
    let nodes = [
        node("a", "64Mi", 110, &[("zone", "x")]),
        cordoned,
        not_ready,
        node("d", "1Gi", 110, &[("zone", "y")]),
        node("e", "1Gi", 0, &[("zone", "x")]),
    ];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    let err = s.place(&pod(Some("100Mi"), &[("zone", "x")])).unwrap_err();
    assert_eq!(
        err.0,
        "0/5 nodes are available: 1 Insufficient memory, 1 Too many pods, 1 node(s) didn't match node selector, \
         1 node(s) were not ready, 1 node(s) were unschedulable."
    );
    let mut none = Scheduler::new(&[], Usage::new(), Spread::new());
    assert_eq!(none.place(&pod(None, &[])).unwrap_err().0, "no nodes available to schedule pods");
}

#[test]
fn node_selector_places_only_on_matching_nodes() {
    let nodes = [node("a", "1Gi", 110, &[("zone", "x")]), node("b", "1Gi", 110, &[("zone", "y")])];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    for _ in 0..5 {
        assert_eq!(s.place(&pod(None, &[("zone", "y")])), Ok("b".to_string()));
    }
}

#[test]
fn replicas_spread_then_the_emptiest_node_fills_first() {
    let nodes = [node("a", "1Gi", 110, &[]), node("b", "1Gi", 110, &[]), node("c", "1Gi", 110, &[])];
    // a rejoined empty; b and c hold two replicas each and other pods.
    let usage: Usage = [
        ("b".to_string(), NodeUsage { pods: 30, ..NodeUsage::default() }),
        ("c".to_string(), NodeUsage { pods: 10, ..NodeUsage::default() }),
    ]
    .into();
    let spread: Spread = [("d-uid".to_string(), [("b".to_string(), 2), ("c".to_string(), 2)].into())].into();
    let mut s = Scheduler::new(&nodes, usage, spread);
    let placed: Vec<String> = (0..4).map(|_| s.place(&pod(None, &[])).expect("fits")).collect();
    assert_eq!(
        placed,
        ["a", "a", "a", "c"],
        "a catches up on replicas, then the least allocated wins the tie"
    );
}

#[test]
fn a_topology_key_spreads_across_its_domains() {
    let nodes = [
        node("a1", "1Gi", 110, &[("zone", "a")]),
        node("a2", "1Gi", 110, &[("zone", "a")]),
        node("b1", "1Gi", 110, &[("zone", "b")]),
    ];
    let mut p = pod(None, &[]);
    p.spec.topology_spread_constraints =
        vec![TopologySpreadConstraint { topology_key: "zone".into(), max_skew: 1, ..Default::default() }];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    let placed: Vec<String> = (0..4).map(|_| s.place(&p).expect("fits")).collect();
    let in_b = placed.iter().filter(|n| *n == "b1").count();
    assert_eq!(in_b, 2, "half the replicas in zone b, which has one node of three: {placed:?}");
}

#[test]
fn a_preferred_node_wins_when_it_fits_and_is_passed_over_when_it_does_not() {
    let nodes = [node("a", "256Mi", 110, &[]), node("b", "256Mi", 110, &[]), node("c", "256Mi", 110, &[])];
    let mut s = Scheduler::new(&nodes, Usage::new(), Spread::new());
    let mut p = pod(Some("200Mi"), &[]);
    p.metadata.annotations.insert(wasmkube_api::PREFERRED_NODE_ANNOTATION.into(), "c".into());
    // "a" is least allocated and first by name, but the pod prefers "c".
    assert_eq!(s.place(&p).as_deref(), Ok("c"));
    // "c" is full now: the preference gives way to a node that fits.
    assert_eq!(s.place(&p).as_deref(), Ok("a"));
    // A preferred node that is not Ready is not chosen.
    let mut down = nodes.clone();
    down[1].status.as_mut().expect("status").conditions = vec![Condition::new("Ready", false)];
    let mut s = Scheduler::new(&down, Usage::new(), Spread::new());
    p.metadata.annotations.insert(wasmkube_api::PREFERRED_NODE_ANNOTATION.into(), "b".into());
    assert_eq!(s.place(&p).as_deref(), Ok("a"));
}
