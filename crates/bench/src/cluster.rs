//! Control-plane figures on 3-node loopback clusters, side by side in one run: committed
//! writes/s and latency with 1 and 64 concurrent clients for wasmkube and for etcd (Debian's
//! etcd-server, 3 members, driven through its JSON gateway by the same client), and wasmkube's
//! leader failover time.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use wasmkube_fleet::{Wasmlet, eventually, leader_index, members, start_cluster};

/// One write against some node; returns whether it was acknowledged.
type WriteFn = Arc<dyn Fn(usize, u64) -> reqwest::RequestBuilder + Send + Sync>;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let nodes = start_wasmkube().await?;
    let etcd = EtcdCluster::start();
    let duration = Duration::from_secs(seconds);
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;

    let endpoints: Vec<(String, String)> = nodes.iter().map(|n| (n.api.clone(), n.token.clone())).collect();
    let wk_http = http.clone();
    let wasmkube: WriteFn = Arc::new(move |client, i| {
        let (api, token) = &endpoints[client % endpoints.len()];
        let body = json!({"kind": "Service", "metadata": {"name": format!("b-{client}-{i}")}, "spec": {"selector": {"app": "bench"}}});
        wk_http.post(format!("{api}/api/v1/namespaces/default/services")).bearer_auth(token).json(&body)
    });
    let wk_pids: Vec<u32> = nodes.iter().filter_map(|n| n.pid()).collect();
    let etcd_pids: Vec<u32> =
        etcd.as_ref().map(|e| e.children.iter().map(|c| c.id()).collect()).unwrap_or_default();
    println!(
        "control plane, 3 nodes on loopback, {seconds}s per run (writes/s, p50, p99, server CPU per write):"
    );
    for clients in [1, 64] {
        let wk = load(&wasmkube, clients, duration, &wk_pids).await;
        print_row("wasmkube", clients, &wk);
        match &etcd {
            Ok(etcd) => {
                let urls = etcd.client_urls.clone();
                let etcd_http = http.clone();
                let write: WriteFn = Arc::new(move |client, i| {
                    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
                    let body = json!({"key": b64(format!("bench/{client}/{i}")), "value": b64("x".into())});
                    etcd_http.post(format!("{}/v3/kv/put", urls[client % urls.len()])).json(&body)
                });
                let e = load(&write, clients, duration, &etcd_pids).await;
                print_row("etcd 3.4", clients, &e);
                println!(
                    "  wasmkube / etcd at {clients} client(s): {:.0} %",
                    100.0 * wk.rate / e.rate.max(1.0)
                );
            }
            Err(why) => println!("  etcd: not measured ({why})"),
        }
    }
    failover(nodes).await
}

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time (user + system) the servers spent per acknowledged write.
    cpu_per_write: Duration,
}

/// CPU time (user + system) used so far by the processes `pids`, from /proc.
fn cpu_time(pids: &[u32]) -> Duration {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}

fn print_row(name: &str, clients: usize, f: &Figures) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {name:<9} {clients:>2} client(s): {:>7.0} writes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   cpu {:>5.0} µs/write",
        f.rate,
        ms(f.p50),
        ms(f.p99),
        f.cpu_per_write.as_secs_f64() * 1e6
    );
}

/// Closed loop: each client sends its next write when the previous one is answered.
async fn load(write: &WriteFn, clients: usize, duration: Duration, servers: &[u32]) -> Figures {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let cpu_before = cpu_time(servers);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in 0u64.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    if let Ok(r) = write(c, i).timeout(Duration::from_secs(5)).send().await
                        && r.status().is_success()
                    {
                        latencies.push(t.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let cpu = cpu_time(servers).saturating_sub(cpu_before);
    Figures {
        rate: all.len() as f64 / start.elapsed().as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        cpu_per_write: cpu / (all.len().max(1) as u32),
    }
}

async fn start_wasmkube() -> anyhow::Result<Vec<Wasmlet>> {
    let nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    eventually(Duration::from_secs(15), "three voters", || async {
        let m = members(&nodes[0]).await?;
        (m["members"].as_array()?.iter().filter(|x| x["role"] != "learner").count() == 3).then_some(())
    })
    .await?;
    Ok(nodes)
}

/// Kills the leader repeatedly; prints the time from the kill to the next accepted write.
async fn failover(mut nodes: Vec<Wasmlet>) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idx = eventually(Duration::from_secs(10), "a leader", || leader_index(&nodes)).await?;
        nodes[idx].kill9();
        let killed = Instant::now();
        let survivor = nodes[(idx + 1) % 3].client();
        eventually(Duration::from_secs(10), "a write after the kill", || {
            let survivor = survivor.clone();
            async move {
                let svc: wasmkube_api::Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("failover-{round}"), "namespace": "default"},
                    "spec": {"selector": {"app": "x"}}}))
                .ok()?;
                survivor.create(&svc).await.ok()
            }
        })
        .await?;
        times.push(killed.elapsed());
        nodes[idx].restart()?;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "leader failover (kill -9 to the next accepted write), 10 kills: p50 {:.0} ms   p99 {:.0} ms",
        ms(times[5]),
        ms(times[9])
    );
    Ok(())
}

struct EtcdCluster {
    children: Vec<Child>,
    client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn start() -> Result<Self, String> {
        if !Path::new("/usr/bin/etcd").exists() {
            return Err("/usr/bin/etcd is missing: apt-get install etcd-server".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = || -> Result<u16, String> {
            Ok(TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port())
        };
        let mut members = Vec::new();
        for i in 1..=3 {
            members.push((format!("m{i}"), port()?, port()?));
        }
        let initial: Vec<String> =
            members.iter().map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}")).collect();
        let mut children = Vec::new();
        for (name, client, peer) in &members {
            let child = Command::new("/usr/bin/etcd")
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", "wasmkube-bench"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting etcd: {e}"))?;
            children.push(child);
        }
        let client_urls: Vec<String> =
            members.iter().map(|(_, c, _)| format!("http://127.0.0.1:{c}")).collect();
        let cluster = EtcdCluster { children, client_urls, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        let healthy = |url: &str| {
            std::process::Command::new("curl")
                .args(["-sf", &format!("{url}/health")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        while !cluster.client_urls.iter().all(|u| healthy(u)) {
            if Instant::now() >= deadline {
                return Err("etcd did not become healthy within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
