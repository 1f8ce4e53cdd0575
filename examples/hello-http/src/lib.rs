//! The hello-world http pod: answers every request with a greeting naming the pod that
//! served it, and logs one line per request to stderr (see `wasmctl logs`).

use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let pod = std::env::var("WASMKUBE_POD_NAME").unwrap_or_else(|_| "unknown".into());
        let path = request.path_with_query().unwrap_or_default();
        eprintln!("{} {path}", method_name(&request.method()));

        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream
                .blocking_write_and_flush(format!("Hello from wasmkube! pod={pod} path={path}\n").as_bytes());
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

fn method_name(m: &Method) -> &str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}
