//! A pod that calls another Service: on every request it fetches `http://hello.default.svc/`
//! (or the URL in the `x-fetch` request header) with wasi-http and answers with what came
//! back. Pods reach Services by name through their node's proxy; any other destination is
//! denied, and the gateway answers 502 with the error.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct Gateway;

wasi::http::proxy::export!(Gateway);

impl wasi::exports::http::incoming_handler::Guest for Gateway {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request
            .headers()
            .get(&"x-fetch".to_string())
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .unwrap_or_else(|| "http://hello.default.svc/".into());
        let (status, text) = match fetch(&target) {
            Ok((status, body)) => (200, format!("gateway fetched {target}: {status} {body}")),
            Err(e) => (502, format!("gateway could not fetch {target}: {e}\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(text.as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

/// GETs `url`; returns the status and the body as text.
fn fetch(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(describe)?;
    pending.subscribe().block();
    let response: IncomingResponse = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(describe(e)),
        Some(Err(())) | None => return Err("no response".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn describe(e: ErrorCode) -> String {
    format!("{e:?}")
}
