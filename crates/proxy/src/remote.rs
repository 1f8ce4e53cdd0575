//! Requests for pods on other nodes: sent to that node's proxy, which serves exactly the pod
//! named in `TARGET_POD_HEADER` (and never sends it on), so a request crosses at most one hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};

/// Names the pod (in the Host's namespace) a request sent on by another node's proxy is for.
pub const TARGET_POD_HEADER: &str = "x-wasmkube-target-pod";

/// Names the Service (`<name>.<namespace>`) of a request sent on by another node's proxy:
/// one that came in through a NodePort has a Host that names none.
pub const TARGET_SERVICE_HEADER: &str = "x-wasmkube-target-service";

/// Set on an answer of a node's proxy that served no pod (the pod named is not ready there,
/// or is at its concurrency limit): the request may go to another pod.
pub const REFUSED_HEADER: &str = "x-wasmkube-refused";

/// Why a request sent on to another node got no answer from a pod.
#[derive(Debug)]
pub enum Failed {
    /// The node could not be reached: the request never left (it may go to another pod).
    Unsent(String),
    /// The node's proxy answered that it served no pod (it may go to another pod).
    Refused(String),
    /// It was sent, and the connection failed before an answer came: it may have been
    /// served, so only an idempotent request is sent again.
    Lost(String),
}

#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
}

impl Remote {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            // The serving node enforces the pod's request deadline; this only bounds a node
            // that stops answering altogether.
            .read_timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("building the proxy's client: {e}"))?;
        Ok(Remote { http })
    }

    /// Sends the request to `pod` of `service` through the proxy at `proxy_url` and streams the answer
    /// back (its `x-wasmkube-pod` and `x-wasmkube-node` headers come from that node).
    pub async fn send(
        &self,
        proxy_url: &str,
        service: &HeaderValue,
        pod: &HeaderValue,
        outstanding: &Arc<AtomicUsize>,
        parts: &http::request::Parts,
        body: Body,
    ) -> Result<Response, Failed> {
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut headers = end_to_end(&parts.headers);
        headers.insert(TARGET_POD_HEADER, pod.clone());
        headers.insert(TARGET_SERVICE_HEADER, service.clone());
        let request = self
            .http
            .request(parts.method.clone(), format!("{}{path}", proxy_url.trim_end_matches('/')))
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()));
        outstanding.fetch_add(1, Ordering::Relaxed);
        let _done = Decrement(outstanding.clone());
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) if e.is_connect() => return Err(Failed::Unsent(e.to_string())),
            Err(e) => return Err(Failed::Lost(format!("the pod's node did not answer: {e}"))),
        };
        if answer.status() == http::StatusCode::SERVICE_UNAVAILABLE
            && answer.headers().contains_key(REFUSED_HEADER)
        {
            return Err(Failed::Refused("its proxy served no pod (not ready there, or at its limit)".into()));
        }
        let (status, headers) = (answer.status(), end_to_end(answer.headers()));
        let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The headers that travel past one hop (RFC 9110 §7.6.1), the Host among them.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let mut out = headers.clone();
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
