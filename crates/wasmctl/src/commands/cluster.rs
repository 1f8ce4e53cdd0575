//! `wasmctl cluster join-token`: a token a new node presents with `wasmlet --join`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use wasmkube_client::Client;

#[derive(Args)]
#[command(about = "Manage the cluster's membership")]
pub struct Cluster {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print a new join token (`wasmlet --join URL --join-token TOKEN`).
    JoinToken {
        /// How long the token stays valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

impl Cluster {
    pub async fn run(self, client: &Client, _namespace: &str) -> anyhow::Result<()> {
        match self.command {
            ClusterCommand::JoinToken { ttl } => {
                let answer = client
                    .post_path("/cluster/v1/join-tokens", &json!({"ttlSeconds": ttl.as_secs()}))
                    .await?;
                let token =
                    answer["token"].as_str().ok_or_else(|| anyhow::anyhow!("the server sent no token"))?;
                crate::out!("{token}");
                eprintln!("valid until {}", answer["expiresAt"].as_str().unwrap_or("?"));
            }
        }
        Ok(())
    }
}
