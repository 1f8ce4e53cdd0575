//! Three real drivers talking over the real HTTP peer transport on loopback.
// The raft crate's own tests drive proposals directly.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmkube_raft::{
    ClusterHandle, DriverConfig, Member, PEER_MESSAGES_PATH, PeerTransport, ProposeError, peer_router,
};
use wasmkube_store::{Command, ObjectStore, RaftLog};

const TOKEN: &str = "peer-secret";

struct Node {
    handle: ClusterHandle,
    server: JoinHandle<()>,
    done: oneshot::Receiver<Result<(), wasmkube_store::StoreError>>,
    url: String,
    _dir: TempDir,
}

async fn start(id: u64, listener: tokio::net::TcpListener, voters: &[Member]) -> (Node, PeerTransport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = wasmkube_store::open_db(dir.path()).expect("db");
    let log = RaftLog::open(db.clone()).expect("log");
    let store = Arc::new(ObjectStore::open(db).expect("store"));
    let transport = PeerTransport::new(id, TOKEN.into(), wasmkube_raft::peer_client().expect("client"))
        .expect("transport");
    let config = DriverConfig {
        node_id: id,
        initial_voters: voters.to_vec(),
        tick: Duration::from_millis(20),
        propose_timeout: Duration::from_secs(3),
        ..DriverConfig::default()
    };
    let (handle, done) =
        wasmkube_raft::start(config, log, store, Box::new(transport.clone())).expect("start");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = peer_router(handle.clone(), TOKEN.into(), transport.faults());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (Node { handle, server, done, url, _dir: dir }, transport)
}

/// Stops a node's server and driver, and waits until its database is closed (a database
/// still open when the test process exits can abort it).
async fn stop(node: Node) {
    let Node { handle, server, done, .. } = node;
    server.abort();
    let _ = server.await;
    drop(handle);
    let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
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
    let mut listeners = HashMap::new();
    let mut voters = Vec::new();
    for id in ids {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        voters.push(Member { id, name: format!("node-{id}"), url });
        listeners.insert(id, listener);
    }
    let mut nodes = HashMap::new();
    let mut transports = HashMap::new();
    for id in ids {
        let (node, transport) = start(id, listeners.remove(&id).expect("listener"), &voters).await;
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

    // A follower forwards a write to the leader and answers with the committed object;
    // refusals come back as refusals.
    let follower = *ids.iter().find(|&&id| id != first).expect("a follower");
    let forwarded = nodes[&follower].handle.propose(create("via-follower")).await.expect("forwarded");
    assert_eq!(forwarded["metadata"]["resourceVersion"], "11");
    let again = nodes[&follower].handle.propose(create("via-follower")).await;
    assert!(
        matches!(again, Err(ProposeError::Rejected(wasmkube_store::ApplyError::AlreadyExists(_)))),
        "{again:?}"
    );
    converge(&nodes, 11).await;

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
    stop(nodes.remove(&first).expect("leader")).await;
    let second = leader(&nodes).await;
    assert_ne!(second, first);
    for i in 10..15 {
        nodes[&second]
            .handle
            .propose(create(&format!("n{i}")))
            .await
            .expect("committed by the remaining two");
    }
    converge(&nodes, 16).await;
    for (_, node) in nodes.drain() {
        stop(node).await;
    }
}
