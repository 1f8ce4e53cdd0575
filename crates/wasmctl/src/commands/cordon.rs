//! `wasmctl cordon|uncordon|drain NODE`, as in kubectl: a cordoned node takes no new pods; a
//! drained one is cordoned and its pods are deleted, so their Deployments replace them on
//! other nodes.

use anyhow::Context;
use clap::Args;
use wasmkube_api::{Node, Pod, Resource};
use wasmkube_client::Client;

#[derive(Args)]
pub struct NodeName {
    /// The node.
    name: String,
}

/// Sets `spec.unschedulable` on node `name`, retrying when a heartbeat lands in between (the
/// write carries the resourceVersion it read).
async fn set_unschedulable(client: &Client, name: &str, unschedulable: bool) -> anyhow::Result<()> {
    for _ in 0..10 {
        let mut node: Node = client.get(None, name).await.with_context(|| format!("node {name}"))?;
        if node.spec.unschedulable == unschedulable {
            return Ok(());
        }
        node.spec.unschedulable = unschedulable;
        match client.update(&node).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("node {name} kept changing; try again")
}

impl NodeName {
    pub async fn cordon(self, client: &Client) -> anyhow::Result<()> {
        set_unschedulable(client, &self.name, true).await?;
        crate::out!("node/{} cordoned", self.name);
        Ok(())
    }

    pub async fn uncordon(self, client: &Client) -> anyhow::Result<()> {
        set_unschedulable(client, &self.name, false).await?;
        crate::out!("node/{} uncordoned", self.name);
        Ok(())
    }

    pub async fn drain(self, client: &Client) -> anyhow::Result<()> {
        set_unschedulable(client, &self.name, true).await?;
        crate::out!("node/{} cordoned", self.name);
        let pods: Vec<Pod> = client.list(None).await?;
        for pod in pods.iter().filter(|p| p.spec.node_name.as_deref() == Some(self.name.as_str())) {
            let namespace = pod.metadata.namespace.as_deref();
            match client.delete(Pod::KIND, namespace, &pod.metadata.name).await {
                Ok(()) => crate::out!("pod/{} evicted", pod.metadata.name),
                // Gone already (its Deployment scaled it away meanwhile).
                Err(e) if e.code() == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        crate::out!("node/{} drained", self.name);
        Ok(())
    }
}
