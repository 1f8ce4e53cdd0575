//! Where the client finds its server and token: flags, then environment, then the config file
//! the first node wrote.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
    pub token: String,
}

/// `$WASMKUBE_CONFIG`, else `<config dir>/wasmkube/config.json`.
pub fn default_config_path() -> Option<PathBuf> {
    match std::env::var_os("WASMKUBE_CONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None => dirs::config_dir().map(|d| d.join("wasmkube").join("config.json")),
    }
}

impl ClientConfig {
    /// Resolves settings: explicit values (flags or env, as clap passes them) win over the file.
    pub fn resolve(server: Option<String>, token: Option<String>) -> Result<Self, ClientError> {
        let file = default_config_path().and_then(|p| Self::read(&p).ok());
        let server = server.or_else(|| file.as_ref().map(|f| f.server.clone()));
        let token = token.or_else(|| file.as_ref().map(|f| f.token.clone()));
        match (server, token) {
            (Some(server), Some(token)) => Ok(ClientConfig { server, token }),
            _ => Err(ClientError::Config(format!(
                "no cluster configured: start a wasmlet (it writes {}), or pass --server and --token (or WASMKUBE_SERVER and WASMKUBE_TOKEN)",
                default_config_path().map_or("the config file".into(), |p| p.display().to_string())
            ))),
        }
    }

    pub fn read(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Config(format!("{} is not a wasmkube config: {e}", path.display())))
    }
}
