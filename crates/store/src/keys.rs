//! How objects are addressed in the store.

use serde::{Deserialize, Serialize};

/// Kind, namespace ("" for cluster-scoped kinds) and name of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            kind: kind.to_string(),
            namespace: namespace.unwrap_or("").to_string(),
            name: name.to_string(),
        }
    }

    /// The key of the object `value` describes, from its `kind` and `metadata`.
    pub fn of(value: &serde_json::Value) -> Option<Self> {
        let kind = value.get("kind")?.as_str()?;
        let meta = value.get("metadata")?;
        let name = meta.get("name")?.as_str()?;
        Some(ObjectKey::new(kind, meta.get("namespace").and_then(|n| n.as_str()), name))
    }

    /// RocksDB key: `kind/namespace/name`. Names never contain '/', so prefixes are exact.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.kind.len() + self.namespace.len() + self.name.len() + 2);
        for (i, part) in [&self.kind, &self.namespace, &self.name].into_iter().enumerate() {
            if i > 0 {
                key.push(b'/');
            }
            key.extend_from_slice(part.as_bytes());
        }
        key
    }

    /// Prefix selecting every object of `kind`, or of `kind` in `namespace`.
    pub(crate) fn prefix(kind: &str, namespace: Option<&str>) -> Vec<u8> {
        match namespace {
            Some(ns) => format!("{kind}/{ns}/").into_bytes(),
            None => format!("{kind}/").into_bytes(),
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
