//! Turning a matched route into what it addresses.

use std::collections::HashMap;

use wasmkube_api::{KindInfo, find_kind_by_plural};

use super::ApiError;

/// What a request path names: a kind, maybe a namespace, maybe one object, maybe a subresource.
pub struct Target {
    pub kind: &'static KindInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let version = params.get("version").map(String::as_str).unwrap_or("");
        let api_version = match params.get("group") {
            Some(group) => format!("{group}/{version}"),
            None => version.to_string(),
        };
        let plural = params.get("plural").map(String::as_str).unwrap_or("");
        let kind = find_kind_by_plural(&api_version, plural).ok_or_else(|| {
            ApiError::not_found(format!("the server does not serve {plural:?} in {api_version:?}"))
        })?;
        let namespace = params.get("ns").cloned();
        if namespace.is_some() && !kind.namespaced {
            return Err(ApiError::not_found(format!("{} is not namespaced", kind.kind)));
        }
        Ok(Target { kind, namespace, name: params.get("name").cloned(), sub: params.get("sub").cloned() })
    }

    pub fn name(&self) -> Result<&str, ApiError> {
        self.name
            .as_deref()
            .ok_or_else(|| ApiError::method_not_allowed("this method needs an object name in the path"))
    }

    /// `kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => format!("{} {ns}/{n}", self.kind.kind),
            (None, Some(n)) => format!("{} {n}", self.kind.kind),
            _ => self.kind.plural.to_string(),
        }
    }
}
