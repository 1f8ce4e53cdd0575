//! Generic CRUD over every kind: list, get, create, update, delete, the status and scale
//! subresources, and watches.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wasmkube_api::{DEFAULT_NAMESPACE, MAX_OBJECT_BYTES, labels_match};
use wasmkube_raft::ProposeError;
use wasmkube_store::{ApplyError, ObjectKey};

use crate::{Write, WriteError};

use super::paths::Target;
use super::{ApiError, ApiState, logs, modules, node_ports, watch};

pub async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    headers: http::HeaderMap,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let target = Target::from_params(&params)?;
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::too_large(state.parts().max_module_bytes),
        other => ApiError::bad_request(other.body_text()),
    })?;
    if target.kind.kind != "Module" && body.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::too_large(MAX_OBJECT_BYTES));
    }
    if method == Method::POST || method == Method::PUT {
        check_content_type(&target, &headers)?;
    }
    if target.kind.kind == "ReplicaSet" && method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "ReplicaSets are a Deployment's revisions, kept by its controller: change the Deployment \
             (or `wasmctl rollout undo`) instead",
        ));
    }
    if method == Method::GET && !is_watch(&query) && target.sub.as_deref() != Some("log") {
        consistent_read(&state, &query).await?;
    }
    match (target.sub.as_deref(), target.name.is_some(), &method) {
        (None, false, &Method::GET) if is_watch(&query) => watch::stream(&state, &target, &query).await,
        (None, false, &Method::GET) => list(&state, &target, &query),
        (None, false, &Method::POST) if target.kind.kind == "Module" => modules::upload(&state, body).await,
        (None, false, &Method::POST) => create(&state, &target, &body).await,
        (None, true, &Method::GET) => get(&state, &target).map(|v| Json(v).into_response()),
        (None, true, &Method::PUT) if target.kind.kind == "Module" => {
            Err(ApiError::method_not_allowed("modules are immutable: upload the new bytes as a new module"))
        }
        (None, true, &Method::PUT) => update(&state, &target, &body).await,
        (None, true, &Method::DELETE) => delete(&state, &target).await,
        (Some("status"), true, &Method::GET) => get(&state, &target).map(|v| Json(v).into_response()),
        (Some("status"), true, &Method::PUT) => update_status(&state, &target, &body).await,
        (Some("scale"), true, _) if target.kind.kind == "Deployment" => {
            scale(&state, &target, &method, &body).await
        }
        (Some("log"), true, &Method::GET) if target.kind.kind == "Pod" => {
            logs::pod_log(&state, &target, &query)
        }
        (Some(sub), _, _) => {
            Err(ApiError::not_found(format!("{} has no subresource {sub:?}", target.kind.plural)))
        }
        (None, _, m) => {
            Err(ApiError::method_not_allowed(format!("{m} is not supported on {}", target.describe())))
        }
    }
}

/// A body in a format this server does not read is refused (415), as Kubernetes does: JSON for
/// objects, the raw bytes for modules. A body sent without a Content-Type is read as such.
fn check_content_type(target: &Target, headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else { return Ok(()) };
    let media = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let accepted: &[&str] = if target.kind.kind == "Module" && target.sub.is_none() {
        // JSON too, so a JSON body gets the message that says how to upload a module.
        &["application/wasm", "application/octet-stream", "application/json"]
    } else {
        &["application/json"]
    };
    if accepted.contains(&media.as_str()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!("the body's Content-Type {media:?} is not supported here; send {}", accepted.join(" or ")),
    ))
}

/// Reads are linearizable by default: a Raft ReadIndex barrier first. `resourceVersion=0`
/// asks, as in Kubernetes, for whatever this node has (cheaper, possibly stale).
async fn consistent_read(state: &ApiState, query: &HashMap<String, String>) -> Result<(), ApiError> {
    if query.get("resourceVersion").map(String::as_str) == Some("0") {
        return Ok(());
    }
    state.parts().cluster.read_barrier().await.map_err(|e| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("cannot confirm a consistent read ({e}); add resourceVersion=0 to read this node's possibly stale copy"),
        )
    })
}

fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

fn key(target: &Target) -> Result<ObjectKey, ApiError> {
    Ok(ObjectKey::new(target.kind.kind, target.namespace.as_deref(), target.name()?))
}

fn get(state: &ApiState, target: &Target) -> Result<Value, ApiError> {
    state
        .parts()
        .store
        .get(&key(target)?)?
        .ok_or_else(|| ApiError::not_found(format!("{} not found", target.describe())))
}

fn list(state: &ApiState, target: &Target, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let selector = parse_selector(query.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let (items, revision) = state.parts().store.list(target.kind.kind, target.namespace.as_deref())?;
    let items: Vec<Value> =
        items.into_iter().filter(|v| selector.is_empty() || labels_match(&selector, &labels_of(v))).collect();
    Ok(Json(json!({
        "apiVersion": target.kind.api_version,
        "kind": format!("{}List", target.kind.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
    .into_response())
}

/// What an object names must be there: an autoscaler's Deployment (refused otherwise, and
/// nothing stored), and its idle window must be a duration.
fn check_references(state: &ApiState, target: &Target, object: &Value) -> Result<(), ApiError> {
    if target.kind.kind != "HorizontalPodAutoscaler" {
        return Ok(());
    }
    let ns = target.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let invalid = |field: &str, message: String| {
        ApiError::invalid(format!(
            "HorizontalPodAutoscaler.autoscaling {name:?} is invalid: {field}: {message}"
        ))
    };
    let deployment = object.pointer("/spec/scaleTargetRef/name").and_then(Value::as_str).unwrap_or_default();
    if state.parts().store.get(&ObjectKey::new("Deployment", Some(ns), deployment))?.is_none() {
        return Err(invalid("spec.scaleTargetRef.name", format!("deployment {ns}/{deployment} not found")));
    }
    let annotation =
        format!("/metadata/annotations/{}", wasmkube_api::SCALE_TO_ZERO_AFTER.replace('/', "~1"));
    if let Some(idle) = object.pointer(&annotation).and_then(Value::as_str)
        && humantime::parse_duration(idle).is_err()
    {
        let field = format!("metadata.annotations[{}]", wasmkube_api::SCALE_TO_ZERO_AFTER);
        return Err(invalid(&field, format!("{idle:?} is not a duration (examples: 60s, 5m)")));
    }
    Ok(())
}

/// `a=b,c=d` equality selectors.
pub(super) fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, ApiError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim_start_matches('=').trim().to_string()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "labelSelector {p:?}: only key=value selectors are supported"
                    ))
                })
        })
        .collect()
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(v["metadata"]["labels"].clone()).unwrap_or_default()
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))
}

/// Parses `body` as an object at `target`, with the path's namespace and name (the object
/// itself is checked by the `Write` made of it).
fn admit(target: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let mut value = parse_body(body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let meta = &mut value["metadata"];
    if meta.is_null() {
        *meta = json!({});
    }
    if target.kind.namespaced {
        let path_ns = target.namespace.clone().unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        match meta.get("namespace").and_then(Value::as_str) {
            None => meta["namespace"] = Value::String(path_ns),
            Some(ns) if ns == path_ns => {}
            Some(ns) => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({ns}) does not match the namespace of the path ({path_ns})"
                )));
            }
        }
    }
    if let Some(name) = &target.name
        && meta.get("name").and_then(Value::as_str) != Some(name.as_str())
    {
        return Err(ApiError::bad_request(format!("metadata.name must be {name:?}, the name in the path")));
    }
    Ok(value)
}

async fn create(state: &ApiState, target: &Target, body: &Bytes) -> Result<Response, ApiError> {
    if target.kind.namespaced && target.namespace.is_none() {
        return Err(ApiError::bad_request(format!(
            "create {} in a namespace: POST .../namespaces/<ns>/{}",
            target.kind.plural, target.kind.plural
        )));
    }
    let mut object = admit(target, body)?;
    check_references(state, target, &object)?;
    let meta = &mut object["metadata"];
    if meta.get("resourceVersion").is_some() {
        return Err(ApiError::bad_request(
            "metadata.resourceVersion must not be set on objects to be created",
        ));
    }
    // The server names the object's identity and birth, never the client.
    if let Some(meta) = meta.as_object_mut() {
        meta.remove("uid");
        meta.remove("creationTimestamp");
    }
    let created =
        write_allocating(state, target, object, |object| Write::create_json(target.kind, object)).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn update(state: &ApiState, target: &Target, body: &Bytes) -> Result<Response, ApiError> {
    let object = admit(target, body)?;
    check_references(state, target, &object)?;
    let precondition = revision_in(&object)?;
    let updated = write_allocating(state, target, object, |object| {
        Write::update_json(target.kind, object, precondition)
    })
    .await?;
    Ok(Json(updated).into_response())
}

/// How often a write whose allocated nodePort another writer took meanwhile is tried again.
const ALLOCATION_ATTEMPTS: usize = 3;

/// Writes `object` (made a `Write` by `make`), with what the server allocates for it first: a
/// Service's nodePorts. An allocated port that another Service took since it was picked is
/// picked again.
async fn write_allocating(
    state: &ApiState,
    target: &Target,
    object: Value,
    make: impl Fn(Value) -> Result<Write, WriteError>,
) -> Result<Value, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut object = object.clone();
        let allocated = if target.kind.kind == "Service" {
            let store = state.parts().objects.store();
            let current = match ObjectKey::of(&object) {
                Some(key) => store.get(&key)?,
                None => None,
            };
            node_ports::allocate(store, &mut object, current.as_ref())?
        } else {
            false
        };
        match state.parts().objects.write(make(object)?).await {
            Err(WriteError::Propose(ProposeError::Rejected(ApplyError::Unprocessable(_))))
                if allocated && attempt < ALLOCATION_ATTEMPTS =>
            {
                continue;
            }
            other => return Ok(other?),
        }
    }
}

async fn update_status(state: &ApiState, target: &Target, body: &Bytes) -> Result<Response, ApiError> {
    let object = admit(target, body)?;
    let precondition = revision_in(&object)?;
    // The whole object is checked, as it would be stored.
    let object = wasmkube_api::validate_object(target.kind, object)
        .map_err(|error| WriteError::Invalid { kind: target.kind.kind, error })?;
    let status = object.get("status").cloned().unwrap_or(Value::Null);
    let write =
        Write::status_json(target.kind, target.namespace.as_deref(), target.name()?, status, precondition);
    let updated = state.parts().objects.write(write).await?;
    Ok(Json(updated).into_response())
}

async fn delete(state: &ApiState, target: &Target) -> Result<Response, ApiError> {
    let write = Write::delete(target.kind, target.namespace.as_deref(), target.name()?, None);
    let deleted = state.parts().objects.write(write).await?;
    Ok(Json(deleted).into_response())
}

fn revision_in(object: &Value) -> Result<Option<u64>, ApiError> {
    match object["metadata"].get("resourceVersion").and_then(Value::as_str) {
        None | Some("") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("resourceVersion {rv:?} is not one this server issued"))
        }),
    }
}

/// How often a scale without a resourceVersion is tried again when the Deployment changed
/// between its read and its write.
const SCALE_ATTEMPTS: usize = 5;

/// The `autoscaling/v1` Scale view of a Deployment. A write changes only `spec.replicas`: it
/// reads the Deployment at the latest revision (a read barrier first) and writes it back with
/// that revision as precondition, so a change made meanwhile (a new template, say) is never
/// overwritten: the scale is tried again on top of it (or, when the caller named a
/// resourceVersion, refused with 409 as Kubernetes does).
async fn scale(
    state: &ApiState,
    target: &Target,
    method: &Method,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let deployment = match *method {
        Method::GET => get(state, target)?,
        Method::PUT => put_scale(state, target, body).await?,
        _ => return Err(ApiError::method_not_allowed(format!("{method} is not supported on scale"))),
    };
    let meta = &deployment["metadata"];
    Ok(Json(json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "resourceVersion": meta["resourceVersion"]},
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {"replicas": deployment["status"]["replicas"].as_u64().unwrap_or(0)},
    }))
    .into_response())
}

async fn put_scale(state: &ApiState, target: &Target, body: &Bytes) -> Result<Value, ApiError> {
    let scale = parse_body(body)?;
    let replicas = scale["spec"]["replicas"]
        .as_u64()
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| ApiError::invalid("Scale is invalid: spec.replicas must be a non-negative integer"))?;
    wasmkube_api::check_replicas("spec.replicas", replicas)
        .map_err(|e| ApiError::invalid(format!("Scale is invalid: {e}")))?;
    let expected = revision_in(&scale)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        consistent_read(state, &HashMap::new()).await?;
        let mut deployment = get(state, target)?;
        let read_at = revision_in(&deployment)?;
        if let (Some(expected), Some(read_at)) = (expected, read_at)
            && expected != read_at
        {
            return Err(ProposeError::Rejected(ApplyError::Conflict {
                key: key(target)?,
                expected,
                actual: read_at,
            })
            .into());
        }
        deployment["spec"]["replicas"] = Value::from(replicas);
        let write = Write::update_json(target.kind, deployment, read_at)?;
        match state.parts().objects.write(write).await {
            Err(WriteError::Propose(ProposeError::Rejected(ApplyError::Conflict { .. })))
                if expected.is_none() && attempt < SCALE_ATTEMPTS =>
            {
                continue;
            }
            other => return Ok(other?),
        }
    }
}
