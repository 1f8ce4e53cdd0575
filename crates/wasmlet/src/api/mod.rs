//! The API server: Kubernetes-shaped paths and objects over the replicated store.
//!
//! Every route needs the admin bearer token. Writes become Raft proposals; reads come from
//! this node's applied state.

mod errors;
mod logs;
mod modules;
mod objects;
mod paths;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use wasmkube_raft::ClusterHandle;
use wasmkube_runtime::{Runtime, SandboxRegistry};
use wasmkube_store::{BlobStore, ObjectStore};

pub use errors::ApiError;

#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: ClusterHandle,
    store: Arc<ObjectStore>,
    blobs: Arc<BlobStore>,
    runtime: Arc<Runtime>,
    sandboxes: SandboxRegistry,
    token: String,
    max_module_bytes: usize,
}

impl ApiState {
    pub fn new(
        cluster: ClusterHandle,
        store: Arc<ObjectStore>,
        blobs: Arc<BlobStore>,
        runtime: Arc<Runtime>,
        sandboxes: SandboxRegistry,
        token: String,
        max_module_bytes: usize,
    ) -> Self {
        ApiState {
            inner: Arc::new(Inner { cluster, store, blobs, runtime, sandboxes, token, max_module_bytes }),
        }
    }
}

pub fn router(state: ApiState) -> Router {
    let body_limit = state.inner.max_module_bytes;
    let objects = any(objects::dispatch);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/version",
            get(|| async {
                axum::Json(
                    serde_json::json!({"gitVersion": env!("CARGO_PKG_VERSION"), "platform": "wasmkube"}),
                )
            }),
        )
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
        .fallback(|| async { ApiError::not_found("no such API path") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
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
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), state.inner.token.as_bytes())) {
        return Err(ApiError::unauthorized());
    }
    Ok(next.run(req).await)
}
