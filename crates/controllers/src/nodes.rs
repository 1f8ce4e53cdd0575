//! Node lifecycle: a node whose heartbeat stops is marked NotReady (the scheduler and the
//! proxies leave it at once), and after a grace its pods are deleted, so their Deployments
//! replace them on Ready nodes — seconds, not Kubernetes' five minutes.
//!
//! Silence is measured on the leader's own clock, from when it saw a node's heartbeat move:
//! no two machines' clocks are ever compared. A new leader starts every node's clock afresh.
//! The node's agent stops its own pods when it has not recorded a heartbeat for `FENCE_AFTER`
//! (well inside `EVICT_AFTER`), so a node cut off from the cluster has stopped its copies
//! before their replacements start: never two copies of one pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use wasmkube_api::{Condition, Node, ObjectReference, Pod};

use crate::actions::{Action, PlanContext, event_for};

pub use wasmkube_api::lifecycle::{EVICT_AFTER, FENCE_AFTER, HEARTBEAT, NOT_READY_AFTER};

const SOURCE: &str = "node-controller";

/// When this leader last saw each node's heartbeat move.
#[derive(Debug, Default)]
pub struct HeartbeatClock {
    seen: HashMap<String, (Option<String>, Instant)>,
}

impl HeartbeatClock {
    /// Notes the heartbeats in `nodes` as of `now`.
    pub fn observe(&mut self, nodes: &[Node], now: Instant) {
        for node in nodes {
            let beat = heartbeat_of(node);
            match self.seen.get_mut(&node.metadata.name) {
                Some((seen, _)) if *seen == beat => {}
                _ => {
                    self.seen.insert(node.metadata.name.clone(), (beat, now));
                }
            }
        }
        self.seen.retain(|name, _| nodes.iter().any(|n| n.metadata.name == *name));
    }

    /// How long node `name` has been silent (zero for a node not observed yet).
    pub fn silent_for(&self, name: &str, now: Instant) -> Duration {
        self.seen.get(name).map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at))
    }
}

fn heartbeat_of(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == "Ready")?.last_heartbeat_time.clone()
}

/// Marks silent nodes NotReady and deletes the pods of nodes silent past the eviction grace.
pub fn plan_node_lifecycle<R: Rng>(
    nodes: &[Node],
    pods: &[Pod],
    clock: &HeartbeatClock,
    now: Instant,
    ctx: &mut PlanContext<R>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for node in nodes {
        let name = &node.metadata.name;
        let silent = clock.silent_for(name, now);
        if node.is_ready() && silent >= NOT_READY_AFTER {
            let message = format!("no heartbeat for {}s", silent.as_secs());
            let mut status = node.status.clone().unwrap_or_default();
            let mut ready = Condition::new("Ready", false);
            ready.status = "Unknown".into();
            ready.reason = Some("NodeStatusUnknown".into());
            ready.message = Some(message.clone());
            ready.last_transition_time = Some(ctx.now.clone());
            ready.last_heartbeat_time = heartbeat_of(node);
            status.conditions.retain(|c| c.type_ != "Ready");
            status.conditions.push(ready);
            actions.push(Action::UpdateNodeStatus {
                name: name.clone(),
                status: Box::new(status),
                resource_version: node.metadata.revision().unwrap_or(0),
            });
            let event = event_for(ctx, reference(node), "Warning", "NodeNotReady", message, SOURCE);
            actions.push(Action::RecordEvent(Box::new(event)));
        }
        if !node.is_ready() && silent >= EVICT_AFTER {
            // A share per pass (its deletes wake the next pass for the rest).
            let on_node = pods.iter().filter(|p| p.spec.node_name.as_deref() == Some(name.as_str()));
            for pod in on_node.take(crate::deployment::BURST_REPLICAS) {
                actions.push(Action::DeletePod {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone(),
                    resource_version: pod.metadata.revision().unwrap_or(0),
                });
                let involved = ObjectReference {
                    kind: "Pod".into(),
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                };
                let message = format!("node {name} has been silent for {}s", silent.as_secs());
                let event = event_for(ctx, involved, "Warning", "NodeLost", message, SOURCE);
                actions.push(Action::RecordEvent(Box::new(event)));
            }
        }
    }
    actions
}

fn reference(node: &Node) -> ObjectReference {
    ObjectReference {
        kind: "Node".into(),
        namespace: None,
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use wasmkube_api::{NodeStatus, ObjectMeta, PodSpec};

    fn node(name: &str, ready: bool, beat: &str, rv: u64) -> Node {
        let mut condition = Condition::new("Ready", ready);
        condition.last_heartbeat_time = Some(beat.into());
        let mut metadata = ObjectMeta::named(None, name);
        metadata.resource_version = Some(rv.to_string());
        Node {
            metadata,
            status: Some(NodeStatus { conditions: vec![condition], ..Default::default() }),
            ..Default::default()
        }
    }

    fn pod(name: &str, on: &str) -> Pod {
        let mut metadata = ObjectMeta::named(Some("default"), name);
        metadata.resource_version = Some("7".into());
        Pod {
            metadata,
            spec: PodSpec { node_name: Some(on.into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn ctx() -> PlanContext<StdRng> {
        PlanContext { now: "2026-11-22T00:00:00Z".into(), rng: StdRng::seed_from_u64(1) }
    }

    fn count(actions: &[Action], f: impl Fn(&Action) -> bool) -> usize {
        actions.iter().filter(|a| f(a)).count()
    }

    #[test]
    fn a_silent_node_goes_not_ready_then_loses_its_pods() {
        let t0 = Instant::now();
        let mut clock = HeartbeatClock::default();
        let pods = [pod("p1", "a"), pod("p2", "a"), pod("p3", "b")];

        clock.observe(&[node("a", true, "t1", 1), node("b", true, "t1", 2)], t0);
        // b keeps beating; a falls silent.
        let later = t0 + NOT_READY_AFTER;
        let nodes = [node("a", true, "t1", 1), node("b", true, "t2", 3)];
        clock.observe(&nodes, later);
        let actions = plan_node_lifecycle(&nodes, &pods, &clock, later, &mut ctx());
        let marked: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::UpdateNodeStatus { name, status, resource_version } => {
                    Some((name.clone(), status.conditions[0].status.clone(), *resource_version))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            marked,
            [("a".to_string(), "Unknown".to_string(), 1)],
            "only the silent node, at its version"
        );
        assert_eq!(count(&actions, |a| matches!(a, Action::DeletePod { .. })), 0, "no eviction yet");

        // Still silent past the eviction grace, now NotReady: its pods go, b's stay.
        let much_later = t0 + EVICT_AFTER;
        let nodes = [node("a", false, "t1", 4), node("b", true, "t3", 5)];
        clock.observe(&nodes, much_later);
        let actions = plan_node_lifecycle(&nodes, &pods, &clock, much_later, &mut ctx());
        let evicted: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::DeletePod { name, resource_version, .. } => Some((name.clone(), *resource_version)),
                _ => None,
            })
            .collect();
        assert_eq!(evicted, [("p1".to_string(), 7), ("p2".to_string(), 7)]);

        // A heartbeat brings it back: nothing more happens to it.
        let back = much_later + Duration::from_secs(1);
        let nodes = [node("a", true, "t4", 6), node("b", true, "t3", 5)];
        clock.observe(&nodes, back);
        assert!(plan_node_lifecycle(&nodes, &pods, &clock, back, &mut ctx()).is_empty());
    }

    #[test]
    fn a_new_leader_gives_every_node_a_fresh_grace() {
        // The same heartbeat, seen by a leader since t0 and by a clock started (as a new
        // leader's is) when the grace has run out for the old one.
        let t0 = Instant::now();
        let nodes = [node("a", true, "long-ago", 1)];
        let mut old = HeartbeatClock::default();
        old.observe(&nodes, t0);
        let then = t0 + NOT_READY_AFTER;
        old.observe(&nodes, then);
        assert!(!plan_node_lifecycle(&nodes, &[], &old, then, &mut ctx()).is_empty(), "the old clock acts");
        let mut fresh = HeartbeatClock::default();
        fresh.observe(&nodes, then);
        assert!(plan_node_lifecycle(&nodes, &[], &fresh, then, &mut ctx()).is_empty(), "a fresh one waits");
        assert_eq!(fresh.silent_for("unknown", then), Duration::ZERO);
    }
}
