//! The service proxy's balancing, through the real binaries.

use std::time::Duration;

use wasmkube_e2e::{Wasmlet, distinct_pods, eventually, example, proxy_get, through_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_steers_around_a_busy_pod() -> anyhow::Result<()> {
    let node = Wasmlet::start(&["--request-timeout", "3s"])?;
    let wasm = example("misbehave").display().to_string();
    node.wasmctl_ok(&["deploy", &wasm, "--name", "busy", "--replicas", "2", "--wait"]);
    let both = distinct_pods(&through_proxy(&node.proxy, "busy", "/", 6).await);
    assert_eq!(both.len(), 2, "idle pods share the traffic: {both:?}");

    // One request pins a pod for its whole deadline.
    let proxy = node.proxy.clone();
    let pinned = tokio::spawn(async move { through_proxy(&proxy, "busy", "/spin", 1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered = through_proxy(&node.proxy, "busy", "/", 8).await;
    let served_by = distinct_pods(&answered);
    assert_eq!(served_by.len(), 1, "every request avoids the busy pod: {answered:?}");
    let spun = pinned.await?;
    assert_eq!(spun[0].0, 504);
    assert!(!served_by.contains(&spun[0].1), "the busy pod ({}) got no other request", spun[0].1);

    // Once it is free again, both share the load again.
    eventually(Duration::from_secs(5), "both pods serving again", || {
        let proxy = node.proxy.clone();
        async move { (distinct_pods(&through_proxy(&proxy, "busy", "/", 6).await).len() == 2).then_some(()) }
    })
    .await?;
    Ok(())
}

/// GET `/` of service `host` through `proxy`, with extra headers; status and body.
async fn get(proxy: &str, host: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)> {
    let answer = proxy_get(proxy, host, "/", headers).await;
    anyhow::ensure!(answer.status != 0, "the proxy at {proxy} did not answer");
    Ok((answer.status, answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_by_name_and_nothing_else() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let hello = example("hello_http").display().to_string();
    let gateway = example("gateway").display().to_string();
    node.wasmctl_ok(&["deploy", &hello, "--name", "hello", "--replicas", "2", "--wait"]);
    node.wasmctl_ok(&["deploy", &gateway, "--name", "gateway", "--replicas", "1", "--wait"]);

    // The gateway pod calls http://hello.default.svc/: through the proxy, to a hello pod.
    let (status, body) = get(&node.proxy, "gateway", &[]).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("200 Hello from wasmkube! pod=hello-"), "{body}");
    let (status, body) =
        get(&node.proxy, "gateway", &[("x-fetch", "http://hello.default.svc.cluster.local/deep?x=1")])
            .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path=/deep?x=1"), "{body}");

    // A Service with no pods answers as it would to anyone; any other host is denied.
    let (_, body) = get(&node.proxy, "gateway", &[("x-fetch", "http://nothing.default.svc/")]).await?;
    assert!(body.contains(": 404 "), "{body}");
    for url in ["http://example.com/", "http://127.0.0.1:9/", "http://hello.default/"] {
        let (status, body) = get(&node.proxy, "gateway", &[("x-fetch", url)]).await?;
        assert_eq!(status, 502, "{url}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
    Ok(())
}
