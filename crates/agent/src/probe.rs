//! Probing http pods, as the kubelet's prober does: a startup probe first (the other two wait
//! until it has succeeded once), then readiness and liveness, each on its own period. For an
//! http pod a probe is a GET to its component inside the node, no network hop. Readiness
//! decides the pod's Ready condition (so whether every proxy sends it traffic); a liveness
//! (or startup) probe that fails `failureThreshold` times in a row has the agent restart the
//! pod's instance. A probe waits, within its timeout, for a slot of the pod's own (a busy
//! pod frees one in time; a pod whose every slot is held by requests that never end does
//! not, and fails it); with no free instance slot on the node it is skipped, not failed: a
//! busy node says nothing of one pod's health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;
use wasmkube_api::{Container, Probe};
use wasmkube_runtime::{HttpPod, RequestError};

/// What the probes of one pod have found, read by the agent when it reports the pod.
#[derive(Debug)]
pub(crate) struct ProbeState {
    ready: AtomicBool,
    /// Why its liveness (or startup) probe failed: the agent restarts the instance.
    failed: Mutex<Option<String>>,
}

impl ProbeState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The probes of one running pod; dropping it stops them.
#[derive(Debug)]
pub(crate) struct Prober {
    pub state: Arc<ProbeState>,
    task: tokio::task::AbortHandle,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing the pod of `key` (served by `pod`) as `container` asks; `changed` is told
/// its key whenever what the probes found changes. None when it has no probes.
pub(crate) fn start(
    key: String,
    pod: Arc<HttpPod>,
    container: &Container,
    changed: mpsc::UnboundedSender<String>,
) -> Option<Prober> {
    let (startup, readiness, liveness) = (
        container.startup_probe.clone(),
        container.readiness_probe.clone(),
        container.liveness_probe.clone(),
    );
    if startup.is_none() && readiness.is_none() && liveness.is_none() {
        return None;
    }
    // Ready at once only when nothing has to be found first.
    let ready = startup.is_none() && readiness.is_none();
    let state = Arc::new(ProbeState { ready: AtomicBool::new(ready), failed: Mutex::new(None) });
    let probes = Probes { key, pod, state: state.clone(), changed };
    let task = tokio::spawn(probes.run(startup, readiness, liveness)).abort_handle();
    Some(Prober { state, task })
}

struct Probes {
    key: String,
    pod: Arc<HttpPod>,
    state: Arc<ProbeState>,
    changed: mpsc::UnboundedSender<String>,
}

/// One probe's clock and its run of results.
struct Clock {
    probe: Probe,
    next: Instant,
    successes: u32,
    failures: u32,
}

impl Clock {
    fn new(probe: Probe) -> Self {
        let next = Instant::now() + probe.initial_delay();
        Clock { probe, next, successes: 0, failures: 0 }
    }

    /// Notes a result; returns it once the run of such results has reached its threshold.
    fn note(&mut self, result: &Result<(), String>) -> Option<bool> {
        self.next = Instant::now() + self.probe.period();
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= self.probe.success_threshold()).then_some(true)
            }
            Err(_) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.failures >= self.probe.failure_threshold()).then_some(false)
            }
        }
    }
}

impl Probes {
    async fn run(self, startup: Option<Probe>, readiness: Option<Probe>, liveness: Option<Probe>) {
        if let Some(probe) = startup {
            let mut clock = Clock::new(probe);
            loop {
                tokio::time::sleep_until(clock.next).await;
                let Some(result) = self.check(&clock.probe).await else {
                    clock.next = Instant::now() + clock.probe.period();
                    continue;
                };
                match clock.note(&result) {
                    Some(true) => break,
                    Some(false) => return self.fail("Startup", result),
                    None => {}
                }
            }
            if readiness.is_none() {
                self.set_ready(true);
            }
        }
        let (mut readiness, mut liveness) = (readiness.map(Clock::new), liveness.map(Clock::new));
        loop {
            let next = match (&readiness, &liveness) {
                (Some(r), Some(l)) => r.next.min(l.next),
                (Some(r), None) => r.next,
                (None, Some(l)) => l.next,
                (None, None) => return,
            };
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if let Some(clock) = readiness.as_mut().filter(|c| c.next <= now) {
                match self.check(&clock.probe).await {
                    Some(result) => {
                        if let Some(ready) = clock.note(&result) {
                            self.set_ready(ready);
                        }
                    }
                    None => clock.next = Instant::now() + clock.probe.period(),
                }
            }
            if let Some(clock) = liveness.as_mut().filter(|c| c.next <= now) {
                match self.check(&clock.probe).await {
                    Some(result) => {
                        if clock.note(&result) == Some(false) {
                            return self.fail("Liveness", result);
                        }
                    }
                    None => clock.next = Instant::now() + clock.probe.period(),
                }
            }
        }
    }

    /// One probe: Ok for a status from 200 to 399, as Kubernetes counts it; None when the
    /// node had no free instance slot for it. It waits for a slot of the pod's own within its
    /// timeout: a pod whose every slot is held by requests that do not end fails it.
    async fn check(&self, probe: &Probe) -> Option<Result<(), String>> {
        let headers: Vec<(String, String)> =
            probe.headers().iter().map(|h| (h.name.clone(), h.value.clone())).collect();
        let answer = tokio::time::timeout(probe.timeout(), self.pod.get(probe.path(), &headers)).await;
        Some(match answer {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(RequestError::Overloaded(_))) => return None,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", probe.timeout())),
        })
    }

    fn set_ready(&self, ready: bool) {
        if self.state.ready.swap(ready, Ordering::AcqRel) != ready {
            let _ = self.changed.send(self.key.clone());
        }
    }

    fn fail(&self, probe: &str, result: Result<(), String>) {
        let why = result.err().unwrap_or_default();
        *self.state.failed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{probe} probe failed: {why}"));
        self.state.ready.store(false, Ordering::Release);
        let _ = self.changed.send(self.key.clone());
    }
}
