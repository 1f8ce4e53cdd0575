//! HorizontalPodAutoscaler with the real binaries, in the shape of Kubernetes' HPA e2e test:
//! load drives a Deployment up step by step and less load brings it down, each step settled
//! within 30 s, steady under steady load, never outside its bounds; scale to zero when idle;
//! bad autoscalers refused with nothing stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmkube_api::{Deployment, Event, HorizontalPodAutoscaler};
use wasmkube_e2e::{Wasmlet, deploy_example, eventually, start_cluster};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";

async fn deploy_sleeper(node: &Wasmlet, name: &str, replicas: u32) -> anyhow::Result<()> {
    deploy_example(node, "misbehave", name, replicas).await
}

async fn replicas(node: &Wasmlet, name: &str) -> Option<u32> {
    node.client().get::<Deployment>(Some("default"), name).await.ok().map(|d| d.spec.replicas)
}

/// `clients` loops of 200 ms requests (each one request in flight), until `stop`.
struct Load {
    clients: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU32>,
}

impl Load {
    fn start(proxy: &str, host: &str, most: usize) -> Self {
        let load = Load {
            clients: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicU32::new(0)),
        };
        for i in 0..most {
            let (clients, stop, failed) = (load.clients.clone(), load.stop.clone(), load.failed.clone());
            let (url, host) = (format!("{proxy}/sleep?ms=200"), host.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    if i >= clients.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let sent =
                        http.get(&url).header("host", &host).timeout(Duration::from_secs(10)).send().await;
                    if !sent.is_ok_and(|r| r.status().is_success()) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            });
        }
        load
    }

    fn set(&self, clients: usize) {
        self.clients.store(clients, Ordering::Relaxed);
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_drives_replicas_up_and_down_in_steps_within_the_bounds() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    deploy_sleeper(&node, "sleeper", 1).await?;
    // One request in flight per pod; scale down after 5 s of lower recommendations.
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "sleeper"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sleeper"},
                 "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Pods", "pods": {"metric": {"name": "concurrency"},
                                                       "target": {"type": "AverageValue", "averageValue": "1"}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}});
    node.client().post_path(HPAS, &hpa).await?;

    // Watch the replicas all along: never outside [1, 5].
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watching = {
        let (seen, api, token) = (seen.clone(), node.api.clone(), node.token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let url = format!("{api}{DEPLOYMENTS}/sleeper");
                if let Ok(r) = http.get(&url).bearer_auth(&token).send().await
                    && let Ok(d) = r.json::<Value>().await
                    && let Some(n) = d["spec"]["replicas"].as_u64()
                {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(n);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let load = Load::start(&node.proxy, "sleeper", 5);
    for (clients, want) in [(3, 3), (5, 5), (3, 3), (1, 1)] {
        load.set(clients);
        let started = Instant::now();
        eventually(Duration::from_secs(30), &format!("{want} replicas with {clients} clients"), || async {
            (replicas(&node, "sleeper").await? == want).then_some(())
        })
        .await?;
        let took = started.elapsed();
        // Steady: within [n, n + 1] for the next 6 s.
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let n = replicas(&node, "sleeper").await.unwrap_or(0);
            assert!((want..=want + 1).contains(&n), "{n} replicas under steady load for {want}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("{clients} clients: {want} replicas after {:.1} s", took.as_secs_f64());
    }
    drop(load);
    watching.abort();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(seen.iter().all(|n| (1..=5).contains(n)), "replicas outside [1, 5]: {seen:?}");

    // Status and events as kubectl reads them.
    let hpa: HorizontalPodAutoscaler = node.client().get(Some("default"), "sleeper").await?;
    let status = hpa.status.ok_or_else(|| anyhow::anyhow!("no status"))?;
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t).map(|c| c.status.clone());
    assert_eq!(condition("AbleToScale").as_deref(), Some("True"));
    assert_eq!(condition("ScalingActive").as_deref(), Some("True"));
    assert!(condition("ScalingLimited").is_some());
    assert!(
        status
            .current_metrics
            .iter()
            .any(|m| m.pods.as_ref().is_some_and(|p| p.metric.name == "concurrency"))
    );
    assert!(status.last_scale_time.is_some());
    let events: Vec<Event> = node.client().list(Some("default")).await?;
    let rescaled: u32 = events.iter().filter(|e| e.reason == "SuccessfulRescale").map(|e| e.count).sum();
    assert!(rescaled >= 4, "{rescaled} SuccessfulRescale events");
    let table = node.wasmctl_ok(&["get", "hpa"]);
    assert!(table.contains("Deployment/sleeper") && table.contains("concurrency:"), "{table}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_goes_to_zero_and_the_first_requests_bring_it_back() -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b"], &[]).await?;
    let node = &nodes[0];
    deploy_sleeper(node, "idle", 2).await?;
    let out = node.wasmctl(&[
        "autoscale",
        "deployment",
        "idle",
        "--min",
        "0",
        "--max",
        "4",
        "--target-concurrency",
        "1",
        "--scale-to-zero-after",
        "3s",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Busy, it stays up: a request every 100 ms for 5 s (longer than the idle window).
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let _ = http.get(format!("{}/sleep?ms=1", node.proxy)).header("host", "idle").send().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replicas(node, "idle").await.is_some_and(|n| n >= 1), "scaled to zero while in use");
    let idle_since = Instant::now();
    eventually(Duration::from_secs(15), "idle at zero", || async {
        (replicas(node, "idle").await? == 0).then_some(())
    })
    .await?;
    assert!(idle_since.elapsed() >= Duration::from_secs(2), "before its idle window");
    let hpa: HorizontalPodAutoscaler = node.client().get(Some("default"), "idle").await?;
    let active = hpa.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "ScalingActive"));
    assert_eq!(active.and_then(|c| c.reason).as_deref(), Some("ScaledToZero"));
    eventually(Duration::from_secs(10), "its pods gone", || async {
        let pods: Vec<wasmkube_api::Pod> = node.client().list(Some("default")).await.ok()?;
        pods.is_empty().then_some(())
    })
    .await?;

    // 100 first requests at once, to the node that did not write the autoscaler: all are
    // held until a pod is ready, and answered.
    let sent = Instant::now();
    let first: Vec<_> = (0..100)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{}/sleep?ms=1", nodes[1].proxy));
            tokio::spawn(async move {
                let r = http.get(url).header("host", "idle").timeout(Duration::from_secs(20)).send().await;
                (r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0), Instant::now())
            })
        })
        .collect();
    let mut answered = Vec::new();
    for task in first {
        answered.push(task.await?);
    }
    let ok = answered.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(ok, 100, "every first request answered: {answered:?}");
    let slowest = answered.iter().map(|(_, at)| at.duration_since(sent)).max().unwrap_or_default();
    println!(
        "100 first requests after scale to zero: all answered within {:.0} ms",
        slowest.as_secs_f64() * 1e3
    );
    assert!(replicas(node, "idle").await.is_some_and(|n| n >= 1));
    // Its first pod went where the requests were held, so they were served without a hop.
    let pods: Vec<wasmkube_api::Pod> = node.client().list(Some("default")).await?;
    let first =
        pods.iter().find(|p| p.metadata.annotations.contains_key(wasmkube_api::PREFERRED_NODE_ANNOTATION));
    let first = first.ok_or_else(|| anyhow::anyhow!("no pod prefers the woken node: {pods:?}"))?;
    assert_eq!(first.spec.node_name.as_deref(), Some(nodes[1].name()), "the first pod after zero");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scaled_to_zero_by_hand_is_not_woken() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    deploy_sleeper(&node, "manual", 0).await?;
    // Even with an autoscaler, if its minimum is not 0 (Kubernetes: scaling disabled at 0).
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "manual"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "manual"}, "minReplicas": 1, "maxReplicas": 3}});
    node.client().post_path(HPAS, &hpa).await?;
    let answer =
        reqwest::Client::new().get(format!("{}/", node.proxy)).header("host", "manual").send().await?;
    assert_eq!(answer.status(), 503, "no autoscaler with minReplicas 0: nothing to wait for");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replicas(&node, "manual").await, Some(0));
    let hpa: HorizontalPodAutoscaler = node.client().get(Some("default"), "manual").await?;
    let active = hpa.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "ScalingActive"));
    assert_eq!(active.and_then(|c| c.reason).as_deref(), Some("ScalingDisabled"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_autoscalers_are_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    deploy_sleeper(&node, "there", 1).await?;
    let hpa = |target: &str, spec: Value| {
        let mut h = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "bad"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target}, "maxReplicas": 3}});
        if let (Some(s), Some(extra)) = (h["spec"].as_object_mut(), spec.as_object()) {
            s.extend(extra.clone());
        }
        h
    };
    for (body, says) in [
        (hpa("there", json!({"minReplicas": 4})), "minReplicas"),
        (
            hpa(
                "there",
                json!({"metrics": [{"type": "Pods", "pods": {"metric": {"name": "queue-length"},
                                 "target": {"type": "AverageValue", "averageValue": "1"}}}]}),
            ),
            "unknown pods metric",
        ),
        (hpa("missing", json!({})), "deployment default/missing not found"),
        (
            {
                let mut h = hpa("there", json!({"minReplicas": 0}));
                h["metadata"]["annotations"] =
                    json!({"autoscaling.wasmkube.dev/scale-to-zero-after": "soon"});
                h
            },
            "not a duration",
        ),
    ] {
        let err = node.client().post_path(HPAS, &body).await.expect_err("refused");
        assert_eq!(err.code(), Some(422), "{err}");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    let stored: Vec<HorizontalPodAutoscaler> = node.client().list(Some("default")).await?;
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
    let out = node.wasmctl(&["autoscale", "deployment", "there", "--min", "5", "--max", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("minReplicas"));
    Ok(())
}
