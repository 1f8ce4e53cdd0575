//! Placement of unbound pods, including the ones a plan is about to create (so a new pod is
//! created already bound: one write instead of two).

use rand::Rng;
use wasmkube_api::{ObjectReference, Pod};

use crate::actions::{Action, PlanContext, event_for};
use crate::snapshot::Snapshot;

const SOURCE: &str = "scheduler";

/// Binds every unbound pod, existing or in `actions`, to a node chosen by the scheduler.
pub fn plan_placement<R: Rng>(snapshot: &Snapshot, actions: &mut Vec<Action>, ctx: &mut PlanContext<R>) {
    // Load as the scheduler should see it: existing pods plus those being placed, counted
    // once and kept up to date, so each placement costs O(nodes).
    let mut load = wasmkube_scheduler::node_load(&snapshot.pods);
    let mut events = Vec::new();
    for action in actions.iter_mut() {
        if let Action::CreatePod(pod) = action
            && pod.spec.node_name.is_none()
        {
            match wasmkube_scheduler::place(pod, &snapshot.nodes, &load) {
                Ok(node) => {
                    *load.entry(node.clone()).or_default() += 1;
                    pod.spec.node_name = Some(node.clone());
                    events.push(scheduled(ctx, pod, &node));
                }
                Err(why) => events.push(unschedulable(ctx, pod, why.0)),
            }
        }
    }
    for pod in snapshot.pods.iter().filter(|p| p.spec.node_name.is_none()) {
        match wasmkube_scheduler::place(pod, &snapshot.nodes, &load) {
            Ok(node) => {
                *load.entry(node.clone()).or_default() += 1;
                events.push(scheduled(ctx, pod, &node));
                actions.push(Action::BindPod { pod: Box::new(pod.clone()), node });
            }
            Err(why) => events.push(unschedulable(ctx, pod, why.0)),
        }
    }
    actions.extend(events.into_iter().map(|e| Action::RecordEvent(Box::new(e))));
}

fn reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: "Pod".into(),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
    }
}

fn scheduled<R: Rng>(ctx: &mut PlanContext<R>, pod: &Pod, node: &str) -> wasmkube_api::Event {
    let msg = format!("Successfully assigned {} to {node}", pod.metadata.name);
    event_for(ctx, reference(pod), "Normal", "Scheduled", msg, SOURCE)
}

fn unschedulable<R: Rng>(ctx: &mut PlanContext<R>, pod: &Pod, why: String) -> wasmkube_api::Event {
    event_for(ctx, reference(pod), "Warning", "FailedScheduling", why, SOURCE)
}
