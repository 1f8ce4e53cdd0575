//! The Raft driver: feeds raft-rs ticks, proposals and messages, runs its Ready loop
//! (persist to the `RaftLog`, apply committed commands to the `ObjectStore`, advance), and
//! answers each proposal with the outcome of applying it.
//!
//! raft-rs owns the algorithm; this crate owns only the plumbing around it. It must never
//! decide cluster state on its own: every write goes through a proposal and the log.

// `propose` is defined here; everyone else writes through `wasmkube_apiserver::Objects`.
#![allow(clippy::disallowed_methods)]

mod contact;
mod driver;
mod faults;
mod handle;
pub mod limits;
mod logger;
mod peers;
mod reads;
mod transport;
mod wire;

pub use contact::Contact;
pub use driver::{DriverConfig, start};
pub use faults::{FaultPlan, Faults};
pub use handle::{ClusterHandle, LeaderState, Member, Membership, MembershipChange, ProposeError};
pub use peers::{
    PEER_BLOBS_PATH, PEER_FROM_HEADER, PEER_MESSAGES_PATH, PEER_SNAPSHOTS_PATH, PeerTransport,
    authorize_peer, peer_client, peer_get, peer_router,
};
pub use raft::prelude::Message;
pub use transport::{NoPeers, Report, Reports, Transport};
