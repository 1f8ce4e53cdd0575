//! Resource metrics with the real binaries (`metrics.k8s.io/v1beta1`, `wasmctl top`): a
//! pod's CPU, memory, concurrency, requests/s and latency as measured where it runs, and
//! gathered from every member by whichever node is asked.

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_api::metrics::{CONCURRENCY, LATENCY, MEMORY_ALLOCATED, REQUESTS_PER_SECOND};
use wasmkube_api::{NodeMetrics, PodMetrics};
use wasmkube_e2e::{Wasmlet, eventually, example, start_cluster, steady_load};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, digest: &str, replicas: u32, spec: Value) -> Value {
    let mut pod = json!({"containers": [{"name": "server", "image": format!("sha256:{digest}")}]});
    if let (Some(pod), Some(extra)) = (pod.as_object_mut(), spec.as_object()) {
        pod.extend(extra.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}})
}

async fn service(node: &Wasmlet, name: &str) -> anyhow::Result<()> {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"selector": {"app": name}}});
    node.client().post_path("/api/v1/namespaces/default/services", &svc).await?;
    Ok(())
}

async fn pod_metrics(node: &Wasmlet, selector: &str) -> Option<Vec<PodMetrics>> {
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector={selector}");
    let list = node.client().get_path(&path).await.ok()?;
    serde_json::from_value(list["items"].clone()).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_node_metrics_are_measured_where_pods_run_and_gathered_from_every_member()
-> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b"], &[]).await?;
    let client = nodes[0].client();
    let hello = client.upload_module(std::fs::read(example("hello_http"))?).await?.metadata.name;
    let misbehave = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    client.post_path(DEPLOYMENTS, &deployment("hello", &hello, 2, json!({}))).await?;
    // Requests that loop until their 1 s deadline: two in flight at all times, on half a core.
    let busy = json!({"timeoutSeconds": 1,
                      "containers": [{"name": "server", "image": format!("sha256:{misbehave}"),
                                      "resources": {"limits": {"cpu": "500m", "memory": "32Mi"}}}]});
    client.post_path(DEPLOYMENTS, &deployment("busy", &misbehave, 1, busy)).await?;
    service(&nodes[0], "hello").await?;
    service(&nodes[0], "busy").await?;
    eventually(Duration::from_secs(30), "3 pods Ready", || async {
        let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await.ok()?;
        (pods.iter().filter(|p| p.is_ready()).count() == 3).then_some(())
    })
    .await?;

    let spin = {
        let proxy = nodes[0].proxy.clone();
        tokio::spawn(async move {
            let loops = (0..2).map(|_| {
                let proxy = proxy.clone();
                async move {
                    let http = reqwest::Client::new();
                    for _ in 0..30 {
                        let _ = http.get(format!("{proxy}/spin")).header("host", "busy").send().await;
                    }
                }
            });
            futures::future::join_all(loops).await;
        })
    };
    let load = {
        let proxy = nodes[0].proxy.clone();
        tokio::spawn(async move { steady_load(&proxy, "hello", 2, Duration::from_secs(8)).await })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Asked through b: the busy pod runs wherever it was placed, and b gathers it.
    // (Its first window may still be settling: read again after a second.)
    let busy = eventually(Duration::from_secs(10), "busy's metrics", || async {
        let pods = pod_metrics(&nodes[1], "app=busy").await?;
        pods.into_iter().next().filter(|p| p.usage(CONCURRENCY).is_some())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = pod_metrics(&nodes[1], "app=busy").await.and_then(|p| p.into_iter().next()).unwrap_or(busy);
    let concurrency = busy.usage(CONCURRENCY).unwrap_or_default();
    let cpu = busy.usage("cpu").unwrap_or_default();
    assert!((1.5..=2.5).contains(&concurrency), "two loops in flight: concurrency {concurrency}");
    assert!((0.3..=0.7).contains(&cpu), "held to its 500m: {cpu} cores");
    assert_eq!(busy.containers[0].name, "server");
    assert!(busy.usage("memory").is_some());

    let hello_pods = pod_metrics(&nodes[1], "app=hello").await.unwrap_or_default();
    assert_eq!(hello_pods.len(), 2, "both hello pods: {hello_pods:?}");
    // Spread one on each node: b reports a's pod too, gathered over the network.
    let placed: Vec<wasmkube_api::Pod> = client.list(Some("default")).await?;
    let hello_nodes: std::collections::BTreeSet<_> = placed
        .iter()
        .filter(|p| p.metadata.labels.get("app").map(String::as_str) == Some("hello"))
        .filter_map(|p| p.spec.node_name.clone())
        .collect();
    assert_eq!(hello_nodes.len(), 2, "one hello pod on each node");
    for pod in &hello_pods {
        let rps = pod.usage(REQUESTS_PER_SECOND).unwrap_or_default();
        assert!(rps > 10.0, "{} serves its share: {rps} req/s", pod.metadata.name);
        assert!(pod.usage(LATENCY).is_some_and(|l| l > 0.0 && l < 1.0), "{pod:?}");
    }
    let load = load.await?;
    assert!(load.failed.is_empty(), "{:?}", load.failed.first());
    spin.abort();

    let list = nodes[0].client().get_path("/apis/metrics.k8s.io/v1beta1/nodes").await?;
    let node_metrics: Vec<NodeMetrics> = serde_json::from_value(list["items"].clone())?;
    let names: Vec<&str> = node_metrics.iter().map(|n| n.metadata.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    for node in &node_metrics {
        assert!(node.usage("memory").is_some_and(|m| m > 1e6), "{node:?}");
        assert!(node.usage("cpu").is_some(), "{node:?}");
        // busy's 32Mi limit is its request: it counts on its node.
        assert!(node.usage(MEMORY_ALLOCATED).is_some(), "{node:?}");
    }
    let allocated: f64 = node_metrics.iter().filter_map(|n| n.usage(MEMORY_ALLOCATED)).sum();
    assert_eq!(allocated, (32u64 << 20) as f64);

    // wasmctl top reads the same.
    let top = nodes[1].wasmctl_ok(&["top", "pods"]);
    assert!(top.lines().next().is_some_and(|h| h.contains("CPU(cores)") && h.contains("REQ/S")), "{top}");
    assert_eq!(top.lines().count(), 4, "a header and three pods: {top}");
    let top = nodes[0].wasmctl_ok(&["top", "nodes"]);
    assert!(top.contains("\na ") && top.contains("\nb "), "{top}");

    // Not found, and the peer endpoint is for members only.
    let missing = client.get_path("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope").await;
    assert_eq!(missing.err().and_then(|e| e.code()), Some(404));
    let peer = reqwest::Client::new()
        .get(format!("{}/peer/v1/metrics", nodes[0].api))
        .bearer_auth(&nodes[0].token)
        .header("x-wasmkube-from", "2")
        .send()
        .await?;
    assert_eq!(peer.status(), 401, "the admin token is not the peer token");
    // A member asks for the pods of some Deployments only (as the autoscaler does).
    let busy_uid = client.get::<wasmkube_api::Deployment>(Some("default"), "busy").await?.metadata.uid;
    let peer_token = std::fs::read_to_string(nodes[0].data_dir.join("peer.token"))?.trim().to_string();
    let mut reported = Vec::new();
    for (node, from) in [(&nodes[0], "2"), (&nodes[1], "1")] {
        let url = format!("{}/peer/v1/metrics?owners={}", node.api, busy_uid.clone().unwrap_or_default());
        let answer = reqwest::Client::new()
            .get(url)
            .bearer_auth(&peer_token)
            .header("x-wasmkube-from", from)
            .send()
            .await?;
        assert_eq!(answer.status(), 200);
        let report: Value = answer.json().await?;
        for pod in report["pods"].as_array().cloned().unwrap_or_default() {
            reported.push(pod["metadata"]["name"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(reported.len(), 1, "busy's pod only: {reported:?}");
    assert!(reported[0].starts_with("busy-"), "{reported:?}");
    Ok(())
}
