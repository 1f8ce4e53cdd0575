//! The handle the rest of the node uses to read state and propose writes.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, watch};
use wasmkube_store::{ApplyError, Command, ObjectStore};

/// Who leads, as this node last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderState {
    pub leader_id: u64,
    pub term: u64,
    pub is_leader: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
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
}

pub(crate) enum Request {
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Value, ProposeError>>,
    },
    /// A message from a peer.
    Step(Box<raft::prelude::Message>),
}

/// Cheap to clone; every clone talks to the same driver.
#[derive(Clone)]
pub struct ClusterHandle {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) store: Arc<ObjectStore>,
    pub(crate) leader: watch::Receiver<LeaderState>,
    pub(crate) node_id: u64,
    pub(crate) propose_timeout: Duration,
}

impl ClusterHandle {
    /// Proposes `command` and waits until it is committed and applied, returning the object
    /// as the state machine left it.
    pub async fn propose(&self, command: Command) -> Result<Value, ProposeError> {
        let bytes = serde_json::to_vec(&command).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Propose { command: bytes, reply }).map_err(|_| ProposeError::Stopped)?;
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => Err(ProposeError::Timeout(self.propose_timeout)),
        }
    }

    /// Delivers a raft message from a peer. Never blocks; fails only when the driver stopped.
    pub fn step(&self, message: raft::prelude::Message) -> Result<(), ProposeError> {
        self.tx.send(Request::Step(Box::new(message))).map_err(|_| ProposeError::Stopped)
    }

    /// The applied state. Reads are served from this node's replica.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    pub fn leader(&self) -> watch::Receiver<LeaderState> {
        self.leader.clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.borrow().is_leader
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }
}
