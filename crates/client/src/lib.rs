//! A typed HTTP client for the wasmkube API, used by `wasmctl`, tests and (later) peers.
//! It speaks only `wasmkube-api` types and Kubernetes paths; it holds no state but the
//! server address and token.

mod config;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wasmkube_api::{KindInfo, Module, ObjectList, Resource, Status};

pub use config::{ClientConfig, default_config_path};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Status error.
    #[error("{} ({})", .0.message, .0.code)]
    Api(Box<Status>),
    #[error("cannot reach the wasmkube API at {server}: {source}")]
    Unreachable { server: String, source: reqwest::Error },
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(s) => Some(s.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// `object` as JSON that names its `apiVersion` and `kind` (the server requires them), even
/// when the struct was built with them left empty.
fn typed_body<T: Resource>(object: &T) -> Result<Value> {
    let mut body = serde_json::to_value(object).map_err(|e| ClientError::Decode(e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        for (field, value) in [("apiVersion", T::KIND.api_version), ("kind", T::KIND.kind)] {
            if fields.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                fields.insert(field.to_string(), Value::String(value.to_string()));
            }
        }
    }
    Ok(body)
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            server: config.server.trim_end_matches('/').to_string(),
            token: config.token.clone(),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.server)).bearer_auth(&self.token)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { server: self.server.clone(), source })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(ClientError::Api(Box::new(
            serde_json::from_str(&text).unwrap_or_else(|_| Status::failure(code, "Unknown", text)),
        )))
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET any API path as JSON.
    pub async fn get_path(&self, path: &str) -> Result<Value> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// POST a JSON body to any API path; returns the JSON answer.
    pub async fn post_path(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// PUT a JSON body to any API path; returns the JSON answer.
    pub async fn put_path(&self, path: &str, body: &Value) -> Result<Value> {
        self.json(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// DELETE any API path.
    pub async fn delete_path(&self, path: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, path)).await.map(drop)
    }

    pub async fn get<T: Resource>(&self, namespace: Option<&str>, name: &str) -> Result<T> {
        self.json(self.request(reqwest::Method::GET, &T::KIND.object_path(namespace, name))).await
    }

    /// Lists `T` in `namespace`, or in every namespace when `None`.
    pub async fn list<T: Resource>(&self, namespace: Option<&str>) -> Result<Vec<T>> {
        let list: ObjectList<T> =
            self.json(self.request(reqwest::Method::GET, &T::KIND.collection_path(namespace))).await?;
        Ok(list.items)
    }

    pub async fn create<T: Resource>(&self, object: &T) -> Result<T> {
        let path = T::KIND.collection_path(object.meta().namespace.as_deref());
        self.json(self.request(reqwest::Method::POST, &path).json(&typed_body(object)?)).await
    }

    pub async fn update<T: Resource>(&self, object: &T) -> Result<T> {
        let meta = object.meta();
        let path = T::KIND.object_path(meta.namespace.as_deref(), &meta.name);
        self.json(self.request(reqwest::Method::PUT, &path).json(&typed_body(object)?)).await
    }

    pub async fn delete(&self, kind: &KindInfo, namespace: Option<&str>, name: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &kind.object_path(namespace, name))).await.map(drop)
    }

    /// Sets a Deployment's replicas through its scale subresource.
    pub async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<()> {
        let path = format!("{}/scale", wasmkube_api::Deployment::KIND.object_path(Some(namespace), name));
        let body = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": replicas}});
        self.send(self.request(reqwest::Method::PUT, &path).json(&body)).await.map(drop)
    }

    /// Uploads a component; returns its Module (the existing one if already uploaded).
    pub async fn upload_module(&self, bytes: Vec<u8>) -> Result<Module> {
        let path = Module::KIND.collection_path(None);
        let req =
            self.request(reqwest::Method::POST, &path).header("content-type", "application/wasm").body(bytes);
        self.json(req).await
    }

    /// A pod's captured stdout/stderr, optionally only the last `tail` lines.
    pub async fn logs(&self, namespace: &str, pod: &str, tail: Option<usize>) -> Result<String> {
        let mut path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/log");
        if let Some(n) = tail {
            path.push_str(&format!("?tailLines={n}"));
        }
        self.send(self.request(reqwest::Method::GET, &path))
            .await?
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }
}
