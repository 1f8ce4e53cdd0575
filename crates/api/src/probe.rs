//! Probes, as in the Kubernetes pod spec: `livenessProbe`, `readinessProbe` and
//! `startupProbe` with `httpGet`. For an http pod the probe is a request to its component
//! inside the node (no network hop), so `port`, `host` and `scheme` are accepted as
//! Kubernetes manifests carry them and have nothing to choose.

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Other handlers Kubernetes knows: refused with a clear error (a wasm pod has no
    /// process to exec in, no port to dial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Accepted as Kubernetes manifests carry it: a wasm instance stops at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Accepted (a number or a name); the component is called directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// Which probe a container carries, for its rules and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

impl Probe {
    /// The path requested (Kubernetes' default is `/`).
    pub fn path(&self) -> &str {
        self.http_get.as_ref().and_then(|h| h.path.as_deref()).unwrap_or("/")
    }

    pub fn headers(&self) -> &[HttpHeader] {
        self.http_get.as_ref().map(|h| h.http_headers.as_slice()).unwrap_or_default()
    }

    /// Kubernetes' defaults: no initial delay, every 10 s, 1 s to answer, 1 success, 3
    /// failures.
    pub fn initial_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.initial_delay_seconds.unwrap_or(0).into())
    }

    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.period_seconds.unwrap_or(10).into())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(1).into())
    }

    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1)
    }

    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }

    pub(crate) fn validate(&self, at: &str, kind: ProbeKind) -> Result<(), ValidationError> {
        let invalid =
            |field: &str, message: String| Err(ValidationError::new(format!("{at}.{field}"), message));
        if self.exec.is_some() || self.tcp_socket.is_some() || self.grpc.is_some() {
            return invalid(
                "httpGet",
                "only httpGet probes are supported (a wasm pod has no process to exec in and no port to dial)".into(),
            );
        }
        let Some(get) = &self.http_get else {
            return invalid("httpGet", "a probe needs an httpGet handler".into());
        };
        if let Some(path) = &get.path
            && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return invalid("httpGet.path", format!("{path:?} must start with / and hold no spaces"));
        }
        if let Some(scheme) = get.scheme.as_deref().filter(|s| !s.eq_ignore_ascii_case("HTTP")) {
            return invalid(
                "httpGet.scheme",
                format!("{scheme:?}: the component is called in-process, over HTTP"),
            );
        }
        for (i, h) in get.http_headers.iter().enumerate() {
            // A token (RFC 9110 §5.1) and a value of visible characters, spaces and tabs.
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            let visible = |c: char| c == '\t' || (' '..='~').contains(&c);
            if h.name.is_empty() || !h.name.chars().all(token) || !h.value.chars().all(visible) {
                return invalid(
                    &format!("httpGet.httpHeaders[{i}]"),
                    format!("{:?} is not a valid header", h.name),
                );
            }
        }
        for (field, value) in [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            if value == Some(0) {
                return invalid(field, "must be at least 1".into());
            }
        }
        if kind != ProbeKind::Readiness && self.success_threshold() != 1 {
            return invalid(
                "successThreshold",
                format!("must be 1 for a {} probe", kind.name().to_lowercase()),
            );
        }
        Ok(())
    }
}
