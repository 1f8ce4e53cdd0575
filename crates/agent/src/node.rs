//! Registering this node and keeping its heartbeat, on a task of its own: nothing the agent
//! does for pods (a slow module pull, a big compile, thousands of starts) can hold it back and
//! get a healthy node declared NotReady.

use std::future::Future;
use std::time::Instant;

use tokio::sync::watch;
use wasmkube_api::{Condition, Node, NodeAddress, NodeStatus, ObjectMeta};
use wasmkube_raft::ClusterHandle;
use wasmkube_store::{Command, ObjectKey};

use crate::{AgentConfig, HEARTBEAT_RETRY, now, now_precise, write};

pub(crate) struct Heartbeat {
    pub(crate) config: AgentConfig,
    pub(crate) cluster: ClusterHandle,
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
        let status = NodeStatus {
            capacity: [
                ("pods".to_string(), self.config.max_pods.to_string()),
                ("memory".to_string(), memory_total()),
            ]
            .into(),
            conditions: vec![ready],
            addresses: vec![
                NodeAddress { type_: "API".into(), address: self.config.api_url.clone() },
                NodeAddress { type_: "Proxy".into(), address: self.config.proxy_url.clone() },
            ],
        };
        let key = ObjectKey::new("Node", None, &name);
        let exists = matches!(self.cluster.store().get(&key), Ok(Some(_)));
        let status_json = serde_json::to_value(&status).unwrap_or_default();
        let command = if exists {
            Command::UpdateStatus { key, status: status_json, precondition: None }
        } else {
            let node = Node {
                api_version: "v1".into(),
                kind: "Node".into(),
                metadata: ObjectMeta {
                    uid: Some(format!("node-{name}")),
                    creation_timestamp: Some(now()),
                    ..ObjectMeta::named(None, &name)
                },
                spec: Default::default(),
                status: Some(status),
            };
            Command::Create { object: serde_json::to_value(&node).unwrap_or_default() }
        };
        match write(&self.cluster, command).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("heartbeat not recorded yet: {e}");
                false
            }
        }
    }
}

/// Total memory of the machine as a quantity, from /proc/meminfo (Linux); "0" when unknown.
fn memory_total() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    format!("{}Ki", kib.unwrap_or(0))
}
