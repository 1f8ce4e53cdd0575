//! The service proxy every node runs: routes a request by its Host header to a ready pod of
//! the named Service, least-outstanding-requests first, and stamps the response with the pod
//! and node that served it.
//!
//! The routing table is kept from a cache of Services, Pods and Nodes (current from the
//! store's change stream) and the local sandbox registry: a change rebuilds the entries of the
//! services it concerns; a request holds one immutable entry. Pods on this node are served
//! in-process; pods on other nodes through their node's proxy (one hop at most). The proxy
//! never changes cluster state.

mod activate;
mod cache;
mod node_ports;
mod outlier;
mod remote;
mod server;
mod table;

pub use activate::{Activator, HOLD_FOR, MAX_HELD};
pub use cache::{Affected, RouteCache};
pub use node_ports::serve_node_ports;
pub use remote::{TARGET_POD_HEADER, TARGET_SERVICE_HEADER};
pub use server::{ProxyState, router};
pub use table::{Endpoint, EndpointTable, ServiceEntry, Target};
pub use wasmkube_api::{ServiceName, parse_host};
