//! `wasmkube-bench`: prints the figures the project tracks, measured side by side in one run.
//!
//! - per-request instantiate latency of the hello-http component (p50/p99);
//! - deploy-to-ready time for 5 replicas on a real `wasmlet`;
//! - requests/s through the wasmkube proxy next to a bare hyper+wasmtime server on the same
//!   component, both driven by the same load generator, alternating rounds;
//! - the control plane next to etcd, and failover (`cluster`);
//! - 10,000 replicas on 3 nodes, and one node holding 10,000 pods (`scale`);
//! - neighbours: a pod's p99 beside looping and memory-bombing requests (`neighbours`);
//! - self-healing: kill -9 and SIGTERM of a node, and of the leader's, under load (`healing`);
//! - autoscaling: a load step to new pods serving, the first request after scale to zero
//!   next to a warm one (`autoscale`);
//! - rollouts: a rolling update of 100 pods under load, and its undo (`rollout`).

mod autoscale;
mod bare;
mod cluster;
mod healing;
mod load;
mod neighbours;
mod node;
mod rollout;
mod scale;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use wasmkube_runtime::{HttpPod, LogBuffer, Runtime, RuntimeConfig, SandboxSpec};

#[derive(Parser)]
struct Flags {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The http component to measure.
    #[arg(long, default_value = "examples/target/wasm32-wasip2/release/hello_http.wasm")]
    wasm: PathBuf,
    /// Seconds per throughput round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// Internal: serve the component bare (hyper + wasmtime, no wasmkube) and print the address.
    ServeBare,
    /// Only the control-plane figures (3-node clusters, wasmkube next to etcd, failover).
    ControlPlane,
    /// Only the scale figures (10,000 replicas on 3 nodes; one node holding 10,000 pods).
    Scale,
    /// Only the neighbours figures (a pod's p99 beside looping and memory-bombing requests).
    Neighbours,
    /// Only the self-healing figures (kill -9 and SIGTERM of a node, and of the leader's, under load).
    Healing,
    /// Only the autoscaling figures (load step to new pods serving; first request after scale to zero).
    Autoscale,
    /// Only the rollout figures (a rolling update of 100 pods under load, and its undo).
    Rollout,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    match flags.mode {
        Some(Mode::ServeBare) => return bare::serve(&flags.wasm).await,
        Some(Mode::ControlPlane) => return cluster::run(flags.seconds).await,
        Some(Mode::Scale) => return scale::run(&flags.wasm, flags.seconds, flags.connections).await,
        Some(Mode::Healing) => return healing::run().await,
        Some(Mode::Neighbours) => return neighbours::run(flags.seconds).await,
        Some(Mode::Autoscale) => return autoscale::run().await,
        Some(Mode::Rollout) => return rollout::run().await,
        None => {}
    }
    let bytes = std::fs::read(&flags.wasm)
        .map_err(|e| anyhow::anyhow!("reading {}: {e} (run `make examples`)", flags.wasm.display()))?;
    instantiate_latency(&bytes).await?;
    let node = node::Node::start()?;
    node::deploy_to_ready(&node, &flags.wasm).await?;
    node.print_memory();
    throughput(&flags, &node).await?;
    drop(node);
    neighbours::run(flags.seconds).await?;
    autoscale::run().await?;
    rollout::run().await?;
    cluster::run(flags.seconds).await?;
    scale::run(&flags.wasm, flags.seconds, flags.connections).await?;
    healing::run().await
}

async fn instantiate_latency(bytes: &[u8]) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = runtime.prepare("bench", bytes)?;
    let spec = SandboxSpec {
        pod: "bench/hello".into(),
        args: vec![],
        env: vec![],
        memory_limit: 64 << 20,
        ..Default::default()
    };
    let pod = HttpPod::new(runtime.clone(), &module, spec, LogBuffer::new(4096))?;
    for _ in 0..1000 {
        pod.instantiate_once().await?;
    }
    let n = 10_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        pod.instantiate_once().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "instantiate (fresh store + instance, hello-http): p50 {:.1} µs   p99 {:.1} µs   (n={n}, pooling allocator: {})",
        micros(samples[n / 2]),
        micros(samples[n * 99 / 100]),
        runtime.pooling
    );
    Ok(())
}

async fn throughput(flags: &Flags, node: &node::Node) -> anyhow::Result<()> {
    let bare_server = bare::BareServer::spawn(&flags.wasm)?;
    let duration = Duration::from_secs(flags.seconds);
    let proxy_addr = node.proxy_addr();
    let (mut bare, mut proxied) = (Vec::new(), Vec::new());
    // Alternate rounds so drift in machine load hits both sides alike.
    for _ in 0..2 {
        bare.push(load::run(bare_server.addr, "bare", flags.connections, duration).await?);
        proxied.push(load::run(proxy_addr, "hello", flags.connections, duration).await?);
    }
    // Each side's best round (by req/s), with that round's latency.
    let best = |v: &[load::Figures]| {
        v.iter().max_by(|a, b| a.rps.total_cmp(&b.rps)).map(|f| (f.rps, f.p50, f.p99)).unwrap_or_default()
    };
    let rounds =
        |v: &[load::Figures]| v.iter().map(|f| format!("{:.0}", f.rps)).collect::<Vec<_>>().join(", ");
    let ((b, b50, b99), (p, p50, p99)) = (best(&bare), best(&proxied));
    let ms = load::Figures::ms;
    println!("requests/s, {} connections, best of 2 × {}s rounds:", flags.connections, flags.seconds);
    println!(
        "  bare hyper + wasmtime handler   {b:>10.0} req/s   p50 {:.2} ms   p99 {:.2} ms   (rounds: {})",
        ms(b50),
        ms(b99),
        rounds(&bare)
    );
    println!(
        "  through the wasmkube proxy      {p:>10.0} req/s   p50 {:.2} ms   p99 {:.2} ms   (rounds: {})",
        ms(p50),
        ms(p99),
        rounds(&proxied)
    );
    println!(
        "  proxy / bare                    {:>10.0} %   p99 {:.2}×",
        100.0 * p / b.max(1.0),
        ms(p99) / ms(b99).max(1e-3)
    );
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
