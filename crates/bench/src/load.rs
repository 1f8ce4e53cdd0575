//! A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the
//! next request when the previous answer is read, for a fixed time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Returns successful requests per second.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let host = host.to_string();
        workers.spawn(async move { worker(addr, host, deadline).await });
    }
    let start = Instant::now();
    let mut ok = 0u64;
    while let Some(r) = workers.join_next().await {
        ok += r??;
    }
    Ok(ok as f64 / start.elapsed().as_secs_f64())
}

async fn worker(addr: SocketAddr, host: String, deadline: Instant) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ok = 0;
    while Instant::now() < deadline {
        let req = hyper::Request::get("/").header("host", &host).body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status.is_success() {
            ok += 1;
        }
    }
    Ok(ok)
}
