//! Caches of this node's replica, kept current by its change stream: the informer pattern
//! (kube-rs' reflector, client-go's shared informers) over the local store. A `Reflector`
//! lists one kind once, then applies each change as it is applied to the store, and tells
//! its owner which keys changed, so the owner's work per change is O(what changed), never
//! O(cluster). When the stream lagged or a Raft snapshot replaced the store, it lists again
//! (as a watcher does on 410 Gone) and reports every key that may have moved.
//!
//! It only reads: writes go through the cluster, and come back here as changes.

mod reflector;

pub use reflector::{Changes, Reflector, Selector};
