//! The Ready loop, on a dedicated thread: RocksDB fsyncs block, and must not stall the async
//! runtime that serves the API and the pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState};
use raft::{Config, RawNode, StateRole};
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use wasmkube_store::{Command, ObjectStore, RaftLog, StoreError};

use crate::handle::{
    ClusterHandle, LeaderState, Member, Membership, MembershipChange, ProposeError, Reply, Request,
};
use crate::logger::raft_logger;
use crate::reads::Reads;
use crate::transport::{Report, Transport};

/// Most requests drained into one Ready cycle: bounds the latency one batch adds.
const MAX_BATCH: usize = 512;

pub struct DriverConfig {
    pub node_id: u64,
    /// The voters a brand-new group starts with (every founding node lists the same ones).
    /// Ignored when the log already holds a membership.
    pub initial_voters: Vec<Member>,
    pub tick: Duration,
    pub propose_timeout: Duration,
    /// Compact the log once it holds this many applied entries...
    pub compact_after: u64,
    /// ...keeping this many behind the applied index for followers that lag a little.
    pub compact_keep: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            node_id: 1,
            initial_voters: vec![Member { id: 1, name: "node-1".into(), url: String::new() }],
            // 50 ms ticks: heartbeats every 150 ms, elections after 0.5-1 s of silence.
            tick: Duration::from_millis(50),
            propose_timeout: Duration::from_secs(10),
            compact_after: 10_000,
            compact_keep: 1_000,
        }
    }
}

struct Driver {
    node: RawNode<RaftLog>,
    log: RaftLog,
    store: Arc<ObjectStore>,
    leader: watch::Sender<LeaderState>,
    membership: watch::Sender<Membership>,
    members: BTreeMap<u64, Member>,
    pending: HashMap<u64, Reply>,
    reads: Reads,
    /// The term and leader the pending proposals were made under.
    proposals_under: (u64, u64),
    next_proposal: u64,
    node_id: u64,
    transport: Box<dyn Transport>,
    /// Delivery reports from the transport, handed on to raft-rs.
    reports: mpsc::Receiver<Report>,
    compact_after: u64,
    compact_keep: u64,
    /// Told who leads after every loop, so it knows when this node is in touch.
    contact: Arc<crate::Contact>,
    /// Membership changes waiting for the one before them to be applied.
    deferred_changes: Vec<(MembershipChange, Reply)>,
}

/// Starts the driver for a node whose log is in `log` and state machine in `store`, talking
/// to peers through `transport`. A node with no membership yet bootstraps a group of
/// `config.initial_voters`.
///
/// The returned receiver resolves when the driver stops, with the fatal error if it failed.
pub fn start(
    config: DriverConfig,
    log: RaftLog,
    store: Arc<ObjectStore>,
    transport: Box<dyn Transport>,
) -> Result<(ClusterHandle, oneshot::Receiver<Result<(), StoreError>>), raft::Error> {
    if !log.is_initialized() && !config.initial_voters.is_empty() {
        bootstrap(&log, &config.initial_voters)
            .map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))?;
    }
    let raft_config = Config {
        id: config.node_id,
        election_tick: 10,
        heartbeat_tick: 3,
        applied: store.applied_index(),
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_config.validate()?;
    let node = RawNode::new(&raft_config, log.clone(), &raft_logger())?;
    let sole_voter = log.conf_state().voters == [config.node_id];

    let (leader_tx, leader_rx) = watch::channel(LeaderState::default());
    let members =
        load_members(&log).map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))?;
    let (membership_tx, membership_rx) = watch::channel(membership_of(&log.conf_state(), &members));
    let (tx, rx) = mpsc::channel();
    let (reports_tx, reports) = mpsc::channel();
    let contact = Arc::new(crate::Contact::new(config.node_id));
    contact.members(&membership_rx.borrow());
    transport.attach(reports_tx, contact.clone());
    let (done_tx, done_rx) = oneshot::channel();
    let handle = ClusterHandle {
        tx,
        store: store.clone(),
        leader: leader_rx,
        membership: membership_rx,
        log: log.clone(),
        node_id: config.node_id,
        propose_timeout: config.propose_timeout,
        contact: contact.clone(),
    };
    let mut driver = Driver {
        node,
        log,
        store,
        leader: leader_tx,
        membership: membership_tx,
        members,
        pending: HashMap::new(),
        reads: Reads::default(),
        proposals_under: (0, 0),
        // Random, so an entry proposed before a restart (and applied after it) can never
        // answer a writer of this incarnation.
        next_proposal: rand::random(),
        node_id: config.node_id,
        transport,
        reports,
        compact_after: config.compact_after,
        compact_keep: config.compact_keep,
        contact,
        deferred_changes: Vec::new(),
    };
    let tick = config.tick;
    std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            let result = driver.run(rx, tick, sole_voter);
            // Close storage before reporting, so a caller may reopen it at once.
            drop(driver);
            if let Err(e) = &result {
                tracing::error!("raft driver stopped: {e}");
            }
            let _ = done_tx.send(result);
        })
        .map_err(|e| raft::Error::Store(raft::StorageError::Other(Box::new(e))))?;
    Ok((handle, done_rx))
}

/// Founds a group the way etcd does: the initial membership is written as committed
/// configuration entries at the head of the log (term 1), so a node that later joins with an
/// empty log learns every founding voter by replaying it.
fn bootstrap(log: &RaftLog, voters: &[Member]) -> Result<(), StoreError> {
    use protobuf::Message as _;
    let entries = voters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cc = MembershipChange::AddVoter(m.clone()).into_conf_change();
            let data = cc.write_to_bytes().map_err(corrupt_conf_change)?;
            let mut entry = Entry { term: 1, index: i as u64 + 1, data: data.into(), ..Default::default() };
            entry.set_entry_type(EntryType::EntryConfChange);
            Ok(entry)
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let hs = HardState { term: 1, vote: 0, commit: entries.len() as u64, ..Default::default() };
    log.append(&entries, Some(&hs))?;
    let cs = ConfState { voters: voters.iter().map(|m| m.id).collect(), ..Default::default() };
    let members: BTreeMap<u64, Member> = voters.iter().map(|m| (m.id, m.clone())).collect();
    log.set_membership(cs, &encode_members(&members))
}

fn load_members(log: &RaftLog) -> Result<BTreeMap<u64, Member>, StoreError> {
    match log.members()? {
        Some(bytes) => {
            let list: Vec<Member> = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { what: "members".into(), detail: e.to_string() })?;
            Ok(list.into_iter().map(|m| (m.id, m)).collect())
        }
        None => Ok(BTreeMap::new()),
    }
}

fn encode_members(members: &BTreeMap<u64, Member>) -> Vec<u8> {
    serde_json::to_vec(&members.values().collect::<Vec<_>>()).unwrap_or_default()
}

fn corrupt_conf_change(e: protobuf::ProtobufError) -> StoreError {
    StoreError::Corrupt { what: "conf change".into(), detail: e.to_string() }
}

impl Driver {
    fn run(
        &mut self,
        rx: mpsc::Receiver<Request>,
        tick: Duration,
        sole_voter: bool,
    ) -> Result<(), StoreError> {
        // Apply what is committed (the bootstrap configuration at least) first: raft-rs will
        // not campaign while configuration entries wait to be applied.
        self.on_ready()?;
        if sole_voter {
            // The only voter need not wait out an election timeout.
            if let Err(e) = self.node.campaign() {
                tracing::warn!("could not campaign at start: {e}");
            }
        }
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Request::Stop) => return Ok(()),
                Ok(req) => {
                    self.handle(req);
                    for req in rx.try_iter().take(MAX_BATCH) {
                        if matches!(req, Request::Stop) {
                            return Ok(());
                        }
                        self.handle(req);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Every handle is gone: the node is shutting down.
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            self.take_reports();
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick += tick;
                for id in self.reads.due_again() {
                    self.node.read_index(proposal_context(self.node_id, id));
                }
            }
            self.on_ready()?;
            self.publish_leader();
            let leading = self.node.raft.state == StateRole::Leader;
            if !self.deferred_changes.is_empty() && (!leading || !self.node.raft.has_pending_conf()) {
                // Proposed now (or refused with NotLeader if this node lost the lead).
                for (change, reply) in std::mem::take(&mut self.deferred_changes) {
                    self.handle(Request::ChangeMembership { change, reply });
                }
            }
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            // Seen by `run` before it gets here.
            Request::Stop => {}
            Request::Step(message) => {
                // Messages from unknown or removed peers, or stale terms, are refused by raft-rs
                // itself; nothing more to do with them here.
                if let Err(e) = self.node.step(*message) {
                    tracing::debug!("raft message refused: {e}");
                }
            }
            Request::TransferLeader { to, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(ProposeError::NotLeader));
                    return;
                }
                self.node.transfer_leader(to);
                let _ = reply.send(Ok(Value::Null));
            }
            Request::ReadIndex { reply } => {
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(ProposeError::NotLeader));
                    return;
                }
                let id = self.next_id();
                self.node.read_index(proposal_context(self.node_id, id));
                self.reads.asked(id, reply);
            }
            Request::ChangeMembership { change, reply } => {
                // raft-rs drops a change proposed while another is not applied yet (a new
                // leader counts its whole log as one) without telling anyone: it waits here
                // until that one is applied, and is proposed then.
                if self.node.raft.state == StateRole::Leader && self.node.raft.has_pending_conf() {
                    self.deferred_changes.push((change, reply));
                    return;
                }
                let Some((id, reply)) = self.lead(reply) else { return };
                match self
                    .node
                    .propose_conf_change(proposal_context(self.node_id, id), change.into_conf_change())
                {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(e) => {
                        let refused =
                            wasmkube_store::ApplyError::Invalid(format!("membership change refused: {e}"));
                        let _ = reply.send(Err(ProposeError::Rejected(refused)));
                    }
                }
            }
            Request::Propose { command, reply } => {
                // A follower hands the proposal to raft-rs, which forwards it to the leader
                // with the other raft messages (as etcd does); the follower answers the writer
                // when it applies the entry, which carries this node's id and the proposal's.
                // With no leader known, raft-rs drops it: `NotLeader`, and the writer waits
                // for an election.
                let id = self.next_id();
                match self.node.propose(proposal_context(self.node_id, id), command) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(ProposeError::NotLeader));
                    }
                }
            }
        }
    }

    fn take_reports(&mut self) {
        for report in self.reports.try_iter().take(MAX_BATCH) {
            match report {
                Report::Unreachable(peer) => self.node.report_unreachable(peer),
                Report::Snapshot { to, delivered } => {
                    let status =
                        if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
                    self.node.report_snapshot(to, status);
                }
            }
        }
    }

    /// A proposal id for a writer when this node leads; otherwise answers it `NotLeader`.
    fn lead(&mut self, reply: Reply) -> Option<(u64, Reply)> {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(ProposeError::NotLeader));
            return None;
        }
        Some((self.next_id(), reply))
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_proposal;
        self.next_proposal = self.next_proposal.wrapping_add(1);
        id
    }

    fn on_ready(&mut self) -> Result<(), StoreError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        for rs in ready.take_read_states() {
            if let Some((_, id)) = parse_context(&rs.request_ctx) {
                self.reads.confirm(id, rs.index);
            }
        }
        // A leader's appends may go out before its own write: raft only counts its own vote
        // once persisted (the etcd/raft-rs pipelining).
        self.transport.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot())?;
        }
        // Persist before applying: the hard state may carry the commit index that covers the
        // committed entries, and an applied index must never be durable ahead of its commit.
        if !ready.entries().is_empty() || ready.hs().is_some() {
            self.log.append(ready.entries(), ready.hs())?;
        }
        self.apply(ready.take_committed_entries())?;
        // Votes and append acknowledgements only once what they promise is on disk.
        self.transport.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.log.set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.reads.answer(self.store.applied_index());
        self.maybe_compact()
    }

    /// Replaces this replica's state with the leader's snapshot: objects, membership, log.
    fn install_snapshot(&mut self, snapshot: &raft::prelude::Snapshot) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        let data: wasmkube_store::SnapshotData = serde_json::from_slice(&snapshot.data)
            .map_err(|e| StoreError::Corrupt { what: "snapshot".into(), detail: e.to_string() })?;
        let members: Vec<Member> = serde_json::from_value(data.members).unwrap_or_default();
        self.members = members.into_iter().map(|m| (m.id, m)).collect();
        let cs = meta.get_conf_state().clone();
        let members = encode_members(&self.members);
        wasmkube_store::install_snapshot(
            &self.log,
            &self.store,
            (meta.index, meta.term, cs.clone()),
            &members,
            &data.state,
        )?;
        let membership = membership_of(&cs, &self.members);
        self.contact.members(&membership);
        self.membership.send_replace(membership);
        tracing::info!(index = meta.index, term = meta.term, "installed a snapshot from the leader");
        Ok(())
    }

    /// Drops applied entries once there are many, keeping a tail for slightly lagging peers.
    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        use raft::Storage as _;
        let applied = self.store.applied_index();
        let first = self.log.first_index().unwrap_or(1);
        if applied >= first + self.compact_after {
            self.log.compact(applied - self.compact_keep.min(applied))?;
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => self.store.skip(entry.index)?,
                EntryType::EntryNormal => self.apply_command(&entry)?,
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)?;
                    self.store.skip(entry.index)?;
                }
            }
        }
        Ok(())
    }

    fn apply_command(&mut self, entry: &Entry) -> Result<(), StoreError> {
        let outcome = match serde_json::from_slice::<Command>(&entry.data) {
            Ok(command) => self.store.apply(entry.index, command)?.map_err(ProposeError::Rejected),
            Err(e) => {
                // A command this version cannot read: consume the entry, refuse the write.
                self.store.skip(entry.index)?;
                Err(ProposeError::Rejected(wasmkube_store::ApplyError::Invalid(e.to_string())))
            }
        };
        self.answer(&entry.context, outcome);
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StoreError> {
        use protobuf::Message as _;
        // wasmkube proposes only v1 changes; a v2 one (from a future version) is applied
        // without a member description.
        let (cs, change) = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(corrupt_conf_change)?;
            (self.node.apply_conf_change(&cc), None)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(corrupt_conf_change)?;
            (self.node.apply_conf_change(&cc), Some(cc))
        };
        let outcome = match cs {
            Ok(cs) => {
                if let Some(cc) = change {
                    self.record_member(&cc);
                }
                self.log.set_membership(cs.clone(), &encode_members(&self.members))?;
                let membership = membership_of(&cs, &self.members);
                self.contact.members(&membership);
                self.membership.send_replace(membership);
                Ok(serde_json::json!({"voters": cs.voters, "learners": cs.learners}))
            }
            Err(e) => {
                tracing::warn!("conf change at index {} refused: {e}", entry.index);
                Err(ProposeError::Rejected(wasmkube_store::ApplyError::Invalid(format!(
                    "membership change refused: {e}"
                ))))
            }
        };
        self.answer(&entry.context, outcome);
        Ok(())
    }

    fn record_member(&mut self, cc: &ConfChange) {
        match cc.get_change_type() {
            ConfChangeType::RemoveNode => {
                self.members.remove(&cc.node_id);
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(member) = serde_json::from_slice::<Member>(&cc.context) {
                    self.members.insert(cc.node_id, Member { id: cc.node_id, ..member });
                }
            }
        }
    }

    /// Answers the proposer of an applied entry, when it was proposed on this node.
    fn answer(&mut self, context: &[u8], outcome: Result<Value, ProposeError>) {
        if let Some((node, id)) = parse_context(context)
            && node == self.node_id
            && let Some(reply) = self.pending.remove(&id)
        {
            let _ = reply.send(outcome);
        }
    }

    fn publish_leader(&mut self) {
        let raft = &self.node.raft;
        let state = LeaderState {
            leader_id: raft.leader_id,
            term: raft.term,
            is_leader: raft.state == StateRole::Leader,
        };
        self.leader.send_if_modified(|old| {
            let changed = *old != state;
            *old = state;
            changed
        });
        self.contact.observe(&state);
        self.reads.term(state.term);
        if (state.term, state.leader_id) != self.proposals_under {
            // The leader the pending proposals went to (or this node's leadership) is gone:
            // each may or may not commit. Tell the writers so rather than letting them wait
            // out the timeout.
            self.proposals_under = (state.term, state.leader_id);
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(ProposeError::Timeout(Duration::ZERO)));
            }
        }
    }
}

fn membership_of(cs: &ConfState, members: &BTreeMap<u64, Member>) -> Membership {
    Membership { voters: cs.voters.clone(), learners: cs.learners.clone(), members: members.clone() }
}

fn proposal_context(node: u64, id: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&node.to_be_bytes());
    ctx.extend_from_slice(&id.to_be_bytes());
    ctx
}

fn parse_context(ctx: &[u8]) -> Option<(u64, u64)> {
    let node = u64::from_be_bytes(ctx.get(..8)?.try_into().ok()?);
    let id = u64::from_be_bytes(ctx.get(8..16)?.try_into().ok()?);
    Some((node, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoPeers;
    use serde_json::json;
    use wasmkube_store::{ApplyError, ObjectKey};

    fn open(dir: &std::path::Path) -> (RaftLog, Arc<ObjectStore>) {
        let db = wasmkube_store::open_db(dir).expect("db");
        (RaftLog::open(db.clone()).expect("log"), Arc::new(ObjectStore::open(db).expect("store")))
    }

    fn node(name: &str) -> Command {
        Command::Create { object: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}) }
    }

    async fn wait_leader(handle: &ClusterHandle) {
        let mut rx = handle.leader();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.is_leader))
            .await
            .expect("leader within 5s")
            .expect("driver alive");
    }

    #[tokio::test]
    async fn single_voter_commits_and_survives_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (log, store) = open(dir.path());
            let (handle, done) =
                start(DriverConfig::default(), log, store, Box::new(NoPeers)).expect("start");
            wait_leader(&handle).await;
            let a = handle.propose(node("a")).await.expect("commit");
            assert_eq!(a["metadata"]["name"], "a");
            let dup = handle.propose(node("a")).await;
            assert!(matches!(dup, Err(ProposeError::Rejected(ApplyError::AlreadyExists(_)))));
            let writes: Vec<_> = (0..20)
                .map(|i| {
                    let h = handle.clone();
                    tokio::spawn(async move { h.propose(node(&format!("n{i}"))).await })
                })
                .collect();
            for w in writes {
                w.await.expect("task").expect("concurrent write commits");
            }
            drop(handle);
            // The driver stops once every handle is gone, closing RocksDB.
            done.await.expect("driver reports").expect("clean stop");
        }
        let (log, store) = open(dir.path());
        assert_eq!(store.list("Node", None).expect("list").0.len(), 21);
        let (handle, done) = start(DriverConfig::default(), log, store, Box::new(NoPeers)).expect("restart");
        wait_leader(&handle).await;
        let b = handle.propose(node("b")).await.expect("commit after restart");
        assert_eq!(b["metadata"]["resourceVersion"], "22");
        assert!(handle.store().get(&ObjectKey::new("Node", None, "a")).expect("get").is_some());
        drop(handle);
        done.await.expect("driver reports").expect("clean stop");
    }
}
