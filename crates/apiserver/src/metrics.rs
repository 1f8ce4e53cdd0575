//! Resource metrics for the cluster, as Kubernetes' metrics-server gathers them: every node
//! measures its own pods (`wasmkube_runtime::metrics::Sampler`) and reports them to members
//! that ask (`GET /peer/v1/metrics`, peer token); any node answers for the whole cluster by
//! asking every member at once, each within `SCRAPE_TIMEOUT` (a node that does not answer
//! is left out, as metrics-server leaves out a kubelet it cannot reach).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use wasmkube_api::metrics::{
    CONCURRENCY, IN_FLIGHT, LATENCY, METRICS_API_VERSION, REQUESTS_PER_SECOND, milli_quantity,
};
use wasmkube_api::{ContainerMetrics, NodeMetrics, ObjectMeta, Pod, PodMetrics};
use wasmkube_raft::{ClusterHandle, peer_get};
use wasmkube_runtime::metrics::{PodRates, Sampler};
use wasmkube_store::ObjectStore;

/// Where a member serves its own report.
pub const PEER_METRICS_PATH: &str = "/peer/v1/metrics";
/// How long a member has to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest report read from a member (10,000 pods take about 4 MiB).
const MAX_REPORT_BYTES: usize = 64 << 20;

/// One node's usage and its pods'.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeMetrics,
    pub pods: Vec<PodMetrics>,
}

/// Reads this node's metrics, and every member's.
#[derive(Clone)]
pub struct MetricsSource {
    cluster: ClusterHandle,
    store: Arc<ObjectStore>,
    sampler: Arc<Sampler>,
    http: reqwest::Client,
    peer_token: String,
}

impl MetricsSource {
    pub fn new(
        cluster: ClusterHandle,
        store: Arc<ObjectStore>,
        sampler: Arc<Sampler>,
        http: reqwest::Client,
        peer_token: String,
    ) -> Self {
        MetricsSource { cluster, store, sampler, http, peer_token }
    }

    /// This node's report (of the pods of Deployments `owners` only, when given).
    pub fn local(&self, owners: Option<&HashSet<String>>) -> NodeReport {
        let (node, pods) = self.sampler.current(owners);
        let timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let me = self.cluster.node_id();
        let name = self.cluster.membership().members.get(&me).map(|m| m.name.clone()).unwrap_or_default();
        let window = |w: Duration| format!("{:.3}s", w.as_secs_f64());
        let node = NodeMetrics {
            api_version: METRICS_API_VERSION.into(),
            kind: "NodeMetrics".into(),
            metadata: ObjectMeta {
                creation_timestamp: Some(timestamp.clone()),
                ..ObjectMeta::named(None, &name)
            },
            timestamp: timestamp.clone(),
            window: window(node.window),
            usage: [
                ("cpu".to_string(), format!("{}n", node.cpu_nanocores)),
                ("memory".to_string(), format!("{}Ki", node.memory >> 10)),
            ]
            .into(),
        };
        let pods = pods.iter().map(|p| Self::pod_metrics(p, &timestamp, &window(p.rates.window))).collect();
        NodeReport { node, pods }
    }

    fn pod_metrics(pod: &PodRates, timestamp: &str, window: &str) -> PodMetrics {
        let (namespace, name) = pod.key.split_once('/').unwrap_or(("", &pod.key));
        let r = &pod.rates;
        let mut usage: std::collections::BTreeMap<String, String> = [
            ("cpu".to_string(), format!("{}n", r.cpu_nanocores)),
            ("memory".to_string(), format!("{}Ki", r.memory >> 10)),
        ]
        .into();
        if pod.serves {
            usage.insert(CONCURRENCY.into(), milli_quantity(r.concurrency));
            usage.insert(IN_FLIGHT.into(), r.in_flight.to_string());
            usage.insert(REQUESTS_PER_SECOND.into(), milli_quantity(r.requests_per_second));
            if let Some(latency) = r.latency {
                usage.insert(LATENCY.into(), format!("{}u", latency.as_micros()));
            }
        }
        PodMetrics {
            api_version: METRICS_API_VERSION.into(),
            kind: "PodMetrics".into(),
            metadata: ObjectMeta {
                uid: Some(pod.uid.clone()),
                creation_timestamp: Some(timestamp.to_string()),
                ..ObjectMeta::named(Some(namespace), name)
            },
            timestamp: timestamp.to_string(),
            window: window.to_string(),
            containers: vec![ContainerMetrics { name: pod.container.clone(), usage }],
        }
    }

    /// Every member's report, asked all at once (of the pods of Deployments `owners` only,
    /// when given: an autoscaler asks for its targets', not for every pod of the cluster);
    /// members that fail to answer in time are left out (and named in the second list).
    pub async fn scrape(&self, owners: Option<&HashSet<String>>) -> (Vec<NodeReport>, Vec<String>) {
        let me = self.cluster.node_id();
        let members = self.cluster.membership().members;
        let query = owners.map(|o| o.iter().cloned().collect::<Vec<_>>().join(","));
        let asks = members.into_values().map(|member| {
            let query = query.clone();
            async move {
                if member.id == me {
                    return Ok(self.local(owners));
                }
                self.ask(&member.url, query.as_deref()).await.map_err(|e| format!("{}: {e}", member.name))
            }
        });
        let (mut reports, mut missing) = (Vec::new(), Vec::new());
        for answer in futures::future::join_all(asks).await {
            match answer {
                Ok(report) => reports.push(report),
                Err(e) => missing.push(e),
            }
        }
        (reports, missing)
    }

    async fn ask(&self, url: &str, owners: Option<&str>) -> Result<NodeReport, String> {
        let mut url = format!("{}{PEER_METRICS_PATH}", url.trim_end_matches('/'));
        if let Some(owners) = owners {
            url.push_str(&format!("?owners={owners}"));
        }
        let me = self.cluster.node_id();
        let bytes =
            peer_get(&self.http, &url, &self.peer_token, me, SCRAPE_TIMEOUT, MAX_REPORT_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| format!("a malformed report: {e}"))
    }

    /// The memory requested by the pods bound to each node, by node name.
    pub fn allocated_memory(&self) -> HashMap<String, u64> {
        let mut by_node: HashMap<String, u64> = HashMap::new();
        if let Ok((pods, _)) = self.store.list("Pod", None) {
            for pod in pods.into_iter().filter_map(|v| serde_json::from_value::<Pod>(v).ok()) {
                if let Some(node) = &pod.spec.node_name {
                    let sum = by_node.entry(node.clone()).or_default();
                    *sum = sum.saturating_add(pod.memory_request());
                }
            }
        }
        by_node
    }
}
