//! End-to-end tests with real `wasmlet` and `wasmctl` processes: the processes come from
//! `wasmkube-fleet` (shared with the benchmarks); this crate adds what only tests need.

pub mod linearizability;

pub use wasmkube_fleet::*;

/// The first `n` events of a watch (`resp`, a `?watch=true` answer) that `keep` accepts,
/// waiting at most `limit` for them.
pub async fn watch_events(
    resp: reqwest::Response,
    n: usize,
    limit: std::time::Duration,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use futures::StreamExt;
    let (mut stream, mut buf, mut events) = (resp.bytes_stream(), Vec::new(), Vec::new());
    let read = async {
        while events.len() < n {
            let Some(chunk) = stream.next().await else { break };
            buf.extend_from_slice(&chunk?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let event: serde_json::Value = serde_json::from_slice(&line)?;
                if keep(&event) {
                    events.push(event);
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, read).await??;
    Ok(events)
}
