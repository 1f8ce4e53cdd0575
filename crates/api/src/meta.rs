//! Object metadata shared by every kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// A metadata block with just a name and namespace.
    pub fn named(namespace: Option<&str>, name: &str) -> Self {
        ObjectMeta { name: name.to_string(), namespace: namespace.map(str::to_string), ..Default::default() }
    }

    /// The resourceVersion as a number, if set and numeric.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref().and_then(|rv| rv.parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

/// A reference to another object, as Events carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// True when every `selector` label is present in `labels` with the same value.
/// An empty selector matches nothing, as for Services in Kubernetes.
pub fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown", as in Kubernetes.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// When its reason or message last changed (Deployments' conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

impl Condition {
    pub fn new(type_: &str, is_true: bool) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if is_true { "True" } else { "False" }.to_string(),
            reason: None,
            message: None,
            last_transition_time: None,
            last_update_time: None,
            last_heartbeat_time: None,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// True when `conditions` holds a condition of `type_` whose status is "True".
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.is_true())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// `PodList`, `DeploymentList`, …: what a collection GET returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<T> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    pub items: Vec<T>,
}

/// One line of a `?watch=true` stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchEvent<T> {
    /// ADDED, MODIFIED, DELETED or ERROR.
    #[serde(rename = "type")]
    pub type_: String,
    pub object: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_matches_subset_and_empty_matches_nothing() {
        let labels: BTreeMap<_, _> = [("app".to_string(), "a".to_string()), ("x".into(), "y".into())].into();
        let sel: BTreeMap<_, _> = [("app".to_string(), "a".to_string())].into();
        assert!(labels_match(&sel, &labels));
        let other: BTreeMap<_, _> = [("app".to_string(), "b".to_string())].into();
        assert!(!labels_match(&other, &labels));
        assert!(!labels_match(&BTreeMap::new(), &labels));
    }

    #[test]
    fn unknown_metadata_field_is_rejected() {
        let err = serde_json::from_str::<ObjectMeta>(r#"{"name":"a","finalizers":[]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `finalizers`"), "{err}");
    }
}
