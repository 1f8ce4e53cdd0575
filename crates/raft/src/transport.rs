//! How raft messages leave this node. The driver hands every outgoing batch to a `Transport`;
//! delivery is best effort (raft tolerates loss, reordering and duplication), and sending
//! must never block the Ready loop.

use raft::prelude::Message;

pub trait Transport: Send + 'static {
    /// Queues `messages` for their recipients (`Message::to`). Must not block.
    fn send(&self, messages: Vec<Message>);
}

/// The transport of a single-voter group: there is nobody to talk to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::trace!("dropping {} raft messages: this node has no peers", messages.len());
        }
    }
}
