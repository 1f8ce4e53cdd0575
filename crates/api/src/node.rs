//! Nodes: the machines running a `wasmlet`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Resource;
use crate::kinds::info;
use crate::meta::{Condition, ObjectMeta, condition_is_true};
use crate::validation::{ValidationError, check_name};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: no new pods are placed here.
    #[serde(default)]
    pub unschedulable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    /// `memory` (the machine's, as a quantity) and `pods` (slots).
    #[serde(default)]
    pub capacity: BTreeMap<String, String>,
    /// What pods may use: `memory` (`wasmlet --memory`, default the machine's) and `pods`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `API` (the node's API/peer URL) and `Proxy` (its service proxy URL).
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

impl Node {
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| condition_is_true(&s.conditions, "Ready"))
    }

    /// Pod slots this node offers (0 when unknown).
    pub fn pod_capacity(&self) -> usize {
        self.allocatable("pods").and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// Memory pods may reserve here, in bytes (0 when unknown).
    pub fn allocatable_memory(&self) -> u64 {
        self.allocatable("memory").and_then(|m| crate::parse_memory(m).ok()).unwrap_or(0)
    }

    /// CPU pods may reserve here, in millicores (0 when unknown).
    pub fn allocatable_cpu_millis(&self) -> u64 {
        self.allocatable("cpu").and_then(|c| crate::parse_cpu(c).ok()).unwrap_or(0)
    }

    /// An allocatable resource, or its capacity when the node reports no allocatable.
    fn allocatable(&self, resource: &str) -> Option<&str> {
        let status = self.status.as_ref()?;
        status.allocatable.get(resource).or_else(|| status.capacity.get(resource)).map(String::as_str)
    }

    pub fn address(&self, type_: &str) -> Option<&str> {
        let status = self.status.as_ref()?;
        status.addresses.iter().find(|a| a.type_ == type_).map(|a| a.address.as_str())
    }
}

impl Resource for Node {
    const KIND: &'static crate::KindInfo = info::NODE;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)
    }
}
