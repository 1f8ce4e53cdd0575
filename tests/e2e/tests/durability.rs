//! No acknowledged write is lost: kill -9 the node under a write load, restart it, and find
//! every write that was answered with success.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmkube_api::{ObjectMeta, Service, ServiceSpec};
use wasmkube_e2e::Wasmlet;

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta::named(Some("default"), name),
        spec: ServiceSpec { selector: [("app".to_string(), name.to_string())].into(), ..Default::default() },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> anyhow::Result<()> {
    let mut node = Wasmlet::start(&[])?;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = node.client();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            // Bounded: at most 10 000 writes per writer; the kill ends the loop much sooner.
            for i in 0..10_000 {
                let name = format!("s-{w}-{i}");
                match client.create(&service(&name)).await {
                    Ok(_) => {
                        acked.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    node.kill9();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(15), w).await??;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(acked.len() > 20, "the load produced writes before the kill: {}", acked.len());

    node.restart()?;
    let stored: BTreeSet<String> =
        node.client().list::<Service>(Some("default")).await?.into_iter().map(|s| s.metadata.name).collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
    // Writes in flight at the kill may or may not have landed; nothing else may appear.
    assert!(stored.len() <= acked.len() + 8, "at most one unacknowledged write per writer");
    Ok(())
}
