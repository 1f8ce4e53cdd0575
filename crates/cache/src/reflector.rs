//! One kind's objects from the node's shared cache, optionally narrowed by a selector, kept
//! current: what a part that follows one kind needs (the agent's own pods, the controllers'
//! Deployments, Pods and Nodes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::shared::{Cached, SharedCache, Subscription, Update};

/// Keys (`namespace/name`) whose object was added, changed or removed since the last look.
pub type Changes = HashSet<String>;

/// Which objects of the kind a reflector holds.
pub type Selector<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

pub struct Reflector<T> {
    subscription: Subscription,
    selector: Selector<T>,
    objects: HashMap<String, Arc<T>>,
}

impl<T: Cached> Reflector<T> {
    /// Reads the kind from `cache` (keeping what `selector` accepts) and starts following
    /// its changes. Every key is reported by the first `changed`.
    pub fn new(cache: &SharedCache, selector: Selector<T>) -> (Self, Changes) {
        let subscription = cache.subscribe(&[T::CACHED]);
        let mut reflector = Reflector { subscription, selector, objects: HashMap::new() };
        let changes = reflector.relist();
        (reflector, changes)
    }

    /// Every object of the kind.
    pub fn all() -> Selector<T> {
        Box::new(|_| true)
    }

    /// Waits for changes to this reflector's objects and applies them; returns their keys.
    /// `None` once the store is gone.
    pub async fn changed(&mut self) -> Option<Changes> {
        loop {
            let updates = self.subscription.changed().await?;
            let changes = self.apply(updates);
            if !changes.is_empty() {
                return Some(changes);
            }
        }
    }

    /// Applies whatever changes are already published, without waiting; returns their keys.
    pub fn drain(&mut self) -> Changes {
        let updates = self.subscription.drain();
        self.apply(updates)
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.objects.get(key).map(|o| &**o)
    }

    /// The shared object itself (cloning it clones a pointer).
    pub fn get_shared(&self, key: &str) -> Option<&Arc<T>> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.objects.iter().map(|(k, o)| (k, &**o))
    }

    fn apply(&mut self, updates: Vec<Update>) -> Changes {
        let mut changes = Changes::new();
        for update in updates {
            match update {
                Update::Reset => changes.extend(self.relist()),
                Update::Changed { key, object, .. } => {
                    let held = object.as_ref().and_then(T::from_object).filter(|o| (self.selector)(o));
                    let changed = match held {
                        Some(o) => {
                            self.objects.insert(key.clone(), o.clone());
                            true
                        }
                        None => self.objects.remove(&key).is_some(),
                    };
                    if changed {
                        changes.insert(key);
                    }
                }
            }
        }
        changes
    }

    /// Replaces the contents with the cache's; every key held before or after is reported.
    fn relist(&mut self) -> Changes {
        let mut changes: Changes = self.objects.keys().cloned().collect();
        self.objects = self
            .subscription
            .list(T::CACHED)
            .into_iter()
            .filter_map(|(key, object)| {
                let o = T::from_object(&object).filter(|o| (self.selector)(o))?.clone();
                Some((key, o))
            })
            .collect();
        changes.extend(self.objects.keys().cloned());
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use wasmkube_api::{Node, Pod};
    use wasmkube_store::{Command, ObjectKey, ObjectStore};

    fn pod(name: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "uid": name},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
    }

    fn on(node: &'static str) -> Selector<Pod> {
        Box::new(move |p: &Pod| p.spec.node_name.as_deref() == Some(node))
    }

    fn store(dir: &std::path::Path) -> Arc<ObjectStore> {
        Arc::new(ObjectStore::open(wasmkube_store::open_db(dir).expect("db")).expect("store"))
    }

    #[tokio::test]
    async fn follows_the_selected_objects_and_reports_what_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let mut index = 0;
        let mut apply = |c: Command| {
            index += 1;
            store.apply(index, c).expect("io").expect("applied");
        };
        apply(Command::Create { object: pod("a", "n1") });
        apply(Command::Create { object: pod("b", "n2") });
        let cache = SharedCache::new(store.clone()).expect("list");
        let (mut mine, first) = Reflector::<Pod>::new(&cache, on("n1"));
        let (mut all, _) = Reflector::<Pod>::new(&cache, Reflector::all());
        let (mut nodes, _) = Reflector::<Node>::new(&cache, Reflector::all());
        assert_eq!(first, Changes::from(["default/a".to_string()]));

        // Changes to objects it does not hold are not reported.
        apply(Command::Create { object: pod("c", "n2") });
        apply(Command::Create { object: pod("d", "n1") });
        apply(Command::Delete { key: ObjectKey::new("Pod", Some("default"), "a"), precondition: None });
        let changes = mine.changed().await.expect("open");
        assert_eq!(changes, Changes::from(["default/a".to_string(), "default/d".to_string()]));
        assert!(mine.get("default/a").is_none());
        assert_eq!(mine.get("default/d").map(|p| p.metadata.name.as_str()), Some("d"));
        assert_eq!(mine.len(), 1);

        // One parse, shared: every reflector holds the same object.
        assert_eq!(all.drain().len(), 3);
        let (a, b) =
            (mine.get_shared("default/d").expect("held"), all.get_shared("default/d").expect("held"));
        assert!(Arc::ptr_eq(a, b), "one copy of each object per node");
        // A reflector of another kind hears nothing of pods.
        assert!(nodes.drain().is_empty());
    }

    #[tokio::test]
    async fn a_replaced_store_is_listed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        store.apply(1, Command::Create { object: pod("a", "n1") }).expect("io").expect("ok");
        let cache = SharedCache::new(store.clone()).expect("list");
        let (mut mine, _) = Reflector::<Pod>::new(&cache, on("n1"));
        // A snapshot from elsewhere: a is gone, e is new.
        let state = json!({"appliedIndex": 10, "revision": 10, "objects": [pod("e", "n1")]});
        store.restore(&state).expect("restore");
        let changes = mine.changed().await.expect("open");
        assert_eq!(changes, Changes::from(["default/a".to_string(), "default/e".to_string()]));
        assert!(mine.get("default/e").is_some() && mine.get("default/a").is_none());
    }

    #[tokio::test]
    async fn a_dropped_subscription_costs_nothing_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let cache = SharedCache::new(store.clone()).expect("list");
        let (gone, _) = Reflector::<Pod>::new(&cache, Reflector::all());
        drop(gone);
        store.apply(1, Command::Create { object: pod("a", "n1") }).expect("io").expect("ok");
        cache.list(crate::Kind::Pod);
        assert_eq!(cache.subscribers(), 0, "the dropped queue is forgotten");
    }
}
