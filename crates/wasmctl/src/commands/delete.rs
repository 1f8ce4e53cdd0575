//! `wasmctl delete TYPE NAME`.

use clap::Args;
use wasmkube_client::Client;

use crate::resources;

#[derive(Args)]
#[command(about = "Delete an object (a deployment's pods go with it)")]
pub struct Delete {
    resource: String,
    name: Option<String>,
}

impl Delete {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let (kind, name) = resources::target(&self.resource, self.name.as_deref())?;
        let name =
            name.ok_or_else(|| anyhow::anyhow!("delete needs a name: wasmctl delete {} NAME", kind.plural))?;
        client.delete(kind, kind.namespaced.then_some(namespace), &name).await?;
        crate::out!("{}/{name} deleted", kind.kind.to_ascii_lowercase());
        Ok(())
    }
}
