//! Registering this node and keeping its heartbeat, on a task of its own: nothing the agent
//! does for pods (a slow module pull, a big compile, thousands of starts) can hold it back and
//! get a healthy node declared NotReady.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use tokio::sync::watch;
use wasmkube_api::{Condition, Node, NodeAddress, NodeStatus, ObjectMeta, ValidationError};
use wasmkube_apiserver::{Objects, Write, WriteError};
use wasmkube_store::ObjectKey;

use crate::{AgentConfig, HEARTBEAT_RETRY, now, now_precise};

pub(crate) struct Heartbeat {
    pub(crate) config: AgentConfig,
    pub(crate) objects: Objects,
    /// When a heartbeat was last recorded: the agent fences itself when it grows old.
    pub(crate) recorded: watch::Sender<Instant>,
}

impl Heartbeat {
    /// Records a heartbeat every period (sooner again after one that was not recorded, so a
    /// node still catching up shows up Ready without waiting a whole period) until
    /// `shutdown` resolves.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let recorded = self.beat().await;
            if recorded {
                self.recorded.send_replace(Instant::now());
            }
            let wait = if recorded { self.config.heartbeat } else { HEARTBEAT_RETRY };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Creates the Node object, or refreshes its status (addresses, capacity, Ready heartbeat).
    /// Returns whether the write was committed.
    async fn beat(&self) -> bool {
        let name = self.config.node_name.clone();
        let mut ready = Condition::new("Ready", true);
        ready.reason = Some("WasmletReady".into());
        ready.last_heartbeat_time = Some(now_precise());
        let memory = allocatable_memory(&self.config);
        let status = NodeStatus {
            capacity: [
                ("pods".to_string(), self.config.max_pods.to_string()),
                ("memory".to_string(), memory_total()),
                ("cpu".to_string(), cores()),
            ]
            .into(),
            allocatable: [
                ("pods".to_string(), self.config.max_pods.to_string()),
                ("memory".to_string(), memory),
                ("cpu".to_string(), cores()),
            ]
            .into(),
            conditions: vec![ready],
            addresses: vec![
                NodeAddress { type_: "API".into(), address: self.config.api_url.clone() },
                NodeAddress { type_: "Proxy".into(), address: self.config.proxy_url.clone() },
            ],
        };
        let key = ObjectKey::new("Node", None, &name);
        let labels = self.labels();
        let write = match self.objects.store().get(&key) {
            Ok(Some(current)) => match relabelled(current, &labels) {
                // The node restarted with other --label flags: its labels first, then beats.
                Some(update) => update,
                None => Ok(Write::update_status::<Node, _>(None, &name, &status, None)),
            },
            _ => {
                let node = Node {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    metadata: ObjectMeta {
                        uid: Some(format!("node-{name}")),
                        creation_timestamp: Some(now()),
                        labels,
                        ..ObjectMeta::named(None, &name)
                    },
                    spec: Default::default(),
                    status: Some(status),
                };
                Write::create(&node)
            }
        };
        let write = match write {
            Ok(write) => write,
            Err(e) => {
                tracing::error!("this node's own object is refused: {e}");
                return false;
            }
        };
        match crate::write(&self.objects, write).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("heartbeat not recorded yet: {e}");
                false
            }
        }
    }
}

impl Heartbeat {
    /// The labels this node carries: its `--label` flags and, as in Kubernetes, its name
    /// under `kubernetes.io/hostname`.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.config.labels.clone();
        labels.insert(HOSTNAME_LABEL.into(), self.config.node_name.clone());
        labels
    }
}

/// The standard label naming a node (a topology key for spreading across nodes).
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// An update of the stored Node's labels to `labels`, when they differ (with the stored
/// resourceVersion as precondition, so a cordon that lands in between is not undone).
fn relabelled(
    current: serde_json::Value,
    labels: &BTreeMap<String, String>,
) -> Option<Result<Write, WriteError>> {
    let mut node: Node = match serde_json::from_value(current) {
        Ok(node) => node,
        Err(e) => {
            return Some(Err(WriteError::Invalid {
                kind: "Node",
                error: ValidationError::new("body", e.to_string()),
            }));
        }
    };
    if node.metadata.labels == *labels {
        return None;
    }
    node.metadata.labels = labels.clone();
    Some(Write::update(&node))
}

/// Memory pods may request on this node, as a quantity: `--memory`, or the machine's total.
pub(crate) fn allocatable_memory(config: &AgentConfig) -> String {
    match config.memory {
        Some(bytes) => format!("{}Ki", bytes >> 10),
        None => memory_total(),
    }
}

/// The machine's cores as a CPU quantity (`2`): what pods' CPU requests may add up to.
fn cores() -> String {
    std::thread::available_parallelism().map_or(1, |n| n.get()).to_string()
}

/// Total memory of the machine as a quantity, from /proc/meminfo (Linux); "0" when unknown.
fn memory_total() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    format!("{}Ki", kib.unwrap_or(0))
}
