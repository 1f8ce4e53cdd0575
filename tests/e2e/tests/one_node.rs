//! The walking skeleton, end to end with the real binaries: deploy 5 replicas, serve through
//! the proxy, scale to 2, kill -9 and restart the node, and serve again.

use std::time::Duration;

use wasmkube_e2e::{Wasmlet, distinct_pods, eventually, example, through_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_scale_kill_restart() -> anyhow::Result<()> {
    let mut node = Wasmlet::start(&[])?;
    let wasm = example("hello_http").display().to_string();
    let out = node.wasmctl_ok(&["deploy", &wasm, "--name", "hello", "--replicas", "5", "--wait"]);
    assert!(out.contains("deployment.apps/hello created"), "{out}");
    assert!(out.contains("service/hello created"), "{out}");

    let responses = through_proxy(&node.proxy, "hello", "/", 25).await;
    assert!(responses.iter().all(|(s, _)| *s == 200), "{responses:?}");
    let pods = distinct_pods(&responses);
    assert_eq!(pods.len(), 5, "5 distinct pods answer: {pods:?}");

    // Every documented Host form reaches the same service.
    for host in ["hello.default", "hello.default.svc", "hello.default.svc.cluster.local:8080"] {
        let r = through_proxy(&node.proxy, host, "/", 1).await;
        assert_eq!(r[0].0, 200, "Host {host}");
    }

    let table = node.wasmctl_ok(&["get", "pods"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains("Running") && l.contains("1/1")).count(), 5, "{table}");

    // The pod's stderr is captured and served.
    let some_pod = pods.iter().next().expect("a pod").clone();
    let logs = node.wasmctl_ok(&["logs", &some_pod]);
    assert!(logs.contains("GET /\n"), "logs of {some_pod}: {logs:?}");

    node.wasmctl_ok(&["scale", "deployment", "hello", "--replicas", "2"]);
    let two = eventually(Duration::from_secs(20), "2 pods serving", || {
        let proxy = node.proxy.clone();
        async move {
            let pods = distinct_pods(&through_proxy(&proxy, "hello", "/", 12).await);
            (pods.len() == 2).then_some(pods)
        }
    })
    .await?;
    let client = node.client();
    let listed: Vec<wasmkube_api::Pod> = client.list(Some("default")).await?;
    assert_eq!(listed.len(), 2, "scaled down to 2 pods");

    node.kill9();
    node.restart()?;
    let after = eventually(Duration::from_secs(30), "the deployment serving after restart", || {
        let proxy = node.proxy.clone();
        async move {
            let r = through_proxy(&proxy, "hello", "/", 12).await;
            let pods = distinct_pods(&r);
            (r.iter().all(|(s, _)| *s == 200) && pods.len() == 2).then_some(pods)
        }
    })
    .await?;
    assert_eq!(after, two, "the same two pods came back");
    let d: wasmkube_api::Deployment = node.client().get(Some("default"), "hello").await?;
    assert_eq!(d.spec.replicas, 2);
    // Deployed again without --replicas (a new env: a new revision), it keeps its count, as
    // `kubectl apply` of a manifest without replicas does.
    let out = node.wasmctl_ok(&["deploy", &wasm, "--name", "hello", "--env", "GREETING=again", "--wait"]);
    assert!(out.contains("deployment.apps/hello configured") && out.contains("ready: 2 replicas"), "{out}");
    let d: wasmkube_api::Deployment = node.client().get(Some("default"), "hello").await?;
    assert_eq!((d.spec.replicas, d.spec.template.spec.containers[0].env.len()), (2, 1));

    node.wasmctl_ok(&["delete", "deployment", "hello"]);
    eventually(Duration::from_secs(20), "pods garbage-collected", || {
        let client = node.client();
        async move {
            let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await.ok()?;
            pods.is_empty().then_some(())
        }
    })
    .await?;
    // The proxy's table follows within a rebuild (at most 100 ms behind the store).
    eventually(Duration::from_secs(5), "the service left with no ready pods (503)", || {
        let proxy = node.proxy.clone();
        async move { (through_proxy(&proxy, "hello", "/", 1).await[0].0 == 503).then_some(()) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pod_runs_logs_and_restarts_with_backoff() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let wasm = example("ticker").display().to_string();
    let out = node.wasmctl_ok(&[
        "deploy",
        &wasm,
        "--name",
        "ticker",
        "--replicas",
        "1",
        "--env",
        "TICKS=2",
        "--wait",
    ]);
    assert!(!out.contains("service/"), "no service for a cli component: {out}");
    let client = node.client();
    let pod = eventually(Duration::from_secs(20), "the ticker to restart after exiting", || {
        let client = client.clone();
        async move {
            let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await.ok()?;
            let pod = pods.into_iter().next()?;
            (pod.status.as_ref()?.restart_count >= 1).then_some(pod)
        }
    })
    .await?;
    // Backing off for 10 s before the next start (Kubernetes' CrashLoopBackOff), with how
    // the last run ended.
    let status = pod.status.clone().unwrap_or_default();
    assert_eq!(status.reason.as_deref(), Some("CrashLoopBackOff"), "{status:?}");
    let last = status.last_state.and_then(|l| l.terminated).unwrap_or_default();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")), "{last:?}");
    let logs = node.wasmctl_ok(&["logs", &pod.metadata.name]);
    assert!(logs.contains("tick 1\ntick 2\n"), "{logs:?}");
    // WASI p2 carries only success or failure, so exit(3) is seen as exit code 1.
    assert!(logs.contains("exited: exit code 1"), "{logs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_waiting_for_its_module_starts_once_uploaded() -> anyhow::Result<()> {
    use sha2::Digest;
    let node = Wasmlet::start(&[])?;
    let bytes = std::fs::read(example("hello_http"))?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let client = node.client();
    let deployment: wasmkube_api::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "early", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "early"}},
                 "template": {"metadata": {"labels": {"app": "early"}},
                              "spec": {"containers": [{"name": "early", "image": format!("sha256:{digest}")}]}}}
    }))?;
    client.create(&deployment).await?;
    let waiting = eventually(Duration::from_secs(10), "the pod to report its missing module", || {
        let client = client.clone();
        async move {
            let pods: Vec<wasmkube_api::Pod> = client.list(Some("default")).await.ok()?;
            let pod = pods.into_iter().next()?;
            (pod.status.as_ref()?.reason.as_deref() == Some("ModuleNotFound")).then_some(pod)
        }
    })
    .await?;
    assert_eq!(waiting.phase(), "Pending");
    assert!(!waiting.is_ready());

    client.upload_module(bytes).await?;
    let name = waiting.metadata.name.clone();
    eventually(Duration::from_secs(15), "the pod to start after the upload (retried with back-off)", || {
        let (client, name) = (client.clone(), name.clone());
        async move {
            let pod: wasmkube_api::Pod = client.get(Some("default"), &name).await.ok()?;
            pod.is_ready().then_some(())
        }
    })
    .await?;
    Ok(())
}
