//! Three real drivers talking over the real HTTP peer transport on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use wasmkube_raft::{ClusterHandle, DriverConfig, Member, PEER_MESSAGES_PATH, PeerTransport, peer_router};
use wasmkube_store::{Command, ObjectStore, RaftLog};

const TOKEN: &str = "peer-secret";

struct Node {
    handle: ClusterHandle,
    server: JoinHandle<()>,
    url: String,
    _dir: TempDir,
}

async fn start(id: u64, voters: &[u64]) -> (Node, PeerTransport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = wasmkube_store::open_db(dir.path()).expect("db");
    let log = RaftLog::open(db.clone()).expect("log");
    let store = Arc::new(ObjectStore::open(db).expect("store"));
    let transport = PeerTransport::new(id, TOKEN.into()).expect("transport");
    let config = DriverConfig {
        node_id: id,
        initial_voters: voters
            .iter()
            .map(|&id| Member { id, name: format!("node-{id}"), url: String::new() })
            .collect(),
        tick: Duration::from_millis(20),
        propose_timeout: Duration::from_secs(3),
    };
    let (handle, _done) =
        wasmkube_raft::start(config, log, store, Box::new(transport.clone())).expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = peer_router(handle.clone(), TOKEN.into());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (Node { handle, server, url, _dir: dir }, transport)
}

async fn leader(nodes: &HashMap<u64, Node>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: Vec<u64> =
            nodes.iter().filter(|(_, n)| n.handle.is_leader()).map(|(id, _)| *id).collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader within 10s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn converge(nodes: &HashMap<u64, Node>, revision: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nodes.values().all(|n| n.handle.store().revision() == revision) {
        assert!(Instant::now() < deadline, "nodes did not reach revision {revision}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn create(name: &str) -> Command {
    Command::Create { object: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_and_fails_over_over_http() {
    let ids = [1, 2, 3];
    let mut nodes = HashMap::new();
    let mut transports = HashMap::new();
    for id in ids {
        let (node, transport) = start(id, &ids).await;
        nodes.insert(id, node);
        transports.insert(id, transport);
    }
    for (id, t) in &transports {
        for (peer, node) in &nodes {
            if peer != id {
                t.set_peer(*peer, &node.url);
            }
        }
    }
    let first = leader(&nodes).await;
    for i in 0..10 {
        nodes[&first].handle.propose(create(&format!("n{i}"))).await.expect("committed");
    }
    converge(&nodes, 10).await;

    // The peer endpoint refuses strangers and garbage.
    let http = reqwest::Client::new();
    let url = format!("{}{PEER_MESSAGES_PATH}", nodes[&first].url);
    let post = |token: &str, from: &str, body: Vec<u8>| {
        http.post(&url).bearer_auth(token).header("x-wasmkube-from", from).body(body).send()
    };
    assert_eq!(post("wrong", "2", vec![]).await.expect("answer").status(), 401);
    assert_eq!(post(TOKEN, "99", vec![]).await.expect("answer").status(), 403, "a non-member is refused");
    assert_eq!(post(TOKEN, "2", vec![1, 2, 3]).await.expect("answer").status(), 400);
    assert_eq!(post(TOKEN, "2", vec![]).await.expect("answer").status(), 204);

    // Stop the leader (its server and its driver); the others elect a new one.
    let old = nodes.remove(&first).expect("leader");
    old.server.abort();
    drop(old);
    let second = leader(&nodes).await;
    assert_ne!(second, first);
    for i in 10..15 {
        nodes[&second]
            .handle
            .propose(create(&format!("n{i}")))
            .await
            .expect("committed by the remaining two");
    }
    converge(&nodes, 15).await;
}
