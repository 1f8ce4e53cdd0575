//! `wasmctl node remove NAME`: takes a node out of the cluster.

use clap::{Args, Subcommand};
use wasmkube_client::Client;

#[derive(Args)]
#[command(about = "Manage nodes")]
pub struct Node {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Remove a node from the Raft group (a learner replaces a removed voter).
    Remove { name: String },
}

impl Node {
    pub async fn run(self, client: &Client, _namespace: &str) -> anyhow::Result<()> {
        match self.command {
            NodeCommand::Remove { name } => {
                client.delete_path(&format!("/cluster/v1/members/{name}")).await?;
                crate::out!("node/{name} removed from the cluster");
            }
        }
        Ok(())
    }
}
