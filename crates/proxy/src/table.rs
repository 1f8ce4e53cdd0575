//! The routing table: for each Service, the ready pods that can serve it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmkube_api::{Pod, Service, labels_match};
use wasmkube_runtime::{HttpPod, SandboxRegistry};

use crate::ServiceName;

/// Where a pod is served from.
pub enum Target {
    /// A sandbox on this node, served in-process.
    Local(Arc<HttpPod>),
    /// A pod on another node, reached through that node's proxy.
    Remote {
        node: String,
        /// The node's proxy, e.g. `http://10.0.0.2:8080`.
        proxy_url: String,
        /// Requests this proxy has in flight to the pod.
        outstanding: Arc<AtomicUsize>,
    },
}

pub struct Endpoint {
    pub pod: String,
    /// The pod's name as the `x-wasmkube-pod` header value, made once per entry, not per request.
    pub pod_header: http::HeaderValue,
    pub target: Target,
}

impl Endpoint {
    pub fn outstanding(&self) -> usize {
        match &self.target {
            Target::Local(http) => http.outstanding(),
            Target::Remote { outstanding, .. } => outstanding.load(Ordering::Relaxed),
        }
    }
}

pub struct ServiceEntry {
    pub endpoints: Vec<Endpoint>,
    /// Rotating start for ties, so equally idle pods share sequential traffic.
    next: AtomicUsize,
}

/// What an entry is built from besides the Service and its namespace's pods.
pub struct Locality<'a> {
    /// This node's name: its pods are served from `sandboxes`.
    pub here: &'a str,
    pub sandboxes: &'a SandboxRegistry,
    /// Other nodes' proxy URLs, by node name.
    pub proxies: &'a HashMap<String, String>,
}

impl ServiceEntry {
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        // A random start, so that every node's proxy (and every rebuilt entry) does not send
        // its first requests to the same pod.
        let start = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
        ServiceEntry { endpoints, next: AtomicUsize::new(start as usize) }
    }

    /// The entry of `service`: those of `pods` (its namespace's) that it selects and that are
    /// ready — here, when their sandbox runs on this node; elsewhere, when their node's proxy
    /// is known.
    pub fn build<'a>(service: &Service, pods: impl Iterator<Item = &'a Pod>, at: &Locality<'_>) -> Self {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let endpoints = pods
            .filter(|p| labels_match(&service.spec.selector, &p.metadata.labels) && p.is_ready())
            .filter_map(|p| {
                let node = p.spec.node_name.as_deref()?;
                let target = if node == at.here {
                    let local = at.sandboxes.get(&format!("{namespace}/{}", p.metadata.name))?;
                    // Only the sandbox of this very pod (not a stale one of the same name).
                    (Some(local.uid.as_str()) == p.metadata.uid.as_deref()).then_some(())?;
                    Target::Local(local.http?)
                } else {
                    Target::Remote {
                        node: node.to_string(),
                        proxy_url: at.proxies.get(node)?.clone(),
                        outstanding: Arc::default(),
                    }
                };
                let pod_header = http::HeaderValue::from_str(&p.metadata.name).ok()?;
                Some(Endpoint { pod: p.metadata.name.clone(), pod_header, target })
            })
            .collect();
        ServiceEntry::new(endpoints)
    }

    /// Endpoint indices in the order to try them: fewest outstanding requests first, ties in
    /// round-robin order.
    pub fn candidates(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        // The counts as of now, read once: other requests change them meanwhile, and a sort
        // whose keys move under it has no total order (Rust's sort may panic on that; it did,
        // over 10,000 endpoints under load).
        let outstanding: Vec<usize> = self.endpoints.iter().map(Endpoint::outstanding).collect();
        // Stable sort keeps the rotation among equals.
        order.sort_by_key(|&i| outstanding[i]);
        order
    }
}

/// Service → entry. Changed in place, one service at a time, as the cluster changes; a
/// request holds its entry (an `Arc`), never the table.
#[derive(Default)]
pub struct EndpointTable {
    services: HashMap<ServiceName, Arc<ServiceEntry>>,
}

impl EndpointTable {
    pub fn lookup(&self, name: &ServiceName) -> Option<Arc<ServiceEntry>> {
        self.services.get(name).cloned()
    }

    /// Sets the entry of `name`, or removes it (`None`: the Service is gone).
    pub fn set(&mut self, name: ServiceName, entry: Option<ServiceEntry>) {
        match entry {
            Some(entry) => {
                self.services.insert(name, Arc::new(entry));
            }
            None => {
                self.services.remove(&name);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}
