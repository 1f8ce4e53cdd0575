//! The proxy's index of the Services and Pods, kept current from the node's shared cache
//! (Kubernetes' informer pattern: the objects are the cache's, shared, never parsed here). A
//! change costs rebuilding the entries of the services it can move, not the whole table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use wasmkube_api::{Node, Pod, Service, labels_match};
use wasmkube_cache::{Kind, Object, Subscription};
use wasmkube_runtime::SandboxRegistry;

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
    services: BTreeMap<ServiceName, Arc<Service>>,
    /// Keyed by namespace then name, so one namespace's pods are a range.
    pods: BTreeMap<ServiceName, Arc<Pod>>,
    /// Each Ready node's proxy URL, from its Node object.
    proxies: HashMap<String, String>,
}

impl RouteCache {
    pub fn new(here: &str) -> Self {
        RouteCache { here: here.to_string(), ..RouteCache::default() }
    }

    /// The kinds the proxy follows.
    pub const KINDS: [Kind; 3] = [Kind::Service, Kind::Pod, Kind::Node];

    /// Reads every Service, Pod and Node from the cache.
    pub fn load(here: &str, source: &Subscription) -> Self {
        let mut cache = RouteCache::new(here);
        for kind in Self::KINDS {
            for (key, object) in source.list(kind) {
                cache.apply(kind, &key, Some(&object));
            }
        }
        cache
    }

    /// Applies one change (`object` is `None` when the object was deleted); returns what it
    /// can move (nothing for a node heartbeat).
    pub fn apply(&mut self, kind: Kind, key: &str, object: Option<&Object>) -> Affected {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let name = ServiceName { namespace: namespace.to_string(), name: name.to_string() };
        match (kind, object) {
            (Kind::Service, object) => {
                self.services.remove(&name);
                if let Some(Object::Service(s)) = object {
                    self.services.insert(name.clone(), s.clone());
                }
                Affected::Services(vec![name])
            }
            (Kind::Node, object) => {
                let before = self.proxies.remove(&name.name);
                if let Some(Object::Node(node)) = object {
                    self.put_node(node);
                }
                if self.proxies.get(&name.name) == before.as_ref() {
                    Affected::Services(Vec::new())
                } else {
                    Affected::All
                }
            }
            (Kind::Pod, object) => {
                // The services that selected the pod before the change, and those after.
                let mut affected = Vec::new();
                if let Some(old) = self.pods.remove(&name) {
                    affected.extend(self.selecting(&old));
                }
                if let Some(Object::Pod(new)) = object {
                    affected.extend(self.selecting(new));
                    self.pods.insert(name, new.clone());
                }
                affected.sort();
                affected.dedup();
                Affected::Services(affected)
            }
            (Kind::Deployment, _) => Affected::Services(Vec::new()),
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
        self.pods.range(start..).take_while(move |(k, _)| k.namespace == namespace).map(|(_, p)| &**p)
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

    /// Records the proxy of a Ready node; a node that is not Ready (silent) serves nothing.
    fn put_node(&mut self, node: &Node) {
        if node.is_ready()
            && let Some(url) = node.address("Proxy")
        {
            self.proxies.insert(node.metadata.name.clone(), url.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the shared cache would hand the proxy for `object` (`deleted`: its removal).
    fn change(cache: &mut RouteCache, deleted: bool, object: serde_json::Value) -> Affected {
        let meta = &object["metadata"];
        let key =
            format!("{}/{}", meta["namespace"].as_str().unwrap_or(""), meta["name"].as_str().expect("name"));
        let (kind, parsed) = match object["kind"].as_str() {
            Some("Pod") => (Kind::Pod, Object::Pod(Arc::new(serde_json::from_value(object).expect("pod")))),
            Some("Node") => {
                (Kind::Node, Object::Node(Arc::new(serde_json::from_value(object).expect("node"))))
            }
            _ => (Kind::Service, Object::Service(Arc::new(serde_json::from_value(object).expect("service")))),
        };
        cache.apply(kind, &key, (!deleted).then_some(&parsed))
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
        assert_eq!(names(change(&mut cache, false, service("a", "web", "web"))), ["a/web"]);
        assert_eq!(names(change(&mut cache, false, service("a", "api", "api"))), ["a/api"]);
        assert_eq!(names(change(&mut cache, false, service("b", "web", "web"))), ["b/web"]);

        // A pod moves the services of its namespace that select it, and no others.
        assert_eq!(names(change(&mut cache, false, pod("a", "p1", "web"))), ["a/web"]);
        // Relabelled: the service that selected it and the one that now does.
        assert_eq!(names(change(&mut cache, false, pod("a", "p1", "api"))), ["a/api", "a/web"]);
        assert_eq!(names(change(&mut cache, true, pod("a", "p1", "api"))), ["a/api"]);
        assert!(names(change(&mut cache, false, pod("c", "p2", "web"))).is_empty());

        // A node's proxy address can move any entry; its heartbeats move none.
        let node = |beat: &str, ready: &str| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
                   "status": {"addresses": [{"type": "Proxy", "address": "http://127.0.0.1:8081"}],
                              "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}})
        };
        assert_eq!(change(&mut cache, false, node("1", "True")), Affected::All);
        assert!(names(change(&mut cache, false, node("2", "True"))).is_empty());
        // A node gone silent takes its pods out of every entry.
        assert_eq!(change(&mut cache, false, node("2", "Unknown")), Affected::All);

        // A deleted service leaves the cache, so the caller removes its entry.
        let local = SandboxRegistry::default();
        assert!(cache.entry(&ServiceName { namespace: "b".into(), name: "web".into() }, &local).is_some());
        change(&mut cache, true, service("b", "web", "web"));
        assert!(cache.entry(&ServiceName { namespace: "b".into(), name: "web".into() }, &local).is_none());
        assert_eq!(cache.table(&local).len(), 2);
    }
}
