//! Every failure answers with a Kubernetes `Status` object and a message a person can act on.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use wasmkube_api::Status;
use wasmkube_raft::ProposeError;
use wasmkube_store::ApplyError;

#[derive(Debug)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is required (see admin.token in the data dir)",
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than the {limit} byte limit"),
        )
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message.to_string())
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        let message = e.to_string();
        match e {
            ProposeError::Rejected(ApplyError::NotFound(_)) => {
                Self::new(StatusCode::NOT_FOUND, "NotFound", message)
            }
            ProposeError::Rejected(ApplyError::AlreadyExists(_)) => {
                Self::new(StatusCode::CONFLICT, "AlreadyExists", message)
            }
            ProposeError::Rejected(ApplyError::Conflict { .. }) => {
                Self::new(StatusCode::CONFLICT, "Conflict", message)
            }
            ProposeError::Rejected(ApplyError::Invalid(_)) => Self::bad_request(message),
            ProposeError::Rejected(ApplyError::Unprocessable(_)) => Self::invalid(message),
            ProposeError::NotLeader | ProposeError::Stopped => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
            }
            ProposeError::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message),
            ProposeError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", message)
            }
        }
    }
}

impl From<crate::WriteError> for ApiError {
    fn from(e: crate::WriteError) -> Self {
        match e {
            crate::WriteError::Invalid { .. } => Self::invalid(e.to_string()),
            crate::WriteError::QuotaExceeded { .. } => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", e.to_string())
            }
            crate::WriteError::Propose(e) => e.into(),
        }
    }
}

impl From<wasmkube_store::StoreError> for ApiError {
    fn from(e: wasmkube_store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = Status::failure(self.code.as_u16(), self.reason, self.message);
        (self.code, Json(status)).into_response()
    }
}
