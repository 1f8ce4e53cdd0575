//! Real `wasmlet` processes on loopback (free ports chosen by the OS), the real `wasmctl`,
//! and clean-up on drop: what the end-to-end tests and the benchmarks both drive. It holds
//! no test's assertions; the tests live in `tests/e2e`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmkube_client::{Client, ClientConfig};

/// How long a wasmlet may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `target/<profile>`: where the test binary and the wasmlet/wasmctl binaries live.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    // Test binaries live in target/<profile>/deps; other binaries one level up.
    if dir.ends_with("deps") { dir.parent().unwrap_or(dir).to_path_buf() } else { dir.to_path_buf() }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A built example component, e.g. `hello_http`.
pub fn example(name: &str) -> PathBuf {
    let path = repo_root().join(format!("examples/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make examples` first", path.display());
    path
}

/// One running `wasmlet` process.
pub struct Wasmlet {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub api: String,
    pub proxy: String,
    pub token: String,
    name: String,
    /// `--listen` and `--proxy-listen` (port 0 unless fixed, so a restart keeps its address).
    listen: (String, String),
    /// `--node-port-address`: a loopback address of its own (127.x.y.z), so the nodes of a
    /// test, and of tests running side by side, each have their own NodePorts.
    pub node_ports: std::net::IpAddr,
    extra_args: Vec<String>,
    _scratch: Option<tempfile::TempDir>,
}

impl Wasmlet {
    /// Starts a one-node cluster (node `node-a`) in a fresh temporary directory.
    pub fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_named("node-a", extra_args)
    }

    /// Starts node `name` in a fresh temporary directory (`--join …` in `extra_args` to join).
    pub fn start_named(name: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_listening(name, ("127.0.0.1:0".into(), "127.0.0.1:0".into()), extra_args)
    }

    /// Like `start_named`, on fixed free ports kept across restarts: a cluster member's
    /// address is part of the membership, so it must not change when it restarts.
    pub fn start_fixed(name: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_listening(name, (free_address()?, free_address()?), extra_args)
    }

    fn start_listening(name: &str, listen: (String, String), extra_args: &[&str]) -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir()?;
        let node_ports = own_loopback_address();
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        extra_args.extend(["--node-port-address".to_string(), node_ports.to_string()]);
        let data_dir = scratch.path().to_path_buf();
        let (child, api, proxy) = spawn(name, &data_dir, &listen, &extra_args)?;
        let token = std::fs::read_to_string(data_dir.join("admin.token"))?.trim().to_string();
        Ok(Wasmlet {
            child: Some(child),
            data_dir,
            api,
            proxy,
            token,
            name: name.to_string(),
            listen,
            node_ports,
            extra_args,
            _scratch: Some(scratch),
        })
    }

    /// Runs a wasmlet that is expected to refuse to start; returns what it printed on stderr.
    pub fn start_failure(name: &str, extra_args: &[&str]) -> anyhow::Result<String> {
        let scratch = tempfile::tempdir()?;
        let mut child = Command::new(bin_dir().join("wasmlet"))
            .args(["--name", name, "--listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(scratch.path())
            .arg("--client-config")
            .arg(scratch.path().join("client.json"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                let out = child.wait_with_output()?;
                assert!(!out.status.success(), "wasmlet {name} was expected to fail");
                return Ok(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("wasmlet {name} kept running; it was expected to refuse to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of NodePort `port` on this node.
    pub fn node_port_url(&self, port: u16) -> String {
        format!("http://{}:{port}", self.node_ports)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as `systemctl stop` sends: returns once the process has exited (its exit
    /// status), or an error after `timeout` (the process is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("wasmlet {} is not running", self.name) };
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        anyhow::ensure!(sent.success(), "could not signal wasmlet {}", self.name);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("wasmlet {} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on the same data directory (new ports).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let (child, api, proxy) = spawn(&self.name, &self.data_dir, &self.listen, &self.extra_args)?;
        self.child = Some(child);
        self.api = api;
        self.proxy = proxy;
        Ok(())
    }

    /// Starts the node again on the same data directory with other options (`--join` and
    /// the like are kept only if `extra_args` repeats them).
    pub fn restart_with(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.extra_args.extend(["--node-port-address".to_string(), self.node_ports.to_string()]);
        self.restart()
    }

    /// Starts the node again on the same data directory at new fixed addresses (as if its
    /// `--listen` had changed).
    pub fn restart_elsewhere(&mut self) -> anyhow::Result<()> {
        self.listen = (free_address()?, free_address()?);
        self.restart()
    }

    pub fn client(&self) -> Client {
        Client::new(&ClientConfig { server: self.api.clone(), token: self.token.clone() }).expect("client")
    }

    /// Runs the real `wasmctl` against this node.
    pub fn wasmctl(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("wasmctl"))
            .args(args)
            .env("WASMKUBE_SERVER", &self.api)
            .env("WASMKUBE_TOKEN", &self.token)
            .env("WASMKUBE_CONFIG", self.data_dir.join("no-such-config.json"))
            .output()
            .expect("wasmctl runs")
    }

    /// Runs `wasmctl`, failing the test with its output unless it succeeds; returns stdout.
    pub fn wasmctl_ok(&self, args: &[&str]) -> String {
        let out = self.wasmctl(args);
        assert!(
            out.status.success(),
            "wasmctl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Wasmlet {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A random loopback address other than 127.0.0.1 (Linux answers on all of 127.0.0.0/8).
fn own_loopback_address() -> std::net::IpAddr {
    use rand::Rng;
    let mut rng = rand::rng();
    std::net::Ipv4Addr::new(127, rng.random_range(1..=254), rng.random(), rng.random_range(1..=254)).into()
}

/// A loopback address with a port that was free a moment ago.
fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

fn spawn(
    name: &str,
    data_dir: &Path,
    listen: &(String, String),
    extra: &[String],
) -> anyhow::Result<(Child, String, String)> {
    let mut child = Command::new(bin_dir().join("wasmlet"))
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &listen.0, "--proxy-listen", &listen.1])
        .arg("--client-config")
        .arg(data_dir.join("client.json"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(data_dir.join("wasmlet.log"))
                .or_else(|_| std::fs::File::create("/dev/null"))?,
        )
        .spawn()
        .with_context(|| format!("starting {}", bin_dir().join("wasmlet").display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("wasmlet ready") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(data_dir.join("wasmlet.log")).unwrap_or_default();
            bail!("wasmlet did not become ready within {START_TIMEOUT:?}; its log:\n{log}");
        }
    };
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let api = field("api=").context("ready line has api=")?;
    let proxy = field("proxy=").context("ready line has proxy=")?;
    Ok((child, api, proxy))
}

/// Starts a cluster on fixed ports (so members can be restarted): the first name founds it,
/// the others join with a fresh join token, in order. Returns once the founder lists them all.
/// `extra` goes to every node.
pub async fn start_cluster(names: &[&str], extra: &[&str]) -> anyhow::Result<Vec<Wasmlet>> {
    let (first, rest) = names.split_first().context("a cluster needs a node")?;
    let founder = Wasmlet::start_fixed(first, extra)?;
    let token = founder.wasmctl_ok(&["cluster", "join-token"]).trim().to_string();
    let mut nodes = vec![founder];
    for name in rest {
        let mut args = extra.to_vec();
        args.extend(["--join", nodes[0].api.as_str(), "--join-token", token.as_str()]);
        let node = Wasmlet::start_fixed(name, &args)?;
        nodes.push(node);
    }
    eventually(Duration::from_secs(15), "every node to be a member", || async {
        let m = members(&nodes[0]).await?;
        let listed = m["members"].as_array()?.len();
        (listed == names.len()).then_some(())
    })
    .await?;
    // And to have reported in: a test that places pods right away sees every node.
    eventually(Duration::from_secs(15), "every node to report Ready", || async {
        let list = nodes[0].client().get_path("/api/v1/nodes").await.ok()?;
        let ready = list["items"]
            .as_array()?
            .iter()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        (ready == names.len()).then_some(())
    })
    .await?;
    Ok(nodes)
}

/// Uploads example `module` and runs it as Deployment `name` (label `app: name`, container
/// `app`) of `replicas`, behind a Service of the same name.
pub async fn deploy_example(node: &Wasmlet, module: &str, name: &str, replicas: u32) -> anyhow::Result<()> {
    let client = node.client();
    let digest = client.upload_module(std::fs::read(example(module))?).await?.metadata.name;
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": format!("sha256:{digest}")}]}}}});
    client.post_path("/apis/apps/v1/namespaces/default/deployments", &deployment).await?;
    let service = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                     "spec": {"selector": {"app": name}}});
    client.post_path("/api/v1/namespaces/default/services", &service).await?;
    Ok(())
}

/// Sets `node`'s injected network faults (debug builds): `{"partitionedFrom": [ids]}`, or
/// `{}` to heal.
pub async fn set_faults(node: &Wasmlet, plan: serde_json::Value) -> anyhow::Result<()> {
    reqwest::Client::new()
        .put(format!("{}/debug/v1/faults", node.api))
        .bearer_auth(&node.token)
        .json(&plan)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// `GET /cluster/v1/members` on `node`: `{"leader": id, "members": [{id, name, url, role}]}`.
pub async fn members(node: &Wasmlet) -> Option<serde_json::Value> {
    node.client().get_path("/cluster/v1/members").await.ok()
}

/// The index in `nodes` of the leader, as the first running node that knows one reports it.
pub async fn leader_index(nodes: &[Wasmlet]) -> Option<usize> {
    for node in nodes.iter().filter(|n| n.pid().is_some()) {
        let Some(m) = members(node).await else { continue };
        let leader = m["leader"].as_u64().filter(|id| *id != 0)?;
        let name = m["members"].as_array()?.iter().find(|x| x["id"].as_u64() == Some(leader))?["name"]
            .as_str()?
            .to_string();
        return nodes.iter().position(|n| n.name() == name);
    }
    None
}

/// Polls `check` every 10 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the proxy answered one request with.
#[derive(Debug, Default)]
pub struct ProxyAnswer {
    /// 0 when the proxy could not be reached.
    pub status: u16,
    /// `x-wasmkube-pod` and `x-wasmkube-node`: who served it.
    pub pod: String,
    pub node: String,
    pub body: String,
}

/// GET `path` of service `host` through the proxy at `proxy`, with extra `headers`.
pub async fn proxy_get(proxy: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> ProxyAnswer {
    let mut request = reqwest::Client::new().get(format!("{proxy}{path}")).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let Ok(response) = request.timeout(Duration::from_secs(10)).send().await else {
        return ProxyAnswer::default();
    };
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (status, pod, node) =
        (response.status().as_u16(), header("x-wasmkube-pod"), header("x-wasmkube-node"));
    let body = response.text().await.unwrap_or_default();
    ProxyAnswer { status, pod, node, body }
}

/// Sends `n` GETs for `path` to service `host` through the proxy; returns (status, pod) pairs.
pub async fn through_proxy(proxy: &str, host: &str, path: &str, n: usize) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = proxy_get(proxy, host, path, &[]).await;
        out.push((answer.status, answer.pod));
    }
    out
}

/// The distinct pods that answered 200.
pub fn distinct_pods(responses: &[(u16, String)]) -> std::collections::BTreeSet<String> {
    responses.iter().filter(|(s, _)| *s == 200).map(|(_, p)| p.clone()).collect()
}

/// What a steady load saw: answers with status 200, and the others (status 0: no answer),
/// each with when it came (since the load began) and its body.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub ok: usize,
    pub failed: Vec<(Duration, u16, String)>,
}

impl LoadOutcome {
    pub fn total(&self) -> usize {
        self.ok + self.failed.len()
    }
}

/// GETs to service `host` through the proxy at `proxy` from `workers` concurrent clients
/// (each keeping its connection), back to back, for `duration`.
pub async fn steady_load(proxy: &str, host: &str, workers: usize, duration: Duration) -> LoadOutcome {
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, host) = (format!("{proxy}/"), host.to_string());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut outcome = LoadOutcome::default();
                while start.elapsed() < duration {
                    let sent =
                        client.get(&url).header("host", &host).timeout(Duration::from_secs(10)).send().await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            outcome.ok += 1;
                        }
                        Ok(r) => {
                            let status = r.status().as_u16();
                            outcome.failed.push((
                                start.elapsed(),
                                status,
                                r.text().await.unwrap_or_default(),
                            ));
                        }
                        Err(e) => outcome.failed.push((start.elapsed(), 0, e.to_string())),
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = LoadOutcome::default();
    for task in tasks {
        if let Ok(outcome) = task.await {
            total.ok += outcome.ok;
            total.failed.extend(outcome.failed);
        }
    }
    total
}
