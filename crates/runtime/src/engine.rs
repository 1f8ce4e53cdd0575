//! The node's single wasmtime `Engine`, its linker, and the epoch clock for deadlines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::HostState;
use crate::modules::PreparedModule;

/// One epoch tick: how often a running guest is checked against its deadline and its CPU
/// limit, and made to yield its thread (so a request of another pod waits at most about a
/// tick for a thread, even when every thread is running a busy guest). At 1 ms, a pod's p99
/// beside a looping and memory-bombing one was 3.3× its p99 alone; at 500 µs, 2.0–2.2×.
pub(crate) const EPOCH_TICK: Duration = Duration::from_micros(500);

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached between restarts (wasmtime's cache); `None` disables.
    pub cache_dir: Option<PathBuf>,
    /// Instances alive at once across all pods (pooling allocator slots).
    pub max_instances: u32,
    /// Ceiling for any one instance's linear memory; a pod's own limit may only be lower.
    pub max_memory: u64,
    /// Memory limit for pods that set none.
    pub default_memory_limit: u64,
    /// A request's instance is interrupted after this long.
    pub request_timeout: Duration,
    /// Concurrent requests one http pod serves before refusing more.
    pub pod_concurrency: usize,
    /// Bytes of stdout/stderr kept per pod.
    pub log_capacity: usize,
    /// This node's service proxy: pods' requests to `<svc>.<ns>.svc` names go there. `None`
    /// denies all outgoing HTTP.
    pub service_proxy: Option<std::net::SocketAddr>,
    /// A cli pod that ended is started again after this, doubling with each restart up to
    /// `crash_backoff_max` (Kubernetes' CrashLoopBackOff: 10 s to 5 min); a run of
    /// `crash_backoff_reset` starts the doubling over (Kubernetes: 10 min).
    pub crash_backoff: Duration,
    pub crash_backoff_max: Duration,
    pub crash_backoff_reset: Duration,
    /// The CPU limit of pods that set none, in thousandths of a core.
    pub default_cpu_limit_millis: u64,
}

/// Half the machine's cores, at least one: a pod that sets no CPU limit leaves the rest to
/// the others and to the node itself.
pub fn default_cpu_share_millis() -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (cores * 1000 / 2).max(1000)
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instances: 1000,
            max_memory: 1 << 30,
            default_memory_limit: 128 << 20,
            request_timeout: Duration::from_secs(30),
            pod_concurrency: 256,
            log_capacity: 256 * 1024,
            service_proxy: None,
            crash_backoff: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            crash_backoff_reset: Duration::from_secs(600),
            default_cpu_limit_millis: default_cpu_share_millis(),
        }
    }
}

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) prepared: Mutex<HashMap<String, Arc<PreparedModule>>>,
    /// One permit per pooling slot, so bursts queue instead of failing to instantiate.
    pub(crate) instance_slots: Arc<Semaphore>,
    /// Whether the pooling allocator could be used on this machine.
    pub pooling: bool,
    /// Compiles that may run at once: each takes a whole core for a while, and the node must
    /// keep cores for its pods, its proxy and its share of the control plane.
    pub(crate) compiles: Arc<Semaphore>,
    /// Advances the epoch while any guest's store is alive.
    pub(crate) clock: Arc<EpochClock>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Arc<Self>> {
        let (engine, pooling) = match Engine::new(&engine_config(&config, true)?) {
            Ok(engine) => (engine, true),
            Err(e) => {
                // Some sandboxes refuse the large virtual reservations pooling needs.
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                (Engine::new(&engine_config(&config, false)?)?, false)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let clock = EpochClock::start(&engine);
        let slots = config.max_instances as usize;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            config,
            prepared: Mutex::new(HashMap::new()),
            instance_slots: Arc::new(Semaphore::new(slots)),
            pooling,
            compiles: Arc::new(Semaphore::new(concurrent_compiles())),
            clock,
        }))
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }
}

/// Half the machine's cores, at least one.
fn concurrent_compiles() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Bytes of a slot's memory (and table) reset with memset rather than returned to the OS
/// when its instance ends: a small pod's next instance then needs no system call, and does
/// not queue behind a neighbour's big ones in the kernel.
const KEEP_RESIDENT: usize = 1 << 20;

fn engine_config(config: &RuntimeConfig, pooling: bool) -> wasmtime::Result<Config> {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    if let Some(dir) = &config.cache_dir {
        std::fs::create_dir_all(dir)?;
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        c.cache(Some(wasmtime::Cache::new(cache)?));
    }
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n);
        // A Rust wasip2 component holds a few core modules (program, adapter shims).
        pool.total_core_instances(n * 4);
        pool.total_memories(n);
        pool.total_tables(n * 4);
        pool.total_stacks(n);
        pool.max_memory_size(usize::try_from(config.max_memory).unwrap_or(usize::MAX));
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
        pool.table_keep_resident(KEEP_RESIDENT);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Ok(c)
}

/// The engine's epoch clock: advances the epoch every tick while a guest's store is alive,
/// and sleeps while none is (an idle node does not wake a thousand times a second).
pub(crate) struct EpochClock {
    live: AtomicUsize,
    thread: OnceLock<std::thread::Thread>,
}

impl EpochClock {
    fn start(engine: &Engine) -> Arc<Self> {
        let clock = Arc::new(EpochClock { live: AtomicUsize::new(0), thread: OnceLock::new() });
        let (weak, ticking) = (engine.weak(), clock.clone());
        let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                if ticking.live.load(Ordering::Acquire) == 0 {
                    // Woken by the next store (or now and then, to notice the engine gone).
                    std::thread::park_timeout(Duration::from_millis(500));
                } else {
                    std::thread::sleep(EPOCH_TICK);
                }
            }
        });
        match spawned {
            Ok(handle) => {
                let _ = clock.thread.set(handle.thread().clone());
            }
            Err(e) => tracing::error!("cannot start the epoch clock; guest deadlines will not fire: {e}"),
        }
        clock
    }

    /// Keeps the clock ticking while the returned guard lives.
    pub(crate) fn hold(self: &Arc<Self>) -> Ticking {
        if self.live.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self.clone())
    }
}

/// A store whose guests need the epoch to advance.
pub(crate) struct Ticking(Arc<EpochClock>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}
