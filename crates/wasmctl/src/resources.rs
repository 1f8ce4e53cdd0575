//! Resource names as users type them (`po`, `deploy`, `svc`, `deployment/hello`).

use anyhow::bail;
use wasmkube_api::{KindInfo, find_kind};

pub fn kind_of(word: &str) -> anyhow::Result<&'static KindInfo> {
    let kind = match word.to_ascii_lowercase().as_str() {
        "no" | "node" | "nodes" => "Node",
        "po" | "pod" | "pods" => "Pod",
        "deploy" | "deployment" | "deployments" => "Deployment",
        "svc" | "service" | "services" => "Service",
        "ev" | "event" | "events" => "Event",
        "mod" | "module" | "modules" => "Module",
        "hpa" | "horizontalpodautoscaler" | "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "rs" | "replicaset" | "replicasets" => "ReplicaSet",
        other => bail!(
            "unknown resource type {other:?}; use nodes, pods, deployments, replicasets, services, events, modules or hpa"
        ),
    };
    find_kind(kind).ok_or_else(|| anyhow::anyhow!("kind {kind} is not registered"))
}

/// Splits `TYPE NAME` or `TYPE/NAME` into a kind and an optional name.
pub fn target(resource: &str, name: Option<&str>) -> anyhow::Result<(&'static KindInfo, Option<String>)> {
    match resource.split_once('/') {
        Some((kind, n)) => Ok((kind_of(kind)?, Some(n.to_string()))),
        None => Ok((kind_of(resource)?, name.map(str::to_string))),
    }
}
