//! An http pod that misbehaves on request, to show (and test) that the sandbox holds:
//! `/spin` loops forever (cut off at the request deadline), `/grow?mb=N` allocates N MiB
//! (trapping past the pod's memory limit), `/status/N` answers with status N (for probes),
//! `/residue?mb=N` reports how many bytes of a fresh N MiB allocation are not zero and then
//! dirties them (a fresh instance must never see a previous one's memory), `/count` bumps a
//! static counter (a fresh instance always answers 1), `/sleep?ms=N` answers after N ms
//! (waiting in the host, using no CPU: a request of known length), `/stream?ms=N` sends its
//! head and a first line at once and the last line N ms later (a streaming answer),
//! anything else answers `ok`.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Misbehave;

wasi::http::proxy::export!(Misbehave);

impl wasi::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(ms) = path.strip_prefix("/stream?ms=") {
            return stream(ms.parse().unwrap_or(100), response_out);
        }
        let mut status = 200;
        let reply = if path.starts_with("/spin") {
            spin()
        } else if let Some(mb) = path.strip_prefix("/grow?mb=") {
            let mb: usize = mb.parse().unwrap_or(1);
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mb {
                chunks.push(vec![1u8; 1 << 20]);
            }
            format!("grew {} MiB\n", chunks.len())
        } else if let Some(mb) = path.strip_prefix("/residue?mb=") {
            residue(mb.parse().unwrap_or(1))
        } else if let Some(ms) = path.strip_prefix("/sleep?ms=") {
            let ms: u64 = ms.parse().unwrap_or(100);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            format!("slept {ms} ms\n")
        } else if path.starts_with("/count") {
            format!("count {}\n", COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
        } else if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(500);
            format!("status {status}\n")
        } else {
            "ok\n".to_string()
        };
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(reply.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// The head and a first line now, the last line `ms` later.
fn stream(ms: u64, response_out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(stream) = body.write() {
        let _ = stream.blocking_write_and_flush(b"start\n");
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = stream.blocking_write_and_flush(b"end\n");
    }
    let _ = OutgoingBody::finish(body, None);
}

static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Non-zero bytes in a fresh, uninitialised allocation of `mb` MiB, which it then dirties.
fn residue(mb: usize) -> String {
    let Ok(layout) = std::alloc::Layout::from_size_align(mb << 20, 1 << 16) else {
        return "bad size\n".into();
    };
    // SAFETY: the layout is non-zero in size; the bytes are only read as integers and
    // written, never taken as initialised values of another type.
    let nonzero = unsafe {
        let p = std::alloc::alloc(layout);
        if p.is_null() {
            return "out of memory\n".into();
        }
        let n = (0..layout.size()).filter(|&i| std::ptr::read_volatile(p.add(i)) != 0).count();
        std::ptr::write_bytes(p, 0xAA, layout.size());
        n
    };
    format!("residue {nonzero}\n")
}

#[allow(clippy::empty_loop, reason = "the point is to never return")]
fn spin() -> String {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
