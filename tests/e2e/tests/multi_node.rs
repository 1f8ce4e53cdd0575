//! Pods across nodes with the real binaries: a module uploaded through one node runs on every
//! node (each copies the bytes from a member that has them, verified by digest), and each
//! node's copy outlives the node it was uploaded to.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use wasmkube_api::{Node, Pod, Service};
use wasmkube_e2e::{
    LoadOutcome, Wasmlet, eventually, example, leader_index, proxy_get, set_faults, start_cluster,
    steady_load,
};

fn blob(node: &Wasmlet, digest: &str) -> std::path::PathBuf {
    node.data_dir.join("modules").join(format!("{digest}.wasm"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_uploaded_through_one_node_runs_on_every_node_and_outlives_it() -> anyhow::Result<()> {
    // Deployed through a: one pod on each node (the scheduler spreads them), and b and c
    // fetch the bytes from a to start theirs.
    let (mut nodes, _) = three_nodes_one_pod_each().await?;
    let deployed = pods(&nodes[0]).await;
    let placed: BTreeSet<String> = deployed.iter().filter_map(|p| p.spec.node_name.clone()).collect();
    assert_eq!(placed.len(), 3, "one pod per node: {placed:?}");
    assert!(deployed.iter().all(Pod::is_ready), "every pod runs, wherever it was placed");
    let digest = deployed[0].spec.containers[0].module_digest().unwrap_or_default().to_string();
    for node in &nodes {
        assert!(blob(node, &digest).exists(), "{} holds its own copy of the module", node.name());
        // Every node's proxy reaches every pod: its own in-process, the others' through their
        // node's proxy.
        let (statuses, pods, served_by) = spread(&node.proxy, 30).await;
        assert!(statuses.iter().all(|s| *s == 200), "{}: {statuses:?}", node.name());
        assert_eq!(pods.len(), 3, "through {}: {pods:?}", node.name());
        assert_eq!(served_by.len(), 3, "through {}: {served_by:?}", node.name());
    }

    // Lose a, where the module was uploaded; restart b: its pod comes back from b's own copy.
    // a's pod still looks ready (nothing marks a dead node yet), but a request that could not
    // reach a's node was never sent, and moves on to another pod.
    nodes[0].kill9();
    nodes[1].kill9();
    nodes[1].restart()?;
    let b = &nodes[1];
    eventually(Duration::from_secs(30), "b and c serving without a", || async {
        let (statuses, pods, _) = spread(&b.proxy, 12).await;
        (pods.len() == 2 && statuses.iter().all(|s| *s == 200)).then_some(())
    })
    .await?;
    Ok(())
}

/// `n` GETs to service `hello` through `proxy`: the statuses, and the pods and nodes that
/// answered.
async fn spread(proxy: &str, n: usize) -> (Vec<u16>, BTreeSet<String>, BTreeSet<String>) {
    let (mut statuses, mut pods, mut nodes) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for _ in 0..n {
        let answer = proxy_get(proxy, "hello", "/", &[]).await;
        statuses.push(answer.status);
        pods.insert(answer.pod);
        nodes.insert(answer.node);
    }
    (statuses, pods, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_is_copied_to_every_node_and_a_peer_must_be_a_member() -> anyhow::Result<()> {
    let nodes = start_cluster(&["a", "b"], &[]).await?;
    let bytes = std::fs::read(example("hello_http"))?;
    let module = nodes[1].client().upload_module(bytes).await?;
    let digest = module.metadata.name.clone();
    // Uploaded through b, with no pod to run it: a copies it anyway.
    eventually(Duration::from_secs(20), "a copy on a", || async {
        blob(&nodes[0], &digest).exists().then_some(())
    })
    .await?;

    // The blob endpoint answers members holding the peer token only.
    let http = reqwest::Client::new();
    let url = format!("{}/peer/v1/blobs/{digest}", nodes[0].api);
    let peer_token = std::fs::read_to_string(nodes[0].data_dir.join("peer.token"))?.trim().to_string();
    let get =
        |token: &str, from: &str| http.get(&url).bearer_auth(token).header("x-wasmkube-from", from).send();
    assert_eq!(get(&nodes[0].token, "2").await?.status(), 401, "the admin token is not the peer token");
    assert_eq!(get(&peer_token, "9").await?.status(), 403, "a non-member is refused");
    let ok = get(&peer_token, "2").await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ok.bytes().await?)), digest);
    let missing = format!("{}/peer/v1/blobs/{}", nodes[0].api, "0".repeat(64));
    let r = http.get(&missing).bearer_auth(&peer_token).header("x-wasmkube-from", "2").send().await?;
    assert_eq!(r.status(), 404);
    Ok(())
}

async fn pods(node: &Wasmlet) -> Vec<Pod> {
    node.client().list(Some("default")).await.unwrap_or_default()
}

/// Whether `node`'s proxy serves pod `pod` of service `hello` from its own sandbox.
async fn serves_locally(node: &Wasmlet, pod: &str) -> bool {
    proxy_get(&node.proxy, "hello", "/", &[("x-wasmkube-target-pod", pod)]).await.status == 200
}

/// Three nodes, `hello` deployed with one pod on each; returns the name of c's pod.
async fn three_nodes_one_pod_each() -> anyhow::Result<(Vec<Wasmlet>, String)> {
    let nodes = start_cluster(&["a", "b", "c"], &[]).await?;
    eventually(Duration::from_secs(20), "three Ready nodes", || async {
        let listed: Vec<Node> = nodes[0].client().list(None).await.ok()?;
        (listed.iter().filter(|n| n.is_ready()).count() == 3).then_some(())
    })
    .await?;
    let wasm = example("hello_http").display().to_string();
    // A NodePort Service too, so load can come in at any node's port as well.
    nodes[0].wasmctl_ok(&[
        "deploy",
        &wasm,
        "--name",
        "hello",
        "--replicas",
        "3",
        "--service-type",
        "NodePort",
        "--wait",
    ]);
    let on_c = pods(&nodes[0])
        .await
        .into_iter()
        .find(|p| p.spec.node_name.as_deref() == Some("c"))
        .map(|p| p.metadata.name)
        .ok_or_else(|| anyhow::anyhow!("no pod was placed on c"))?;
    Ok((nodes, on_c))
}

/// The nodePort allocated to Service `hello`.
async fn hello_node_port(node: &Wasmlet) -> anyhow::Result<u16> {
    let service: Service = node.client().get(Some("default"), "hello").await?;
    let port = service.spec.ports.iter().find_map(|p| p.node_port).context("hello has a nodePort")?;
    Ok(u16::try_from(port)?)
}

/// Steady GETs for `hello` through `node`'s proxy and, at once, through `other`'s NodePort.
async fn load_through_proxy_and_node_port(
    node: &Wasmlet,
    other: &Wasmlet,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<(LoadOutcome, LoadOutcome)>> {
    let proxy = node.proxy.clone();
    let node_port = other.node_port_url(hello_node_port(node).await?);
    Ok(tokio::spawn(async move {
        tokio::join!(
            steady_load(&proxy, "hello", workers, duration),
            // The Host names no service: the port does.
            steady_load(&node_port, "example.com", workers, duration),
        )
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_serve_on_every_node_and_a_taken_port_is_refused() -> anyhow::Result<()> {
    let (nodes, _) = three_nodes_one_pod_each().await?;
    let port = hello_node_port(&nodes[0]).await?;
    assert!((30000..=32767).contains(&port), "allocated from the range: {port}");
    let listed = nodes[1].wasmctl_ok(&["get", "services"]);
    assert!(listed.contains(&format!("80:{port}/TCP")) && listed.contains("NodePort"), "{listed}");
    // Every node listens at the port, and reaches every pod from there.
    for node in &nodes {
        let url = node.node_port_url(port);
        let mut served = BTreeSet::new();
        for _ in 0..30 {
            let answer = proxy_get(&url, "any-host.example", "/", &[]).await;
            assert_eq!(answer.status, 200, "through {url}: {answer:?}");
            served.insert(answer.pod);
        }
        assert_eq!(served.len(), 3, "through {}'s NodePort: {served:?}", node.name());
    }

    // A port another Service holds is refused, and nothing is stored.
    let taken = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "other", "namespace": "default"},
        "spec": {"type": "NodePort", "selector": {"app": "hello"}, "ports": [{"port": 80, "nodePort": port}]},
    });
    let err = nodes[2].client().post_path("/api/v1/namespaces/default/services", &taken).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    assert!(err.to_string().contains("provided port is already allocated"), "{err}");
    let missing = nodes[0].client().get::<Service>(Some("default"), "other").await.unwrap_err();
    assert_eq!(missing.code(), Some(404), "nothing stored: {missing}");

    // hello becomes a ClusterIP Service: every node closes the port, and it is free again.
    let mut hello: Service = nodes[0].client().get(Some("default"), "hello").await?;
    hello.spec.type_ = None;
    hello.spec.ports.iter_mut().for_each(|p| p.node_port = None);
    nodes[0].client().update(&hello).await?;
    for node in &nodes {
        let url = node.node_port_url(port);
        eventually(Duration::from_secs(10), "the NodePort closed", || async {
            (proxy_get(&url, "x", "/", &[]).await.status == 0).then_some(())
        })
        .await?;
    }
    nodes[2].client().post_path("/api/v1/namespaces/default/services", &taken).await?;
    let url = nodes[1].node_port_url(port);
    eventually(Duration::from_secs(10), "the port serving Service other", || async {
        (proxy_get(&url, "x", "/", &[]).await.status == 200).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_goes_not_ready_and_its_pods_are_replaced_elsewhere() -> anyhow::Result<()> {
    let (mut nodes, lost) = three_nodes_one_pod_each().await?;
    nodes[2].kill9();
    let killed = Instant::now();
    let a = &nodes[0];
    eventually(Duration::from_secs(30), "c NotReady", || async {
        let out = a.wasmctl_ok(&["get", "nodes"]);
        out.lines().any(|l| l.starts_with("c ") && l.contains("NotReady")).then_some(())
    })
    .await?;
    let not_ready = killed.elapsed();
    eventually(Duration::from_secs(40), "c's pod replaced on a Ready node", || async {
        let now = pods(a).await;
        let ready_elsewhere = now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() != Some("c"));
        (ready_elsewhere.count() == 3 && now.iter().all(|p| p.metadata.name != lost)).then_some(())
    })
    .await?;
    let replaced = killed.elapsed();
    eprintln!("node killed: NotReady after {not_ready:?}, its pod replaced after {replaced:?}");
    let (statuses, served, _) = spread(&a.proxy, 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(served.len(), 3, "three pods serve again: {served:?}");

    // c comes back: Ready again, and its old pod is not started again.
    nodes[2].restart()?;
    let c = &nodes[2];
    eventually(Duration::from_secs(20), "c Ready again", || async {
        let listed: Vec<Node> = c.client().list(None).await.ok()?;
        (listed.iter().filter(|n| n.is_ready()).count() == 3).then_some(())
    })
    .await?;
    assert!(!serves_locally(c, &lost).await, "the evicted pod never runs again");
    assert!(pods(c).await.iter().all(|p| p.metadata.name != lost));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_ride_through_a_node_killed_under_load() -> anyhow::Result<()> {
    let (mut nodes, _) = three_nodes_one_pod_each().await?;
    // Steady GETs through a's proxy and b's NodePort; c dies one second in, with requests on
    // their way to it.
    let load = load_through_proxy_and_node_port(&nodes[0], &nodes[1], 2, Duration::from_secs(4)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[2].kill9();
    let (proxied, node_port) = load.await?;
    for (way, outcome) in [("a's proxy", proxied), ("b's NodePort", node_port)] {
        eprintln!(
            "{} requests through {way} while c was killed, {} failed",
            outcome.total(),
            outcome.failed.len()
        );
        // A request c never took goes to another pod; one c took and never answered is
        // sent again once (a GET is idempotent); and c is tried last meanwhile.
        assert!(outcome.ok > 50, "the load through {way} ran: {outcome:?}");
        assert!(outcome.failed.is_empty(), "{way}: {:?}", outcome.failed);
    }
    Ok(())
}

/// SIGTERM of a node under load through another node's proxy: every request succeeds, the
/// node's pods are Ready on the others within seconds of the signal, and it exits cleanly.
async fn graceful_leave(leader: bool) -> anyhow::Result<()> {
    let (mut nodes, _) = three_nodes_one_pod_each().await?;
    nodes[0].wasmctl_ok(&["scale", "deployment", "hello", "--replicas", "6"]);
    eventually(Duration::from_secs(20), "2 Ready pods per node", || async {
        let now = pods(&nodes[0]).await;
        let on =
            |n: &str| now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() == Some(n)).count();
        ["a", "b", "c"].iter().all(|n| on(n) == 2).then_some(())
    })
    .await?;
    let lead = leader_index(&nodes).await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let leaving = if leader { lead } else { (lead + 1) % 3 };
    let survivor = (leaving + 1) % 3;
    let name = nodes[leaving].name().to_string();
    let other_survivor = (leaving + 2) % 3;
    let load =
        load_through_proxy_and_node_port(&nodes[survivor], &nodes[other_survivor], 2, Duration::from_secs(6))
            .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let status = tokio::task::block_in_place(|| nodes[leaving].terminate(Duration::from_secs(30)))?;
    let exited = signalled.elapsed();
    let log = std::fs::read_to_string(nodes[leaving].data_dir.join("wasmlet.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(25).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{name} exits cleanly: {status:?}\n{tail}");
    let survivor = &nodes[survivor];
    let now = pods(survivor).await;
    let ready_elsewhere =
        now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() != Some(name.as_str())).count();
    eprintln!("{name} (leader: {leader}) left in {exited:?} with {ready_elsewhere} pods Ready elsewhere");
    assert_eq!(ready_elsewhere, 6, "its pods were Ready on the others before it exited");
    assert!(exited < Duration::from_secs(5), "within 5 s of the signal: {exited:?}\n{tail}");
    let (proxied, node_port) = load.await?;
    for (way, outcome) in [("a survivor's proxy", proxied), ("the other's NodePort", node_port)] {
        eprintln!(
            "{} requests through {way} while {name} left, {} failed",
            outcome.total(),
            outcome.failed.len()
        );
        assert!(outcome.ok > 50 && outcome.failed.is_empty(), "{way}: {:?}", outcome.failed);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_gets_sigterm_hands_its_pods_over_without_a_failed_request() -> anyhow::Result<()> {
    graceful_leave(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_that_gets_sigterm_hands_over_leadership_and_pods_without_a_failed_request()
-> anyhow::Result<()> {
    graceful_leave(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_node_killed_has_its_pods_replaced_within_seconds() -> anyhow::Result<()> {
    let (mut nodes, _) = three_nodes_one_pod_each().await?;
    let leader = leader_index(&nodes).await.ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let name = nodes[leader].name().to_string();
    let lost: Vec<String> = pods(&nodes[leader])
        .await
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(name.as_str()))
        .map(|p| p.metadata.name)
        .collect();
    anyhow::ensure!(!lost.is_empty(), "a pod runs on the leader's node");
    // Load through a survivor's proxy all along: the election must not stop the survivors'
    // pods (they fence only after three graces out of touch), and requests ride through.
    let load = load_through_proxy_and_node_port(
        &nodes[(leader + 1) % 3],
        &nodes[(leader + 2) % 3],
        2,
        Duration::from_secs(5),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[leader].kill9();
    let killed = Instant::now();
    let survivor = &nodes[(leader + 1) % 3];
    // A new leader is elected, sees that it has not heard from its predecessor since it was
    // killed, and replaces the pods there; a proxy of a survivor serves all three again.
    eventually(Duration::from_secs(20), "3 Ready pods on the survivors", || async {
        let now = pods(survivor).await;
        let ready = now.iter().filter(|p| p.is_ready() && p.spec.node_name.as_deref() != Some(name.as_str()));
        (ready.count() == 3 && now.iter().all(|p| !lost.contains(&p.metadata.name))).then_some(())
    })
    .await?;
    let replaced = killed.elapsed();
    eprintln!("leader's node killed: its pod replaced after {replaced:?}");
    assert!(replaced < Duration::from_secs(5), "seconds, not the heartbeat's 16: {replaced:?}");
    let (proxied, node_port) = load.await?;
    for (way, outcome) in [("a survivor's proxy", proxied), ("the other's NodePort", node_port)] {
        eprintln!("{} requests through {way}, {} failed", outcome.total(), outcome.failed.len());
        assert!(outcome.ok > 50 && outcome.failed.is_empty(), "{way}: {:?}", outcome.failed);
    }
    let (statuses, served, _) = spread(&survivor.proxy, 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(served.len(), 3, "three pods serve again: {served:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_stops_its_pods_and_the_others_replace_them_within_seconds() -> anyhow::Result<()> {
    let (nodes, on_c) = three_nodes_one_pod_each().await?;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let before: BTreeSet<String> = pods(a).await.into_iter().map(|p| p.metadata.name).collect();
    assert!(serves_locally(c, &on_c).await);
    set_faults(a, serde_json::json!({"partitionedFrom": [3]})).await?;
    set_faults(b, serde_json::json!({"partitionedFrom": [3]})).await?;
    set_faults(c, serde_json::json!({"partitionedFrom": [1, 2]})).await?;
    let cut = Instant::now();

    // Watch both sides: when c stops its pod, and when the majority's replacement is ready.
    let (mut fenced, mut replaced) = (None, None);
    while fenced.is_none() || replaced.is_none() {
        assert!(cut.elapsed() < Duration::from_secs(60), "fenced {fenced:?}, replaced {replaced:?}");
        if fenced.is_none() && !serves_locally(c, &on_c).await {
            fenced = Some(cut.elapsed());
        }
        if replaced.is_none()
            && pods(a).await.iter().any(|p| p.is_ready() && !before.contains(&p.metadata.name))
        {
            replaced = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("cut off: c stopped its pod after {fenced:?}; the replacement was ready after {replaced:?}");
    // Both within a few node graces (1 s): a replacement is a new pod, so the two may overlap
    // briefly, but c is NotReady by then and no other proxy sends it anything.
    let bound = Some(Duration::from_secs(5));
    assert!(fenced <= bound && replaced <= bound, "fenced {fenced:?}, replaced {replaced:?}");
    let (statuses, served, _) = spread(&a.proxy, 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(!served.contains(&on_c), "a's proxy no longer sends anything to c's pod: {served:?}");

    // Healed: c is Ready again and does not start the evicted pod again.
    for node in [a, b, c] {
        set_faults(node, serde_json::json!({})).await?;
    }
    eventually(Duration::from_secs(20), "c Ready again", || async {
        let listed: Vec<Node> = c.client().list(None).await.ok()?;
        listed.iter().find(|n| n.metadata.name == "c").is_some_and(Node::is_ready).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!serves_locally(c, &on_c).await, "the evicted pod never runs again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_move_with_leadership_without_doubling_an_action() -> anyhow::Result<()> {
    let (mut nodes, _) = three_nodes_one_pod_each().await?;
    let mut previous = 3;
    for (round, replicas) in [5usize, 2, 4].into_iter().enumerate() {
        let leader = eventually(Duration::from_secs(10), "a leader", || leader_index(&nodes)).await?;
        let other = (leader + 1) % nodes.len();
        // Scale through a follower, then kill the leader at once: whichever leader acts on
        // it, the pods are created or deleted once.
        nodes[other].wasmctl_ok(&["scale", "deployment", "hello", "--replicas", &replicas.to_string()]);
        nodes[leader].kill9();
        let survivor = &nodes[other];
        let mut most = 0;
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: never settled at {replicas}"
            );
            // Pods as the controllers made them (running them is the agents' part).
            let now = pods(survivor).await;
            most = most.max(now.len());
            if now.len() == replicas {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Settled, and stays settled: no late duplicate from the deposed leader.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = pods(survivor).await.len();
        eprintln!(
            "round {round}: {replicas} replicas after {:?}, at most {most} pods seen, {after} after 2 s",
            started.elapsed()
        );
        assert_eq!(after, replicas, "round {round}");
        // A doubled create would show as more pods than either the old or the new count.
        assert!(
            most <= replicas.max(previous),
            "round {round}: {most} pods at once, {previous} → {replicas}"
        );
        previous = replicas;
        nodes[leader].restart()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_pods_to_the_others_and_takes_new_ones_once_uncordoned() -> anyhow::Result<()>
{
    let (nodes, on_c) = three_nodes_one_pod_each().await?;
    let a = &nodes[0];
    let out = a.wasmctl_ok(&["drain", "c"]);
    assert!(out.contains("node/c cordoned") && out.contains(&format!("pod/{on_c} evicted")), "{out}");
    let table = a.wasmctl_ok(&["get", "nodes"]);
    assert!(table.lines().any(|l| l.starts_with("c ") && l.contains("Ready,SchedulingDisabled")), "{table}");
    eventually(Duration::from_secs(20), "three pods, none on c", || async {
        let now = pods(a).await;
        (now.len() == 3 && now.iter().all(|p| p.is_ready() && p.spec.node_name.as_deref() != Some("c")))
            .then_some(())
    })
    .await?;
    // More replicas go to a and b only while c is cordoned.
    a.wasmctl_ok(&["scale", "deployment", "hello", "--replicas", "5"]);
    eventually(Duration::from_secs(20), "five pods, none on c", || async {
        let now = pods(a).await;
        (now.len() == 5 && now.iter().all(|p| p.is_ready() && p.spec.node_name.as_deref() != Some("c")))
            .then_some(())
    })
    .await?;
    a.wasmctl_ok(&["uncordon", "c"]);
    a.wasmctl_ok(&["scale", "deployment", "hello", "--replicas", "7"]);
    eventually(Duration::from_secs(20), "new pods on c again", || async {
        let now = pods(a).await;
        let on_c = now.iter().filter(|p| p.spec.node_name.as_deref() == Some("c")).count();
        (now.len() == 7 && on_c > 0 && now.iter().all(Pod::is_ready)).then_some(())
    })
    .await?;
    Ok(())
}
