//! Graceful leave, on SIGTERM (`systemctl stop`): the node hands leadership to another voter
//! if it leads, reports itself NotReady and hands its pods to the other nodes (the agent does
//! this, see `Agent::leave`), waits until their replacements are Ready and every proxy has
//! stopped routing here, and only then stops serving — finishing the requests it has. A
//! second signal, or `LEAVE_LIMIT`, ends the wait.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wasmkube_api::{Deployment, Pod};
use wasmkube_raft::ClusterHandle;
use wasmkube_store::ObjectStore;

/// The longest a leaving node waits for its pods to be replaced.
pub const LEAVE_LIMIT: Duration = Duration::from_secs(20);
/// Once the replacements are Ready: time for every proxy's table to catch up (they are
/// rebuilt within about 100 ms of a change).
const SETTLE: Duration = Duration::from_millis(300);

/// Leaves the cluster (see the module); returns at once for the only member.
pub async fn leave(
    cluster: &ClusterHandle,
    store: &ObjectStore,
    node_name: &str,
    leaving: &watch::Sender<bool>,
) {
    let membership = cluster.membership();
    if membership.members.len() <= 1 {
        return;
    }
    let started = Instant::now();
    hand_over_leadership(cluster).await;
    let owners = owners_of_pods_on(store, node_name);
    leaving.send_replace(true);
    let deadline = started + LEAVE_LIMIT;
    while Instant::now() < deadline {
        if pods_on(store, node_name).is_empty() && owners.iter().all(|key| fully_ready(store, node_name, key))
        {
            tracing::info!(took = ?started.elapsed(), "this node's pods run elsewhere now");
            tokio::time::sleep(SETTLE).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("this node's pods were not all replaced within {LEAVE_LIMIT:?}; stopping anyway");
}

/// If this node leads, hands leadership to the voter it heard from last.
async fn hand_over_leadership(cluster: &ClusterHandle) {
    if !cluster.is_leader() {
        return;
    }
    let me = cluster.node_id();
    let contact = cluster.contact();
    let to = cluster
        .membership()
        .voters
        .into_iter()
        .filter(|id| *id != me)
        .min_by_key(|id| contact.silence(*id).unwrap_or(Duration::MAX));
    let Some(to) = to else { return };
    match cluster.transfer_leadership(to).await {
        Ok(()) => tracing::info!(to, "handed leadership over before leaving"),
        Err(e) => tracing::warn!(to, "could not hand leadership over: {e}"),
    }
}

fn pods_on(store: &ObjectStore, node_name: &str) -> Vec<Pod> {
    let listed = store.list("Pod", None).map(|(items, _)| items).unwrap_or_default();
    listed
        .into_iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node_name))
        .filter_map(|p| serde_json::from_value(p).ok())
        .collect()
}

/// The Deployments (namespace, name) that have pods on this node.
fn owners_of_pods_on(store: &ObjectStore, node_name: &str) -> BTreeSet<(String, String)> {
    pods_on(store, node_name)
        .iter()
        .flat_map(|p| {
            let namespace = p.metadata.namespace.clone().unwrap_or_default();
            p.metadata
                .owner_references
                .iter()
                .filter(|o| o.kind == "Deployment")
                .map(move |o| (namespace.clone(), o.name.clone()))
        })
        .collect()
}

/// Whether the Deployment has as many Ready pods on other nodes as it asks for (or is
/// gone). Counted from the pods themselves: its status may not have caught up yet.
fn fully_ready(store: &ObjectStore, node_name: &str, (namespace, name): &(String, String)) -> bool {
    let key = wasmkube_store::ObjectKey::new("Deployment", Some(namespace), name);
    let Ok(Some(value)) = store.get(&key) else { return true };
    let Ok(d) = serde_json::from_value::<Deployment>(value) else { return true };
    let uid = d.metadata.uid.as_deref();
    let listed = store.list("Pod", Some(namespace)).map(|(items, _)| items).unwrap_or_default();
    let ready = listed
        .into_iter()
        .filter_map(|p| serde_json::from_value::<Pod>(p).ok())
        .filter(|p| p.owner_uid().is_some() && p.owner_uid() == uid)
        .filter(|p| p.spec.node_name.as_deref() != Some(node_name) && p.is_ready())
        .count();
    ready >= d.spec.replicas as usize
}
