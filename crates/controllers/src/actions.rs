//! What a plan asks for, and the context (clock, randomness) plans are made with.

use rand::Rng;
use wasmkube_api::{DeploymentStatus, Event, NodeStatus, ObjectReference, Pod, ReplicaSet, ReplicaSetStatus};

/// One write the controllers want committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CreatePod(Box<Pod>),
    /// Delete, but only if the pod is still at `resource_version`.
    DeletePod {
        namespace: String,
        name: String,
        resource_version: u64,
    },
    /// A pod's owner references as given (adopted by its ReplicaSet), if it is still at the
    /// version it was read at.
    AdoptPod(Box<Pod>),
    /// Bind an existing pod to `node`.
    BindPod {
        pod: Box<Pod>,
        node: String,
    },
    UpdateDeploymentStatus {
        namespace: String,
        name: String,
        status: DeploymentStatus,
    },
    /// Replace a node's status, but only if the node is still at `resource_version` (a
    /// heartbeat that just landed wins).
    UpdateNodeStatus {
        name: String,
        status: Box<NodeStatus>,
        resource_version: u64,
    },
    /// A Deployment's metadata and spec, if it is still at the version it was read at (an
    /// automatic rollback).
    UpdateDeployment(Box<wasmkube_api::Deployment>),
    /// A Deployment's revisions (see `revisions`).
    CreateReplicaSet(Box<ReplicaSet>),
    /// Its metadata and spec, if it is still at the version it was read at.
    UpdateReplicaSet(Box<ReplicaSet>),
    UpdateReplicaSetStatus {
        namespace: String,
        name: String,
        status: ReplicaSetStatus,
    },
    DeleteReplicaSet {
        namespace: String,
        name: String,
        resource_version: u64,
    },
    RecordEvent(Box<Event>),
    DeleteEvent {
        namespace: String,
        name: String,
    },
}

/// Injected clock and randomness, so plans are reproducible in tests.
pub struct PlanContext<R: Rng> {
    pub now: String,
    pub rng: R,
}

impl<R: Rng> PlanContext<R> {
    /// A random lower-case alphanumeric suffix, as Kubernetes uses for generated names.
    pub fn suffix(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len).map(|_| CHARS[self.rng.random_range(0..CHARS.len())] as char).collect()
    }

    pub fn uid(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }
}

/// An Event about `involved` (see `Event::about`), at the context's time.
pub fn event_for<R: Rng>(
    ctx: &mut PlanContext<R>,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
    source: &str,
) -> Event {
    let uid = ctx.uid();
    Event::about(involved, type_, reason, message, source, &ctx.now, uid)
}
