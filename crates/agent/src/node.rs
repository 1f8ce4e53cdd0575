//! Registering this node and keeping its heartbeat.

use wasmkube_api::{Condition, Node, NodeAddress, NodeStatus, ObjectMeta};
use wasmkube_store::{Command, ObjectKey};

use crate::{Agent, now, now_precise};

impl Agent {
    /// Creates the Node object, or refreshes its status (addresses, capacity, Ready heartbeat).
    /// Returns whether the write was committed.
    pub(crate) async fn heartbeat(&mut self) -> bool {
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
        match self.write(command).await {
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
