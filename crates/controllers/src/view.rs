//! What the controllers decide over: Deployments, Pods and Nodes as this node's replica holds
//! them, kept current by reflectors (`wasmkube_cache`), with the indexes a pass needs — pods
//! by owning Deployment, pods by node, unbound pods — so the work of a pass follows what
//! changed (a work queue of keys), never the size of the cluster.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use wasmkube_api::{Deployment, Node, Pod};
use wasmkube_cache::{Changes, Reflector, SharedCache};
use wasmkube_scheduler::{Spread, Usage};

/// The keys a pass must look at: the work queue, deduplicated.
#[derive(Debug, Default)]
pub struct Dirty {
    /// Deployments whose spec or pods changed.
    pub deployments: BTreeSet<String>,
    /// Pods that changed (for orphans and placement).
    pub pods: BTreeSet<String>,
    /// A node changed (lifecycle runs on a timer anyway).
    pub nodes: bool,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.deployments.is_empty() && self.pods.is_empty() && !self.nodes
    }

    pub fn merge(&mut self, other: Dirty) {
        self.deployments.extend(other.deployments);
        self.pods.extend(other.pods);
        self.nodes |= other.nodes;
    }
}

pub struct ClusterView {
    deployments: Reflector<Deployment>,
    pods: Reflector<Pod>,
    nodes: Reflector<Node>,
    /// Deployment uid → key, and key → uid (to find a deleted Deployment's pods).
    deployment_keys: HashMap<String, String>,
    deployment_uids: HashMap<String, String>,
    /// Pod keys by owning Deployment uid, and by node; the owner and node each pod was
    /// indexed under (to unindex it when it changes).
    by_owner: HashMap<String, BTreeSet<String>>,
    by_node: HashMap<String, BTreeSet<String>>,
    unbound: BTreeSet<String>,
    indexed: HashMap<String, Indexed>,
    /// Memory requested by the pods bound to each node.
    requested_by_node: HashMap<String, wasmkube_scheduler::Requests>,
    /// How many of each owner's pods are bound to each node (kept as pods change, so
    /// spreading a Deployment of 10,000 replicas costs O(nodes), not a pass over its pods).
    spread_by_owner: HashMap<String, HashMap<String, usize>>,
    /// Pods this leader has asked to create and not yet seen stored (kube-scheduler's
    /// "assumed" pods), until when to wait for them: indexed with the stored ones, so a pass
    /// planned while earlier creates are still on their way (or whose outcome is unknown)
    /// neither creates them again nor overfills a node.
    assumed: HashMap<String, (Pod, Instant)>,
}

/// What a pod was indexed under.
struct Indexed {
    owner: Option<String>,
    node: Option<String>,
    requested: wasmkube_scheduler::Requests,
}

impl ClusterView {
    /// Reads everything from the node's shared cache; the returned work covers every object.
    pub fn open(cache: &SharedCache) -> (Self, Dirty) {
        let (deployments, d) = Reflector::new(cache, Reflector::all());
        let (pods, p) = Reflector::new(cache, Reflector::all());
        let (nodes, _) = Reflector::new(cache, Reflector::all());
        let mut view = ClusterView {
            deployments,
            pods,
            nodes,
            deployment_keys: HashMap::new(),
            deployment_uids: HashMap::new(),
            by_owner: HashMap::new(),
            by_node: HashMap::new(),
            unbound: BTreeSet::new(),
            indexed: HashMap::new(),
            requested_by_node: HashMap::new(),
            spread_by_owner: HashMap::new(),
            assumed: HashMap::new(),
        };
        let mut dirty = Dirty { nodes: true, ..Dirty::default() };
        view.deployments_changed(d, &mut dirty);
        view.pods_changed(p, &mut dirty);
        (view, dirty)
    }

    /// Waits for changes to any of the three kinds, applies them, and returns the work they
    /// make. `None` once the store is gone.
    pub async fn changed(&mut self) -> Option<Dirty> {
        let mut dirty = Dirty::default();
        tokio::select! {
            c = self.deployments.changed() => self.deployments_changed(c?, &mut dirty),
            c = self.pods.changed() => self.pods_changed(c?, &mut dirty),
            c = self.nodes.changed() => { c?; dirty.nodes = true; }
        }
        Some(dirty)
    }

    /// Applies the changes already queued, without waiting (after a read barrier: the
    /// replica has applied everything up to it, and published it).
    pub fn catch_up(&mut self) -> Dirty {
        let mut dirty = Dirty::default();
        let d = self.deployments.drain();
        self.deployments_changed(d, &mut dirty);
        let p = self.pods.drain();
        self.pods_changed(p, &mut dirty);
        dirty.nodes = !self.nodes.drain().is_empty();
        dirty
    }

    /// Every Deployment and Pod, as the safety-net resync sees them.
    pub fn everything(&self) -> Dirty {
        Dirty {
            deployments: self.deployments.iter().map(|(k, _)| k.clone()).collect(),
            pods: self.pods.iter().map(|(k, _)| k.clone()).collect(),
            nodes: true,
        }
    }

    pub fn deployment(&self, key: &str) -> Option<&Deployment> {
        self.deployments.get(key)
    }

    /// The Deployments whose rollout is under way (Progressing, not yet done or failed).
    pub fn rolling(&self) -> Dirty {
        let mut dirty = Dirty::default();
        for (key, d) in self.deployments.iter() {
            let conditions = d.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            if conditions.iter().any(|c| {
                c.type_ == "Progressing"
                    && matches!(c.reason.as_deref(), Some("ReplicaSetUpdated" | "ProgressDeadlineExceeded"))
            }) {
                dirty.deployments.insert(key.clone());
            }
        }
        dirty
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.deployments.iter().map(|(_, d)| d.clone()).collect()
    }

    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key)
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.nodes.iter().map(|(_, n)| n.clone()).collect()
    }

    /// The pods `d` owns (by uid), stored or assumed (an assumed pod has no
    /// resourceVersion yet).
    pub fn owned_pods<'a>(&'a self, d: &Deployment) -> impl Iterator<Item = &'a Pod> {
        let keys = d.metadata.uid.as_ref().and_then(|uid| self.by_owner.get(uid));
        keys.into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k).or_else(|| self.assumed.get(k).map(|(p, _)| p)))
    }

    /// Counts `pod`, about to be created, as if it were stored, until it is (or `until`).
    pub fn assume(&mut self, pod: Pod, until: Instant) {
        let key = format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name);
        if self.indexed.contains_key(&key) {
            return;
        }
        self.index(&key, &pod, &mut Dirty::default());
        self.assumed.insert(key, (pod, until));
    }

    /// Stops counting an assumed pod whose create failed; its owner is queued.
    pub fn forget(&mut self, key: &str) -> Dirty {
        let mut dirty = Dirty::default();
        if self.assumed.remove(key).is_some()
            && let Some(old) = self.indexed.remove(key)
        {
            self.unindex(key, &old, &mut dirty);
        }
        dirty
    }

    /// Forgets the assumed pods not seen stored by now (a create whose outcome was unknown
    /// and that never landed); their owners are queued.
    pub fn expire_assumed(&mut self, now: Instant) -> Dirty {
        let late: Vec<String> =
            self.assumed.iter().filter(|(_, (_, until))| *until <= now).map(|(k, _)| k.clone()).collect();
        let mut dirty = Dirty::default();
        for key in late {
            dirty.merge(self.forget(&key));
        }
        dirty
    }

    pub fn assumed(&self) -> usize {
        self.assumed.len()
    }

    /// Changed pods whose owning Deployment this view does not hold: orphans, unless their
    /// owner is still on its way.
    pub fn without_owner<'a>(&'a self, keys: &'a BTreeSet<String>) -> impl Iterator<Item = &'a Pod> {
        keys.iter()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| p.owner_uid().is_some_and(|uid| !self.deployment_keys.contains_key(uid)))
    }

    /// The pods bound to `node`.
    pub fn pods_on(&self, node: &str) -> Vec<Pod> {
        self.collect(self.by_node.get(node))
    }

    pub fn unbound_pods(&self) -> Vec<Pod> {
        self.collect(Some(&self.unbound))
    }

    /// What the pods bound to each node use.
    pub fn usage(&self) -> Usage {
        self.by_node
            .iter()
            .map(|(node, pods)| {
                let requested = self.requested_by_node.get(node).copied().unwrap_or_default();
                (node.clone(), wasmkube_scheduler::NodeUsage { pods: pods.len(), requested })
            })
            .collect()
    }

    /// Where the replicas of each of `owners` (Deployment uids) are bound, by node.
    pub fn spread<'a>(&self, owners: impl IntoIterator<Item = &'a str>) -> Spread {
        let mut spread = Spread::new();
        for owner in owners {
            if !spread.contains_key(owner) {
                let per_node = self.spread_by_owner.get(owner).cloned().unwrap_or_default();
                spread.insert(owner.to_string(), per_node);
            }
        }
        spread
    }

    fn collect(&self, keys: Option<&BTreeSet<String>>) -> Vec<Pod> {
        keys.map(|keys| keys.iter().filter_map(|k| self.pods.get(k).cloned()).collect()).unwrap_or_default()
    }

    fn deployments_changed(&mut self, changes: Changes, dirty: &mut Dirty) {
        for key in changes {
            let now = self.deployments.get(&key).and_then(|d| d.metadata.uid.clone());
            let before = self.deployment_uids.get(&key).cloned();
            if before != now {
                if let Some(uid) = before {
                    self.deployment_uids.remove(&key);
                    self.deployment_keys.remove(&uid);
                    // Its pods may be orphans now (or owned by its replacement of the same name).
                    dirty.pods.extend(self.by_owner.get(&uid).into_iter().flatten().cloned());
                }
                if let Some(uid) = now {
                    self.deployment_keys.insert(uid.clone(), key.clone());
                    self.deployment_uids.insert(key.clone(), uid);
                }
            }
            dirty.deployments.insert(key);
        }
    }

    fn pods_changed(&mut self, changes: Changes, dirty: &mut Dirty) {
        for key in changes {
            // Seen stored (or gone): no longer assumed; its index entry is checked below.
            self.assumed.remove(&key);
            let pod = self.pods.get(&key);
            // A status report (the common change: every start of 10,000 pods) leaves owner,
            // node and request as they were: the indexes stay, the owner is queued.
            if let (Some(pod), Some(old)) = (pod, self.indexed.get(&key))
                && old.owner.as_deref() == pod.owner_uid()
                && old.node == pod.spec.node_name
                && old.requested == wasmkube_scheduler::Requests::of(pod)
            {
                if let Some(owner) = old.owner.as_deref() {
                    self.mark_owner(owner, dirty);
                }
                dirty.pods.insert(key);
                continue;
            }
            if let Some(old) = self.indexed.remove(&key) {
                self.unindex(&key, &old, dirty);
            }
            if let Some(pod) = self.pods.get_shared(&key).cloned() {
                self.index(&key, &pod, dirty);
            }
            dirty.pods.insert(key);
        }
    }

    /// Indexes `pod` under its owner and node.
    fn index(&mut self, key: &str, pod: &Pod, dirty: &mut Dirty) {
        let key = key.to_string();
        let owner = pod.owner_uid().map(str::to_string);
        let node = pod.spec.node_name.clone();
        let requested = wasmkube_scheduler::Requests::of(pod);
        if let Some(owner) = &owner {
            self.by_owner.entry(owner.clone()).or_default().insert(key.clone());
            self.mark_owner(owner, dirty);
            if let Some(node) = &node {
                *self.spread_by_owner.entry(owner.clone()).or_default().entry(node.clone()).or_default() += 1;
            }
        }
        match &node {
            Some(node) => {
                self.by_node.entry(node.clone()).or_default().insert(key.clone());
                let sum = self.requested_by_node.entry(node.clone()).or_default();
                *sum = sum.plus(requested);
            }
            None => {
                self.unbound.insert(key.clone());
            }
        }
        self.indexed.insert(key, Indexed { owner, node, requested });
    }

    fn unindex(&mut self, key: &str, old: &Indexed, dirty: &mut Dirty) {
        if let Some(owner) = old.owner.as_deref() {
            if let Some(keys) = self.by_owner.get_mut(owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
            self.mark_owner(owner, dirty);
            if let Some(node) = old.node.as_deref()
                && let Some(per_node) = self.spread_by_owner.get_mut(owner)
            {
                if let Some(n) = per_node.get_mut(node) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        per_node.remove(node);
                    }
                }
                if per_node.is_empty() {
                    self.spread_by_owner.remove(owner);
                }
            }
        }
        match old.node.as_deref() {
            Some(node) => {
                if let Some(keys) = self.by_node.get_mut(node) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_node.remove(node);
                    }
                }
                if let Some(sum) = self.requested_by_node.get_mut(node) {
                    *sum = sum.minus(old.requested);
                }
            }
            None => {
                self.unbound.remove(key);
            }
        }
    }

    /// Queues the Deployment of uid `owner_uid` in `dirty` (when this view holds it).
    pub fn owner_dirty(&self, owner_uid: &str, dirty: &mut Dirty) {
        self.mark_owner(owner_uid, dirty);
    }

    fn mark_owner(&self, owner_uid: &str, dirty: &mut Dirty) {
        if let Some(key) = self.deployment_keys.get(owner_uid) {
            dirty.deployments.insert(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::Arc;
    use wasmkube_store::{Command, ObjectKey, ObjectStore};

    struct Store {
        store: Arc<ObjectStore>,
        index: u64,
        _dir: tempfile::TempDir,
    }

    impl Store {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                Arc::new(ObjectStore::open(wasmkube_store::open_db(dir.path()).expect("db")).expect("store"));
            Store { store, index: 0, _dir: dir }
        }

        fn apply(&mut self, command: Command) {
            self.index += 1;
            self.store.apply(self.index, command).expect("io").expect("applied");
        }
    }

    fn deployment(uid: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "namespace": "default", "uid": uid},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                        "template": {"metadata": {"labels": {"app": "d"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    }

    fn pod(name: &str, owner: &str, node: Option<&str>, memory: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "uid": name,
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": owner}]},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                        "resources": {"requests": {"memory": memory, "cpu": "100m"}}}]}})
    }

    /// A node's usage with `pods` of `pod`'s pods on it (100m each) and `memory` bytes.
    fn used(pods: usize, memory: u64) -> wasmkube_scheduler::NodeUsage {
        let requested = wasmkube_scheduler::Requests { memory, cpu: 100 * pods as u64 };
        wasmkube_scheduler::NodeUsage { pods, requested }
    }

    #[tokio::test]
    async fn indexes_follow_binds_and_deletes_and_mark_the_owner() {
        let mut s = Store::new();
        s.apply(Command::Create { object: deployment("d1") });
        s.apply(Command::Create { object: pod("p1", "d1", Some("n1"), "100Mi") });
        s.apply(Command::Create { object: pod("p2", "d1", None, "50Mi") });
        let (mut view, first) = ClusterView::open(&SharedCache::new(s.store.clone()).expect("list"));
        assert_eq!(first.deployments.len(), 1);
        assert_eq!(view.unbound_pods().len(), 1);
        assert_eq!(view.usage()["n1"], used(1, 100 << 20));

        // p2 is bound, p1 deleted: usage moves, and the owner is queued.
        let mut bound = pod("p2", "d1", Some("n2"), "50Mi");
        bound["metadata"]["resourceVersion"] = json!("3");
        s.apply(Command::Update { object: bound, precondition: None });
        s.apply(Command::Delete { key: ObjectKey::new("Pod", Some("default"), "p1"), precondition: None });
        let work = view.catch_up();
        assert!(work.deployments.contains("default/d"), "the owner of changed pods is queued");
        assert!(view.unbound_pods().is_empty());
        let usage = view.usage();
        assert!(!usage.contains_key("n1"), "n1 holds nothing now: {usage:?}");
        assert_eq!(usage["n2"], used(1, 50 << 20));
        let d = view.deployment("default/d").cloned().expect("deployment");
        assert_eq!(view.owned_pods(&d).count(), 1);
        assert_eq!(view.spread(["d1"])["d1"], HashMap::from([("n2".to_string(), 1)]));
    }

    #[tokio::test]
    async fn pods_on_their_way_count_once_until_stored_failed_or_expired() {
        let mut s = Store::new();
        s.apply(Command::Create { object: deployment("d1") });
        let (mut view, _) = ClusterView::open(&SharedCache::new(s.store.clone()).expect("list"));
        let d = view.deployment("default/d").cloned().expect("deployment");
        let typed = |v: Value| -> Pod { serde_json::from_value(v).expect("a pod") };
        let now = Instant::now();
        view.assume(typed(pod("p1", "d1", Some("n1"), "100Mi")), now + std::time::Duration::from_secs(30));
        view.assume(typed(pod("p2", "d1", Some("n1"), "50Mi")), now + std::time::Duration::from_secs(30));
        view.assume(typed(pod("p3", "d1", Some("n2"), "1Mi")), now + std::time::Duration::from_secs(1));
        assert_eq!(view.owned_pods(&d).count(), 3, "assumed pods are counted for their owner");
        assert_eq!(view.usage()["n1"], used(2, 150 << 20));
        assert!(view.pods_on("n1").is_empty(), "but never acted on as stored pods");

        // p1 is stored: counted once, no longer assumed.
        s.apply(Command::Create { object: pod("p1", "d1", Some("n1"), "100Mi") });
        view.catch_up();
        assert_eq!((view.owned_pods(&d).count(), view.assumed()), (3, 2));
        assert_eq!(view.usage()["n1"].pods, 2);
        // p2's create failed; p3's outcome never showed up.
        let work = view.forget("default/p2");
        assert!(work.deployments.contains("default/d"), "the owner is queued to try again");
        let work = view.expire_assumed(now + std::time::Duration::from_secs(2));
        assert!(work.deployments.contains("default/d"));
        assert_eq!((view.owned_pods(&d).count(), view.assumed()), (1, 0));
        assert_eq!(view.usage()["n1"], used(1, 100 << 20));
        assert!(!view.usage().contains_key("n2"));
    }

    #[tokio::test]
    async fn a_deployment_replaced_under_its_name_leaves_its_pods_to_the_orphan_check() {
        let mut s = Store::new();
        s.apply(Command::Create { object: deployment("d1") });
        s.apply(Command::Create { object: pod("p1", "d1", Some("n1"), "1Mi") });
        let (mut view, _) = ClusterView::open(&SharedCache::new(s.store.clone()).expect("list"));
        assert_eq!(view.without_owner(&BTreeSet::from(["default/p1".to_string()])).count(), 0);
        s.apply(Command::Delete {
            key: ObjectKey::new("Deployment", Some("default"), "d"),
            precondition: None,
        });
        s.apply(Command::Create { object: deployment("d2") });
        let work = view.catch_up();
        assert!(work.pods.contains("default/p1"), "the old Deployment's pods are checked");
        assert_eq!(view.without_owner(&work.pods).count(), 1, "p1's owner (d1) is gone");
        // A status write on the new Deployment does not queue every pod again.
        s.apply(Command::UpdateStatus {
            key: ObjectKey::new("Deployment", Some("default"), "d"),
            status: json!({"replicas": 0}),
            precondition: None,
        });
        let work = view.catch_up();
        assert!(work.pods.is_empty() && work.deployments.contains("default/d"));
    }
}
