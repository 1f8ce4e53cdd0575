//! Bounded per-pod log capture: the newest `capacity` bytes of stdout and stderr.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A ring of the most recent output. Cloning shares the ring.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<Ring>>,
}

struct Ring {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Bytes dropped from the front because the ring was full.
    dropped: u64,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer { inner: Arc::new(Mutex::new(Ring { bytes: VecDeque::new(), capacity, dropped: 0 })) }
    }

    pub fn append(&self, data: &[u8]) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let cap = ring.capacity;
        let data = if data.len() > cap { &data[data.len() - cap..] } else { data };
        let overflow = (ring.bytes.len() + data.len()).saturating_sub(cap);
        ring.bytes.drain(..overflow);
        ring.dropped += overflow as u64;
        ring.bytes.extend(data);
    }

    /// The retained output, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.bytes.iter().copied().collect()
    }

    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

/// The guest's stdout or stderr, writing straight into the ring (no background task).
struct GuestOutput(LogBuffer);

impl IsTerminal for LogBuffer {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogBuffer {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestOutput(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogBuffer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.0.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // The ring never blocks a writer: old output is dropped instead.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::LogBuffer;

    #[test]
    fn keeps_the_newest_bytes() {
        let log = LogBuffer::new(8);
        log.append(b"hello ");
        log.append(b"world");
        assert_eq!(log.contents(), b"lo world");
        assert_eq!(log.dropped(), 3);
        log.append(b"0123456789abc");
        assert_eq!(log.contents(), b"56789abc");
    }
}
