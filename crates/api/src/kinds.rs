//! The registry of kinds the API serves, and how they map to URL paths.

/// Static facts about one kind: its name, group/version and how it is addressed.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub api_version: &'static str,
    /// Lower-case plural used in URL paths (`pods`, `deployments`).
    pub plural: &'static str,
    pub namespaced: bool,
}

impl KindInfo {
    /// The URL prefix of this kind's group/version: `/api/v1` or `/apis/<group>/<version>`.
    pub fn group_prefix(&self) -> String {
        if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        }
    }

    /// Path of the collection, in `namespace` when the kind is namespaced.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}/namespaces/{ns}/{}", self.group_prefix(), self.plural),
            _ => format!("{}/{}", self.group_prefix(), self.plural),
        }
    }

    /// Path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }
}

pub const KINDS: &[KindInfo] = &[
    KindInfo { kind: "Node", api_version: "v1", plural: "nodes", namespaced: false },
    KindInfo { kind: "Pod", api_version: "v1", plural: "pods", namespaced: true },
    KindInfo { kind: "Service", api_version: "v1", plural: "services", namespaced: true },
    KindInfo { kind: "Event", api_version: "v1", plural: "events", namespaced: true },
    KindInfo { kind: "Deployment", api_version: "apps/v1", plural: "deployments", namespaced: true },
    KindInfo { kind: "Module", api_version: "wasmkube.io/v1", plural: "modules", namespaced: false },
    KindInfo {
        kind: "HorizontalPodAutoscaler",
        api_version: "autoscaling/v2",
        plural: "horizontalpodautoscalers",
        namespaced: true,
    },
    KindInfo { kind: "ReplicaSet", api_version: "apps/v1", plural: "replicasets", namespaced: true },
];

/// Looks a kind up by its `Kind` name.
pub fn find_kind(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Looks a kind up by the group/version and plural of a URL (`("apps/v1", "deployments")`).
pub fn find_kind_by_plural(api_version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.api_version == api_version && k.plural == plural)
}

pub(crate) mod info {
    use super::{KINDS, KindInfo};
    pub const NODE: &KindInfo = &KINDS[0];
    pub const POD: &KindInfo = &KINDS[1];
    pub const SERVICE: &KindInfo = &KINDS[2];
    pub const EVENT: &KindInfo = &KINDS[3];
    pub const DEPLOYMENT: &KindInfo = &KINDS[4];
    pub const MODULE: &KindInfo = &KINDS[5];
    pub const HPA: &KindInfo = &KINDS[6];
    pub const REPLICA_SET: &KindInfo = &KINDS[7];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_kubernetes() {
        let deploy = find_kind("Deployment").expect("registered");
        assert_eq!(deploy.collection_path(Some("default")), "/apis/apps/v1/namespaces/default/deployments");
        let node = find_kind_by_plural("v1", "nodes").expect("registered");
        assert_eq!(node.object_path(None, "a"), "/api/v1/nodes/a");
        assert!(find_kind_by_plural("v1", "deployments").is_none());
    }
}
