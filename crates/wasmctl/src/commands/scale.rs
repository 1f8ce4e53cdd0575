//! `wasmctl scale deployment NAME --replicas N`.

use clap::Args;
use wasmkube_client::Client;

use crate::resources;

#[derive(Args)]
#[command(about = "Set the number of replicas of a deployment")]
pub struct Scale {
    /// `deployment` (or `deployment/NAME`).
    resource: String,
    name: Option<String>,
    #[arg(long)]
    replicas: u32,
}

impl Scale {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let (kind, name) = resources::target(&self.resource, self.name.as_deref())?;
        if kind.kind != "Deployment" {
            anyhow::bail!("only deployments can be scaled");
        }
        let name = name.ok_or_else(|| {
            anyhow::anyhow!("scale needs a name: wasmctl scale deployment NAME --replicas N")
        })?;
        client.scale(namespace, &name, self.replicas).await?;
        crate::out!("deployment.apps/{name} scaled to {}", self.replicas);
        Ok(())
    }
}
