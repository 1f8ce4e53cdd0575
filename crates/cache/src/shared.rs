//! The node's one cache of the kinds its parts read (Pods, Nodes, Services, Deployments):
//! client-go's shared informer, over the local replica.
//!
//! One subscription to the store's change stream, drained by whichever reader comes first;
//! each change is parsed once, kept as an `Arc`, and queued for every subscription that
//! follows its kind. The agent, the proxy and the controllers therefore share one parsed
//! copy of each object instead of parsing and holding their own. A stream that lagged, or a
//! store replaced by a Raft snapshot, is listed again, and every subscription is told to
//! read everything again (`Update::Reset`), as a watcher does on 410 Gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::TryRecvError};
use wasmkube_api::{Deployment, Node, Pod, Resource, Service};
use wasmkube_store::{EventType, ObjectStore, StoreError, StoreEvent};

/// The kinds the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Node,
    Service,
    Deployment,
}

const KINDS: [Kind; 4] = [Kind::Pod, Kind::Node, Kind::Service, Kind::Deployment];

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => Pod::KIND.kind,
            Kind::Node => Node::KIND.kind,
            Kind::Service => Service::KIND.kind,
            Kind::Deployment => Deployment::KIND.kind,
        }
    }

    /// Parses `value` as this kind (objects were validated on admission; one that does not
    /// parse is left out).
    fn parse(self, value: &Value) -> Option<Object> {
        Some(match self {
            Kind::Pod => Object::Pod(Arc::new(Pod::deserialize(value).ok()?)),
            Kind::Node => Object::Node(Arc::new(Node::deserialize(value).ok()?)),
            Kind::Service => Object::Service(Arc::new(Service::deserialize(value).ok()?)),
            Kind::Deployment => Object::Deployment(Arc::new(Deployment::deserialize(value).ok()?)),
        })
    }
}

/// One cached object, shared by every reader.
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Arc<Pod>),
    Node(Arc<Node>),
    Service(Arc<Service>),
    Deployment(Arc<Deployment>),
}

/// A type the cache holds.
pub trait Cached: Resource + Sync {
    const CACHED: Kind;
    fn from_object(object: &Object) -> Option<&Arc<Self>>;
}

macro_rules! cached {
    ($($t:ident),*) => {$(
        impl Cached for $t {
            const CACHED: Kind = Kind::$t;
            fn from_object(object: &Object) -> Option<&Arc<Self>> {
                match object {
                    Object::$t(o) => Some(o),
                    _ => None,
                }
            }
        }
    )*};
}
cached!(Pod, Node, Service, Deployment);

/// What a subscription is told.
#[derive(Debug, Clone)]
pub enum Update {
    /// The object of `kind` at `key` (`namespace/name`) is now `object` (`None`: deleted).
    Changed { kind: Kind, key: String, object: Option<Object> },
    /// Everything may have changed (the store was replaced, or the stream lagged): read
    /// the kinds again with `Subscription::list`.
    Reset,
}

/// Updates queued for one subscription, beyond which it is simply told to read everything
/// again (a reader that fell this far behind would rather list than replay).
const MAX_QUEUED: usize = 100_000;

#[derive(Default)]
struct Queue {
    updates: Vec<Update>,
}

impl Queue {
    fn push(&mut self, update: Update) {
        if self.updates.len() >= MAX_QUEUED {
            self.reset();
        } else {
            self.updates.push(update);
        }
    }

    fn reset(&mut self) {
        self.updates.clear();
        self.updates.push(Update::Reset);
    }
}

struct Hub {
    /// The one subscription to the store that feeds the cache.
    rx: broadcast::Receiver<Arc<StoreEvent>>,
    /// A list failed after the stream's queued changes were dropped: the next pump lists
    /// again before anything else.
    must_relist: bool,
    objects: HashMap<Kind, HashMap<String, Object>>,
    subscribers: Vec<(Vec<Kind>, Weak<Mutex<Queue>>)>,
}

/// The node's shared cache (cheap to clone: one per node, handed to every part).
#[derive(Clone)]
pub struct SharedCache {
    store: Arc<ObjectStore>,
    hub: Arc<Mutex<Hub>>,
}

impl SharedCache {
    /// Lists every cached kind and starts following the store.
    pub fn new(store: Arc<ObjectStore>) -> Result<SharedCache, StoreError> {
        let rx = store.subscribe_all();
        let mut hub = Hub { rx, must_relist: false, objects: HashMap::new(), subscribers: Vec::new() };
        hub.relist(&store)?;
        Ok(SharedCache { store, hub: Arc::new(Mutex::new(hub)) })
    }

    /// A subscription to changes of `kinds`, from now on; read their current contents with
    /// `Subscription::list`.
    pub fn subscribe(&self, kinds: &[Kind]) -> Subscription {
        // The doorbell first: a change after it rings it, and is in the queue or the list.
        let doorbell = self.store.published();
        let queue = Arc::new(Mutex::new(Queue::default()));
        let mut hub = self.lock();
        hub.pump(&self.store);
        hub.subscribers.push((kinds.to_vec(), Arc::downgrade(&queue)));
        drop(hub);
        Subscription { cache: self.clone(), queue, doorbell }
    }

    /// Every object of `kind` as the cache holds it now.
    pub fn list(&self, kind: Kind) -> Vec<(String, Object)> {
        let mut hub = self.lock();
        hub.pump(&self.store);
        hub.objects
            .get(&kind)
            .map(|m| m.iter().map(|(k, o)| (k.clone(), o.clone())).collect())
            .unwrap_or_default()
    }

    /// Brings the cache up to what the store has published, queueing the changes.
    fn pump(&self) {
        self.lock().pump(&self.store);
    }

    /// How many subscriptions the cache still queues changes for.
    #[cfg(test)]
    pub(crate) fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Hub {
    fn pump(&mut self, store: &ObjectStore) {
        if self.must_relist {
            self.relist_or_keep(store);
        }
        loop {
            match self.rx.try_recv() {
                Ok(event) if event.type_ == EventType::Restored => self.relist_or_keep(store),
                Ok(event) => self.apply(&event),
                Err(TryRecvError::Lagged(n)) => {
                    tracing::info!("the shared cache fell {n} changes behind the store; listing again");
                    self.relist_or_keep(store);
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn apply(&mut self, event: &StoreEvent) {
        let Some(kind) = Kind::of(&event.key.kind) else { return };
        let key = format!("{}/{}", event.key.namespace, event.key.name);
        // Parsed by reference: no copy of the JSON tree per change.
        let object = match event.type_ {
            EventType::Deleted => None,
            _ => kind.parse(&event.object),
        };
        let held = self.objects.entry(kind).or_default();
        let changed = match &object {
            Some(o) => {
                held.insert(key.clone(), o.clone());
                true
            }
            None => held.remove(&key).is_some(),
        };
        if changed {
            self.publish(kind, Update::Changed { kind, key, object });
        }
    }

    fn publish(&mut self, kind: Kind, update: Update) {
        self.subscribers.retain(|(kinds, queue)| {
            let Some(queue) = queue.upgrade() else { return false };
            if kinds.contains(&kind) {
                queue.lock().unwrap_or_else(|p| p.into_inner()).push(update.clone());
            }
            true
        });
    }

    fn relist_or_keep(&mut self, store: &ObjectStore) {
        match self.relist(store) {
            Ok(()) => self.must_relist = false,
            Err(e) => {
                // The changes it dropped are lost to the cache until a list succeeds: the
                // next pump tries again.
                tracing::error!("the shared cache could not list again, keeping what it had: {e}");
                self.must_relist = true;
            }
        }
    }

    /// Replaces every kind with a fresh list and tells every subscription to read again.
    fn relist(&mut self, store: &ObjectStore) -> Result<(), StoreError> {
        // Drop what is queued: the list covers it.
        while !matches!(self.rx.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
        // Every kind is listed before any is replaced: a failed list leaves none half-new.
        let mut listed = Vec::with_capacity(KINDS.len());
        for kind in KINDS {
            listed.push((kind, store.list(kind.name(), None)?.0));
        }
        for (kind, items) in listed {
            let held: HashMap<String, Object> = items
                .iter()
                .filter_map(|v| {
                    let meta = &v["metadata"];
                    let key =
                        format!("{}/{}", meta["namespace"].as_str().unwrap_or(""), meta["name"].as_str()?);
                    Some((key, kind.parse(v)?))
                })
                .collect();
            self.objects.insert(kind, held);
        }
        self.subscribers.retain(|(_, queue)| match queue.upgrade() {
            Some(queue) => {
                queue.lock().unwrap_or_else(|p| p.into_inner()).reset();
                true
            }
            None => false,
        });
        Ok(())
    }
}

/// One reader's view of the changes to the kinds it follows.
pub struct Subscription {
    cache: SharedCache,
    queue: Arc<Mutex<Queue>>,
    /// Rings once per applied entry whose changes the store published.
    doorbell: tokio::sync::watch::Receiver<u64>,
}

impl Subscription {
    /// The updates queued so far, without waiting (the cache is brought up to what the store
    /// has published first).
    pub fn drain(&mut self) -> Vec<Update> {
        self.cache.pump();
        std::mem::take(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()).updates)
    }

    /// Waits for updates and returns them; `None` once the store is gone.
    pub async fn changed(&mut self) -> Option<Vec<Update>> {
        loop {
            let updates = self.drain();
            if !updates.is_empty() {
                return Some(updates);
            }
            // One wake-up for everything published meanwhile; none once the store is gone.
            self.doorbell.changed().await.ok()?;
        }
    }

    /// Every object of `kind` as the cache holds it now.
    pub fn list(&self, kind: Kind) -> Vec<(String, Object)> {
        self.cache.list(kind)
    }
}
