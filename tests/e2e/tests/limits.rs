//! Objects at the API's size limit, and late joiners catching up from a large store: the
//! ways one big write or one lost snapshot used to wedge a cluster for good.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmkube_api::MAX_OBJECT_BYTES;
use wasmkube_e2e::{Wasmlet, eventually, example, leader_index, members, set_faults, start_cluster};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// A Deployment of 0 replicas whose JSON is about `size` bytes (a big env value).
fn big_deployment(name: &str, size: usize) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": format!("sha256:{}", "a".repeat(64)),
                    "env": [{"name": "BIG", "value": ""}],
                }]}
            }
        }
    });
    let padding = size.saturating_sub(d.to_string().len());
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = Value::String("x".repeat(padding));
    d
}

/// The size of `name`'s env value on `node`, from its own replica (no read barrier).
async fn local_big_value(node: &Wasmlet, name: &str) -> Option<usize> {
    let d = node.client().get_path(&format!("{DEPLOYMENTS}/{name}?resourceVersion=0")).await.ok()?;
    d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"].as_str().map(str::len)
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": {"app": name}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_at_the_size_limit_replicate_through_leader_and_follower_and_to_a_new_member()
-> anyhow::Result<()> {
    let mut nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    let leader = eventually(Duration::from_secs(15), "a leader", || leader_index(&nodes)).await?;
    let follower = (leader + 1) % nodes.len();
    // Just under the limit, leaving room for what the server adds (uid, timestamps, …).
    let size = MAX_OBJECT_BYTES - 4096;
    for (name, via) in [("via-follower", follower), ("via-leader", leader)] {
        let created = nodes[via].client().post_path(DEPLOYMENTS, &big_deployment(name, size)).await?;
        assert_eq!(created["metadata"]["name"], name);
        for node in &nodes {
            eventually(Duration::from_secs(20), &format!("{} to apply {name}", node.name()), || async {
                local_big_value(node, name).await.filter(|len| *len > size - 2048)
            })
            .await?;
        }
    }
    // One byte over the API's limit is refused, clearly, and nothing is stored.
    let over = big_deployment("too-big", MAX_OBJECT_BYTES + 1);
    let err = nodes[follower].client().post_path(DEPLOYMENTS, &over).await.expect_err("over the limit");
    assert_eq!(err.code(), Some(413), "{err}");
    assert!(nodes[leader].client().get_path(&format!("{DEPLOYMENTS}/too-big")).await.is_err());

    // The cluster goes on committing, through every node.
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..5 {
            node.client()
                .post_path("/api/v1/namespaces/default/services", &service(&format!("after-{i}-{j}")))
                .await?;
        }
    }
    // A new member replays the log, big entries and all.
    let token = nodes[0].wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let d = Wasmlet::start_fixed("d", &["--join", nodes[0].api.as_str(), "--join-token", token.as_str()])?;
    for name in ["via-follower", "via-leader"] {
        eventually(Duration::from_secs(30), &format!("d to apply {name}"), || async {
            local_big_value(&d, name).await.filter(|len| *len > size - 2048)
        })
        .await?;
    }
    nodes.push(d);
    let last = nodes.last().map(|n| n.client()).ok_or_else(|| anyhow::anyhow!("d"))?;
    last.post_path("/api/v1/namespaces/default/services", &service("from-d")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up_from_a_large_store_even_when_its_snapshot_is_lost_once()
-> anyhow::Result<()> {
    const PODS: usize = 10_000;
    let a = Wasmlet::start_fixed("a", &["--snapshot-count", "20", "--max-pods", "10100"])?;
    let started = Instant::now();
    let wasm = example("hello_http").display().to_string();
    a.wasmctl_ok(&["deploy", &wasm, "--name", "many", "--replicas", &PODS.to_string()]);
    eventually(Duration::from_secs(120), "10,000 pods Running on a", || async {
        let d = a.client().get_path(&format!("{DEPLOYMENTS}/many?resourceVersion=0")).await.ok()?;
        (d["status"]["readyReplicas"].as_u64()? >= PODS as u64).then_some(())
    })
    .await?;
    eprintln!("{PODS} pods Running in {:?}", started.elapsed());
    a.client().post_path(DEPLOYMENTS, &big_deployment("big", MAX_OBJECT_BYTES - 4096)).await?;
    let first = members(&a).await.and_then(|m| m["self"]["logFirstIndex"].as_u64()).unwrap_or(0);
    assert!(first > 20, "a compacted its log (first index {first}): a joiner needs a snapshot");

    // The first snapshot a sends is lost on the way; raft-rs must hear of it and send again.
    set_faults(&a, json!({"loseSnapshots": 1})).await?;
    let token = a.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let joined = Instant::now();
    let b = Wasmlet::start_fixed("b", &["--join", a.api.as_str(), "--join-token", token.as_str()])?;
    eventually(Duration::from_secs(60), "b to catch up", || async {
        let list = b.client().get_path("/api/v1/namespaces/default/pods?resourceVersion=0").await.ok()?;
        (list["items"].as_array()?.len() >= PODS).then_some(())
    })
    .await?;
    eprintln!("b caught up {:?} after joining", joined.elapsed());
    assert!(local_big_value(&b, "big").await.is_some(), "b has the big object too");
    let log = std::fs::read_to_string(a.data_dir.join("wasmlet.log"))?;
    assert!(log.contains("snapshot not delivered"), "the first snapshot was lost");
    assert!(log.contains("sent a snapshot"), "and sent again");
    // Both go on committing together. (Right after a join an election may cut a write's
    // answer short, "outcome unknown", as any client sees it: it tries again, and a create
    // that had committed answers AlreadyExists.)
    eventually(Duration::from_secs(20), "a write through b committed", || async {
        match b.client().post_path("/api/v1/namespaces/default/services", &service("from-b")).await {
            Ok(_) => Some(()),
            Err(e) if e.code() == Some(409) => Some(()),
            Err(e) => {
                eprintln!("write through b: {e}");
                None
            }
        }
    })
    .await?;
    a.client().get_path("/api/v1/namespaces/default/services/from-b").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_whose_snapshots_keep_failing_is_sent_them_less_often_and_catches_up_after()
-> anyhow::Result<()> {
    let a = Wasmlet::start_fixed("a", &["--snapshot-count", "20"])?;
    for i in 0..100 {
        a.client().post_path("/api/v1/namespaces/default/services", &service(&format!("s-{i}"))).await?;
    }
    let first = members(&a).await.and_then(|m| m["self"]["logFirstIndex"].as_u64()).unwrap_or(0);
    assert!(first > 20, "a compacted its log (first index {first}): a joiner needs a snapshot");
    // Every snapshot a sends is lost for a while.
    set_faults(&a, json!({"loseSnapshots": 1000})).await?;
    let token = a.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let b = Wasmlet::start_fixed("b", &["--join", a.api.as_str(), "--join-token", token.as_str()])?;
    eventually(Duration::from_secs(20), "a to back off after failed snapshots", || async {
        let log = std::fs::read_to_string(a.data_dir.join("wasmlet.log")).ok()?;
        log.contains("the next waits 2s").then_some(())
    })
    .await?;
    set_faults(&a, json!({})).await?;
    eventually(Duration::from_secs(30), "b to catch up once snapshots get through", || async {
        let list = b.client().get_path("/api/v1/namespaces/default/services?resourceVersion=0").await.ok()?;
        (list["items"].as_array()?.len() >= 100).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_at_its_quota_takes_deletes_and_status_but_no_growth_until_room_is_made() -> anyhow::Result<()>
{
    let err = Wasmlet::start_failure("q", &["--quota-bytes", "2Gi"])?;
    assert!(err.contains("more than the largest quota"), "{err}");

    let a = Wasmlet::start(&["--quota-bytes", "64Ki"])?;
    let services = "/api/v1/namespaces/default/services";
    let mut created = 0;
    let refusal = loop {
        let r = reqwest::Client::new()
            .post(format!("{}{services}", a.api))
            .bearer_auth(&a.token)
            .json(&service(&format!("s-{created}")))
            .send()
            .await?;
        if r.status() != 201 {
            break (r.status().as_u16(), r.json::<Value>().await?);
        }
        created += 1;
        anyhow::ensure!(created < 2000, "64 KiB of services never filled the quota");
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert_eq!(refusal.1["reason"], "InsufficientStorage");
    assert!(
        refusal.1["message"].as_str().unwrap_or("").contains("delete objects to make room"),
        "{}",
        refusal.1
    );
    assert!(created > 50, "{created} services fit in 64 KiB");

    // The node still reports in (status writes do not grow the store) ...
    let before =
        a.client().get_path("/api/v1/nodes").await?["items"][0]["metadata"]["resourceVersion"].clone();
    eventually(Duration::from_secs(10), "a heartbeat recorded past the quota", || async {
        let now = a.client().get_path("/api/v1/nodes").await.ok()?["items"][0]["metadata"]["resourceVersion"]
            .clone();
        (now != before).then_some(())
    })
    .await?;
    // ... deletes are taken, and make room.
    for i in 0..10 {
        a.client().delete_path(&format!("{services}/s-{i}")).await?;
    }
    a.client().post_path(services, &service("after-room")).await?;
    Ok(())
}
