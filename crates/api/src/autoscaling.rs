//! `HorizontalPodAutoscaler`, in the shape of Kubernetes' `autoscaling/v2`: a Deployment's
//! replicas kept where its pods' average usage meets a target. Metrics of type `Resource`
//! (`cpu` as utilization of the request or an average value, `memory` likewise) and `Pods`
//! (`concurrency`, `requests-per-second`: an http pod's request figures); `behavior` with
//! stabilization windows and rate policies. Unlike Kubernetes, `minReplicas: 0` is allowed:
//! the Deployment is scaled to zero when idle (and back by the first request).

use serde::{Deserialize, Serialize};

/// How long a Deployment with `minReplicas: 0` must have had no request before it is scaled
/// to zero (a duration, `90s`; 60 s when not set, as Knative's default).
pub const SCALE_TO_ZERO_AFTER: &str = "autoscaling.wasmkube.dev/scale-to-zero-after";

/// Set on a Deployment by the node whose proxy woke it from zero (the node's name): the first
/// pod created for it while it has none prefers that node, so the held requests are served
/// there without another hop.
pub const WOKEN_ON: &str = "autoscaling.wasmkube.dev/woken-on";

use crate::kinds::info;
use crate::validation::{ValidationError, check_name};
use crate::{Condition, ObjectMeta, Resource};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HorizontalPodAutoscaler {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: HpaSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HpaStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaSpec {
    pub scale_target_ref: ScaleTargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    pub max_replicas: u32,
    /// None given: cpu at 80% of its request, as Kubernetes defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// `Resource` or `Pods`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetricSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMetricSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMetricSource {
    /// `cpu` or `memory`.
    pub name: String,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsMetricSource {
    pub metric: MetricIdentifier,
    pub target: MetricTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricIdentifier {
    /// `concurrency` or `requests-per-second` (or the same under `wasmkube.dev/`).
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricTarget {
    /// `Utilization` (of the pods' requests, resource metrics only) or `AverageValue`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<u32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ScalingPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: String,
    pub value: u32,
    pub period_seconds: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    #[serde(default)]
    pub current_replicas: u32,
    #[serde(default)]
    pub desired_replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_metrics: Vec<MetricStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricStatus {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetricStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMetricStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMetricStatus {
    pub name: String,
    pub current: MetricValueStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodsMetricStatus {
    pub metric: MetricIdentifier,
    pub current: MetricValueStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricValueStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
}

/// What one metric of an autoscaler asks for, checked and in numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Average use of the pods' `cpu` or `memory` request, in percent.
    Utilization { resource: String, percent: u32 },
    /// Average per pod of a metrics-API figure (`cpu` in cores, `memory` in bytes, or one
    /// of the request figures), by its name in the metrics API.
    AverageValue { metric: String, value: f64 },
}

impl MetricSpec {
    /// The target, or why it is not one this cluster can measure.
    pub fn target(&self, field: &str) -> Result<Target, ValidationError> {
        let average = |target: &MetricTarget, field: &str| -> Result<f64, ValidationError> {
            let raw = target.average_value.as_deref().ok_or_else(|| {
                ValidationError::new(
                    format!("{field}.target.averageValue"),
                    "is required for AverageValue".into(),
                )
            })?;
            match crate::metrics::parse_decimal(raw) {
                Some(v) if v > 0.0 => Ok(v),
                _ => Err(ValidationError::new(
                    format!("{field}.target.averageValue"),
                    format!("{raw:?} is not a positive quantity"),
                )),
            }
        };
        match (self.type_.as_str(), &self.resource, &self.pods) {
            ("Resource", Some(r), None) => {
                let field = format!("{field}.resource");
                if r.name != "cpu" && r.name != "memory" {
                    return Err(ValidationError::new(
                        format!("{field}.name"),
                        format!("unknown resource metric {:?}: cpu or memory", r.name),
                    ));
                }
                match r.target.type_.as_str() {
                    "Utilization" => match r.target.average_utilization {
                        Some(p) if p > 0 => Ok(Target::Utilization { resource: r.name.clone(), percent: p }),
                        _ => Err(ValidationError::new(
                            format!("{field}.target.averageUtilization"),
                            "must be a percentage above 0".into(),
                        )),
                    },
                    "AverageValue" => Ok(Target::AverageValue {
                        metric: r.name.clone(),
                        value: average(&r.target, &field)?,
                    }),
                    other => Err(ValidationError::new(
                        format!("{field}.target.type"),
                        format!("{other:?}: Utilization or AverageValue"),
                    )),
                }
            }
            ("Pods", None, Some(p)) => {
                let field = format!("{field}.pods");
                let name = p.metric.name.strip_prefix("wasmkube.dev/").unwrap_or(&p.metric.name);
                let metric = match name {
                    "concurrency" => crate::metrics::CONCURRENCY,
                    "requests-per-second" => crate::metrics::REQUESTS_PER_SECOND,
                    other => {
                        return Err(ValidationError::new(
                            format!("{field}.metric.name"),
                            format!("unknown pods metric {other:?}: concurrency or requests-per-second"),
                        ));
                    }
                };
                if p.target.type_ != "AverageValue" {
                    return Err(ValidationError::new(
                        format!("{field}.target.type"),
                        format!("{:?}: a Pods metric takes AverageValue", p.target.type_),
                    ));
                }
                Ok(Target::AverageValue { metric: metric.to_string(), value: average(&p.target, &field)? })
            }
            ("Resource" | "Pods", ..) => Err(ValidationError::new(
                field,
                format!(
                    "a {} metric needs its {} block, and only that",
                    self.type_,
                    self.type_.to_lowercase()
                ),
            )),
            (other, ..) => Err(ValidationError::new(
                format!("{field}.type"),
                format!("unknown metric type {other:?}: Resource or Pods"),
            )),
        }
    }
}

impl HpaSpec {
    pub fn min(&self) -> u32 {
        self.min_replicas.unwrap_or(1)
    }

    /// The targets, checked; Kubernetes' default (cpu at 80%) when none is given.
    pub fn targets(&self) -> Result<Vec<Target>, ValidationError> {
        if self.metrics.is_empty() {
            return Ok(vec![Target::Utilization { resource: "cpu".into(), percent: 80 }]);
        }
        self.metrics.iter().enumerate().map(|(i, m)| m.target(&format!("spec.metrics[{i}]"))).collect()
    }
}

impl ScalingRules {
    fn check(&self, field: &str) -> Result<(), ValidationError> {
        if self.stabilization_window_seconds.is_some_and(|w| w > 3600) {
            return Err(ValidationError::new(
                format!("{field}.stabilizationWindowSeconds"),
                "at most 3600 (an hour)".into(),
            ));
        }
        if let Some(select) = &self.select_policy
            && !matches!(select.as_str(), "Max" | "Min" | "Disabled")
        {
            return Err(ValidationError::new(
                format!("{field}.selectPolicy"),
                format!("{select:?}: Max, Min or Disabled"),
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            let field = format!("{field}.policies[{i}]");
            if !matches!(p.type_.as_str(), "Pods" | "Percent") {
                return Err(ValidationError::new(
                    format!("{field}.type"),
                    format!("{:?}: Pods or Percent", p.type_),
                ));
            }
            if p.value == 0 {
                return Err(ValidationError::new(format!("{field}.value"), "must be above 0".into()));
            }
            if !(1..=1800).contains(&p.period_seconds) {
                return Err(ValidationError::new(
                    format!("{field}.periodSeconds"),
                    "must be 1 to 1800".into(),
                ));
            }
        }
        Ok(())
    }
}

impl Resource for HorizontalPodAutoscaler {
    const KIND: &'static crate::KindInfo = info::HPA;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)?;
        let target = &self.spec.scale_target_ref;
        if target.kind != "Deployment" {
            return Err(ValidationError::new(
                "spec.scaleTargetRef.kind",
                format!("{:?}: only a Deployment can be autoscaled", target.kind),
            ));
        }
        if let Some(v) = &target.api_version
            && v != "apps/v1"
        {
            return Err(ValidationError::new("spec.scaleTargetRef.apiVersion", format!("{v:?}: apps/v1")));
        }
        check_name("spec.scaleTargetRef.name", &target.name)?;
        let (min, max) = (self.spec.min(), self.spec.max_replicas);
        if max == 0 {
            return Err(ValidationError::new("spec.maxReplicas", "must be at least 1".into()));
        }
        crate::check_replicas("spec.maxReplicas", max)?;
        if min > max {
            return Err(ValidationError::new(
                "spec.minReplicas",
                format!("{min} is more than maxReplicas ({max})"),
            ));
        }
        self.spec.targets()?;
        if let Some(behavior) = &self.spec.behavior {
            if let Some(up) = &behavior.scale_up {
                up.check("spec.behavior.scaleUp")?;
            }
            if let Some(down) = &behavior.scale_down {
                down.check("spec.behavior.scaleDown")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(spec: serde_json::Value) -> Result<HorizontalPodAutoscaler, String> {
        let body = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                          "metadata": {"name": "h", "namespace": "default"}, "spec": spec});
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(body).map_err(|e| e.to_string())?;
        hpa.validate().map_err(|e| e.to_string())?;
        Ok(hpa)
    }

    fn target() -> serde_json::Value {
        json!({"kind": "Deployment", "name": "hello"})
    }

    #[test]
    fn targets_are_read_in_numbers() {
        let h = hpa(json!({"scaleTargetRef": target(), "minReplicas": 0, "maxReplicas": 50, "metrics": [
            {"type": "Pods", "pods": {"metric": {"name": "concurrency"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "64Mi"}}},
        ]}))
        .expect("valid");
        assert_eq!(h.spec.min(), 0);
        assert_eq!(
            h.spec.targets().expect("targets"),
            [
                Target::AverageValue { metric: crate::metrics::CONCURRENCY.into(), value: 10.0 },
                Target::Utilization { resource: "cpu".into(), percent: 50 },
                Target::AverageValue { metric: "memory".into(), value: 67108864.0 },
            ]
        );
        let defaulted = hpa(json!({"scaleTargetRef": target(), "maxReplicas": 3})).expect("valid");
        assert_eq!(defaulted.spec.min(), 1);
        assert_eq!(
            defaulted.spec.targets().expect("targets"),
            [Target::Utilization { resource: "cpu".into(), percent: 80 }]
        );
    }

    #[test]
    fn bad_autoscalers_are_refused_with_the_field() {
        let concurrency = |v: &str| json!([{"type": "Pods", "pods": {"metric": {"name": "concurrency"}, "target": {"type": "AverageValue", "averageValue": v}}}]);
        for (spec, field) in [
            (json!({"scaleTargetRef": target(), "minReplicas": 5, "maxReplicas": 2}), "spec.minReplicas"),
            (json!({"scaleTargetRef": target(), "maxReplicas": 0}), "spec.maxReplicas"),
            (
                json!({"scaleTargetRef": {"kind": "StatefulSet", "name": "x"}, "maxReplicas": 2}),
                "scaleTargetRef.kind",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "metrics": [{"type": "Pods", "pods": {"metric": {"name": "queue-depth"}, "target": {"type": "AverageValue", "averageValue": "1"}}}]}),
                "unknown pods metric",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "metrics": [{"type": "Resource", "resource": {"name": "gpu", "target": {"type": "Utilization", "averageUtilization": 1}}}]}),
                "unknown resource metric",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "metrics": [{"type": "External"}]}),
                "unknown metric type",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "metrics": concurrency("0")}),
                "averageValue",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "metrics": concurrency("lots")}),
                "averageValue",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}}}),
                "periodSeconds",
            ),
            (
                json!({"scaleTargetRef": target(), "maxReplicas": 2, "behavior": {"scaleUp": {"selectPolicy": "Sometimes"}}}),
                "selectPolicy",
            ),
        ] {
            let err = hpa(spec.clone()).expect_err("refused");
            assert!(err.contains(field), "{spec}: {err}");
        }
    }
}
