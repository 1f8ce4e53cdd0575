//! The service proxy's balancing, through the real binaries.

use std::time::Duration;

use wasmkube_e2e::{Wasmlet, distinct_pods, eventually, example, through_proxy};

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
