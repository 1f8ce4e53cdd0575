//! Node lifecycle, judged on the leader from two signals:
//!
//! - Raft contact (`wasmkube_raft::Contact`): a node the leader has not been in touch with
//!   for the node grace (`--node-grace`, 1 s by default: about seven missed Raft heartbeats)
//!   is lost — its process is gone or it is cut off. It is marked NotReady (the scheduler and
//!   every proxy leave it at once) and its pods are deleted right away, so their Deployments
//!   replace them on the nodes that remain, as new pods with new names.
//! - The agent's heartbeat, written through the log: a node whose Raft layer answers but
//!   whose agent has stopped recording heartbeats is marked NotReady after
//!   `NOT_READY_AFTER` and loses its pods after `EVICT_AFTER`.
//!
//! Silence is measured on the leader's own clock: no two machines' clocks are compared. A
//! new leader starts every node's clock afresh, but for its predecessor, which it has not
//! heard from since it was last heard leading.
//!
//! The safety rule: a replacement is a new pod, so a Deployment may briefly have an extra
//! copy on a node that is cut off but running. That node stops its own pods once it has
//! been out of touch with its leader for the same grace (and when it cannot record a
//! heartbeat for `FENCE_AFTER`), and no other node's proxy routes to it meanwhile, since it
//! is NotReady. When it is back it catches up before it starts anything, so a pod that was
//! replaced never runs there again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use wasmkube_api::{Condition, Node, ObjectReference, Pod};
use wasmkube_raft::ClusterHandle;

use crate::actions::{Action, PlanContext, event_for};

pub use wasmkube_api::lifecycle::{EVICT_AFTER, FENCE_AFTER, HEARTBEAT, NODE_GRACE, NOT_READY_AFTER};

const SOURCE: &str = "node-controller";

/// When this leader last saw each node's heartbeat move.
#[derive(Debug, Default)]
pub struct HeartbeatClock {
    seen: HashMap<String, (Option<String>, Instant)>,
}

/// The nodes this leader has been out of touch with for `grace` or more (by Raft contact),
/// by name, with for how long. Empty on a node that does not lead.
pub fn lost_nodes(cluster: &ClusterHandle, grace: Duration) -> HashMap<String, Duration> {
    let contact = cluster.contact();
    let me = cluster.node_id();
    cluster
        .membership()
        .members
        .into_values()
        .filter(|m| m.id != me)
        // Silent for the grace and failing to take messages: gone, not merely slow.
        .filter(|m| contact.unreachable(m.id))
        .filter_map(|m| contact.silence(m.id).filter(|s| *s >= grace).map(|s| (m.name, s)))
        .collect()
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

/// Marks lost and silent nodes NotReady, and deletes the pods (`pods`: those on NotReady
/// nodes) of lost nodes and of nodes silent past the eviction grace. `lost` holds the nodes
/// the leader has been out of touch with for the node grace, with for how long.
pub fn plan_node_lifecycle<R: Rng>(
    nodes: &[Node],
    pods: &[Pod],
    clock: &HeartbeatClock,
    lost: &HashMap<String, Duration>,
    now: Instant,
    ctx: &mut PlanContext<R>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for node in nodes {
        let name = &node.metadata.name;
        let silent = clock.silent_for(name, now);
        let unreachable = lost.get(name).copied();
        if node.is_ready() && (unreachable.is_some() || silent >= NOT_READY_AFTER) {
            let message = match unreachable {
                Some(d) => format!("not heard from for {:.1}s", d.as_secs_f64()),
                None => format!("no heartbeat for {}s", silent.as_secs()),
            };
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
        if !node.is_ready() && (unreachable.is_some() || silent >= EVICT_AFTER) {
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
                let message = match unreachable {
                    Some(d) => format!("node {name} has not been heard from for {:.1}s", d.as_secs_f64()),
                    None => format!("node {name} has recorded no heartbeat for {}s", silent.as_secs()),
                };
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

    fn none() -> HashMap<String, Duration> {
        HashMap::new()
    }

    #[test]
    fn a_lost_node_goes_not_ready_and_loses_its_pods_without_waiting_for_heartbeats() {
        let t0 = Instant::now();
        let mut clock = HeartbeatClock::default();
        let nodes = [node("a", true, "t1", 1), node("b", true, "t1", 2)];
        clock.observe(&nodes, t0);
        // Its last heartbeat is fresh, but the leader has not been in touch with a for 1.2 s.
        let lost: HashMap<String, Duration> = [("a".to_string(), Duration::from_millis(1200))].into();
        let actions = plan_node_lifecycle(&nodes, &[], &clock, &lost, t0, &mut ctx());
        let marked: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::UpdateNodeStatus { name, status, .. } => {
                    Some((name.clone(), status.conditions[0].message.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(marked, [("a".to_string(), Some("not heard from for 1.2s".to_string()))]);
        // Once NotReady, its pods go at once, not after the eviction grace.
        let nodes = [node("a", false, "t1", 3), node("b", true, "t1", 2)];
        let pods = [pod("p1", "a"), pod("p2", "a")];
        let actions = plan_node_lifecycle(&nodes, &pods, &clock, &lost, t0, &mut ctx());
        assert_eq!(count(&actions, |a| matches!(a, Action::DeletePod { .. })), 2);
        // In touch again (and beating): nothing more happens.
        let nodes = [node("a", true, "t2", 4), node("b", true, "t1", 2)];
        clock.observe(&nodes, t0);
        assert!(plan_node_lifecycle(&nodes, &pods, &clock, &none(), t0, &mut ctx()).is_empty());
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
        let actions = plan_node_lifecycle(&nodes, &pods, &clock, &none(), later, &mut ctx());
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
        let actions = plan_node_lifecycle(&nodes, &pods, &clock, &none(), much_later, &mut ctx());
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
        assert!(plan_node_lifecycle(&nodes, &pods, &clock, &none(), back, &mut ctx()).is_empty());
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
        assert!(
            !plan_node_lifecycle(&nodes, &[], &old, &none(), then, &mut ctx()).is_empty(),
            "the old clock acts"
        );
        let mut fresh = HeartbeatClock::default();
        fresh.observe(&nodes, then);
        assert!(
            plan_node_lifecycle(&nodes, &[], &fresh, &none(), then, &mut ctx()).is_empty(),
            "a fresh one waits"
        );
        assert_eq!(fresh.silent_for("unknown", then), Duration::ZERO);
    }
}
