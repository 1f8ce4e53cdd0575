//! Deployments, Services and Events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Resource;
use crate::kinds::info;
use crate::meta::{LabelSelector, ObjectMeta, ObjectReference, labels_match};
use crate::pod::PodSpec;
use crate::validation::{ValidationError, check_name};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default = "one")]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Old revisions (ReplicaSets with no pods) kept for `rollout undo` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
    /// A rollout that makes no progress for this long has failed (default 600): its
    /// Progressing condition says ProgressDeadlineExceeded, and unless the node is told not
    /// to, the Deployment goes back to the revision before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u32>,
    /// A paused Deployment keeps running (and scaling) its current revision, but does not
    /// roll out template changes until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

fn one() -> u32 {
    1
}

/// Most replicas one Deployment may ask for: far more than a cluster of 20 nodes at 10,000
/// pods each could run, far less than what would exhaust a node planning them.
pub const MAX_REPLICAS: u32 = 100_000;

/// Refuses a replica count above `MAX_REPLICAS` (a Deployment's, or a scale request's).
pub fn check_replicas(field: &str, replicas: u32) -> Result<(), ValidationError> {
    if replicas > MAX_REPLICAS {
        return Err(ValidationError::new(
            field,
            format!("{replicas} is more than the {MAX_REPLICAS} replicas a Deployment may have"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategy {
    /// Only RollingUpdate is supported.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub updated_replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub available_replicas: u32,
    #[serde(default)]
    pub unavailable_replicas: u32,
    /// Available and Progressing, as kubectl's `rollout status` reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::Condition>,
}

impl Resource for Deployment {
    const KIND: &'static crate::KindInfo = info::DEPLOYMENT;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)?;
        check_replicas("spec.replicas", self.spec.replicas)?;
        if self.spec.progress_deadline_seconds == Some(0) {
            return Err(ValidationError::new("spec.progressDeadlineSeconds", "must be at least 1".into()));
        }
        let selector = &self.spec.selector.match_labels;
        if selector.is_empty() {
            return Err(ValidationError::new("spec.selector.matchLabels", "must not be empty".into()));
        }
        if !labels_match(selector, &self.spec.template.metadata.labels) {
            return Err(ValidationError::new(
                "spec.template.metadata.labels",
                "must match spec.selector.matchLabels".into(),
            ));
        }
        crate::validation::check_labels_and_annotations(
            "spec.template.metadata",
            &self.spec.template.metadata,
        )?;
        if let Some(kind) = self.spec.strategy.as_ref().and_then(|s| s.type_.as_deref())
            && kind != "RollingUpdate"
        {
            return Err(ValidationError::new(
                "spec.strategy.type",
                format!("{kind:?} is not supported; use RollingUpdate"),
            ));
        }
        // A Deployment keeps its pods running: one that ends is replaced, not restarted in
        // place on another policy (Kubernetes refuses the others too).
        if let Some(policy) = self.spec.template.spec.restart_policy.as_deref()
            && policy != "Always"
        {
            return Err(ValidationError::new(
                "spec.template.spec.restartPolicy",
                format!("Unsupported value: {policy:?}: supported values: \"Always\""),
            ));
        }
        self.spec.template.spec.validate("spec.template.spec")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// ClusterIP (default): reached through any node's proxy by Host. NodePort: also on
    /// every node at each port's `nodePort`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

impl ServiceSpec {
    pub fn is_node_port(&self) -> bool {
        self.type_.as_deref() == Some(NODE_PORT)
    }
}

/// The Service type that listens on every node.
pub const NODE_PORT: &str = "NodePort";

/// Where nodePorts are allocated from (Kubernetes' default `--service-node-port-range`).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 1-65535 (an int32 on the wire, as in Kubernetes, so an out-of-range value gets a
    /// message that names the port rather than a type error).
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The pod's port, a number or a name. A wasm http component has one entry point, so
    /// every port of a Service reaches it; accepted for manifests written for Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<serde_json::Value>,
    /// For a NodePort Service: the port every node listens on for this one (30000-32767;
    /// allocated when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

impl Resource for Service {
    const KIND: &'static crate::KindInfo = info::SERVICE;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)?;
        if self.spec.selector.is_empty() {
            return Err(ValidationError::new("spec.selector", "must not be empty".into()));
        }
        let node_port = match self.spec.type_.as_deref() {
            None | Some("ClusterIP") => false,
            Some(NODE_PORT) => true,
            Some(other) => {
                return Err(ValidationError::new(
                    "spec.type",
                    format!("Unsupported value: {other:?}: supported values: \"ClusterIP\", \"NodePort\""),
                ));
            }
        };
        if node_port && self.spec.ports.is_empty() {
            return Err(ValidationError::new(
                "spec.ports",
                "Required value: a NodePort Service needs a port".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.spec.ports.iter().enumerate() {
            let field = |f: &str| format!("spec.ports[{i}].{f}");
            if !(1..=65535).contains(&p.port) {
                return Err(ValidationError::new(
                    field("port"),
                    format!("{} is not a valid port: must be 1-65535", p.port),
                ));
            }
            if let Some(protocol) = p.protocol.as_deref()
                && protocol != "TCP"
            {
                return Err(ValidationError::new(
                    field("protocol"),
                    format!("Unsupported value: {protocol:?}: supported values: \"TCP\""),
                ));
            }
            check_target_port(&field("targetPort"), p.target_port.as_ref())?;
            let Some(n) = p.node_port else { continue };
            if !node_port {
                return Err(ValidationError::new(
                    field("nodePort"),
                    format!(
                        "Forbidden: may not be used when `type` is {:?}",
                        self.spec.type_.as_deref().unwrap_or("ClusterIP")
                    ),
                ));
            }
            if !NODE_PORT_RANGE.contains(&n) {
                return Err(ValidationError::new(
                    field("nodePort"),
                    format!(
                        "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
            if !seen.insert(n) {
                return Err(ValidationError::new(field("nodePort"), format!("Duplicate value: {n}")));
            }
        }
        Ok(())
    }
}

/// A Service port's `targetPort`: a port number (1-65535) or an IANA_SVC_NAME.
fn check_target_port(field: &str, port: Option<&serde_json::Value>) -> Result<(), ValidationError> {
    let ok = match port {
        None => true,
        Some(serde_json::Value::Number(n)) => n.as_i64().is_some_and(|n| (1..=65535).contains(&n)),
        Some(serde_json::Value::String(name)) => {
            (1..=15).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
        }
        Some(_) => false,
    };
    if ok {
        return Ok(());
    }
    Err(ValidationError::new(
        field,
        format!(
            "Invalid value: {}: must be a port number (1-65535) or a port name",
            port.map(|p| p.to_string()).unwrap_or_default()
        ),
    ))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub involved_object: ObjectReference,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// Normal or Warning.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    /// The component that reported it (`deployment-controller`, `wasmlet/<node>`).
    #[serde(default)]
    pub source: String,
}

impl Event {
    /// An event about `involved`, first seen `now`. Its name is the same for every occurrence
    /// of one reason on one subject (`<name>.<hash>`), so recording it again counts the
    /// recurrence on the one object instead of adding another, as Kubernetes aggregates.
    pub fn about(
        involved: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        source: &str,
        now: &str,
        uid: String,
    ) -> Event {
        let name = format!("{}.{}", involved.name, event_key(&involved, reason));
        let namespace = involved.namespace.clone().unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string());
        Event {
            api_version: "v1".into(),
            kind: "Event".into(),
            metadata: ObjectMeta {
                uid: Some(uid),
                creation_timestamp: Some(now.to_string()),
                ..ObjectMeta::named(Some(&namespace), &name)
            },
            involved_object: involved,
            reason: reason.into(),
            message,
            type_: type_.into(),
            count: 1,
            first_timestamp: Some(now.to_string()),
            last_timestamp: Some(now.to_string()),
            source: source.into(),
        }
    }
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

impl Resource for Event {
    const KIND: &'static crate::KindInfo = info::EVENT;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        if self.reason.is_empty() {
            return Err(ValidationError::new("reason", "must not be empty".into()));
        }
        Ok(())
    }
}
