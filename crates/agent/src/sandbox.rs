//! Starting a pod's sandbox from its spec.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmkube_api::{ModuleWorld, ObjectReference, Pod};
use wasmkube_apiserver::Write;
use wasmkube_runtime::{CliPod, HttpPod, LocalPod, LogBuffer, PreparedModule, SandboxSpec};

use crate::{Agent, now, pod_key};

/// A pod as this node runs it.
pub(crate) enum Sandbox {
    Http {
        uid: String,
        pod: Arc<HttpPod>,
        started: String,
        /// Its probes, when it has any (dropped with the sandbox, which stops them).
        prober: Option<crate::probe::Prober>,
        /// Instances restarted for failing their liveness probe, and how the last one ended.
        restarts: u32,
        /// Restarts in the current crash streak, which sets the back-off; a streak ends when
        /// an instance has run for the node's back-off reset (Kubernetes: 10 min).
        streak: u32,
        /// When the current instance started.
        up_since: Instant,
        last_state: Option<Box<wasmkube_api::Terminated>>,
        /// Traps already reported in an event, and when the last such event was.
        traps_reported: u64,
        trap_event_at: Option<Instant>,
        /// It is crashing (its requests kept trapping, or it failed its liveness probe
        /// again): out of rotation (CrashLoopBackOff) until then, when a fresh instance
        /// takes over; how it ended becomes its last state.
        crashed: Option<Box<(Instant, wasmkube_api::Terminated)>>,
    },
    Cli {
        uid: String,
        pod: CliPod,
        started: String,
    },
    /// Waiting for its module to be copied here and compiled, which runs in the background
    /// (a slow pull never holds up the agent); started when the module is ready.
    Preparing {
        uid: String,
        digest: String,
        attempts: u32,
    },
    /// Refused by the node's admission (no room left here): failed for good, and replaced
    /// by its Deployment, as the kubelet's `OutOfmemory` and `OutOfpods`.
    Rejected {
        uid: String,
        reason: String,
        message: String,
    },
    /// Could not be started; the reason is reported and the start is retried at `retry_at`
    /// (back-off doubling from 1 s to 60 s, as Kubernetes does for image pulls).
    Failed {
        uid: String,
        reason: String,
        message: String,
        retry_at: Instant,
        attempts: u32,
    },
}

impl Sandbox {
    /// Failed starts so far, when this sandbox is due for another try (or at once, `now`).
    pub(crate) fn due_retry(&self, now: bool) -> Option<u32> {
        match self {
            Sandbox::Failed { retry_at, attempts, .. } if now || Instant::now() >= *retry_at => {
                Some(*attempts)
            }
            Sandbox::Preparing { attempts, .. } if now => Some(*attempts),
            _ => None,
        }
    }

    /// Whether its status can change without any write to its pod: a cli pod's process runs,
    /// exits and restarts; a failed start is retried. An http pod is Running until stopped.
    pub(crate) fn moves_on_its_own(&self) -> bool {
        !matches!(self, Sandbox::Http { .. })
    }

    pub(crate) fn uid(&self) -> &str {
        match self {
            Sandbox::Http { uid, .. }
            | Sandbox::Cli { uid, .. }
            | Sandbox::Failed { uid, .. }
            | Sandbox::Rejected { uid, .. }
            | Sandbox::Preparing { uid, .. } => uid,
        }
    }
}

/// A failed start, retried with back-off doubling from 1 s to 60 s (as Kubernetes retries
/// image pulls).
pub(crate) fn failed(uid: String, reason: String, message: String, attempts: u32) -> Sandbox {
    let backoff = Duration::from_secs(1 << attempts.min(6)).min(Duration::from_secs(60));
    Sandbox::Failed { uid, reason, message, retry_at: Instant::now() + backoff, attempts: attempts + 1 }
}

/// Module `digest`, compiled and pre-instantiated: fetched from a member first when it was
/// uploaded through another node.
async fn prepare_module(
    puller: &crate::BlobPuller,
    runtime: &Arc<wasmkube_runtime::Runtime>,
    digest: &str,
) -> Result<Arc<PreparedModule>, (String, String)> {
    puller.ensure(digest).await.map_err(|e| ("ModuleNotFound".to_string(), e))?;
    let bytes = match puller.blobs().get(digest) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return Err(("ModuleNotFound".into(), format!("module sha256:{digest} is not on this node")));
        }
        Err(e) => return Err(("ModuleUnreadable".into(), e.to_string())),
    };
    runtime
        .prepare_off_thread(digest.to_string(), bytes)
        .await
        .map_err(|e| ("InvalidModule".into(), e.to_string()))
}

impl Agent {
    /// Starts `pod`'s sandbox; `attempts` counts earlier failed starts (for back-off). Returns
    /// it with the event to record about it (when the event budget allows one).
    pub(crate) fn start(&mut self, pod: &Pod, attempts: u32) -> (Sandbox, Option<Write>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = pod_key(pod);
        let digest =
            pod.spec.containers.first().and_then(|c| c.module_digest()).unwrap_or_default().to_string();
        let admitted = self.admission.admit(&key, pod);
        let sandbox = match (admitted, self.runtime.prepared(&digest)) {
            (Err(refused), _) => Sandbox::Rejected {
                uid: uid.clone(),
                reason: refused.reason.into(),
                message: refused.message,
            },
            (Ok(()), Some(module)) => self
                .launch(pod, &module)
                .unwrap_or_else(|(reason, message)| failed(uid.clone(), reason, message, attempts)),
            (Ok(()), None) => {
                self.begin_prepare(&digest);
                Sandbox::Preparing { uid: uid.clone(), digest, attempts }
            }
        };
        let logs = match &sandbox {
            Sandbox::Http { pod, .. } => pod.logs().clone(),
            Sandbox::Cli { pod, .. } => pod.logs().clone(),
            Sandbox::Failed { .. } | Sandbox::Rejected { .. } | Sandbox::Preparing { .. } => {
                LogBuffer::new(0)
            }
        };
        let (http, meter) = match &sandbox {
            Sandbox::Http { pod, .. } => (Some(pod.clone()), None),
            Sandbox::Cli { pod, .. } => (None, Some(pod.meter().clone())),
            _ => (None, None),
        };
        let container = pod.spec.containers.first().map(|c| c.name.clone()).unwrap_or_default();
        let owner = pod.owner_uid().map(str::to_string);
        self.registry.insert(key.clone(), LocalPod { uid, http, meter, logs, container, owner });
        let (type_, reason, message) = match &sandbox {
            Sandbox::Failed { reason, message, .. } | Sandbox::Rejected { reason, message, .. } => {
                ("Warning", reason.clone(), message.clone())
            }
            Sandbox::Preparing { digest, .. } => {
                ("Normal", "Pulling".to_string(), format!("Preparing module sha256:{digest}"))
            }
            Sandbox::Cli { .. } if has_probes(pod) => (
                "Warning",
                "Started".to_string(),
                format!(
                    "Started sandbox on node {}; its probes are not run: a cli component answers no HTTP",
                    self.config.node_name
                ),
            ),
            _ => (
                "Normal",
                "Started".to_string(),
                format!("Started sandbox on node {}", self.config.node_name),
            ),
        };
        tracing::debug!(pod = %key, %reason, "{message}");
        let event = if self.event_budget.take() { self.event(pod, type_, &reason, message) } else { None };
        (sandbox, event)
    }

    fn launch(&self, pod: &Pod, module: &PreparedModule) -> Result<Sandbox, (String, String)> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = self.sandbox_spec(pod);
        let logs = LogBuffer::new(self.runtime.config().log_capacity);
        let started = now();
        let result = match module.world {
            ModuleWorld::Http => HttpPod::new(self.runtime.clone(), module, spec, logs).map(|p| {
                let pod_arc = Arc::new(p);
                let container = pod.spec.containers.first().cloned().unwrap_or_default();
                let prober =
                    crate::probe::start(pod_key(pod), pod_arc.clone(), &container, self.probe_tx.clone());
                Sandbox::Http {
                    uid: uid.clone(),
                    pod: pod_arc,
                    started,
                    prober,
                    restarts: 0,
                    streak: 0,
                    up_since: Instant::now(),
                    last_state: None,
                    traps_reported: 0,
                    trap_event_at: None,
                    crashed: None,
                }
            }),
            ModuleWorld::Cli => {
                let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
                CliPod::start(self.runtime.clone(), module, spec, logs, policy).map(|p| Sandbox::Cli {
                    uid: uid.clone(),
                    pod: p,
                    started,
                })
            }
        };
        result.map_err(|e| ("InvalidModule".to_string(), e.to_string()))
    }

    /// Copies (when it is not here) and compiles module `digest` in the background, once at
    /// a time per module; the outcome arrives on the agent's `prepared` channel.
    fn begin_prepare(&mut self, digest: &str) {
        if !self.preparing.insert(digest.to_string()) {
            return;
        }
        let (puller, runtime, done) = (self.puller.clone(), self.runtime.clone(), self.prepared_tx.clone());
        let digest = digest.to_string();
        tokio::spawn(async move {
            let outcome = prepare_module(&puller, &runtime, &digest).await.map(drop);
            let _ = done.send((digest, outcome));
        });
    }

    fn sandbox_spec(&self, pod: &Pod) -> SandboxSpec {
        let container = pod.spec.containers.first().cloned().unwrap_or_default();
        let limits = self.runtime.config();
        let memory_limit =
            container.memory_limit().unwrap_or(limits.default_memory_limit).min(limits.max_memory);
        let mut env: Vec<(String, String)> =
            container.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        env.push(("WASMKUBE_POD_NAME".into(), pod.metadata.name.clone()));
        env.push(("WASMKUBE_POD_NAMESPACE".into(), pod.metadata.namespace.clone().unwrap_or_default()));
        env.push(("WASMKUBE_NODE_NAME".into(), self.config.node_name.clone()));
        let mut args = vec![container.name.clone()];
        args.extend(container.args.iter().cloned());
        SandboxSpec {
            pod: pod_key(pod),
            args,
            env,
            memory_limit,
            cpu_limit_millis: container.cpu_limit_millis(),
            request_timeout: pod.spec.timeout_seconds.map(|s| std::time::Duration::from_secs(u64::from(s))),
        }
    }

    pub(crate) fn event(&mut self, pod: &Pod, type_: &str, reason: &str, message: String) -> Option<Write> {
        let involved = ObjectReference {
            kind: "Pod".into(),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        };
        let source = format!("wasmlet/{}", self.config.node_name);
        let uid = uuid::Builder::from_random_bytes(rand::Rng::random(&mut self.rng)).into_uuid().to_string();
        let event = wasmkube_api::Event::about(involved, type_, reason, message, &source, &now(), uid);
        Write::record_event(&event).inspect_err(|e| tracing::warn!("event not recorded: {e}")).ok()
    }
}

/// Whether `pod`'s container asks for any probe.
fn has_probes(pod: &Pod) -> bool {
    pod.spec.containers.first().is_some_and(|c| {
        c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
    })
}
