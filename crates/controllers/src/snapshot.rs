//! A consistent-enough view of the objects the controllers decide over.

use serde::de::DeserializeOwned;
use wasmkube_api::{Deployment, Node, Pod, Resource};
use wasmkube_store::{ObjectStore, StoreError};

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub deployments: Vec<Deployment>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
}

impl Snapshot {
    pub fn read(store: &ObjectStore) -> Result<Self, StoreError> {
        Ok(Snapshot { deployments: typed(store)?, pods: typed(store)?, nodes: typed(store)? })
    }
}

fn typed<T: Resource + DeserializeOwned>(store: &ObjectStore) -> Result<Vec<T>, StoreError> {
    let (items, _) = store.list(T::KIND.kind, None)?;
    Ok(items
        .into_iter()
        .filter_map(|v| match serde_json::from_value(v) {
            Ok(t) => Some(t),
            Err(e) => {
                // Admission validated it; an unreadable object means a newer writer. Skip it
                // rather than stop reconciling everything else.
                tracing::warn!("skipping unreadable {}: {e}", T::KIND.kind);
                None
            }
        })
        .collect())
}
