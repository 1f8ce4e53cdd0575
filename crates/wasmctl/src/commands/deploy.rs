//! `wasmctl deploy app.wasm --replicas 5 [--wait]`: uploads the module, then creates (or
//! updates) a Deployment and, for http components, a Service of the same name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use wasmkube_api::{
    Container, Deployment, DeploymentSpec, EnvVar, LabelSelector, Node, ObjectMeta, PodSpec, PodTemplateSpec,
    ResourceRequirements, Service, ServicePort, ServiceSpec,
};
use wasmkube_client::Client;

#[derive(Args)]
#[command(about = "Deploy a wasm component: module + Deployment (+ Service for http components)")]
pub struct Deploy {
    /// The component file (.wasm).
    file: PathBuf,
    /// Name of the deployment and service (default: the file stem).
    #[arg(long)]
    name: Option<String>,
    /// Replicas (default: 1 for a new Deployment; an existing one keeps its count, as
    /// `kubectl apply` of a manifest without replicas does — an autoscaler's, say).
    #[arg(long)]
    replicas: Option<u32>,
    /// Memory limit per instance (e.g. 64Mi).
    #[arg(long)]
    memory: Option<String>,
    /// Environment variables, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// The Service's type: ClusterIP (reached through a node's proxy by Host) or NodePort
    /// (also on every node at a port of 30000-32767).
    #[arg(long, value_parser = ["ClusterIP", "NodePort"])]
    service_type: Option<String>,
    /// The NodePort Service's port on every node (default: one is allocated).
    #[arg(long, value_parser = clap::value_parser!(i32).range(30000..=32767))]
    node_port: Option<i32>,
    /// Wait until every replica is ready, showing progress.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl Deploy {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let name = self.deployment_name()?;
        if self.node_port.is_some() && self.service_type.as_deref() == Some("ClusterIP") {
            anyhow::bail!("--node-port is for a NodePort Service, not --service-type ClusterIP");
        }
        let bytes = std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))?;
        let size = bytes.len();
        let module = client.upload_module(bytes).await.context("uploading the module")?;
        crate::out!(
            "module/{} uploaded ({} world, {} KiB)",
            &module.metadata.name[..12],
            module.spec.world,
            size.div_ceil(1024)
        );

        // The Service first: one the cluster refuses (a nodePort another Service holds)
        // leaves no Deployment behind.
        if module.spec.world == "http" {
            let wanted = self.service(&name, namespace);
            match client.get::<Service>(Some(namespace), &name).await {
                Ok(existing) => match self.changed_service(existing) {
                    Some(changed) => {
                        let updated = client.update(&changed).await?;
                        crate::out!("service/{name} configured{}", node_port_note(&updated));
                    }
                    None => crate::out!("service/{name} unchanged"),
                },
                Err(e) if e.code() == Some(404) => {
                    let created = client.create(&wanted).await?;
                    crate::out!("service/{name} created{}", node_port_note(&created));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let deployment = self.deployment(&name, namespace, &module.spec.digest)?;
        let started = Instant::now();
        let replicas = match client.get::<Deployment>(Some(namespace), &name).await {
            Ok(mut existing) => {
                existing.spec.replicas = self.replicas.unwrap_or(existing.spec.replicas);
                existing.spec.template = deployment.spec.template;
                client.update(&existing).await?;
                crate::out!("deployment.apps/{name} configured");
                if existing.spec.replicas == 0 {
                    crate::out!(
                        "deployment.apps/{name} is at 0 replicas (scaled to zero): the new template runs from its next pod"
                    );
                }
                existing.spec.replicas
            }
            Err(e) if e.code() == Some(404) => {
                client.create(&deployment).await?;
                crate::out!("deployment.apps/{name} created");
                deployment.spec.replicas
            }
            Err(e) => return Err(e.into()),
        };
        if self.wait {
            wait_ready(client, namespace, &name, self.timeout).await?;
            crate::out!(
                "deployment.apps/{name} ready: {replicas} replicas in {} ms",
                started.elapsed().as_millis()
            );
            if module.spec.world == "http" {
                let proxy = proxy_url(client).await.unwrap_or_else(|| "http://127.0.0.1:8080".into());
                crate::out!("try: curl -H 'Host: {name}' {proxy}/");
            }
        }
        Ok(())
    }

    fn deployment_name(&self) -> anyhow::Result<String> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let stem =
            self.file.file_stem().and_then(|s| s.to_str()).context("the file has no name; pass --name")?;
        Ok(stem.to_ascii_lowercase().replace('_', "-"))
    }

    fn deployment(&self, name: &str, namespace: &str, image: &str) -> anyhow::Result<Deployment> {
        let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
        let env = self
            .env
            .iter()
            .map(|kv| {
                let (k, v) =
                    kv.split_once('=').with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                Ok(EnvVar { name: k.into(), value: v.into() })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let resources = self.memory.as_ref().map(|m| ResourceRequirements {
            limits: [("memory".to_string(), m.clone())].into(),
            requests: BTreeMap::new(),
        });
        Ok(Deployment {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            metadata: ObjectMeta { labels: labels.clone(), ..ObjectMeta::named(Some(namespace), name) },
            spec: DeploymentSpec {
                replicas: self.replicas.unwrap_or(1),
                selector: LabelSelector { match_labels: labels.clone() },
                template: PodTemplateSpec {
                    metadata: ObjectMeta { labels, ..Default::default() },
                    spec: PodSpec {
                        containers: vec![Container {
                            name: name.into(),
                            image: image.into(),
                            env,
                            resources,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                },
                strategy: None,
                revision_history_limit: None,
                progress_deadline_seconds: None,
                paused: false,
            },
            status: None,
        })
    }
}

/// ", reachable at port N of every node" for a NodePort Service.
fn node_port_note(service: &Service) -> String {
    let ports: Vec<String> =
        service.spec.ports.iter().filter_map(|p| p.node_port).map(|p| p.to_string()).collect();
    match ports.as_slice() {
        [] => String::new(),
        ports => format!(" (NodePort {} on every node)", ports.join(",")),
    }
}

impl Deploy {
    fn service_type(&self) -> Option<&str> {
        match (&self.service_type, self.node_port) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(_)) => Some(wasmkube_api::NODE_PORT),
            (None, None) => None,
        }
    }

    fn service(&self, name: &str, namespace: &str) -> Service {
        let node_port = self.service_type() == Some(wasmkube_api::NODE_PORT);
        Service {
            api_version: "v1".into(),
            kind: "Service".into(),
            metadata: ObjectMeta::named(Some(namespace), name),
            spec: ServiceSpec {
                selector: [("app".to_string(), name.to_string())].into(),
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    node_port: self.node_port.filter(|_| node_port),
                    ..Default::default()
                }],
                type_: self.service_type().filter(|_| node_port).map(str::to_string),
            },
        }
    }

    /// `existing` changed to the type (and nodePort) asked for, if it differs.
    fn changed_service(&self, mut existing: Service) -> Option<Service> {
        let wanted = self.service_type()?;
        let is = existing.spec.type_.as_deref().unwrap_or("ClusterIP");
        let same_port =
            self.node_port.is_none() || existing.spec.ports.iter().any(|p| p.node_port == self.node_port);
        if is == wanted && same_port {
            return None;
        }
        let node_port = wanted == wasmkube_api::NODE_PORT;
        existing.spec.type_ = node_port.then(|| wanted.to_string());
        for (i, port) in existing.spec.ports.iter_mut().enumerate() {
            port.node_port = if !node_port {
                None
            } else if i == 0 && self.node_port.is_some() {
                self.node_port
            } else {
                port.node_port
            };
        }
        Some(existing)
    }
}

/// Polls until the deployment's current template has all replicas ready.
async fn wait_ready(client: &Client, namespace: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let d: Deployment = client.get(Some(namespace), name).await?;
        let st = d.status.clone().unwrap_or_default();
        let want = d.spec.replicas;
        let done = st.observed_generation >= d.metadata.generation.unwrap_or(0)
            && st.updated_replicas == want
            && st.ready_replicas == want
            && st.replicas == want;
        let progress =
            format!("{}/{want} ready, {}/{want} up to date", st.ready_replicas, st.updated_replicas);
        if progress != last {
            crate::out!("  {name}: {progress}");
            last = progress;
        }
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "deployment {name} was not ready within {timeout:?} ({last}); see `wasmctl get pods` and `wasmctl get events`"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn proxy_url(client: &Client) -> Option<String> {
    let nodes: Vec<Node> = client.list(None).await.ok()?;
    nodes.iter().find_map(|n| n.address("Proxy").map(str::to_string))
}
