//! Change notification: a bounded history of applied changes plus a broadcast of new ones,
//! so a watcher can resume from a resourceVersion after a reconnect (like etcd's watch cache).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::ObjectKey;

/// How many past changes are kept for resuming watches.
const HISTORY: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// The whole store was replaced by a Raft snapshot: watchers must list again.
    Restored,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Restored => "RESTORED",
        }
    }
}

/// One applied change: the object as it is after the change (for deletes, as it was, with the
/// deletion's resourceVersion).
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub revision: u64,
    pub type_: EventType,
    pub key: ObjectKey,
    pub object: Value,
}

impl StoreEvent {
    /// Whether a follower of `kinds` must look again after this event: it changed one of them,
    /// or replaced the whole store (a snapshot was installed).
    pub fn concerns(&self, kinds: &[&str]) -> bool {
        self.type_ == EventType::Restored || kinds.contains(&self.key.kind.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WatchError {
    /// The requested revision is older than the history kept: list again, then watch.
    #[error("resourceVersion {requested} is too old; the oldest watchable is {oldest}")]
    Gone { requested: u64, oldest: u64 },
    /// The watcher fell too far behind the broadcast and must list again.
    #[error("watch fell behind by {0} events")]
    Lagged(u64),
    /// The store could not be read to start the watch.
    #[error("reading the store: {0}")]
    Store(String),
}

type Subscription = broadcast::Receiver<Arc<StoreEvent>>;

pub(crate) struct WatchHub {
    history: VecDeque<Arc<StoreEvent>>,
    /// Events after this revision are all in `history` (or yet to come).
    oldest_resumable: u64,
    tx: broadcast::Sender<Arc<StoreEvent>>,
}

impl WatchHub {
    pub(crate) fn new(current_revision: u64) -> Self {
        let (tx, _) = broadcast::channel(4096);
        WatchHub { history: VecDeque::new(), oldest_resumable: current_revision, tx }
    }

    pub(crate) fn publish(&mut self, event: StoreEvent) {
        let event = Arc::new(event);
        if self.history.len() == HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.oldest_resumable = old.revision;
        }
        self.history.push_back(event.clone());
        // No receivers is normal: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Subscribes, returning the past events after `since` that match `filter`.
    pub(crate) fn subscribe(
        &self,
        since: u64,
        filter: &WatchFilter,
    ) -> Result<(Vec<Arc<StoreEvent>>, Subscription), WatchError> {
        if since < self.oldest_resumable {
            return Err(WatchError::Gone { requested: since, oldest: self.oldest_resumable });
        }
        let past =
            self.history.iter().filter(|e| e.revision > since && filter.matches(&e.key)).cloned().collect();
        Ok((past, self.tx.subscribe()))
    }

    /// Forgets the history (nothing before `revision` can be resumed) and tells every
    /// subscriber the store was replaced.
    pub(crate) fn reset(&mut self, revision: u64, key: ObjectKey) {
        self.history.clear();
        self.oldest_resumable = revision;
        let _ = self.tx.send(Arc::new(StoreEvent {
            revision,
            type_: EventType::Restored,
            key,
            object: Value::Null,
        }));
    }

    pub(crate) fn subscribe_all(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.tx.subscribe()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct WatchFilter {
    pub kind: String,
    pub namespace: Option<String>,
}

impl WatchFilter {
    fn matches(&self, key: &ObjectKey) -> bool {
        key.kind == self.kind && self.namespace.as_deref().is_none_or(|ns| key.namespace == ns)
    }
}

/// A stream of changes to one kind (optionally one namespace).
pub struct Watch {
    pending: VecDeque<Arc<StoreEvent>>,
    rx: broadcast::Receiver<Arc<StoreEvent>>,
    filter: WatchFilter,
    /// Events at or below this revision were already delivered (in `pending`).
    delivered_up_to: u64,
}

impl Watch {
    pub(crate) fn new(
        pending: Vec<Arc<StoreEvent>>,
        rx: broadcast::Receiver<Arc<StoreEvent>>,
        filter: WatchFilter,
        delivered_up_to: u64,
    ) -> Self {
        Watch { pending: pending.into(), rx, filter, delivered_up_to }
    }

    /// The next matching change; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<Result<Arc<StoreEvent>, WatchError>> {
        if let Some(e) = self.pending.pop_front() {
            return Some(Ok(e));
        }
        loop {
            match self.rx.recv().await {
                Ok(e) if e.type_ == EventType::Restored => {
                    return Some(Err(WatchError::Gone {
                        requested: self.delivered_up_to,
                        oldest: e.revision,
                    }));
                }
                Ok(e) if e.revision > self.delivered_up_to && self.filter.matches(&e.key) => {
                    self.delivered_up_to = e.revision;
                    return Some(Ok(e));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Err(WatchError::Lagged(n))),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
