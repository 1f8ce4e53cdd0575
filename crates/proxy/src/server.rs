//! The proxy's HTTP front: Host → Service → pod, and the table refresher.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wasmkube_runtime::{RequestError, SandboxRegistry};
use wasmkube_store::{EventType, ObjectStore};

use crate::{EndpointTable, RouteCache, ServiceEntry};
use crate::{ServiceName, parse_host};

#[derive(Clone)]
pub struct ProxyState {
    table: Arc<RwLock<EndpointTable>>,
    node: HeaderValue,
}

impl ProxyState {
    pub fn new(node_name: &str) -> Self {
        ProxyState {
            table: Arc::default(),
            node: HeaderValue::from_str(node_name).unwrap_or(HeaderValue::from_static("unknown")),
        }
    }

    fn lookup(&self, name: &ServiceName) -> Option<Arc<ServiceEntry>> {
        self.read().lookup(name)
    }

    fn read(&self) -> RwLockReadGuard<'_, EndpointTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, EndpointTable> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the table now, then keeps it current until `shutdown` resolves: a change to a
    /// Service or Pod rebuilds the entries of the services it concerns; a change to the local
    /// sandboxes (or a store replaced by a snapshot, or a lagging stream) rebuilds it all.
    pub async fn keep_table_fresh(
        self,
        store: Arc<ObjectStore>,
        local: SandboxRegistry,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut changes = store.subscribe_all();
        let mut sandboxes = local.subscribe();
        let load = || {
            RouteCache::load(&store).unwrap_or_else(|e| {
                tracing::error!("proxy cannot read services and pods: {e}");
                RouteCache::default()
            })
        };
        let mut cache = load();
        let mut rebuild_all = true;
        let mut dirty: BTreeSet<ServiceName> = BTreeSet::new();
        loop {
            if rebuild_all {
                let table = cache.table(&local);
                *self.write() = table;
            } else {
                let entries: Vec<_> =
                    dirty.iter().map(|name| (name.clone(), cache.entry(name, &local))).collect();
                let mut table = self.write();
                for (name, entry) in entries {
                    table.set(name, entry);
                }
            }
            rebuild_all = false;
            dirty.clear();
            // Wait for a change that can move an endpoint, then take every change queued
            // behind it: under a storm of writes, rebuilds pace themselves.
            let mut reload = false;
            while dirty.is_empty() && !reload && !rebuild_all {
                tokio::select! {
                    _ = &mut shutdown => return,
                    r = changes.recv() => match r {
                        Ok(e) if e.type_ == EventType::Restored => reload = true,
                        Ok(e) => dirty.extend(cache.apply(&e)),
                        Err(RecvError::Lagged(_)) => reload = true,
                        Err(RecvError::Closed) => return,
                    },
                    r = sandboxes.changed() => if r.is_err() { return } else { rebuild_all = true },
                }
            }
            loop {
                match changes.try_recv() {
                    Ok(e) if e.type_ == EventType::Restored => reload = true,
                    Ok(e) => dirty.extend(cache.apply(&e)),
                    Err(TryRecvError::Lagged(_)) => reload = true,
                    Err(_) => break,
                }
            }
            if reload {
                cache = load();
                rebuild_all = true;
            }
        }
    }
}

pub fn router(state: ProxyState) -> Router {
    Router::new().fallback(proxy).with_state(state)
}

async fn proxy(State(state): State<ProxyState>, req: Request) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let Some(service) = parse_host(host) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{host:?} does not name a service (use <service>[.<namespace>])"),
        );
    };
    let Some(entry) = state.lookup(&service) else {
        return error(StatusCode::NOT_FOUND, format!("service {} not found", display(&service)));
    };
    if entry.endpoints.is_empty() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {} has no ready pods", display(&service)),
        );
    }
    // Only a request that was never sent moves on to the next pod: admission comes first.
    let Some((endpoint, admission)) = entry.candidates().into_iter().find_map(|i| {
        let ep = &entry.endpoints[i];
        ep.http.try_admit().map(|a| (ep, a))
    }) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("every pod of service {} is at its concurrency limit", display(&service)),
        );
    };
    let req = req.map(|body| body.map_err(|e| wasmtime_error(e.to_string())));
    let mut response = match endpoint.http.serve(admission, req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => request_error(&endpoint.pod, &e),
    };
    response.headers_mut().insert("x-wasmkube-pod", endpoint.pod_header.clone());
    response.headers_mut().insert("x-wasmkube-node", state.node.clone());
    response
}

fn wasmtime_error(msg: String) -> wasmkube_runtime::BodyError {
    wasmkube_runtime::BodyError::InternalError(Some(msg))
}

fn request_error(pod: &str, e: &RequestError) -> Response {
    let status = match e {
        RequestError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        RequestError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        RequestError::Trap(_) | RequestError::NoResponse(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, format!("pod {pod}: {e}"))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("wasmkube proxy: {message}\n"))
        .into_response()
}

fn display(s: &ServiceName) -> String {
    format!("{}/{}", s.namespace, s.name)
}
