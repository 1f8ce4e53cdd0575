//! Nodes form a cluster with the real binaries: join with a token, forward writes to the
//! leader from any node, refuse bad joins, and fail over when the leader is killed.

use std::time::{Duration, Instant};

use serde_json::Value;
use wasmkube_api::{ObjectMeta, Service, ServiceSpec};
use wasmkube_e2e::{Wasmlet, eventually};

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta::named(Some("default"), name),
        spec: ServiceSpec { selector: [("app".to_string(), name.to_string())].into(), ..Default::default() },
        ..Default::default()
    }
}

async fn members(node: &Wasmlet) -> Option<Value> {
    node.client().get_path("/cluster/v1/members").await.ok()
}

fn roles(members: &Value) -> Vec<(String, String)> {
    let mut roles: Vec<(String, String)> = members["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| (m["name"].as_str().unwrap_or("").into(), m["role"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles
}

async fn has_service(node: &Wasmlet, name: &str) -> bool {
    let services: Vec<Service> = node.client().list(Some("default")).await.unwrap_or_default();
    services.iter().any(|s| s.metadata.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_forward_writes_refuse_bad_joins_and_fail_over() -> anyhow::Result<()> {
    let mut a = Wasmlet::start_named("a", &[])?;
    let token = a.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let b = Wasmlet::start_named("b", &["--join", &a.api, "--join-token", &token])?;
    let c = Wasmlet::start_named("c", &["--join", &a.api, "--join-token", &token])?;
    assert_eq!(b.token, a.token, "a joined node serves with the cluster's admin token");

    let expected = vec![
        ("a".to_string(), "leader".to_string()),
        ("b".into(), "voter".into()),
        ("c".into(), "voter".into()),
    ];
    for node in [&a, &b, &c] {
        eventually(Duration::from_secs(15), "every node to see a, b and c", || async {
            members(node).await.filter(|m| roles(m) == expected)
        })
        .await?;
    }

    // A write through a follower is forwarded to the leader; reads are linearizable (ReadIndex),
    // so every node sees it as soon as the write is acknowledged, without waiting.
    for i in 0..5 {
        let name = format!("via-c-{i}");
        c.client().create(&service(&name)).await?;
        for node in [&a, &b, &c] {
            assert!(has_service(node, &name).await, "{name} visible on {} right after the write", node.api);
        }
    }
    let table = eventually(Duration::from_secs(15), "three Ready nodes in `wasmctl get nodes`", || {
        let out = b.wasmctl_ok(&["get", "nodes"]);
        async move { (out.lines().filter(|l| l.contains(" Ready ")).count() == 3).then_some(out) }
    })
    .await?;
    assert!(table.contains("leader") && table.contains("voter"), "{table}");

    // Bad joins are refused with a clear message and change nothing.
    let wrong = Wasmlet::start_failure("d", &["--join", &a.api, "--join-token", "0000.not-a-secret"])?;
    assert!(wrong.contains("join token is invalid or expired"), "{wrong}");
    let taken = Wasmlet::start_failure("b", &["--join", &c.api, "--join-token", &token])?;
    assert!(taken.contains("already a member"), "{taken}");
    let nowhere = Wasmlet::start_failure("e", &["--join", "http://127.0.0.1:9", "--join-token", &token])?;
    assert!(nowhere.contains("cannot reach"), "{nowhere}");
    assert_eq!(roles(&members(&a).await.unwrap_or_default()), expected, "membership unchanged");

    // kill -9 the leader: the other two elect a new one and take writes again.
    a.kill9();
    let killed = Instant::now();
    let new_leader = eventually(Duration::from_secs(10), "a new leader", || async {
        let m = members(&b).await?;
        let leader = m["leader"].as_u64()?;
        (leader != 0 && leader != 1).then_some(leader)
    })
    .await?;
    let elected = killed.elapsed();
    eventually(Duration::from_secs(10), "writes accepted after the failover", || async {
        b.client().create(&service(&format!("after-{}", killed.elapsed().as_millis()))).await.ok()
    })
    .await?;
    eprintln!(
        "failover: leader {new_leader} elected {elected:?} after the kill; writes accepted after {:?}",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    Ok(())
}
