//! The node's activator (see `wasmkube_proxy::Activator`): a request for a Service with no
//! ready pod wakes the Deployments that serve it if an autoscaler with `minReplicas: 0`
//! scaled them to zero, by setting them to one replica (and naming this node, where their first pod then goes when it fits); the proxy holds the request until
//! that pod is ready. Scaled to zero by hand (no such autoscaler), a Service answers 503 as
//! before.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wasmkube_api::{Deployment, HorizontalPodAutoscaler, Service, ServiceName, WOKEN_ON, labels_match};
use wasmkube_apiserver::{Objects, Write};
use wasmkube_store::ObjectKey;

/// A Deployment woken this recently is not written again (a burst of first requests makes
/// one write, not a hundred; held requests ask again every second, so a wake that lost a
/// race is made again).
const WOKEN_FOR: Duration = Duration::from_millis(900);

pub struct ScaleFromZero {
    objects: Objects,
    /// This node's name, put on the Deployments it wakes (`WOKEN_ON`).
    node: String,
    woken: Mutex<HashMap<String, Instant>>,
}

impl ScaleFromZero {
    pub fn new(objects: Objects, node: &str) -> Self {
        ScaleFromZero { objects, node: node.to_string(), woken: Mutex::new(HashMap::new()) }
    }

    async fn wake(&self, service: &ServiceName) -> bool {
        let store = self.objects.store();
        let ns = service.namespace.as_str();
        let get = |kind: &str, name: &str| store.get(&ObjectKey::new(kind, Some(ns), name)).ok().flatten();
        let Some(svc) = get("Service", &service.name).and_then(|v| serde_json::from_value::<Service>(v).ok())
        else {
            return false;
        };
        let autoscalers: Vec<HorizontalPodAutoscaler> = match store.list("HorizontalPodAutoscaler", Some(ns))
        {
            Ok((items, _)) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
            Err(_) => return false,
        };
        let mut coming = false;
        for hpa in autoscalers.iter().filter(|h| h.spec.min() == 0) {
            let target = &hpa.spec.scale_target_ref.name;
            let Some(deployment) =
                get("Deployment", target).and_then(|v| serde_json::from_value::<Deployment>(v).ok())
            else {
                continue;
            };
            if !labels_match(&svc.spec.selector, &deployment.spec.template.metadata.labels) {
                continue;
            }
            coming = true;
            if deployment.spec.replicas > 0 || !self.first_to_wake(&deployment) {
                continue;
            }
            let mut woken = deployment.clone();
            woken.spec.replicas = 1;
            woken.metadata.annotations.insert(WOKEN_ON.into(), self.node.clone());
            match Write::update(&woken) {
                Ok(write) => match self.objects.write(write).await {
                    Ok(_) => {
                        tracing::info!(deployment = %format!("{ns}/{target}"), "a request while at zero: 1 replica")
                    }
                    // Someone else wrote it first (another node's request): its pod is coming.
                    Err(e) => tracing::debug!("waking {ns}/{target}: {e}"),
                },
                Err(e) => tracing::warn!("waking {ns}/{target}: {e}"),
            }
        }
        coming
    }

    /// Whether this request is the first in `WOKEN_FOR` to wake `deployment`.
    fn first_to_wake(&self, deployment: &Deployment) -> bool {
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let mut woken = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        woken.retain(|_, at| now.saturating_duration_since(*at) < WOKEN_FOR);
        if woken.contains_key(&uid) {
            return false;
        }
        woken.insert(uid, now);
        true
    }
}

impl wasmkube_proxy::Activator for ScaleFromZero {
    fn activate<'a>(&'a self, service: &'a ServiceName) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.wake(service))
    }
}
