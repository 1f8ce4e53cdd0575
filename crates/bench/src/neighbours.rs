//! Neighbours stay fast: on one node, a pod's p99 while idle and while another pod has two
//! looping and two memory-bombing requests in flight, measured in the same run (a ratio).

use std::time::{Duration, Instant};

use wasmkube_fleet::{Wasmlet, example, proxy_get};

use crate::load;

/// Hostile requests of each kind kept in flight.
const HOSTILE: usize = 2;

/// Rounds of each kind.
const ROUNDS: usize = 3;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let node = Wasmlet::start(&[])?;
    for (name, module) in [("victim", "hello_http"), ("hog", "misbehave")] {
        let wasm = example(module).display().to_string();
        let out = node.wasmctl(&["deploy", &wasm, "--name", name, "--replicas", "1", "--wait"]);
        anyhow::ensure!(out.status.success(), "deploy {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let proxy = node.proxy.trim_start_matches("http://").parse()?;
    let round = Duration::from_secs(seconds);
    // HOSTILE=/spin (comma-separated paths of the misbehave example) tries other neighbours.
    let paths: Vec<String> = std::env::var("HOSTILE")
        .unwrap_or_else(|_| "/spin,/grow?mb=100".into())
        .split(',')
        .map(str::to_string)
        .collect();
    // Alternating rounds, alone then beside the hostile pod, so drift in the machine hits
    // both sides alike; the figure is the median of the rounds' ratios.
    let ms = load::Figures::ms;
    let mut ratios = Vec::new();
    println!(
        "neighbours on one node: victim (hello, 1 client) alone, then beside {HOSTILE} looping and {HOSTILE} memory-bombing requests on another pod, {ROUNDS} rounds of {seconds} s each:"
    );
    for _ in 0..ROUNDS {
        let idle = load::run(proxy, "victim", 1, round).await?;
        let hostile: Vec<_> = paths
            .iter()
            .flat_map(|path| std::iter::repeat_n(path.clone(), HOSTILE))
            .map(|path| {
                let url = node.proxy.clone();
                tokio::spawn(async move {
                    loop {
                        let _ = proxy_get(&url, "hog", &path, &[]).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy = load::run(proxy, "victim", 1, round).await;
        // Their requests stop with them (a client gone stops its instance).
        for task in &hostile {
            task.abort();
        }
        let busy = busy?;
        let ratio = ms(busy.p99) / ms(idle.p99).max(1e-3);
        println!(
            "  alone p50 {:.2} ms p99 {:.2} ms ({:.0} req/s)   beside it p50 {:.2} ms p99 {:.2} ms ({:.0} req/s)   p99 {ratio:.1}×",
            ms(idle.p50),
            ms(idle.p99),
            idle.rps,
            ms(busy.p50),
            ms(busy.p99),
            busy.rps
        );
        ratios.push(ratio);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  p99 beside the hostile pod / alone: median {:.1}×   (target <= 3×)",
        ratios[ratios.len() / 2]
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
