//! The HTTP API: Kubernetes-shaped paths and objects over the replicated store.
//!
//! Every route but health needs the admin bearer token. Writes go through the node's
//! `Objects` (validated and admitted as every other write); reads come from this node's
//! applied state.

mod cluster;
mod errors;
mod logs;
mod metrics;
mod modules;
mod node_ports;
mod objects;
mod paths;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, post};
use wasmkube_raft::ClusterHandle;
use wasmkube_runtime::{Runtime, SandboxRegistry};
use wasmkube_store::{BlobStore, ObjectStore};

pub use cluster::{JoinAnswer, JoinRequest};
pub use errors::ApiError;

#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

/// Everything the API serves from.
pub struct ApiParts {
    pub cluster: ClusterHandle,
    /// The one write path (built on `cluster`).
    pub objects: crate::Objects,
    pub store: Arc<ObjectStore>,
    pub blobs: Arc<BlobStore>,
    pub runtime: Arc<Runtime>,
    pub sandboxes: SandboxRegistry,
    /// The admin bearer token every route needs.
    pub admin_token: String,
    /// The cluster's peer secret, handed to nodes that join.
    pub peer_token: String,
    /// How many voting members the cluster keeps; later nodes join as learners.
    pub voters: usize,
    /// The peer transport's injected faults (set only through the debug-build endpoint).
    pub faults: Arc<wasmkube_raft::Faults>,
    pub max_module_bytes: usize,
    /// The node's pooled client for requests to other members (relays to the leader).
    pub peer_http: reqwest::Client,
    /// Resource metrics: this node's, and every member's on demand.
    pub metrics: crate::metrics::MetricsSource,
    /// Tasks a debug build can be asked to panic (`PUT /debug/v1/panic {"task": name}`), each
    /// with the switch that makes it panic at its next step.
    pub panic_switches: Vec<(&'static str, fn())>,
}

struct Inner {
    parts: ApiParts,
    /// Joins are decided one at a time (each picks the next free node id).
    join_lock: tokio::sync::Mutex<()>,
}

impl ApiState {
    pub fn new(parts: ApiParts) -> Self {
        ApiState { inner: Arc::new(Inner { parts, join_lock: tokio::sync::Mutex::new(()) }) }
    }

    fn parts(&self) -> &ApiParts {
        &self.inner.parts
    }
}

pub fn router(state: ApiState) -> Router {
    let body_limit = state.parts().max_module_bytes;
    let objects = any(objects::dispatch);
    Router::new()
        .route(
            "/version",
            get(|| async {
                axum::Json(
                    serde_json::json!({"gitVersion": env!("CARGO_PKG_VERSION"), "platform": "wasmkube"}),
                )
            }),
        )
        .route("/apis/metrics.k8s.io/v1beta1", get(metrics::discovery))
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metrics::nodes))
        .route("/apis/metrics.k8s.io/v1beta1/nodes/{name}", get(metrics::node))
        .route("/apis/metrics.k8s.io/v1beta1/pods", get(metrics::all_pods))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods", get(metrics::pods))
        .route("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}", get(metrics::pod))
        .route("/api/{version}/{plural}", objects.clone())
        .route("/api/{version}/{plural}/{name}", objects.clone())
        .route("/api/{version}/namespaces/{ns}/{plural}", objects.clone())
        .route("/api/{version}/namespaces/{ns}/{plural}/{name}", objects.clone())
        .route("/api/{version}/namespaces/{ns}/{plural}/{name}/{sub}", objects.clone())
        .route("/apis/{group}/{version}/{plural}", objects.clone())
        .route("/apis/{group}/{version}/{plural}/{name}", objects.clone())
        .route("/apis/{group}/{version}/namespaces/{ns}/{plural}", objects.clone())
        .route("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", objects.clone())
        .route("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{sub}", objects)
        .route("/cluster/v1/join-tokens", post(cluster::create_join_token))
        .route("/cluster/v1/members", get(cluster::members))
        .merge(on_leader(
            &state,
            Router::new().route(
                "/cluster/v1/members/{name}",
                delete(cluster::remove_member).put(cluster::update_member),
            ),
        ))
        .merge(faults_route())
        .fallback(|| async { ApiError::not_found("no such API path") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Health, as Kubernetes serves it, needs no token: service managers and load
        // balancers probe it.
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        // Joining is authenticated by the join token in the body, not the admin token.
        .merge(on_leader(&state, Router::new().route("/cluster/v1/join", post(cluster::join))))
        // Members copy module bytes from each other with the peer token.
        .route(&format!("{}/{{digest}}", wasmkube_raft::PEER_BLOBS_PATH), get(modules::serve_blob))
        .route(crate::metrics::PEER_METRICS_PATH, get(metrics::peer_report))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(limit_head))
        .with_state(state)
}

/// Longest request target (path and query) accepted.
const MAX_URI_BYTES: usize = 8 << 10;
/// Most bytes of request headers accepted (names and values).
const MAX_HEADER_BYTES: usize = 64 << 10;

/// Refuses an oversized request target (414) or header section (431) with a `Status`, as
/// every other error. (Past hyper's own limits — a 64 KiB target, a ~400 KB head — hyper
/// answers before any of this runs, with an empty body.)
async fn limit_head(req: Request, next: Next) -> Result<Response, ApiError> {
    let uri = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return Err(ApiError::new(
            http::StatusCode::URI_TOO_LONG,
            "RequestURITooLong",
            format!("the request target is {uri} bytes; at most {MAX_URI_BYTES} are accepted"),
        ));
    }
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            format!("the request headers are {headers} bytes; at most {MAX_HEADER_BYTES} are accepted"),
        ));
    }
    Ok(next.run(req).await)
}

/// Ready when this node knows a leader: it can then take writes and consistent reads.
async fn ready(State(state): State<ApiState>) -> (http::StatusCode, &'static str) {
    match state.parts().cluster.leader_id() {
        0 => (http::StatusCode::SERVICE_UNAVAILABLE, "no leader known: this node cannot serve writes yet"),
        _ => (http::StatusCode::OK, "ok"),
    }
}

/// `routes`, relayed to the leader when this node does not lead.
fn on_leader(state: &ApiState, routes: Router<ApiState>) -> Router<ApiState> {
    routes.route_layer(middleware::from_fn_with_state(state.clone(), cluster::on_leader))
}

/// `PUT /debug/v1/faults`: the test-only fault layer of the peer transport. Compiled only in
/// debug builds: a release wasmlet has no way to inject faults.
#[cfg(debug_assertions)]
fn faults_route() -> Router<ApiState> {
    use axum::Json;
    async fn set(
        State(state): State<ApiState>,
        Json(plan): Json<wasmkube_raft::FaultPlan>,
    ) -> Json<wasmkube_raft::FaultPlan> {
        tracing::warn!(?plan, "injected network faults");
        state.parts().faults.set(plan.clone());
        Json(plan)
    }
    async fn panic(
        State(state): State<ApiState>,
        Json(request): Json<serde_json::Value>,
    ) -> Result<String, ApiError> {
        let switches = &state.parts().panic_switches;
        let task = request["task"].as_str().unwrap_or("");
        match switches.iter().find(|(name, _)| *name == task) {
            Some((name, switch)) => {
                tracing::warn!("injecting a panic into the {name}");
                switch();
                Ok(format!("the {name} will panic at their next step"))
            }
            None => {
                let names: Vec<&str> = switches.iter().map(|(n, _)| *n).collect();
                Err(ApiError::bad_request(format!(
                    "name the task to panic, one of {names:?}: {{\"task\": \"controllers\"}}"
                )))
            }
        }
    }
    Router::new()
        .route("/debug/v1/faults", axum::routing::put(set))
        .route("/debug/v1/panic", axum::routing::put(panic))
}

#[cfg(not(debug_assertions))]
fn faults_route() -> Router<ApiState> {
    Router::new()
}

/// Refuses any request without the admin bearer token (constant-time comparison).
async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), state.parts().admin_token.as_bytes()))
    {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}
