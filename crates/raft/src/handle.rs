//! The handle the rest of the node uses to read state and propose writes.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, watch};
use wasmkube_store::{ApplyError, Command, ObjectStore};

use crate::limits::MAX_ENTRY_BYTES;

/// Most commands one `propose_many` entry carries.
const BATCH_COMMANDS: usize = 256;
/// Most `propose_many` entries in flight at once: a huge plan streams through Raft instead
/// of queueing hundreds of entries at the leader.
const CHUNKS_IN_FLIGHT: usize = 8;
/// What `Command::Batch { commands }` serialises to, around the commands' own encodings.
const BATCH_OPEN: &[u8] = br#"{"Batch":{"commands":["#;
const BATCH_CLOSE: &[u8] = b"]}}";

/// Who leads, as this node last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderState {
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// Applied, and the state machine refused it (conflict, not found, …): permanent.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// This node cannot take writes now (no leader yet, or another node leads): retryable.
    #[error("no leader is available to take the write; retry shortly")]
    NotLeader,
    /// The write was proposed but its outcome is unknown (it may still commit).
    #[error("timed out after {0:?} waiting for the write to commit; its outcome is unknown")]
    Timeout(Duration),
    /// The driver stopped (node shutting down or failed).
    #[error("the raft driver has stopped")]
    Stopped,
    /// The command is larger than one raft entry may be: refused before it was proposed.
    #[error("the write is {size} bytes, more than the {limit} byte limit of one replicated entry")]
    TooLarge { size: usize, limit: usize },
}

pub(crate) type Reply = oneshot::Sender<Result<Value, ProposeError>>;

pub(crate) enum Request {
    Propose {
        command: Vec<u8>,
        reply: Reply,
    },
    ChangeMembership {
        change: MembershipChange,
        reply: Reply,
    },
    /// Hand leadership to voter `to` (raft-rs catches it up first).
    TransferLeader {
        to: u64,
        reply: Reply,
    },
    /// Wait until this node has applied everything committed when the read began.
    ReadIndex {
        reply: Reply,
    },
    /// A message from a peer.
    Step(Box<raft::prelude::Message>),
    /// Stop the driver (its storage is closed before it reports done), whatever handles
    /// remain.
    Stop,
}

/// One node of the group: its raft id, its unique name, and the URL peers reach it at.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub url: String,
}

/// The group's members as this node has applied them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Names and addresses, from the configuration entries that added each member.
    pub members: std::collections::BTreeMap<u64, Member>,
}

impl Membership {
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// How long a request waits for an election to produce a leader before giving up.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

/// A change to the Raft group's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    AddVoter(Member),
    AddLearner(Member),
    Remove(u64),
}

impl MembershipChange {
    pub(crate) fn into_conf_change(self) -> raft::prelude::ConfChange {
        use raft::prelude::{ConfChange, ConfChangeType};
        let (change_type, node_id, member) = match self {
            MembershipChange::AddVoter(m) => (ConfChangeType::AddNode, m.id, Some(m)),
            MembershipChange::AddLearner(m) => (ConfChangeType::AddLearnerNode, m.id, Some(m)),
            MembershipChange::Remove(id) => (ConfChangeType::RemoveNode, id, None),
        };
        // The description rides in the entry, so every replica (and every later joiner
        // replaying the log) learns who the member is and where to reach it.
        let context = member.and_then(|m| serde_json::to_vec(&m).ok()).unwrap_or_default();
        ConfChange { change_type, node_id, context: context.into(), ..Default::default() }
    }
}

/// Cheap to clone; every clone talks to the same driver.
#[derive(Clone)]
pub struct ClusterHandle {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) store: Arc<ObjectStore>,
    pub(crate) leader: watch::Receiver<LeaderState>,
    pub(crate) membership: watch::Receiver<Membership>,
    pub(crate) log: wasmkube_store::RaftLog,
    pub(crate) node_id: u64,
    pub(crate) propose_timeout: Duration,
    pub(crate) contact: Arc<crate::Contact>,
}

impl ClusterHandle {
    /// Proposes `command` and waits until it is committed and applied, returning the object
    /// as the state machine left it.
    ///
    /// Any member takes the write: a follower's proposal travels to the leader with the raft
    /// messages, and the follower answers once it has applied the entry.
    pub async fn propose(&self, command: Command) -> Result<Value, ProposeError> {
        let encode = |c: &Command| {
            let bytes = serde_json::to_vec(c).map_err(|e| ApplyError::Invalid(e.to_string()))?;
            match bytes.len() {
                size if size > MAX_ENTRY_BYTES => {
                    Err(ProposeError::TooLarge { size, limit: MAX_ENTRY_BYTES })
                }
                _ => Ok(bytes),
            }
        };
        let bytes = encode(&command)?;
        // During an election there is briefly no leader: wait for one (bounded) rather than
        // bounce the write, as etcd does. (Encoded again then: no copy on every write for
        // the rare retry.)
        match self.request(|reply| Request::Propose { command: bytes, reply }).await {
            Err(ProposeError::NotLeader) if self.await_leader().await => {
                let bytes = encode(&command)?;
                self.request(|reply| Request::Propose { command: bytes, reply }).await
            }
            other => other,
        }
    }

    /// Proposes `commands` in as few log entries as they fit in (`Command::Batch` entries of
    /// up to `BATCH_COMMANDS` commands and half an entry's byte limit), `CHUNKS_IN_FLIGHT` at a time,
    /// and returns each command's outcome in order (for a command that went in a batch, the
    /// object's new `metadata.resourceVersion` only). One Raft round then creates, binds or
    /// reports on hundreds of pods, instead of one entry (and one apply on every node) each.
    pub async fn propose_many(&self, commands: Vec<Command>) -> Vec<Result<Value, ProposeError>> {
        // Each command is serialised once: a batch entry is the commands' bytes joined into
        // `{"Batch":{"commands":[…]}}`, the encoding `Command::Batch` has.
        let mut chunks: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut results: Vec<Option<Result<Value, ProposeError>>> = Vec::with_capacity(commands.len());
        let mut order: Vec<Option<usize>> = Vec::with_capacity(commands.len());
        for command in &commands {
            let bytes = match serde_json::to_vec(command) {
                Ok(bytes) => bytes,
                Err(e) => {
                    order.push(None);
                    results.push(Some(Err(ProposeError::Rejected(ApplyError::Invalid(e.to_string())))));
                    continue;
                }
            };
            results.push(None);
            match chunks.last_mut() {
                Some((chunk, n))
                    if *n < BATCH_COMMANDS && chunk.len() + bytes.len() < MAX_ENTRY_BYTES / 2 =>
                {
                    chunk.push(b',');
                    chunk.extend_from_slice(&bytes);
                    *n += 1;
                }
                _ => {
                    let mut chunk = Vec::with_capacity(bytes.len() + 64);
                    chunk.extend_from_slice(BATCH_OPEN);
                    chunk.extend_from_slice(&bytes);
                    chunks.push((chunk, 1));
                }
            }
            order.push(Some(chunks.len() - 1));
        }
        let proposals = chunks.into_iter().map(|(mut chunk, n)| async move {
            chunk.extend_from_slice(BATCH_CLOSE);
            match self.propose_encoded(chunk).await {
                Ok(answer) => wasmkube_store::batch_outcomes(answer, n)
                    .into_iter()
                    .map(|r| r.map_err(ProposeError::Rejected))
                    .collect(),
                Err(e) => vec![Err(e); n],
            }
        });
        use futures::StreamExt as _;
        let outcomes: Vec<Vec<Result<Value, ProposeError>>> =
            futures::stream::iter(proposals).buffered(CHUNKS_IN_FLIGHT).collect().await;
        let mut outcomes: Vec<std::vec::IntoIter<Result<Value, ProposeError>>> =
            outcomes.into_iter().map(Vec::into_iter).collect();
        results
            .into_iter()
            .zip(order)
            .map(|(done, chunk)| match (done, chunk) {
                (Some(result), _) => result,
                (None, Some(chunk)) => {
                    outcomes.get_mut(chunk).and_then(Iterator::next).unwrap_or(Err(ProposeError::Stopped))
                }
                (None, None) => Err(ProposeError::Stopped),
            })
            .collect()
    }

    /// Proposes an encoded command (see `propose`), waiting for a leader once if there is
    /// none.
    async fn propose_encoded(&self, bytes: Vec<u8>) -> Result<Value, ProposeError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(ProposeError::TooLarge { size: bytes.len(), limit: MAX_ENTRY_BYTES });
        }
        let retry = bytes.clone();
        match self.request(|reply| Request::Propose { command: bytes, reply }).await {
            Err(ProposeError::NotLeader) if self.await_leader().await => {
                self.request(|reply| Request::Propose { command: retry, reply }).await
            }
            other => other,
        }
    }

    /// The leader's name and address, waiting up to `ELECTION_WAIT` for both a leader and its
    /// description to be known (a node that just joined learns members by replaying the log).
    pub async fn leader_member(&self) -> Option<Member> {
        let (mut leader, mut membership) = (self.leader.clone(), self.membership.clone());
        let known = |leader: &watch::Receiver<LeaderState>, membership: &watch::Receiver<Membership>| {
            let id = leader.borrow().leader_id;
            membership.borrow().members.get(&id).filter(|m| !m.url.is_empty()).cloned()
        };
        let wait = async {
            loop {
                if let Some(m) = known(&leader, &membership) {
                    return Some(m);
                }
                tokio::select! {
                    r = leader.changed() => r.ok()?,
                    r = membership.changed() => r.ok()?,
                }
            }
        };
        tokio::time::timeout(ELECTION_WAIT, wait).await.ok().flatten()
    }

    /// Waits up to `ELECTION_WAIT` for a leader to be known; whether one is.
    async fn await_leader(&self) -> bool {
        let mut leader = self.leader.clone();
        matches!(tokio::time::timeout(ELECTION_WAIT, leader.wait_for(|s| s.leader_id != 0)).await, Ok(Ok(_)))
    }

    /// Changes the group's membership and waits until the change is applied; returns the new
    /// configuration as `{"voters": [..], "learners": [..]}`. Only the leader takes changes.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<Value, ProposeError> {
        self.request(|reply| Request::ChangeMembership { change, reply }).await
    }

    /// Sends a request to the driver and waits for its answer, at most `propose_timeout`.
    async fn request(&self, make: impl FnOnce(Reply) -> Request) -> Result<Value, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| ProposeError::Stopped)?;
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout(self.propose_timeout)),
        }
    }

    /// When this node was last in touch with each peer, and with the cluster.
    pub fn contact(&self) -> &crate::Contact {
        &self.contact
    }

    /// Asks the driver to stop; the receiver `start` returned reports when it has, with its
    /// storage closed. Writes after this fail with `Stopped`.
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
    }

    /// Delivers a raft message from a peer. Never blocks; fails only when the driver stopped.
    pub fn step(&self, message: raft::prelude::Message) -> Result<(), ProposeError> {
        self.tx.send(Request::Step(Box::new(message))).map_err(|_| ProposeError::Stopped)
    }

    /// The applied state. Reads are served from this node's replica.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// The applied state, to keep (caches that follow it).
    pub fn shared_store(&self) -> Arc<ObjectStore> {
        self.store.clone()
    }

    pub fn leader(&self) -> watch::Receiver<LeaderState> {
        self.leader.clone()
    }

    /// Hands leadership to voter `to` and waits until it leads (at most the propose timeout).
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), ProposeError> {
        self.request(|reply| Request::TransferLeader { to, reply }).await?;
        let mut leader = self.leader.clone();
        let moved = tokio::time::timeout(self.propose_timeout, leader.wait_for(|s| s.leader_id == to)).await;
        match moved {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout(self.propose_timeout)),
        }
    }

    /// A linearizable read barrier (Raft ReadIndex): returns once this node's replica has
    /// applied every write committed before the call, as confirmed by the leader's quorum.
    /// Reads of the local store after it see at least those writes.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        if self.leader_id() == 0 && !self.await_leader().await {
            return Err(ProposeError::NotLeader);
        }
        self.request(|reply| Request::ReadIndex { reply }).await.map(drop)
    }

    /// The first index still in this node's log: it moves up as the log is compacted.
    pub fn log_first_index(&self) -> u64 {
        raft::Storage::first_index(&self.log).unwrap_or(1)
    }

    /// Changes to the membership, as they are applied.
    pub fn membership_changes(&self) -> watch::Receiver<Membership> {
        self.membership.clone()
    }

    /// The members as this node has applied them (empty on a node still joining).
    pub fn membership(&self) -> Membership {
        self.membership.borrow().clone()
    }

    /// The leader as this node last saw it (0: none known).
    pub fn leader_id(&self) -> u64 {
        self.leader.borrow().leader_id
    }

    pub fn is_leader(&self) -> bool {
        self.leader.borrow().is_leader
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wasmkube_store::{Command, ObjectKey};

    use super::{BATCH_CLOSE, BATCH_OPEN};

    #[test]
    fn joined_encodings_are_the_batch_encoding() {
        let commands = vec![
            Command::Create { object: json!({"kind": "Pod", "metadata": {"name": "a \"quoted\" ü"}}) },
            Command::Delete { key: ObjectKey::new("Pod", Some("default"), "b"), precondition: Some(7) },
        ];
        let mut joined = BATCH_OPEN.to_vec();
        for (i, c) in commands.iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend(serde_json::to_vec(c).expect("encodes"));
        }
        joined.extend_from_slice(BATCH_CLOSE);
        let whole = serde_json::to_vec(&Command::Batch { commands: commands.clone() }).expect("encodes");
        assert_eq!(String::from_utf8_lossy(&joined), String::from_utf8_lossy(&whole));
        let decoded: Command = serde_json::from_slice(&joined).expect("decodes");
        assert_eq!(decoded, Command::Batch { commands });
    }
}
