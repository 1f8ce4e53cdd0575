//! Bad input gets a clear error and changes nothing.

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_e2e::{Wasmlet, distinct_pods, eventually, example, through_proxy};

async fn counts(node: &Wasmlet) -> anyhow::Result<(usize, usize, usize)> {
    let c = node.client();
    let modules: Vec<wasmkube_api::Module> = c.list(None).await?;
    let deployments: Vec<wasmkube_api::Deployment> = c.list(Some("default")).await?;
    let services: Vec<wasmkube_api::Service> = c.list(Some("default")).await?;
    Ok((modules.len(), deployments.len(), services.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_everywhere() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let http = reqwest::Client::new();
    let paths = [
        ("GET", "/version"),
        ("GET", "/api/v1/namespaces/default/pods"),
        ("GET", "/api/v1/nodes"),
        ("POST", "/apis/wasmkube.io/v1/modules"),
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments/x"),
        ("GET", "/no/such/path"),
    ];
    for (method, path) in paths {
        for token in [None, Some("wrong"), Some(&node.token[..node.token.len() - 1])] {
            let mut req = http.request(method.parse()?, format!("{}{path}", node.api));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await?;
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            let status: Value = resp.json().await?;
            assert_eq!(status["kind"], "Status");
            assert_eq!(status["reason"], "Unauthorized");
        }
    }
    let ok = http.get(format!("{}/version", node.api)).bearer_auth(&node.token).send().await?;
    assert_eq!(ok.status(), 200);
    // Health answers anyone, as Kubernetes' does (hardening.rs checks all three endpoints).
    assert_eq!(http.get(format!("{}/healthz", node.api)).send().await?.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_modules_are_refused_and_leave_nothing_behind() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let dir = tempfile::tempdir()?;
    let cases: [(&str, &[u8], &str); 3] = [
        ("garbage.wasm", b"this is not wasm at all", "not a WebAssembly binary"),
        ("core.wasm", b"\0asm\x01\0\0\0", "core WebAssembly module, not a component"),
        // A valid, empty component: it exports nothing a pod could run.
        ("empty.wasm", b"\0asm\x0d\0\x01\0", "unsupported world"),
    ];
    for (file, bytes, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes)?;
        let out = node.wasmctl(&["deploy", &path.display().to_string(), "--replicas", "2"]);
        assert!(!out.status.success(), "{file} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{file}: {stderr}");
        assert!(stderr.contains("400"), "{file}: {stderr}");
    }
    assert_eq!(counts(&node).await?, (0, 0, 0), "no Module, Deployment or Service left behind");
    assert!(std::fs::read_dir(node.data_dir.join("modules"))?.next().is_none(), "no blob stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upload_is_413() -> anyhow::Result<()> {
    let node = Wasmlet::start(&["--max-module-mib", "1"])?;
    let resp = reqwest::Client::new()
        .post(format!("{}/apis/wasmkube.io/v1/modules", node.api))
        .bearer_auth(&node.token)
        .body(vec![0u8; 2 << 20])
        .send()
        .await?;
    assert_eq!(resp.status(), 413);
    let status: Value = resp.json().await?;
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    assert_eq!(counts(&node).await?, (0, 0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_unknown_objects_and_conflicts() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let http = reqwest::Client::new();
    let api = |p: &str| format!("{}{p}", node.api);
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let image = format!("sha256:{}", "a".repeat(64));
    let manifest = |extra: Value| {
        let mut d = json!({
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}
        });
        if let (Some(d), Some(e)) = (d.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        d
    };

    // An unsupported field is refused by name, not dropped.
    let mut bad = manifest(json!({}));
    bad["spec"]["minReadySeconds"] = json!(5);
    let r = http.post(api(deployments)).bearer_auth(&node.token).json(&bad).send().await?;
    assert_eq!(r.status(), 422);
    let s: Value = r.json().await?;
    assert!(s["message"].as_str().unwrap_or("").contains("unknown field `minReadySeconds`"), "{s}");

    let r = http.post(api(deployments)).bearer_auth(&node.token).body("{not json").send().await?;
    assert_eq!(r.status(), 400);

    let r = http
        .post(api(deployments))
        .bearer_auth(&node.token)
        .json(&manifest(json!({"kind": "Pod"})))
        .send()
        .await?;
    assert_eq!(r.status(), 422);
    assert_eq!(counts(&node).await?.1, 0, "nothing was created");

    // Unknown objects and kinds.
    let r = http.get(api(&format!("{deployments}/nope"))).bearer_auth(&node.token).send().await?;
    assert_eq!(r.status(), 404);
    let s: Value = r.json().await?;
    assert_eq!(s["reason"], "NotFound");
    let r = http.get(api("/api/v1/namespaces/default/widgets")).bearer_auth(&node.token).send().await?;
    assert_eq!(r.status(), 404);
    let r = http
        .put(api("/apis/wasmkube.io/v1/modules/abc"))
        .bearer_auth(&node.token)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(r.status(), 405, "modules are immutable");

    // Optimistic concurrency: a stale resourceVersion is a 409 and changes nothing. With 0
    // replicas the controller writes status once and then leaves the object alone.
    let mut zero = manifest(json!({}));
    zero["spec"]["replicas"] = json!(0);
    http.post(api(deployments)).bearer_auth(&node.token).json(&zero).send().await?.error_for_status()?;
    let settled = eventually(Duration::from_secs(10), "the controller to observe the deployment", || {
        let c = node.client();
        async move {
            let d: wasmkube_api::Deployment = c.get(Some("default"), "web").await.ok()?;
            d.status.is_some().then_some(d)
        }
    })
    .await?;
    let read = serde_json::to_value(&settled)?;
    let mut relabelled = read.clone();
    relabelled["metadata"]["labels"] = json!({"tier": "front"});
    let r = http
        .put(api(&format!("{deployments}/web")))
        .bearer_auth(&node.token)
        .json(&relabelled)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let mut stale = read.clone();
    stale["spec"]["replicas"] = json!(7);
    let r = http.put(api(&format!("{deployments}/web"))).bearer_auth(&node.token).json(&stale).send().await?;
    assert_eq!(r.status(), 409);
    let s: Value = r.json().await?;
    assert_eq!(s["reason"], "Conflict");
    let now: wasmkube_api::Deployment = node.client().get(Some("default"), "web").await?;
    assert_eq!(now.spec.replicas, 0, "the conflicting write changed nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_guests_are_cut_off_without_disturbing_others() -> anyhow::Result<()> {
    let node = Wasmlet::start(&["--request-timeout", "3s"])?;
    let misbehave = example("misbehave").display().to_string();
    let hello = example("hello_http").display().to_string();
    node.wasmctl_ok(&[
        "deploy",
        &misbehave,
        "--name",
        "bad",
        "--replicas",
        "1",
        "--memory",
        "16Mi",
        "--wait",
    ]);
    node.wasmctl_ok(&["deploy", &hello, "--name", "hello", "--replicas", "2", "--wait"]);

    let proxy = node.proxy.clone();
    let started = std::time::Instant::now();
    let spin = tokio::spawn(async move { through_proxy(&proxy, "bad", "/spin", 1).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the spinning guest burns its deadline, the other service and the API answer
    // promptly: the busy instance yields its thread at every epoch tick.
    let meanwhile = through_proxy(&node.proxy, "hello", "/", 10).await;
    assert_eq!(distinct_pods(&meanwhile).len(), 2, "{meanwhile:?}");
    let pods: Vec<wasmkube_api::Pod> = node.client().list(Some("default")).await?;
    assert_eq!(pods.len(), 3);
    assert!(!spin.is_finished(), "the spinning request is still running");
    assert!(started.elapsed() < Duration::from_millis(2500), "others waited: {:?}", started.elapsed());
    let spun = spin.await?;
    assert_eq!(spun[0].0, 504, "the endless loop is cut off at its deadline");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(6), "cut off after {took:?}");

    let grown = through_proxy(&node.proxy, "bad", "/grow?mb=64", 1).await;
    assert_eq!(grown[0].0, 502, "growing past 16Mi traps");
    let small = through_proxy(&node.proxy, "bad", "/grow?mb=2", 1).await;
    assert_eq!(small[0].0, 200, "within the limit it works");

    // The pod and the node are fine afterwards.
    let ok = through_proxy(&node.proxy, "bad", "/", 3).await;
    assert!(ok.iter().all(|(s, _)| *s == 200), "{ok:?}");
    let unknown = through_proxy(&node.proxy, "nosuch", "/", 1).await;
    assert_eq!(unknown[0].0, 404);
    eventually(Duration::from_secs(5), "pods still Ready", || {
        let c = node.client();
        async move {
            let pods: Vec<wasmkube_api::Pod> = c.list(Some("default")).await.ok()?;
            (pods.len() == 3 && pods.iter().all(|p| p.is_ready())).then_some(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_writes_a_private_token_and_a_config_wasmctl_finds() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let node = Wasmlet::start(&[])?;
    for file in ["admin.token", "client.json"] {
        let mode = std::fs::metadata(node.data_dir.join(file))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is private");
    }
    // No flags, no server/token variables: only the config file the node wrote. (The node
    // registers itself just after it starts serving, hence the wait.)
    let get_nodes = || {
        std::process::Command::new(wasmkube_e2e::bin_dir().join("wasmctl"))
            .args(["get", "nodes"])
            .env_remove("WASMKUBE_SERVER")
            .env_remove("WASMKUBE_TOKEN")
            .env("WASMKUBE_CONFIG", node.data_dir.join("client.json"))
            .output()
    };
    eventually(Duration::from_secs(10), "wasmctl to list the node from the config alone", || {
        let out = get_nodes();
        async move {
            let out = out.ok()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            (out.status.success() && stdout.contains("node-a") && stdout.contains("Ready")).then_some(())
        }
    })
    .await?;

    // A wrong token from the environment overrides the file, and is refused.
    let out = std::process::Command::new(wasmkube_e2e::bin_dir().join("wasmctl"))
        .args(["get", "pods"])
        .env("WASMKUBE_TOKEN", "wrong")
        .env("WASMKUBE_CONFIG", node.data_dir.join("client.json"))
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    Ok(())
}

/// Runs wasmlet with `args` (and a scratch data dir); returns whether it started (printed its
/// ready line) and what it printed on stderr when it did not.
fn try_start(args: &[&str]) -> anyhow::Result<Result<String, String>> {
    use std::io::BufRead;
    let scratch = tempfile::tempdir()?;
    let mut child = std::process::Command::new(wasmkube_e2e::bin_dir().join("wasmlet"))
        .arg("--data-dir")
        .arg(scratch.path())
        .arg("--client-config")
        .arg(scratch.path().join("client.json"))
        .args(["--proxy-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let first = std::io::BufReader::new(stdout).lines().next().transpose()?;
    let _ = child.kill();
    let out = child.wait_with_output()?;
    Ok(match first {
        Some(line) if line.starts_with("wasmlet ready") => Ok(line),
        _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    })
}

#[test]
fn a_wildcard_listen_needs_an_advertised_address() -> anyhow::Result<()> {
    let refused = try_start(&["--listen", "0.0.0.0:0"])?;
    let why = refused.err().unwrap_or_default();
    assert!(why.contains("--advertise"), "{why}");
    let bad = try_start(&["--listen", "127.0.0.1:0", "--advertise", "http://example.com"])?;
    assert!(bad.err().unwrap_or_default().contains("bare host name or IP"));
    let ready = try_start(&["--listen", "0.0.0.0:0", "--advertise", "127.0.0.1"])?;
    let line = ready.map_err(|e| anyhow::anyhow!("did not start: {e}"))?;
    assert!(line.contains("api=http://127.0.0.1:"), "{line}");
    Ok(())
}
