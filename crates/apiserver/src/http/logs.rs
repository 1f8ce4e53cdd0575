//! `GET .../pods/{name}/log`: the pod's captured stdout and stderr.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use http::header;

use super::paths::Target;
use super::{ApiError, ApiState};

pub fn pod_log(
    state: &ApiState,
    target: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let ns = target.namespace.as_deref().unwrap_or(wasmkube_api::DEFAULT_NAMESPACE);
    let name = target.name()?;
    let local = state.parts().sandboxes.get(&format!("{ns}/{name}")).ok_or_else(|| {
        ApiError::not_found(format!("pod {ns}/{name} is not running on this node, so it has no logs here"))
    })?;
    let text = String::from_utf8_lossy(&local.logs.contents()).into_owned();
    let text = match query.get("tailLines").map(|n| n.parse::<usize>()) {
        Some(Ok(n)) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if !tail.is_empty() {
                tail.push('\n');
            }
            tail
        }
        Some(Err(_)) => return Err(ApiError::bad_request("tailLines must be a non-negative integer")),
        None => text,
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
