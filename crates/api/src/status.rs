//! The Kubernetes `Status` object returned for every error.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: String,
    pub kind: String,
    /// "Failure" or "Success".
    pub status: String,
    pub message: String,
    /// Machine-readable: NotFound, AlreadyExists, Conflict, Invalid, Unauthorized, …
    pub reason: String,
    pub code: u16,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
        }
    }
}
