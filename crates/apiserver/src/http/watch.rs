//! `?watch=true`: a stream of `{"type", "object"}` lines, from a resourceVersion or from now.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::json;
use tokio::time::Instant;
use wasmkube_api::Status;
use wasmkube_store::{Watch, WatchError};

use super::paths::Target;
use super::{ApiError, ApiState};

/// Watches end after this long unless `timeoutSeconds` says otherwise; clients re-watch from
/// the last resourceVersion they saw.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a watch from a revision this replica has not reached waits for it (a follower
/// may trail the revision a client read from the leader by a few milliseconds).
const FUTURE_WAIT: Duration = Duration::from_secs(3);

pub async fn stream(
    state: &ApiState,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let since = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("resourceVersion {rv:?} is not a number")))?,
        ),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse().map_err(|_| ApiError::bad_request("timeoutSeconds must be an integer"))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    if let Some(since) = since {
        await_revision(state, since).await?;
    }
    let watch = state.parts().store.watch(target.kind.kind, target.namespace.as_deref(), since).map_err(
        |e| match e {
            WatchError::Gone { .. } => ApiError::new(StatusCode::GONE, "Expired", e.to_string()),
            WatchError::Lagged(_) | WatchError::Store(_) => ApiError::internal(e),
        },
    )?;
    let deadline = Instant::now() + timeout;
    let events = futures::stream::unfold(Some(watch), move |watch| next_line(watch, deadline));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .map_err(ApiError::internal)
}

/// Waits (bounded) until this replica has reached `revision`; a revision it does not reach is
/// refused as Kubernetes refuses it, rather than watched as if it had been.
async fn await_revision(state: &ApiState, revision: u64) -> Result<(), ApiError> {
    let store = &state.parts().store;
    let deadline = Instant::now() + FUTURE_WAIT;
    while store.revision() < revision {
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {revision}, current: {}", store.revision()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn next_line(
    watch: Option<Watch>,
    deadline: Instant,
) -> Option<(Result<Bytes, Infallible>, Option<Watch>)> {
    let mut watch = watch?;
    match tokio::time::timeout_at(deadline, watch.next()).await {
        Ok(Some(Ok(event))) => {
            let line = json!({"type": event.type_.as_str(), "object": event.object});
            Some((Ok(to_line(&line)), Some(watch)))
        }
        Ok(Some(Err(e))) => {
            // As Kubernetes does: an ERROR event carrying a 410 Status, then the end.
            let status = Status::failure(
                410,
                "Expired",
                format!("{e}; list again and watch from the list's resourceVersion"),
            );
            Some((Ok(to_line(&json!({"type": "ERROR", "object": status}))), None))
        }
        Ok(None) | Err(_) => None,
    }
}

fn to_line(v: &serde_json::Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
