//! The proxy's HTTP front: Host → Service → pod, and the table refresher.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use wasmkube_cache::{SharedCache, Subscription, Update};
use wasmkube_runtime::{Admission, HttpPod, RequestError, SandboxRegistry};

/// The longest a change waits for the table to be rebuilt under a burst of changes (see
/// `keep_table_fresh`).
const REBUILD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

use crate::cache::Affected;
use crate::outlier::Ejections;
use crate::remote::{Failed, REFUSED_HEADER, Remote, TARGET_POD_HEADER, TARGET_SERVICE_HEADER};
use crate::table::{Endpoint, Target};
use crate::{EndpointTable, RouteCache, ServiceEntry};
use crate::{ServiceName, parse_host};

#[derive(Clone)]
pub struct ProxyState {
    table: Arc<RwLock<EndpointTable>>,
    node_name: Arc<str>,
    node: HeaderValue,
    remote: Remote,
    /// Nodes that just failed a request, tried last for a while.
    ejections: Arc<Ejections>,
    /// Starts the pods of a Service scaled to zero (see `activate`); requests held for it,
    /// and the table's version, bumped at every rebuild, that they wait on.
    pub(crate) activator: Option<Arc<dyn crate::Activator>>,
    pub(crate) held: Arc<tokio::sync::Semaphore>,
    pub(crate) version: Arc<tokio::sync::watch::Sender<u64>>,
}

impl ProxyState {
    pub fn new(node_name: &str) -> Result<Self, String> {
        Ok(ProxyState {
            table: Arc::default(),
            node_name: node_name.into(),
            node: HeaderValue::from_str(node_name).unwrap_or(HeaderValue::from_static("unknown")),
            remote: Remote::new()?,
            ejections: Arc::default(),
            activator: None,
            held: Arc::new(tokio::sync::Semaphore::new(crate::MAX_HELD)),
            version: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Holds requests for Services scaled to zero while `activator` starts their pods.
    pub fn with_activator(mut self, activator: Arc<dyn crate::Activator>) -> Self {
        self.activator = Some(activator);
        self
    }

    /// `entry`'s endpoints in the order to try them: fewest outstanding first, those on
    /// ejected nodes last.
    fn order(&self, entry: &ServiceEntry) -> Vec<usize> {
        let mut order = entry.candidates();
        let ejected = self.ejections.current();
        if !ejected.is_empty() {
            // Stable: the order among the rest stays.
            order.sort_by_key(|&i| match &entry.endpoints[i].target {
                Target::Remote { proxy_url, .. } => ejected.contains(proxy_url),
                Target::Local(_) => false,
            });
        }
        order
    }

    pub(crate) fn lookup(&self, name: &ServiceName) -> Option<Arc<ServiceEntry>> {
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
        shared: SharedCache,
        local: SandboxRegistry,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut changes = shared.subscribe(&RouteCache::KINDS);
        let mut sandboxes = local.subscribe();
        let mut cache = RouteCache::load(&self.node_name, &changes);
        let mut stale = Stale { all: true, ..Stale::default() };
        loop {
            let started = tokio::time::Instant::now();
            if stale.all {
                let table = cache.table(&local);
                *self.write() = table;
            } else {
                let entries: Vec<_> =
                    stale.services.iter().map(|name| (name.clone(), cache.entry(name, &local))).collect();
                let mut table = self.write();
                for (name, entry) in entries {
                    table.set(name, entry);
                }
            }
            self.version.send_modify(|v| *v += 1);
            stale = Stale::default();
            let rebuilt_at = tokio::time::Instant::now();
            // Rebuilding costs the size of the entries rebuilt (10,000 endpoints for a big
            // Deployment): under a burst of changes, the next rebuild waits ten times as
            // long as this one took (at most `REBUILD_EVERY`), gathering changes meanwhile, so
            // rebuilds take at most about a tenth of the time. A small table is rebuilt at
            // once: a pod is routable as soon as it is Ready.
            let pause = ((rebuilt_at - started) * 10).min(REBUILD_EVERY);
            // Wait for a change that can move an endpoint, then take every change queued
            // behind it: under a storm of writes, rebuilds pace themselves.
            while stale.is_empty() {
                tokio::select! {
                    _ = &mut shutdown => return,
                    open = next_change(&mut changes, &mut sandboxes, &mut stale, &mut cache) => if !open { return },
                }
            }
            let gather_until = rebuilt_at + pause;
            loop {
                let queued = changes.drain();
                if !queued.is_empty() {
                    stale.note(&mut cache, queued);
                } else if tokio::time::Instant::now() < gather_until {
                    tokio::select! {
                        _ = &mut shutdown => return,
                        open = next_change(&mut changes, &mut sandboxes, &mut stale, &mut cache) => if !open { return },
                        _ = tokio::time::sleep_until(gather_until) => break,
                    }
                } else {
                    break;
                }
            }
            if stale.reload {
                cache = RouteCache::load(&self.node_name, &changes);
                stale.all = true;
            }
        }
    }
}

/// Waits for the next change to the store or to the local sandboxes and notes what it
/// requires of the table; false once either stream is gone.
async fn next_change(
    changes: &mut Subscription,
    sandboxes: &mut tokio::sync::watch::Receiver<u64>,
    stale: &mut Stale,
    cache: &mut RouteCache,
) -> bool {
    tokio::select! {
        r = changes.changed() => match r {
            Some(updates) => stale.note(cache, updates),
            None => return false,
        },
        r = sandboxes.changed() => match r {
            Ok(()) => stale.all = true,
            Err(_) => return false,
        },
    }
    true
}

/// What the changes seen since the table was last brought up to date require of it.
#[derive(Default)]
struct Stale {
    /// These services' entries.
    services: BTreeSet<ServiceName>,
    /// Every entry.
    all: bool,
    /// Reading the cache again first (the store was replaced, or the stream lagged).
    reload: bool,
}

impl Stale {
    fn note(&mut self, cache: &mut RouteCache, updates: Vec<Update>) {
        for update in updates {
            match update {
                // Everything is read again before the next rebuild.
                Update::Reset => self.reload = true,
                Update::Changed { kind, key, object } => match cache.apply(kind, &key, object.as_ref()) {
                    Affected::Services(names) => self.services.extend(names),
                    Affected::All => self.all = true,
                },
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.all && !self.reload
    }
}

pub fn router(state: ProxyState) -> Router {
    Router::new().fallback(proxy).with_state(state)
}

async fn proxy(State(state): State<ProxyState>, req: Request) -> Response {
    // Sent on by another node's proxy: the Service is named (the Host may not name one, for
    // a request that came in through a NodePort).
    let named = req.headers().get(TARGET_SERVICE_HEADER).and_then(|h| h.to_str().ok()).and_then(parse_host);
    if let Some(service) = named {
        return route(&state, &service, req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_string();
    let Some(service) = parse_host(&host) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{host:?} does not name a service (use <service>[.<namespace>])"),
        );
    };
    route(&state, &service, req).await
}

/// Serves `req` for `service`: from one of its pods, chosen here, or — when another node's
/// proxy chose it — from the pod named in the request.
pub(crate) async fn route(state: &ProxyState, service: &ServiceName, req: Request) -> Response {
    let Some(mut entry) = state.lookup(service) else {
        return error(StatusCode::NOT_FOUND, format!("service {} not found", display(service)));
    };
    // No pod ready: scaled to zero, perhaps; held while the first one starts.
    if entry.endpoints.is_empty()
        && let Some(ready) = crate::activate::wait_for_pods(state, service).await
    {
        entry = ready;
    }
    // Sent on by another node's proxy to one of this node's pods: serve exactly that pod,
    // and never send it on again.
    match req.headers().get(TARGET_POD_HEADER).cloned() {
        Some(pod) => serve_targeted(state, &entry, service, &pod, req).await,
        None => balance(state, &entry, service, req).await,
    }
}

/// Serves `req` from this node's sandbox of `pod`, or refuses it: a request another node's
/// proxy sent here is never sent on.
async fn serve_targeted(
    state: &ProxyState,
    entry: &ServiceEntry,
    service: &ServiceName,
    pod: &HeaderValue,
    req: Request,
) -> Response {
    let local = entry.endpoints.iter().find(|ep| ep.pod_header == pod).and_then(|ep| match &ep.target {
        Target::Local(http) => Some((ep, http)),
        Target::Remote { .. } => None,
    });
    let Some((endpoint, http)) = local else {
        return refused(format!("pod {pod:?} of service {} is not ready on this node", display(service)));
    };
    let Some(admission) = http.try_admit() else {
        return refused(format!("pod {} is at its concurrency limit", endpoint.pod));
    };
    serve_local(state, endpoint, http, admission, req).await
}

/// Bodies up to this size are read before a request is sent to a pod on another node, so
/// the request can go to another pod if that node cannot be reached; larger ones stream.
const REPLAYABLE_BODY: u64 = 64 * 1024;

/// A request's body: read (so it can be sent again) or streaming (sent once).
enum Payload {
    Read(bytes::Bytes),
    Streaming(Option<Body>),
}

impl Payload {
    async fn of(body: Body) -> Result<Payload, String> {
        if body.size_hint().upper().is_some_and(|n| n <= REPLAYABLE_BODY) {
            let read = body.collect().await.map_err(|e| format!("reading the request body: {e}"))?;
            return Ok(Payload::Read(read.to_bytes()));
        }
        Ok(Payload::Streaming(Some(body)))
    }

    /// The body for the next attempt (none left once a streaming one went).
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Read(bytes) => Some(Body::from(bytes.clone())),
            Payload::Streaming(body) => body.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Payload::Read(_))
    }
}

/// Sends `req` to one of the service's pods, least outstanding first, pods on nodes that
/// just failed a request last (outlier ejection). A request that no pod received moves on
/// to the next pod: a local pod admits it before it is handed over; another node's proxy
/// could not be reached, or answered that it served no pod. One that was sent and got no
/// answer (its node died mid-request) moves on once if it is idempotent. Either needs its
/// body again: bodies up to `REPLAYABLE_BODY` are read first, larger ones go to one pod.
async fn balance(state: &ProxyState, entry: &ServiceEntry, service: &ServiceName, req: Request) -> Response {
    if entry.endpoints.is_empty() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {} has no ready pods", display(service)),
        );
    }
    let (parts, body) = req.into_parts();
    let mut payload = match Payload::of(body).await {
        Ok(payload) => payload,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let idempotent = parts.method.is_idempotent();
    let Ok(service_header) = HeaderValue::from_str(&format!("{}.{}", service.name, service.namespace)) else {
        return error(StatusCode::BAD_REQUEST, format!("{} is not a valid service name", display(service)));
    };
    let mut resent = false;
    let mut unreachable = Vec::new();
    // Nodes that failed this request: their other pods are not tried for it.
    let mut failed_nodes: Vec<&str> = Vec::new();
    for i in state.order(entry) {
        let endpoint = &entry.endpoints[i];
        if let Target::Remote { proxy_url, .. } = &endpoint.target
            && failed_nodes.contains(&proxy_url.as_str())
        {
            continue;
        }
        match &endpoint.target {
            Target::Local(http) => {
                let Some(admission) = http.try_admit() else { continue };
                let Some(body) = payload.take() else { break };
                let req = Request::from_parts(parts, body);
                return serve_local(state, endpoint, http, admission, req).await;
            }
            Target::Remote { node, proxy_url, outstanding } => {
                let Some(body) = payload.take() else { break };
                let failed = match state
                    .remote
                    .send(proxy_url, &service_header, &endpoint.pod_header, outstanding, &parts, body)
                    .await
                {
                    Ok(response) => {
                        state.ejections.restore(proxy_url);
                        return response;
                    }
                    Err(failed) => failed,
                };
                let again = match &failed {
                    Failed::Refused(_) => true,
                    Failed::Unsent(_) => {
                        state.ejections.eject(proxy_url);
                        failed_nodes.push(proxy_url);
                        true
                    }
                    Failed::Lost(_) => {
                        state.ejections.eject(proxy_url);
                        failed_nodes.push(proxy_url);
                        idempotent && !std::mem::replace(&mut resent, true)
                    }
                };
                let (Failed::Unsent(e) | Failed::Refused(e) | Failed::Lost(e)) = failed;
                if !(again && payload.replayable()) {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        format!("pod {} on node {node}: {e}", endpoint.pod),
                    );
                }
                unreachable.push(format!("{node}: {e}"));
            }
        }
    }
    let why = if unreachable.is_empty() {
        "is at its concurrency limit".to_string()
    } else {
        format!("could not be reached ({})", unreachable.join("; "))
    };
    error(StatusCode::SERVICE_UNAVAILABLE, format!("every pod of service {} {why}", display(service)))
}

async fn serve_local(
    state: &ProxyState,
    endpoint: &Endpoint,
    http: &HttpPod,
    admission: Admission,
    req: Request,
) -> Response {
    let req = req.map(|body| body.map_err(|e| wasmtime_error(e.to_string())));
    let mut response = match http.serve(admission, req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => request_error(&endpoint.pod, &e),
    };
    // Only a proxy says a request was not served: a guest cannot, or a request it served
    // would be sent to another pod again.
    response.headers_mut().remove(REFUSED_HEADER);
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

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("wasmkube proxy: {message}\n"))
        .into_response()
}

/// A 503 saying that no pod received the request, so the proxy that sent it here may send it
/// to another pod.
fn refused(message: String) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(REFUSED_HEADER, HeaderValue::from_static("1"));
    response
}

fn display(s: &ServiceName) -> String {
    format!("{}/{}", s.namespace, s.name)
}
