//! `ReplicaSet` (`apps/v1`): one revision of a Deployment's pod template. The deployment
//! controller keeps one per template it has run (named `<deployment>-<pod-template-hash>`,
//! owned by the Deployment, `deployment.kubernetes.io/revision` numbering them), with how
//! many of the Deployment's pods run that template, so `rollout history` and `rollout undo`
//! read and restore revisions as kubectl does. They are the controller's: the API refuses
//! writes to them.

use serde::{Deserialize, Serialize};

use crate::kinds::info;
use crate::meta::{LabelSelector, ObjectMeta};
use crate::validation::{ValidationError, check_name};
use crate::{PodTemplateSpec, Resource, TEMPLATE_HASH_LABEL};

/// The revision a ReplicaSet (and its Deployment) is at.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ReplicaSetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaSetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetSpec {
    #[serde(default)]
    pub replicas: u32,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetStatus {
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub available_replicas: u32,
    #[serde(default)]
    pub observed_generation: i64,
}

impl ReplicaSet {
    /// Its revision number (0 when it has none).
    pub fn revision(&self) -> u64 {
        self.metadata.annotations.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()).unwrap_or(0)
    }

    /// Its pod-template-hash.
    pub fn template_hash(&self) -> Option<&str> {
        self.metadata.labels.get(TEMPLATE_HASH_LABEL).map(String::as_str)
    }

    /// Whether it runs `template` (its own copy carries the hash label besides).
    pub fn runs(&self, template: &PodTemplateSpec) -> bool {
        let mut mine = self.spec.template.clone();
        mine.metadata.labels.remove(TEMPLATE_HASH_LABEL);
        &mine == template
    }
}

impl Resource for ReplicaSet {
    const KIND: &'static crate::KindInfo = info::REPLICA_SET;
    crate::resource_meta!();
    fn validate(&self) -> Result<(), ValidationError> {
        check_name("metadata.name", &self.metadata.name)?;
        crate::check_replicas("spec.replicas", self.spec.replicas)
    }
}
