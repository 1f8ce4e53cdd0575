//! The state each instance's `Store` carries: WASI, wasi-http, the resource table, limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{RequestOptions, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::{LogBuffer, SandboxSpec};

pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limits: PodLimits,
    hooks: ServicesOnly,
}

/// An instance's limits (its pod's memory limit, a bound on instances), counting the linear
/// memory it holds into its pod's total while it lives.
pub(crate) struct PodLimits {
    limits: StoreLimits,
    /// Bytes of linear memory this store holds, and its pod's total across its stores.
    held: u64,
    pod_total: Arc<AtomicU64>,
    /// The growth last counted, taken back if it fails after all.
    growing: u64,
}

impl ResourceLimiter for PodLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grows = self.limits.memory_growing(current, desired, maximum)?;
        if grows {
            let more = desired.saturating_sub(current) as u64;
            self.held = self.held.saturating_add(more);
            self.pod_total.fetch_add(more, Ordering::Relaxed);
            self.growing = more;
        }
        Ok(grows)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        let undone = std::mem::take(&mut self.growing).min(self.held);
        self.held -= undone;
        self.pod_total.fetch_sub(undone, Ordering::Relaxed);
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for PodLimits {
    fn drop(&mut self) {
        self.pod_total.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl HostState {
    /// `service_proxy`: where a pod's requests to Services go (this node's proxy).
    /// `memory`: its pod's linear memory in use, which this store's memory counts into.
    pub(crate) fn new(
        spec: &SandboxSpec,
        logs: &LogBuffer,
        max_instances: usize,
        service_proxy: Option<SocketAddr>,
        memory: Arc<AtomicU64>,
    ) -> Self {
        let mut wasi = WasiCtx::builder();
        // No preopened directories, no sockets: a pod sees only what is granted here.
        wasi.stdout(logs.clone()).stderr(logs.clone()).envs(&spec.env).args(&spec.args);
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(usize::try_from(spec.memory_limit).unwrap_or(usize::MAX))
            .instances(max_instances)
            // Growing past the limit traps the guest instead of handing it a failed grow it
            // may not check.
            .trap_on_grow_failure(true)
            .build();
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: PodLimits { limits, held: 0, pod_total: memory, growing: 0 },
            hooks: ServicesOnly { proxy: service_proxy },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outgoing HTTP from pods: a request for a Service by its cluster name
/// (`<svc>.<ns>.svc[.cluster.local]`) goes to this node's proxy, which routes it like any
/// other request (least-outstanding, any node); every other destination is denied: a pod has
/// no network unless its spec grants one.
struct ServicesOnly {
    proxy: Option<SocketAddr>,
}

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for ServicesOnly {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let routed = self.proxy.and_then(|proxy| to_service_proxy(request, proxy));
        Box::new(async move {
            let Some(request) = routed else {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            };
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(http_body_util::BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// The request readdressed to `proxy` (plain HTTP, the Service's name in `Host`), or `None`
/// when it is not for a Service.
fn to_service_proxy<B>(mut request: http::Request<B>, proxy: SocketAddr) -> Option<http::Request<B>> {
    let authority = request.uri().authority()?.clone();
    wasmkube_api::parse_cluster_host(authority.host())?;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri =
        http::Uri::builder().scheme("http").authority(proxy.to_string()).path_and_query(path).build().ok()?;
    let host_header = http::HeaderValue::from_str(authority.as_str()).ok()?;
    *request.uri_mut() = uri;
    request.headers_mut().insert(http::header::HOST, host_header);
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str) -> Option<(String, String)> {
        let proxy: SocketAddr = "127.0.0.1:8080".parse().ok()?;
        let request = http::Request::builder().uri(url).body(()).ok()?;
        let routed = to_service_proxy(request, proxy)?;
        let host = routed.headers().get(http::header::HOST)?.to_str().ok()?.to_string();
        Some((routed.uri().to_string(), host))
    }

    #[test]
    fn only_service_names_reach_the_proxy() {
        assert_eq!(
            route("http://hello.default.svc/a?b=1"),
            Some(("http://127.0.0.1:8080/a?b=1".into(), "hello.default.svc".into()))
        );
        assert_eq!(
            route("https://api.prod.svc.cluster.local:443/"),
            Some(("http://127.0.0.1:8080/".into(), "api.prod.svc.cluster.local:443".into()))
        );
        assert_eq!(route("http://example.com/"), None);
        assert_eq!(route("http://hello.default/"), None, "only the .svc names, which cannot be public hosts");
        assert_eq!(route("http://a.b.c.svc/"), None);
        assert_eq!(route("http://10.0.0.1/"), None);
    }
}
