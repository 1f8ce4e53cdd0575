//! `wasmctl autoscale deployment NAME --min 0 --max 50 --target-concurrency 10`: creates
//! (or replaces) a HorizontalPodAutoscaler for a Deployment, as `kubectl autoscale` does,
//! with wasmkube's request metrics beside CPU.

use clap::Args;
use serde_json::{Value, json};
use wasmkube_client::Client;

use crate::resources;

#[derive(Args)]
#[command(about = "Scale a deployment with its load: CPU, concurrency or requests/s per pod")]
pub struct Autoscale {
    /// `deployment` (or `deployment/NAME`).
    resource: String,
    name: Option<String>,
    /// Fewest replicas (0: scale to zero when idle).
    #[arg(long, default_value_t = 1)]
    min: u32,
    /// Most replicas.
    #[arg(long)]
    max: u32,
    /// Average CPU use per pod, in percent of its request.
    #[arg(long)]
    cpu_percent: Option<u32>,
    /// Requests in flight per pod, on average.
    #[arg(long)]
    target_concurrency: Option<String>,
    /// Requests per second per pod.
    #[arg(long)]
    target_rps: Option<String>,
    /// With --min 0: how long without a request before scaling to zero (default 60s).
    #[arg(long)]
    scale_to_zero_after: Option<String>,
}

impl Autoscale {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let (kind, name) = resources::target(&self.resource, self.name.as_deref())?;
        if kind.kind != "Deployment" {
            anyhow::bail!("only deployments can be autoscaled");
        }
        let name = name.ok_or_else(|| {
            anyhow::anyhow!("autoscale needs a name: wasmctl autoscale deployment NAME --max N")
        })?;
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(percent) = self.cpu_percent {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": percent}}}));
        }
        for (metric, value) in
            [("concurrency", &self.target_concurrency), ("requests-per-second", &self.target_rps)]
        {
            if let Some(value) = value {
                metrics.push(json!({"type": "Pods", "pods": {"metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": value}}}));
            }
        }
        let mut hpa = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": self.min, "maxReplicas": self.max, "metrics": metrics},
        });
        if let Some(after) = &self.scale_to_zero_after {
            hpa["metadata"]["annotations"] = json!({wasmkube_api::SCALE_TO_ZERO_AFTER: after});
        }
        let collection = format!("/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers");
        match client.post_path(&collection, &hpa).await {
            Ok(_) => crate::out!("horizontalpodautoscaler.autoscaling/{name} autoscaled"),
            Err(e) if e.code() == Some(409) => {
                // There is one: replace its spec, at the version just read.
                let path = format!("{collection}/{name}");
                let current = client.get_path(&path).await?;
                hpa["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                client.put_path(&path, &hpa).await?;
                crate::out!("horizontalpodautoscaler.autoscaling/{name} configured");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}
