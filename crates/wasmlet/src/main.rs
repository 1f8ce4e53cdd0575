//! `wasmlet`, the node daemon: parses flags, builds the parts, runs them until a signal.

mod activate;
mod bootstrap;
mod cluster;
mod leave;
mod node;
mod supervise;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about = "The wasmkube node daemon. With no flags: a complete one-node cluster.")]
pub struct Flags {
    /// This node's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the Raft log, object store, modules and compile cache live.
    #[arg(long, env = "WASMKUBE_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// API and peer address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// Service proxy address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub proxy_listen: String,
    /// The address NodePort Services listen on, at their nodePort (default: the proxy's
    /// address; 0.0.0.0 for every interface).
    #[arg(long)]
    pub node_port_address: Option<std::net::IpAddr>,
    /// The host name or IP other nodes and clients reach this node at, with the listening
    /// ports (needed when --listen is a wildcard such as 0.0.0.0; as etcd's advertise URLs).
    #[arg(long, env = "WASMKUBE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where to write the client settings wasmctl reads (default: the user's config dir).
    #[arg(long, env = "WASMKUBE_CONFIG")]
    pub client_config: Option<std::path::PathBuf>,
    /// A request to an http pod is cut off after this long (e.g. 10s, 500ms), unless the
    /// pod sets its own `timeoutSeconds`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Largest module upload accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_module_mib: usize,
    /// The CPU limit of pods that set no `resources.limits.cpu` (e.g. 500m, 1, 2; default:
    /// half the machine's cores, at least 1): what one pod may take from the others.
    #[arg(long, value_parser = parse_cpu)]
    pub default_cpu_limit: Option<u64>,
    /// Pods this node accepts.
    #[arg(long, default_value_t = 110)]
    pub max_pods: usize,
    /// Memory pods may reserve on this node, as a quantity (e.g. 2Gi, 512Mi); pods' memory
    /// requests are admitted against it. Default: the machine's memory.
    #[arg(long, value_parser = parse_quantity)]
    pub memory: Option<u64>,
    /// A label for this node, `key=value` (repeatable), for nodeSelector and spreading.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Join the cluster whose member API is at this URL (needs --join-token).
    #[arg(long, requires = "join_token")]
    pub join: Option<String>,
    /// A join token from `wasmctl cluster join-token`.
    #[arg(long, requires = "join")]
    pub join_token: Option<String>,
    /// Voting members the cluster keeps (3 or 5); nodes beyond join as learners.
    #[arg(long, default_value_t = 3)]
    pub voters: usize,
    /// Applied raft entries after which the log is compacted (as etcd's --snapshot-count);
    /// a follower behind the compaction point catches up from a snapshot.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_count: u64,
    /// Bytes of objects the cluster's store may hold, as a quantity (e.g. 256Mi; at most
    /// 512Mi, so a snapshot of the store can reach a new member); past it only writes that
    /// do not grow the store (status reports, deletes) are taken, as etcd's
    /// --quota-backend-bytes. Set it alike on every node.
    #[arg(long, default_value = "512Mi", value_parser = parse_quota)]
    pub quota_bytes: u64,
    /// How long the leader may be out of touch with a node before it declares it lost and
    /// replaces its pods on the others; a node out of touch with the cluster for three times
    /// as long stops its own pods. Raise it on slow or lossy links (e.g. 3s on Wi-Fi). Set
    /// it alike on every node.
    #[arg(long, default_value = "1s", value_parser = parse_grace)]
    pub node_grace: std::time::Duration,
    /// A cli pod that ended (or an http pod whose requests keep trapping, or that fails its
    /// liveness probe again) is started again after this, doubling with each restart up to
    /// --crash-backoff-max (CrashLoopBackOff, as Kubernetes' 10s to 5m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub crash_backoff: std::time::Duration,
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub crash_backoff_max: std::time::Duration,
    /// Leave a rollout that passed its progress deadline as it is (Kubernetes' behaviour)
    /// instead of going back to the revision before.
    #[arg(long)]
    pub no_auto_rollback: bool,
    /// A pod that ran this long has its back-off start over.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub crash_backoff_reset: std::time::Duration,
}

fn parse_grace(d: &str) -> Result<std::time::Duration, String> {
    let grace = humantime::parse_duration(d).map_err(|e| e.to_string())?;
    // Shorter, a node would be declared lost for a hiccup, and would stop its own pods
    // during an election (three graces).
    if grace < std::time::Duration::from_secs(1) {
        return Err(format!("{d} is too short: the node grace is at least 1s"));
    }
    Ok(grace)
}

fn parse_cpu(q: &str) -> Result<u64, String> {
    wasmkube_api::parse_cpu(q)
}

fn parse_quota(q: &str) -> Result<u64, String> {
    let bytes = parse_quantity(q)?;
    let max = wasmkube_raft::limits::MAX_QUOTA_BYTES as u64;
    match bytes {
        0 => Err("the quota must be more than 0".into()),
        b if b > max => Err(format!("{q} is more than the largest quota, {}Mi", max >> 20)),
        b => Ok(b),
    }
}

fn parse_quantity(q: &str) -> Result<u64, String> {
    wasmkube_api::parse_memory(q)
}

fn parse_label(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv.split_once('=').ok_or_else(|| format!("{kv:?}: expected key=value"))?;
    let mut meta = wasmkube_api::ObjectMeta::named(None, "node");
    meta.labels.insert(k.to_string(), v.to_string());
    let node = wasmkube_api::Node { metadata: meta, ..Default::default() };
    let kind = wasmkube_api::find_kind("Node").ok_or("no Node kind")?;
    let mut body = serde_json::to_value(&node).map_err(|e| e.to_string())?;
    body["kind"] = "Node".into();
    wasmkube_api::validate_object(kind, body).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match node::run(Flags::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmlet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
