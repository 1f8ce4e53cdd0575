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
    let _held = state.held.clone().try_acquire_owned().ok()?;
    // Seen before asking, so a pod that turns ready at once is not missed.
    let mut table = state.version.subscribe();
    if !activator.activate(service).await {
        return None;
    }
    let deadline = tokio::time::Instant::now() + HOLD_FOR;
    loop {
        if let Some(entry) = state.lookup(service).filter(|e| !e.endpoints.is_empty()) {
            return Some(entry);
        }
        match tokio::time::timeout_at(deadline, table.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}
