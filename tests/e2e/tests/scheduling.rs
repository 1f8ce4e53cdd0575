//! The scheduler with the real binaries: memory requests against each node's allocatable
//! memory, Kubernetes' FailedScheduling explanation, nodeSelector, and spreading replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_api::{Event, Node, Pod};
use wasmkube_e2e::{Wasmlet, eventually, example, start_cluster};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

async fn hello_digest(node: &Wasmlet) -> anyhow::Result<String> {
    let module = node.client().upload_module(std::fs::read(example("hello_http"))?).await?;
    Ok(module.metadata.name)
}

fn deployment(name: &str, digest: &str, replicas: u32, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": format!("sha256:{digest}")}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    })
}

async fn pods_of(node: &Wasmlet, app: &str) -> Vec<Pod> {
    let pods: Vec<Pod> = node.client().list(Some("default")).await.unwrap_or_default();
    pods.into_iter().filter(|p| p.metadata.labels.get("app").map(String::as_str) == Some(app)).collect()
}

/// Running pods of `app` per node, and the count still Pending without a node.
async fn placement(node: &Wasmlet, app: &str) -> (BTreeMap<String, usize>, usize) {
    let pods = pods_of(node, app).await;
    let mut per_node = BTreeMap::new();
    for p in pods.iter().filter(|p| p.is_ready()) {
        *per_node.entry(p.spec.node_name.clone().unwrap_or_default()).or_default() += 1;
    }
    (per_node, pods.iter().filter(|p| p.spec.node_name.is_none()).count())
}

fn two_each(names: &[&str]) -> BTreeMap<String, usize> {
    names.iter().map(|n| (n.to_string(), 2)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_requests_are_admitted_against_each_node_and_the_rest_wait_with_a_reason() -> anyhow::Result<()>
{
    let nodes = start_cluster(&["a", "b", "c"], &["--memory", "256Mi"]).await?;
    let a = &nodes[0];
    let digest = hello_digest(a).await?;
    let requests = json!({"containers": [{"name": "app", "image": format!("sha256:{digest}"),
                                          "resources": {"requests": {"memory": "100Mi"}}}]});
    a.client().post_path(DEPLOYMENTS, &deployment("fat", &digest, 8, requests)).await?;
    eventually(Duration::from_secs(30), "6 running, 2 per node, and 2 pending", || async {
        let (running, pending) = placement(a, "fat").await;
        (running == two_each(&["a", "b", "c"]) && pending == 2).then_some(())
    })
    .await?;
    let events = eventually(Duration::from_secs(10), "FailedScheduling events", || async {
        let events: Vec<Event> = a.client().list(Some("default")).await.ok()?;
        let failed: Vec<Event> = events.into_iter().filter(|e| e.reason == "FailedScheduling").collect();
        (failed.len() == 2).then_some(failed)
    })
    .await?;
    for e in &events {
        assert_eq!(e.message, "0/3 nodes are available: 3 Insufficient memory.");
    }
    // Scaling to what fits clears the pending pods.
    a.client().scale("default", "fat", 6).await?;
    eventually(Duration::from_secs(20), "6 running and none pending", || async {
        let (running, pending) = placement(a, "fat").await;
        (running == two_each(&["a", "b", "c"]) && pending == 0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_and_spreading_place_replicas_where_they_belong() -> anyhow::Result<()> {
    let a = Wasmlet::start_fixed("a", &["--label", "zone=east"])?;
    let token = a.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let join = ["--join", a.api.as_str(), "--join-token", token.as_str(), "--label", "zone=west"];
    let b = Wasmlet::start_fixed("b", &join)?;
    let mut c = Wasmlet::start_fixed("c", &join)?;
    eventually(Duration::from_secs(15), "three labelled Ready nodes", || async {
        let listed: Vec<Node> = a.client().list(None).await.ok()?;
        let labelled =
            listed.iter().filter(|n| n.is_ready() && n.metadata.labels.contains_key("zone")).count();
        (labelled == 3).then_some(())
    })
    .await?;
    let digest = hello_digest(&a).await?;

    // Only the west nodes take the pods that select them.
    let west = json!({"nodeSelector": {"zone": "west"}});
    a.client().post_path(DEPLOYMENTS, &deployment("west", &digest, 4, west)).await?;
    eventually(Duration::from_secs(20), "4 west pods on b and c", || async {
        let (running, _) = placement(&a, "west").await;
        (running == two_each(&["b", "c"])).then_some(())
    })
    .await?;

    // Replicas spread: 6 on 3 nodes land 2 per node.
    a.client().post_path(DEPLOYMENTS, &deployment("spread", &digest, 6, json!({}))).await?;
    eventually(Duration::from_secs(20), "2 spread pods per node", || async {
        let (running, _) = placement(&a, "spread").await;
        (running == two_each(&["a", "b", "c"])).then_some(())
    })
    .await?;

    // c dies (kill -9); once it is lost its pods are replaced on a and b. It comes back
    // (same data dir, new ports) empty, and scaling up fills it first.
    c.kill9();
    eventually(Duration::from_secs(45), "c's spread pods replaced on a and b", || async {
        let (running, _) = placement(&a, "spread").await;
        (!running.contains_key("c") && running.values().sum::<usize>() == 6).then_some(())
    })
    .await?;
    c.restart_elsewhere()?;
    eventually(Duration::from_secs(20), "c Ready again", || async {
        let listed: Vec<Node> = a.client().list(None).await.ok()?;
        listed.iter().any(|n| n.metadata.name == "c" && n.is_ready()).then_some(())
    })
    .await?;
    a.client().scale("default", "spread", 9).await?;
    let (running, _) = eventually(Duration::from_secs(20), "9 spread pods", || async {
        let placed = placement(&a, "spread").await;
        (placed.0.values().sum::<usize>() == 9).then_some(placed)
    })
    .await?;
    assert_eq!(running.get("c"), Some(&3), "the three new replicas went to the empty node: {running:?}");
    drop((b, c));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_less_memory_refuses_what_no_longer_fits_and_it_is_placed_elsewhere()
-> anyhow::Result<()> {
    let mut nodes = start_cluster(&["a", "b", "c"], &["--memory", "512Mi"]).await?;
    let digest = hello_digest(&nodes[0]).await?;
    let requests = json!({"containers": [{"name": "app", "image": format!("sha256:{digest}"),
                                          "resources": {"requests": {"memory": "100Mi"}}}]});
    nodes[0].client().post_path(DEPLOYMENTS, &deployment("fat", &digest, 6, requests)).await?;
    eventually(Duration::from_secs(30), "2 running on each node", || async {
        (placement(&nodes[0], "fat").await.0 == two_each(&["a", "b", "c"])).then_some(())
    })
    .await?;
    let on_c: Vec<Pod> = pods_of(&nodes[0], "fat")
        .await
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some("c"))
        .collect();
    // c comes back with room for one of its two pods: it keeps the older one, refuses the
    // other (as the kubelet's OutOfmemory), and the Deployment replaces that one where it fits.
    nodes[2].restart_with(&["--memory", "128Mi"])?;
    let a = &nodes[0];
    let refused = eventually(Duration::from_secs(30), "an OutOfmemory event from c", || async {
        let events: Vec<Event> = a.client().list(Some("default")).await.ok()?;
        events.into_iter().find(|e| e.reason == "OutOfmemory")
    })
    .await?;
    assert!(refused.message.contains("Node didn't have enough resource: memory"), "{}", refused.message);
    eventually(Duration::from_secs(30), "6 running again, one of them on c", || async {
        let (running, pending) = placement(a, "fat").await;
        let total: usize = running.values().sum();
        (total == 6 && running.get("c") == Some(&1) && pending == 0).then_some(())
    })
    .await?;
    let mut older = on_c.clone();
    older.sort_by(|x, y| {
        (&x.metadata.creation_timestamp, &x.metadata.name)
            .cmp(&(&y.metadata.creation_timestamp, &y.metadata.name))
    });
    let now: Vec<String> = pods_of(a, "fat").await.into_iter().map(|p| p.metadata.name).collect();
    assert!(now.contains(&older[0].metadata.name), "c kept its older pod {}", older[0].metadata.name);
    assert!(
        !now.contains(&older[1].metadata.name),
        "the refused pod {} was replaced",
        older[1].metadata.name
    );
    assert_eq!(refused.involved_object.name, older[1].metadata.name);
    Ok(())
}
