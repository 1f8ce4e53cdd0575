//! Neighbours stay fast: on one node, a pod's p99 while idle and while another pod has two
//! looping and two memory-bombing requests in flight, measured in the same run (a ratio).

use std::time::{Duration, Instant};

use wasmkube_fleet::{Wasmlet, example, proxy_get};

use crate::load;

/// Hostile requests of each kind kept in flight.
const HOSTILE: usize = 2;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    for (name, module) in [("victim", "hello_http"), ("hog", "misbehave")] {
        let wasm = example(module).display().to_string();
        let out = node.wasmctl(&["deploy", &wasm, "--name", name, "--replicas", "1", "--wait"]);
        anyhow::ensure!(out.status.success(), "deploy {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let proxy = node.proxy.trim_start_matches("http://").parse()?;
    let round = Duration::from_secs(seconds);
    let idle = load::run(proxy, "victim", 1, round).await?;

    let started = Instant::now();
    let paths = std::env::var("HOSTILE").unwrap_or_else(|_| "/spin,/grow?mb=100".into());
    let hostile: Vec<_> = paths
        .split(',')
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|path| std::iter::repeat_n(path, HOSTILE))
        .map(|path| {
            let url = node.proxy.clone();
            tokio::spawn(async move {
                // How long each hostile request took to be cut off.
                let mut took = Vec::new();
                loop {
                    let sent = Instant::now();
                    let answer = proxy_get(&url, "hog", &path, &[]).await;
                    took.push((sent.elapsed(), answer.status));
                    if started.elapsed() > Duration::from_secs(600) {
                        return took;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = load::run(proxy, "victim", 1, round).await?;
    for task in &hostile {
        task.abort();
    }
    let ms = load::Figures::ms;
    println!(
        "neighbours on one node: victim (hello) alone, then beside {HOSTILE} looping and {HOSTILE} memory-bombing requests on another pod, {seconds} s each:"
    );
    println!("  idle: p50 {:.2} ms   p99 {:.2} ms   ({:.0} req/s)", ms(idle.p50), ms(idle.p99), idle.rps);
    println!(
        "  beside the hostile pod: p50 {:.2} ms   p99 {:.2} ms   ({:.0} req/s)   p99 ratio {:.1}×   (target <= 3×)",
        ms(busy.p50),
        ms(busy.p99),
        busy.rps,
        ms(busy.p99) / ms(idle.p99).max(1e-3)
    );
    // The loops are cut off at the pod's request deadline: time one.
    let sent = Instant::now();
    let answer = reqwest::Client::new()
        .get(format!("{}/spin", node.proxy))
        .header("host", "hog")
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    println!(
        "  a looping request was cut off after {:.1} s (status {}; the node's default deadline is 10 s)",
        sent.elapsed().as_secs_f64(),
        answer.status().as_u16()
    );
    Ok(())
}
