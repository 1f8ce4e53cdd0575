//! The node's cache of its replica, kept current by the store's change stream: the informer
//! pattern (client-go's shared informers, kube-rs' reflector) over the local store.
//!
//! - `SharedCache`: one per node. It lists the kinds its parts read once, then parses each
//!   change once and shares the object (`Arc`) with every subscription that follows its kind.
//!   When the stream lagged or a Raft snapshot replaced the store, it lists again and tells
//!   every subscription to read everything again (as a watcher does on 410 Gone).
//! - `Reflector`: one kind, optionally narrowed by a selector, over the shared cache; it
//!   tells its owner which keys changed, so the owner's work per change is O(what changed),
//!   never O(cluster).
//!
//! It only reads: writes go through the cluster, and come back here as changes.

mod reflector;
mod shared;

pub use reflector::{Changes, Reflector, Selector};
pub use shared::{Cached, Kind, Object, SharedCache, Subscription, Update};
