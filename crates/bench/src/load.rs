//! A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the
//! next request when the previous answer is read, for a fixed time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a round measured.
pub struct Figures {
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of the successful requests.
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    pub fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }
}

/// GETs of `/` with Host `host` for `duration`.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let host = host.to_string();
        workers.spawn(async move { worker(addr, host, deadline).await });
    }
    let start = Instant::now();
    let mut latencies = Vec::new();
    while let Some(r) = workers.join_next().await {
        latencies.extend(r??);
    }
    let rps = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default()
    };
    Ok(Figures { rps, p50: at(0.5), p99: at(0.99) })
}

/// The latency of each successful request.
async fn worker(addr: SocketAddr, host: String, deadline: Instant) -> anyhow::Result<Vec<Duration>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let req = hyper::Request::get("/").header("host", &host).body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status.is_success() {
            latencies.push(sent.elapsed());
        }
    }
    Ok(latencies)
}
