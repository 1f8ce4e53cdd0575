//! Scale from zero, as Knative's activator does it: a request for a Service with no ready
//! pod, whose pods would come from a Deployment its autoscaler scaled to zero, is held here
//! (at most `MAX_HELD` at once on this node, each at most `HOLD_FOR`) while the node asks for
//! one replica, then served by the first pod that is ready. Everything else about the
//! Deployment is the activator's business (the node's, which knows the autoscalers); the
//! proxy only holds and waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{ServiceEntry, ServiceName};

/// Requests held at once on one node; past that, 503 at once.
pub const MAX_HELD: usize = 1000;
/// The longest a request waits for the first pod.
pub const HOLD_FOR: Duration = Duration::from_secs(10);
/// A held request asks again this often (a wake that lost a race with the autoscaler
/// scaling to zero, or whose write failed, is made again).
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// Starts a Service's pods when they were scaled to zero.
pub trait Activator: Send + Sync + 'static {
    /// Asks for `service`'s pods if a Deployment that serves it is autoscaled and at zero;
    /// true when the service is one whose pods are coming (worth waiting for).
    fn activate<'a>(&'a self, service: &'a ServiceName) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// Waits for `service` to have a ready pod, holding the request; `None` when it is not one
/// to wait for, the node holds too many already, or none became ready in time.
pub(crate) async fn wait_for_pods(
    state: &crate::ProxyState,
    service: &ServiceName,
) -> Option<Arc<ServiceEntry>> {
    let activator = state.activator.as_ref()?;
    let deadline = tokio::time::Instant::now() + HOLD_FOR;
    let _held = state.held.clone().try_acquire_owned().ok()?;
    // Seen before asking, so a pod that turns ready at once is not missed.
    let mut table = state.version.subscribe();
    let ask =
        |at: tokio::time::Instant| tokio::time::timeout_at(deadline.min(at), activator.activate(service));
    if !ask(deadline).await.unwrap_or(false) {
        return None;
    }
    let mut ask_at = tokio::time::Instant::now() + ASK_AGAIN;
    loop {
        if let Some(entry) = state.lookup(service).filter(|e| !e.endpoints.is_empty()) {
            return Some(entry);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, table.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    return None;
                }
            }
            () = tokio::time::sleep_until(ask_at) => {
                let _ = ask(deadline).await;
                ask_at = tokio::time::Instant::now() + ASK_AGAIN;
            }
        }
    }
}
