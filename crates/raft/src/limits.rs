//! Size limits, end to end: an object the API admits always fits in one raft entry, a message
//! carrying that entry always fits in a batch, and a batch always fits in what a peer accepts.
//! If any of these were out of order, one large write could leave followers unable to receive
//! anything (the leader would resend the refused batch forever).

pub use wasmkube_api::MAX_OBJECT_BYTES;

/// Largest command one raft entry may carry: an object at the API's limit plus the command's
/// envelope and the metadata the server sets. A bigger proposal is refused before it is made.
pub const MAX_ENTRY_BYTES: usize = MAX_OBJECT_BYTES + (1 << 20);

/// Room for a message's own fields (term, index, context, …) around its entries.
const MESSAGE_OVERHEAD: usize = 64 << 10;

/// A batch to one peer is closed once it holds this many bytes (it always carries at least
/// one message, whatever its size).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Largest body the peer message endpoint accepts: a full batch, or one message with an entry
/// at the limit, with room to spare.
pub const MAX_PEER_BODY_BYTES: usize = MAX_BATCH_BYTES + MAX_ENTRY_BYTES + MESSAGE_OVERHEAD;

/// Largest snapshot a peer accepts (sent alone, on its own endpoint).
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// Largest store quota (`wasmlet --quota-bytes`): a snapshot of a store at its quota (plus
/// one object past it, and the snapshot's own framing) must fit what a peer accepts, or a
/// new member could never catch up.
pub const MAX_QUOTA_BYTES: usize = MAX_SNAPSHOT_BYTES / 2;
/// The quota when none is given (etcd's default backend quota is 2 GiB of a B-tree file).
pub const DEFAULT_QUOTA_BYTES: usize = 512 << 20;

const _: () = assert!(MAX_OBJECT_BYTES + (64 << 10) <= MAX_ENTRY_BYTES);
const _: () = assert!(MAX_ENTRY_BYTES + MESSAGE_OVERHEAD <= MAX_PEER_BODY_BYTES);
const _: () = assert!(MAX_BATCH_BYTES + MESSAGE_OVERHEAD <= MAX_PEER_BODY_BYTES);
const _: () = assert!(MAX_PEER_BODY_BYTES <= MAX_SNAPSHOT_BYTES);
const _: () = assert!(DEFAULT_QUOTA_BYTES <= MAX_QUOTA_BYTES);
const _: () = assert!(MAX_QUOTA_BYTES + MAX_OBJECT_BYTES < MAX_SNAPSHOT_BYTES);
