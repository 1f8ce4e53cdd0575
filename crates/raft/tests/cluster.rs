//! An in-process cluster of real drivers (each with its own RocksDB) over an in-memory
//! transport that can cut links, as raft-rs's own harness does: elections, replication,
//! failover under partition, and catch-up after a restart.
// The raft crate's own tests drive proposals directly.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tokio::sync::oneshot;
use wasmkube_raft::{
    ClusterHandle, DriverConfig, Member, MembershipChange, Message, ProposeError, Transport,
};
use wasmkube_store::{Command, ObjectKey, ObjectStore, RaftLog, StoreError};

#[derive(Default)]
struct MemNet {
    nodes: RwLock<HashMap<u64, ClusterHandle>>,
    /// Directed links that drop everything.
    cut: Mutex<HashSet<(u64, u64)>>,
    /// Drop every append acknowledgement: a leader can be elected but cannot commit.
    no_append_acks: std::sync::atomic::AtomicBool,
}

impl MemNet {
    fn isolate(&self, id: u64, peers: &[u64]) {
        let mut cut = self.cut.lock().expect("lock");
        for &p in peers.iter().filter(|&&p| p != id) {
            cut.insert((id, p));
            cut.insert((p, id));
        }
    }

    fn heal(&self) {
        self.cut.lock().expect("lock").clear();
    }

    fn drop_append_acks(&self, drop: bool) {
        self.no_append_acks.store(drop, std::sync::atomic::Ordering::SeqCst);
    }
}

struct MemTransport {
    from: u64,
    net: Arc<MemNet>,
}

impl Transport for MemTransport {
    fn send(&self, messages: Vec<Message>) {
        let cut = self.net.cut.lock().expect("lock").clone();
        let nodes = self.net.nodes.read().expect("lock");
        let no_acks = self.net.no_append_acks.load(std::sync::atomic::Ordering::SeqCst);
        for m in messages {
            if cut.contains(&(self.from, m.to))
                || (no_acks && m.get_msg_type() == raft::prelude::MessageType::MsgAppendResponse)
            {
                continue;
            }
            if let Some(peer) = nodes.get(&m.to) {
                let _ = peer.step(m);
            }
        }
    }
}

struct Cluster {
    net: Arc<MemNet>,
    dirs: HashMap<u64, TempDir>,
    done: HashMap<u64, oneshot::Receiver<Result<(), StoreError>>>,
    ids: Vec<u64>,
}

impl Cluster {
    fn new(ids: &[u64]) -> Self {
        let mut c =
            Cluster { net: Arc::default(), dirs: HashMap::new(), done: HashMap::new(), ids: ids.to_vec() };
        for &id in ids {
            c.dirs.insert(id, tempfile::tempdir().expect("tempdir"));
            c.start(id);
        }
        c
    }

    /// Starts a brand-new node with an empty log, to be added by a membership change.
    fn start_joiner(&mut self, id: u64) {
        self.dirs.insert(id, tempfile::tempdir().expect("tempdir"));
        self.start_with(id, vec![]);
    }

    fn start(&mut self, id: u64) {
        self.start_with(id, self.ids.iter().map(|&i| member(i)).collect());
    }

    fn start_with(&mut self, id: u64, initial_voters: Vec<Member>) {
        let db = wasmkube_store::open_db(self.dirs[&id].path()).expect("db");
        let log = RaftLog::open(db.clone()).expect("log");
        let store = Arc::new(ObjectStore::open(db).expect("store"));
        let config = DriverConfig {
            node_id: id,
            initial_voters,
            tick: Duration::from_millis(20),
            propose_timeout: Duration::from_secs(3),
            // Small, so that the tests exercise compaction and snapshots.
            compact_after: 50,
            compact_keep: 10,
        };
        let transport = Box::new(MemTransport { from: id, net: self.net.clone() });
        let (handle, done) = wasmkube_raft::start(config, log, store, transport).expect("start");
        self.net.nodes.write().expect("lock").insert(id, handle);
        self.done.insert(id, done);
    }

    /// Stops a node: drops its handle and waits for the driver to close its database.
    async fn stop(&mut self, id: u64) {
        self.net.nodes.write().expect("lock").remove(&id);
        if let Some(done) = self.done.remove(&id) {
            done.await.expect("driver reports").expect("clean stop");
        }
    }

    /// A founding node other than `leader`.
    fn follower_of(&self, leader: u64) -> u64 {
        self.ids.iter().copied().find(|&id| id != leader).unwrap_or(leader)
    }

    /// Stops every running node.
    async fn stop_all(&mut self) {
        let running: Vec<u64> = self.done.keys().copied().collect();
        for id in running {
            self.stop(id).await;
        }
    }

    fn handle(&self, id: u64) -> ClusterHandle {
        self.net.nodes.read().expect("lock")[&id].clone()
    }

    async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<u64> = among.iter().copied().filter(|&id| self.handle(id).is_leader()).collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no single leader among {among:?} within 10s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until node `id` has applied the change that made `member` a member.
    async fn knows_member(&self, id: u64, member: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.handle(id).membership().members.contains_key(&member) {
            assert!(Instant::now() < deadline, "node {id} did not learn member {member}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn converge(&self, ids: &[u64], revision: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ids.iter().all(|&id| self.handle(id).store().revision() == revision) {
            assert!(Instant::now() < deadline, "nodes {ids:?} did not all reach revision {revision}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn member(id: u64) -> Member {
    Member { id, name: format!("node-{id}"), url: format!("http://10.0.0.{id}:7700") }
}

fn create(name: &str) -> Command {
    Command::Create { object: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}) }
}

fn has(handle: &ClusterHandle, name: &str) -> bool {
    handle.store().get(&ObjectKey::new("Node", None, name)).expect("read").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_and_fail_over_without_losing_writes() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let first = c.leader(&[1, 2, 3]).await;
    for i in 0..10 {
        c.handle(first).propose(create(&format!("n{i}"))).await.expect("committed");
    }
    let follower = c.follower_of(first);
    // A follower's write travels to the leader with the raft messages; the follower answers
    // once it has applied it.
    let via_follower = c.handle(follower).propose(create("x")).await.expect("committed through the leader");
    assert_eq!(via_follower["metadata"]["resourceVersion"], "11");
    assert!(has(&c.handle(follower), "x"), "the follower answers after applying");
    c.converge(&[1, 2, 3], 11).await;

    // Cut the leader off: the other two elect a new one and keep committing. Hold back
    // append acknowledgements meanwhile, so the new leader cannot commit in its term yet.
    c.net.drop_append_acks(true);
    c.net.isolate(first, &[1, 2, 3]);
    let rest: Vec<u64> = c.ids.iter().copied().filter(|&id| id != first).collect();
    let second = c.leader(&rest).await;
    assert_ne!(second, first);
    // Reads on the new leader and through its follower: raft-rs drops a read index until the
    // leader has committed in its term. They are asked again, not left to time out.
    let other = *rest.iter().find(|&&id| id != second).expect("the other voter");
    let reads: Vec<_> = [second, other]
        .into_iter()
        .map(|id| {
            let h = c.handle(id);
            tokio::spawn(async move { h.read_barrier().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(reads.iter().all(|r| !r.is_finished()), "no read is confirmed before the leader commits");
    c.net.drop_append_acks(false);
    let released = Instant::now();
    for read in reads {
        read.await.expect("task").expect("the read is confirmed once the leader commits");
    }
    assert!(released.elapsed() < Duration::from_secs(1), "reads took {:?}", released.elapsed());
    let stranded = c.handle(first).propose(create("stranded")).await;
    assert!(stranded.is_err(), "a minority leader must not acknowledge a write: {stranded:?}");
    for i in 10..15 {
        c.handle(second).propose(create(&format!("n{i}"))).await.expect("majority commits");
    }

    // Heal: everyone converges on the majority's history; the stranded write is gone.
    c.net.heal();
    c.converge(&[1, 2, 3], 16).await;
    for id in [1, 2, 3] {
        let h = c.handle(id);
        assert!((0..15).all(|i| has(&h, &format!("n{i}"))), "node {id} has every acknowledged write");
        assert!(!has(&h, "stranded"), "node {id} never applies the unacknowledged write");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_from_the_log() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = c.follower_of(leader);
    c.handle(leader).propose(create("before")).await.expect("committed");
    c.converge(&[1, 2, 3], 1).await;

    c.stop(follower).await;
    for i in 0..20 {
        c.handle(leader).propose(create(&format!("while-down-{i}"))).await.expect("2 of 3 commit");
    }
    c.start(follower);
    c.converge(&[1, 2, 3], 21).await;
    assert!(has(&c.handle(follower), "while-down-19"));
    c.stop_all().await;
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    let mut ids: Vec<u64> = serde_json::from_value(v.clone()).expect("ids");
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_with_an_empty_log_as_voters_or_learners_and_leave() {
    let mut c = Cluster::new(&[1]);
    c.leader(&[1]).await;
    for i in 0..5 {
        c.handle(1).propose(create(&format!("n{i}"))).await.expect("committed");
    }

    c.start_joiner(2);
    let cs = c.handle(1).change_membership(MembershipChange::AddVoter(member(2))).await.expect("voter added");
    assert_eq!(ids(&cs["voters"]), [1, 2]);
    c.converge(&[1, 2], 5).await;
    // Names and addresses travel in the log: the joiner knows the founder's from replay (the
    // change that added it comes after the 5 writes: wait until it has applied that too).
    c.knows_member(2, 2).await;
    let known = c.handle(2).membership();
    assert_eq!(known.members.get(&1), Some(&member(1)));
    assert_eq!(known.members.get(&2), Some(&member(2)));
    // Replaying the log from index 1 taught the joiner the founding voter too: with two voters
    // a write needs both, and it commits.
    c.handle(1).propose(create("with-two")).await.expect("committed by 2 of 2");
    c.converge(&[1, 2], 6).await;

    c.start_joiner(3);
    let cs =
        c.handle(1).change_membership(MembershipChange::AddLearner(member(3))).await.expect("learner added");
    assert_eq!(ids(&cs["learners"]), [3]);
    c.converge(&[1, 2, 3], 6).await;

    // A learner never votes: with node 2 cut off, 1 + learner 3 are not a quorum.
    c.net.isolate(2, &[1, 2, 3]);
    let stuck = c.handle(1).propose(create("no-quorum")).await;
    assert!(stuck.is_err(), "a learner must not count toward the quorum: {stuck:?}");
    c.net.heal();
    let leader = c.leader(&[1, 2]).await;
    let cs = c.handle(leader).change_membership(MembershipChange::Remove(3)).await.expect("learner removed");
    assert!(ids(&cs["learners"]).is_empty());
    assert!(
        !c.handle(leader).membership().members.contains_key(&3),
        "a removed member's address is forgotten"
    );
    // Only the leader takes membership changes (voters here: 1 and 2).
    let follower = if leader == 1 { 2 } else { 1 };
    assert!(matches!(
        c.handle(follower).change_membership(MembershipChange::AddVoter(member(9))).await,
        Err(ProposeError::NotLeader)
    ));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_barriers_make_follower_reads_linearizable() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = c.follower_of(leader);
    for i in 0..20 {
        let name = format!("r{i}");
        c.handle(leader).propose(create(&name)).await.expect("committed");
        // Right after the write is acknowledged, a barrier on a follower sees it.
        c.handle(follower).read_barrier().await.expect("barrier");
        assert!(has(&c.handle(follower), &name), "write {i} visible on the follower after its barrier");
    }
    // A follower cut off from the leader cannot confirm a read: it refuses rather than
    // answering from a possibly stale replica.
    c.net.isolate(follower, &[1, 2, 3]);
    assert!(c.handle(follower).read_barrier().await.is_err());
    c.net.heal();
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_behind_compaction_and_new_joiners_catch_up_by_snapshot() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = c.follower_of(leader);
    c.stop(follower).await;
    for i in 0..150 {
        c.handle(leader).propose(create(&format!("s{i}"))).await.expect("2 of 3 commit");
    }
    assert!(c.handle(leader).log_first_index() > 100, "the leader compacted its log");
    c.start(follower);
    c.converge(&[1, 2, 3], 150).await;
    assert!(c.handle(follower).log_first_index() > 100, "the follower's log starts at the snapshot");
    assert!(has(&c.handle(follower), "s0") && has(&c.handle(follower), "s149"));

    // A node joining now has only compacted history to learn from: it gets a snapshot, which
    // also carries every member's name and address.
    c.start_joiner(4);
    c.handle(leader).change_membership(MembershipChange::AddLearner(member(4))).await.expect("learner added");
    c.converge(&[1, 2, 3, 4], 150).await;
    let learned = c.handle(4).membership();
    assert_eq!(learned.members.get(&1), Some(&member(1)), "members came with the snapshot");
    c.handle(leader).propose(create("after-snapshot")).await.expect("committed");
    c.converge(&[1, 2, 3, 4], 151).await;
    c.stop_all().await;
}
