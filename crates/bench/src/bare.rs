//! The baseline: the same component behind a bare hyper server with wasmtime, no routing, no
//! control plane. It runs in its own process, as the wasmlet does, so both sides are alike.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use wasmkube_runtime::{HttpPod, LogBuffer, Runtime, RuntimeConfig, SandboxSpec};

pub async fn serve(wasm: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(wasm)?;
    let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = runtime.prepare("bare", &bytes)?;
    let spec = SandboxSpec {
        pod: "bare".into(),
        args: vec![],
        env: vec![],
        memory_limit: 64 << 20,
        ..Default::default()
    };
    let pod = Arc::new(HttpPod::new(runtime, &module, spec, LogBuffer::new(4096))?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let pod = pod.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let pod = pod.clone();
                async move { pod.handle(req).await }
            });
            let _ =
                http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The bare server as a child process; killed on drop.
pub struct BareServer {
    child: Child,
    pub addr: SocketAddr,
}

impl BareServer {
    pub fn spawn(wasm: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--wasm")
            .arg(wasm)
            .arg("serve-bare")
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let addr = line.trim().parse()?;
        Ok(BareServer { child, addr })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
