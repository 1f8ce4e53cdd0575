//! Watches stream changes, and resume from a resourceVersion.

use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_e2e::Wasmlet;

async fn read_events(resp: reqwest::Response, n: usize) -> anyhow::Result<Vec<Value>> {
    wasmkube_e2e::watch_events(resp, n, Duration::from_secs(10), |_| true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_and_resumes() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let http = reqwest::Client::new();
    let services = format!("{}/api/v1/namespaces/default/services", node.api);
    let svc = |name: &str| json!({"kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": name}}});

    let first: Value =
        http.post(&services).bearer_auth(&node.token).json(&svc("a")).send().await?.json().await?;
    let rv_a = first["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();

    let live = http.get(format!("{services}?watch=true")).bearer_auth(&node.token).send().await?;
    assert_eq!(live.status(), 200);
    http.post(&services).bearer_auth(&node.token).json(&svc("b")).send().await?.error_for_status()?;
    http.delete(format!("{services}/a")).bearer_auth(&node.token).send().await?.error_for_status()?;
    let events = read_events(live, 3).await?;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").into(),
                e["object"]["metadata"]["name"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("ADDED".into(), "a".into()), ("ADDED".into(), "b".into()), ("DELETED".into(), "a".into())]
    );

    // Resuming after `a` was created replays exactly what came after.
    let resumed = http
        .get(format!("{services}?watch=true&resourceVersion={rv_a}"))
        .bearer_auth(&node.token)
        .send()
        .await?;
    let events = read_events(resumed, 2).await?;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
    assert_eq!(events[1]["type"], "DELETED");

    let r = http
        .get(format!("{services}?watch=true&resourceVersion=abc"))
        .bearer_auth(&node.token)
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    Ok(())
}
