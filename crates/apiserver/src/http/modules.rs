//! Module upload: `POST /apis/wasmkube.io/v1/modules` with the component's bytes.
//!
//! The bytes are checked and compiled *before* anything is stored, so a bad upload leaves
//! nothing behind. Uploads are idempotent: the name is the sha256 digest.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use wasmkube_api::{Module, ModuleSpec, ObjectMeta};
use wasmkube_runtime::PrepareError;
use wasmkube_store::{BlobStore, ObjectKey};

use crate::{Write, WriteError};

use super::{ApiError, ApiState};

pub async fn upload(state: &ApiState, body: Bytes) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the upload is empty: send the component's bytes as the body"));
    }
    if body.first() == Some(&b'{') {
        return Err(ApiError::bad_request(
            "modules are created by uploading the wasm bytes (Content-Type: application/wasm), not JSON",
        ));
    }
    let digest = BlobStore::digest(&body);
    if let Some(existing) = state.parts().store.get(&ObjectKey::new("Module", None, &digest))? {
        return Ok(Json(existing).into_response());
    }
    let prepared = match state.parts().runtime.prepare_off_thread(digest.clone(), body.clone()).await {
        Ok(prepared) => prepared,
        Err(PrepareError::Module(e)) => {
            return Err(ApiError::bad_request(format!("the module was refused: {e}")));
        }
        Err(e @ PrepareError::Task(_)) => return Err(ApiError::internal(e)),
    };
    state.parts().blobs.put(&body)?;
    let module = Module {
        api_version: "wasmkube.io/v1".into(),
        kind: "Module".into(),
        metadata: ObjectMeta::named(None, &digest),
        spec: ModuleSpec {
            digest: format!("sha256:{digest}"),
            size: body.len() as u64,
            world: prepared.world.as_str().into(),
        },
    };
    match state.parts().objects.write(Write::create(&module)?).await {
        Ok(created) => Ok((StatusCode::CREATED, Json(created)).into_response()),
        // A concurrent upload of the same bytes won the race: same module, same answer.
        Err(WriteError::Propose(wasmkube_raft::ProposeError::Rejected(
            wasmkube_store::ApplyError::AlreadyExists(key),
        ))) => {
            let existing =
                state.parts().store.get(&key)?.ok_or_else(|| ApiError::internal("module vanished"))?;
            Ok(Json(existing).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /peer/v1/blobs/{digest}`: a module's bytes, for another member (peer token; members
/// only). The bytes are verified against the digest before they leave.
pub async fn serve_blob(
    State(state): State<ApiState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let parts = state.parts();
    if let Err((status, message)) =
        wasmkube_raft::authorize_peer(&parts.cluster, &parts.peer_token, &parts.faults, &headers)
    {
        return (status, message).into_response();
    }
    let delay = parts.faults.blob_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::BAD_REQUEST, "a blob is named by its hex sha256 digest".to_string())
            .into_response();
    }
    match parts.blobs.get(&digest) {
        Ok(Some(bytes)) => ([(http::header::CONTENT_TYPE, "application/wasm")], bytes).into_response(),
        Ok(None) => {
            (StatusCode::NOT_FOUND, format!("module sha256:{digest} is not on this node")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
