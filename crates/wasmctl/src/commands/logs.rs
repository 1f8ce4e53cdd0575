//! `wasmctl logs POD`: the pod's captured stdout and stderr.

use clap::Args;
use wasmkube_client::Client;

#[derive(Args)]
#[command(about = "Print a pod's stdout and stderr")]
pub struct Logs {
    pod: String,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
}

impl Logs {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        crate::output::emit(format_args!(
            "{}",
            client.logs(namespace, &self.pod, self.tail).await?.trim_end_matches('\n')
        ));
        Ok(())
    }
}
