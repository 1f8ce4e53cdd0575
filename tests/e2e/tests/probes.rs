//! Probes with the real binaries, as in the Kubernetes pod spec: readiness decides whether
//! the proxy sends a pod traffic, a failing liveness probe restarts the pod's instance (with
//! its restart count, last state and events), a startup probe holds the others back, and
//! probes Kubernetes has but a wasm pod cannot run are refused; and requests that trap are
//! counted on the pod and reported as rate-limited events.

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_api::{Event, Pod};
use wasmkube_e2e::{Wasmlet, eventually, example, proxy_get};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, digest: &str, probes: Value) -> Value {
    let mut container = json!({"name": "app", "image": format!("sha256:{digest}")});
    if let (Some(c), Some(p)) = (container.as_object_mut(), probes.as_object()) {
        c.extend(p.clone());
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}
    })
}

fn get(path: &str, extra: Value) -> Value {
    let mut probe = json!({"httpGet": {"path": path, "port": 8080}, "periodSeconds": 1});
    if let (Some(p), Some(e)) = (probe.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    probe
}

async fn pod_of(node: &Wasmlet, app: &str) -> Option<Pod> {
    let pods: Vec<Pod> = node.client().list(Some("default")).await.ok()?;
    pods.into_iter().find(|p| p.metadata.labels.get("app").map(String::as_str) == Some(app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_routes_liveness_restarts_and_startup_holds_back() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    let deploy = |name: &str, probes: Value| {
        let (client, body) = (client.clone(), deployment(name, &digest, probes));
        async move { client.post_path(DEPLOYMENTS, &body).await }
    };
    deploy(
        "healthy",
        json!({"readinessProbe": get("/status/200", json!({})), "livenessProbe": get("/", json!({}))}),
    )
    .await?;
    deploy("unready", json!({"readinessProbe": get("/status/503", json!({}))})).await?;
    deploy("sick", json!({"livenessProbe": get("/status/500", json!({"failureThreshold": 2}))})).await?;
    deploy(
        "slow-start",
        json!({"startupProbe": get("/status/500", json!({"failureThreshold": 2})),
                                "readinessProbe": get("/", json!({}))}),
    )
    .await?;
    for app in ["healthy", "unready"] {
        client
            .post_path(
                "/api/v1/namespaces/default/services",
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app}, "spec": {"selector": {"app": app}}}),
            )
            .await?;
    }

    // Its readiness probe passes: Ready, served.
    eventually(Duration::from_secs(15), "healthy Ready and served", || async {
        let ready = pod_of(&node, "healthy").await?.is_ready();
        (ready && proxy_get(&node.proxy, "healthy", "/", &[]).await.status == 200).then_some(())
    })
    .await?;
    // Its readiness probe fails: Running, never Ready, and the proxy sends it nothing.
    let unready = pod_of(&node, "unready").await.ok_or_else(|| anyhow::anyhow!("no unready pod"))?;
    assert_eq!(unready.phase(), "Running");
    assert!(!unready.is_ready(), "{:?}", unready.status);
    let answer = proxy_get(&node.proxy, "unready", "/", &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let listed = node.wasmctl_ok(&["get", "pods"]);
    assert!(listed.lines().any(|l| l.starts_with("unready-") && l.contains("0/1")), "{listed}");

    // Its liveness probe fails twice in a row: its instance is restarted, and said so.
    let sick = eventually(Duration::from_secs(20), "sick restarted", || async {
        let pod = pod_of(&node, "sick").await?;
        (pod.status.as_ref()?.restart_count >= 1).then_some(pod)
    })
    .await?;
    let last = sick.status.as_ref().and_then(|s| s.last_state.clone()).and_then(|l| l.terminated);
    let last = last.ok_or_else(|| anyhow::anyhow!("no lastState: {:?}", sick.status))?;
    assert_eq!(last.reason.as_deref(), Some("Unhealthy"));
    assert!(last.message.as_deref().is_some_and(|m| m.contains("statuscode: 500")), "{last:?}");
    let events: Vec<Event> = client.list(Some("default")).await?;
    let unhealthy = events
        .iter()
        .find(|e| e.reason == "Unhealthy" && e.involved_object.name == sick.metadata.name)
        .ok_or_else(|| anyhow::anyhow!("no Unhealthy event: {events:#?}"))?;
    assert!(unhealthy.message.starts_with("Liveness probe failed: HTTP probe failed with statuscode: 500"));
    let listed = node.wasmctl_ok(&["get", "pods"]);
    let row = listed.lines().find(|l| l.starts_with("sick-")).unwrap_or_default().to_string();
    assert!(
        row.split_whitespace().nth(3).and_then(|r| r.parse::<u32>().ok()).is_some_and(|r| r >= 1),
        "{listed}"
    );
    // Unhealthy again after its restart: crashing, as the kubelet backs off such a container
    // (the node's 10 s back-off): out of rotation, CrashLoopBackOff, a BackOff event.
    let crashing = eventually(Duration::from_secs(20), "sick backing off", || async {
        let pod = pod_of(&node, "sick").await?;
        (pod.status.as_ref()?.reason.as_deref() == Some("CrashLoopBackOff")).then_some(pod)
    })
    .await?;
    assert!(!crashing.is_ready(), "{:?}", crashing.status);
    assert_eq!(
        crashing.status.as_ref().map(|s| s.restart_count),
        Some(1),
        "not restarted while it backs off"
    );
    let events: Vec<Event> = client.list(Some("default")).await?;
    assert!(
        events.iter().any(|e| e.reason == "BackOff" && e.involved_object.name == sick.metadata.name),
        "{events:#?}"
    );

    // Its startup probe never passes: restarted, and its readiness probe never ran.
    let slow = eventually(Duration::from_secs(20), "slow-start restarted", || async {
        let pod = pod_of(&node, "slow-start").await?;
        (pod.status.as_ref()?.restart_count >= 1).then_some(pod)
    })
    .await?;
    assert!(!slow.is_ready(), "held back by its startup probe");
    let last = slow.status.and_then(|s| s.last_state).and_then(|l| l.terminated).and_then(|t| t.message);
    assert!(last.is_some_and(|m| m.starts_with("Startup probe failed")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_a_wasm_pod_cannot_run_are_refused_with_the_field() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let digest = "a".repeat(64);
    for (probes, field) in [
        (json!({"livenessProbe": {"exec": {"command": ["true"]}}}), "livenessProbe.httpGet"),
        (json!({"readinessProbe": {"tcpSocket": {"port": 80}}}), "readinessProbe.httpGet"),
        (
            json!({"livenessProbe": get("/", json!({"successThreshold": 2}))}),
            "livenessProbe.successThreshold",
        ),
        (json!({"startupProbe": get("healthz", json!({}))}), "startupProbe.httpGet.path"),
        (json!({"readinessProbe": get("/", json!({"periodSeconds": 0}))}), "readinessProbe.periodSeconds"),
    ] {
        let refused = node.client().post_path(DEPLOYMENTS, &deployment("bad", &digest, probes.clone())).await;
        let err = refused.expect_err("refused").to_string();
        assert!(err.contains(field), "{probes}: {err}");
    }
    let left: Vec<wasmkube_api::Deployment> = node.client().list(Some("default")).await?;
    assert!(left.is_empty(), "nothing stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_requests_are_counted_reported_and_a_pod_that_keeps_trapping_backs_off() -> anyhow::Result<()>
{
    let node = Wasmlet::start(&["--crash-backoff", "2s", "--crash-backoff-reset", "5s"])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    let limits = json!({"resources": {"limits": {"memory": "16Mi"}}});
    client.post_path(DEPLOYMENTS, &deployment("trappy", &digest, limits)).await?;
    client
        .post_path(
            "/api/v1/namespaces/default/services",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "trappy"}, "spec": {"selector": {"app": "trappy"}}}),
        )
        .await?;
    eventually(Duration::from_secs(15), "trappy served", || async {
        (proxy_get(&node.proxy, "trappy", "/", &[]).await.status == 200).then_some(())
    })
    .await?;
    // Requests that grow past the pod's memory limit: each traps (502), until the pod,
    // having trapped 5 times in a row, is crashing and out of rotation (503).
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(proxy_get(&node.proxy, "trappy", "/grow?mb=64", &[]).await.status);
    }
    assert!(statuses.iter().take(5).all(|s| *s == 502), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 502 || *s == 503), "{statuses:?}");
    let pod = pod_of(&node, "trappy").await.ok_or_else(|| anyhow::anyhow!("no pod"))?;
    let trapped = eventually(Duration::from_secs(10), "a RequestTrapped event", || async {
        let events: Vec<Event> = client.list(Some("default")).await.ok()?;
        events
            .into_iter()
            .find(|e| e.reason == "RequestTrapped" && e.involved_object.name == pod.metadata.name)
    })
    .await?;
    assert_eq!(trapped.type_, "Warning");
    assert!(trapped.message.contains("request(s) trapped since the last report"), "{}", trapped.message);
    // One report for the burst, not fifty (the next may come 10 s later at the earliest).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events: Vec<Event> = client.list(Some("default")).await?;
    let reports: u32 = events.iter().filter(|e| e.reason == "RequestTrapped").map(|e| e.count).sum();
    assert!(reports <= 2, "{reports} reports for one burst");
    // Crashing: not Ready, CrashLoopBackOff with why; then after its 2 s back-off, a fresh
    // instance serves again, its restart count one more.
    let crashing = eventually(Duration::from_secs(5), "trappy in CrashLoopBackOff", || async {
        let pod = pod_of(&node, "trappy").await?;
        (pod.status.as_ref()?.reason.as_deref() == Some("CrashLoopBackOff")).then_some(pod)
    })
    .await;
    let back = eventually(Duration::from_secs(15), "trappy restarted and serving", || async {
        let pod = pod_of(&node, "trappy").await?;
        let restarted = pod.status.as_ref()?.restart_count >= 1 && pod.is_ready();
        (restarted && proxy_get(&node.proxy, "trappy", "/", &[]).await.status == 200).then_some(pod)
    })
    .await?;
    // (The back-off may have ended before the first look.)
    if let Ok(crashing) = crashing {
        assert!(!crashing.is_ready(), "out of rotation while backing off");
    }
    let last = back.status.and_then(|s| s.last_state).and_then(|l| l.terminated).and_then(|t| t.message);
    assert!(last.is_some_and(|m| m.contains("requests in a row trapped")));
    // Crashing again at once doubles the back-off; an instance that has run for the node's
    // back-off reset (5 s here) starts the doubling over.
    let backoffs = |wait: &'static str| {
        let client = client.clone();
        async move {
            let events: Vec<Event> = client.list(Some("default")).await.ok()?;
            let n: u32 = events
                .iter()
                .filter(|e| e.reason == "BackOff" && e.message.starts_with(&format!("Back-off {wait} ")))
                .map(|e| e.count)
                .sum();
            Some(n)
        }
    };
    let crash = || async {
        for _ in 0..10 {
            if proxy_get(&node.proxy, "trappy", "/grow?mb=64", &[]).await.status == 503 {
                break;
            }
        }
    };
    crash().await;
    eventually(Duration::from_secs(5), "a 4 s back-off", || async {
        backoffs("4s").await.filter(|n| *n >= 1)
    })
    .await?;
    let twos = backoffs("2s").await.unwrap_or(0);
    eventually(Duration::from_secs(15), "trappy restarted again", || async {
        let pod = pod_of(&node, "trappy").await?;
        (pod.status.as_ref()?.restart_count >= 2 && pod.is_ready()).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    crash().await;
    eventually(Duration::from_secs(5), "a 2 s back-off once more", || async {
        backoffs("2s").await.filter(|n| *n > twos)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_pods_probes_are_not_run_and_it_says_so() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example("ticker"))?).await?.metadata.name;
    let probes = json!({"readinessProbe": get("/ready", json!({}))});
    client.post_path(DEPLOYMENTS, &deployment("ticking", &digest, probes)).await?;
    let started = eventually(Duration::from_secs(20), "the Started event", || async {
        let events: Vec<Event> = node.client().list(Some("default")).await.ok()?;
        events.into_iter().find(|e| e.reason == "Started")
    })
    .await?;
    assert_eq!(started.type_, "Warning", "{started:?}");
    assert!(started.message.contains("probes are not run"), "{}", started.message);
    // And it runs: Ready as a cli pod is, probes or not.
    eventually(Duration::from_secs(20), "the ticker Ready", || async {
        pod_of(&node, "ticking").await.filter(Pod::is_ready)
    })
    .await?;
    Ok(())
}
