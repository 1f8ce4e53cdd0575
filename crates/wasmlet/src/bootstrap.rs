//! The data directory's layout, the admin token and the client config file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;

pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn open(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        let root = match flag {
            Some(p) => p,
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".local/share/wasmkube"))
                .context("no home directory; pass --data-dir")?,
        };
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(DataDir { root })
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    pub fn modules(&self) -> PathBuf {
        self.root.join("modules")
    }

    pub fn compile_cache(&self) -> PathBuf {
        self.root.join("compiled")
    }

    /// A small file of the data dir (trimmed), if present.
    pub fn read(&self, file: &str) -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(self.root.join(file)) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {file} in {}", self.root.display())),
        }
    }

    /// Writes a small private (0600) file of the data dir.
    pub fn write_private(&self, file: &str, contents: &str) -> anyhow::Result<()> {
        write_private(&self.root.join(file), contents.as_bytes())
    }

    /// The admin token, created (mode 0600) the first time the node starts.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let path = self.root.join("admin.token");
        if let Ok(token) = std::fs::read_to_string(&path) {
            return Ok(token.trim().to_string());
        }
        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        write_private(&path, token.as_bytes())?;
        Ok(token)
    }
}

/// Writes `{server, token}` where wasmctl looks for it without flags.
pub fn write_client_config(flag: Option<PathBuf>, server: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => wasmkube_client::default_config_path()
            .context("no config directory for this user; pass --client-config")?,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = wasmkube_client::ClientConfig { server: server.to_string(), token: token.to_string() };
    write_private(&path, serde_json::to_string_pretty(&config)?.as_bytes())?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The host name, for a node started without --name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".into())
}
