//! How raft messages leave this node. The driver hands every outgoing batch to a `Transport`;
//! delivery is best effort (raft tolerates loss, reordering and duplication), and sending
//! must never block the Ready loop.

use raft::prelude::Message;

pub trait Transport: Send + 'static {
    /// Queues `messages` for their recipients (`Message::to`). Must not block.
    fn send(&self, messages: Vec<Message>);

    /// Gives the transport the driver's channel for delivery reports. raft-rs must hear when a
    /// peer could not be reached (it stops pipelining to it) and how a snapshot it sent ended
    /// (a follower waiting for a snapshot that was lost gets nothing else until it is told).
    /// `contact` is where it notes each peer that took a batch of messages.
    fn attach(&self, _reports: Reports, _contact: std::sync::Arc<crate::Contact>) {}
}

/// What the transport tells the driver about deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A message to this peer could not be delivered.
    Unreachable(u64),
    /// The snapshot sent to this peer arrived (`delivered`) or was lost.
    Snapshot { to: u64, delivered: bool },
}

/// Where a transport sends its reports; the driver drains them between Ready cycles.
pub type Reports = std::sync::mpsc::Sender<Report>;

/// The transport of a single-voter group: there is nobody to talk to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::trace!("dropping {} raft messages: this node has no peers", messages.len());
        }
    }
}
