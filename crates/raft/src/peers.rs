//! The HTTP peer transport: both ends.
//!
//! Sending: one task per peer drains a bounded queue, batches up to 256 messages (and at most
//! `MAX_BATCH_BYTES`) into one `POST /raft/v1/messages`, and backs off (50 ms doubling to 2 s)
//! while the peer is unreachable. A full queue or a failed batch drops messages (raft-rs is
//! told the peer was unreachable, and retransmits what matters). A snapshot goes alone, on a
//! task of its own, to `POST /raft/v1/snapshots`, so a large one never holds up heartbeats;
//! raft-rs is told whether it arrived, and sends it again if it did not.
//!
//! Receiving: the peer token authenticates the cluster; a sender that is not a member of the
//! group as this node knows it is refused (a node still joining, knowing no members yet,
//! accepts any holder of the token).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;

use crate::limits::{MAX_BATCH_BYTES, MAX_PEER_BODY_BYTES, MAX_SNAPSHOT_BYTES};
use crate::transport::{Report, Reports, Transport};
use crate::wire;
use crate::{ClusterHandle, Contact, Faults};

pub const PEER_MESSAGES_PATH: &str = "/raft/v1/messages";
/// Where a snapshot (one `MsgSnapshot`, alone) is posted.
pub const PEER_SNAPSHOTS_PATH: &str = "/raft/v1/snapshots";
/// Where a member serves the module bytes it holds to other members (peer token).
pub const PEER_BLOBS_PATH: &str = "/peer/v1/blobs";
/// Names the sending node (its raft id) on every peer request.
pub const PEER_FROM_HEADER: &str = "x-wasmkube-from";
const QUEUE: usize = 4096;
const BATCH: usize = 256;
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A batch of messages that takes longer than this has failed (the peer is told unreachable).
const MESSAGES_TIMEOUT: Duration = Duration::from_secs(5);
/// A snapshot of a large store takes a while to send on a slow link.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// After a snapshot to a peer failed, the next one waits this long, doubling with each
/// failure up to `SNAPSHOT_BACKOFF_MAX`: a peer that cannot take a snapshot (down, or too
/// slow for it) is not sent a store's worth of bytes again on every heartbeat.
const SNAPSHOT_BACKOFF_START: Duration = Duration::from_secs(1);
const SNAPSHOT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The one HTTP client a node uses for its peer traffic (raft messages, snapshots, module
/// copies, relayed requests): one connection pool per peer, not one per part. Timeouts are
/// per request.
pub fn peer_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the peer HTTP client: {e}"))
}

/// GETs `url` from a member with the peer `token` (as member `from`), within `timeout`,
/// reading at most `max_bytes` of its body (more is an error, not a truncation).
pub async fn peer_get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    from: u64,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let get = async {
        let mut response = http
            .get(url)
            .bearer_auth(token)
            .header(PEER_FROM_HEADER, from.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(format!("larger than the {max_bytes} byte limit"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, get).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

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
    /// The driver's delivery reports (set once the driver starts).
    reports: std::sync::OnceLock<std::sync::Mutex<Reports>>,
    /// Where each peer that took a batch is noted (set once the driver starts).
    contact: std::sync::OnceLock<Arc<Contact>>,
    /// Per peer whose last snapshot failed: not before when to send the next, and the wait
    /// that set it.
    snapshot_backoff: std::sync::Mutex<HashMap<u64, (std::time::Instant, Duration)>>,
}

struct Link {
    url: String,
    queue: mpsc::Sender<Message>,
}

impl PeerTransport {
    /// A transport for node `from`, authenticating with the cluster's peer `token`, sending
    /// with `http` (the node's one pooled peer client, see `peer_client`). Call from within a
    /// tokio runtime: the per-peer tasks run on it.
    pub fn new(from: u64, token: String, http: reqwest::Client) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| format!("no tokio runtime: {e}"))?;
        let links = RwLock::new(HashMap::new());
        let faults = Arc::new(Faults::default());
        let reports = std::sync::OnceLock::new();
        let snapshot_backoff = std::sync::Mutex::default();
        let contact = std::sync::OnceLock::new();
        Ok(PeerTransport {
            inner: Arc::new(Inner {
                from,
                faults,
                token,
                http,
                links,
                runtime,
                reports,
                contact,
                snapshot_backoff,
            }),
        })
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

impl Inner {
    /// How long the next snapshot to `to` must wait (zero unless the last one failed lately).
    fn snapshot_wait(&self, to: u64) -> Duration {
        let backoff = self.snapshot_backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff
            .get(&to)
            .map_or(Duration::ZERO, |(at, _)| at.saturating_duration_since(std::time::Instant::now()))
    }

    /// Records how a snapshot to `to` went; after a failure, the wait before the next one.
    fn snapshot_sent(&self, to: u64, delivered: bool) -> Option<Duration> {
        let mut backoff = self.snapshot_backoff.lock().unwrap_or_else(|p| p.into_inner());
        if delivered {
            backoff.remove(&to);
            return None;
        }
        let next = backoff
            .get(&to)
            .map_or(SNAPSHOT_BACKOFF_START, |(_, last)| (*last * 2).min(SNAPSHOT_BACKOFF_MAX));
        backoff.insert(to, (std::time::Instant::now() + next, next));
        Some(next)
    }

    fn report(&self, report: Report) {
        if let Some(reports) = self.reports.get() {
            let _ = reports.lock().unwrap_or_else(|p| p.into_inner()).send(report);
        }
    }
}

impl Transport for PeerTransport {
    fn attach(&self, reports: Reports, contact: Arc<Contact>) {
        let _ = self.inner.reports.set(std::sync::Mutex::new(reports));
        let _ = self.inner.contact.set(contact);
    }

    fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let links = self.inner.links.read().unwrap_or_else(|p| p.into_inner());
        let faults = &self.inner.faults;
        for m in messages {
            if faults.cut(m.to) || faults.drop_one() {
                // As a network that is down: the peer cannot be reached.
                if faults.cut(m.to)
                    && let Some(contact) = self.inner.contact.get()
                {
                    contact.failed(m.to);
                }
                // A lost snapshot is reported, as a failed send would be: raft-rs keeps the
                // peer waiting for it otherwise.
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.inner.report(Report::Snapshot { to: m.to, delivered: false });
                }
                continue;
            }
            let to = m.to;
            match links.get(&to) {
                Some(link) if m.get_msg_type() == MessageType::MsgSnapshot => {
                    let sender = Sender { to, url: link.url.clone(), inner: self.inner.clone() };
                    self.inner.runtime.spawn(sender.send_snapshot(m));
                }
                Some(link) => {
                    if link.queue.try_send(m).is_err() {
                        tracing::trace!("peer queue full; dropping a raft message");
                        self.inner.report(Report::Unreachable(to));
                    }
                }
                None => {
                    tracing::trace!(to, "no address for raft peer; dropping a message");
                    if m.get_msg_type() == MessageType::MsgSnapshot {
                        self.inner.report(Report::Snapshot { to, delivered: false });
                    }
                }
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
        let mut held: Option<Message> = None;
        loop {
            let first = match held.take() {
                Some(m) => m,
                None => match queue.recv().await {
                    Some(m) => m,
                    None => return,
                },
            };
            let (body, count) = batch(first, &mut queue, &mut held);
            let delay = self.inner.faults.delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match self.post(&endpoint, body, MESSAGES_TIMEOUT).await {
                Ok(()) => {
                    backoff = BACKOFF_START;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(peer = self.to, count, "raft messages not delivered: {e}");
                    if let Some(contact) = self.inner.contact.get() {
                        contact.failed(self.to);
                    }
                }
            }
            self.inner.report(Report::Unreachable(self.to));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends one snapshot on its own (after the back-off a failed one left), and tells
    /// raft-rs how it went.
    async fn send_snapshot(self, snapshot: Message) {
        let wait = self.inner.snapshot_wait(self.to);
        if !wait.is_zero() {
            tracing::debug!(peer = self.to, ?wait, "the last snapshot failed; waiting before the next");
            tokio::time::sleep(wait).await;
        }
        let endpoint = format!("{}{PEER_SNAPSHOTS_PATH}", self.url);
        let bytes = wire::encode(std::slice::from_ref(&snapshot));
        let size = bytes.len();
        let sent = if size > MAX_SNAPSHOT_BYTES {
            // The peer would refuse it (and the wire's u32 lengths end at 4 GiB): say so
            // rather than send it. The store quota keeps a store below this.
            Err(format!("the snapshot is {size} bytes, more than a peer accepts ({MAX_SNAPSHOT_BYTES})"))
        } else if self.inner.faults.lose_snapshot() {
            Err("lost in flight (injected fault)".to_string())
        } else {
            self.post(&endpoint, bytes, SNAPSHOT_TIMEOUT).await
        };
        let retry_in = self.inner.snapshot_sent(self.to, sent.is_ok());
        match (&sent, retry_in) {
            (Err(e), Some(wait)) => {
                tracing::warn!(peer = self.to, size, "snapshot not delivered: {e}; the next waits {wait:?}")
            }
            _ => tracing::info!(peer = self.to, size, "sent a snapshot"),
        }
        self.inner.report(Report::Snapshot { to: self.to, delivered: sent.is_ok() });
    }

    async fn post(&self, endpoint: &str, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
        let request = self
            .inner
            .http
            .post(endpoint)
            .bearer_auth(&self.inner.token)
            .header(PEER_FROM_HEADER, self.inner.from.to_string())
            .timeout(timeout)
            .body(body);
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                if let Some(contact) = self.inner.contact.get() {
                    contact.heard(self.to);
                }
                Ok(())
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(peer = self.to, %status, "peer refused raft messages: {text}");
                Err(format!("refused with {status}"))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Encodes `first` and whatever else is queued, up to `BATCH` messages and `MAX_BATCH_BYTES`
/// (the first always goes, whatever its size); a message that would overflow the batch is
/// `held` for the next. Returns the body and the number of messages in it.
fn batch(
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
    held: &mut Option<Message>,
) -> (Vec<u8>, usize) {
    let mut body = wire::encode(std::slice::from_ref(&first));
    let mut count = 1;
    while count < BATCH && body.len() < MAX_BATCH_BYTES {
        let Ok(m) = queue.try_recv() else { break };
        let more = wire::encode(std::slice::from_ref(&m));
        if body.len() + more.len() > MAX_BATCH_BYTES {
            *held = Some(m);
            break;
        }
        body.extend_from_slice(&more);
        count += 1;
    }
    (body, count)
}

#[derive(Clone)]
struct Receiver {
    handle: ClusterHandle,
    token: Arc<String>,
    faults: Arc<Faults>,
}

/// The receiving end, to be served on the node's API listener.
pub fn peer_router(handle: ClusterHandle, token: String, faults: Arc<Faults>) -> Router {
    // Each endpoint accepts what the sending side can produce, and no more (see `limits`).
    Router::new()
        .route(PEER_MESSAGES_PATH, post(receive).layer(DefaultBodyLimit::max(MAX_PEER_BODY_BYTES)))
        .route(PEER_SNAPSHOTS_PATH, post(receive_snapshot).layer(DefaultBodyLimit::max(MAX_SNAPSHOT_BYTES)))
        .with_state(Receiver { handle, token: Arc::new(token), faults })
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
    match accept(&r, &headers, &body, MAX_PEER_BODY_BYTES) {
        Ok((from, messages)) => deliver(&r, from, messages),
        Err(refused) => refused,
    }
}

async fn receive_snapshot(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (from, messages) = match accept(&r, &headers, &body, MAX_SNAPSHOT_BYTES) {
        Ok(accepted) => accepted,
        Err(refused) => return refused,
    };
    if messages.len() != 1 || messages.iter().any(|m| m.get_msg_type() != MessageType::MsgSnapshot) {
        return (StatusCode::BAD_REQUEST, "a snapshot request carries exactly one MsgSnapshot".into());
    }
    deliver(&r, from, messages)
}

/// The sender and its messages, once the request is authorized and decodes.
fn accept(
    r: &Receiver,
    headers: &HeaderMap,
    body: &[u8],
    max_message: usize,
) -> Result<(u64, Vec<Message>), (StatusCode, String)> {
    let from = authorize(r, headers)?;
    let messages = wire::decode(body, max_message).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    Ok((from, messages))
}

fn deliver(r: &Receiver, from: u64, messages: Vec<Message>) -> (StatusCode, String) {
    if messages.iter().any(|m| m.from != from) {
        return (StatusCode::BAD_REQUEST, format!("every message must come from node {from}"));
    }
    r.handle.contact().heard(from);
    for m in messages {
        if r.handle.step(m).is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "this node is shutting down".into());
        }
    }
    (StatusCode::NO_CONTENT, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn append_of(bytes: usize) -> Message {
        let entry = Entry { data: vec![7u8; bytes].into(), ..Default::default() };
        Message { to: 2, from: 1, entries: vec![entry].into(), ..Default::default() }
    }

    #[tokio::test]
    async fn batches_are_capped_in_bytes_and_a_large_message_goes_alone() {
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..10 {
            tx.send(append_of(1 << 20)).await.expect("queued");
        }
        let mut held = None;
        let (body, count) = batch(append_of(1 << 20), &mut rx, &mut held);
        assert_eq!(count, 3, "three 1 MiB messages fit under the 4 MiB cap, a fourth would not");
        assert!(body.len() <= MAX_BATCH_BYTES);
        assert!(held.is_some(), "the message that did not fit waits for the next batch");
        let (_, next) = batch(held.take().expect("held"), &mut rx, &mut held);
        assert_eq!(next, 3);

        let big = append_of(crate::limits::MAX_ENTRY_BYTES);
        let (body, count) = batch(big, &mut rx, &mut held);
        assert_eq!(count, 1, "a message at the entry limit goes alone");
        assert!(body.len() > MAX_BATCH_BYTES && body.len() <= MAX_PEER_BODY_BYTES, "and the peer accepts it");
        assert_eq!(wire::decode(&body, MAX_PEER_BODY_BYTES).expect("decodes").len(), 1);
    }

    #[tokio::test]
    async fn failed_snapshots_back_off_doubling_to_a_limit_and_a_delivered_one_resets() {
        let transport = PeerTransport::new(1, "t".into(), reqwest::Client::new()).expect("transport");
        let inner = &transport.inner;
        assert_eq!(inner.snapshot_wait(2), Duration::ZERO, "nothing failed yet");
        let waits: Vec<Duration> = (0..9).filter_map(|_| inner.snapshot_sent(2, false)).collect();
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let wait = inner.snapshot_wait(2);
        assert!(wait > Duration::from_secs(59) && wait <= SNAPSHOT_BACKOFF_MAX, "{wait:?}");
        assert_eq!(inner.snapshot_wait(3), Duration::ZERO, "other peers are not held back");
        assert_eq!(inner.snapshot_sent(2, true), None);
        assert_eq!(inner.snapshot_wait(2), Duration::ZERO, "a delivered snapshot resets the wait");
    }
}
