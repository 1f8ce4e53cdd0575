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
    /// Several commands in one log entry, applied in order and atomically (one write to
    /// disk); each still gets its own revision and watch event, and its own outcome. How many
    /// pods one Raft round can create, bind or report on (not nested).
    Batch { commands: Vec<Command> },
}

impl Command {
    /// The object this command writes (none for a batch, or an object without a name).
    pub fn key(&self) -> Option<ObjectKey> {
        match self {
            Command::Create { object } | Command::Update { object, .. } | Command::RecordEvent { object } => {
                ObjectKey::of(object)
            }
            Command::UpdateStatus { key, .. } | Command::Delete { key, .. } => Some(key.clone()),
            Command::Batch { .. } => None,
        }
    }
}

/// The outcome of each command of an applied `Command::Batch`, in order, from the value the
/// batch answered with.
pub fn batch_outcomes(answer: Value, commands: usize) -> Vec<Result<Value, ApplyError>> {
    let mut items = match answer {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    items.resize(commands, Value::Null);
    items
        .into_iter()
        .map(|mut item| match item {
            // Applied: the new resourceVersion (every node applies a batch; only the proposer
            // builds the answer's object).
            Value::String(rv) => Ok(serde_json::json!({"metadata": {"resourceVersion": rv}})),
            _ => match item.get_mut("error").map(Value::take) {
                Some(error) => Err(serde_json::from_value(error)
                    .unwrap_or_else(|e| ApplyError::Invalid(format!("unreadable outcome: {e}")))),
                None => Err(ApplyError::Invalid("no outcome for this command".into())),
            },
        })
        .collect()
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
    /// A valid object the store's state refuses (a value another object holds exclusively).
    #[error("{0}")]
    Unprocessable(String),
}
