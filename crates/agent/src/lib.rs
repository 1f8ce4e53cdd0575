//! The node agent (the kubelet of wasmkube): makes this node's sandboxes match the pods bound
//! to it, reports their status, and keeps the Node object's heartbeat.
//!
//! It never decides where pods go or how many there are; it only runs what the control plane
//! says and reports what happened. Every write goes through Raft.

mod node;
mod pull;
mod sandbox;
mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use wasmkube_api::{Pod, PodStatus};
use wasmkube_controllers::FENCE_AFTER;
use wasmkube_raft::ClusterHandle;
use wasmkube_runtime::{Runtime, SandboxRegistry};
use wasmkube_store::{Command, ObjectKey};

use crate::sandbox::Sandbox;

pub use pull::{BlobPuller, PEER_BLOBS_PATH, replicate};

/// How often statuses are re-checked without a change (cli pods change on their own).
const STATUS_POLL: Duration = Duration::from_millis(500);
/// Longest wait for one of the agent's writes (heartbeat, status, event).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How soon a heartbeat that could not be recorded is tried again.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// This node's API URL and proxy URL, published on the Node object.
    pub api_url: String,
    pub proxy_url: String,
    pub max_pods: usize,
    pub heartbeat: Duration,
}

pub struct Agent {
    config: AgentConfig,
    cluster: ClusterHandle,
    runtime: Arc<Runtime>,
    /// The module bytes here, and other members' when they are not.
    puller: Arc<BlobPuller>,
    registry: SandboxRegistry,
    running: HashMap<String, Sandbox>,
    rng: StdRng,
    /// No heartbeat recorded for `FENCE_AFTER`: this node's pods are stopped until one is.
    fenced: bool,
}

/// Proposes `command`, waiting at most `WRITE_TIMEOUT`: a node cut off from the cluster must
/// not stall the agent or its heartbeat.
pub(crate) async fn write(cluster: &ClusterHandle, command: Command) -> Result<serde_json::Value, String> {
    match tokio::time::timeout(WRITE_TIMEOUT, cluster.propose(command)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("not committed within {WRITE_TIMEOUT:?}")),
    }
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        cluster: ClusterHandle,
        runtime: Arc<Runtime>,
        puller: Arc<BlobPuller>,
        registry: SandboxRegistry,
    ) -> Self {
        Agent {
            config,
            cluster,
            runtime,
            puller,
            registry,
            running: HashMap::new(),
            rng: StdRng::from_os_rng(),
            fenced: false,
        }
    }

    /// Runs until `shutdown` resolves, then stops every sandbox.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changes = self.cluster.store().subscribe_all();
        let (recorded_tx, mut recorded) = watch::channel(Instant::now());
        let heartbeat = node::Heartbeat {
            config: self.config.clone(),
            cluster: self.cluster.clone(),
            recorded: recorded_tx,
        };
        let (stop_heartbeat, heartbeat_stopped) = tokio::sync::oneshot::channel::<()>();
        let heartbeat = tokio::spawn(heartbeat.run(async move {
            let _ = heartbeat_stopped.await;
        }));
        let mut next_poll = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                // A heartbeat recorded: unfence at once if fenced.
                r = recorded.changed() => if r.is_err() { break },
                // Only pods (and the modules they run) concern the agent: a storm of other
                // writes costs it nothing.
                r = changes.recv() => match r {
                    Ok(e) if !e.concerns(&["Pod", "Module"]) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => {}
                },
                _ = tokio::time::sleep_until(next_poll) => {}
            }
            while changes.try_recv().is_ok() {}
            let silent = recorded.borrow_and_update().elapsed();
            if silent >= FENCE_AFTER && !self.fenced {
                self.fence(silent);
            } else if silent < FENCE_AFTER && self.fenced {
                tracing::info!("heartbeat recorded again: running this node's pods again");
                self.fenced = false;
            }
            if !self.fenced {
                self.sync().await;
            }
            next_poll = tokio::time::Instant::now() + STATUS_POLL;
        }
        let _ = stop_heartbeat.send(());
        let _ = heartbeat.await;
        for key in self.running.keys() {
            self.registry.remove(key);
        }
        self.running.clear();
    }

    /// One pass: start what is bound here and not running, stop what is running and no longer
    /// bound, and report statuses that changed.
    async fn sync(&mut self) {
        let pods = match self.cluster.store().list("Pod", None) {
            Ok((items, _)) => items,
            Err(e) => {
                tracing::error!("agent cannot read pods: {e}");
                return;
            }
        };
        let mine: Vec<Pod> = pods
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Pod>(v).ok())
            .filter(|p| p.spec.node_name.as_deref() == Some(self.config.node_name.as_str()))
            .collect();
        let wanted: HashMap<String, &Pod> = mine.iter().map(|p| (pod_key(p), p)).collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(k, s)| wanted.get(*k).is_none_or(|p| p.metadata.uid.as_deref() != Some(s.uid())))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            tracing::info!(pod = %key, "stopping sandbox");
            self.registry.remove(&key);
            self.running.remove(&key);
        }
        for pod in &mine {
            let key = pod_key(pod);
            let attempts = match self.running.get(&key) {
                None => Some(0),
                Some(sandbox) => sandbox.due_retry(),
            };
            if let Some(attempts) = attempts {
                let sandbox = self.start(pod, attempts).await;
                self.running.insert(key.clone(), sandbox);
            }
            if let Some(sandbox) = self.running.get(&key) {
                let status = status::of(sandbox, &self.config.node_name);
                if pod.status.as_ref() != Some(&status) {
                    self.report(pod, status).await;
                }
            }
        }
    }

    pub(crate) async fn write(&self, command: Command) -> Result<serde_json::Value, String> {
        write(&self.cluster, command).await
    }

    /// Stops every sandbox of this node: it has not recorded a heartbeat for `FENCE_AFTER`,
    /// so the cluster may be replacing its pods elsewhere.
    fn fence(&mut self, silent: Duration) {
        tracing::warn!(
            "no heartbeat recorded for {}s: stopping this node's {} pod(s) until the cluster is reachable again",
            silent.as_secs(),
            self.running.len()
        );
        for key in self.running.keys() {
            self.registry.remove(key);
        }
        self.running.clear();
        self.fenced = true;
    }

    async fn report(&self, pod: &Pod, status: PodStatus) {
        let key = ObjectKey::new("Pod", pod.metadata.namespace.as_deref(), &pod.metadata.name);
        let status = serde_json::to_value(&status).unwrap_or_default();
        if let Err(e) = self.write(Command::UpdateStatus { key, status, precondition: None }).await {
            tracing::debug!(pod = %pod.metadata.name, "status not reported yet: {e}");
        }
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(wasmkube_api::DEFAULT_NAMESPACE),
        p.metadata.name
    )
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// With milliseconds, so two heartbeats in one second still differ.
fn now_precise() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
