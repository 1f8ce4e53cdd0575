//! The API server of a wasmkube node.
//!
//! - `objects`: the object API inside the process. Every write on a node — from an HTTP
//!   client, a controller, the scheduler or an agent — is a validated, admitted `Write`
//!   proposed through `Objects`; nothing proposes raw store commands around it.
//! - `http`: Kubernetes-shaped paths and objects over it (`/api`, `/apis`, watches, the
//!   status and scale subresources, module upload, cluster membership).

pub mod http;
pub mod metrics;
mod objects;
#[cfg(test)]
mod testing;

pub use objects::{Objects, Write, WriteError};
