//! The wasm sandbox: one wasmtime `Engine` per node, modules compiled once (and cached on
//! disk), and pods as sandboxes over a pre-instantiated component.
//!
//! - http-world pods get a fresh instance per request, as `wasmtime serve` and Spin do.
//! - cli-world pods run one long-lived instance, restarted with back-off when it exits.
//!
//! Limits are enforced here, never trusted to the guest: memory through a `ResourceLimiter`,
//! CPU time through epoch deadlines, no filesystem, sockets or outgoing HTTP, and bounded
//! stdout/stderr. This crate knows nothing of Raft or the API; the node agent drives it.

mod cli_pod;
mod cpu;
mod engine;
mod host;
mod http_pod;
mod logs;
pub mod metrics;
mod modules;
mod registry;

pub use cli_pod::{CliPod, CliPodState};
pub use cpu::CpuBudget;
pub use engine::{Runtime, RuntimeConfig, default_cpu_share_millis};
pub use http_pod::{Admission, HttpPod, PodResponse, RequestError};
pub use logs::LogBuffer;
pub use modules::{ModuleError, PrepareError, PreparedModule};
pub use registry::{LocalPod, SandboxRegistry};
/// The error type of request and response bodies crossing the sandbox boundary.
pub use wasmtime_wasi_http::Error as BodyError;

/// What the node agent asks the runtime to run.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// `namespace/name` of the pod; used in logs and errors.
    pub pod: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Memory limit in bytes for one instance.
    pub memory_limit: u64,
    /// CPU limit of the pod (all its instances), in thousandths of a core; the node's
    /// default share when not set.
    pub cpu_limit_millis: Option<u64>,
    /// How long one request may run (http pods); the node's request timeout when not set.
    pub request_timeout: Option<std::time::Duration>,
}
