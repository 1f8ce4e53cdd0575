//! The HTTP peer transport: both ends.
//!
//! Sending: one task per peer drains a bounded queue, batches up to 256 messages into one
//! `POST /raft/v1/messages`, and backs off (50 ms doubling to 2 s) while the peer is
//! unreachable. A full queue or a failed batch drops messages; raft retransmits what matters.
//!
//! Receiving: the peer token authenticates the cluster; a sender that is not a member of the
//! group as this node knows it is refused (a node still joining, knowing no members yet,
//! accepts any holder of the token).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use raft::prelude::Message;
use tokio::sync::mpsc;

use crate::transport::Transport;
use crate::wire;
use crate::{ClusterHandle, Faults};

pub const PEER_MESSAGES_PATH: &str = "/raft/v1/messages";
/// Names the sending node (its raft id) on every peer request.
pub const PEER_FROM_HEADER: &str = "x-wasmkube-from";
const QUEUE: usize = 4096;
const BATCH: usize = 256;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PeerTransport {
    inner: Arc<Inner>,
}

struct Inner {
    from: u64,
    faults: Arc<Faults>,
    token: String,
    http: reqwest::Client,
    links: RwLock<HashMap<u64, Link>>,
    runtime: tokio::runtime::Handle,
}

struct Link {
    url: String,
    queue: mpsc::Sender<Message>,
}

impl PeerTransport {
    /// A transport for node `from`, authenticating with the cluster's peer `token`. Call from
    /// within a tokio runtime: the per-peer tasks run on it.
    pub fn new(from: u64, token: String) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| format!("no tokio runtime: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("building the peer HTTP client: {e}"))?;
        let links = RwLock::new(HashMap::new());
        let faults = Arc::new(Faults::default());
        Ok(PeerTransport { inner: Arc::new(Inner { from, faults, token, http, links, runtime }) })
    }

    /// Sends to peer `id` at `url` (e.g. `http://10.0.0.2:7700`) from now on.
    pub fn set_peer(&self, id: u64, url: &str) {
        let mut links = self.inner.links.write().unwrap_or_else(|p| p.into_inner());
        if links.get(&id).is_some_and(|l| l.url == url) {
            return;
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        let sender = Sender { to: id, url: url.trim_end_matches('/').to_string(), inner: self.inner.clone() };
        self.inner.runtime.spawn(sender.run(rx));
        // Replacing the link drops the old queue, which ends the old task.
        links.insert(id, Link { url: url.to_string(), queue });
    }

    /// The injected faults this transport obeys (none unless a test sets them).
    pub fn faults(&self) -> Arc<Faults> {
        self.inner.faults.clone()
    }

    /// Stops sending to peer `id`.
    pub fn remove_peer(&self, id: u64) {
        self.inner.links.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

impl Transport for PeerTransport {
    fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        let faults = &self.inner.faults;
        for m in messages {
            if faults.cut(m.to) || faults.drop_one() {
                continue;
            }
            match links.get(&m.to) {
                Some(link) => {
                    if link.queue.try_send(m).is_err() {
                        tracing::trace!("peer queue full; dropping a raft message");
                    }
                }
                None => tracing::trace!(to = m.to, "no address for raft peer; dropping a message"),
            }
        }
    }
}

struct Sender {
    to: u64,
    url: String,
    inner: Arc<Inner>,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let endpoint = format!("{}{PEER_MESSAGES_PATH}", self.url);
        let mut backoff = BACKOFF_START;
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let delay = self.inner.faults.delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let sent = self
                .inner
                .http
                .post(&endpoint)
                .bearer_auth(&self.inner.token)
                .header(PEER_FROM_HEADER, self.inner.from.to_string())
                .body(wire::encode(&batch))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    backoff = BACKOFF_START;
                    continue;
                }
                Ok(r) => tracing::warn!(peer = self.to, status = %r.status(), "peer refused raft messages"),
                Err(e) => tracing::debug!(peer = self.to, "peer unreachable: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[derive(Clone)]
struct Receiver {
    handle: ClusterHandle,
    token: Arc<String>,
    faults: Arc<Faults>,
}

/// The receiving end, to be served on the node's API listener.
pub fn peer_router(handle: ClusterHandle, token: String, faults: Arc<Faults>) -> Router {
    Router::new().route(PEER_MESSAGES_PATH, post(receive)).with_state(Receiver {
        handle,
        token: Arc::new(token),
        faults,
    })
}

fn authorize(r: &Receiver, headers: &HeaderMap) -> Result<u64, (StatusCode, String)> {
    authorize_peer(&r.handle, &r.token, &r.faults, headers)
}

/// Checks a peer request: the cluster's peer `token` as a bearer token, and a sender (named
/// by the `PEER_FROM_HEADER` header) that is a member as this node knows the membership (a
/// node still joining, knowing none, accepts any holder of the token), and not cut off by
/// an injected fault. Returns the sender's id, or the status and message to refuse with.
pub fn authorize_peer(
    handle: &ClusterHandle,
    token: &str,
    faults: &Faults,
    headers: &HeaderMap,
) -> Result<u64, (StatusCode, String)> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), token.as_bytes())) {
        return Err((StatusCode::UNAUTHORIZED, "a valid peer token is required".into()));
    }
    let from =
        headers.get(PEER_FROM_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let Some(from) = from else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("the {PEER_FROM_HEADER} header must name the sending node"),
        ));
    };
    let members = handle.membership();
    if !members.voters.is_empty() && !members.contains(from) {
        return Err((StatusCode::FORBIDDEN, format!("node {from} is not a member of this cluster")));
    }
    if faults.cut(from) {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("partitioned from node {from} (injected fault)"),
        ));
    }
    Ok(from)
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let from = match authorize(&r, &headers) {
        Ok(from) => from,
        Err(refused) => return refused,
    };
    let messages = match wire::decode(&body) {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    if messages.iter().any(|m| m.from != from) {
        return (StatusCode::BAD_REQUEST, format!("every message must come from node {from}"));
    }
    for m in messages {
        if r.handle.step(m).is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "this node is shutting down".into());
        }
    }
    (StatusCode::NO_CONTENT, String::new())
}
