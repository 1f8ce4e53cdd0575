//! Durable state for a wasmlet: the Raft log and hard state, the revisioned object store the
//! log is applied to, and the content-addressed blob store for module bytes.
//!
//! Everything lives in one RocksDB instance (column families `raft_log`, `raft_state`,
//! `objects`, `meta`), except blobs, which are plain files named by their sha256 digest.
//! This crate decides how bytes are laid out on disk; it never decides *what* to write:
//! ordering and consensus belong to the raft driver.

mod blobs;
mod command;
mod keys;
mod objects;
mod raftlog;
mod snapshots;
mod watch;

use std::path::Path;
use std::sync::Arc;

pub use blobs::BlobStore;
pub use command::{ApplyError, Command, batch_outcomes};
pub use keys::ObjectKey;
pub use objects::ObjectStore;
pub use raftlog::RaftLog;
pub use watch::{EventType, StoreEvent, Watch, WatchError};

pub(crate) const CF_RAFT_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_STATE: &str = "raft_state";
pub(crate) const CF_OBJECTS: &str = "objects";
pub(crate) const CF_META: &str = "meta";

/// What a Raft snapshot carries: the object store's export and the members' descriptions.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotData {
    pub state: serde_json::Value,
    pub members: serde_json::Value,
}

/// Failures of the storage layer itself; these are fatal for the node, never the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl ToString) -> Self {
        StoreError::Corrupt { what: what.into(), detail: detail.to_string() }
    }
}

/// Installs a Raft snapshot: the state machine and the log boundary, membership and commit
/// index, in one fsynced batch, so a crash leaves either the old replica or the new one.
pub fn install_snapshot(
    log: &RaftLog,
    store: &ObjectStore,
    meta: (u64, u64, raft::prelude::ConfState),
    members: &[u8],
    state: &serde_json::Value,
) -> Result<(), StoreError> {
    let (index, term, cs) = meta;
    let mut batch = rocksdb::WriteBatch::default();
    let (applied, revision) = store.stage_restore(state, &mut batch)?;
    log.apply_snapshot_with(index, term, cs, members, batch)?;
    store.restored(applied, revision);
    Ok(())
}

/// Opens (creating if needed) the node's RocksDB with every column family this crate uses.
pub fn open_db(path: &Path) -> Result<Arc<rocksdb::DB>, StoreError> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Small footprint: this runs on laptops and edge boxes next to the workloads.
    opts.set_max_background_jobs(2);
    opts.set_write_buffer_size(8 << 20);
    // The state machine is written without RocksDB's WAL (the raft log is its log), so its
    // column families must only ever reach disk together: every flush covers them all.
    opts.set_atomic_flush(true);
    let cfs = [CF_RAFT_LOG, CF_RAFT_STATE, CF_OBJECTS, CF_META];
    Ok(Arc::new(rocksdb::DB::open_cf(&opts, path, cfs)?))
}

/// Writes that skip RocksDB's WAL: the state machine's. A crash may lose the newest of them;
/// the node then re-applies those entries from the raft log, which keeps every entry past
/// the last flush (`RaftLog::compact` and `RaftLog::set_membership` flush first).
pub(crate) fn unlogged() -> rocksdb::WriteOptions {
    let mut opts = rocksdb::WriteOptions::default();
    opts.disable_wal(true);
    opts
}

/// Flushes every column family, atomically: the state machine is on disk up to its applied
/// index, together with the raft state that covers it.
pub(crate) fn flush_all(db: &rocksdb::DB) -> Result<(), StoreError> {
    let cfs: Vec<_> = [CF_RAFT_LOG, CF_RAFT_STATE, CF_OBJECTS, CF_META].iter().map(|n| cf(db, n)).collect();
    db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
    Ok(())
}

pub(crate) fn cf<'a>(db: &'a rocksdb::DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every handle is created in `open_db`; a missing one is a programming error.
    db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} was not opened"))
}
