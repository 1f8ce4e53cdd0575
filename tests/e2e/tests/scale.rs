//! The scale wedges of issue 8, at a size `make test` can afford (the bench runs them at
//! 10,000): thousands of replicas on three nodes all Running with every node Ready
//! throughout, and one node holding thousands of pods without evicting itself.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmkube_api::{Deployment, Event, Node};
use wasmkube_e2e::{Wasmlet, eventually, example, start_cluster};

const REPLICAS: u32 = 3000;

/// Deploys `REPLICAS` of hello and waits until all are ready, checking on the way that every
/// node stays Ready. Returns how long it took.
async fn deploy_and_watch(w: &Wasmlet, nodes: usize) -> anyhow::Result<Duration> {
    let client = w.client();
    let digest = client.upload_module(std::fs::read(example("hello_http"))?).await?.metadata.name;
    let started = Instant::now();
    client
        .post_path(
            "/apis/apps/v1/namespaces/default/deployments",
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "many"},
                "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "many"}},
                         "template": {"metadata": {"labels": {"app": "many"}},
                                      "spec": {"containers": [{"name": "app", "image": format!("sha256:{digest}")}]}}}
            }),
        )
        .await?;
    loop {
        let listed: Vec<Node> = client.list(None).await?;
        let ready = listed.iter().filter(|n| n.is_ready()).count();
        assert_eq!(ready, nodes, "every node stays Ready while {REPLICAS} pods start");
        let d: Deployment = client.get(Some("default"), "many").await?;
        if d.status.as_ref().is_some_and(|s| s.ready_replicas == REPLICAS) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "not all ready within 60 s: {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store's revision: how many writes it has applied.
async fn revision(w: &Wasmlet) -> anyhow::Result<u64> {
    let list = w.client().get_path("/api/v1/namespaces/default/pods?limit=1").await?;
    let rv = list["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok());
    rv.ok_or_else(|| anyhow::anyhow!("no resourceVersion on a list: {list}"))
}

async fn no_node_trouble(w: &Wasmlet) -> anyhow::Result<()> {
    let events: Vec<Event> = w.client().list(Some("default")).await?;
    let trouble: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.reason.as_str(), "NodeNotReady" | "NodeLost" | "FailedScheduling"))
        .collect();
    assert!(trouble.is_empty(), "{trouble:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_replicas_on_three_nodes_all_run_with_every_node_ready() -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b", "c"], &["--max-pods", "1100"]).await?;
    eventually(Duration::from_secs(15), "three Ready nodes", || async {
        let listed: Vec<Node> = nodes[0].client().list(None).await.ok()?;
        (listed.iter().filter(|n| n.is_ready()).count() == 3).then_some(())
    })
    .await?;
    let took = deploy_and_watch(&nodes[1], 3).await?;
    eprintln!("{REPLICAS} replicas on 3 nodes ready in {took:?}");
    no_node_trouble(&nodes[0]).await?;
    // The cluster goes on working: a scale down lands.
    nodes[2].client().scale("default", "many", 30).await?;
    eventually(Duration::from_secs(30), "30 replicas left", || async {
        let d: Deployment = nodes[0].client().get(Some("default"), "many").await.ok()?;
        (d.status?.replicas == 30).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_thousands_of_pods_without_evicting_itself() -> anyhow::Result<()> {
    let node = Wasmlet::start(&["--max-pods", "3100"])?;
    let before = revision(&node).await?;
    let took = deploy_and_watch(&node, 1).await?;
    eprintln!("{REPLICAS} pods on one node ready in {took:?}");
    // Stays so: no heartbeat missed while they run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each pod costs two writes, its creation (already bound) and its first status, plus a
    // share of events and the Deployment's status: a status written twice shows here.
    let writes = revision(&node).await? - before;
    assert!(writes < 2 * REPLICAS as u64 + REPLICAS as u64 / 4, "{writes} writes for {REPLICAS} pods");
    let listed: Vec<Node> = node.client().list(None).await?;
    assert!(listed.iter().all(Node::is_ready));
    no_node_trouble(&node).await?;
    // And its proxy serves them.
    node.client()
        .post_path(
            "/api/v1/namespaces/default/services",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "many"}, "spec": {"selector": {"app": "many"}}}),
        )
        .await?;
    eventually(Duration::from_secs(10), "the proxy serving the pods", || async {
        let r = wasmkube_e2e::through_proxy(&node.proxy, "many", "/", 20).await;
        r.iter().all(|(status, _)| *status == 200).then_some(())
    })
    .await?;
    Ok(())
}
