//! The pods running on this node, shared by the agent (which fills it), the service proxy
//! (which routes to its http pods) and the API (which serves their logs).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::{HttpPod, LogBuffer};

/// One local sandbox as others see it.
#[derive(Clone)]
pub struct LocalPod {
    pub uid: String,
    /// Present for http-world pods that are serving.
    pub http: Option<Arc<HttpPod>>,
    /// What a cli pod's instance uses (an http pod's is in `http`).
    pub meter: Option<crate::metrics::Meter>,
    pub logs: LogBuffer,
    /// Its container's name (for its metrics).
    pub container: String,
    /// The uid of the Deployment that owns it, if one does (an autoscaler asks for the
    /// metrics of its target's pods only).
    pub owner: Option<String>,
}

#[derive(Clone)]
pub struct SandboxRegistry {
    pods: Arc<RwLock<HashMap<String, LocalPod>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for SandboxRegistry {
    fn default() -> Self {
        SandboxRegistry { pods: Arc::default(), version: Arc::new(watch::channel(0).0) }
    }
}

impl SandboxRegistry {
    /// `key` is `namespace/name`.
    pub fn insert(&self, key: String, pod: LocalPod) {
        self.pods.write().unwrap_or_else(|p| p.into_inner()).insert(key, pod);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn remove(&self, key: &str) {
        self.pods.write().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn get(&self, key: &str) -> Option<LocalPod> {
        self.pods.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Every local pod, by `namespace/name`.
    pub fn list(&self) -> Vec<(String, LocalPod)> {
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        pods.iter().map(|(key, pod)| (key.clone(), pod.clone())).collect()
    }

    /// What `f` makes of each local pod it accepts, read under one lock (no pod is cloned).
    pub fn filter_map<T>(&self, mut f: impl FnMut(&str, &LocalPod) -> Option<T>) -> Vec<T> {
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        pods.iter().filter_map(|(key, pod)| f(key, pod)).collect()
    }

    /// Changes whenever a pod is added or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
