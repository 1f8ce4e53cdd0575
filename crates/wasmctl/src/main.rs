//! `wasmctl`, the wasmkube CLI. One file per subcommand under `commands/`.

mod commands;
mod output;
mod resources;

use clap::{Parser, Subcommand};
use wasmkube_client::{Client, ClientConfig};

#[derive(Parser)]
#[command(version, about = "Deploy and manage WebAssembly workloads on a wasmkube cluster.")]
struct Cli {
    /// API server URL (overrides the config file).
    #[arg(long, global = true, env = "WASMKUBE_SERVER")]
    server: Option<String>,
    /// Bearer token (overrides the config file).
    #[arg(long, global = true, env = "WASMKUBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Namespace to work in.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Deploy(commands::deploy::Deploy),
    Get(commands::get::Get),
    Describe(commands::describe::Describe),
    Scale(commands::scale::Scale),
    Autoscale(commands::autoscale::Autoscale),
    Rollout(commands::rollout::Rollout),
    Top(commands::top::Top),
    Delete(commands::delete::Delete),
    Logs(commands::logs::Logs),
    Cluster(commands::cluster::Cluster),
    Node(commands::node::Node),
    /// Mark a node unschedulable: it takes no new pods.
    Cordon(commands::cordon::NodeName),
    /// Make a cordoned node schedulable again.
    Uncordon(commands::cordon::NodeName),
    /// Cordon a node and evict its pods (their Deployments replace them elsewhere).
    Drain(commands::cordon::NodeName),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&ClientConfig::resolve(cli.server, cli.token)?)?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Deploy(c) => c.run(&client, ns).await,
        Command::Get(c) => c.run(&client, ns).await,
        Command::Describe(c) => c.run(&client, ns).await,
        Command::Scale(c) => c.run(&client, ns).await,
        Command::Autoscale(c) => c.run(&client, ns).await,
        Command::Rollout(c) => c.run(&client, ns).await,
        Command::Top(c) => c.run(&client, ns).await,
        Command::Delete(c) => c.run(&client, ns).await,
        Command::Logs(c) => c.run(&client, ns).await,
        Command::Cluster(c) => c.run(&client, ns).await,
        Command::Node(c) => c.run(&client, ns).await,
        Command::Cordon(c) => c.cordon(&client).await,
        Command::Uncordon(c) => c.uncordon(&client).await,
        Command::Drain(c) => c.drain(&client).await,
    }
}
