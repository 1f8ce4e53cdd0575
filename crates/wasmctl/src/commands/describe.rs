//! `wasmctl describe TYPE NAME`: the object and the events about it.

use clap::Args;
use wasmkube_client::Client;

use crate::output::{self, Format};
use crate::resources;

#[derive(Args)]
#[command(about = "Show one object in detail, with its recent events")]
pub struct Describe {
    resource: String,
    name: Option<String>,
}

impl Describe {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let (kind, name) = resources::target(&self.resource, self.name.as_deref())?;
        let name = name
            .ok_or_else(|| anyhow::anyhow!("describe needs a name: wasmctl describe {} NAME", kind.plural))?;
        let ns = kind.namespaced.then_some(namespace);
        let object = client.get_path(&kind.object_path(ns, &name)).await?;
        output::structured(&object, Format::Yaml)?;
        let events = client.get_path(&format!("/api/v1/namespaces/{namespace}/events")).await?;
        let mut rows: Vec<_> = events["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|e| {
                        e["involvedObject"]["kind"] == kind.kind
                            && e["involvedObject"]["name"] == name.as_str()
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| a["lastTimestamp"].as_str().cmp(&b["lastTimestamp"].as_str()));
        crate::out!("\nEvents:");
        if rows.is_empty() {
            crate::out!("  <none>");
        } else {
            let (header, table) = super::get::columns("Event", &rows);
            output::table(&header, &table);
        }
        Ok(())
    }
}
