//! What a plan asks for, and the context (clock, randomness) plans are made with.

use rand::Rng;
use wasmkube_api::{DeploymentStatus, Event, NodeStatus, ObjectMeta, ObjectReference, Pod};

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
    RecordEvent(Box<Event>),
    DeleteEvent {
        namespace: String,
        name: String,
    },
}

/// A stable 16-hex-digit key for (subject, reason): FNV-1a over the fields that identify them.
fn event_key(involved: &ObjectReference, reason: &str) -> String {
    let ns = involved.namespace.as_deref().unwrap_or("");
    let uid = involved.uid.as_deref().unwrap_or("");
    let fields = [involved.kind.as_str(), ns, involved.name.as_str(), uid, reason];
    let hash = fields
        .iter()
        .flat_map(|f| f.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
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

/// An Event about `involved` (kind, namespace, name, uid). Its name is the same for every
/// occurrence of one reason on one subject, so recording it again counts the recurrence on
/// the one object (`Command::RecordEvent`) instead of adding another.
pub fn event_for<R: Rng>(
    ctx: &mut PlanContext<R>,
    involved: ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
    source: &str,
) -> Event {
    let name = format!("{}.{}", involved.name, event_key(&involved, reason));
    let namespace = involved.namespace.clone().unwrap_or_else(|| wasmkube_api::DEFAULT_NAMESPACE.to_string());
    Event {
        api_version: "v1".into(),
        kind: "Event".into(),
        metadata: ObjectMeta {
            uid: Some(ctx.uid()),
            creation_timestamp: Some(ctx.now.clone()),
            ..ObjectMeta::named(Some(&namespace), &name)
        },
        involved_object: involved,
        reason: reason.into(),
        message,
        type_: type_.into(),
        count: 1,
        first_timestamp: Some(ctx.now.clone()),
        last_timestamp: Some(ctx.now.clone()),
        source: source.into(),
    }
}
