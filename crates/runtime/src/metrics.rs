//! Pod metrics at their source. Every pod keeps counters that only grow (CPU time run,
//! requests answered, the time they took, the time-weighted requests in flight) and its
//! linear memory in use; the node samples them every `SAMPLE_EVERY` and reports usage as
//! rates over the last `WINDOW`, as the kubelet's resource metrics do (over 1 s rather than
//! 15 s: a wasm pod starts in microseconds, so an autoscaler can afford to react fast).
//!
//! Concurrency is time-weighted, as Knative's: the busy time of all requests (answered or
//! still in flight) in the window, divided by the window, so a pod that serves one 100 ms
//! request every 200 ms has a concurrency of 0.5 whatever the instant it is looked at.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{CpuBudget, SandboxRegistry};

/// How often the node samples its pods while their metrics are read (by an autoscaler,
/// `wasmctl top`), and otherwise: an idle node with 10,000 pods does not go over them
/// twice a second for nobody.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
pub const SAMPLE_IDLE: Duration = Duration::from_secs(5);
/// Metrics read within this long keep the sampling at `SAMPLE_EVERY`.
const DEMAND_LASTS: Duration = Duration::from_secs(30);
/// The window usage is reported over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What a pod's instances use, for pods that serve no requests (cli pods).
#[derive(Clone)]
pub struct Meter {
    pub(crate) cpu: Arc<CpuBudget>,
    pub(crate) memory: Arc<AtomicU64>,
    pub(crate) since: Instant,
}

impl Meter {
    pub fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            cpu: self.cpu.used(),
            memory: self.memory.load(Ordering::Relaxed),
            since: self.since,
            ..Sample::default()
        }
    }
}

/// Time-weighted requests in flight: the integral over time of how many were in flight,
/// advanced at every start and end under one lock (a read sees one consistent state).
#[derive(Debug, Default)]
pub(crate) struct Busy {
    in_flight: u64,
    /// When it was last advanced, and the integral until then, in nanoseconds.
    at_ns: u64,
    busy_ns: u64,
}

impl Busy {
    fn advance(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.at_ns);
        self.busy_ns = self.busy_ns.saturating_add(elapsed.saturating_mul(self.in_flight));
        self.at_ns = self.at_ns.max(now_ns);
    }

    pub(crate) fn enter(&mut self, now_ns: u64) {
        self.advance(now_ns);
        self.in_flight += 1;
    }

    pub(crate) fn leave(&mut self, now_ns: u64) {
        self.advance(now_ns);
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The integral until `now_ns`, and the requests in flight.
    pub(crate) fn read(&mut self, now_ns: u64) -> (u64, u64) {
        self.advance(now_ns);
        (self.busy_ns, self.in_flight)
    }
}

/// A pod's counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// When its counters started (at zero).
    pub since: Instant,
    /// CPU time its instances have run.
    pub cpu: Duration,
    /// Linear memory its live instances hold, in bytes.
    pub memory: u64,
    /// Requests ended (answered or failed).
    pub requests: u64,
    /// Their time to answer, summed, in nanoseconds.
    pub answered_ns: u64,
    /// Time in flight of every request, answered or not, summed, in nanoseconds.
    pub busy_ns: u64,
    pub in_flight: usize,
}

impl Default for Sample {
    fn default() -> Self {
        let now = Instant::now();
        Sample {
            at: now,
            since: now,
            cpu: Duration::ZERO,
            memory: 0,
            requests: 0,
            answered_ns: 0,
            busy_ns: 0,
            in_flight: 0,
        }
    }
}

/// A pod's usage over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub window: Duration,
    /// CPU, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Linear memory in use at the end, in bytes.
    pub memory: u64,
    /// Requests in flight on average (time-weighted).
    pub concurrency: f64,
    pub requests_per_second: f64,
    /// Mean time to answer of the requests that ended in the window.
    pub latency: Option<Duration>,
    /// Requests in flight at the end.
    pub in_flight: usize,
}

impl Rates {
    /// Usage from `old` to `new` (`new` taken later).
    pub fn between(old: &Sample, new: &Sample) -> Rates {
        let window = new.at.saturating_duration_since(old.at);
        let secs = window.as_secs_f64();
        let per_second = |delta: f64| if secs > 0.0 { delta / secs } else { 0.0 };
        let requests = new.requests.saturating_sub(old.requests);
        let cpu = new.cpu.saturating_sub(old.cpu).as_secs_f64();
        Rates {
            window,
            cpu_nanocores: (per_second(cpu) * 1e9) as u64,
            memory: new.memory,
            concurrency: per_second(new.busy_ns.saturating_sub(old.busy_ns) as f64 / 1e9),
            requests_per_second: per_second(requests as f64),
            latency: (requests > 0)
                .then(|| Duration::from_nanos(new.answered_ns.saturating_sub(old.answered_ns) / requests)),
            in_flight: new.in_flight,
        }
    }
}

/// One pod's usage, as the node reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRates {
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    /// Its container's name.
    pub container: String,
    /// An http pod (its request figures mean something).
    pub serves: bool,
    pub rates: Rates,
}

/// The wasmlet process's own usage (all its pods, the control plane, the proxy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeRates {
    pub window: Duration,
    pub cpu_nanocores: u64,
    /// Resident memory, in bytes.
    pub memory: u64,
}

struct Snapshot {
    at: Instant,
    process_cpu: Option<Duration>,
    /// By `namespace/name`.
    pods: HashMap<String, Seen>,
}

struct Seen {
    uid: String,
    owner: Option<String>,
    container: String,
    serves: bool,
    sample: Sample,
}

/// The node's recent samples of its pods.
pub struct Sampler {
    registry: SandboxRegistry,
    past: Mutex<VecDeque<Snapshot>>,
    started: Instant,
    /// When metrics were last read, in milliseconds since `started` (`u64::MAX`: never).
    read_at_ms: AtomicU64,
}

impl Sampler {
    pub fn new(registry: SandboxRegistry) -> Arc<Self> {
        Arc::new(Sampler {
            registry,
            past: Mutex::new(VecDeque::new()),
            started: Instant::now(),
            read_at_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// Samples every `SAMPLE_EVERY` while metrics are read, else every `SAMPLE_IDLE`, for
    /// as long as the task runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            let read_at = self.read_at_ms.load(Ordering::Relaxed);
            let demanded = read_at != u64::MAX
                && self.started.elapsed().saturating_sub(Duration::from_millis(read_at)) < DEMAND_LASTS;
            let now = self.take();
            {
                let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
                // Keep what the window needs: the newest snapshot at least WINDOW old, and later.
                while past.len() >= 2 && past[1].at + WINDOW <= now.at {
                    past.pop_front();
                }
                past.push_back(now);
            }
            tokio::time::sleep(if demanded { SAMPLE_EVERY } else { SAMPLE_IDLE }).await;
        }
    }

    fn take(&self) -> Snapshot {
        let pods = self
            .registry
            .list()
            .into_iter()
            .filter_map(|(key, pod)| {
                let sample = match (&pod.http, &pod.meter) {
                    (Some(http), _) => http.sample(),
                    (None, Some(meter)) => meter.sample(),
                    (None, None) => return None,
                };
                let serves = pod.http.is_some();
                Some((key, Seen { uid: pod.uid, owner: pod.owner, container: pod.container, serves, sample }))
            })
            .collect();
        Snapshot { at: Instant::now(), process_cpu: process_cpu(), pods }
    }

    /// Every local pod's usage over about the last `WINDOW` (less for a pod younger than
    /// that, or just after the node started), and the node's.
    /// `owners`: only the pods of these Deployments (by uid), when given.
    pub fn current(&self, owners: Option<&std::collections::HashSet<String>>) -> (NodeRates, Vec<PodRates>) {
        let now = self.take();
        let ms =
            u64::try_from(now.at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        self.read_at_ms.store(ms.min(u64::MAX - 1), Ordering::Relaxed);
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        // The newest snapshot at least WINDOW old, else the oldest there is.
        let base = past.iter().rev().find(|s| s.at + WINDOW <= now.at).or_else(|| past.front());
        let pods = now
            .pods
            .iter()
            .filter(|(_, seen)| owners.is_none_or(|o| seen.owner.as_ref().is_some_and(|uid| o.contains(uid))))
            .map(|(key, seen)| {
                let (uid, sample) = (&seen.uid, &seen.sample);
                // The same pod, and the same counters (not restarted since).
                let old = base
                    .and_then(|b| b.pods.get(key))
                    .filter(|old| old.uid == *uid && old.sample.since == sample.since);
                let rates = match old {
                    Some(old) => Rates::between(&old.sample, sample),
                    // New since the window began: its counters were zero before it was born,
                    // so it reports over the same window as the others (a young pod's life
                    // so far, as a rate, would count the load it took over a second time).
                    None => {
                        let start = base.map_or(sample.since, |b| b.at.min(sample.since));
                        Rates::between(
                            &Sample { at: start, since: sample.since, ..Sample::default() },
                            sample,
                        )
                    }
                };
                PodRates {
                    key: key.clone(),
                    uid: uid.clone(),
                    container: seen.container.clone(),
                    serves: seen.serves,
                    rates,
                }
            })
            .collect();
        let window = base.map_or(Duration::ZERO, |b| now.at.saturating_duration_since(b.at));
        let cpu = match (base.and_then(|b| b.process_cpu), now.process_cpu) {
            (Some(old), Some(new)) if !window.is_zero() => {
                (new.saturating_sub(old).as_secs_f64() / window.as_secs_f64() * 1e9) as u64
            }
            _ => 0,
        };
        (NodeRates { window, cpu_nanocores: cpu, memory: process_rss().unwrap_or(0) }, pods)
    }
}

/// CPU time this process has used (user and system), from /proc (Linux; clock ticks of
/// USER_HZ, 100 on every Linux ABI).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// This process's resident memory in bytes, from /proc (Linux).
fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_deltas_over_the_window_and_concurrency_is_time_weighted() {
        let t0 = Instant::now();
        let old = Sample {
            at: t0,
            requests: 10,
            answered_ns: 1_000_000_000,
            busy_ns: 1_000_000_000,
            ..Sample::default()
        };
        // 2 s later: 40 more requests of 50 ms each, and 2 s of busy time: 1 in flight on average.
        let new = Sample {
            at: t0 + Duration::from_secs(2),
            cpu: Duration::from_millis(500),
            requests: 50,
            answered_ns: 3_000_000_000,
            busy_ns: 3_000_000_000,
            in_flight: 1,
            ..Sample::default()
        };
        let r = Rates::between(&old, &new);
        assert_eq!(r.window, Duration::from_secs(2));
        assert_eq!(r.cpu_nanocores, 250_000_000, "0.5 s of CPU in 2 s: a quarter core");
        assert!((r.requests_per_second - 20.0).abs() < 1e-9);
        assert!((r.concurrency - 1.0).abs() < 1e-9);
        assert_eq!(r.latency, Some(Duration::from_millis(50)));
        // Nothing ended: no latency, not a division by zero.
        assert_eq!(Rates::between(&new, &Sample { at: new.at, ..new }).latency, None);
    }

    #[test]
    fn busy_time_only_grows_and_is_the_time_weighted_in_flight() {
        let mut b = Busy::default();
        b.enter(0);
        b.enter(1_000);
        assert_eq!(b.read(2_000), (3_000, 2), "one request for 2 µs, another for 1 µs");
        b.leave(3_000);
        assert_eq!(b.read(5_000), (7_000, 1));
        // A clock read late by another thread never takes time back.
        b.enter(4_000);
        assert_eq!(b.read(5_000).0, 7_000);
        // Many threads entering and leaving while one reads: the integral never falls.
        let busy = std::sync::Arc::new(std::sync::Mutex::new(Busy::default()));
        let start = Instant::now();
        let ns = move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let busy = busy.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        busy.lock().unwrap_or_else(|p| p.into_inner()).enter(ns());
                        busy.lock().unwrap_or_else(|p| p.into_inner()).leave(ns());
                    }
                })
            })
            .collect();
        let mut last = 0;
        while workers.iter().any(|w| !w.is_finished()) {
            let (now, in_flight) = busy.lock().unwrap_or_else(|p| p.into_inner()).read(ns());
            assert!(now >= last && in_flight <= 4, "{now} after {last}, {in_flight} in flight");
            last = now;
        }
        for w in workers {
            let _ = w.join();
        }
        assert_eq!(busy.lock().unwrap_or_else(|p| p.into_inner()).read(ns()).1, 0);
    }

    #[test]
    fn this_process_is_seen() {
        assert!(process_rss().is_some_and(|b| b > 0));
        assert!(process_cpu().is_some());
    }
}
