//! The proxy's copy of the Services and Pods, kept current from the store's change stream
//! (Kubernetes' informer pattern). A change costs parsing one object and rebuilding the
//! entries of the services it can move, not the whole table.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize as _;

use wasmkube_api::{Node, Pod, Service, labels_match};
use wasmkube_runtime::SandboxRegistry;
use wasmkube_store::{EventType, ObjectStore, StoreError, StoreEvent};

use crate::table::Locality;
use crate::{EndpointTable, ServiceEntry, ServiceName};

/// What a change can move.
#[derive(Debug, PartialEq, Eq)]
pub enum Affected {
    /// The entries of these services.
    Services(Vec<ServiceName>),
    /// Any entry (a node's proxy address changed).
    All,
}

#[derive(Default)]
pub struct RouteCache {
    /// This node's name: its pods are served in-process, others' through their node's proxy.
    here: String,
    services: BTreeMap<ServiceName, Service>,
    /// Keyed by namespace then name, so one namespace's pods are a range.
    pods: BTreeMap<ServiceName, Pod>,
    /// Each Ready node's proxy URL, from its Node object.
    proxies: HashMap<String, String>,
}

impl RouteCache {
    pub fn new(here: &str) -> Self {
        RouteCache { here: here.to_string(), ..RouteCache::default() }
    }

    /// Reads every Service, Pod and Node.
    pub fn load(here: &str, store: &ObjectStore) -> Result<Self, StoreError> {
        let mut cache = RouteCache::new(here);
        for object in store.list("Service", None)?.0 {
            cache.put_service(&object);
        }
        for object in store.list("Pod", None)?.0 {
            cache.put_pod(&object);
        }
        for object in store.list("Node", None)?.0 {
            cache.put_node(&object);
        }
        Ok(cache)
    }

    /// Applies one change; returns what it can move (nothing for other kinds, or for a node
    /// heartbeat). A `Restored` store cannot be followed incrementally: the caller loads again.
    pub fn apply(&mut self, event: &StoreEvent) -> Affected {
        let name = ServiceName { namespace: event.key.namespace.clone(), name: event.key.name.clone() };
        let deleted = event.type_ == EventType::Deleted;
        match event.key.kind.as_str() {
            "Service" => {
                self.services.remove(&name);
                if !deleted {
                    self.put_service(&event.object);
                }
                Affected::Services(vec![name])
            }
            "Node" => {
                let before = self.proxies.remove(&event.key.name);
                if !deleted {
                    self.put_node(&event.object);
                }
                if self.proxies.get(&event.key.name) == before.as_ref() {
                    Affected::Services(Vec::new())
                } else {
                    Affected::All
                }
            }
            "Pod" => {
                // The services that selected the pod before the change, and those after.
                let mut affected = Vec::new();
                if let Some(old) = self.pods.remove(&name) {
                    affected.extend(self.selecting(&old));
                }
                if !deleted && let Some(new) = self.put_pod(&event.object) {
                    affected.extend(self.selecting(&self.pods[&new]));
                }
                affected.sort();
                affected.dedup();
                Affected::Services(affected)
            }
            _ => Affected::Services(Vec::new()),
        }
    }

    /// The entry of service `name` as things stand, or `None` when there is no such Service.
    pub fn entry(&self, name: &ServiceName, sandboxes: &SandboxRegistry) -> Option<ServiceEntry> {
        let service = self.services.get(name)?;
        Some(ServiceEntry::build(service, self.pods_in(&name.namespace), &self.locality(sandboxes)))
    }

    /// The whole table.
    pub fn table(&self, sandboxes: &SandboxRegistry) -> EndpointTable {
        let at = self.locality(sandboxes);
        let mut table = EndpointTable::default();
        for (name, service) in &self.services {
            table.set(name.clone(), Some(ServiceEntry::build(service, self.pods_in(&name.namespace), &at)));
        }
        table
    }

    fn locality<'a>(&'a self, sandboxes: &'a SandboxRegistry) -> Locality<'a> {
        Locality { here: &self.here, sandboxes, proxies: &self.proxies }
    }

    fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        let start = ServiceName { namespace: namespace.to_string(), name: String::new() };
        self.pods.range(start..).take_while(move |(k, _)| k.namespace == namespace).map(|(_, p)| p)
    }

    /// The services of the pod's namespace whose selector matches its labels.
    fn selecting<'a>(&'a self, pod: &'a Pod) -> impl Iterator<Item = ServiceName> + 'a {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let start = ServiceName { namespace: namespace.to_string(), name: String::new() };
        self.services
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .filter(|(_, s)| labels_match(&s.spec.selector, &pod.metadata.labels))
            .map(|(k, _)| k.clone())
    }

    // Objects were validated on admission; one that does not parse is skipped.
    fn put_service(&mut self, object: &serde_json::Value) {
        if let Ok(s) = Service::deserialize(object) {
            let name = ServiceName {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone(),
            };
            self.services.insert(name, s);
        }
    }

    /// Records the proxy of a Ready node; a node that is not Ready (silent) serves nothing.
    fn put_node(&mut self, object: &serde_json::Value) {
        if let Ok(node) = Node::deserialize(object)
            && node.is_ready()
            && let Some(url) = node.address("Proxy")
        {
            self.proxies.insert(node.metadata.name.clone(), url.to_string());
        }
    }

    fn put_pod(&mut self, object: &serde_json::Value) -> Option<ServiceName> {
        let p = Pod::deserialize(object).ok()?;
        let name = ServiceName {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone(),
        };
        self.pods.insert(name.clone(), p);
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmkube_store::ObjectKey;

    fn event(type_: EventType, object: serde_json::Value) -> StoreEvent {
        let key = ObjectKey::of(&object).expect("key");
        StoreEvent { revision: 1, type_, key, object }
    }

    fn service(ns: &str, name: &str, app: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns}, "spec": {"selector": {"app": app}}})
    }

    fn pod(ns: &str, name: &str, app: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
               "spec": {"containers": [{"name": "main", "image": "sha256:00"}]}})
    }

    fn names(a: Affected) -> Vec<String> {
        match a {
            Affected::Services(v) => v.into_iter().map(|n| format!("{}/{}", n.namespace, n.name)).collect(),
            Affected::All => vec!["*".into()],
        }
    }

    #[test]
    fn a_change_moves_only_the_services_it_concerns() {
        let mut cache = RouteCache::default();
        assert_eq!(names(cache.apply(&event(EventType::Added, service("a", "web", "web")))), ["a/web"]);
        assert_eq!(names(cache.apply(&event(EventType::Added, service("a", "api", "api")))), ["a/api"]);
        assert_eq!(names(cache.apply(&event(EventType::Added, service("b", "web", "web")))), ["b/web"]);

        // A pod moves the services of its namespace that select it, and no others.
        assert_eq!(names(cache.apply(&event(EventType::Added, pod("a", "p1", "web")))), ["a/web"]);
        // Relabelled: the service that selected it and the one that now does.
        assert_eq!(
            names(cache.apply(&event(EventType::Modified, pod("a", "p1", "api")))),
            ["a/api", "a/web"]
        );
        assert_eq!(names(cache.apply(&event(EventType::Deleted, pod("a", "p1", "api")))), ["a/api"]);
        assert!(names(cache.apply(&event(EventType::Added, pod("c", "p2", "web")))).is_empty());

        // A node's proxy address can move any entry; its heartbeats move none.
        let node = |beat: &str, ready: &str| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
                   "status": {"addresses": [{"type": "Proxy", "address": "http://127.0.0.1:8081"}],
                              "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}})
        };
        assert_eq!(cache.apply(&event(EventType::Added, node("1", "True"))), Affected::All);
        assert!(names(cache.apply(&event(EventType::Modified, node("2", "True")))).is_empty());
        // A node gone silent takes its pods out of every entry.
        assert_eq!(cache.apply(&event(EventType::Modified, node("2", "Unknown"))), Affected::All);
        let event_object = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "a"},
                                  "involvedObject": {"kind": "Pod", "name": "p1"}, "reason": "R"});
        assert!(names(cache.apply(&event(EventType::Added, event_object))).is_empty());

        // A deleted service leaves the cache, so the caller removes its entry.
        let local = SandboxRegistry::default();
        assert!(cache.entry(&ServiceName { namespace: "b".into(), name: "web".into() }, &local).is_some());
        cache.apply(&event(EventType::Deleted, service("b", "web", "web")));
        assert!(cache.entry(&ServiceName { namespace: "b".into(), name: "web".into() }, &local).is_none());
        assert_eq!(cache.table(&local).len(), 2);
    }
}
