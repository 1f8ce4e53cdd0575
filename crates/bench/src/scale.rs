//! Figures at the scale wasm is for: `deploy --replicas 10000` on 3 loopback nodes
//! (placements/s until every pod is bound, seconds until every pod is Running, every node
//! Ready throughout), and one node holding 10,000 idle http pods (resident memory, idle CPU,
//! `get pods` latency, and requests/s through the proxy to that Deployment next to a 5-pod
//! one, alternating rounds).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmkube_client::Client;
use wasmkube_fleet::{Wasmlet, start_cluster};

const REPLICAS: u64 = 10_000;
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

pub async fn run(wasm: &Path, seconds: u64, connections: usize) -> anyhow::Result<()> {
    three_nodes(wasm).await?;
    one_node(wasm, seconds, connections).await
}

fn deployment(name: &str, digest: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": format!("sha256:{digest}")}]}}}
    })
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": name}}})
}

/// Replicas created (each is created already bound to a node) and replicas Ready, from the
/// Deployment's status as the controller reports it: a cheap read, so watching the figure
/// does not slow what it measures.
async fn progress(client: &Client) -> anyhow::Result<(u64, u64)> {
    let d = client.get_path(&format!("{DEPLOYMENTS}/big?resourceVersion=0")).await?;
    Ok((d["status"]["replicas"].as_u64().unwrap_or(0), d["status"]["readyReplicas"].as_u64().unwrap_or(0)))
}

async fn ready_nodes(client: &Client) -> usize {
    let nodes: Vec<wasmkube_api::Node> = client.list(None).await.unwrap_or_default();
    nodes.iter().filter(|n| n.is_ready()).count()
}

/// Creates the Deployment and polls until every replica is bound, then Running.
async fn deploy_and_wait(
    w: &Wasmlet,
    wasm: &Path,
    nodes: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let client = w.client();
    // "Ready throughout" is counted from a cluster whose nodes have all reported in.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while ready_nodes(&client).await < nodes {
        anyhow::ensure!(Instant::now() < ready_by, "not every node was Ready within 30 s of starting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let digest = client.upload_module(std::fs::read(wasm)?).await?.metadata.name;
    client.post_path("/api/v1/namespaces/default/services", &service("big")).await?;
    let start = Instant::now();
    client.post_path(DEPLOYMENTS, &deployment("big", &digest, REPLICAS)).await?;
    let (mut bound_at, mut min_ready) = (None, nodes);
    let deadline = start + Duration::from_secs(300);
    loop {
        let (bound, running) = progress(&client).await?;
        min_ready = min_ready.min(ready_nodes(&client).await);
        if bound == REPLICAS && bound_at.is_none() {
            bound_at = Some(start.elapsed());
        }
        if running == REPLICAS {
            let done = (bound_at.unwrap_or_else(|| start.elapsed()), start.elapsed(), min_ready);
            // Not timed: every replica is really bound to a node.
            let pods = client.get_path("/api/v1/namespaces/default/pods?resourceVersion=0").await?;
            let items = pods["items"].as_array().map(Vec::as_slice).unwrap_or_default();
            let on_nodes = items.iter().filter(|p| p["spec"]["nodeName"].is_string()).count() as u64;
            anyhow::ensure!(on_nodes >= REPLICAS, "only {on_nodes} pods are bound to a node");
            return Ok(done);
        }
        anyhow::ensure!(Instant::now() < deadline, "{bound} bound, {running} running after 300 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn three_nodes(wasm: &Path) -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b", "c"], &["--max-pods", "4000"]).await?;
    let (bound, running, min_ready) = deploy_and_wait(&nodes[0], wasm, 3).await?;
    println!("deploy --replicas {REPLICAS} on 3 nodes (loopback, dev build):");
    println!(
        "  all bound after {:.1} s: {:.0} placements/s   (target >= 5000/s)",
        bound.as_secs_f64(),
        REPLICAS as f64 / bound.as_secs_f64()
    );
    println!("  all Running after {:.1} s   (target < 10 s)", running.as_secs_f64());
    println!("  fewest Ready nodes seen meanwhile: {min_ready}/3");
    // An autoscaler of all 10,000 (bounds that keep it there): the leader gathers every
    // pod's metrics from every member each second.
    let pids: Vec<u32> = nodes.iter().filter_map(Wasmlet::pid).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = cpu_of(&pids, Duration::from_secs(5))?;
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "big"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "big"},
                 "minReplicas": REPLICAS, "maxReplicas": REPLICAS,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": "concurrency"},
                              "target": {"type": "AverageValue", "averageValue": "10"}}}]}});
    nodes[0]
        .client()
        .post_path("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", &hpa)
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let autoscaled = cpu_of(&pids, Duration::from_secs(5))?;
    let share = |v: &[f64]| v.iter().map(|c| format!("{:.1}", c * 100.0)).collect::<Vec<_>>().join(" / ");
    println!(
        "  CPU of nodes a / b / c (% of a core), the 10,000 pods idle: {}; with an autoscaler of them: {}",
        share(&idle),
        share(&autoscaled)
    );
    Ok(())
}

async fn one_node(wasm: &Path, seconds: u64, connections: usize) -> anyhow::Result<()> {
    let w = Wasmlet::start(&["--max-pods", "10100"])?;
    let (_, running, _) = deploy_and_wait(&w, wasm, 1).await?;
    let client = w.client();
    let digest = client.upload_module(std::fs::read(wasm)?).await?.metadata.name;
    client.post_path("/api/v1/namespaces/default/services", &service("small")).await?;
    client.post_path(DEPLOYMENTS, &deployment("small", &digest, 5)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = w.pid().ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
    let cpu = idle_cpu(pid, Duration::from_secs(10))?;
    let rss = rss_mib(pid)?;
    // An autoscaler of the 5-pod Deployment: it reads those pods' metrics every second, which
    // must not cost a pass over the other 10,000.
    let hpa = serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "small"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "small"},
                 "minReplicas": 5, "maxReplicas": 5,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": "concurrency"},
                              "target": {"type": "AverageValue", "averageValue": "10"}}}]}});
    client.post_path("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", &hpa).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_autoscaled = idle_cpu(pid, Duration::from_secs(10))?;
    client.delete_path("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/small").await?;
    let mut list = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = w.wasmctl(&["get", "pods"]);
        anyhow::ensure!(out.status.success(), "wasmctl get pods failed");
        list.push(t.elapsed());
    }
    list.sort();
    let proxy = w.proxy.trim_start_matches("http://").parse()?;
    let duration = Duration::from_secs(seconds);
    let (mut big, mut small) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        big.push(crate::load::run(proxy, "big", connections, duration).await?.rps);
        small.push(crate::load::run(proxy, "small", connections, duration).await?.rps);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!("one node holding {REPLICAS} http pods (Running after {:.1} s):", running.as_secs_f64());
    println!("  resident memory {rss:.0} MiB   (target < 1536 MiB)");
    println!("  idle CPU {:.1} % of a core over 10 s   (target < 5 %)", cpu * 100.0);
    println!(
        "  idle CPU with an autoscaler of the 5-pod Deployment: {:.1} % of a core   (target < 5 %)",
        cpu_autoscaled * 100.0
    );
    println!(
        "  wasmctl get pods ({} pods): median {:.0} ms",
        REPLICAS + 5,
        list[list.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "  through the proxy, {connections} connections: {REPLICAS}-pod Deployment {:.0} req/s, 5-pod Deployment {:.0} req/s ({:.0} %)",
        best(&big),
        best(&small),
        100.0 * best(&big) / best(&small).max(1.0)
    );
    Ok(())
}

/// CPU time the process used over `window`, as a share of one core.
fn idle_cpu(pid: u32, window: Duration) -> anyhow::Result<f64> {
    Ok(cpu_of(&[pid], window)?.first().copied().unwrap_or(0.0))
}

/// CPU time each process used over the same `window`, as a share of one core.
fn cpu_of(pids: &[u32], window: Duration) -> anyhow::Result<Vec<f64>> {
    let ticks = |pid: u32| -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name (which may hold spaces) come state, ppid, …: utime and
        // stime are the 12th and 13th of those.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        Ok(field(11) + field(12))
    };
    let before = pids.iter().map(|p| ticks(*p)).collect::<anyhow::Result<Vec<u64>>>()?;
    std::thread::sleep(window);
    let after = pids.iter().map(|p| ticks(*p)).collect::<anyhow::Result<Vec<u64>>>()?;
    // Linux reports CPU time in clock ticks of 1/100 s.
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / 100.0 / window.as_secs_f64())
        .collect())
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(kib / 1024.0)
}
