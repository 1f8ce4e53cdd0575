//! The state each instance's `Store` carries: WASI, wasi-http, the resource table, limits.

use std::future::Future;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{RequestOptions, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::{LogBuffer, SandboxSpec};

pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    hooks: DenyOutgoing,
}

impl HostState {
    pub(crate) fn new(spec: &SandboxSpec, logs: &LogBuffer, max_instances: usize) -> Self {
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
            limits,
            hooks: DenyOutgoing,
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

/// Outgoing HTTP from pods is denied until service discovery for pods lands: a sandbox has no
/// network unless its spec grants one.
struct DenyOutgoing;

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = std::result::Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
