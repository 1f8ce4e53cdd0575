//! One kind's objects, optionally narrowed by a field selector, kept current.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use wasmkube_api::Resource;
use wasmkube_store::{EventType, ObjectStore, StoreError, StoreEvent};

/// Keys (`namespace/name`) whose object was added, changed or removed since the last look.
pub type Changes = HashSet<String>;

/// A field selector: which objects of the kind this cache holds, judged on the raw JSON so
/// that objects it does not hold cost no parsing.
pub type Selector = Box<dyn Fn(&Value) -> bool + Send + Sync>;

pub struct Reflector<T> {
    store: Arc<ObjectStore>,
    selector: Selector,
    objects: HashMap<String, T>,
    rx: broadcast::Receiver<Arc<StoreEvent>>,
}

impl<T: Resource> Reflector<T> {
    /// Lists the kind (keeping what `selector` accepts) and starts following changes. Every
    /// key is reported by the first `changed`.
    pub fn new(store: Arc<ObjectStore>, selector: Selector) -> Result<(Self, Changes), StoreError> {
        // Subscribe first: a change between the subscribe and the list is seen twice (and
        // applied idempotently), never missed.
        let rx = store.subscribe_all();
        let mut reflector = Reflector { store, selector, objects: HashMap::new(), rx };
        let changes = reflector.relist()?;
        Ok((reflector, changes))
    }

    /// Waits for changes to this cache's objects and applies them; returns their keys.
    /// `None` once the store is gone.
    pub async fn changed(&mut self) -> Option<Changes> {
        loop {
            let mut changes = match self.rx.recv().await {
                Ok(event) => {
                    let mut changes = Changes::new();
                    if self.apply(&event, &mut changes) {
                        changes.extend(self.relist_or_keep());
                    }
                    changes
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(kind = T::KIND.kind, "change stream lagged by {n}; listing again");
                    self.relist_or_keep()
                }
                Err(RecvError::Closed) => return None,
            };
            changes.extend(self.drain());
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }

    /// Applies whatever changes are already queued, without waiting; returns their keys.
    /// (The queue is bounded: a writer that outruns it makes this list again instead.)
    pub fn drain(&mut self) -> Changes {
        let mut changes = Changes::new();
        loop {
            match self.rx.try_recv() {
                Ok(event) => {
                    if self.apply(&event, &mut changes) {
                        changes.extend(self.relist_or_keep());
                        break;
                    }
                }
                Err(TryRecvError::Lagged(_)) => {
                    changes.extend(self.relist_or_keep());
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        changes
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.objects.iter()
    }

    /// Applies one change; true when the whole store was replaced (list again).
    fn apply(&mut self, event: &StoreEvent, changes: &mut Changes) -> bool {
        if event.type_ == EventType::Restored {
            return true;
        }
        if event.key.kind != T::KIND.kind {
            return false;
        }
        let key = format!("{}/{}", event.key.namespace, event.key.name);
        let held = event.type_ != EventType::Deleted && (self.selector)(&event.object);
        // Parsed by reference: no copy of the JSON tree per change.
        let parsed = if held { T::deserialize(&event.object).ok() } else { None };
        let changed = match parsed {
            Some(object) => {
                self.objects.insert(key.clone(), object);
                true
            }
            None => self.objects.remove(&key).is_some(),
        };
        if changed {
            changes.insert(key);
        }
        false
    }

    /// Lists again; on a store error keeps the old contents (and reports nothing).
    fn relist_or_keep(&mut self) -> Changes {
        self.relist().unwrap_or_else(|e| {
            tracing::error!(kind = T::KIND.kind, "listing again failed: {e}");
            Changes::new()
        })
    }

    /// Replaces the contents with a fresh list; every key held before or after is reported.
    fn relist(&mut self) -> Result<Changes, StoreError> {
        // Drop what is queued: the list covers it.
        while !matches!(self.rx.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        let (items, _) = self.store.list(T::KIND.kind, None)?;
        let mut changes: Changes = self.objects.keys().cloned().collect();
        self.objects.clear();
        for value in items.into_iter().filter(|v| (self.selector)(v)) {
            let ns = value["metadata"]["namespace"].as_str().unwrap_or("").to_string();
            let name = value["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Ok(object) = serde_json::from_value::<T>(value) {
                let key = format!("{ns}/{name}");
                changes.insert(key.clone());
                self.objects.insert(key, object);
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmkube_api::Pod;
    use wasmkube_store::{Command, ObjectKey};

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": name},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
    }

    fn on(node: &'static str) -> Selector {
        Box::new(move |v: &Value| v["spec"]["nodeName"].as_str() == Some(node))
    }

    #[tokio::test]
    async fn follows_the_selected_objects_and_reports_what_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(ObjectStore::open(wasmkube_store::open_db(dir.path()).expect("db")).expect("store"));
        let mut index = 0;
        let mut apply = |c: Command| {
            index += 1;
            store.apply(index, c).expect("io").expect("applied");
        };
        apply(Command::Create { object: pod("a", "n1") });
        apply(Command::Create { object: pod("b", "n2") });
        let (mut mine, first) = Reflector::<Pod>::new(store.clone(), on("n1")).expect("list");
        assert_eq!(first, Changes::from(["default/a".to_string()]));

        // Changes to objects it does not hold cost nothing and are not reported.
        apply(Command::Create { object: pod("c", "n2") });
        apply(Command::Create { object: pod("d", "n1") });
        apply(Command::Delete { key: ObjectKey::new("Pod", Some("default"), "a"), precondition: None });
        let changes = mine.changed().await.expect("open");
        assert_eq!(changes, Changes::from(["default/a".to_string(), "default/d".to_string()]));
        assert!(mine.get("default/a").is_none());
        assert_eq!(mine.get("default/d").map(|p| p.metadata.name.as_str()), Some("d"));
        assert_eq!(mine.len(), 1);
    }

    #[tokio::test]
    async fn a_replaced_store_is_listed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(ObjectStore::open(wasmkube_store::open_db(dir.path()).expect("db")).expect("store"));
        store.apply(1, Command::Create { object: pod("a", "n1") }).expect("io").expect("ok");
        let (mut mine, _) = Reflector::<Pod>::new(store.clone(), on("n1")).expect("list");
        // A snapshot from elsewhere: a is gone, e is new.
        let state = json!({"appliedIndex": 10, "revision": 10, "objects": [pod("e", "n1")]});
        store.restore(&state).expect("restore");
        let changes = mine.changed().await.expect("open");
        assert_eq!(changes, Changes::from(["default/a".to_string(), "default/e".to_string()]));
        assert!(mine.get("default/e").is_some() && mine.get("default/a").is_none());
    }
}
