//! Nodes form a cluster with the real binaries: join with a token, forward writes to the
//! leader from any node, refuse bad joins, and fail over when the leader is killed.

use std::time::{Duration, Instant};

use serde_json::Value;
use wasmkube_api::{ObjectMeta, Service, ServiceSpec};
use wasmkube_e2e::{Wasmlet, eventually, members, set_faults, start_cluster};

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta::named(Some("default"), name),
        spec: ServiceSpec { selector: [("app".to_string(), name.to_string())].into(), ..Default::default() },
        ..Default::default()
    }
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
    let [mut a, b, c]: [Wasmlet; 3] =
        start_cluster(&["a", "b", "c"], &[]).await?.try_into().map_err(|_| anyhow::anyhow!("three nodes"))?;
    let token = a.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
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
    let short_lived = a.wasmctl_ok(&["cluster", "join-token", "--ttl", "1s"]).trim().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let expired = Wasmlet::start_failure("d", &["--join", &a.api, "--join-token", &short_lived])?;
    assert!(expired.contains("join token is invalid or expired"), "{expired}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_keep_three_voters_and_promote_a_learner_when_a_voter_leaves() -> anyhow::Result<()> {
    let mut others = start_cluster(&["a", "b", "c", "d", "e"], &["--voters", "3"]).await?;
    let a = others.remove(0);
    let count = |m: &Value, role: &str| roles(m).iter().filter(|(_, r)| r == role).count();
    let settled =
        eventually(Duration::from_secs(15), "3 voters (leader included) and 2 learners", || async {
            members(&a)
                .await
                .filter(|m| count(m, "leader") + count(m, "voter") == 3 && count(m, "learner") == 2)
        })
        .await?;
    assert_eq!(
        roles(&settled)[3..],
        [("d".to_string(), "learner".to_string()), ("e".into(), "learner".into())]
    );
    a.client().create(&service("before-removal")).await?;

    // Remove a voter through a learner's API: the request goes to the leader, and a learner
    // is promoted so the cluster keeps three voters.
    let e = &others[3];
    let out = e.wasmctl_ok(&["node", "remove", "b"]);
    assert!(out.contains("node/b removed"), "{out}");
    let after = eventually(Duration::from_secs(15), "b gone and a learner promoted", || async {
        members(&a).await.filter(|m| {
            let r = roles(m);
            !r.iter().any(|(n, _)| n == "b")
                && count(m, "leader") + count(m, "voter") == 3
                && count(m, "learner") == 1
        })
    })
    .await?;
    eprintln!("members after removing b: {:?}", roles(&after));

    // No write was lost across these changes, and the cluster still takes writes.
    a.client().create(&service("after-removal")).await?;
    for node in [&a, &others[1], &others[2], &others[3]] {
        assert!(has_service(node, "before-removal").await && has_service(node, "after-removal").await);
    }
    // Removing the leader itself: it hands leadership to another voter, which removes it; the
    // last learner is promoted. No write is lost across it.
    let out = others[3].wasmctl_ok(&["node", "remove", "a"]);
    assert!(out.contains("node/a removed"), "{out}");
    let c = &others[1];
    let final_roles = eventually(Duration::from_secs(15), "a gone, three voters", || async {
        members(c).await.filter(|m| {
            !roles(m).iter().any(|(n, _)| n == "a") && count(m, "leader") + count(m, "voter") == 3
        })
    })
    .await?;
    eprintln!("members after removing the leader a: {:?}", roles(&final_roles));
    c.client().create(&service("after-leader-removal")).await?;
    for node in &others[1..] {
        for name in ["before-removal", "after-removal", "after-leader-removal"] {
            assert!(has_service(node, name).await, "{name} on {}", node.api);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_never_acknowledges_and_everyone_converges_after_healing() -> anyhow::Result<()>
{
    let [a, b, c]: [Wasmlet; 3] =
        start_cluster(&["a", "b", "c"], &[]).await?.try_into().map_err(|_| anyhow::anyhow!("three nodes"))?;
    eventually(Duration::from_secs(15), "a leading b and c", || async {
        members(&b).await.filter(|m| count_voting(m) == 3 && m["leader"] == 1)
    })
    .await?;
    a.client().create(&service("before")).await?;

    // Cut the leader (node 1) off from nodes 2 and 3, in both directions.
    set_faults(&a, serde_json::json!({"partitionedFrom": [2, 3]})).await?;
    set_faults(&b, serde_json::json!({"partitionedFrom": [1]})).await?;
    set_faults(&c, serde_json::json!({"partitionedFrom": [1]})).await?;

    let minority = a.client().create(&service("minority")).await;
    assert!(minority.is_err(), "the minority side acknowledged a write: {minority:?}");
    eventually(Duration::from_secs(15), "the majority to elect a leader", || async {
        let leader = members(&b).await?["leader"].as_u64()?;
        (leader == 2 || leader == 3).then_some(())
    })
    .await?;
    b.client().create(&service("majority")).await?;

    // Heal: the old leader catches up with the majority's history; its write never happened.
    for node in [&a, &b, &c] {
        set_faults(node, serde_json::json!({})).await?;
    }
    for node in [&a, &b, &c] {
        eventually(Duration::from_secs(15), "every node to converge", || async {
            (has_service(node, "before").await && has_service(node, "majority").await).then_some(())
        })
        .await?;
        assert!(!has_service(node, "minority").await, "the unacknowledged write appeared on {}", node.api);
    }
    Ok(())
}

fn count_voting(m: &Value) -> usize {
    roles(m).iter().filter(|(_, r)| r == "leader" || r == "voter").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_at_once_keeps_every_acknowledged_write() -> anyhow::Result<()> {
    let [mut a, mut b, mut c]: [Wasmlet; 3] =
        start_cluster(&["a", "b", "c"], &[]).await?.try_into().map_err(|_| anyhow::anyhow!("three nodes"))?;
    eventually(Duration::from_secs(15), "three voters", || async {
        members(&c).await.filter(|m| count_voting(m) == 3)
    })
    .await?;
    let mut acked = Vec::new();
    for i in 0..30 {
        let via = [&a, &b, &c][i % 3];
        let name = format!("w{i}");
        via.client().create(&service(&name)).await?;
        acked.push(name);
    }
    // Everything dies at once, without any shutdown path.
    for node in [&mut a, &mut b, &mut c] {
        node.kill9();
    }
    for node in [&mut a, &mut b, &mut c] {
        node.restart()?;
    }
    eventually(Duration::from_secs(20), "a leader after the restart", || async {
        members(&b).await.filter(|m| m["leader"].as_u64().is_some_and(|l| l != 0))
    })
    .await?;
    for node in [&a, &b, &c] {
        let stored: Vec<Service> = eventually(Duration::from_secs(15), "reads after the restart", || async {
            node.client().list(Some("default")).await.ok()
        })
        .await?;
        for name in &acked {
            assert!(stored.iter().any(|s| &s.metadata.name == name), "{name} lost on {}", node.api);
        }
    }
    c.client().create(&service("after-restart")).await?;
    Ok(())
}

/// `appliedIndex` and `logFirstIndex` of the node that answers.
async fn progress(node: &Wasmlet) -> Option<(u64, u64)> {
    let m = members(node).await?;
    Some((m["self"]["appliedIndex"].as_u64()?, m["self"]["logFirstIndex"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_past_compaction_catches_up_by_snapshot() -> anyhow::Result<()> {
    let [a, b, c]: [Wasmlet; 3] = start_cluster(&["a", "b", "c"], &["--snapshot-count", "100"])
        .await?
        .try_into()
        .map_err(|_| anyhow::anyhow!("three nodes"))?;
    eventually(Duration::from_secs(15), "a leading b and c", || async {
        members(&c).await.filter(|m| count_voting(m) == 3 && m["leader"] == 1)
    })
    .await?;
    a.client().create(&service("before")).await?;
    eventually(Duration::from_secs(15), "c to have the first write", || async {
        has_service(&c, "before").await.then_some(())
    })
    .await?;
    let (cut_at, _) = progress(&c).await.ok_or_else(|| anyhow::anyhow!("c's progress"))?;

    // Cut c off; the other two commit far past c and compact their logs.
    set_faults(&a, serde_json::json!({"partitionedFrom": [3]})).await?;
    set_faults(&b, serde_json::json!({"partitionedFrom": [3]})).await?;
    set_faults(&c, serde_json::json!({"partitionedFrom": [1, 2]})).await?;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = a.client();
            tokio::spawn(async move {
                for i in 0..40 {
                    client.create(&service(&format!("cut-{w}-{i}"))).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    let (_, leader_first) = progress(&a).await.ok_or_else(|| anyhow::anyhow!("a's progress"))?;
    assert!(leader_first > cut_at + 1, "the leader compacted past c ({leader_first} vs {cut_at})");

    // Heal: the entries c lacks are gone from every log, so only a snapshot can bring it up.
    for node in [&a, &b, &c] {
        set_faults(node, serde_json::json!({})).await?;
    }
    eventually(Duration::from_secs(20), "c to catch up", || async {
        let names: Vec<Service> = c.client().list(Some("default")).await.ok()?;
        (names.iter().filter(|s| s.metadata.name.starts_with("cut-")).count() == 320).then_some(())
    })
    .await?;
    let (_, c_first) = progress(&c).await.ok_or_else(|| anyhow::anyhow!("c's progress"))?;
    assert!(c_first > cut_at + 1, "c's log starts past where it was cut off: it installed a snapshot");
    // And it carries on as a normal member: its writes commit and reach the others.
    c.client().create(&service("after")).await?;
    eventually(Duration::from_secs(15), "a to see c's write", || async {
        has_service(&a, "after").await.then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_at_another_address_is_reached_there() -> anyhow::Result<()> {
    let mut nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    eventually(Duration::from_secs(15), "three voters", || async {
        members(&nodes[0]).await.filter(|m| count_voting(m) == 3)
    })
    .await?;
    let old = nodes[2].api.clone();
    nodes[2].restart_elsewhere()?;
    let new = nodes[2].api.clone();
    assert_ne!(old, new);
    eventually(Duration::from_secs(20), "a to record c's new address", || async {
        let m = members(&nodes[0]).await?;
        m["members"].as_array()?.iter().any(|x| x["name"] == "c" && x["url"] == new.as_str()).then_some(())
    })
    .await?;
    // c takes part again: it receives what a commits, and its own writes commit.
    nodes[0].client().create(&service("from-a")).await?;
    eventually(Duration::from_secs(15), "c to see a's write", || async {
        has_service(&nodes[2], "from-a").await.then_some(())
    })
    .await?;
    nodes[2].client().create(&service("from-c")).await?;
    assert!(has_service(&nodes[0], "from-c").await);
    Ok(())
}
