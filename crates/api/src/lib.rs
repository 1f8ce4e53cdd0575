//! Kubernetes-shaped resource types for wasmkube, their validation, and the kind registry.
//!
//! This crate is the vocabulary every other crate speaks. It must never do I/O: no files, no
//! network, no clocks except through values handed in. Unsupported fields are rejected on
//! deserialisation (`deny_unknown_fields`) so a manifest never loses a field silently.

mod autoscaling;
mod kinds;
pub mod lifecycle;
mod meta;
pub mod metrics;
mod module;
mod node;
mod pod;
mod probe;
mod quantity;
mod replicaset;
mod service_name;
mod status;
mod validation;
mod workload;

pub use autoscaling::{
    Behavior, HorizontalPodAutoscaler, HpaSpec, HpaStatus, MetricIdentifier, MetricSpec, MetricStatus,
    MetricTarget, MetricValueStatus, PodsMetricSource, PodsMetricStatus, ResourceMetricSource,
    ResourceMetricStatus, SCALE_TO_ZERO_AFTER, ScaleTargetRef, ScalingPolicy, ScalingRules, Target, WOKEN_ON,
};
pub use kinds::{KINDS, KindInfo, find_kind, find_kind_by_plural};
pub use meta::{
    Condition, LabelSelector, ListMeta, ObjectList, ObjectMeta, ObjectReference, OwnerReference, WatchEvent,
    condition_is_true, labels_match,
};
pub use metrics::{ContainerMetrics, NodeMetrics, PodMetrics};
pub use module::{Module, ModuleSpec, ModuleWorld};
pub use node::{Node, NodeAddress, NodeSpec, NodeStatus};
pub use pod::{
    Container, EnvVar, LastState, Pod, PodPhase, PodSpec, PodStatus, ResourceRequirements, Terminated,
    TopologySpreadConstraint,
};
pub use probe::{HttpGetAction, HttpHeader, Probe, ProbeKind};
pub use quantity::{parse_cpu, parse_memory};
pub use replicaset::{REVISION_ANNOTATION, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
pub use service_name::{ServiceName, parse_cluster_host, parse_host};
pub use status::Status;
pub use validation::{ValidationError, validate_object, validate_typed};
pub use workload::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, Event, MAX_REPLICAS, NODE_PORT,
    NODE_PORT_RANGE, PodTemplateSpec, RollingUpdate, Service, ServicePort, ServiceSpec, check_replicas,
};

/// Largest JSON object the API admits (Module bytes have their own limit). Every layer below
/// (raft entries, peer messages) is sized to carry an object of this size.
pub const MAX_OBJECT_BYTES: usize = 3 << 20;

/// The namespace objects land in when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Label put on every pod a Deployment owns, naming the Deployment.
pub const DEPLOYMENT_LABEL: &str = "wasmkube.io/deployment";
/// Label carrying the hash of the pod template a pod was created from.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Annotation on a pod naming the node the scheduler should choose when that node can take
/// it (the first pod after a scale from zero goes where its first request arrived).
pub const PREFERRED_NODE_ANNOTATION: &str = "scheduling.wasmkube.dev/preferred-node";

/// The `meta`/`meta_mut` accessors every kind implements the same way.
#[macro_export]
#[doc(hidden)]
macro_rules! resource_meta {
    () => {
        fn meta(&self) -> &$crate::ObjectMeta {
            &self.metadata
        }
        fn meta_mut(&mut self) -> &mut $crate::ObjectMeta {
            &mut self.metadata
        }
    };
}

/// A typed resource: something that has a kind, metadata and can be validated.
pub trait Resource: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + 'static {
    /// The registry entry for this type.
    const KIND: &'static KindInfo;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Kind-specific checks beyond what the type system enforces.
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}
