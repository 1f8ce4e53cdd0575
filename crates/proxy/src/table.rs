//! The routing table: for each Service, the ready pods that can serve it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmkube_api::{Pod, Service, labels_match};
use wasmkube_runtime::{HttpPod, SandboxRegistry};

use crate::ServiceName;

pub struct Endpoint {
    pub pod: String,
    /// The pod's name as the `x-wasmkube-pod` header value, made once per table, not per request.
    pub pod_header: http::HeaderValue,
    pub http: Arc<HttpPod>,
}

pub struct ServiceEntry {
    pub endpoints: Vec<Endpoint>,
    /// Rotating start for ties, so equally idle pods share sequential traffic.
    next: AtomicUsize,
}

impl ServiceEntry {
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        ServiceEntry { endpoints, next: AtomicUsize::new(0) }
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
        // Stable sort keeps the rotation among equals.
        order.sort_by_key(|&i| self.endpoints[i].http.outstanding());
        order
    }
}

#[derive(Default)]
pub struct EndpointTable {
    services: HashMap<ServiceName, ServiceEntry>,
}

impl EndpointTable {
    /// Builds the table from Services, Pods and the sandboxes running here.
    pub fn build<'a>(
        services: impl Iterator<Item = &'a Service>,
        pods: &[&'a Pod],
        local: &SandboxRegistry,
    ) -> Self {
        let mut table = EndpointTable::default();
        for svc in services {
            let namespace = svc.metadata.namespace.clone().unwrap_or_default();
            let endpoints = pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|p| labels_match(&svc.spec.selector, &p.metadata.labels) && p.is_ready())
                .filter_map(|p| {
                    let local = local.get(&format!("{namespace}/{}", p.metadata.name))?;
                    // Only the sandbox of this very pod (not a stale one of the same name).
                    (Some(local.uid.as_str()) == p.metadata.uid.as_deref()).then_some(())?;
                    let pod_header = http::HeaderValue::from_str(&p.metadata.name).ok()?;
                    Some(Endpoint { pod: p.metadata.name.clone(), pod_header, http: local.http? })
                })
                .collect();
            let name = ServiceName { namespace, name: svc.metadata.name.clone() };
            table.services.insert(name, ServiceEntry::new(endpoints));
        }
        table
    }

    pub fn lookup(&self, name: &ServiceName) -> Option<&ServiceEntry> {
        self.services.get(name)
    }
}
