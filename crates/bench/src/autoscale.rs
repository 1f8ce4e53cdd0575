//! Autoscaling figures on one node: the time from a step in load to the new pods serving
//! (a concurrency target of 1 per pod, load stepping 1 → 4 clients of 100 ms requests), and
//! the first request after scale to zero next to a warm one, alternating, in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use wasmkube_api::{Deployment, Pod};
use wasmkube_fleet::{Wasmlet, deploy_example};

const ROUNDS: usize = 5;
const HPAS: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";

pub async fn run() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    for name in ["step", "cold"] {
        deploy_example(&node, "misbehave", name, 1).await?;
    }
    let hpa = |name: &str, min: u32, extra: serde_json::Value| {
        let mut h = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": min, "maxReplicas": 8,
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": "concurrency"},
                                  "target": {"type": "AverageValue", "averageValue": "1"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}});
        if let (Some(meta), Some(extra)) = (h["metadata"].as_object_mut(), extra.as_object()) {
            meta.extend(extra.clone());
        }
        h
    };
    client.post_path(HPAS, &hpa("step", 1, json!({}))).await?;
    let idle = json!({"annotations": {"autoscaling.wasmkube.dev/scale-to-zero-after": "2s"}});
    client.post_path(HPAS, &hpa("cold", 0, idle)).await?;
    steps(&node).await?;
    cold_starts(&node).await
}

/// Ready pods of Deployment `name`.
async fn ready(node: &Wasmlet, name: &str) -> usize {
    let pods: Vec<Pod> = node.client().list(Some("default")).await.unwrap_or_default();
    pods.iter()
        .filter(|p| p.metadata.labels.get("app").map(String::as_str) == Some(name) && p.is_ready())
        .count()
}

async fn wait(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{what}: not within {limit:?}")
}

/// Load steps from 1 to 4 clients of 100 ms requests: the time until 4 pods serve.
async fn steps(node: &Wasmlet) -> anyhow::Result<()> {
    let clients = Arc::new(AtomicUsize::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..4 {
        let (clients, stop, url) = (clients.clone(), stop.clone(), format!("{}/sleep?ms=100", node.proxy));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                if i >= clients.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let _ = http.get(&url).header("host", "step").timeout(Duration::from_secs(10)).send().await;
            }
        });
    }
    let mut took = Vec::new();
    for round in 0..ROUNDS {
        clients.store(1, Ordering::Relaxed);
        wait("back to 1 pod", Duration::from_secs(60), async || ready(node, "step").await == 1).await?;
        // Settled at one: a few seconds of one client. The wait above ends just after an
        // autoscaler pass (every second); the step lands at a different point between two
        // passes each round (0, 0.2, … 0.8 s of a period later), not always at the same one.
        let phase = Duration::from_secs(1).mul_f64(round as f64 / ROUNDS as f64);
        tokio::time::sleep(Duration::from_secs(3) + phase).await;
        clients.store(4, Ordering::Relaxed);
        took.push(
            wait("4 pods serving", Duration::from_secs(30), async || ready(node, "step").await >= 4).await?,
        );
    }
    stop.store(true, Ordering::Relaxed);
    took.sort();
    let s = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    println!(
        "autoscaling, load step 1 -> 4 clients (concurrency target 1 per pod): 4 pods serving after median {} s, max {} s   (rounds {:?}; target < 2 s)",
        s(&took[took.len() / 2]),
        s(&took[took.len() - 1]),
        took.iter().map(s).collect::<Vec<_>>()
    );
    Ok(())
}

/// The first request after scale to zero next to a warm request right after it.
async fn cold_starts(node: &Wasmlet) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/sleep?ms=0", node.proxy);
    let get = async || -> anyhow::Result<Duration> {
        let sent = Instant::now();
        let answer = http.get(&url).header("host", "cold").timeout(Duration::from_secs(20)).send().await?;
        anyhow::ensure!(answer.status().is_success(), "answered {}", answer.status());
        answer.bytes().await?;
        Ok(sent.elapsed())
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let client = node.client();
        wait("scaled to zero", Duration::from_secs(30), async || {
            let at_zero =
                client.get::<Deployment>(Some("default"), "cold").await.is_ok_and(|d| d.spec.replicas == 0);
            at_zero && ready(node, "cold").await == 0
        })
        .await?;
        cold.push(get().await?);
        warm.push(get().await?);
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    cold.sort();
    warm.sort();
    let (c, w) = (ms(&cold[ROUNDS / 2]), ms(&warm[ROUNDS / 2]));
    println!(
        "scale from zero, 1 node: first request median {c:.1} ms (max {:.1}), warm request {w:.2} ms: {:.1} ms more   (target < 10 ms more)",
        ms(&cold[ROUNDS - 1]),
        c - w
    );
    Ok(())
}
