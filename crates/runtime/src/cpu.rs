//! CPU: time slices and per-pod limits, through wasmtime's epoch interruption.
//!
//! The engine's epoch advances every `EPOCH_TICK` while any guest runs. A running guest
//! reaches its epoch deadline within a tick and calls back into the host, which (1) cuts it
//! off past its request deadline; (2) charges the time it ran in wasm since it last resumed
//! to its pod (time in host calls, such as a wait for I/O, is not charged); (3) yields its
//! thread, so no guest holds a worker for more than a tick — or, when the pod has used more
//! than its CPU limit (`resources.limits.cpu`, else the node's default share), sleeps until
//! its budget has refilled, as the kernel's CFS quota throttles a container. And a busy
//! guest runs on only as many threads at once as its pod has cores (its limit rounded up),
//! so a pod that loops on every request still leaves the node's other cores to the rest.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{CallHook, Store, UpdateDeadline};

use crate::Runtime;
use crate::engine::EPOCH_TICK;

/// How much CPU time a pod may save up: a limit of one core lets it run this long on each
/// of its cores at once before it is throttled.
const BURST: Duration = Duration::from_millis(20);

/// The most one slice is charged (a thread the OS took away for longer is not the pod's).
const MAX_SLICE: Duration = Duration::from_millis(50);

/// One pod's CPU: what it may use (a token bucket refilled at its limit) and what it used.
pub struct CpuBudget {
    /// The limit, in thousandths of a core.
    millis: u64,
    bucket: Mutex<Bucket>,
    /// CPU time charged so far, in nanoseconds.
    used_ns: AtomicU64,
    /// The cores it may run on at once: its limit, rounded up.
    cores: Arc<tokio::sync::Semaphore>,
}

struct Bucket {
    /// Nanoseconds of CPU the pod may still use (negative: owed).
    tokens: i128,
    refilled: Instant,
}

impl CpuBudget {
    pub fn new(millis: u64) -> Arc<Self> {
        let millis = millis.max(1);
        Arc::new(CpuBudget {
            millis,
            bucket: Mutex::new(Bucket { tokens: capacity(millis), refilled: Instant::now() }),
            used_ns: AtomicU64::new(0),
            cores: Arc::new(tokio::sync::Semaphore::new(millis.div_ceil(1000) as usize)),
        })
    }

    /// The limit, in thousandths of a core.
    pub fn limit_millis(&self) -> u64 {
        self.millis
    }

    /// CPU time the pod's instances have run.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// One of the pod's cores, for work of the pod's done outside its instances.
    pub(crate) async fn take_core(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.cores.clone().acquire_owned().await.ok()
    }

    /// Charges `ran` at `now`; returns how long the instance must wait before it runs again
    /// (`None`: within the limit).
    fn charge(&self, ran: Duration, now: Instant) -> Option<Duration> {
        let ran_ns = u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX);
        self.used_ns.fetch_add(ran_ns, Ordering::Relaxed);
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_nanos() as i128;
        bucket.tokens = (bucket.tokens + elapsed * i128::from(self.millis) / 1000).min(capacity(self.millis));
        bucket.refilled = now;
        bucket.tokens -= i128::from(ran_ns);
        (bucket.tokens < 0).then(|| {
            let owed = (-bucket.tokens) * 1000 / i128::from(self.millis);
            Duration::from_nanos(u64::try_from(owed).unwrap_or(u64::MAX))
        })
    }
}

fn capacity(millis: u64) -> i128 {
    BURST.as_nanos() as i128 * i128::from(millis) / 1000
}

/// Runs `store`'s guests in time slices charged to `budget`, cut off at `deadline` (a trap,
/// `Trap::Interrupt`) when one is given.
pub(crate) fn slice<T: 'static>(
    store: &mut Store<T>,
    runtime: &Runtime,
    budget: Arc<CpuBudget>,
    deadline: Option<Instant>,
) {
    let state = Arc::new(Mutex::new(Slice {
        resumed: Instant::now(),
        in_host: None,
        host: Duration::ZERO,
        core: None,
    }));
    // The epoch advances as long as the store (and so its callback) lives.
    let ticking = runtime.clock.hold();
    let hooked = state.clone();
    store.call_hook(move |_, hook| {
        let mut s = lock(&hooked);
        match hook {
            // In the host (a read, a write, a wait for I/O) the guest uses no core of its
            // pod's and is not charged.
            CallHook::CallingHost => {
                s.in_host = Some(Instant::now());
                s.core = None;
            }
            CallHook::ReturningFromHost => {
                if let Some(entered) = s.in_host.take() {
                    s.host += entered.elapsed();
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
        Ok(())
    });
    store.epoch_deadline_callback(move |_| {
        let _ = &ticking;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        let ran = {
            let mut s = lock(&state);
            let ran = now.saturating_duration_since(s.resumed).saturating_sub(s.host);
            s.host = Duration::ZERO;
            s.core = None;
            ran
        };
        let throttled = budget.charge(ran.min(MAX_SLICE), now);
        let (state, budget) = (state.clone(), budget.clone());
        let pause: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            match throttled {
                // Never past the deadline: the next slice ends the request.
                Some(wait) => {
                    let left = deadline.map_or(wait, |d| d.saturating_duration_since(now));
                    tokio::time::sleep(wait.min(left)).await;
                }
                // It ran a slice: the others' turn. (One that hardly ran since it resumed
                // had its turn already.)
                None if ran >= EPOCH_TICK / 4 => tokio::task::yield_now().await,
                None => {}
            }
            // It goes on only on one of its pod's cores (a limit of one core: one instance
            // at a time), so a busy pod leaves the node's other cores to the others.
            let core = budget.take_core().await;
            let mut s = lock(&state);
            s.core = core;
            s.resumed = Instant::now();
            // This callback ran inside a call to the host: its waits are not host time.
            s.in_host = None;
            s.host = Duration::ZERO;
        });
        Ok(UpdateDeadline::YieldCustom(1, pause))
    });
    store.set_epoch_deadline(1);
}

/// One store's slice: when its guest last resumed, and what it spent in the host since.
struct Slice {
    resumed: Instant,
    in_host: Option<Instant>,
    host: Duration,
    /// One of the pod's cores, held while a busy guest runs.
    core: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_within_its_limit_runs_on_and_one_past_it_waits_its_debt() {
        let budget = CpuBudget::new(500);
        let t0 = Instant::now();
        // Half a core saves up 10 ms: 10 ms at once is within it.
        assert_eq!(budget.charge(Duration::from_millis(10), t0), None);
        // 10 ms more at once: 10 ms of CPU owed, 20 ms of waiting at half a core.
        let wait = budget.charge(Duration::from_millis(10), t0).expect("throttled");
        assert_eq!(wait, Duration::from_millis(20));
        // 20 ms later the debt is paid: 1 ms runs again.
        assert_eq!(
            budget.charge(Duration::from_millis(1), t0 + Duration::from_millis(20)),
            Some(Duration::from_millis(2))
        );
        assert_eq!(budget.charge(Duration::ZERO, t0 + Duration::from_millis(30)), None);
        assert_eq!(budget.used(), Duration::from_millis(21));
    }
}
