//! The real node for the end-to-end figures.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmkube_fleet::{Wasmlet, eventually};

pub struct Node {
    pub wasmlet: Wasmlet,
}

impl Node {
    pub fn start() -> anyhow::Result<Self> {
        Ok(Node { wasmlet: Wasmlet::start(&[])? })
    }

    /// Resident memory of the wasmlet process, from /proc.
    pub fn print_memory(&self) {
        let status =
            self.wasmlet.pid().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let field = |name: &str| {
            status
                .as_deref()?
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        };
        if let (Some(rss), Some(peak)) = (field("VmRSS:"), field("VmHWM:")) {
            println!(
                "wasmlet resident memory, 5 hello pods running: {:.1} MiB (peak {:.1} MiB)",
                rss / 1024.0,
                peak / 1024.0
            );
        }
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.wasmlet.proxy.trim_start_matches("http://").parse().expect("the ready line carries host:port")
    }
}

/// Creates 5-replica deployments of an uploaded module and times create → 5 ready.
pub async fn deploy_to_ready(node: &Node, wasm: &Path) -> anyhow::Result<()> {
    let w = &node.wasmlet;
    let t = Instant::now();
    w.wasmctl_ok(&["deploy", &wasm.display().to_string(), "--name", "hello", "--replicas", "5", "--wait"]);
    let first = t.elapsed();
    let client = w.client();
    let mut runs = Vec::new();
    for i in 0..5 {
        let name = format!("bench-{i}");
        let mut d: wasmkube_api::Deployment = client.get(Some("default"), "hello").await?;
        d.metadata = wasmkube_api::ObjectMeta::named(Some("default"), &name);
        d.spec.selector.match_labels.insert("app".into(), name.clone());
        d.spec.template.metadata.labels.insert("app".into(), name.clone());
        d.status = None;
        let start = Instant::now();
        client.create(&d).await?;
        eventually(Duration::from_secs(30), "5 ready replicas", || {
            let client = client.clone();
            let name = name.clone();
            async move {
                let d: wasmkube_api::Deployment = client.get(Some("default"), &name).await.ok()?;
                (d.status?.ready_replicas == 5).then_some(())
            }
        })
        .await?;
        runs.push(start.elapsed());
        client
            .delete(wasmkube_api::find_kind("Deployment").expect("registered"), Some("default"), &name)
            .await?;
    }
    runs.sort();
    println!(
        "deploy-to-ready, 5 replicas: median {:.1} ms   (runs {:?}; first deploy incl. upload+compile via wasmctl: {} ms)",
        runs[runs.len() / 2].as_secs_f64() * 1e3,
        runs.iter().map(|r| format!("{:.1}", r.as_secs_f64() * 1e3)).collect::<Vec<_>>(),
        first.as_millis()
    );
    Ok(())
}
