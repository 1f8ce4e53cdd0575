//! Node lifecycle timings, shared by the node agent (heartbeat, fencing) and the node
//! controller (NotReady, eviction): they only keep their promise to each other together.

use std::time::Duration;

/// How often a node's agent records its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Silence after which a node is marked NotReady.
pub const NOT_READY_AFTER: Duration = Duration::from_secs(6);
/// Silence after which a node's pods are deleted (to be replaced elsewhere).
pub const EVICT_AFTER: Duration = Duration::from_secs(16);
/// How long the leader may be out of touch with a node (no Raft message from it, none taken
/// by it) before it declares the node lost and replaces its pods; a node out of touch with
/// its leader as long stops its own pods. The default of `--node-grace`: about seven missed
/// Raft heartbeats (every 150 ms), well past a busy node's pauses.
pub const NODE_GRACE: Duration = Duration::from_secs(1);
/// Time without a recorded heartbeat after which an agent stops its own pods.
pub const FENCE_AFTER: Duration = Duration::from_secs(8);

// Several heartbeats fit in the NotReady grace, and an agent fences itself with a margin
// before its pods are replaced (for a follower that applies its heartbeat late).
const _: () = assert!(HEARTBEAT.as_millis() * 2 < NOT_READY_AFTER.as_millis());
const _: () = assert!(FENCE_AFTER.as_millis() * 2 <= EVICT_AFTER.as_millis());
