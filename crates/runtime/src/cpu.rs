//! CPU: per-pod limits and time slices.
//!
//! An instance runs inside `OnCore`, a future that holds one of its pod's *cores* (a
//! semaphore of its limit rounded up) while it is polled — that is, while it runs, wasm or
//! host work alike (memory.grow, memory.fill, copying a body) — and lets it go whenever it
//! waits (for I/O, its turn, its budget). So a pod never keeps more of the node's threads
//! busy than its limit, however many of its requests loop or fill memory. The time it is
//! polled is the CPU it used, charged to its pod's token bucket (refilled at its limit,
//! `resources.limits.cpu`, else the node's default share).
//!
//! The engine's epoch advances every `EPOCH_TICK` while any guest runs, and a running
//! guest calls back into the host at its epoch deadline, within a tick, which (1) cuts it
//! off past its request deadline; (2) charges what it ran; (3) makes it yield its thread, so
//! no guest holds a worker for more than a tick — or, when its pod is past its limit, sleep
//! until the budget has refilled, as the kernel's CFS quota throttles a container.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};

use crate::Runtime;

/// How much CPU time a pod may save up: a limit of one core lets it run this long on each
/// of its cores at once before it is throttled.
const BURST: Duration = Duration::from_millis(20);

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

/// What an instance has run since its pod was last charged: the polls that ended, and the
/// one under way.
#[derive(Default)]
pub(crate) struct Usage {
    ran: Duration,
    polled_since: Option<Instant>,
    /// The epoch clock, kept ticking while the instance runs (only then does its deadline
    /// callback need the epoch to advance: a cli pod asleep does not keep it awake).
    clock: Option<Arc<crate::engine::EpochClock>>,
}

impl Usage {
    /// What it ran until `now`, counted once.
    fn take(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.polled_since.as_mut() {
            self.ran += now.saturating_duration_since(*since);
            *since = now;
        }
        std::mem::take(&mut self.ran)
    }
}

/// Runs `store`'s guests in time slices charged to `budget`, cut off at `deadline` (a trap,
/// `Trap::Interrupt`) when one is given. Their future must run inside `on_core` with the
/// returned usage.
pub(crate) fn slice<T: 'static>(
    store: &mut Store<T>,
    runtime: &Runtime,
    budget: Arc<CpuBudget>,
    deadline: Option<Instant>,
) -> Arc<Mutex<Usage>> {
    let usage = Arc::new(Mutex::new(Usage { clock: Some(runtime.clock.clone()), ..Usage::default() }));
    let charged = usage.clone();
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        let ran = lock(&charged).take(now);
        let throttled = budget.charge(ran, now);
        let pause: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            match throttled {
                // Never past the deadline: the next slice ends the request.
                Some(wait) => {
                    let left = deadline.map_or(wait, |d| d.saturating_duration_since(now));
                    tokio::time::sleep(wait.min(left)).await;
                }
                // The others' turn (its core too: it waits for it again).
                None => tokio::task::yield_now().await,
            }
        });
        Ok(UpdateDeadline::YieldCustom(1, pause))
    });
    store.set_epoch_deadline(1);
    usage
}

/// `work` (an instance's run), on one of `budget`'s cores while it is polled; the time it
/// is polled goes into `usage` (charged at the next epoch callback, and at the end).
pub(crate) async fn on_core<F: Future>(
    budget: Arc<CpuBudget>,
    usage: Arc<Mutex<Usage>>,
    work: F,
) -> F::Output {
    let gate = OnCore {
        work: Box::pin(work),
        cores: tokio_util::sync::PollSemaphore::new(budget.cores.clone()),
        core: None,
        usage,
    };
    let (output, usage) = gate.await;
    let ran = lock(&usage).take(Instant::now());
    budget.charge(ran, Instant::now());
    output
}

struct OnCore<F: Future> {
    work: Pin<Box<F>>,
    cores: tokio_util::sync::PollSemaphore,
    core: Option<tokio::sync::OwnedSemaphorePermit>,
    usage: Arc<Mutex<Usage>>,
}

impl<F: Future> Future for OnCore<F> {
    type Output = (F::Output, Arc<Mutex<Usage>>);

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.core.is_none() {
            match this.cores.poll_acquire(cx) {
                Poll::Ready(core) => this.core = core,
                Poll::Pending => return Poll::Pending,
            }
        }
        let ticking = {
            let mut usage = lock(&this.usage);
            usage.polled_since = Some(Instant::now());
            usage.clock.as_ref().map(|clock| clock.hold())
        };
        let polled = this.work.as_mut().poll(cx);
        drop(ticking);
        {
            let mut usage = lock(&this.usage);
            if let Some(since) = usage.polled_since.take() {
                usage.ran += since.elapsed();
            }
        }
        match polled {
            Poll::Ready(output) => Poll::Ready((output, this.usage.clone())),
            Poll::Pending => {
                // Waiting: the core is a sibling's meanwhile.
                this.core = None;
                Poll::Pending
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Busy for 2 ms at each of its polls (as a guest running a slice), counting how many
    /// such polls run at once.
    struct Busy {
        polls: usize,
        active: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Future for Busy {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            self.active.fetch_sub(1, Ordering::SeqCst);
            if self.polls == 0 {
                return std::task::Poll::Ready(());
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_runs_on_as_many_threads_at_once_as_its_limit_has_cores() {
        for (millis, cores) in [(1000, 1), (2000, 2)] {
            let budget = CpuBudget::new(millis);
            let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let runs: Vec<_> = (0..3)
                .map(|_| {
                    let busy = Busy { polls: 20, active: active.clone(), most: most.clone() };
                    tokio::spawn(on_core(budget.clone(), Arc::default(), busy))
                })
                .collect();
            for run in runs {
                run.await.expect("ran");
            }
            assert_eq!(most.load(Ordering::SeqCst), cores, "a limit of {millis}m");
        }
    }

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
