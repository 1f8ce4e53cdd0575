//! What the agent reports for each sandbox.

use wasmkube_api::{Condition, PodPhase, PodStatus};

use crate::sandbox::Sandbox;

pub(crate) fn of(sandbox: &Sandbox, node: &str) -> PodStatus {
    let mut status = PodStatus { host_ip: Some(node.to_string()), ..Default::default() };
    match sandbox {
        Sandbox::Http { started, prober, restarts, last_state, crashed, .. } => {
            status.phase = Some(PodPhase::Running.as_str().into());
            status.start_time = Some(started.clone());
            // Ready once its probes say so (at once when it has none).
            let ready = prober.as_ref().is_none_or(|p| p.state.is_ready());
            status.conditions = vec![Condition::new("Ready", ready)];
            status.restart_count = *restarts;
            status.last_state = last_state.clone().map(|t| wasmkube_api::LastState { terminated: Some(*t) });
            if let Some((_, ended)) = crashed.as_deref() {
                status.conditions = vec![Condition::new("Ready", false)];
                status.reason = Some("CrashLoopBackOff".into());
                status.message = ended.message.clone();
                // How it ended shows now, as the kubelet shows a crashed container's.
                status.last_state = Some(wasmkube_api::LastState { terminated: Some(ended.clone()) });
            }
        }
        Sandbox::Cli { pod, started, .. } => {
            let state = pod.state().borrow().clone();
            status.start_time = Some(started.clone());
            status.restart_count = state.restarts;
            let phase = match (state.finished, state.last_exit.as_deref()) {
                (true, Some("exit code 0")) => PodPhase::Succeeded,
                (true, _) => PodPhase::Failed,
                _ => PodPhase::Running,
            };
            status.phase = Some(phase.as_str().into());
            status.conditions = vec![Condition::new("Ready", state.running)];
            status.last_state = state.last_exit.as_deref().map(|exit| {
                // "exit code N", or a trap's message (a failure, as exit code 1 is).
                let code = exit.strip_prefix("exit code ").and_then(|c| c.parse().ok()).unwrap_or(1);
                let reason = if code == 0 { "Completed" } else { "Error" };
                wasmkube_api::LastState {
                    terminated: Some(wasmkube_api::Terminated {
                        exit_code: code,
                        reason: Some(reason.into()),
                        message: Some(exit.to_string()),
                        finished_at: None,
                    }),
                }
            });
            if state.backing_off {
                status.reason = Some("CrashLoopBackOff".into());
                status.message = state.last_exit.clone();
            }
        }
        Sandbox::Preparing { digest, .. } => {
            // As Kubernetes shows a pod whose image is being pulled.
            status.phase = Some(PodPhase::Pending.as_str().into());
            status.conditions = vec![Condition::new("Ready", false)];
            status.reason = Some("ContainerCreating".into());
            status.message = Some(format!("preparing module sha256:{digest}"));
        }
        Sandbox::Rejected { reason, message, .. } => {
            // Terminal, as the kubelet reports a pod it did not admit.
            status.phase = Some(PodPhase::Failed.as_str().into());
            status.conditions = vec![Condition::new("Ready", false)];
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
        }
        Sandbox::Failed { reason, message, .. } => {
            // Still retried, so Pending (as Kubernetes shows a pod in ImagePullBackOff).
            status.phase = Some(PodPhase::Pending.as_str().into());
            status.conditions = vec![Condition::new("Ready", false)];
            status.reason = Some(reason.clone());
            status.message = Some(message.clone());
        }
    }
    status
}
