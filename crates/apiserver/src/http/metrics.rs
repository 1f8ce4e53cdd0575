//! `metrics.k8s.io/v1beta1`, as metrics-server serves it (`kubectl top`, autoscalers): the
//! usage of every node and pod, gathered from every member at the time of asking
//! (`crate::metrics::MetricsSource`), and `GET /peer/v1/metrics`, this node's own report
//! for the member that gathers.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};
use wasmkube_api::metrics::{MEMORY_ALLOCATED, METRICS_API_VERSION};
use wasmkube_api::{NodeMetrics, PodMetrics, labels_match};

use super::{ApiError, ApiState};

/// `GET /peer/v1/metrics[?owners=uid,uid]`: this node's report (peer token; members only),
/// of the pods of those Deployments only when they are named.
pub async fn peer_report(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let parts = state.parts();
    if let Err((status, message)) =
        wasmkube_raft::authorize_peer(&parts.cluster, &parts.peer_token, &parts.faults, &headers)
    {
        return (status, message).into_response();
    }
    let owners: Option<std::collections::HashSet<String>> =
        query.get("owners").map(|o| o.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect());
    Json(parts.metrics.local(owners.as_ref())).into_response()
}

/// `GET /apis/metrics.k8s.io/v1beta1`: what the group serves.
pub async fn discovery() -> Json<Value> {
    let resource = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]});
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": METRICS_API_VERSION,
        "resources": [resource("nodes", "NodeMetrics", false), resource("pods", "PodMetrics", true)],
    }))
}

async fn node_metrics(state: &ApiState) -> Vec<NodeMetrics> {
    let source = &state.parts().metrics;
    let (reports, missing) = source.scrape(None).await;
    if !missing.is_empty() {
        tracing::debug!(?missing, "members left out of the metrics");
    }
    let allocated = source.allocated_memory();
    let mut nodes: Vec<NodeMetrics> = reports
        .into_iter()
        .map(|r| {
            let mut node = r.node;
            let bytes = allocated.get(&node.metadata.name).copied().unwrap_or(0);
            node.usage.insert(MEMORY_ALLOCATED.into(), format!("{}Ki", bytes >> 10));
            node
        })
        .collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    nodes
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes`.
pub async fn nodes(State(state): State<ApiState>) -> Response {
    list("NodeMetricsList", node_metrics(&state).await)
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}`.
pub async fn node(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let node = node_metrics(&state).await.into_iter().find(|n| n.metadata.name == name);
    node.map(|n| Json(n).into_response())
        .ok_or_else(|| ApiError::not_found(format!("nodemetrics {name:?} not found")))
}

/// Every pod's metrics in `namespace` (all when `None`) whose labels match `selector`.
async fn pod_metrics(
    state: &ApiState,
    namespace: Option<&str>,
    selector: &BTreeMap<String, String>,
) -> Result<Vec<PodMetrics>, ApiError> {
    let (reports, _) = state.parts().metrics.scrape(None).await;
    let mut pods: Vec<PodMetrics> = reports
        .into_iter()
        .flat_map(|r| r.pods)
        .filter(|p| namespace.is_none_or(|ns| p.metadata.namespace.as_deref() == Some(ns)))
        .collect();
    if !selector.is_empty() {
        // Labels are the Pod objects': read once for the namespace.
        let (objects, _) = state.parts().store.list("Pod", namespace)?;
        let labels: HashMap<(String, String), BTreeMap<String, String>> = objects
            .iter()
            .filter_map(|v| {
                let meta: wasmkube_api::ObjectMeta = serde_json::from_value(v["metadata"].clone()).ok()?;
                Some(((meta.namespace.unwrap_or_default(), meta.name), meta.labels))
            })
            .collect();
        pods.retain(|p| {
            let key = (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone());
            labels.get(&key).is_some_and(|l| labels_match(selector, l))
        });
    }
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(pods)
}

fn selector(query: &HashMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    super::objects::parse_selector(query.get("labelSelector").map(String::as_str).unwrap_or(""))
}

/// `GET /apis/metrics.k8s.io/v1beta1/pods`.
pub async fn all_pods(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    Ok(list("PodMetricsList", pod_metrics(&state, None, &selector(&query)?).await?))
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods`.
pub async fn pods(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    Ok(list("PodMetricsList", pod_metrics(&state, Some(&namespace), &selector(&query)?).await?))
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}`.
pub async fn pod(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let pods = pod_metrics(&state, Some(&namespace), &BTreeMap::new()).await?;
    let pod = pods.into_iter().find(|p| p.metadata.name == name);
    pod.map(|p| Json(p).into_response())
        .ok_or_else(|| ApiError::not_found(format!("podmetrics \"{namespace}/{name}\" not found")))
}

fn list<T: serde::Serialize>(kind: &str, items: Vec<T>) -> Response {
    Json(json!({"kind": kind, "apiVersion": METRICS_API_VERSION, "metadata": {}, "items": items}))
        .into_response()
}
