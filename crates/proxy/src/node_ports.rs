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
use wasmkube_cache::{Kind, Object, SharedCache};

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
    loop {
        let wanted = wanted_ports(&changes.list(Kind::Service));
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
        tokio::select! {
            _ = &mut shutdown => return,
            changed = changes.changed() => if changed.is_none() { return },
            // A port another process held is tried again now and then.
            _ = tokio::time::sleep(REBIND_EVERY), if failing => {}
        }
    }
}

/// Every nodePort of `services` (NodePort Services only), with the Service it reaches.
fn wanted_ports(services: &[(String, Object)]) -> HashMap<u16, ServiceName> {
    let mut wanted = HashMap::new();
    for (_, object) in services {
        let Object::Service(service) = object else { continue };
        if !service.spec.is_node_port() {
            continue;
        }
        let name = ServiceName {
            namespace: service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| wasmkube_api::DEFAULT_NAMESPACE.into()),
            name: service.metadata.name.clone(),
        };
        for port in service.spec.ports.iter().filter_map(|p| p.node_port) {
            if let Ok(port) = u16::try_from(port) {
                wanted.insert(port, name.clone());
            }
        }
    }
    wanted
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
