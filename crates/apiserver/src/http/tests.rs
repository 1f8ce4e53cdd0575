//! The HTTP API over a real one-voter cluster (RocksDB, Raft, wasmtime) on a loopback port,
//! driven with a real HTTP client.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wasmkube_runtime::{Runtime, RuntimeConfig, SandboxRegistry};
use wasmkube_store::BlobStore;

use super::{ApiParts, ApiState, router};
use crate::Objects;
use crate::testing::OneVoter;

const TOKEN: &str = "test-admin-token";

struct Server {
    url: String,
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
    // Dropped after the server, before its directory.
    _node: OneVoter,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = OneVoter::start(&dir.path().join("db")).await;
        let (cluster, store) = (node.cluster.clone(), node.store.clone());
        let sandboxes = SandboxRegistry::default();
        let metrics = crate::metrics::MetricsSource::new(
            cluster.clone(),
            store.clone(),
            wasmkube_runtime::metrics::Sampler::new(sandboxes.clone()),
            reqwest::Client::new(),
            "peer".into(),
        );
        let state = ApiState::new(ApiParts {
            objects: Objects::new(cluster.clone()),
            cluster,
            store,
            metrics,
            blobs: Arc::new(BlobStore::open(&dir.path().join("modules")).expect("blobs")),
            runtime: Runtime::new(RuntimeConfig::default()).expect("runtime"),
            sandboxes,
            admin_token: TOKEN.into(),
            peer_token: "peer".into(),
            voters: 3,
            faults: Arc::default(),
            max_module_bytes: 1 << 20,
            peer_http: reqwest::Client::new(),
            panic_switches: Vec::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Server { url, http, _server: server, _node: node, _dir: dir }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": format!("sha256:{}", "a".repeat(64))}]}})
}

fn deployment(name: &str, replicas: u64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "app", "image": format!("sha256:{}", "a".repeat(64))}]}}}})
}

#[tokio::test]
async fn create_get_update_delete_with_server_assigned_identity() {
    let s = Server::start().await;
    let mut body = pod("p");
    body["metadata"]["uid"] = json!("client-chosen");
    let (code, created) = s.send(reqwest::Method::POST, PODS, Some(body)).await;
    assert_eq!(code, 201, "{created}");
    assert_ne!(created["metadata"]["uid"], "client-chosen", "the server names the uid");
    assert_eq!(created["metadata"]["namespace"], "default");

    let (code, got) = s.send(reqwest::Method::GET, &format!("{PODS}/p"), None).await;
    assert_eq!((code, &got["metadata"]["uid"]), (200, &created["metadata"]["uid"]));

    let mut stale = got.clone();
    stale["metadata"]["labels"] = json!({"v": "1"});
    let (code, _) = s.send(reqwest::Method::PUT, &format!("{PODS}/p"), Some(stale.clone())).await;
    assert_eq!(code, 200);
    let (code, conflict) = s.send(reqwest::Method::PUT, &format!("{PODS}/p"), Some(stale)).await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")), "{conflict}");

    let (code, _) = s.send(reqwest::Method::DELETE, &format!("{PODS}/p"), None).await;
    assert_eq!(code, 200);
    let (code, missing) = s.send(reqwest::Method::GET, &format!("{PODS}/p"), None).await;
    assert_eq!((code, missing["kind"].as_str()), (404, Some("Status")));
}

#[tokio::test]
async fn bad_requests_get_a_status_and_change_nothing() {
    let s = Server::start().await;
    let mut bad = pod("p");
    bad["metadata"]["labels"] = json!({"bad key": "x"});
    let (code, status) = s.send(reqwest::Method::POST, PODS, Some(bad)).await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{status}");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("metadata.labels")), "{status}");

    let (code, status) =
        s.send(reqwest::Method::POST, DEPLOYMENTS, Some(deployment("d", 1_000_000_000))).await;
    assert_eq!(code, 422, "{status}");

    let mut elsewhere = pod("q");
    elsewhere["metadata"]["namespace"] = json!("other");
    let (code, _) = s.send(reqwest::Method::POST, PODS, Some(elsewhere)).await;
    assert_eq!(code, 400);

    let (code, list) = s.send(reqwest::Method::GET, PODS, None).await;
    assert_eq!((code, list["items"].as_array().map(Vec::len)), (200, Some(0)), "nothing stored");

    let wrong_type = s
        .http
        .post(format!("{}{PODS}", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", "text/yaml")
        .body("kind: Pod")
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong_type.status().as_u16(), 415);

    let no_token = s.http.get(format!("{}{PODS}", s.url)).send().await.expect("answered");
    assert_eq!(no_token.status().as_u16(), 401);
    let health = s.http.get(format!("{}/readyz", s.url)).send().await.expect("answered");
    assert_eq!(health.status().as_u16(), 200, "health needs no token");
}

#[tokio::test]
async fn scale_changes_only_replicas_and_keeps_a_template_change() {
    let s = Server::start().await;
    let (code, _) = s.send(reqwest::Method::POST, DEPLOYMENTS, Some(deployment("d", 2))).await;
    assert_eq!(code, 201);
    let (_, mut current) = s.send(reqwest::Method::GET, &format!("{DEPLOYMENTS}/d"), None).await;
    current["spec"]["template"]["metadata"]["labels"]["tier"] = json!("web");
    let (code, _) = s.send(reqwest::Method::PUT, &format!("{DEPLOYMENTS}/d"), Some(current)).await;
    assert_eq!(code, 200);
    let (code, scale) = s
        .send(reqwest::Method::PUT, &format!("{DEPLOYMENTS}/d/scale"), Some(json!({"spec": {"replicas": 7}})))
        .await;
    assert_eq!((code, &scale["spec"]["replicas"]), (200, &json!(7)), "{scale}");
    let (_, after) = s.send(reqwest::Method::GET, &format!("{DEPLOYMENTS}/d"), None).await;
    assert_eq!(after["spec"]["replicas"], 7);
    assert_eq!(after["spec"]["template"]["metadata"]["labels"]["tier"], "web", "the template change stays");
    let (code, _) = s
        .send(
            reqwest::Method::PUT,
            &format!("{DEPLOYMENTS}/d/scale"),
            Some(json!({"spec": {"replicas": -1}})),
        )
        .await;
    assert_eq!(code, 422);
}

const SERVICES: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, type_: &str, ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"type": type_, "selector": {"app": name}, "ports": ports}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_are_allocated_kept_released_and_never_shared() {
    let server = Server::start().await;
    let node_port = |v: &Value| v["spec"]["ports"][0]["nodePort"].as_i64();
    // Allocated from the range (0 reads as "allocate", as in Kubernetes).
    let (code, web) = server
        .send(
            reqwest::Method::POST,
            SERVICES,
            Some(service("web", "NodePort", json!([{"port": 80, "nodePort": 0}]))),
        )
        .await;
    assert_eq!(code, 201, "{web}");
    let port = node_port(&web).expect("allocated");
    assert!((30000..=32767).contains(&port), "{port}");
    // Re-applied without nodePorts (a manifest), it keeps its port.
    let mut again = service("web", "NodePort", json!([{"port": 80}]));
    again["metadata"]["resourceVersion"] = web["metadata"]["resourceVersion"].clone();
    let (code, kept) = server.send(reqwest::Method::PUT, &format!("{SERVICES}/web"), Some(again)).await;
    assert_eq!((code, node_port(&kept)), (200, Some(port)), "{kept}");
    // Taken by web: refused for another, nothing stored.
    let (code, refused) = server
        .send(
            reqwest::Method::POST,
            SERVICES,
            Some(service("other", "NodePort", json!([{"port": 80, "nodePort": port}]))),
        )
        .await;
    assert_eq!(code, 422, "{refused}");
    assert!(
        refused["message"].as_str().unwrap_or_default().contains("provided port is already allocated"),
        "{refused}"
    );
    assert_eq!(server.send(reqwest::Method::GET, &format!("{SERVICES}/other"), None).await.0, 404);
    // Malformed ports are refused, not a crash.
    for ports in [json!([5]), json!([{"name": "no-port"}]), json!("eighty")] {
        let (code, bad) =
            server.send(reqwest::Method::POST, SERVICES, Some(service("bad", "NodePort", ports))).await;
        assert_eq!(code, 422, "{bad}");
    }
    // A ClusterIP Service with no ports at all is stored as sent.
    let plain = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain"},
                       "spec": {"selector": {"app": "x"}}});
    let (code, stored) = server.send(reqwest::Method::POST, SERVICES, Some(plain)).await;
    assert_eq!((code, stored["spec"].get("ports")), (201, None), "{stored}");
    // Back to ClusterIP, as read (its nodePort still in it): the port is let go, and free.
    let mut cluster_ip = kept.clone();
    cluster_ip["spec"]["type"] = json!("ClusterIP");
    let (code, released) =
        server.send(reqwest::Method::PUT, &format!("{SERVICES}/web"), Some(cluster_ip)).await;
    assert_eq!((code, node_port(&released)), (200, None), "{released}");
    let (code, other) = server
        .send(
            reqwest::Method::POST,
            SERVICES,
            Some(service("other", "NodePort", json!([{"port": 80, "nodePort": port}]))),
        )
        .await;
    assert_eq!((code, node_port(&other)), (201, Some(port)), "{other}");
}
