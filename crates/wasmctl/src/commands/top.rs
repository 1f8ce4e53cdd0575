//! `wasmctl top pods|nodes`: usage from the metrics API (`metrics.k8s.io/v1beta1`), as
//! `kubectl top` shows it, with an http pod's request figures beside it.

use clap::{Args, ValueEnum};
use serde_json::Value;
use wasmkube_api::metrics::{CONCURRENCY, LATENCY, MEMORY_ALLOCATED, REQUESTS_PER_SECOND};
use wasmkube_api::{NodeMetrics, PodMetrics};
use wasmkube_client::Client;

use crate::output::table;

#[derive(Clone, Copy, ValueEnum)]
enum What {
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "node", alias = "no")]
    Nodes,
}

#[derive(Args)]
#[command(about = "Show CPU, memory and request usage of pods or nodes")]
pub struct Top {
    #[arg(value_enum)]
    what: What,
    /// Only this pod or node.
    name: Option<String>,
    /// Pods in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only pods with these labels (`app=hello`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

const API: &str = "/apis/metrics.k8s.io/v1beta1";

impl Top {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        match self.what {
            What::Pods => self.pods(client, namespace).await,
            What::Nodes => self.nodes(client).await,
        }
    }

    async fn pods(&self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        let mut path = if self.all_namespaces {
            format!("{API}/pods")
        } else {
            format!("{API}/namespaces/{namespace}/pods")
        };
        if let Some(selector) = &self.selector {
            path.push_str(&format!("?labelSelector={}", urlencoding(selector)));
        }
        let mut pods: Vec<PodMetrics> = items(client.get_path(&path).await?)?;
        if let Some(name) = &self.name {
            pods.retain(|p| &p.metadata.name == name);
            if pods.is_empty() {
                anyhow::bail!("no metrics for pod {name:?} (not running, or its node did not answer)");
            }
        }
        let mut header = vec!["NAME", "CPU(cores)", "MEMORY(bytes)", "CONCURRENCY", "REQ/S", "LATENCY"];
        if self.all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        let rows: Vec<Vec<String>> = pods
            .iter()
            .map(|p| {
                let figure = |name: &str, show: fn(f64) -> String| p.usage(name).map_or("-".into(), show);
                let mut row = vec![
                    p.metadata.name.clone(),
                    figure("cpu", millicores),
                    figure("memory", mebibytes),
                    figure(CONCURRENCY, |c| format!("{c:.2}")),
                    figure(REQUESTS_PER_SECOND, |r| format!("{r:.1}")),
                    figure(LATENCY, duration),
                ];
                if self.all_namespaces {
                    row.insert(0, p.metadata.namespace.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        table(&header, &rows);
        Ok(())
    }

    async fn nodes(&self, client: &Client) -> anyhow::Result<()> {
        let mut nodes: Vec<NodeMetrics> = items(client.get_path(&format!("{API}/nodes")).await?)?;
        if let Some(name) = &self.name {
            nodes.retain(|n| &n.metadata.name == name);
            if nodes.is_empty() {
                anyhow::bail!("no metrics for node {name:?} (not a member, or it did not answer)");
            }
        }
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                let figure = |name: &str, show: fn(f64) -> String| n.usage(name).map_or("-".into(), show);
                vec![
                    n.metadata.name.clone(),
                    figure("cpu", millicores),
                    figure("memory", mebibytes),
                    figure(MEMORY_ALLOCATED, mebibytes),
                ]
            })
            .collect();
        table(&["NAME", "CPU(cores)", "MEMORY(bytes)", "MEMORY-ALLOCATED(bytes)"], &rows);
        Ok(())
    }
}

fn items<T: serde::de::DeserializeOwned>(mut list: Value) -> anyhow::Result<Vec<T>> {
    let items = list.get_mut("items").map(Value::take).unwrap_or(Value::Array(Vec::new()));
    Ok(serde_json::from_value(items)?)
}

fn millicores(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as u64)
}

fn mebibytes(bytes: f64) -> String {
    format!("{}Mi", (bytes / 1048576.0).round() as u64)
}

fn duration(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.1}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

/// A label selector in a query string (`=` and `,` escaped).
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
