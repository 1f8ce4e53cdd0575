//! Pod metrics at their source. Every pod keeps counters that only grow (CPU time run,
//! requests answered, the time they took, the time-weighted requests in flight) and its
//! linear memory in use; the node samples the pods whose metrics are read every
//! `SAMPLE_EVERY` (all of them every `SAMPLE_IDLE`) and reports usage as
//! rates over the last `WINDOW`, as the kubelet's resource metrics do (over 1 s rather than
//! 15 s: a wasm pod starts in microseconds, so an autoscaler can afford to react fast).
//!
//! Concurrency is time-weighted, as Knative's: the busy time of all requests (answered or
//! still in flight) in the window, divided by the window, so a pod that serves one 100 ms
//! request every 200 ms has a concurrency of 0.5 whatever the instant it is looked at.

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Of every pod (else of some owners' only).
    full: bool,
    process_cpu: Option<Duration>,
    /// By `namespace/name`.
    pods: HashMap<String, Seen>,
}

struct Seen {
    uid: String,
    container: String,
    serves: bool,
    sample: Sample,
}

/// Whose metrics were read lately, so the sampler knows what to sample.
#[derive(Default)]
struct Demand {
    /// When every pod's were last read (the metrics API, `wasmctl top`).
    all: Option<Instant>,
    /// When each Deployment's (by uid) were last read (the autoscaler's targets).
    owners: HashMap<String, Instant>,
}

/// Owners remembered at most (a query names at most this many; older ones are forgotten).
const MAX_OWNERS: usize = 10_000;

impl Demand {
    fn note(&mut self, owners: Option<&HashSet<String>>, now: Instant) {
        match owners {
            None => self.all = Some(now),
            Some(owners) => {
                for uid in owners.iter().take(MAX_OWNERS) {
                    self.owners.insert(uid.clone(), now);
                }
            }
        }
        self.owners.retain(|_, at| now.saturating_duration_since(*at) < DEMAND_LASTS);
        if self.owners.len() > MAX_OWNERS {
            self.owners.clear();
        }
    }

    /// What to sample now: every pod (`None`), or these owners' pods.
    fn wanted(&self, now: Instant) -> Option<HashSet<String>> {
        if self.all.is_some_and(|at| now.saturating_duration_since(at) < DEMAND_LASTS) {
            return None;
        }
        Some(
            self.owners
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) < DEMAND_LASTS)
                .map(|(uid, _)| uid.clone())
                .collect(),
        )
    }
}

/// The node's recent samples of its pods.
pub struct Sampler {
    registry: SandboxRegistry,
    past: Mutex<VecDeque<Snapshot>>,
    demand: Mutex<Demand>,
}

impl Sampler {
    pub fn new(registry: SandboxRegistry) -> Arc<Self> {
        Arc::new(Sampler { registry, past: Mutex::new(VecDeque::new()), demand: Mutex::default() })
    }

    /// Samples, for as long as the task runs, every `SAMPLE_EVERY` the pods whose metrics
    /// were read within `DEMAND_LASTS` (every pod after a read of all; only an autoscaler's
    /// targets' after its reads: a node with 10,000 pods does not go over them all twice a
    /// second for one autoscaler of one pod), and every pod every `SAMPLE_IDLE`.
    pub async fn run(self: Arc<Self>) {
        let mut last_full: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wanted = self.demand.lock().unwrap_or_else(|p| p.into_inner()).wanted(now);
            let full_due = last_full.is_none_or(|at| now.saturating_duration_since(at) >= SAMPLE_IDLE);
            let snapshot = match wanted {
                _ if full_due => Some(self.take(None)),
                None => Some(self.take(None)),
                Some(owners) if !owners.is_empty() => Some(self.take(Some(&owners))),
                Some(_) => None,
            };
            if let Some(snapshot) = snapshot {
                if snapshot.full {
                    last_full = Some(snapshot.at);
                }
                self.keep(snapshot);
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    }

    /// Keeps `snapshot`, and what a window may still need: from the newest full snapshot at
    /// least `WINDOW` before it on (every pod is in that one; older ones add nothing).
    fn keep(&self, snapshot: Snapshot) {
        let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let cutoff = past.iter().rposition(|s| s.full && s.at + WINDOW <= snapshot.at);
        if let Some(cutoff) = cutoff {
            past.drain(..cutoff);
        }
        past.push_back(snapshot);
    }

    /// The pods of `owners` (Deployment uids), or every pod.
    fn take(&self, owners: Option<&HashSet<String>>) -> Snapshot {
        let pods = self
            .registry
            .filter_map(|key, pod| {
                if let Some(owners) = owners
                    && !pod.owner.as_ref().is_some_and(|uid| owners.contains(uid))
                {
                    return None;
                }
                let sample = match (&pod.http, &pod.meter) {
                    (Some(http), _) => http.sample(),
                    (None, Some(meter)) => meter.sample(),
                    (None, None) => return None,
                };
                let seen = Seen {
                    uid: pod.uid.clone(),
                    container: pod.container.clone(),
                    serves: pod.http.is_some(),
                    sample,
                };
                Some((key.to_string(), seen))
            })
            .into_iter()
            .collect();
        Snapshot { at: Instant::now(), full: owners.is_none(), process_cpu: process_cpu(), pods }
    }

    /// Every local pod's usage over about the last `WINDOW` (less for a pod younger than
    /// that, more for one not sampled since), and the node's.
    /// `owners`: only the pods of these Deployments (by uid), when given.
    pub fn current(&self, owners: Option<&HashSet<String>>) -> (NodeRates, Vec<PodRates>) {
        let now = self.take(owners);
        self.demand.lock().unwrap_or_else(|p| p.into_inner()).note(owners, now.at);
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let window_start = now.at.checked_sub(WINDOW).unwrap_or(now.at);
        let pods = now
            .pods
            .iter()
            .map(|(key, seen)| {
                let (uid, sample) = (&seen.uid, &seen.sample);
                // The newest sample of the same pod, and the same counters (not restarted
                // since), at least WINDOW old.
                let old = past.iter().rev().filter(|s| s.at + WINDOW <= now.at).find_map(|s| {
                    s.pods.get(key).filter(|old| old.uid == *uid && old.sample.since == sample.since)
                });
                let rates = match old {
                    Some(old) => Rates::between(&old.sample, sample),
                    // Not sampled that long ago: its counters were zero before it was born, so
                    // it reports over the same window as the others (a young pod's life so
                    // far, as a rate, would count the load it took over a second time).
                    None => Rates::between(
                        &Sample {
                            at: window_start.min(sample.since),
                            since: sample.since,
                            ..Sample::default()
                        },
                        sample,
                    ),
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
        // The newest snapshot at least WINDOW old, else the oldest there is.
        let base = past.iter().rev().find(|s| s.at + WINDOW <= now.at).or_else(|| past.front());
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
