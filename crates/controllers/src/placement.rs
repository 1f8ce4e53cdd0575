//! Placement of unbound pods, including the ones a plan is about to create (so a new pod is
//! created already bound: one write instead of two).

use rand::Rng;
use wasmkube_api::{Node, ObjectReference, Pod};
use wasmkube_scheduler::{Scheduler, Spread, Usage};

use crate::actions::{Action, PlanContext, event_for};

const SOURCE: &str = "scheduler";

/// Binds every unbound pod, existing (`unbound`) or in `actions`, to a node chosen by the
/// scheduler, given what each node holds (`usage`) and where each owner's replicas are
/// (`spread`); each placement is recorded before the next, at O(nodes) per pod.
pub fn plan_placement<R: Rng>(
    nodes: &[Node],
    usage: Usage,
    spread: Spread,
    unbound: &[Pod],
    actions: &mut Vec<Action>,
    ctx: &mut PlanContext<R>,
) {
    let mut scheduler = Scheduler::new(nodes, usage, spread);
    let mut events = Vec::new();
    for action in actions.iter_mut() {
        if let Action::CreatePod(pod) = action
            && pod.spec.node_name.is_none()
        {
            match scheduler.place(pod) {
                Ok(node) => {
                    pod.spec.node_name = Some(node.clone());
                    events.push(scheduled(ctx, pod, &node));
                }
                Err(why) => events.push(unschedulable(ctx, pod, why.0)),
            }
        }
    }
    for pod in unbound.iter().filter(|p| p.spec.node_name.is_none()) {
        match scheduler.place(pod) {
            Ok(node) => {
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
