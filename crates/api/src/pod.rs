//! Pods: one wasm component instance slot bound to a node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kinds::info;
use crate::meta::{Condition, ObjectMeta, condition_is_true};
use crate::probe::{Probe, ProbeKind};
use crate::validation::{ValidationError, check_name};
use crate::{Resource, parse_cpu, parse_memory};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Always (default), OnFailure or Never; applies to cli-world pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Only nodes with all these labels may run the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Spread replicas of one owner across the values of a node label (as Kubernetes'
    /// `ScheduleAnyway` constraints: a preference the scheduler ranks by).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// How long one request to an http pod may run before it is cut off (Knative's
    /// `timeoutSeconds`); the node's `--request-timeout` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// The longest `timeoutSeconds` a pod may set (an hour).
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopologySpreadConstraint {
    /// The node label whose values are the domains replicas spread across (`zone`, say).
    pub topology_key: String,
    #[serde(default = "one")]
    pub max_skew: u32,
    /// Only `ScheduleAnyway` is supported: a preference, never a reason to stay Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_unsatisfiable: Option<String>,
    /// Accepted as Kubernetes manifests carry it; the pods counted are the owner's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<crate::LabelSelector>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: String,
    /// `sha256:<hex digest>` of an uploaded Module.
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Restarts the pod's instance when it fails (see `crate::probe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Decides whether every proxy sends the pod traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Holds the other two back until it has succeeded once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
}

impl Container {
    /// The memory limit in bytes, if one is set (validated on admission).
    pub fn memory_limit(&self) -> Option<u64> {
        let limits = &self.resources.as_ref()?.limits;
        limits.get("memory").and_then(|q| parse_memory(q).ok())
    }

    /// The memory the scheduler reserves for it, in bytes: `requests.memory`, or the limit
    /// when only a limit is set (as Kubernetes defaults a request to its limit), else 0.
    pub fn memory_request(&self) -> u64 {
        let requested = self.resources.as_ref().and_then(|r| r.requests.get("memory"));
        requested.and_then(|q| parse_memory(q).ok()).or_else(|| self.memory_limit()).unwrap_or(0)
    }

    /// The CPU limit in millicores, if one is set (validated on admission).
    pub fn cpu_limit_millis(&self) -> Option<u64> {
        let limits = &self.resources.as_ref()?.limits;
        limits.get("cpu").and_then(|q| parse_cpu(q).ok())
    }

    /// The CPU the scheduler reserves for it, in millicores: `requests.cpu`, or the limit
    /// when only a limit is set (as Kubernetes defaults it), else 0.
    pub fn cpu_request_millis(&self) -> u64 {
        let requested = self.resources.as_ref().and_then(|r| r.requests.get("cpu"));
        requested.and_then(|q| parse_cpu(q).ok()).or_else(|| self.cpu_limit_millis()).unwrap_or(0)
    }

    /// The module digest (hex) this container runs, if the image names one.
    pub fn module_digest(&self) -> Option<&str> {
        self.image.strip_prefix("sha256:")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
}

/// Pod phases as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        }
    }
}

/// What the node agent reports. A pragmatic subset of Kubernetes' PodStatus: the single
/// container's restart count and waiting reason are hoisted to the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub restart_count: u32,
    /// Why the pod is not running as wanted (`CrashLoopBackOff`, `ModuleNotFound`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// How the instance before the current one ended (hoisted from the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<LastState>,
}

/// Kubernetes' `lastState` of a container: how it last ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<Terminated>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Terminated {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl Pod {
    /// True when the pod's Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| condition_is_true(&s.conditions, "Ready"))
    }

    /// The memory the scheduler reserves for this pod, in bytes.
    pub fn memory_request(&self) -> u64 {
        self.spec.containers.iter().map(Container::memory_request).fold(0, u64::saturating_add)
    }

    /// The CPU the scheduler reserves for this pod, in millicores.
    pub fn cpu_request_millis(&self) -> u64 {
        self.spec.containers.iter().map(Container::cpu_request_millis).fold(0, u64::saturating_add)
    }

    /// The uid of the Deployment that owns it, if one does.
    pub fn owner_uid(&self) -> Option<&str> {
        self.metadata.owner_references.iter().find(|o| o.kind == "Deployment").map(|o| o.uid.as_str())
    }

    pub fn phase(&self) -> &str {
        self.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
    }

    /// Succeeded or Failed: it will not run again (a pod its node refused, for one).
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase(), "Succeeded" | "Failed")
    }
}

impl Resource for Pod {
    const KIND: &'static crate::KindInfo = info::POD;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)?;
        self.spec.validate("spec")
    }
}

impl PodSpec {
    pub(crate) fn validate(&self, at: &str) -> Result<(), ValidationError> {
        if self.containers.len() != 1 {
            return Err(ValidationError::new(
                format!("{at}.containers"),
                format!("exactly one container is supported, found {}", self.containers.len()),
            ));
        }
        let c = &self.containers[0];
        let cat = format!("{at}.containers[0]");
        check_name(&format!("{cat}.name"), &c.name)?;
        match c.module_digest() {
            Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            _ => {
                return Err(ValidationError::new(
                    format!("{cat}.image"),
                    format!("{:?} is not a module reference; expected sha256:<64 hex digits>", c.image),
                ));
            }
        }
        if let Some(res) = &c.resources {
            for (map, name) in [(&res.limits, "limits"), (&res.requests, "requests")] {
                for (k, v) in map {
                    let field = format!("{cat}.resources.{name}.{k}");
                    match k.as_str() {
                        "memory" => parse_memory(v).map(drop),
                        "cpu" => parse_cpu(v).map(drop),
                        _ => Err("only cpu and memory are supported".to_string()),
                    }
                    .map_err(|e| ValidationError::new(field, e))?;
                }
            }
            if let (Some(request), Some(limit)) = (res.requests.get("cpu"), c.cpu_limit_millis())
                && parse_cpu(request).unwrap_or(0) > limit
            {
                return Err(ValidationError::new(
                    format!("{cat}.resources.requests.cpu"),
                    format!("{request} is more than the CPU limit"),
                ));
            }
        }
        if let Some(t) = self.timeout_seconds
            && !(1..=MAX_TIMEOUT_SECONDS).contains(&t)
        {
            return Err(ValidationError::new(
                format!("{at}.timeoutSeconds"),
                format!("{t} is not between 1 and {MAX_TIMEOUT_SECONDS}"),
            ));
        }
        if let Some(res) = &c.resources
            && let (Some(request), Some(limit)) = (res.requests.get("memory"), c.memory_limit())
            && parse_memory(request).unwrap_or(0) > limit
        {
            return Err(ValidationError::new(
                format!("{cat}.resources.requests.memory"),
                format!("{request} is more than the memory limit"),
            ));
        }
        for (probe, kind, field) in [
            (&c.liveness_probe, ProbeKind::Liveness, "livenessProbe"),
            (&c.readiness_probe, ProbeKind::Readiness, "readinessProbe"),
            (&c.startup_probe, ProbeKind::Startup, "startupProbe"),
        ] {
            if let Some(p) = probe {
                p.validate(&format!("{cat}.{field}"), kind)?;
            }
        }
        crate::validation::check_selector(&format!("{at}.nodeSelector"), &self.node_selector)?;
        for (i, t) in self.topology_spread_constraints.iter().enumerate() {
            let field = format!("{at}.topologySpreadConstraints[{i}]");
            if t.topology_key.is_empty() || t.max_skew == 0 {
                return Err(ValidationError::new(
                    field,
                    "needs a topologyKey and a maxSkew of at least 1".into(),
                ));
            }
            if let Some(other) = t.when_unsatisfiable.as_deref().filter(|w| *w != "ScheduleAnyway") {
                return Err(ValidationError::new(
                    format!("{field}.whenUnsatisfiable"),
                    format!("{other:?} is not supported yet; use ScheduleAnyway"),
                ));
            }
        }
        match self.restart_policy.as_deref() {
            None | Some("Always" | "OnFailure" | "Never") => Ok(()),
            Some(other) => Err(ValidationError::new(
                format!("{at}.restartPolicy"),
                format!("{other:?} is not one of Always, OnFailure, Never"),
            )),
        }
    }
}
