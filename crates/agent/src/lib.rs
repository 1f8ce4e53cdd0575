//! The node agent (the kubelet of wasmkube): makes this node's sandboxes match the pods bound
//! to it, reports their status, and keeps the Node object's heartbeat.
//!
//! It never decides where pods go or how many there are; it only runs what the control plane
//! says and reports what happened. Every write goes through Raft.

mod admit;
mod events;
mod node;
mod probe;
mod pull;
mod sandbox;
mod status;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use wasmkube_api::Pod;
use wasmkube_api::lifecycle::FENCE_AFTER;
use wasmkube_apiserver::{Objects, Write};
use wasmkube_cache::{Changes, Reflector, Selector, SharedCache};
use wasmkube_runtime::{Runtime, SandboxRegistry};

use crate::admit::Admission;
use crate::events::EventBudget;
use crate::sandbox::Sandbox;

pub use pull::{BlobPuller, replicate};

/// How often statuses are re-checked without a change (cli pods change on their own).
const STATUS_POLL: Duration = Duration::from_millis(500);
/// Longest wait for one of the agent's writes (heartbeat, status, event).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Node graces out of touch with the cluster after which a node stops its own pods: past
/// any election (0.5–2 s with a split vote), so a failover never stops a survivor's pods.
pub const FENCE_GRACES: u32 = 3;
/// An http pod whose requests trap this many times in a row (none answered between) is
/// crashing: out of rotation for its back-off, then a fresh instance.
const CRASH_AFTER_TRAPS: u32 = 5;
/// At most one `RequestTrapped` event per pod this often (each carries how many trapped).
const TRAP_EVENT_EVERY: Duration = Duration::from_secs(10);
/// How soon a heartbeat that could not be recorded is tried again.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// This node's API URL and proxy URL, published on the Node object.
    pub api_url: String,
    pub proxy_url: String,
    pub max_pods: usize,
    /// Memory pods may reserve here (`--memory`); the machine's total when not set.
    pub memory: Option<u64>,
    /// This node's labels (`--label key=value`), for node selectors and spreading.
    pub labels: std::collections::BTreeMap<String, String>,
    pub heartbeat: Duration,
    /// The leader replaces the pods of a node it has been out of touch with this long
    /// (`--node-grace`); a node out of touch with the cluster for `FENCE_GRACES` times as
    /// long stops its own pods (past any election, which takes 0.5–2 s).
    pub node_grace: Duration,
}

pub struct Agent {
    config: AgentConfig,
    objects: Objects,
    runtime: Arc<Runtime>,
    /// The module bytes here, and other members' when they are not.
    puller: Arc<BlobPuller>,
    registry: SandboxRegistry,
    running: HashMap<String, Sandbox>,
    /// The pods of `running` admitted here, and the room they take.
    admission: Admission,
    rng: StdRng,
    /// Cut off from the cluster (out of touch for `FENCE_GRACES` node graces, or no heartbeat
    /// recorded for `FENCE_AFTER`): this node's pods are stopped until it is back and caught
    /// up. A node starts fenced: it catches up before it starts anything.
    fenced: bool,
    /// Whether it has caught up since it started (the first unfencing is not news).
    started: bool,
    /// A read barrier on its way (run beside the loop, which it must not hold up): true
    /// once this node holds everything the cluster had committed when it asked.
    catching_up: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// Set when the node is leaving the cluster (SIGTERM): see `leave`.
    leaving: Option<watch::Receiver<bool>>,
    /// Events this agent may still write now (a burst of 10,000 starts records a share).
    event_budget: EventBudget,
    /// Modules being copied and compiled in the background, and where each one's outcome is
    /// sent when it is done.
    preparing: HashSet<String>,
    prepared_tx: mpsc::UnboundedSender<Prepared>,
    prepared_rx: Option<mpsc::UnboundedReceiver<Prepared>>,
    /// Where the probes of each pod say that what they found changed (its key).
    probe_tx: mpsc::UnboundedSender<String>,
    probe_rx: Option<mpsc::UnboundedReceiver<String>>,
}

/// A module's background preparation ended: the digest, and why it failed if it did.
type Prepared = (String, Result<(), (String, String)>);

/// Makes `write`, waiting at most `WRITE_TIMEOUT`: a node cut off from the cluster must
/// not stall the agent or its heartbeat.
pub(crate) async fn write(objects: &Objects, write: Write) -> Result<serde_json::Value, String> {
    match tokio::time::timeout(WRITE_TIMEOUT, objects.write(write)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("not committed within {WRITE_TIMEOUT:?}")),
    }
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        objects: Objects,
        runtime: Arc<Runtime>,
        puller: Arc<BlobPuller>,
        registry: SandboxRegistry,
    ) -> Self {
        let (prepared_tx, prepared_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let memory = wasmkube_api::parse_memory(&node::allocatable_memory(&config)).unwrap_or(0);
        let admission = Admission::new(config.max_pods, memory);
        Agent {
            config,
            objects,
            runtime,
            puller,
            registry,
            running: HashMap::new(),
            admission,
            rng: StdRng::from_os_rng(),
            fenced: true,
            started: false,
            catching_up: None,
            leaving: None,
            event_budget: EventBudget::default(),
            preparing: HashSet::new(),
            prepared_tx,
            prepared_rx: Some(prepared_rx),
            probe_tx,
            probe_rx: Some(probe_rx),
        }
    }

    /// Follows `leaving`: once it is true, the agent leaves the cluster (see `leave`).
    pub fn with_leaving(mut self, leaving: watch::Receiver<bool>) -> Self {
        self.leaving = Some(leaving);
        self
    }

    /// Runs until `shutdown` resolves, then stops every sandbox.
    ///
    /// The agent follows only the pods bound to this node (a selector on `spec.nodeName`
    /// over the node's shared cache, see `wasmkube_cache`), and each pass handles the pods
    /// that changed: a burst of 10,000 pods elsewhere costs it a glance per change.
    pub async fn run(mut self, cache: SharedCache, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let node = self.config.node_name.clone();
        let selector: Selector<Pod> = Box::new(move |p| p.spec.node_name.as_deref() == Some(node.as_str()));
        let (mut pods, mut dirty) = Reflector::<Pod>::new(&cache, selector);
        let mut modules = self.objects.store().subscribe_all();
        let (recorded_tx, mut recorded) = watch::channel(Instant::now());
        let heartbeat = node::Heartbeat {
            config: self.config.clone(),
            objects: self.objects.clone(),
            recorded: recorded_tx,
        };
        let (stop_heartbeat, heartbeat_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stop_heartbeat = Some(stop_heartbeat);
        // Never set when nobody can ask this node to leave.
        let (_never, unset) = watch::channel(false);
        let mut leaving = self.leaving.take().unwrap_or(unset);
        // An agent started again while its node leaves never heartbeats (that would make
        // the node Ready again): it only finishes the leave.
        let mut left = *leaving.borrow_and_update();
        let mut heartbeat = (!left).then(|| {
            tokio::spawn(heartbeat.run(async move {
                let _ = heartbeat_stopped.await;
            }))
        });
        if left {
            self.leave(&pods).await;
        }
        let mut next_poll = tokio::time::Instant::now() + STATUS_POLL;
        // How often contact with the cluster is looked at: a few times per grace.
        let mut touch = tokio::time::interval((self.config.node_grace / 4).max(Duration::from_millis(20)));
        touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let Some(mut prepared) = self.prepared_rx.take() else { return };
        let Some(mut probed) = self.probe_rx.take() else { return };
        loop {
            let mut poll = false;
            let mut module_appeared = false;
            tokio::select! {
                _ = &mut shutdown => break,
                // A module copied and compiled in the background: its pods start now; or it
                // could not be, and they report why and back off.
                Some((digest, outcome)) = prepared.recv() => {
                    self.preparing.remove(&digest);
                    match outcome {
                        Ok(()) => module_appeared = true,
                        Err((reason, message)) => dirty.extend(self.preparation_failed(&digest, &reason, &message)),
                    }
                }
                // A heartbeat recorded: unfence at once if fenced.
                // (Gone once the heartbeat stopped for a leave: the loop goes on.)
                r = recorded.changed(), if !left => if r.is_err() { break },
                changes = pods.changed() => match changes {
                    Some(changes) => dirty.extend(changes),
                    None => break,
                },
                // A module that arrives lets pods waiting for it start at once.
                r = modules.recv() => match r {
                    Ok(e) => module_appeared = e.concerns(&["Module"]),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => module_appeared = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep_until(next_poll) => {
                    poll = true;
                    next_poll = tokio::time::Instant::now() + STATUS_POLL;
                }
                _ = touch.tick() => {}
                // A pod's probes found something new: report it (or restart its instance).
                Some(key) = probed.recv() => {
                    dirty.insert(key);
                }
                r = leaving.changed(), if !left => match r {
                    Ok(()) if *leaving.borrow_and_update() => {
                        left = true;
                        // A beat on its way lands first, so the NotReady below is the last word.
                        if let Some(stop) = stop_heartbeat.take() {
                            let _ = stop.send(());
                        }
                        if let Some(beating) = heartbeat.take() {
                            let _ = beating.await;
                        }
                        self.leave(&pods).await;
                    }
                    Ok(()) => {}
                    // Whoever could ask is gone: the node is stopping anyway.
                    Err(_) => left = true,
                },
            }
            let silent = recorded.borrow_and_update().elapsed();
            let out_of_touch = self.objects.cluster().contact().out_of_touch();
            let cut_off = silent >= FENCE_AFTER || out_of_touch >= self.config.node_grace * FENCE_GRACES;
            if cut_off && !self.fenced {
                self.fence(silent, out_of_touch);
            } else if !cut_off && self.fenced && self.caught_up() {
                if self.started {
                    tracing::info!("back in touch with the cluster: running this node's pods again");
                }
                self.fenced = false;
                self.started = true;
                // What changed while it was away is applied first: a pod replaced meanwhile
                // is gone, and never starts here again.
                dirty.extend(pods.drain());
                dirty.extend(pods.iter().map(|(k, _)| k.clone()));
            }
            if !self.fenced && (poll || module_appeared || !dirty.is_empty()) {
                // Statuses that were not recorded are tried again by the next pass.
                dirty = self.sync(&pods, std::mem::take(&mut dirty), poll, module_appeared).await;
            }
        }
        if let Some(stop) = stop_heartbeat.take() {
            let _ = stop.send(());
        }
        // The heartbeat's panic is the agent's: its supervisor must see it and start both again.
        if let Some(beating) = heartbeat.take()
            && let Err(e) = beating.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
        self.stop_all();
    }

    /// One pass over what changed: stop sandboxes whose pod is gone (or replaced), start those
    /// bound here and not running (and failed starts that are due again, or all of them when
    /// a module appeared), and report the statuses that differ. On a `poll`, sandboxes whose
    /// status moves on their own (cli pods, failed starts) are looked at too. The writes of a
    /// pass go out together, so Raft commits them in a few batches; the pods whose status was
    /// not recorded are returned.
    async fn sync(&mut self, pods: &Reflector<Pod>, dirty: Changes, poll: bool, retry_now: bool) -> Changes {
        for key in &dirty {
            let wanted = pods.get(key).and_then(|p| p.metadata.uid.as_deref());
            if self.running.get(key).is_some_and(|s| Some(s.uid()) != wanted) {
                tracing::info!(pod = %key, "stopping sandbox");
                self.registry.remove(key);
                self.running.remove(key);
                self.admission.release(key);
            }
        }
        let mut writes = self.restart_unhealthy(pods, &dirty);
        let mut crashing = Changes::new();
        if poll {
            writes.extend(self.report_traps(pods));
            let (events, changed) = self.crash_or_recover(pods);
            writes.extend(events);
            crashing = changed;
        }
        let mut due: Vec<(String, u32)> = dirty
            .iter()
            .filter(|k| pods.get(k).is_some() && !self.running.contains_key(*k))
            .map(|k| (k.clone(), 0))
            .collect();
        // New pods are admitted oldest first, as the kubelet admits them: after a restart
        // with less room, the pods that were there first keep it.
        due.sort_by_cached_key(|(k, _)| {
            let created = pods.get(k).and_then(|p| p.metadata.creation_timestamp.clone());
            (created, k.clone())
        });
        if poll || retry_now {
            due.extend(
                self.running.iter().filter_map(|(k, s)| s.due_retry(retry_now).map(|a| (k.clone(), a))),
            );
        }
        let mut check: Vec<String> = Vec::with_capacity(dirty.len() + due.len());
        for (key, attempts) in due {
            let Some(pod) = pods.get(&key) else { continue };
            let (sandbox, event) = self.start(pod, attempts);
            self.running.insert(key.clone(), sandbox);
            writes.extend(event);
            check.push(key);
        }
        check.extend(dirty);
        check.extend(crashing);
        if poll {
            check.extend(self.running.iter().filter(|(_, s)| s.moves_on_its_own()).map(|(k, _)| k.clone()));
        }
        // A pod started by this pass is also among the changed ones: its status is written once.
        let mut checked = HashSet::with_capacity(check.len());
        check.retain(|k| checked.insert(k.clone()));
        for key in check {
            if let (Some(pod), Some(sandbox)) = (pods.get(&key), self.running.get(&key)) {
                let status = status::of(sandbox, &self.config.node_name);
                if pod.status.as_ref() != Some(&status) {
                    let (namespace, name) = (pod.metadata.namespace.as_deref(), &pod.metadata.name);
                    writes.push(Write::update_status::<Pod, _>(namespace, name, &status, None));
                }
            }
        }
        self.write_all(writes).await
    }

    /// A `RequestTrapped` warning for each http pod whose requests trapped since it was last
    /// told, at most one per pod per `TRAP_EVENT_EVERY` (with how many, and the last trap's
    /// message), within the node's event budget: a pod that traps is seen, and a flood of
    /// traps is not a flood of writes.
    fn report_traps(&mut self, pods: &Reflector<Pod>) -> Vec<Write> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (key, sandbox) in self.running.iter_mut() {
            let Sandbox::Http { pod, traps_reported, trap_event_at, .. } = sandbox else { continue };
            let (traps, last) = pod.traps();
            if traps <= *traps_reported || trap_event_at.is_some_and(|at| now < at + TRAP_EVENT_EVERY) {
                continue;
            }
            let message = format!(
                "{} request(s) trapped since the last report: {}",
                traps - *traps_reported,
                last.unwrap_or_default()
            );
            *traps_reported = traps;
            *trap_event_at = Some(now);
            due.push((key.clone(), message));
        }
        let mut writes = Vec::new();
        for (key, message) in due {
            if let Some(pod) = pods.get(&key)
                && self.event_budget.take()
            {
                writes.extend(self.event(pod, "Warning", "RequestTrapped", message));
            }
        }
        writes
    }

    /// http pods whose requests keep trapping are crashing, as a container that keeps dying:
    /// out of rotation (not Ready, `CrashLoopBackOff`, this node's proxy stops serving it)
    /// for the node's crash back-off — doubling with each restart — then a fresh instance,
    /// its restart count one more. Returns the events to record and the pods whose status
    /// changed.
    fn crash_or_recover(&mut self, pods: &Reflector<Pod>) -> (Vec<Write>, Changes) {
        let at = Instant::now();
        let config = self.runtime.config();
        let (start, max) = (config.crash_backoff, config.crash_backoff_max.max(config.crash_backoff));
        let reset = config.crash_backoff_reset;
        let (mut crashed_now, mut recovered) = (Vec::new(), Vec::new());
        for (key, sandbox) in self.running.iter_mut() {
            let Sandbox::Http { pod, crashed, streak, up_since, .. } = sandbox else { continue };
            match crashed {
                Some(c) if at >= c.0 => recovered.push(key.clone()),
                Some(_) => {}
                None if pod.traps_in_a_row() >= CRASH_AFTER_TRAPS => {
                    let earlier = streak_at(*streak, *up_since, at, reset);
                    *streak = earlier.saturating_add(1);
                    let backoff = start.saturating_mul(1 << earlier.min(16)).min(max);
                    let last = pod.traps().1.unwrap_or_default();
                    let why = format!("{} requests in a row trapped: {last}", pod.traps_in_a_row());
                    let ended = wasmkube_api::Terminated {
                        exit_code: 1,
                        reason: Some("Error".into()),
                        message: Some(why.clone()),
                        finished_at: Some(now()),
                    };
                    *crashed = Some(Box::new((at + backoff, ended)));
                    crashed_now.push((key.clone(), backoff, why));
                }
                None => {}
            }
        }
        let (mut writes, mut changed) = (Vec::new(), Changes::new());
        for (key, backoff, why) in crashed_now {
            writes.extend(self.back_off(pods, &key, backoff, &why));
            changed.insert(key);
        }
        for key in recovered {
            let Some(pod) = pods.get(&key) else { continue };
            let Some(Sandbox::Http { restarts, streak, crashed, .. }) = self.running.get(&key) else {
                continue;
            };
            let (restarts, streak, ended) =
                (restarts.saturating_add(1), *streak, crashed.clone().map(|c| Box::new(c.1)));
            self.registry.remove(&key);
            self.running.remove(&key);
            let (mut sandbox, started) = self.start(pod, 0);
            writes.extend(started);
            if let Sandbox::Http { restarts: r, streak: s, last_state, .. } = &mut sandbox {
                (*r, *s) = (restarts, streak);
                *last_state = ended;
            }
            self.running.insert(key.clone(), sandbox);
            changed.insert(key);
        }
        (writes, changed)
    }

    /// Restarts the instance of each pod of `keys` whose liveness (or startup) probe failed,
    /// as the kubelet kills and restarts such a container: a fresh sandbox, its restart
    /// count one more, its last state the failure; with the kubelet's `Unhealthy` and
    /// `Killing` events. Returns the events to record.
    fn restart_unhealthy(&mut self, pods: &Reflector<Pod>, keys: &Changes) -> Vec<Write> {
        let mut writes = Vec::new();
        let config = self.runtime.config();
        let (start, max) = (config.crash_backoff, config.crash_backoff_max.max(config.crash_backoff));
        let reset = config.crash_backoff_reset;
        for key in keys {
            let Some(Sandbox::Http {
                prober: Some(prober), restarts, streak, up_since, crashed: None, ..
            }) = self.running.get(key)
            else {
                continue;
            };
            let Some(why) = prober.state.failed() else { continue };
            let Some(pod) = pods.get(key) else { continue };
            let earlier = streak_at(*streak, *up_since, Instant::now(), reset);
            let restarts = restarts.saturating_add(1);
            // Within the node's event budget, as every event of the agent's.
            if self.event_budget.take() {
                writes.extend(self.event(pod, "Warning", "Unhealthy", why.clone()));
                let container = pod.spec.containers.first().map(|c| c.name.clone()).unwrap_or_default();
                let killing = format!("Container {container} failed a probe, will be restarted");
                writes.extend(self.event(pod, "Normal", "Killing", killing));
            }
            let ended = wasmkube_api::Terminated {
                exit_code: 137,
                reason: Some("Unhealthy".into()),
                message: Some(why.clone()),
                finished_at: Some(now()),
            };
            if earlier > 0 {
                // Restarted before and unhealthy again: crashing, as the kubelet backs off a
                // container that keeps failing (10 s, doubling to 5 min).
                let backoff = start.saturating_mul(1 << (earlier - 1).min(16)).min(max);
                if let Some(Sandbox::Http { crashed, streak, .. }) = self.running.get_mut(key) {
                    *crashed = Some(Box::new((Instant::now() + backoff, ended)));
                    *streak = earlier.saturating_add(1);
                }
                writes.extend(self.back_off(pods, key, backoff, &why));
                continue;
            }
            tracing::info!(pod = %key, restarts, "{why}: restarting its instance");
            self.registry.remove(key);
            self.running.remove(key);
            let (mut sandbox, started) = self.start(pod, 0);
            writes.extend(started);
            if let Sandbox::Http { restarts: r, streak: s, last_state, .. } = &mut sandbox {
                (*r, *s) = (restarts, earlier.saturating_add(1));
                *last_state = Some(Box::new(ended));
            }
            self.running.insert(key.clone(), sandbox);
        }
        writes
    }

    /// Takes a crashing http pod out of rotation for `backoff`: this node's proxy stops
    /// serving it at once (its status tells the others); a `BackOff` event within the
    /// event budget.
    fn back_off(&mut self, pods: &Reflector<Pod>, key: &str, backoff: Duration, why: &str) -> Option<Write> {
        if let Some(Sandbox::Http { uid, pod, .. }) = self.running.get(key) {
            let local = wasmkube_runtime::LocalPod {
                uid: uid.clone(),
                http: None,
                meter: None,
                logs: pod.logs().clone(),
                container: String::new(),
                owner: None,
            };
            self.registry.insert(key.to_string(), local);
        }
        tracing::info!(pod = %key, ?backoff, "{why}: backing off");
        let pod = pods.get(key)?;
        if !self.event_budget.take() {
            return None;
        }
        self.event(pod, "Warning", "BackOff", format!("Back-off {backoff:?} restarting: {why}"))
    }

    /// Makes `writes` in a few batch entries (`Objects::write_many`), waiting at most
    /// `WRITE_TIMEOUT`. Returns the pods whose status was not recorded, to be reported again
    /// by the next pass.
    async fn write_all(&self, writes: Vec<Write>) -> Changes {
        let statuses: Vec<Option<String>> = writes
            .iter()
            .map(|w| w.key().filter(|k| k.kind == "Pod").map(|k| format!("{}/{}", k.namespace, k.name)))
            .collect();
        if writes.is_empty() {
            return Changes::new();
        }
        let results = match tokio::time::timeout(WRITE_TIMEOUT, self.objects.write_many(writes)).await {
            Ok(results) => results,
            Err(_) => {
                tracing::debug!("statuses not committed within {WRITE_TIMEOUT:?}");
                return statuses.into_iter().flatten().collect();
            }
        };
        let mut failed = Changes::new();
        for (result, pod) in results.into_iter().zip(statuses) {
            if let Err(e) = result {
                tracing::debug!("status or event not recorded yet: {e}");
                failed.extend(pod);
            }
        }
        failed
    }

    /// The pods waiting for module `digest`, which could not be prepared, fail with the
    /// reason (and are retried with back-off). Returns their keys.
    fn preparation_failed(&mut self, digest: &str, reason: &str, message: &str) -> Changes {
        let mut keys = Changes::new();
        for (key, sandbox) in self.running.iter_mut() {
            if let Sandbox::Preparing { uid, digest: d, attempts } = sandbox
                && d == digest
            {
                *sandbox = sandbox::failed(uid.clone(), reason.to_string(), message.to_string(), *attempts);
                keys.insert(key.clone());
            }
        }
        tracing::info!(digest, reason, "module not prepared: {message}");
        keys
    }

    /// Leaves the cluster gracefully (the node got SIGTERM), as the kubelet's graceful node
    /// shutdown: with its heartbeat stopped, the node reports itself NotReady
    /// (`NodeShuttingDown`: no pod is placed here, and every proxy stops routing here at
    /// once) and deletes its pods, so their Deployments start them on the other nodes now.
    /// Its sandboxes serve the requests they already have until each pod's deletion reaches
    /// them; a request another proxy sends after that is refused as not served, and goes to
    /// another pod.
    async fn leave(&mut self, pods: &Reflector<Pod>) {
        let name = &self.config.node_name;
        let key = wasmkube_store::ObjectKey::new("Node", None, name);
        let node: Option<wasmkube_api::Node> =
            self.objects.store().get(&key).ok().flatten().and_then(|v| serde_json::from_value(v).ok());
        let mut writes = Vec::new();
        if let Some(node) = node {
            let mut status = node.status.clone().unwrap_or_default();
            let mut ready = wasmkube_api::Condition::new("Ready", false);
            ready.reason = Some("NodeShuttingDown".into());
            ready.message = Some("node is shutting down".into());
            ready.last_transition_time = Some(now());
            status.conditions.retain(|c| c.type_ != "Ready");
            status.conditions.push(ready);
            writes.push(Write::update_status::<wasmkube_api::Node, _>(None, name, &status, None));
        }
        for (_, pod) in pods.iter() {
            let namespace = pod.metadata.namespace.as_deref();
            writes.push(Write::delete(
                <Pod as wasmkube_api::Resource>::KIND,
                namespace,
                &pod.metadata.name,
                None,
            ));
        }
        tracing::info!(
            pods = writes.len().saturating_sub(1),
            "leaving the cluster: NotReady, and this node's pods go to the others"
        );
        let failed = self.write_all(writes).await;
        if !failed.is_empty() {
            // Gone already (not found) is fine; the node controller replaces the rest once
            // the node is gone.
            tracing::debug!("{} of this node's pod deletions did not land", failed.len());
        }
    }

    /// Whether this node has applied everything the cluster had committed when it asked (a
    /// read barrier through the leader), so its pods are the cluster's. The barrier runs in
    /// the background, one at a time; this asks for one when none is on its way and reports
    /// how the last one ended.
    fn caught_up(&mut self) -> bool {
        if let Some(rx) = &mut self.catching_up {
            match rx.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return false,
                Ok(true) => {
                    self.catching_up = None;
                    return true;
                }
                Ok(false) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {}
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cluster = self.objects.cluster().clone();
        tokio::spawn(async move {
            let done = match tokio::time::timeout(WRITE_TIMEOUT, cluster.read_barrier()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::debug!("not caught up with the cluster yet: {e}");
                    false
                }
                Err(_) => false,
            };
            let _ = tx.send(done);
        });
        self.catching_up = Some(rx);
        false
    }

    /// Stops every sandbox of this node: it is cut off from the cluster (out of touch with
    /// its leader for the node grace, or unable to record a heartbeat), so the cluster may
    /// be replacing its pods elsewhere.
    fn fence(&mut self, silent: Duration, out_of_touch: Duration) {
        tracing::warn!(
            "cut off from the cluster (leader last heard {:.1}s ago, last heartbeat recorded {:.1}s ago): stopping this node's {} pod(s) until it is back",
            out_of_touch.as_secs_f64(),
            silent.as_secs_f64(),
            self.running.len()
        );
        self.stop_all();
        self.fenced = true;
    }

    fn stop_all(&mut self) {
        for key in self.running.keys() {
            self.registry.remove(key);
        }
        self.running.clear();
        self.admission.clear();
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(wasmkube_api::DEFAULT_NAMESPACE),
        p.metadata.name
    )
}

/// A crash streak at `at` of a pod whose instance has been up since `up_since`: an instance
/// that ran for `reset` ends the streak, as the kubelet forgets a container's back-off after
/// 10 minutes of running.
fn streak_at(streak: u32, up_since: Instant, at: Instant, reset: Duration) -> u32 {
    if at.saturating_duration_since(up_since) >= reset { 0 } else { streak }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// With milliseconds, so two heartbeats in one second still differ.
fn now_precise() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
