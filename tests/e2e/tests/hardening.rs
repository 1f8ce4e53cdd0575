//! Ways the control plane could be wedged, corrupted or left blind, each shown closed with
//! the real binaries: racing writes, runaway plans and events, input it must refuse, a slow
//! module pull, a panicking controller.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmkube_api::{Deployment, Event, Node};
use wasmkube_e2e::{Wasmlet, eventually, example, set_faults, start_cluster};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": format!("sha256:{}", "a".repeat(64)),
                                                       "env": [{"name": "V", "value": "0"}]}]}}}
    })
}

fn env_value(d: &Deployment) -> String {
    d.spec.template.spec.containers[0].env[0].value.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_racing_a_template_change_never_loses_the_change() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    client.post_path(DEPLOYMENTS, &deployment("race", 0)).await?;
    for i in 1..=100u32 {
        let editor = {
            let client = client.clone();
            tokio::spawn(async move {
                // A careful writer: read, change the template, write with the version read,
                // and read again on a conflict.
                for _ in 0..20 {
                    let mut d: Deployment = client.get(Some("default"), "race").await?;
                    d.spec.template.spec.containers[0].env[0].value = i.to_string();
                    match client.update(&d).await {
                        Ok(_) => return anyhow::Ok(()),
                        Err(e) if e.code() == Some(409) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                anyhow::bail!("the template change kept conflicting")
            })
        };
        let scaler = {
            let client = client.clone();
            tokio::spawn(async move { client.scale("default", "race", i % 2).await })
        };
        editor.await??;
        scaler.await??;
        let d: Deployment = client.get(Some("default"), "race").await?;
        assert_eq!(env_value(&d), i.to_string(), "round {i}: the template change survived the scale");
        assert_eq!(d.spec.replicas, i % 2, "round {i}: and so did the scale");
    }
    Ok(())
}

/// The node's resident memory, from /proc.
fn rss_mib(node: &Wasmlet) -> f64 {
    let status = node.pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    let kib = status.as_deref().and_then(|s| {
        s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()
    });
    kib.unwrap_or(0.0) / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_replicas_are_refused_and_unschedulable_pods_do_not_flood_events() -> anyhow::Result<()> {
    let node = Wasmlet::start(&["--max-pods", "2"])?;
    let client = node.client();
    let rss_before = rss_mib(&node);
    // A billion replicas: refused with the reason, nothing stored, by manifest or by scale.
    let err = client.post_path(DEPLOYMENTS, &deployment("huge", 1_000_000_000)).await.expect_err("refused");
    assert_eq!(err.code(), Some(422));
    assert!(err.to_string().contains("more than the 100000 replicas"), "{err}");
    assert!(client.get_path(&format!("{DEPLOYMENTS}/huge")).await.is_err(), "nothing stored");
    let wasm = example("hello_http").display().to_string();
    let out = node.wasmctl(&["deploy", &wasm, "--name", "big", "--replicas", "1000000000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("100000"), "{out:?}");
    let grown = rss_mib(&node) - rss_before;
    assert!(grown < 64.0, "the node's memory did not move: {grown:.0} MiB more");

    // Five replicas on a node with room for two: three stay Pending, each with one
    // FailedScheduling event whose count grows, instead of a new event every second.
    client.post_path(DEPLOYMENTS, &deployment("five", 5)).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events: Vec<Event> = client.list(Some("default")).await?;
    let failed: Vec<&Event> = events.iter().filter(|e| e.reason == "FailedScheduling").collect();
    assert_eq!(failed.len(), 3, "one event per unschedulable pod: {failed:#?}");
    assert!(events.len() < 20, "a handful of events in all, not one per pass: {}", events.len());
    let scaled = client.scale("default", "five", 100_001).await.expect_err("over the limit by scale");
    assert_eq!(scaled.code(), Some(422), "{scaled}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_and_bad_requests_get_a_status() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/livez"] {
        let r = http.get(format!("{}{path}", node.api)).send().await?;
        assert_eq!(r.status(), 200, "{path} without a token");
    }
    // Ready once the node knows a leader (at once, or after an election).
    eventually(Duration::from_secs(5), "/readyz without a token", || async {
        let r = http.get(format!("{}/readyz", node.api)).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;
    let services = format!("{}/api/v1/namespaces/default/services", node.api);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": "s"}}});
    // A body that is not JSON by its Content-Type: 415, and nothing stored.
    let r = http
        .post(&services)
        .bearer_auth(&node.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(svc.to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    let status: Value = r.json().await?;
    assert_eq!(status["reason"], "UnsupportedMediaType", "{status}");
    // No kind: 422, naming the field.
    let mut kindless = svc.clone();
    kindless.as_object_mut().map(|o| o.remove("kind"));
    let r = http.post(&services).bearer_auth(&node.token).json(&kindless).send().await?;
    assert_eq!(r.status(), 422);
    let status: Value = r.json().await?;
    assert!(status["message"].as_str().unwrap_or("").contains("kind: is required"), "{status}");
    // Bad labels and ports.
    for (field, value) in [
        ("metadata", json!({"name": "s", "labels": {"bad key": "x"}})),
        ("metadata", json!({"name": "s", "labels": {"app": "v".repeat(64)}})),
        ("spec", json!({"selector": {"app": "s"}, "ports": [{"port": 0}]})),
    ] {
        let mut bad = svc.clone();
        bad[field] = value;
        let r = http.post(&services).bearer_auth(&node.token).json(&bad).send().await?;
        assert_eq!(r.status(), 422, "{bad}");
    }
    let listed: Value = node.client().get_path("/api/v1/namespaces/default/services").await?;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0), "nothing was stored");

    // An oversized request target or header section: a Status too, not an empty answer.
    let long = format!("{services}?labelSelector=app={}", "x".repeat(20_000));
    let r = http.get(&long).bearer_auth(&node.token).send().await?;
    assert_eq!(r.status(), 414);
    let status: Value = r.json().await?;
    assert_eq!(status["reason"], "RequestURITooLong", "{status}");
    let mut big = http.get(&services).bearer_auth(&node.token);
    for i in 0..20 {
        big = big.header(format!("x-padding-{i}"), "y".repeat(4000));
    }
    let r = big.send().await?;
    assert_eq!(r.status(), 431);
    let status: Value = r.json().await?;
    assert_eq!(status["reason"], "RequestHeaderFieldsTooLarge", "{status}");

    // A watch from a revision this cluster has not reached is refused, not streamed.
    let started = Instant::now();
    let r = http
        .get(format!("{services}?watch=true&resourceVersion=999999"))
        .bearer_auth(&node.token)
        .send()
        .await?;
    assert_eq!(r.status(), 504);
    let status: Value = r.json().await?;
    assert!(status["message"].as_str().unwrap_or("").contains("Too large resource version"), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_module_pull_is_slow_stays_ready() -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b"], &[]).await?;
    let (a, b) = (&nodes[0], &nodes[1]);
    eventually(Duration::from_secs(15), "both nodes Ready", || async {
        let listed: Vec<Node> = a.client().list(None).await.ok()?;
        (listed.len() == 2 && listed.iter().all(Node::is_ready)).then_some(())
    })
    .await?;
    // a holds the module and answers b's pull only after 30 s: far longer than a node may
    // stay silent before it is marked NotReady (6 s), fences itself (8 s) or is evicted (16 s).
    set_faults(a, json!({"blobDelayMs": 30_000})).await?;
    let wasm = example("hello_http").display().to_string();
    a.wasmctl_ok(&["deploy", &wasm, "--name", "hello", "--replicas", "2"]);
    // The pull runs in the background: b's agent goes on meanwhile, and says what its pod waits for.
    eventually(Duration::from_secs(5), "b's pod reported ContainerCreating", || async {
        let pods: Vec<wasmkube_api::Pod> = a.client().list(Some("default")).await.ok()?;
        pods.iter()
            .any(|p| {
                p.spec.node_name.as_deref() == Some("b")
                    && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("ContainerCreating")
            })
            .then_some(())
    })
    .await?;
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let listed: Vec<Node> = a.client().list(None).await?;
        let b_node = listed.iter().find(|n| n.metadata.name == "b");
        assert!(b_node.is_some_and(Node::is_ready), "b stays Ready while its pull is slow: {b_node:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events: Vec<Event> = a.client().list(Some("default")).await?;
    assert!(!events.iter().any(|e| e.reason == "NodeNotReady" || e.reason == "NodeLost"), "{events:#?}");
    // And b's pod runs once the bytes arrive.
    eventually(Duration::from_secs(30), "a pod running on b", || async {
        let pods: Vec<wasmkube_api::Pod> = b.client().list(Some("default")).await.ok()?;
        pods.iter().any(|p| p.spec.node_name.as_deref() == Some("b") && p.is_ready()).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_controller_is_restarted_with_an_event() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let http = reqwest::Client::new();
    http.put(format!("{}/debug/v1/panic", node.api))
        .bearer_auth(&node.token)
        .json(&json!({"task": "controllers"}))
        .send()
        .await?
        .error_for_status()?;
    let event = eventually(Duration::from_secs(15), "a TaskRestarted event", || async {
        let events: Vec<Event> = node.client().list(Some("default")).await.ok()?;
        events.into_iter().find(|e| e.reason == "TaskRestarted")
    })
    .await?;
    assert_eq!(event.involved_object.kind, "Node");
    assert!(event.message.contains("controllers panicked"), "{}", event.message);
    // The controllers work again: a Deployment is reconciled.
    let wasm = example("hello_http").display().to_string();
    node.wasmctl_ok(&["deploy", &wasm, "--name", "hello", "--replicas", "2", "--wait"]);
    let log = std::fs::read_to_string(node.data_dir.join("wasmlet.log"))?;
    assert!(log.contains("injected panic in the controllers"), "the panic is logged");
    assert!(node.pid().is_some());
    Ok(())
}
