//! Turning uploaded bytes into something runnable: check, compile (once), classify the world,
//! and pre-instantiate against the node's linker.

use std::sync::Arc;

use wasmkube_api::ModuleWorld;
use wasmtime::component::Component;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::Runtime;
use crate::host::HostState;

/// Why a module cannot run here. Each message tells the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly binary (it does not start with the \\0asm magic number)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "unsupported world: the component exports neither wasi:http/incoming-handler@0.2 (http) nor wasi:cli/run@0.2 (cli); it exports [{0}]"
    )]
    UnsupportedWorld(String),
    #[error("the component needs an import this node does not provide: {0}")]
    MissingImport(String),
}

/// A compiled, classified, pre-instantiated module. Shared by every pod that runs it.
pub struct PreparedModule {
    pub digest: String,
    pub world: ModuleWorld,
    pub(crate) proxy: Option<ProxyPre<HostState>>,
    pub(crate) command: Option<CommandPre<HostState>>,
}

/// Why `prepare_off_thread` did not produce a module.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("the compile task failed: {0}")]
    Task(String),
}

impl Runtime {
    /// `prepare` on a blocking thread, at most `concurrent_compiles` at once across the node:
    /// compiling never runs on the async workers that serve the API, the proxy and the
    /// heartbeat, and a burst of compiles queues instead of taking every core.
    pub async fn prepare_off_thread(
        self: &Arc<Self>,
        digest: String,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<Arc<PreparedModule>, PrepareError> {
        if let Some(p) = self.prepared(&digest) {
            return Ok(p);
        }
        let _permit = self.compiles.acquire().await.map_err(|e| PrepareError::Task(e.to_string()))?;
        let runtime = self.clone();
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&digest, bytes.as_ref()))
            .await
            .map_err(|e| PrepareError::Task(e.to_string()))?;
        Ok(prepared?)
    }

    /// Checks, compiles and pre-instantiates `bytes`, or returns the module prepared earlier.
    /// Compiling is CPU-heavy: call from a blocking context.
    pub fn prepare(&self, digest: &str, bytes: &[u8]) -> Result<Arc<PreparedModule>, ModuleError> {
        if let Some(p) = self.prepared(digest) {
            return Ok(p);
        }
        check_header(bytes)?;
        let component =
            Component::new(&self.engine, bytes).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        let world = classify(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::MissingImport(format!("{e:#}")))?;
        let prepared = match world {
            ModuleWorld::Http => PreparedModule {
                digest: digest.to_string(),
                world,
                proxy: Some(ProxyPre::new(pre).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?),
                command: None,
            },
            ModuleWorld::Cli => PreparedModule {
                digest: digest.to_string(),
                world,
                proxy: None,
                command: Some(CommandPre::new(pre).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?),
            },
        };
        let prepared = Arc::new(prepared);
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// A module already prepared on this node.
    pub fn prepared(&self, digest: &str) -> Option<Arc<PreparedModule>> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned()
    }
}

fn check_header(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.get(..4) != Some(b"\0asm") {
        return Err(ModuleError::NotWasm);
    }
    // Core modules are version 1 (01 00 00 00); components use layer 1 (xx xx 01 00).
    match bytes.get(4..8) {
        Some([1, 0, 0, 0]) => Err(ModuleError::CoreModule),
        Some([_, _, 1, 0]) => Ok(()),
        _ => Err(ModuleError::Invalid("unknown binary version".into())),
    }
}

fn classify(engine: &wasmtime::Engine, component: &Component) -> Result<ModuleWorld, ModuleError> {
    let exports: Vec<String> =
        component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
    let has = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
    if has("wasi:http/incoming-handler@0.2") {
        Ok(ModuleWorld::Http)
    } else if has("wasi:cli/run@0.2") {
        Ok(ModuleWorld::Cli)
    } else {
        Err(ModuleError::UnsupportedWorld(exports.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_problem() {
        assert!(matches!(check_header(b"hello world"), Err(ModuleError::NotWasm)));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(ModuleError::CoreModule)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
