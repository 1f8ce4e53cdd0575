//! An http pod that misbehaves on request, to show (and test) that the sandbox holds:
//! `/spin` loops forever (cut off at the request deadline), `/grow?mb=N` allocates N MiB
//! (trapping past the pod's memory limit), `/status/N` answers with status N (for probes),
//! anything else answers `ok`.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Misbehave;

wasi::http::proxy::export!(Misbehave);

impl wasi::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
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

#[allow(clippy::empty_loop, reason = "the point is to never return")]
fn spin() -> String {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}
