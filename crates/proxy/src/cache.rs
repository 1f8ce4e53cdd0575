//! The proxy's copy of the Services and Pods, kept current from the store's change stream
//! (Kubernetes' informer pattern), so a change costs parsing one object, not the whole store.

use std::collections::BTreeMap;

use wasmkube_api::{Pod, Service};
use wasmkube_runtime::SandboxRegistry;
use wasmkube_store::{EventType, ObjectKey, ObjectStore, StoreError, StoreEvent};

use crate::EndpointTable;

#[derive(Default)]
pub struct RouteCache {
    services: BTreeMap<ObjectKey, Service>,
    pods: BTreeMap<ObjectKey, Pod>,
}

impl RouteCache {
    /// Reads every Service and Pod.
    pub fn load(store: &ObjectStore) -> Result<Self, StoreError> {
        let mut cache = RouteCache::default();
        for (kind, items) in
            [("Service", store.list("Service", None)?.0), ("Pod", store.list("Pod", None)?.0)]
        {
            for object in items {
                if let Some(key) = ObjectKey::of(&object) {
                    cache.put(kind, key, object);
                }
            }
        }
        Ok(cache)
    }

    /// Applies one change; returns whether it can move an endpoint. A `Restored` store cannot
    /// be followed incrementally: the caller loads again.
    pub fn apply(&mut self, event: &StoreEvent) -> bool {
        let kind = event.key.kind.as_str();
        if !matches!(kind, "Service" | "Pod") {
            return false;
        }
        if event.type_ == EventType::Deleted {
            self.services.remove(&event.key);
            self.pods.remove(&event.key);
        } else {
            self.put(kind, event.key.clone(), event.object.clone());
        }
        true
    }

    fn put(&mut self, kind: &str, key: ObjectKey, object: serde_json::Value) {
        // Objects were validated on admission; one that does not parse is skipped.
        match kind {
            "Service" => {
                if let Ok(s) = serde_json::from_value(object) {
                    self.services.insert(key, s);
                }
            }
            _ => {
                if let Ok(p) = serde_json::from_value(object) {
                    self.pods.insert(key, p);
                }
            }
        }
    }

    pub fn table(&self, local: &SandboxRegistry) -> EndpointTable {
        let pods: Vec<&Pod> = self.pods.values().collect();
        EndpointTable::build(self.services.values(), &pods, local)
    }
}
