//! Wiring: open storage, start Raft, the controllers, the agent, the proxy and the API, and
//! stop them all together.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmkube_agent::{Agent, AgentConfig, BlobPuller};
use wasmkube_proxy::ProxyState;
use wasmkube_raft::{DriverConfig, PeerTransport};
use wasmkube_runtime::{Runtime, RuntimeConfig, SandboxRegistry};
use wasmkube_store::{BlobStore, ObjectStore, RaftLog};

use crate::bootstrap::{DataDir, host_name, write_client_config};
use crate::supervise::Supervisor;
use crate::{Flags, cluster};
use wasmkube_apiserver::Objects;
use wasmkube_apiserver::http::{self as api, ApiParts, ApiState};
use wasmkube_cache::SharedCache;

/// Time given to in-flight requests after a stop signal.
const GRACE: Duration = Duration::from_secs(5);

pub async fn run(flags: Flags) -> anyhow::Result<()> {
    let data = DataDir::open(flags.data_dir.clone())?;
    let node_name = flags.name.clone().unwrap_or_else(host_name);
    let db = wasmkube_store::open_db(&data.db())
        .context("opening the node database (is another wasmlet using this --data-dir?)")?;
    let log = RaftLog::open(db.clone())?;
    let store = Arc::new(ObjectStore::open(db)?);
    let blobs = Arc::new(BlobStore::open(&data.modules())?);
    let api_listener = TcpListener::bind(&flags.listen)
        .await
        .with_context(|| format!("binding the API to {}", flags.listen))?;
    let proxy_listener = TcpListener::bind(&flags.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy to {}", flags.proxy_listen))?;
    let advertise = flags.advertise.as_deref();
    let api_url = advertised_url(advertise, api_listener.local_addr()?)?;
    let proxy_addr = proxy_listener.local_addr()?;
    let proxy_url = advertised_url(advertise, proxy_addr)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(data.compile_cache()),
        request_timeout: flags.request_timeout,
        // Pods reach Services through this node's proxy (a wildcard listen is reached on
        // loopback).
        service_proxy: Some(reachable(proxy_addr)),
        crash_backoff: flags.crash_backoff,
        crash_backoff_max: flags.crash_backoff_max,
        crash_backoff_reset: flags.crash_backoff_reset,
        default_cpu_limit_millis: flags
            .default_cpu_limit
            .unwrap_or_else(wasmkube_runtime::default_cpu_share_millis),
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("starting the wasm runtime: {e:#}"))?;
    // Small request/response exchanges (raft messages, API calls): no Nagle delays.
    let api_listener = api_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let proxy_listener = proxy_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });

    let join = flags.join.as_deref().zip(flags.join_token.as_deref());
    let identity = cluster::establish(&data, &node_name, &api_url, join).await?;
    // One pooled client for all peer traffic: raft messages, snapshots, module copies.
    let peer_http = wasmkube_raft::peer_client().map_err(anyhow::Error::msg)?;
    let transport = PeerTransport::new(identity.node_id, identity.peer_token.clone(), peer_http.clone())
        .map_err(anyhow::Error::msg)?;
    let config = DriverConfig {
        node_id: identity.node_id,
        initial_voters: identity.initial_voters.clone(),
        compact_after: flags.snapshot_count,
        // A tail for followers that lag a little, so they need no snapshot.
        compact_keep: (flags.snapshot_count / 10).min(1_000),
        ..DriverConfig::default()
    };
    let (cluster, mut raft_done) =
        wasmkube_raft::start(config, log, store.clone(), Box::new(transport.clone()))?;
    cluster::remember(&data, &identity)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // After establishing the identity: a joining node takes the cluster's admin token.
    let token = data.admin_token()?;
    let registry = SandboxRegistry::default();
    let agent_config = AgentConfig {
        node_name: node_name.clone(),
        api_url: api_url.clone(),
        proxy_url: proxy_url.clone(),
        max_pods: flags.max_pods,
        memory: flags.memory,
        labels: flags.labels.iter().cloned().collect(),
        heartbeat: wasmkube_api::lifecycle::HEARTBEAT,
        node_grace: flags.node_grace,
    };
    let puller = Arc::new(BlobPuller::new(
        blobs.clone(),
        cluster.clone(),
        identity.peer_token.clone(),
        flags.max_module_mib << 20,
        peer_http.clone(),
    ));
    // Every write on this node goes through here (validated and admitted).
    let objects = Objects::new(cluster.clone()).with_quota(flags.quota_bytes);
    // And the agent, the controllers and the proxy read one shared cache of the replica.
    let cache = SharedCache::new(store.clone())?;
    let (fatal_tx, mut fatal) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = Supervisor {
        objects: objects.clone(),
        node_name: node_name.clone(),
        fatal: fatal_tx,
        stopping: stop_tx.subscribe(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Set on SIGTERM: the agent hands this node's pods to the others (see `leave`).
    let (leaving_tx, leaving_rx) = watch::channel(false);
    {
        let (objects, cache, runtime, puller, registry) =
            (objects.clone(), cache.clone(), runtime.clone(), puller.clone(), registry.clone());
        let stopped = stopped.clone();
        tasks.spawn(supervisor.clone().run("agent", move || {
            let agent = Agent::new(
                agent_config.clone(),
                objects.clone(),
                runtime.clone(),
                puller.clone(),
                registry.clone(),
            )
            .with_leaving(leaving_rx.clone());
            agent.run(cache.clone(), stopped())
        }));
    }
    {
        let (puller, stopped) = (puller.clone(), stopped.clone());
        tasks.spawn(
            supervisor
                .clone()
                .run("module-copies", move || wasmkube_agent::replicate(puller.clone(), stopped())),
        );
    }
    {
        let (objects, cache, stopped) = (objects.clone(), cache.clone(), stopped.clone());
        let config = wasmkube_controllers::ControllerConfig {
            node_grace: flags.node_grace,
            auto_rollback: !flags.no_auto_rollback,
        };
        tasks.spawn(supervisor.clone().run("controllers", move || {
            wasmkube_controllers::run(objects.clone(), cache.clone(), config, stopped())
        }));
    }
    if identity.restarted {
        tasks.spawn(cluster::follow_address(
            cluster.clone(),
            node_name.clone(),
            api_url.clone(),
            token.clone(),
            flags.join.iter().cloned().chain(identity.seed_members.iter().map(|m| m.url.clone())).collect(),
            stopped(),
        ));
    }
    {
        let (transport, cluster, seeds, stopped) =
            (transport.clone(), cluster.clone(), identity.seed_members.clone(), stopped.clone());
        tasks.spawn(supervisor.clone().run("peer-sync", move || {
            cluster::sync_peers(transport.clone(), cluster.clone(), seeds.clone(), stopped())
        }));
    }
    let proxy = ProxyState::new(&node_name).map_err(anyhow::Error::msg)?.with_activator(std::sync::Arc::new(
        crate::activate::ScaleFromZero::new(objects.clone(), &node_name),
    ));
    {
        let (proxy, cache, registry, stopped) =
            (proxy.clone(), cache.clone(), registry.clone(), stopped.clone());
        tasks.spawn(supervisor.clone().run("proxy-table", move || {
            proxy.clone().keep_table_fresh(cache.clone(), registry.clone(), stopped())
        }));
    }

    {
        let (proxy, cache, stopped) = (proxy.clone(), cache.clone(), stopped.clone());
        let address = flags.node_port_address.unwrap_or(proxy_addr.ip());
        tasks.spawn(supervisor.clone().run("node-ports", move || {
            wasmkube_proxy::serve_node_ports(proxy.clone(), cache.clone(), address, stopped())
        }));
    }

    // Every pod's usage, sampled for the metrics API and the autoscaler.
    let sampler = wasmkube_runtime::metrics::Sampler::new(registry.clone());
    {
        let (sampler, stopped) = (sampler.clone(), stopped.clone());
        tasks.spawn(supervisor.clone().run("metrics", move || {
            let (sampler, stopped) = (sampler.clone(), stopped());
            async move {
                tokio::select! {
                    () = sampler.run() => {}
                    () = stopped => {}
                }
            }
        }));
    }
    let metrics = wasmkube_apiserver::metrics::MetricsSource::new(
        cluster.clone(),
        store.clone(),
        sampler,
        peer_http.clone(),
        identity.peer_token.clone(),
    );
    {
        let (objects, cache, metrics, stopped) =
            (objects.clone(), cache.clone(), metrics.clone(), stopped.clone());
        tasks.spawn(supervisor.clone().run("autoscaler", move || {
            wasmkube_controllers::autoscaler::run(objects.clone(), cache.clone(), metrics.clone(), stopped())
        }));
    }

    let faults = transport.faults();
    let peers = wasmkube_raft::peer_router(cluster.clone(), identity.peer_token.clone(), faults.clone());
    let api_state = ApiState::new(ApiParts {
        cluster: cluster.clone(),
        objects,
        store,
        blobs,
        runtime,
        sandboxes: registry,
        admin_token: token.clone(),
        peer_token: identity.peer_token.clone(),
        voters: flags.voters,
        faults,
        max_module_bytes: flags.max_module_mib << 20,
        peer_http,
        metrics,
        panic_switches: panic_switches(),
    });
    let api_server =
        axum::serve(api_listener, api::router(api_state).merge(peers)).with_graceful_shutdown(stopped());
    let proxy_server =
        axum::serve(proxy_listener, wasmkube_proxy::router(proxy)).with_graceful_shutdown(stopped());
    tasks.spawn(supervisor.clone().essential("the API server", api_server.into_future()));
    tasks.spawn(supervisor.essential("the proxy server", proxy_server.into_future()));

    let config_path = write_client_config(flags.client_config.clone(), &api_url, &token)?;
    tracing::info!(node = %node_name, data = %data.root.display(), config = %config_path.display(), "started");
    // A machine-readable line for scripts and tests: where this node listens.
    println!("wasmlet ready node={node_name} api={api_url} proxy={proxy_url}");

    let failure = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("leaving the cluster (a second signal stops at once)");
            tokio::select! {
                _ = crate::leave::leave(&cluster, cluster.store(), &node_name, &leaving_tx) => {}
                _ = shutdown_signal() => tracing::warn!("second signal: stopping without waiting"),
            }
            None
        }
        Some(why) = fatal.recv() => Some(anyhow::anyhow!("{why}")),
        r = &mut raft_done => Some(match r {
            Ok(Err(e)) => anyhow::anyhow!("control plane stopped: {e}"),
            _ => anyhow::anyhow!("control plane stopped unexpectedly"),
        }),
    };
    tracing::info!("stopping");
    let stopping = std::time::Instant::now();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("some tasks did not stop within {GRACE:?}");
    }
    tracing::info!(took = ?stopping.elapsed(), "every part stopped");
    // Whatever handles remain, the driver stops now and closes the database.
    cluster.stop();
    drop(cluster);
    match failure {
        Some(e) => Err(e),
        None => {
            // The driver closes the database once the last handle is gone; wait for it, so the
            // process never exits with RocksDB half shut down.
            let _ = tokio::time::timeout(GRACE, raft_done).await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `addr` as a local client can connect to it: a wildcard address becomes loopback.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, addr.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, addr.port()).into()
        }
        _ => addr,
    }
}

/// The URL others reach a listener at: the `--advertise` host with the listener's port, or
/// the listener's own address. A wildcard address (0.0.0.0, ::) is not reachable from
/// elsewhere, so it needs `--advertise`.
fn advertised_url(advertise: Option<&str>, addr: std::net::SocketAddr) -> anyhow::Result<String> {
    match advertise {
        Some(host) => {
            let is_v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
            if host.is_empty() || host.contains('/') || (host.contains(':') && !is_v6) {
                anyhow::bail!(
                    "--advertise takes a bare host name or IP (no scheme, port or path), not {host:?}"
                );
            }
            let host = if is_v6 { format!("[{host}]") } else { host.to_string() };
            Ok(format!("http://{host}:{}", addr.port()))
        }
        None if addr.ip().is_unspecified() => anyhow::bail!(
            "{addr} is a wildcard address that other nodes cannot reach: add --advertise <this node's host name or IP>"
        ),
        None => Ok(format!("http://{addr}")),
    }
}

/// The tasks a debug build can be asked to panic, to show supervision at work.
fn panic_switches() -> Vec<(&'static str, fn())> {
    #[cfg(debug_assertions)]
    {
        vec![("controllers", wasmkube_controllers::inject_panic as fn())]
    }
    #[cfg(not(debug_assertions))]
    {
        Vec::new()
    }
}
