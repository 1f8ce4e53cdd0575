//! NodePort Services: every node listens at each NodePort Service's `nodePort` and routes
//! what arrives there as its proxy routes a request whose Host names that Service (as
//! kube-proxy opens the port on every node). Listeners follow the Services in the node's
//! shared cache: opened when a port is allocated, closed when it is released.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use wasmkube_cache::{Kind, Object, SharedCache, Update};

use crate::ServiceName;
use crate::server::{ProxyState, route};

/// How often a port that could not be bound (another process holds it) is tried again.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// nodePort → the Service it reaches, as the Services stand.
type PortMap = Arc<RwLock<HashMap<u16, ServiceName>>>;

/// Keeps a listener on `address` for every nodePort of the cluster's Services until
/// `shutdown` resolves; a listener finishes the requests it has in flight when its port is
/// released or the node stops.
pub async fn serve_node_ports(
    proxy: ProxyState,
    shared: SharedCache,
    address: IpAddr,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut changes = shared.subscribe(&[Kind::Service]);
    let routes: PortMap = Arc::default();
    // Each open listener's stop switch (dropped: the listener stops).
    let mut open: BTreeMap<u16, tokio::sync::watch::Sender<bool>> = BTreeMap::new();
    // The NodePort Services, by key: a change to any other Service costs a lookup, not a
    // pass over them all (the control plane writes Services by the thousand).
    let mut node_ports: HashMap<String, (ServiceName, Vec<u16>)> =
        changes.list(Kind::Service).iter().filter_map(|(key, object)| node_port_entry(key, object)).collect();
    loop {
        let wanted: HashMap<u16, ServiceName> = node_ports
            .values()
            .flat_map(|(name, ports)| ports.iter().map(move |port| (*port, name.clone())))
            .collect();
        *routes.write().unwrap_or_else(|p| p.into_inner()) = wanted.clone();
        open.retain(|port, _| wanted.contains_key(port));
        let mut failing = false;
        let new: Vec<u16> = wanted.keys().filter(|p| !open.contains_key(p)).copied().collect();
        for port in &new {
            match std::net::TcpListener::bind(SocketAddr::new(address, *port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(listener) => {
                    tracing::info!(port, service = %wanted[port], "listening on the NodePort");
                    open.insert(*port, listen(listener, proxy.clone(), routes.clone(), *port));
                }
                Err(e) => {
                    tracing::warn!(port, %address, service = %wanted[port], "cannot listen on the NodePort: {e}");
                    failing = true;
                }
            }
        }
        // Until a change moves a nodePort (or a port that could not be bound is due again).
        let mut moved = false;
        while !moved {
            tokio::select! {
                _ = &mut shutdown => return,
                updates = changes.changed() => {
                    let Some(updates) = updates else { return };
                    for update in updates {
                        moved |= note(&mut node_ports, &changes, update);
                    }
                }
                // A port another process held is tried again now and then.
                _ = tokio::time::sleep(REBIND_EVERY), if failing => moved = true,
            }
        }
    }
}

/// Applies one change to the NodePort Services; true if a nodePort moved.
fn note(
    node_ports: &mut HashMap<String, (ServiceName, Vec<u16>)>,
    changes: &wasmkube_cache::Subscription,
    update: Update,
) -> bool {
    match update {
        Update::Reset => {
            *node_ports = changes
                .list(Kind::Service)
                .iter()
                .filter_map(|(key, object)| node_port_entry(key, object))
                .collect();
            true
        }
        Update::Changed { key, object, .. } => {
            let entry = object.as_ref().and_then(|o| node_port_entry(&key, o)).map(|(_, e)| e);
            match entry {
                Some(entry) => node_ports.insert(key, entry.clone()).is_none_or(|before| before != entry),
                None => node_ports.remove(&key).is_some(),
            }
        }
    }
}

/// A NodePort Service's name and nodePorts (`None` for any other).
fn node_port_entry(key: &str, object: &Object) -> Option<(String, (ServiceName, Vec<u16>))> {
    let Object::Service(service) = object else { return None };
    if !service.spec.is_node_port() {
        return None;
    }
    let name = ServiceName {
        namespace: service
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| wasmkube_api::DEFAULT_NAMESPACE.into()),
        name: service.metadata.name.clone(),
    };
    let ports =
        service.spec.ports.iter().filter_map(|p| p.node_port).filter_map(|p| u16::try_from(p).ok()).collect();
    Some((key.to_string(), (name, ports)))
}

/// Serves `listener` (nodePort `port`) until its stop switch is set or dropped.
fn listen(
    listener: tokio::net::TcpListener,
    proxy: ProxyState,
    routes: PortMap,
    port: u16,
) -> tokio::sync::watch::Sender<bool> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let app = Router::new().fallback(node_port).with_state(NodePortState { proxy, routes, port });
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        if let Err(e) = server.await {
            tracing::warn!(port, "the NodePort listener failed: {e}");
        }
    });
    stop
}

#[derive(Clone)]
struct NodePortState {
    proxy: ProxyState,
    routes: PortMap,
    port: u16,
}

async fn node_port(State(at): State<NodePortState>, req: Request) -> Response {
    let service = at.routes.read().unwrap_or_else(|p| p.into_inner()).get(&at.port).cloned();
    match service {
        Some(service) => route(&at.proxy, &service, req).await,
        None => crate::server::error(
            http::StatusCode::NOT_FOUND,
            format!("no Service has nodePort {} any more", at.port),
        ),
    }
}
