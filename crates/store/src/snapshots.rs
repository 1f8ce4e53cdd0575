//! Raft snapshots for followers that are too far behind, built off the raft thread.
//!
//! raft-rs asks `Storage::snapshot` from inside its Ready loop. Exporting a store of 10,000
//! objects takes long enough to stall heartbeats, so the first ask starts a build on a thread
//! of its own and answers `SnapshotTemporarilyUnavailable`; raft-rs asks again on a later
//! heartbeat response and then gets the built snapshot. A built snapshot is reused while it
//! is still usable (the log has not been compacted past it) and young, so several lagging
//! followers share one build.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, Snapshot};
use rocksdb::DB;

use crate::{CF_RAFT_LOG, CF_RAFT_STATE, StoreError, cf};

/// A built snapshot older than this is built again rather than sent.
const REUSE_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    Building,
    Built(Snapshot, Instant),
}

/// The one snapshot a node builds or holds at a time.
#[derive(Clone, Default)]
pub(crate) struct SnapshotSlot {
    slot: Arc<Mutex<(Slot, u64)>>,
}

impl SnapshotSlot {
    /// The built snapshot when it covers `request_index` and is not behind the log's `base`;
    /// otherwise starts a build (unless one runs) and returns `None`.
    pub(crate) fn get_or_build(&self, db: &Arc<DB>, request_index: u64, base: u64) -> Option<Snapshot> {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, generation) = &mut *guard;
        let generation = *generation;
        match &*slot {
            Slot::Built(s, at)
                if s.get_metadata().index >= request_index.max(base) && at.elapsed() < REUSE_FOR =>
            {
                return Some(s.clone());
            }
            Slot::Building => return None,
            _ => {}
        }
        *slot = Slot::Building;
        let (db, shared) = (db.clone(), self.slot.clone());
        let spawned = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            let started = Instant::now();
            // A panic in the build must not leave the slot `Building` forever.
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&db)))
                .unwrap_or_else(|_| Err(StoreError::corrupt("snapshot", "the build panicked")));
            let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
            if guard.1 != generation {
                // The membership changed while it was built: it may describe the old one, and
                // the slot now belongs to builds of the new generation.
                return;
            }
            guard.0 = match built {
                Ok(s) => {
                    tracing::info!(
                        index = s.get_metadata().index,
                        bytes = s.data.len(),
                        took = ?started.elapsed(),
                        "built a raft snapshot"
                    );
                    Slot::Built(s, Instant::now())
                }
                Err(e) => {
                    tracing::error!("building a raft snapshot failed: {e}");
                    Slot::Empty
                }
            };
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start a snapshot build: {e}");
            guard.0 = Slot::Empty;
        }
        None
    }

    /// Forgets the built snapshot (and any being built): the membership changed, and a
    /// snapshot must never carry an older one than the log after it assumes (a joiner would
    /// refuse a snapshot that does not list it).
    pub(crate) fn invalidate(&self) {
        let mut guard = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = Slot::Empty;
        guard.1 += 1;
    }
}

/// The state machine, its membership and the term of its applied index, all read from one
/// RocksDB snapshot, so they describe the same moment.
pub(crate) fn build(db: &DB) -> Result<Snapshot, StoreError> {
    let view = db.snapshot();
    let (applied, state) = crate::objects::export_from(db, &view)?;
    let raft_state = cf(db, CF_RAFT_STATE);
    let cs = match view.get_cf(raft_state, crate::raftlog::CONF_STATE)? {
        Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| StoreError::corrupt("conf state", e))?,
        None => ConfState::default(),
    };
    let members = view.get_cf(raft_state, crate::raftlog::MEMBERS)?.unwrap_or_else(|| b"[]".to_vec());
    let members: serde_json::Value = serde_json::from_slice(&members).unwrap_or(serde_json::Value::Null);
    let term = match view.get_cf(cf(db, CF_RAFT_LOG), applied.to_be_bytes())? {
        Some(b) => Entry::parse_from_bytes(&b).map_err(|e| StoreError::corrupt("entry", e))?.term,
        None => match view.get_cf(raft_state, crate::raftlog::SNAPSHOT_BASE)? {
            Some(b) if crate::raftlog::decode_pair(&b)?.0 == applied => crate::raftlog::decode_pair(&b)?.1,
            _ => return Err(StoreError::corrupt("snapshot", format!("no term for applied index {applied}"))),
        },
    };
    let data = serde_json::to_vec(&crate::SnapshotData { state, members })
        .map_err(|e| StoreError::corrupt("snapshot", e))?;
    let mut snapshot = Snapshot { data: data.into(), ..Default::default() };
    let meta = snapshot.mut_metadata();
    meta.index = applied;
    meta.term = term;
    meta.set_conf_state(cs);
    Ok(snapshot)
}
