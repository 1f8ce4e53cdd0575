//! Raft log and hard state in RocksDB, implementing `raft::Storage`.
//!
//! Entries are keyed by big-endian index in `raft_log`; hard state, conf state and the
//! snapshot boundary live in `raft_state`. Appends are written with `sync = true`: an entry
//! is durable before the node acknowledges it to a peer or counts it toward commit.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{DB, WriteBatch, WriteOptions};

use crate::snapshots::SnapshotSlot;
use crate::{CF_RAFT_LOG, CF_RAFT_STATE, StoreError, cf};

const HARD_STATE: &[u8] = b"hard_state";
pub(crate) const CONF_STATE: &[u8] = b"conf_state";
pub(crate) const MEMBERS: &[u8] = b"members";
/// Index and term of the last entry compacted away (or covered by an installed snapshot).
pub(crate) const SNAPSHOT_BASE: &[u8] = b"snapshot_base";

#[derive(Default)]
struct LogBounds {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first one kept (0 with no compaction).
    base_index: u64,
    base_term: u64,
    last_index: u64,
}

/// Cheap to clone: clones share the database and the cached bounds (raft-rs owns one clone,
/// the driver another).
#[derive(Clone)]
pub struct RaftLog {
    db: Arc<DB>,
    bounds: Arc<RwLock<LogBounds>>,
    snapshots: SnapshotSlot,
}

impl RaftLog {
    pub fn open(db: Arc<DB>) -> Result<Self, StoreError> {
        let state = cf(&db, CF_RAFT_STATE);
        let mut bounds = LogBounds::default();
        if let Some(b) = db.get_cf(state, HARD_STATE)? {
            bounds.hard_state =
                HardState::parse_from_bytes(&b).map_err(|e| StoreError::corrupt("hard state", e))?;
        }
        if let Some(b) = db.get_cf(state, CONF_STATE)? {
            bounds.conf_state =
                ConfState::parse_from_bytes(&b).map_err(|e| StoreError::corrupt("conf state", e))?;
        }
        let log = cf(&db, CF_RAFT_LOG);
        let mut first = db.iterator_cf(log, rocksdb::IteratorMode::Start);
        if let Some(b) = db.get_cf(state, SNAPSHOT_BASE)? {
            let (index, term) = decode_pair(&b)?;
            bounds.base_index = index;
            bounds.base_term = term;
        } else if let Some(item) = first.next() {
            let (_, v) = item?;
            let e = decode_entry(&v)?;
            bounds.base_index = e.index - 1;
        }
        let mut last = db.iterator_cf(log, rocksdb::IteratorMode::End);
        if let Some(item) = last.next() {
            let (_, v) = item?;
            bounds.last_index = decode_entry(&v)?.index;
        }
        bounds.last_index = bounds.last_index.max(bounds.base_index);
        drop((first, last));
        Ok(RaftLog { db, bounds: Arc::new(RwLock::new(bounds)), snapshots: SnapshotSlot::default() })
    }

    /// True once the node has a membership (bootstrapped or joined).
    pub fn is_initialized(&self) -> bool {
        !self.read().conf_state.voters.is_empty()
    }

    /// Persists the membership together with the members' descriptions (opaque bytes owned by
    /// the raft driver: names and addresses), in one fsynced batch. Used at bootstrap and
    /// after every applied conf change.
    ///
    /// The state machine is written without RocksDB's WAL and this is written with it, so the
    /// state machine is flushed first: on disk it is never behind a membership it led to, and
    /// replay after a crash never re-applies an older membership change over a newer one.
    pub fn set_membership(&self, cs: ConfState, members: &[u8]) -> Result<(), StoreError> {
        crate::flush_all(&self.db)?;
        let bytes = cs.write_to_bytes().map_err(|e| StoreError::corrupt("conf state", e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT_STATE), CONF_STATE, bytes);
        batch.put_cf(cf(&self.db, CF_RAFT_STATE), MEMBERS, members);
        self.db.write_opt(batch, &synced())?;
        self.write().conf_state = cs;
        self.snapshots.invalidate();
        Ok(())
    }

    /// The members' descriptions last stored by `set_membership`.
    pub fn members(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(cf(&self.db, CF_RAFT_STATE), MEMBERS)?)
    }

    pub fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    /// Appends `entries` (truncating any conflicting tail) and stores `hard_state`, in one
    /// batch. The batch is fsynced when it holds entries, a term or a vote: what a node has
    /// promised its peers. A commit index alone is not: raft recovers it from the quorum, and
    /// RocksDB's log is written in order, so whatever was applied after it (also unsynced)
    /// can never survive a crash that loses it.
    pub fn append(&self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<(), StoreError> {
        let mut bounds = self.write();
        let promise = !entries.is_empty()
            || hard_state
                .is_some_and(|hs| hs.term != bounds.hard_state.term || hs.vote != bounds.hard_state.vote);
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_RAFT_LOG);
        for e in entries {
            let bytes = e.write_to_bytes().map_err(|err| StoreError::corrupt("entry", err))?;
            batch.put_cf(log, e.index.to_be_bytes(), bytes);
        }
        let new_last = entries.last().map(|e| e.index);
        if let Some(new_last) = new_last
            && new_last < bounds.last_index
        {
            batch.delete_range_cf(log, (new_last + 1).to_be_bytes(), (bounds.last_index + 1).to_be_bytes());
        }
        if let Some(hs) = hard_state {
            let bytes = hs.write_to_bytes().map_err(|e| StoreError::corrupt("hard state", e))?;
            batch.put_cf(cf(&self.db, CF_RAFT_STATE), HARD_STATE, bytes);
        }
        let options = if promise { synced() } else { WriteOptions::default() };
        self.db.write_opt(batch, &options)?;
        if let Some(new_last) = new_last {
            bounds.last_index = new_last;
        }
        if let Some(hs) = hard_state {
            bounds.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Drops the entries up to and including `upto` (which must be applied): the log no longer
    /// grows without bound. A follower that needs them gets a snapshot instead.
    ///
    /// The state machine is written without RocksDB's WAL, so it is flushed first: no entry
    /// leaves the log before what it did is on disk.
    pub fn compact(&self, upto: u64) -> Result<(), StoreError> {
        use raft::Storage as _;
        let (base, last) = {
            let b = self.read();
            (b.base_index, b.last_index)
        };
        if upto <= base || upto > last {
            return Ok(());
        }
        let term = self.term(upto).map_err(|e| StoreError::corrupt("raft log", e))?;
        crate::flush_all(&self.db)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_RAFT_LOG), (base + 1).to_be_bytes(), (upto + 1).to_be_bytes());
        batch.put_cf(cf(&self.db, CF_RAFT_STATE), SNAPSHOT_BASE, encode_pair(upto, term));
        self.db.write_opt(batch, &synced())?;
        let mut b = self.write();
        b.base_index = upto;
        b.base_term = term;
        Ok(())
    }

    /// Replaces the log with a snapshot's boundary: every entry is dropped, the membership and
    /// commit index come from the snapshot. One fsynced batch.
    pub fn apply_snapshot(
        &self,
        index: u64,
        term: u64,
        cs: ConfState,
        members: &[u8],
    ) -> Result<(), StoreError> {
        self.apply_snapshot_with(index, term, cs, members, WriteBatch::default())
    }

    /// `apply_snapshot`, writing `batch` (the state machine's part) in the same fsynced batch.
    pub(crate) fn apply_snapshot_with(
        &self,
        index: u64,
        term: u64,
        cs: ConfState,
        members: &[u8],
        mut batch: WriteBatch,
    ) -> Result<(), StoreError> {
        let mut hs = self.read().hard_state.clone();
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        let state = cf(&self.db, CF_RAFT_STATE);
        batch.delete_range_cf(cf(&self.db, CF_RAFT_LOG), 0u64.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.put_cf(state, SNAPSHOT_BASE, encode_pair(index, term));
        batch.put_cf(
            state,
            CONF_STATE,
            cs.write_to_bytes().map_err(|e| StoreError::corrupt("conf state", e))?,
        );
        batch.put_cf(state, MEMBERS, members);
        batch.put_cf(
            state,
            HARD_STATE,
            hs.write_to_bytes().map_err(|e| StoreError::corrupt("hard state", e))?,
        );
        self.db.write_opt(batch, &synced())?;
        let mut b = self.write();
        b.base_index = index;
        b.base_term = term;
        b.last_index = index;
        b.conf_state = cs;
        b.hard_state = hs;
        Ok(())
    }

    /// Stores a new commit index (hard state), not fsynced: see `append`.
    pub fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.read().hard_state.clone();
        if hs.commit >= commit {
            return Ok(());
        }
        hs.commit = commit;
        self.append(&[], Some(&hs))
    }

    fn read(&self) -> RwLockReadGuard<'_, LogBounds> {
        self.bounds.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, LogBounds> {
        self.bounds.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = a.to_be_bytes().to_vec();
    out.extend_from_slice(&b.to_be_bytes());
    out
}

pub(crate) fn decode_pair(bytes: &[u8]) -> Result<(u64, u64), StoreError> {
    let pair: [u8; 16] =
        bytes.try_into().map_err(|_| StoreError::corrupt("snapshot base", "not 16 bytes"))?;
    let (a, b) = pair.split_at(8);
    Ok((
        u64::from_be_bytes(a.try_into().unwrap_or_default()),
        u64::from_be_bytes(b.try_into().unwrap_or_default()),
    ))
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    Entry::parse_from_bytes(bytes).map_err(|e| StoreError::corrupt("entry", e))
}

fn storage_error(e: StoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let b = self.read();
        Ok(RaftState::new(b.hard_state.clone(), b.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (base, last) = {
            let b = self.read();
            (b.base_index, b.last_index)
        };
        if low <= base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let log = cf(&self.db, CF_RAFT_LOG);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let iter = self
            .db
            .iterator_cf(log, rocksdb::IteratorMode::From(&low.to_be_bytes(), rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(|e| storage_error(e.into()))?;
            let idx = u64::from_be_bytes(
                k.as_ref().try_into().map_err(|_| raft::Error::Store(StorageError::Unavailable))?,
            );
            if idx >= high {
                break;
            }
            size += v.len() as u64;
            // raft-rs expects at least one entry even when it alone exceeds max_size.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(decode_entry(&v).map_err(storage_error)?);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (base, base_term, last) = {
            let b = self.read();
            (b.base_index, b.base_term, b.last_index)
        };
        if idx == base {
            return Ok(base_term);
        }
        if idx < base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        match self.db.get_cf(cf(&self.db, CF_RAFT_LOG), idx.to_be_bytes()) {
            Ok(Some(v)) => Ok(decode_entry(&v).map_err(storage_error)?.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(storage_error(e.into())),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().base_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        let b = self.read();
        Ok(b.last_index.max(b.base_index))
    }

    /// The state machine as of its applied index, with the membership: what a follower that
    /// is too far behind (or new) installs instead of replaying compacted entries. Built on a
    /// thread of its own (see `snapshots`): until it is ready raft-rs is told to ask again.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let base = self.read().base_index;
        self.snapshots
            .get_or_build(&self.db, request_index, base)
            .ok_or(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("e{index}").into_bytes().into(), ..Default::default() }
    }

    #[test]
    fn append_truncate_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::open_db(dir.path()).expect("db");
        let log = RaftLog::open(db.clone()).expect("log");
        assert!(!log.is_initialized());
        log.set_membership(ConfState { voters: vec![1], ..Default::default() }, b"[]").expect("cs");
        let hs = HardState { term: 2, vote: 1, commit: 2, ..Default::default() };
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], Some(&hs)).expect("append");
        // A new leader overwrites index 3 onwards.
        log.append(&[entry(3, 2)], None).expect("append");
        assert_eq!(log.last_index().expect("last"), 3);
        assert_eq!(log.term(3).expect("term"), 2);
        let got = log.entries(1, 4, None, GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 1), (2, 1), (3, 2)]);
        assert_eq!(log.entries(1, 4, 1, GetEntriesContext::empty(false)).expect("entries").len(), 1);
        assert!(log.entries(1, 5, None, GetEntriesContext::empty(false)).is_err());
        drop(log);
        drop(db);

        let db = crate::open_db(dir.path()).expect("db");
        let log = RaftLog::open(db).expect("log");
        let state = log.initial_state().expect("state");
        assert_eq!(state.hard_state.term, 2);
        assert_eq!(state.hard_state.commit, 2);
        assert_eq!(state.conf_state.voters, vec![1]);
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (1, 3));
    }

    #[test]
    fn compaction_keeps_the_boundary_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::open_db(dir.path()).expect("db");
        let log = RaftLog::open(db.clone()).expect("log");
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, if i <= 5 { 1 } else { 2 })).collect();
        log.append(&entries, None).expect("append");
        log.compact(6).expect("compact");
        assert_eq!(log.first_index().expect("first"), 7);
        assert_eq!(log.term(6).expect("the boundary keeps its term"), 2);
        assert!(matches!(log.term(5), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(log.entries(5, 8, None, GetEntriesContext::empty(false)).is_err());
        assert_eq!(log.entries(7, 11, None, GetEntriesContext::empty(false)).expect("kept").len(), 4);
        drop(log);
        drop(db);
        let log = RaftLog::open(crate::open_db(dir.path()).expect("db")).expect("reopen");
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (7, 10));
        assert_eq!(log.term(6).expect("term"), 2);

        log.apply_snapshot(20, 3, ConfState { voters: vec![1, 2], ..Default::default() }, b"[]")
            .expect("install");
        assert_eq!((log.first_index().expect("first"), log.last_index().expect("last")), (21, 20));
        assert_eq!(log.term(20).expect("term"), 3);
        assert_eq!(log.initial_state().expect("state").hard_state.commit, 20);
    }
}
