//! Self-healing figures: 3 nodes, a 6-replica Deployment, steady load through a surviving
//! node's proxy and the other survivor's NodePort; kill -9 of a node that does not lead, 5
//! times, and of the leader's node, 5 times; then SIGTERM of each, as often. For each: the
//! time until 6 replicas are Ready on the nodes that remain, and the requests that failed
//! over the episode. The killed node is started again
//! after each episode and must not serve the pods that were replaced. And busy is not dead:
//! 10,000 pods starting on one node and a saturated CPU on another raise no alarm.

use std::time::{Duration, Instant};

use wasmkube_api::Pod;
use wasmkube_client::Client;
use wasmkube_fleet::{Wasmlet, example, leader_index, proxy_get, start_cluster, steady_load};

const REPLICAS: usize = 6;
const EPISODES: usize = 5;
const CLIENTS: usize = 8;

pub async fn run() -> anyhow::Result<()> {
    kills().await?;
    no_false_alarm().await
}

/// Busy is not dead: while node a starts 10,000 pods and node b's CPU is saturated by
/// spinning guests, no node may be marked NotReady and no pod replaced.
async fn no_false_alarm() -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b", "c"], &["--max-pods", "10100", "--request-timeout", "15s"]).await?;
    let client = nodes[0].client();
    let hello = client.upload_module(std::fs::read(example("hello_http"))?).await?.metadata.name;
    let misbehave = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    let on = |node: &str, name: &str, digest: &str, replicas: u32| {
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                                           "containers": [{"name": "app", "image": format!("sha256:{digest}")}]}}}
        })
    };
    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
    client.post_path(DEPLOYMENTS, &on("b", "spinner", &misbehave, 2)).await?;
    client
        .post_path(
            "/api/v1/namespaces/default/services",
            &serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spinner"},
                                "spec": {"selector": {"app": "spinner"}}}),
        )
        .await?;
    wait_for(Duration::from_secs(30), "the spinners Ready", || async {
        pods(&nodes[0]).await.iter().filter(|p| p.is_ready()).count() == 2
    })
    .await?;
    // b's CPU: 16 guests spinning until their 15 s deadline, over and over.
    let proxy = nodes[1].proxy.clone();
    let spin = tokio::spawn(async move {
        let started = Instant::now();
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    while started.elapsed() < Duration::from_secs(25) {
                        let _ = proxy_get(&proxy, "spinner", "/spin", &[]).await;
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.post_path(DEPLOYMENTS, &on("a", "big", &hello, 10_000)).await?;
    let (started, mut fewest, mut running) = (Instant::now(), 3, 0);
    while started.elapsed() < Duration::from_secs(25) {
        let listed: Vec<wasmkube_api::Node> = client.list(None).await.unwrap_or_default();
        fewest = fewest.min(listed.iter().filter(|n| n.is_ready()).count());
        let d = client.get_path(&format!("{DEPLOYMENTS}/big?resourceVersion=0")).await?;
        running = d["status"]["readyReplicas"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = spin.await;
    let events: Vec<wasmkube_api::Event> = client.list(Some("default")).await.unwrap_or_default();
    let alarms = events.iter().filter(|e| matches!(e.reason.as_str(), "NodeNotReady" | "NodeLost")).count();
    println!(
        "  busy is not dead (a starts 10,000 pods, b's CPU saturated by 16 spinning guests, 25 s): fewest Ready nodes {fewest}/3, NodeNotReady/NodeLost events {alarms}, big Ready {running}/10000   (target: 3/3, 0)"
    );
    Ok(())
}

/// How a node goes in an episode.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// kill -9: noticed by the leader (or, for the leader, by the next one).
    Kill,
    /// SIGTERM: it hands its pods over before it exits.
    Term,
}

/// kill -9 of a node that does not lead, then of the leader's, `EPISODES` times each; then
/// SIGTERM of each, as many times.
async fn kills() -> anyhow::Result<()> {
    let mut nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    let wasm = example("hello_http").display().to_string();
    let out = nodes[0].wasmctl(&[
        "deploy",
        &wasm,
        "--name",
        "hello",
        "--replicas",
        "6",
        "--service-type",
        "NodePort",
        "--wait",
    ]);
    anyhow::ensure!(out.status.success(), "deploy failed: {}", String::from_utf8_lossy(&out.stderr));
    println!(
        "self-healing: 3 nodes, {REPLICAS} replicas, {} clients through a surviving node's proxy and {} through the other's NodePort ({EPISODES} episodes each):",
        CLIENTS / 2,
        CLIENTS / 2
    );
    for (loss, leader) in [(Loss::Kill, false), (Loss::Kill, true), (Loss::Term, false), (Loss::Term, true)] {
        let (mut recovered, mut shares, mut stale, mut failed, mut total) = (Vec::new(), Vec::new(), 0, 0, 0);
        let mut exits = Vec::new();
        for _ in 0..EPISODES {
            let episode = episode(&mut nodes, leader, loss).await?;
            recovered.push(episode.recovered);
            exits.extend(episode.exited);
            shares.push(episode.ok as f64 / episode.total.max(1) as f64);
            stale += episode.stale_served;
            failed += episode.total - episode.ok;
            total += episode.total;
        }
        recovered.sort();
        shares.sort_by(f64::total_cmp);
        let p = |q: f64| recovered[((recovered.len() - 1) as f64 * q).round() as usize].as_secs_f64();
        let what = match (loss, leader) {
            (Loss::Kill, false) => "kill -9 of a node that does not lead",
            (Loss::Kill, true) => "kill -9 of the leader's node",
            (Loss::Term, false) => "SIGTERM of a node that does not lead",
            (Loss::Term, true) => "SIGTERM of the leader's node",
        };
        let target = match loss {
            Loss::Kill => "(target p99 < 3 s, >= 99.9 % OK)",
            Loss::Term => "(target < 5 s, 0 failed)",
        };
        let exited = exits.iter().max().map(|d| format!("; exited after {:.2} s at most", d.as_secs_f64()));
        println!(
            "  {what}: {REPLICAS} Ready again after p50 {:.2} s, p99 {:.2} s{}; failed requests {failed} of {total}, worst episode {:.3} % OK   {target}; replaced pods served by the restarted node: {stale}",
            p(0.5),
            p(0.99),
            exited.unwrap_or_default(),
            shares[0] * 100.0,
        );
    }
    Ok(())
}

struct Episode {
    recovered: Duration,
    /// After SIGTERM: when the node had exited.
    exited: Option<Duration>,
    ok: usize,
    total: usize,
    stale_served: usize,
}

async fn pods(node: &Wasmlet) -> Vec<Pod> {
    listed(&node.client()).await
}

async fn listed(client: &Client) -> Vec<Pod> {
    client.list(Some("default")).await.unwrap_or_default()
}

/// Loses a node (the leader's, or another) under load through a survivor's proxy and the
/// other survivor's NodePort, waits for the replicas to be Ready on the others, starts it
/// again and spreads the replicas back over the three.
async fn episode(nodes: &mut [Wasmlet], leader: bool, loss: Loss) -> anyhow::Result<Episode> {
    let lead = leader_index(nodes).await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let victim = if leader { lead } else { (lead + 1) % nodes.len() };
    let watcher = (victim + 1) % nodes.len();
    let other = (victim + 2) % nodes.len();
    let name = nodes[victim].name().to_string();
    let lost: Vec<String> = pods(&nodes[watcher])
        .await
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(name.as_str()))
        .map(|p| p.metadata.name)
        .collect();
    anyhow::ensure!(!lost.is_empty(), "no pod on {name} to lose");
    let service: wasmkube_api::Service = nodes[watcher].client().get(Some("default"), "hello").await?;
    let node_port = service.spec.ports.iter().find_map(|p| p.node_port).unwrap_or_default();
    let (proxy, node_port) = (nodes[watcher].proxy.clone(), nodes[other].node_port_url(node_port as u16));
    let load = tokio::spawn(async move {
        let period = Duration::from_secs(6);
        tokio::join!(
            steady_load(&proxy, "hello", CLIENTS / 2, period),
            steady_load(&node_port, "any-host", CLIENTS / 2, period)
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = nodes[watcher].client();
    let lost_at = Instant::now();
    let recovery = tokio::spawn(async move {
        loop {
            let now = listed(&client).await;
            let ready =
                now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() != Some(name.as_str()));
            if ready.count() >= REPLICAS && now.iter().all(|p| !lost.contains(&p.metadata.name)) {
                return Ok((lost_at.elapsed(), lost));
            }
            anyhow::ensure!(lost_at.elapsed() < Duration::from_secs(60), "not healed within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let exited = match loss {
        Loss::Kill => {
            nodes[victim].kill9();
            None
        }
        Loss::Term => {
            let exit = tokio::task::block_in_place(|| nodes[victim].terminate(Duration::from_secs(30)))?;
            anyhow::ensure!(exit.success(), "the node that left exited with {exit:?}");
            Some(lost_at.elapsed())
        }
    };
    let (recovered, lost) = recovery.await??;
    let (proxied, through_port) = load.await?;
    let (ok, total) = (proxied.ok + through_port.ok, proxied.total() + through_port.total());
    // Back: it catches up before it starts anything, so the replaced pods never run there.
    nodes[victim].restart()?;
    let back = &nodes[victim];
    wait_for(Duration::from_secs(30), "the node Ready again", || async {
        let listed: Vec<wasmkube_api::Node> = back.client().list(None).await.unwrap_or_default();
        listed.iter().filter(|n| n.is_ready()).count() == nodes.len()
    })
    .await?;
    let mut stale_served = 0;
    for pod in &lost {
        if proxy_get(&back.proxy, "hello", "/", &[("x-wasmkube-target-pod", pod)]).await.status == 200 {
            stale_served += 1;
        }
    }
    // Spread the replicas over the three nodes again for the next episode.
    let client = nodes[watcher].client();
    client.scale("default", "hello", 0).await?;
    wait_for(Duration::from_secs(30), "no replicas", || async { pods(&nodes[watcher]).await.is_empty() })
        .await?;
    client.scale("default", "hello", REPLICAS as u32).await?;
    wait_for(Duration::from_secs(30), "2 Ready replicas per node", || async {
        let now = pods(&nodes[watcher]).await;
        let on =
            |n: &str| now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() == Some(n)).count();
        nodes.iter().all(|w| on(w.name()) == REPLICAS / nodes.len())
    })
    .await?;
    Ok(Episode { recovered, exited, ok, total, stale_served })
}

async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
