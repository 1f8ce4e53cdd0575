//! Resource metrics in the shape of Kubernetes' `metrics.k8s.io/v1beta1` (`PodMetrics`,
//! `NodeMetrics`), which `kubectl top` and autoscalers read. Besides `cpu` and `memory`,
//! an http pod's usage carries its request figures under `wasmkube.dev/` names (a
//! ResourceList is a map, so other clients skip them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ObjectMeta;

pub const METRICS_API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Requests in flight on average over the window (time-weighted), a quantity (`1500m`).
pub const CONCURRENCY: &str = "wasmkube.dev/concurrency";
/// Requests in flight at the end of the window (an instant, not an average: `3`).
pub const IN_FLIGHT: &str = "wasmkube.dev/in-flight";
/// Requests ended per second over the window (`2500m`).
pub const REQUESTS_PER_SECOND: &str = "wasmkube.dev/requests-per-second";
/// Mean time to answer over the window, in seconds (`250u`: 250 µs).
pub const LATENCY: &str = "wasmkube.dev/latency";
/// A node's memory requested by the pods bound to it, in bytes (`NodeMetrics`).
pub const MEMORY_ALLOCATED: &str = "wasmkube.dev/memory-allocated";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// When the usage was measured (RFC 3339), and over how long (`2s`).
    pub timestamp: String,
    pub window: String,
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerMetrics {
    pub name: String,
    pub usage: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub timestamp: String,
    pub window: String,
    pub usage: BTreeMap<String, String>,
}

impl PodMetrics {
    /// A usage figure of the pod (summed over its containers), as a number in its unit
    /// (cores, bytes, requests, seconds), when its containers report it.
    pub fn usage(&self, resource: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .containers
            .iter()
            .filter_map(|c| c.usage.get(resource))
            .filter_map(|q| parse_decimal(q))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

impl NodeMetrics {
    pub fn usage(&self, resource: &str) -> Option<f64> {
        self.usage.get(resource).and_then(|q| parse_decimal(q))
    }
}

/// A quantity as a number: decimal suffixes (`n`, `u`, `m`, `k`, `M`, `G`, `T`) and binary
/// ones (`Ki`, `Mi`, `Gi`, `Ti`), as metrics use them.
pub fn parse_decimal(q: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (digits, factor) =
        SUFFIXES.iter().find_map(|(s, f)| q.strip_suffix(s).map(|d| (d, *f))).unwrap_or((q, 1.0));
    let n: f64 = digits.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * factor)
}

/// `value` (≥ 0) in thousandths, as a quantity: `1500m`.
pub fn milli_quantity(value: f64) -> String {
    format!("{}m", (value.max(0.0) * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_back_as_numbers() {
        assert_eq!(parse_decimal("250m"), Some(0.25));
        assert_eq!(parse_decimal("1500000n"), Some(0.0015));
        assert_eq!(parse_decimal("64Ki"), Some(65536.0));
        assert_eq!(parse_decimal("3"), Some(3.0));
        assert_eq!(parse_decimal("-1"), None);
        assert_eq!(parse_decimal("lots"), None);
        assert_eq!(parse_decimal(&milli_quantity(1.5)), Some(1.5));
        let p = PodMetrics {
            containers: vec![
                ContainerMetrics {
                    name: "a".into(),
                    usage: [("cpu".to_string(), "100m".to_string())].into(),
                },
                ContainerMetrics { name: "b".into(), usage: [("cpu".to_string(), "50m".to_string())].into() },
            ],
            ..PodMetrics::default()
        };
        assert!(p.usage("cpu").is_some_and(|c| (c - 0.15).abs() < 1e-9));
        assert_eq!(p.usage("memory"), None);
    }
}
