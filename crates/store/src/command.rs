//! The commands carried in Raft log entries and applied to the object store.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ObjectKey;

/// One state-machine write. Everything non-deterministic (uid, timestamps) is decided by the
/// proposer and carried in the object, so every replica applies the same bytes identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create `object`; fails if it exists.
    Create { object: Value },
    /// Replace metadata (labels, annotations) and spec; status is kept. `precondition` is the
    /// resourceVersion the writer read, if it wants optimistic concurrency.
    Update { object: Value, precondition: Option<u64> },
    /// Replace only `status`.
    UpdateStatus { key: ObjectKey, status: Value, precondition: Option<u64> },
    /// Remove the object.
    Delete { key: ObjectKey, precondition: Option<u64> },
    /// Record an Event: created when new; when an event of that name (one per subject and
    /// reason) exists, its `count` grows by the new one's, and `lastTimestamp` and `message`
    /// become the new one's, as Kubernetes aggregates repeated events.
    RecordEvent { object: Value },
}

/// Why a command was not applied. These are the client's answer, not node failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("{0} not found")]
    NotFound(ObjectKey),
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    #[error("{key} was modified: resourceVersion is {actual}, the request expected {expected}")]
    Conflict { key: ObjectKey, expected: u64, actual: u64 },
    #[error("invalid command: {0}")]
    Invalid(String),
}
