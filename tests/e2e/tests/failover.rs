//! Kill -9 the leader 10 times under a steady load of reads and compare-and-set writes from
//! several clients, then check the recorded history is linearizable (single-key registers;
//! timeouts and lost connections recorded as unknown outcomes), and that the cluster takes
//! writes again soon after each kill.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;
use wasmkube_e2e::linearizability::{Op, OpKind, check};
use wasmkube_e2e::{eventually, leader_index, start_cluster};

const KEYS: usize = 4;
const CLIENTS: usize = 4;
const KILLS: usize = 10;

struct History {
    start: Instant,
    ops: Mutex<HashMap<usize, Vec<Op>>>,
}

impl History {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, key: usize, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().push(op);
    }
}

enum Outcome {
    Ok(Value),
    /// Definitely not applied (conflict, not found).
    Refused,
    /// Timeout, lost connection, server error: may or may not have been applied.
    Unknown,
}

async fn call(req: reqwest::RequestBuilder) -> Outcome {
    match req.timeout(Duration::from_secs(3)).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => Outcome::Ok(v),
            Err(_) => Outcome::Unknown,
        },
        Ok(r) if r.status() == 409 || r.status() == 404 => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

/// One client: read a random register, then try to replace what it read with a new value.
async fn client(
    id: usize,
    nodes: Vec<(String, String)>,
    history: Arc<History>,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::new();
    let mut node = id % nodes.len();
    let mut n = 0u64;
    // Bounded: the stop signal ends it long before this.
    for _ in 0..100_000 {
        if *stop.borrow_and_update() {
            return;
        }
        let key = rand::rng().random_range(0..KEYS);
        let (api, token) = &nodes[node];
        let url = format!("{api}/api/v1/namespaces/default/services/reg-{key}");
        let call_at = history.now();
        let read = call(http.get(&url).bearer_auth(token)).await;
        let (current, object) = match read {
            Outcome::Ok(v) => (v["metadata"]["annotations"]["v"].as_str().map(str::to_string), Some(v)),
            Outcome::Refused => (None, None),
            Outcome::Unknown => {
                node = (node + 1) % nodes.len();
                continue;
            }
        };
        history.record(
            key,
            Op { call: call_at, ret: Some(history.now()), kind: OpKind::Read { value: current.clone() } },
        );

        n += 1;
        let new = format!("c{id}-{n}");
        let call_at = history.now();
        let write = match &object {
            Some(obj) => {
                let mut next = obj.clone();
                next["metadata"]["annotations"] = json!({"v": new});
                call(http.put(&url).bearer_auth(token).json(&next)).await
            }
            None => {
                let svc = json!({"kind": "Service", "metadata": {"name": format!("reg-{key}"), "annotations": {"v": new}},
                                 "spec": {"selector": {"app": "reg"}}});
                call(
                    http.post(format!("{api}/api/v1/namespaces/default/services"))
                        .bearer_auth(token)
                        .json(&svc),
                )
                .await
            }
        };
        let kind = OpKind::Cas { expected: current, new };
        match write {
            Outcome::Ok(_) => history.record(key, Op { call: call_at, ret: Some(history.now()), kind }),
            Outcome::Refused => {}
            Outcome::Unknown => {
                history.record(key, Op { call: call_at, ret: None, kind });
                node = (node + 1) % nodes.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_ten_times_under_load_stays_linearizable() -> anyhow::Result<()> {
    let mut nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    eventually(Duration::from_secs(15), "three voters", || async {
        let m = nodes[2].client().get_path("/cluster/v1/members").await.ok()?;
        (m["members"].as_array()?.iter().filter(|x| x["role"] != "learner").count() == 3).then_some(())
    })
    .await?;

    let history = Arc::new(History { start: Instant::now(), ops: Mutex::new(HashMap::new()) });
    let endpoints: Vec<(String, String)> = nodes.iter().map(|n| (n.api.clone(), n.token.clone())).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, endpoints.clone(), history.clone(), stop_rx.clone())))
        .collect();

    let mut failovers = Vec::new();
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idx = eventually(Duration::from_secs(10), "a leader", || leader_index(&nodes)).await?;
        nodes[idx].kill9();
        let killed = Instant::now();
        let survivor = (idx + 1) % 3;
        let probe = json!({"kind": "Service", "metadata": {"name": format!("probe-{round}")}, "spec": {"selector": {"app": "probe"}}});
        eventually(Duration::from_secs(10), "a write accepted after the kill", || {
            let (api, token) = (nodes[survivor].api.clone(), nodes[survivor].token.clone());
            let probe = probe.clone();
            async move {
                let r = reqwest::Client::new()
                    .post(format!("{api}/api/v1/namespaces/default/services"))
                    .bearer_auth(token)
                    .json(&probe)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                (r.status().is_success() || r.status() == 409).then_some(())
            }
        })
        .await?;
        failovers.push(killed.elapsed());
        nodes[idx].restart()?;
    }
    stop_tx.send(true)?;
    for c in clients {
        tokio::time::timeout(Duration::from_secs(15), c).await??;
    }

    failovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "leader failover (kill -9 to the next accepted write), {KILLS} kills: p50 {:.0} ms, max {:.0} ms",
        ms(failovers[KILLS / 2]),
        ms(failovers[KILLS - 1])
    );
    let ops = history.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total: usize = ops.values().map(Vec::len).sum();
    let unknown = ops.values().flatten().filter(|o| o.ret.is_none()).count();
    eprintln!("history: {total} operations on {KEYS} registers, {unknown} with unknown outcome");
    assert!(total > 100, "the load ran: {total} operations");
    for (key, key_ops) in &ops {
        check(key_ops).map_err(|e| anyhow::anyhow!("register {key} is not linearizable: {e}"))?;
    }
    assert!(failovers[KILLS - 1] < Duration::from_secs(3), "slowest failover {:?}", failovers[KILLS - 1]);
    Ok(())
}
