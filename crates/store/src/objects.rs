//! The revisioned object store: the Raft state machine.
//!
//! Like etcd's mvcc, every successful write bumps one global revision, and the object's
//! `metadata.resourceVersion` becomes that revision. Each applied log entry is written in
//! one RocksDB batch together with the applied index and the revision, so a crash leaves
//! the state machine at an entry boundary and replay resumes from `applied_index + 1`.
//! Those batches skip RocksDB's WAL (the raft log already holds every entry): a crash loses
//! at most the entries applied since the last flush, and they are applied again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{DB, IteratorMode, WriteBatch};
use serde_json::Value;

use crate::watch::{WatchFilter, WatchHub};
use crate::{
    ApplyError, CF_META, CF_OBJECTS, Command, EventType, ObjectKey, StoreError, StoreEvent, Watch,
    WatchError, cf, unlogged,
};

const META_REVISION: &[u8] = b"revision";
const META_APPLIED: &[u8] = b"applied_index";

pub struct ObjectStore {
    db: Arc<DB>,
    /// Held while a change is written *and* published, and while a watcher subscribes, so a
    /// watcher never misses or doubles a change.
    hub: Mutex<WatchHub>,
    revision: AtomicU64,
    applied_index: AtomicU64,
    /// Bytes of every stored object's encoding, kept as objects change (the quota's measure).
    bytes: AtomicU64,
    /// Rings once per applied entry whose changes were published (a wake-up for caches that
    /// read the change stream themselves, without a message per change).
    published: tokio::sync::watch::Sender<u64>,
}

impl ObjectStore {
    pub fn open(db: Arc<DB>) -> Result<Self, StoreError> {
        let revision = read_u64(&db, META_REVISION)?;
        let applied_index = read_u64(&db, META_APPLIED)?;
        let bytes = AtomicU64::new(stored_bytes(&db)?);
        Ok(ObjectStore {
            db,
            hub: Mutex::new(WatchHub::new(revision)),
            revision: AtomicU64::new(revision),
            applied_index: AtomicU64::new(applied_index),
            bytes,
            published: tokio::sync::watch::Sender::new(revision),
        })
    }

    /// How many bytes the stored objects take (their encodings, summed).
    pub fn size(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// The global revision: the resourceVersion of the newest change.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Index of the last Raft entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        Ok(self.get_sized(key)?.map(|(value, _)| value))
    }

    /// The object at `key` and the size of its encoding.
    fn get_sized(&self, key: &ObjectKey) -> Result<Option<(Value, usize)>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_OBJECTS), key.encode())? {
            Some(bytes) => Ok(Some((decode(&bytes)?, bytes.len()))),
            None => Ok(None),
        }
    }

    /// Every object of `kind` (in `namespace`, if given), with the revision they were read at.
    pub fn list(&self, kind: &str, namespace: Option<&str>) -> Result<(Vec<Value>, u64), StoreError> {
        let snapshot = self.db.snapshot();
        let revision = match snapshot.get_cf(cf(&self.db, CF_META), META_REVISION)? {
            Some(b) => decode_u64(&b)?,
            None => 0,
        };
        let prefix = ObjectKey::prefix(kind, namespace);
        let mut items = Vec::new();
        let iter = snapshot
            .iterator_cf(cf(&self.db, CF_OBJECTS), IteratorMode::From(&prefix, rocksdb::Direction::Forward));
        for entry in iter {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            items.push(decode(&v)?);
        }
        Ok((items, revision))
    }

    /// Watches `kind` (in `namespace`) from `since`, or — when `since` is `None` — from now,
    /// starting with an ADDED event per existing object, as Kubernetes does.
    pub fn watch(
        &self,
        kind: &str,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<Watch, WatchError> {
        let filter = WatchFilter { kind: kind.to_string(), namespace: namespace.map(str::to_string) };
        let hub = self.lock_hub();
        match since {
            Some(since) => {
                let (past, rx) = hub.subscribe(since, &filter)?;
                let up_to = past.last().map_or(since, |e| e.revision);
                Ok(Watch::new(past, rx, filter, up_to))
            }
            None => {
                let current = self.revision();
                let (_, rx) = hub.subscribe(current, &filter)?;
                // The hub lock is held, so no change can land between this list and the subscribe.
                let (items, _) = self.list(kind, namespace).map_err(|e| WatchError::Store(e.to_string()))?;
                let added = items
                    .into_iter()
                    .filter_map(|object| {
                        let key = ObjectKey::of(&object)?;
                        let revision = revision_of(&object);
                        Some(Arc::new(StoreEvent { revision, type_: EventType::Added, key, object }))
                    })
                    .collect();
                Ok(Watch::new(added, rx, filter, current))
            }
        }
    }

    /// Changes when an applied entry's changes have been published on `subscribe_all`'s
    /// stream (once per entry, however many changes it held).
    pub fn published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// A receiver of every change to every kind: a wake-up signal for controllers and caches.
    pub fn subscribe_all(&self) -> tokio::sync::broadcast::Receiver<Arc<StoreEvent>> {
        self.lock_hub().subscribe_all()
    }

    /// Stages, in `batch`, the replacement of everything with a snapshot's `state` (from
    /// `export` on the leader): objects, revision and applied index. Returns (applied,
    /// revision) for `restored`, to be called once the batch is written.
    pub(crate) fn stage_restore(
        &self,
        state: &Value,
        batch: &mut WriteBatch,
    ) -> Result<(u64, u64), StoreError> {
        let applied = state["appliedIndex"]
            .as_u64()
            .ok_or_else(|| StoreError::corrupt("snapshot", "no appliedIndex"))?;
        let revision =
            state["revision"].as_u64().ok_or_else(|| StoreError::corrupt("snapshot", "no revision"))?;
        let objects =
            state["objects"].as_array().ok_or_else(|| StoreError::corrupt("snapshot", "no objects"))?;
        let cf_objects = cf(&self.db, CF_OBJECTS);
        batch.delete_range_cf(cf_objects, [0u8].as_slice(), [0xffu8; 8].as_slice());
        for object in objects {
            let key = ObjectKey::of(object)
                .ok_or_else(|| StoreError::corrupt("snapshot", "an object without a key"))?;
            batch.put_cf(cf_objects, key.encode(), encode(object)?);
        }
        let meta = cf(&self.db, CF_META);
        batch.put_cf(meta, META_REVISION, revision.to_be_bytes());
        batch.put_cf(meta, META_APPLIED, applied.to_be_bytes());
        Ok((applied, revision))
    }

    /// After a staged restore is written: the new revision and applied index take effect and
    /// watchers are told to list again.
    pub(crate) fn restored(&self, applied: u64, revision: u64) {
        let mut hub = self.lock_hub();
        match stored_bytes(&self.db) {
            Ok(bytes) => self.bytes.store(bytes, Ordering::Release),
            Err(e) => tracing::error!("cannot measure the restored store: {e}"),
        }
        self.revision.store(revision, Ordering::Release);
        self.applied_index.store(applied, Ordering::Release);
        hub.reset(revision, ObjectKey::new("", None, ""));
        self.published.send_replace(revision);
    }

    /// Replaces everything with a snapshot's `state`, on its own (tests; the raft driver
    /// installs snapshots with `install_snapshot`, atomically with the log).
    pub fn restore(&self, state: &Value) -> Result<u64, StoreError> {
        let mut batch = WriteBatch::default();
        let (applied, revision) = self.stage_restore(state, &mut batch)?;
        self.db.write(batch)?;
        self.restored(applied, revision);
        Ok(applied)
    }

    /// Records that entry `index` carried no command (an empty or configuration entry).
    pub fn skip(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META), META_APPLIED, index.to_be_bytes());
        self.db.write_opt(batch, &unlogged())?;
        self.applied_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Applies the command of log entry `index`. The outer error is a node failure; the inner
    /// one is the answer to the client (conflict, not found, …) and still consumes the entry.
    pub fn apply(&self, index: u64, command: Command) -> Result<Result<Value, ApplyError>, StoreError> {
        let command = match command {
            Command::Batch { commands } => return self.apply_batch(index, commands).map(Ok),
            single => single,
        };
        let mut hub = self.lock_hub();
        let revision = self.revision() + 1;
        let outcome = match self.plan(command, revision, &HashMap::new())? {
            Ok(change) => change,
            Err(e) => {
                self.skip(index)?;
                return Ok(Err(e));
            }
        };
        let (outcome, old_len) = outcome;
        let mut batch = WriteBatch::default();
        let objects = cf(&self.db, CF_OBJECTS);
        let new_len = match outcome.type_ {
            EventType::Deleted => {
                batch.delete_cf(objects, outcome.key.encode());
                0
            }
            _ => {
                let bytes = encode(&outcome.object)?;
                let len = bytes.len();
                batch.put_cf(objects, outcome.key.encode(), bytes);
                len
            }
        };
        self.commit(batch, revision, index)?;
        self.resize(old_len, new_len);
        let result = outcome.object.clone();
        hub.publish(outcome);
        self.published.send_replace(revision);
        Ok(Ok(result))
    }

    /// Applies the commands of a batch entry in order, in one write: a later command sees
    /// what an earlier one did. Answers with each command's outcome, `{"object": {"metadata":
    /// {"resourceVersion"}}}` or `{"error": …}` (see `batch_outcomes`); a refused command does
    /// not stop the others.
    fn apply_batch(&self, index: u64, commands: Vec<Command>) -> Result<Value, StoreError> {
        let mut hub = self.lock_hub();
        let mut revision = self.revision();
        // Only keys that more than one command touches need what an earlier one wrote. (Told
        // apart by a hash of the key's parts, read in place: a collision only keeps a copy
        // that was not needed.)
        let mut seen: HashMap<u64, u32> = HashMap::with_capacity(commands.len());
        for command in &commands {
            *seen.entry(key_hash(command)).or_insert(0) += 1;
        }
        let mut overlay: HashMap<ObjectKey, Option<(Value, usize)>> = HashMap::new();
        let (mut freed, mut taken) = (0usize, 0usize);
        let mut batch = WriteBatch::default();
        let objects = cf(&self.db, CF_OBJECTS);
        let (mut events, mut answers) =
            (Vec::with_capacity(commands.len()), Vec::with_capacity(commands.len()));
        for command in commands {
            let planned = match command {
                Command::Batch { .. } => Err(ApplyError::Invalid("a batch cannot hold a batch".into())),
                single => self.plan(single, revision + 1, &overlay)?,
            };
            match planned {
                Ok((outcome, old_len)) => {
                    revision += 1;
                    freed += old_len;
                    // And every object of a kind with exclusive fields: a later command of the
                    // batch checks its values against them.
                    let shared = seen
                        .get(&hash_of(&outcome.key.kind, &outcome.key.namespace, &outcome.key.name))
                        .is_some_and(|n| *n > 1)
                        || EXCLUSIVE.iter().any(|rule| rule.kind == outcome.key.kind);
                    match outcome.type_ {
                        EventType::Deleted => {
                            batch.delete_cf(objects, outcome.key.encode());
                            if shared {
                                overlay.insert(outcome.key.clone(), None);
                            }
                        }
                        _ => {
                            let bytes = encode(&outcome.object)?;
                            taken += bytes.len();
                            if shared {
                                overlay
                                    .insert(outcome.key.clone(), Some((outcome.object.clone(), bytes.len())));
                            }
                            batch.put_cf(objects, outcome.key.encode(), bytes);
                        }
                    }
                    // Every node applies the batch and only the proposer reads the answer:
                    // the new resourceVersion, not a copy of the object.
                    answers.push(Value::String(revision.to_string()));
                    events.push(outcome);
                }
                Err(e) => answers.push(serde_json::json!({"error": e})),
            }
        }
        self.commit(batch, revision, index)?;
        self.resize(freed, taken);
        for event in events {
            hub.publish(event);
        }
        self.published.send_replace(revision);
        Ok(Value::Array(answers))
    }

    /// Writes `batch` with the new revision and applied index (one write: an entry is applied
    /// whole or not at all), then makes them visible.
    fn commit(&self, mut batch: WriteBatch, revision: u64, index: u64) -> Result<(), StoreError> {
        let meta = cf(&self.db, CF_META);
        batch.put_cf(meta, META_REVISION, revision.to_be_bytes());
        batch.put_cf(meta, META_APPLIED, index.to_be_bytes());
        self.db.write_opt(batch, &unlogged())?;
        self.revision.store(revision, Ordering::Release);
        self.applied_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Decides what `command` changes, without writing anything; `overlay` holds what earlier
    /// commands of the same batch did (`None`: deleted).
    fn plan(
        &self,
        command: Command,
        revision: u64,
        overlay: &HashMap<ObjectKey, Option<(Value, usize)>>,
    ) -> Result<Result<(StoreEvent, usize), ApplyError>, StoreError> {
        let get = |key: &ObjectKey| -> Result<Option<(Value, usize)>, StoreError> {
            match overlay.get(key) {
                Some(value) => Ok(value.clone()),
                None => self.get_sized(key),
            }
        };
        let invalid = |m: &str| Ok(Err(ApplyError::Invalid(m.to_string())));
        let (key, current) = match &command {
            Command::Create { object } | Command::Update { object, .. } | Command::RecordEvent { object } => {
                match ObjectKey::of(object) {
                    Some(key) => {
                        let current = get(&key)?;
                        (key, current)
                    }
                    None => return invalid("object has no kind or metadata.name"),
                }
            }
            Command::UpdateStatus { key, .. } | Command::Delete { key, .. } => (key.clone(), get(key)?),
            Command::Batch { .. } => return invalid("a batch cannot hold a batch"),
        };
        let (current, old_len) = match current {
            Some((value, len)) => (Some(value), len),
            None => (None, 0),
        };
        let precondition = match &command {
            Command::Update { precondition, .. }
            | Command::UpdateStatus { precondition, .. }
            | Command::Delete { precondition, .. } => *precondition,
            Command::Create { .. } | Command::RecordEvent { .. } | Command::Batch { .. } => None,
        };
        if let (Some(expected), Some(cur)) = (precondition, &current) {
            let actual = revision_of(cur);
            if actual != expected {
                return Ok(Err(ApplyError::Conflict { key, expected, actual }));
            }
        }
        let (type_, mut object) = match (command, current) {
            (Command::Create { .. }, Some(_)) => return Ok(Err(ApplyError::AlreadyExists(key))),
            (Command::Create { object } | Command::RecordEvent { object }, None) => {
                (EventType::Added, created(object))
            }
            (Command::RecordEvent { object }, Some(cur)) => (EventType::Modified, recurred(cur, &object)),
            (_, None) => return Ok(Err(ApplyError::NotFound(key))),
            (Command::Update { object, .. }, Some(cur)) => (EventType::Modified, updated(cur, object)),
            (Command::UpdateStatus { status, .. }, Some(mut cur)) => {
                cur["status"] = status;
                (EventType::Modified, cur)
            }
            (Command::Delete { .. }, Some(cur)) => (EventType::Deleted, cur),
            (Command::Batch { .. }, Some(_)) => return invalid("a batch cannot hold a batch"),
        };
        if type_ != EventType::Deleted
            && let Some(refused) = self.claimed_elsewhere(&key, &object, overlay)?
        {
            return Ok(Err(refused));
        }
        object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
        Ok(Ok((StoreEvent { revision, type_, key, object }, old_len)))
    }

    /// Whether `object` (to be stored at `key`) holds a value of an `EXCLUSIVE` field that
    /// another object of its kind holds, as stored or as an earlier command of the batch
    /// (`overlay`) left it.
    fn claimed_elsewhere(
        &self,
        key: &ObjectKey,
        object: &Value,
        overlay: &HashMap<ObjectKey, Option<(Value, usize)>>,
    ) -> Result<Option<ApplyError>, StoreError> {
        for rule in EXCLUSIVE.iter().filter(|r| r.kind == key.kind) {
            let wanted = rule.values(object);
            if wanted.is_empty() {
                continue;
            }
            // In key order, so every replica names the same holder.
            let mut overlaid: Vec<(&ObjectKey, &Value)> = overlay
                .iter()
                .filter(|(k, _)| k.kind == key.kind && *k != key)
                .filter_map(|(k, v)| v.as_ref().map(|(v, _)| (k, v)))
                .collect();
            overlaid.sort_by_key(|(k, _)| k.encode());
            let mut others: Vec<Value> = overlaid.into_iter().map(|(_, v)| v.clone()).collect();
            let prefix = ObjectKey::prefix(&key.kind, None);
            let iter = self.db.iterator_cf(
                cf(&self.db, CF_OBJECTS),
                IteratorMode::From(&prefix, rocksdb::Direction::Forward),
            );
            for entry in iter {
                let (k, v) = entry?;
                if !k.starts_with(&prefix) {
                    break;
                }
                if *k == *key.encode() {
                    continue;
                }
                let other = decode(&v)?;
                if ObjectKey::of(&other).is_some_and(|k| overlay.contains_key(&k)) {
                    continue;
                }
                others.push(other);
            }
            for other in &others {
                let held = rule.values(other);
                if let Some((index, value)) = wanted.iter().find(|(_, v)| held.iter().any(|(_, h)| h == v)) {
                    let holder = ObjectKey::of(other).map(|k| k.to_string()).unwrap_or_default();
                    return Ok(Some(ApplyError::Unprocessable(format!(
                        "{} {:?} is invalid: {}[{index}].{}: Invalid value: {value}: {} (by {holder})",
                        key.kind, key.name, rule.list_field, rule.field, rule.taken
                    ))));
                }
            }
        }
        Ok(None)
    }

    /// Accounts for objects of `freed` bytes replaced or removed by ones of `taken` bytes.
    fn resize(&self, freed: usize, taken: usize) {
        let (freed, taken) = (freed as u64, taken as u64);
        let _ = self.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            Some(b.saturating_add(taken).saturating_sub(freed))
        });
    }

    fn lock_hub(&self) -> MutexGuard<'_, WatchHub> {
        // A panic while holding the hub cannot leave it half-updated in a way that matters more
        // than losing the node; recover the guard rather than cascading the panic.
        self.hub.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A field whose values no two objects of a kind (in any namespace) may share, checked as an
/// object is applied, so that of two writers racing for one value only the first wins — as
/// Kubernetes' allocator of Service nodePorts.
struct Exclusive {
    kind: &'static str,
    /// The list holding the field (a JSON pointer) and its name in messages.
    list: &'static str,
    list_field: &'static str,
    field: &'static str,
    taken: &'static str,
}

const EXCLUSIVE: &[Exclusive] = &[Exclusive {
    kind: "Service",
    list: "/spec/ports",
    list_field: "spec.ports",
    field: "nodePort",
    taken: "provided port is already allocated",
}];

impl Exclusive {
    /// The field's values in `object`, with their index in the list.
    fn values(&self, object: &Value) -> Vec<(usize, Value)> {
        let Some(items) = object.pointer(self.list).and_then(Value::as_array) else { return Vec::new() };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.get(self.field).filter(|v| !v.is_null()).map(|v| (i, v.clone())))
            .collect()
    }
}

/// A hash of the key `command` writes, read from the command in place.
fn key_hash(command: &Command) -> u64 {
    match command {
        Command::Create { object } | Command::Update { object, .. } | Command::RecordEvent { object } => {
            let meta = &object["metadata"];
            hash_of(
                object["kind"].as_str().unwrap_or(""),
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or(""),
            )
        }
        Command::UpdateStatus { key, .. } | Command::Delete { key, .. } => {
            hash_of(&key.kind, &key.namespace, &key.name)
        }
        Command::Batch { .. } => 0,
    }
}

fn hash_of(kind: &str, namespace: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (kind, namespace, name).hash(&mut h);
    h.finish()
}

/// Bytes of every stored object's encoding (a pass over the objects, on open and restore).
fn stored_bytes(db: &DB) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for item in db.iterator_cf(cf(db, CF_OBJECTS), IteratorMode::Start) {
        let (_, v) = item?;
        total = total.saturating_add(v.len() as u64);
    }
    Ok(total)
}

/// The whole state machine, read from one RocksDB snapshot: `(applied index, state)` where
/// state is `{"appliedIndex", "revision", "objects": [...]}`.
#[cfg(test)]
pub(crate) fn export(db: &DB) -> Result<(u64, Value), StoreError> {
    export_from(db, &db.snapshot())
}

/// `export`, as of the RocksDB snapshot `view` (which the caller may read more from).
pub(crate) fn export_from(db: &DB, view: &rocksdb::Snapshot<'_>) -> Result<(u64, Value), StoreError> {
    let meta = cf(db, CF_META);
    let read = |key: &[u8]| -> Result<u64, StoreError> {
        match view.get_cf(meta, key)? {
            Some(b) => decode_u64(&b),
            None => Ok(0),
        }
    };
    let (applied, revision) = (read(META_APPLIED)?, read(META_REVISION)?);
    let mut objects = Vec::new();
    for item in view.iterator_cf(cf(db, CF_OBJECTS), IteratorMode::Start) {
        let (_, v) = item?;
        objects.push(decode(&v)?);
    }
    Ok((applied, serde_json::json!({"appliedIndex": applied, "revision": revision, "objects": objects})))
}

/// An event that happened again: one more occurrence (or as many as `again` counts) on the
/// stored one, which keeps its identity and first timestamp.
fn recurred(mut current: Value, again: &Value) -> Value {
    let count = current["count"].as_u64().unwrap_or(1) + again["count"].as_u64().unwrap_or(1).max(1);
    current["count"] = Value::from(count);
    for field in ["lastTimestamp", "message"] {
        if let Some(v) = again.get(field) {
            current[field] = v.clone();
        }
    }
    current
}

fn created(mut object: Value) -> Value {
    if object["metadata"].get("generation").is_none() {
        object["metadata"]["generation"] = Value::from(1);
    }
    object
}

/// An update replaces labels, annotations, owners and spec; identity, creation time and status
/// are kept from the stored object; generation moves when the spec changes.
fn updated(current: Value, incoming: Value) -> Value {
    let spec_changed = current.get("spec") != incoming.get("spec");
    let mut next = incoming;
    for field in ["uid", "creationTimestamp"] {
        match current["metadata"].get(field) {
            Some(v) => next["metadata"][field] = v.clone(),
            None => remove(&mut next["metadata"], field),
        }
    }
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    next["metadata"]["generation"] = Value::from(if spec_changed { generation + 1 } else { generation });
    match current.get("status") {
        Some(status) => next["status"] = status.clone(),
        None => remove(&mut next, "status"),
    }
    next
}

fn remove(value: &mut Value, field: &str) {
    if let Some(obj) = value.as_object_mut() {
        obj.remove(field);
    }
}

fn revision_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn read_u64(db: &DB, key: &[u8]) -> Result<u64, StoreError> {
    match db.get_cf(cf(db, CF_META), key)? {
        Some(bytes) => decode_u64(&bytes),
        None => Ok(0),
    }
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| StoreError::corrupt("meta", "not 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

fn encode(value: &Value) -> Result<Vec<u8>, StoreError> {
    // Sized for a typical object up front: growing the buffer copies it each time.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(&mut bytes, value).map_err(|e| StoreError::corrupt("object", e))?;
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt("object", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, image: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": "u1"},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    fn open(dir: &std::path::Path) -> ObjectStore {
        ObjectStore::open(crate::open_db(dir).expect("db")).expect("store")
    }

    #[tokio::test]
    async fn a_batch_applies_in_order_in_one_write_with_an_outcome_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("created");
        let mut watch = store.watch("Pod", None, Some(1)).expect("watch");
        let key = |n: &str| ObjectKey::new("Pod", Some("default"), n);
        let commands = vec![
            Command::Create { object: pod("b", "x") },
            Command::Create { object: pod("a", "x") },
            Command::UpdateStatus {
                key: key("b"),
                status: json!({"phase": "Running"}),
                precondition: Some(2),
            },
            Command::Delete { key: key("a"), precondition: None },
            Command::Batch { commands: vec![] },
        ];
        let n = commands.len();
        let answer = store.apply(2, Command::Batch { commands }).expect("io").expect("a batch answers");
        let outcomes = crate::batch_outcomes(answer, n);
        assert_eq!(outcomes[0].as_ref().map(|o| o["metadata"]["resourceVersion"].clone()), Ok(json!("2")));
        assert!(matches!(outcomes[1], Err(ApplyError::AlreadyExists(_))), "a refused command…");
        assert_eq!(
            outcomes[2].as_ref().map(|o| o["metadata"]["resourceVersion"].clone()),
            Ok(json!("3")),
            "…does not stop the others, and a later one sees an earlier one's write (b at 2)"
        );
        assert!(outcomes[3].is_ok());
        assert!(matches!(outcomes[4], Err(ApplyError::Invalid(_))), "no nesting");
        assert_eq!((store.revision(), store.applied_index()), (4, 2));
        // Each change is its own watch event, with its own revision.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = watch.next().await.expect("open").expect("event");
            seen.push((e.revision, e.type_, e.key.name.clone()));
        }
        assert_eq!(
            seen,
            [
                (2, EventType::Added, "b".into()),
                (3, EventType::Modified, "b".into()),
                (4, EventType::Deleted, "a".into())
            ]
        );
        // Reopened, the state is the batch's (one write: all of it or none).
        drop(watch);
        drop(store);
        let store = open(dir.path());
        assert!(store.get(&key("a")).expect("read").is_none());
        assert_eq!(
            store.get(&key("b")).expect("read").map(|b| b["status"]["phase"].clone()),
            Some(json!("Running"))
        );
    }

    #[test]
    fn a_recorded_event_that_recurs_is_counted_on_one_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let event = |at: &str, message: &str, count: u64| {
            json!({"apiVersion": "v1", "kind": "Event",
                   "metadata": {"name": "p.failedscheduling", "namespace": "default", "uid": at},
                   "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "FailedScheduling",
                   "message": message, "count": count, "firstTimestamp": at, "lastTimestamp": at})
        };
        let first = store.apply(1, Command::RecordEvent { object: event("t1", "no room", 1) }).expect("io");
        assert_eq!(first.expect("created")["count"], 1);
        store
            .apply(2, Command::RecordEvent { object: event("t2", "no room", 1) })
            .expect("io")
            .expect("again");
        let third =
            store.apply(3, Command::RecordEvent { object: event("t3", "still none", 5) }).expect("io");
        let third = third.expect("and again");
        assert_eq!(third["count"], 7, "1 + 1 + the 5 occurrences the last write carried");
        assert_eq!(third["firstTimestamp"], "t1");
        assert_eq!(third["lastTimestamp"], "t3");
        assert_eq!(third["message"], "still none");
        assert_eq!(third["metadata"]["uid"], "t1", "the first occurrence's identity is kept");
        assert_eq!(store.list("Event", None).expect("list").0.len(), 1);
    }

    #[test]
    fn the_store_knows_its_size_through_every_kind_of_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let measured = |store: &ObjectStore| stored_bytes(&store.db).expect("measure");
        assert_eq!(store.size(), 0);
        store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("created");
        let one = store.size();
        assert!(one > 100 && one == measured(&store), "{one}");
        let big = Command::Update { object: pod("a", &"y".repeat(5000)), precondition: None };
        store.apply(2, big).expect("io").expect("updated");
        assert!(store.size() > one + 4000 && store.size() == measured(&store));
        let batch = vec![
            Command::Create { object: pod("b", "x") },
            Command::UpdateStatus {
                key: ObjectKey::new("Pod", Some("default"), "b"),
                status: json!({"phase": "Running"}),
                precondition: None,
            },
            Command::Create { object: pod("c", "x") },
            Command::Delete { key: ObjectKey::new("Pod", Some("default"), "c"), precondition: None },
            Command::Delete { key: ObjectKey::new("Pod", Some("default"), "a"), precondition: None },
            Command::Create { object: pod("b", "refused: exists") },
        ];
        store.apply(3, Command::Batch { commands: batch }).expect("io").expect("a batch answers");
        assert_eq!(store.size(), measured(&store), "b alone, with its status");
        assert!(store.size() > one && store.size() < one + 200);
        // A snapshot from elsewhere is measured afresh.
        let state = json!({"appliedIndex": 10, "revision": 10, "objects": []});
        store.restore(&state).expect("restore");
        assert_eq!(store.size(), 0);
        // And a store opened again measures what it holds.
        store.apply(11, Command::Create { object: pod("d", "x") }).expect("io").expect("created");
        let size = store.size();
        drop(store);
        assert_eq!(open(dir.path()).size(), size);
    }

    #[test]
    fn revisions_preconditions_and_generation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let a = store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("created");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(a["metadata"]["generation"], 1);
        let dup = store.apply(2, Command::Create { object: pod("a", "x") }).expect("io");
        assert!(matches!(dup, Err(ApplyError::AlreadyExists(_))));

        let stale = Command::Update { object: pod("a", "y"), precondition: Some(7) };
        assert!(matches!(store.apply(3, stale).expect("io"), Err(ApplyError::Conflict { actual: 1, .. })));
        let fresh = Command::Update { object: pod("a", "y"), precondition: Some(1) };
        let b = store.apply(4, fresh).expect("io").expect("updated");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_eq!(b["metadata"]["generation"], 2);
        assert_eq!(store.revision(), 2);
        assert_eq!(store.applied_index(), 4);

        let key = ObjectKey::new("Pod", Some("default"), "a");
        let status = Command::UpdateStatus {
            key: key.clone(),
            status: json!({"phase": "Running"}),
            precondition: None,
        };
        let c = store.apply(5, status).expect("io").expect("status");
        assert_eq!(c["metadata"]["generation"], 2, "status writes do not bump generation");
        let again = Command::Update { object: pod("a", "y"), precondition: None };
        let d = store.apply(6, again).expect("io").expect("updated");
        assert_eq!(d["status"]["phase"], "Running", "a spec update keeps status");
        assert_eq!(d["metadata"]["generation"], 2, "unchanged spec keeps generation");
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("ok");
            store.apply(2, Command::Create { object: pod("b", "x") }).expect("io").expect("ok");
            store.skip(3).expect("skip");
        }
        let store = open(dir.path());
        assert_eq!(store.applied_index(), 3);
        assert_eq!(store.revision(), 2);
        let (items, rev) = store.list("Pod", Some("default")).expect("list");
        assert_eq!(items.len(), 2);
        assert_eq!(rev, 2);
        assert!(store.list("Pod", Some("other")).expect("list").0.is_empty());
    }

    #[tokio::test]
    async fn watch_resumes_from_a_revision_and_lists_from_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("ok");
        store.apply(2, Command::Create { object: pod("b", "x") }).expect("io").expect("ok");

        let mut from_one = store.watch("Pod", None, Some(1)).expect("watch");
        let mut from_now = store.watch("Pod", Some("default"), None).expect("watch");
        let key = ObjectKey::new("Pod", Some("default"), "a");
        store.apply(3, Command::Delete { key, precondition: None }).expect("io").expect("ok");

        let e = from_one.next().await.expect("open").expect("event");
        assert_eq!((e.revision, e.type_, e.key.name.as_str()), (2, EventType::Added, "b"));
        let e = from_one.next().await.expect("open").expect("event");
        assert_eq!((e.revision, e.type_), (3, EventType::Deleted));

        let names: Vec<_> = [from_now.next().await, from_now.next().await, from_now.next().await]
            .into_iter()
            .map(|e| {
                let e = e.expect("open").expect("event");
                (e.type_, e.key.name.clone())
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (EventType::Added, "a".into()),
                (EventType::Added, "b".into()),
                (EventType::Deleted, "a".into())
            ]
        );
    }

    #[tokio::test]
    async fn export_and_restore_replace_the_state_and_end_watches() {
        let (from, to) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let source = open(from.path());
        source.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("ok");
        source.apply(2, Command::Create { object: pod("b", "x") }).expect("io").expect("ok");
        let (applied, state) = export(&source.db).expect("export");
        assert_eq!(applied, 2);

        let target = open(to.path());
        target.apply(1, Command::Create { object: pod("stale", "x") }).expect("io").expect("ok");
        let mut watch = target.watch("Pod", None, Some(1)).expect("watch");
        assert_eq!(target.restore(&state).expect("restore"), 2);
        assert_eq!((target.revision(), target.applied_index()), (2, 2));
        let names: Vec<String> = target
            .list("Pod", None)
            .expect("list")
            .0
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(names, ["a", "b"], "the snapshot replaced everything");
        assert!(matches!(watch.next().await, Some(Err(WatchError::Gone { .. }))), "watchers must list again");
    }

    #[test]
    fn watch_from_before_the_history_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store.apply(1, Command::Create { object: pod("a", "x") }).expect("io").expect("ok");
        }
        // After a restart the history is empty: revision 0 can no longer be resumed.
        let store = open(dir.path());
        assert!(matches!(store.watch("Pod", None, Some(0)), Err(WatchError::Gone { oldest: 1, .. })));
        assert!(store.watch("Pod", None, Some(1)).is_ok());
    }
}
