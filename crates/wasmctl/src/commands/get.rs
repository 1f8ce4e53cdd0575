//! `wasmctl get TYPE [NAME]`: tables, or the objects as JSON/YAML.

use clap::Args;
use serde_json::Value;
use wasmkube_client::Client;

use crate::output::{self, Format, age};
use crate::resources;

#[derive(Args)]
#[command(about = "List objects: nodes, pods, deployments, services, events, modules")]
pub struct Get {
    /// Resource type (or TYPE/NAME).
    resource: String,
    /// One object's name.
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only objects with these labels (key=value[,key=value]).
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

impl Get {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let (kind, name) = resources::target(&self.resource, self.name.as_deref())?;
        let ns = (kind.namespaced && !self.all_namespaces).then_some(namespace);
        let items: Vec<Value> = match &name {
            Some(n) => vec![client.get_path(&kind.object_path(ns, n)).await?],
            None => {
                let mut path = kind.collection_path(ns);
                if let Some(sel) = &self.selector {
                    path.push_str(&format!("?labelSelector={sel}"));
                }
                let list = client.get_path(&path).await?;
                list["items"].as_array().cloned().unwrap_or_default()
            }
        };
        if self.output != Format::Table {
            let value = if name.is_some() {
                items.into_iter().next().unwrap_or(Value::Null)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            return output::structured(&value, self.output);
        }
        if items.is_empty() {
            eprintln!(
                "No {} found{}.",
                kind.plural,
                ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
            );
            return Ok(());
        }
        let items = if kind.kind == "Node" { with_roles(client, items).await } else { items };
        let (header, rows) = columns(kind.kind, &items);
        output::table(&header, &rows);
        Ok(())
    }
}

/// Adds each node's Raft role (leader, voter, learner) from the member list.
async fn with_roles(client: &Client, mut nodes: Vec<Value>) -> Vec<Value> {
    let Ok(members) = client.get_path("/cluster/v1/members").await else { return nodes };
    for node in &mut nodes {
        let role = members["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == node["metadata"]["name"]))
            .and_then(|m| m["role"].as_str())
            .unwrap_or("none");
        node["role"] = Value::String(role.into());
    }
    nodes
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn created(v: &Value) -> String {
    age(v["metadata"]["creationTimestamp"].as_str())
}

fn ready_condition(v: &Value) -> bool {
    v["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// An autoscaler's metrics as kubectl shows them: `current/target` per metric
/// (`cpu: 35%/50%`, `concurrency: 4200m/10`), `<unknown>` before the first reading.
fn hpa_targets(h: &Value) -> String {
    let empty = Vec::new();
    let specs = h["spec"]["metrics"].as_array().unwrap_or(&empty);
    let current = h["status"]["currentMetrics"].as_array().unwrap_or(&empty);
    let read = |kind: &str, name: &str| {
        current.iter().find(|c| {
            let block = &c[kind.to_ascii_lowercase().as_str()];
            block["name"].as_str() == Some(name) || block["metric"]["name"].as_str() == Some(name)
        })
    };
    let shown: Vec<String> = if specs.is_empty() {
        let now =
            read("Resource", "cpu").and_then(|c| c["resource"]["current"]["averageUtilization"].as_u64());
        vec![format!("cpu: {}/80%", now.map_or("<unknown>".into(), |u| format!("{u}%")))]
    } else {
        specs
            .iter()
            .map(|m| {
                let kind = m["type"].as_str().unwrap_or("");
                let block = &m[kind.to_ascii_lowercase().as_str()];
                let name = block["name"].as_str().or(block["metric"]["name"].as_str()).unwrap_or("?");
                let name = name.trim_start_matches("wasmkube.dev/");
                let now = read(kind, name).map(|c| &c[kind.to_ascii_lowercase().as_str()]["current"]);
                match block["target"]["averageUtilization"].as_u64() {
                    Some(t) => {
                        let u = now.and_then(|c| c["averageUtilization"].as_u64());
                        format!("{name}: {}/{t}%", u.map_or("<unknown>".into(), |u| format!("{u}%")))
                    }
                    None => {
                        let v = now.and_then(|c| c["averageValue"].as_str()).unwrap_or("<unknown>");
                        format!("{name}: {v}/{}", s(&block["target"]["averageValue"]))
                    }
                }
            })
            .collect()
    };
    shown.join(", ")
}

/// The table columns of each kind, as kubectl shows them.
pub fn columns(kind: &str, items: &[Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let rows = |f: &dyn Fn(&Value) -> Vec<String>| items.iter().map(f).collect::<Vec<_>>();
    match kind {
        "Pod" => (
            vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"],
            rows(&|p| {
                let status =
                    p["status"]["reason"].as_str().or(p["status"]["phase"].as_str()).unwrap_or("Pending");
                vec![
                    s(&p["metadata"]["name"]),
                    format!("{}/1", u8::from(ready_condition(p))),
                    status.to_string(),
                    p["status"]["restartCount"].as_u64().unwrap_or(0).to_string(),
                    p["spec"]["nodeName"].as_str().unwrap_or("<none>").to_string(),
                    created(p),
                ]
            }),
        ),
        "Deployment" => (
            vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            rows(&|d| {
                let st = &d["status"];
                vec![
                    s(&d["metadata"]["name"]),
                    format!(
                        "{}/{}",
                        st["readyReplicas"].as_u64().unwrap_or(0),
                        d["spec"]["replicas"].as_u64().unwrap_or(0)
                    ),
                    st["updatedReplicas"].as_u64().unwrap_or(0).to_string(),
                    st["availableReplicas"].as_u64().unwrap_or(0).to_string(),
                    created(d),
                ]
            }),
        ),
        "ReplicaSet" => (
            vec!["NAME", "REVISION", "DESIRED", "CURRENT", "READY", "AGE"],
            rows(&|r| {
                vec![
                    s(&r["metadata"]["name"]),
                    s(&r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
                    r["spec"]["replicas"].as_u64().unwrap_or(0).to_string(),
                    r["status"]["replicas"].as_u64().unwrap_or(0).to_string(),
                    r["status"]["readyReplicas"].as_u64().unwrap_or(0).to_string(),
                    created(r),
                ]
            }),
        ),
        "HorizontalPodAutoscaler" => (
            vec!["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"],
            rows(&|h| {
                vec![
                    s(&h["metadata"]["name"]),
                    format!("Deployment/{}", s(&h["spec"]["scaleTargetRef"]["name"])),
                    hpa_targets(h),
                    h["spec"]["minReplicas"].as_u64().unwrap_or(1).to_string(),
                    s(&h["spec"]["maxReplicas"]),
                    h["status"]["currentReplicas"].as_u64().unwrap_or(0).to_string(),
                    created(h),
                ]
            }),
        ),
        "Service" => (
            vec!["NAME", "TYPE", "SELECTOR", "PORTS", "AGE"],
            rows(&|v| {
                let selector = v["spec"]["selector"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, val)| format!("{k}={}", s(val))).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                let ports = v["spec"]["ports"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| match p["nodePort"].as_i64() {
                                Some(node_port) => format!("{}:{node_port}/TCP", s(&p["port"])),
                                None => format!("{}/TCP", s(&p["port"])),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                vec![
                    s(&v["metadata"]["name"]),
                    v["spec"]["type"].as_str().unwrap_or("ClusterIP").into(),
                    selector,
                    ports,
                    created(v),
                ]
            }),
        ),
        "Node" => (
            vec!["NAME", "STATUS", "ROLE", "PODS", "API", "AGE"],
            rows(&|n| {
                let api = n["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["type"] == "API"))
                    .map(|x| s(&x["address"]));
                vec![
                    s(&n["metadata"]["name"]),
                    {
                        let ready = if ready_condition(n) { "Ready" } else { "NotReady" };
                        // As kubectl shows a cordoned node.
                        if n["spec"]["unschedulable"] == true {
                            format!("{ready},SchedulingDisabled")
                        } else {
                            ready.to_string()
                        }
                    },
                    n["role"].as_str().unwrap_or("none").into(),
                    s(&n["status"]["capacity"]["pods"]),
                    api.unwrap_or_default(),
                    created(n),
                ]
            }),
        ),
        "Event" => (
            vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            rows(&|e| {
                let obj = &e["involvedObject"];
                vec![
                    age(e["lastTimestamp"].as_str()),
                    s(&e["type"]),
                    s(&e["reason"]),
                    format!("{}/{}", s(&obj["kind"]).to_ascii_lowercase(), s(&obj["name"])),
                    s(&e["message"]),
                ]
            }),
        ),
        _ => (
            vec!["NAME", "WORLD", "SIZE", "AGE"],
            rows(&|m| {
                vec![s(&m["metadata"]["name"]), s(&m["spec"]["world"]), s(&m["spec"]["size"]), created(m)]
            }),
        ),
    }
}
