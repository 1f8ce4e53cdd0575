//! http-world pods: a slot that answers each request with a fresh instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, oneshot};
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::cpu::{self, CpuBudget};
use crate::host::HostState;
use crate::modules::{ModuleError, PreparedModule};
use crate::{LogBuffer, Runtime, SandboxSpec};

pub type PodResponse = hyper::Response<HyperOutgoingBody>;

/// Instances one request's store may create (a component holds a few core instances).
const INSTANCES_PER_STORE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The pod is at its concurrency limit; the request was not started.
    #[error("pod {0} is at its concurrency limit")]
    Overloaded(String),
    #[error("the request exceeded its {0:?} deadline and was cut off")]
    Timeout(Duration),
    #[error("the module trapped: {0}")]
    Trap(String),
    #[error("the module did not produce a response: {0}")]
    NoResponse(String),
}

impl RequestError {
    /// True when the request never reached the guest, so retrying elsewhere is safe.
    pub fn never_sent(&self) -> bool {
        matches!(self, RequestError::Overloaded(_))
    }
}

pub struct HttpPod {
    runtime: Arc<Runtime>,
    proxy: ProxyPre<HostState>,
    spec: SandboxSpec,
    logs: LogBuffer,
    concurrency: Arc<Semaphore>,
    outstanding: AtomicUsize,
    /// Requests admitted (holding a concurrency slot) that wait for one of the node's
    /// instance slots: a probe finding every slot taken then learns the node is busy.
    waiting_for_instance: AtomicUsize,
    served: AtomicU64,
    failed: AtomicU64,
    /// Requests whose instance trapped, and the last trap's message.
    traps: AtomicU64,
    last_trap: std::sync::Mutex<Option<String>>,
    /// Traps since the last request answered without one.
    traps_in_a_row: std::sync::atomic::AtomicU32,
    /// The CPU its instances may use, and have used.
    cpu: Arc<CpuBudget>,
    /// Linear memory its live instances hold, in bytes.
    memory: Arc<AtomicU64>,
    /// How long one request may run.
    timeout: Duration,
    /// When it was made: request times below are nanoseconds since then.
    born: Instant,
    /// Sum of the answered requests' times to answer (for their mean latency).
    answered_ns: AtomicU64,
    /// The time-weighted requests in flight (see `sample`), each until its instance ends
    /// (a streaming answer is in flight until its body is done, not only until its head).
    busy: Arc<std::sync::Mutex<crate::metrics::Busy>>,
}

impl HttpPod {
    pub fn new(
        runtime: Arc<Runtime>,
        module: &PreparedModule,
        spec: SandboxSpec,
        logs: LogBuffer,
    ) -> Result<Self, ModuleError> {
        let proxy = module.proxy.clone().ok_or_else(|| {
            ModuleError::UnsupportedWorld(format!(
                "module {} is a cli component, not an http one",
                module.digest
            ))
        })?;
        let concurrency = Arc::new(Semaphore::new(runtime.config.pod_concurrency));
        let cpu = CpuBudget::new(spec.cpu_limit_millis.unwrap_or(runtime.config.default_cpu_limit_millis));
        let timeout = spec.request_timeout.unwrap_or(runtime.config.request_timeout);
        Ok(HttpPod {
            cpu,
            memory: Arc::default(),
            timeout,
            born: Instant::now(),
            answered_ns: AtomicU64::new(0),
            busy: Arc::default(),
            runtime,
            proxy,
            spec,
            logs,
            concurrency,
            outstanding: AtomicUsize::new(0),
            waiting_for_instance: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            last_trap: std::sync::Mutex::new(None),
            traps_in_a_row: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Requests in flight: the load balancer's least-outstanding signal.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Requests in a row whose instance trapped (none answered in between).
    pub fn traps_in_a_row(&self) -> u32 {
        self.traps_in_a_row.load(Ordering::Relaxed)
    }

    /// Requests whose instance trapped so far, and the last trap's message.
    pub fn traps(&self) -> (u64, Option<String>) {
        let last = self.last_trap.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.traps.load(Ordering::Relaxed), last)
    }

    /// Requests answered and requests failed so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.served.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Its counters now, for the node's metrics.
    pub fn sample(&self) -> crate::metrics::Sample {
        let at = Instant::now();
        let (busy, in_flight) = self.busy_lock().read(self.nanos_since_born(at));
        let answered = self.answered_ns.load(Ordering::Relaxed);
        let (served, failed) = self.counters();
        crate::metrics::Sample {
            at,
            since: self.born,
            cpu: self.cpu.used(),
            memory: self.memory.load(Ordering::Relaxed),
            requests: served.saturating_add(failed),
            answered_ns: answered,
            busy_ns: busy,
            in_flight: in_flight as usize,
        }
    }

    fn busy_lock(&self) -> std::sync::MutexGuard<'_, crate::metrics::Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nanos_since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    /// A store for one request, and what its instance runs (see `cpu::on_core`).
    fn new_store(&self) -> (Store<HostState>, Arc<std::sync::Mutex<cpu::Usage>>, Instant) {
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(
                &self.spec,
                &self.logs,
                INSTANCES_PER_STORE,
                self.runtime.config().service_proxy,
                self.memory.clone(),
            ),
        );
        store.limiter(|s| &mut s.limits);
        // A guest running past a tick yields to the scheduler, so one busy instance never holds
        // a worker thread (and every other pod and the API behind it); a pod past its CPU
        // limit waits; past the request deadline it is interrupted.
        let deadline = Instant::now() + self.timeout;
        let usage = cpu::slice(&mut store, &self.runtime, self.cpu.clone(), Some(deadline));
        (store, usage, deadline)
    }

    /// The pod's CPU: its limit, and the time its instances have run.
    pub fn cpu(&self) -> &CpuBudget {
        &self.cpu
    }

    /// How long one request may run before it is cut off.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Creates and drops one instance without calling it: what per-request instantiation costs.
    pub async fn instantiate_once(&self) -> Result<(), RequestError> {
        let (mut store, usage, _) = self.new_store();
        cpu::on_core(self.cpu.clone(), usage, self.proxy.instantiate_async(&mut store))
            .await
            .map(drop)
            .map_err(|e| RequestError::Trap(format!("{e:#}")))
    }

    /// Reserves a concurrency slot, or `None` when the pod is at its limit. A caller holding
    /// no admission has sent nothing, so it may safely try another pod.
    pub fn try_admit(&self) -> Option<Admission> {
        self.concurrency.clone().try_acquire_owned().ok().map(|pod| Admission { pod, instance: None })
    }

    /// Serves one request with a fresh instance.
    pub async fn handle<B>(&self, req: hyper::Request<B>) -> Result<PodResponse, RequestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let admission = self.try_admit().ok_or_else(|| RequestError::Overloaded(self.spec.pod.clone()))?;
        self.serve(admission, req).await
    }

    /// A GET of `path` with no body, as a probe sends it, answered with its status code. It
    /// waits for one of the pod's concurrency slots, as a probe waits on a busy server (the
    /// caller's timeout bounds the wait: a pod whose every slot is held by requests that do
    /// not end fails it, while a busy pod's slots free up within it — a released slot goes
    /// to a waiting probe before any new request); it does not wait for one of the node's
    /// instance slots, nor for a pod slot while some of the pod's requests wait for one
    /// (`Overloaded` then: the node is busy, which says nothing of this pod).
    pub async fn get(&self, path: &str, headers: &[(String, String)]) -> Result<u16, RequestError> {
        let mut request = hyper::Request::get(path);
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request = request.header(hyper::header::HOST, "localhost");
        }
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body =
            http_body_util::Empty::<Bytes>::new().map_err(|never| -> crate::BodyError { match never {} });
        let request =
            request.body(body).map_err(|e| RequestError::NoResponse(format!("building the request: {e}")))?;
        // A probe does not queue for one of the node's instance slots either: a node busy
        // starting thousands of instances says nothing of this pod's health.
        let overloaded = || RequestError::Overloaded(self.spec.pod.clone());
        let pod = match self.concurrency.clone().try_acquire_owned() {
            Ok(pod) => pod,
            // Every slot is taken while some wait for the node's instance slots: the node
            // is busy, which says nothing of this pod (skipped, as below).
            Err(_) if self.waiting_for_instance.load(Ordering::Relaxed) > 0 => return Err(overloaded()),
            Err(_) => self.concurrency.clone().acquire_owned().await.map_err(|_| overloaded())?,
        };
        let mut admission = Admission { pod, instance: None };
        admission.instance =
            Some(self.runtime.instance_slots.clone().try_acquire_owned().map_err(|_| overloaded())?);
        // Not counted as a request: probes are not traffic (an autoscaler would never see
        // a probed pod idle).
        let response = self.invoke(request, admission, None).await?;
        Ok(response.status().as_u16())
    }

    /// Serves one request in a slot reserved by `try_admit`.
    pub async fn serve<B>(
        &self,
        admission: Admission,
        req: hyper::Request<B>,
    ) -> Result<PodResponse, RequestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let _in_flight = InFlight::enter(self);
        let busy = Load::enter(self);
        let result = self.invoke(req, admission, Some(busy)).await;
        match &result {
            Err(RequestError::Trap(message)) => {
                *self.last_trap.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                self.traps.fetch_add(1, Ordering::Relaxed);
                self.traps_in_a_row.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => self.traps_in_a_row.store(0, Ordering::Relaxed),
            Err(_) => {}
        }
        let counter = if result.is_ok() { &self.served } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// `busy`: the request's share of the pod's time-weighted load, let go when its
    /// instance ends (none for a probe: probes are not traffic).
    async fn invoke<B>(
        &self,
        req: hyper::Request<B>,
        admission: Admission,
        busy: Option<Load>,
    ) -> Result<PodResponse, RequestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let timeout = self.timeout;
        let Admission { pod: permit, instance } = admission;
        let slot = match instance {
            Some(slot) => slot,
            None => {
                self.waiting_for_instance.fetch_add(1, Ordering::Relaxed);
                let _waited = Defer(|| {
                    self.waiting_for_instance.fetch_sub(1, Ordering::Relaxed);
                });
                self.runtime
                    .instance_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| RequestError::Overloaded(self.spec.pod.clone()))?
            }
        };
        let (mut store, usage, deadline) = self.new_store();
        let (tx, rx) = oneshot::channel();
        let host_err = |e: wasmtime::Error| RequestError::NoResponse(format!("{e:#}"));
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, req).map_err(host_err)?;
        let out = store.data_mut().http().new_response_outparam(tx).map_err(host_err)?;
        let (pre, cpu) = (self.proxy.clone(), self.cpu.clone());
        // The instance runs in its own task: it may keep streaming the body after it has
        // handed back the response head. The permits live as long as the instance.
        let task = tokio::spawn(async move {
            let _held = (slot, permit);
            // On one of the pod's cores while it runs (see `cpu::on_core`).
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            // The deadline holds after the answer's head too: a guest streaming its body, or
            // waiting in the host, stops there and lets go of its slots.
            let outcome =
                match tokio::time::timeout_at(deadline.into(), cpu::on_core(cpu.clone(), usage, run)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(wasmtime::Trap::Interrupt.into()),
                };
            // Its load ends with its run, not with the teardown below.
            drop(busy);
            // Returning an instance's memory (up to its limit, all touched by a memory
            // bomb) takes a while: not on a thread that serves requests, and on one of the
            // pod's cores (that work is the pod's).
            let core = cpu.take_core().await;
            tokio::task::spawn_blocking(move || drop((store, core)));
            outcome
        });
        let abort = task.abort_handle();
        // A caller that stops waiting before the response head (a probe's own timeout, a
        // client gone) stops the instance too: it must not keep its slots.
        let mut unanswered = AbortOnDrop(Some(abort.clone()));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(resp))) => {
                // Answered: the instance may go on streaming the body.
                unanswered.0 = None;
                Ok(resp.map(|body| body.map_err(|e| e).boxed_unsync()))
            }
            Ok(Ok(Err(code))) => {
                Err(RequestError::NoResponse(format!("the module answered with error {code:?}")))
            }
            Ok(Err(_)) => Err(match task.await {
                Ok(Ok(())) => {
                    RequestError::NoResponse("the handler returned without setting a response".into())
                }
                Ok(Err(e)) => classify_trap(&e, timeout),
                Err(e) => RequestError::NoResponse(format!("the instance task failed: {e}")),
            }),
            Err(_) => {
                // Blocked in the host (a sleep, a slow body): the epoch cannot fire there.
                abort.abort();
                Err(RequestError::Timeout(timeout))
            }
        }
    }
}

/// Aborts the task unless disarmed (`.0 = None`).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

pub(crate) fn classify_trap(e: &wasmtime::Error, timeout: Duration) -> RequestError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RequestError::Timeout(timeout),
        _ => RequestError::Trap(format!("{e:#}")),
    }
}

/// A reserved concurrency slot of one pod (and, for a probe, an instance slot of the node).
pub struct Admission {
    pod: tokio::sync::OwnedSemaphorePermit,
    instance: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A request in flight, from its start until it is answered (or fails): counted in
/// `outstanding`, and its time in the pod's concurrency (`HttpPod::sample`).
/// A request until its answer's head: the load balancer's outstanding count, and its time
/// to answer (its share of the pod's concurrency is `Load`, until its instance ends).
struct InFlight<'a> {
    pod: &'a HttpPod,
    started_ns: u64,
}

impl<'a> InFlight<'a> {
    fn enter(pod: &'a HttpPod) -> Self {
        let started_ns = pod.nanos_since_born(Instant::now());
        pod.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight { pod, started_ns }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now_ns = self.pod.nanos_since_born(Instant::now());
        self.pod.answered_ns.fetch_add(now_ns.saturating_sub(self.started_ns), Ordering::Relaxed);
        self.pod.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request until its instance ends, in the pod's time-weighted load (concurrency).
struct Load {
    busy: Arc<std::sync::Mutex<crate::metrics::Busy>>,
    born: Instant,
}

impl Load {
    fn enter(pod: &HttpPod) -> Self {
        pod.busy_lock().enter(pod.nanos_since_born(Instant::now()));
        Load { busy: pod.busy.clone(), born: pod.born }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let now_ns = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).leave(now_ns);
    }
}

/// Runs its closure when dropped (a counter put back however the scope ends).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
