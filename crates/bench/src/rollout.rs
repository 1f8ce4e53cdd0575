//! A rolling update of 100 pods under load, on one node: the time from the template change
//! to the rollout done (100 updated, available, no old pod left) and the requests that
//! failed meanwhile, twice (hello → misbehave, and back by `rollout undo`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmkube_api::Deployment;
use wasmkube_fleet::{Wasmlet, deploy_example, example};

const REPLICAS: u32 = 100;
const CLIENTS: usize = 8;

pub async fn run() -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    let client = node.client();
    deploy_example(&node, "hello_http", "roll", REPLICAS).await?;
    let other = client.upload_module(std::fs::read(example("misbehave"))?).await?.metadata.name;
    node.wasmctl_ok(&["rollout", "status", "deployment/roll", "--timeout", "120s"]);
    for step in ["to another module", "undo"] {
        let load = Load::start(&node.proxy, "roll", CLIENTS);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        if step == "undo" {
            node.wasmctl_ok(&["rollout", "undo", "deployment/roll"]);
        } else {
            let mut d: Deployment = client.get(Some("default"), "roll").await?;
            d.spec.template.spec.containers[0].image = format!("sha256:{other}");
            client.update(&d).await?;
        }
        node.wasmctl_ok(&["rollout", "status", "deployment/roll", "--timeout", "120s"]);
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (ok, failed) = load.stop();
        println!(
            "rolling update of {REPLICAS} pods under load ({step}, {CLIENTS} clients): done after {:.2} s, {failed} of {} requests failed",
            took.as_secs_f64(),
            ok + failed
        );
    }
    Ok(())
}

/// Clients sending GETs back to back until stopped, counting answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Load {
    fn start(proxy: &str, host: &str, clients: usize) -> Self {
        let load = Load { stop: Arc::default(), ok: Arc::default(), failed: Arc::default() };
        for _ in 0..clients {
            let (stop, ok, failed) = (load.stop.clone(), load.ok.clone(), load.failed.clone());
            let (url, host) = (format!("{proxy}/"), host.to_string());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent =
                        http.get(&url).header("host", &host).timeout(Duration::from_secs(10)).send().await;
                    let answered = match sent {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    let counter = if answered { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        load
    }

    /// Stops the clients; the requests answered and failed.
    fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}
