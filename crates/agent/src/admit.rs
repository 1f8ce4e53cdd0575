//! Admission on the node, as the kubelet's: before a pod bound here starts, the node checks
//! that it fits next to the pods it has already admitted — a free pod slot (`--max-pods`) and
//! room for its memory request within `--memory`. The scheduler's view can be behind the
//! node's (a node restarted with less memory, a binding planned before a change it had not
//! seen); the node is the last word on what it runs. A pod refused here fails (`OutOfpods`,
//! `OutOfmemory`) and its Deployment replaces it.

use std::collections::HashMap;

use wasmkube_api::Pod;

/// Why a pod was refused, worded as the kubelet words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

/// The pods admitted on this node and the memory they requested.
#[derive(Debug)]
pub(crate) struct Admission {
    max_pods: usize,
    /// Memory pods may request here, in bytes (0 when unknown: then only pods that request
    /// none fit, as the scheduler decides).
    memory: u64,
    admitted: HashMap<String, u64>,
    used: u64,
}

impl Admission {
    pub fn new(max_pods: usize, memory: u64) -> Self {
        Admission { max_pods, memory, admitted: HashMap::new(), used: 0 }
    }

    /// Admits `pod` under `key` if it fits next to the pods admitted so far.
    pub fn admit(&mut self, key: &str, pod: &Pod) -> Result<(), Rejection> {
        if self.admitted.contains_key(key) {
            return Ok(());
        }
        if self.admitted.len() >= self.max_pods {
            return Err(Rejection {
                reason: "OutOfpods",
                message: format!(
                    "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
                    self.admitted.len(),
                    self.max_pods
                ),
            });
        }
        let request = pod.memory_request();
        if request > 0 && self.used.saturating_add(request) > self.memory {
            return Err(Rejection {
                reason: "OutOfmemory",
                message: format!(
                    "Pod was rejected: Node didn't have enough resource: memory, requested: {request}, used: {}, capacity: {}",
                    self.used, self.memory
                ),
            });
        }
        self.used = self.used.saturating_add(request);
        self.admitted.insert(key.to_string(), request);
        Ok(())
    }

    /// The pod of `key` stopped here: its slot and memory are free again.
    pub fn release(&mut self, key: &str) {
        if let Some(request) = self.admitted.remove(key) {
            self.used = self.used.saturating_sub(request);
        }
    }

    pub fn clear(&mut self) {
        self.admitted.clear();
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(memory: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "sha256:00",
                                     "resources": {"requests": {"memory": memory}}}]}
        }))
        .expect("a valid pod")
    }

    #[test]
    fn pods_are_admitted_while_they_fit_and_a_stopped_one_frees_its_room() {
        let mut node = Admission::new(3, 256 << 20);
        assert_eq!(node.admit("a", &pod("100Mi")), Ok(()));
        assert_eq!(node.admit("b", &pod("100Mi")), Ok(()));
        // Admitting an admitted pod again changes nothing.
        assert_eq!(node.admit("b", &pod("100Mi")), Ok(()));
        let refused = node.admit("c", &pod("100Mi")).expect_err("no room for a third 100Mi");
        assert_eq!(refused.reason, "OutOfmemory");
        assert!(refused.message.contains("requested: 104857600, used: 209715200, capacity: 268435456"));
        node.release("a");
        assert_eq!(node.admit("c", &pod("100Mi")), Ok(()));
        // Slots run out before memory does for pods that request little.
        assert_eq!(node.admit("d", &pod("1Mi")), Ok(()));
        let refused = node.admit("e", &pod("1Mi")).expect_err("three pods at most");
        assert_eq!(refused.reason, "OutOfpods");
        node.clear();
        assert_eq!(node.admit("e", &pod("200Mi")), Ok(()));
    }
}
