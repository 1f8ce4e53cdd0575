//! `wasmctl rollout status|history|undo deployment/NAME`, as kubectl's: a Deployment's
//! revisions are its ReplicaSets (see the deployment controller), `status` follows its
//! rollout from the Deployment's status, `undo` puts a revision's template back.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use wasmkube_api::{Deployment, ReplicaSet, TEMPLATE_HASH_LABEL};
use wasmkube_client::Client;

use crate::output::table;
use crate::resources;

#[derive(Args)]
#[command(about = "Follow, list and undo a deployment's rollouts")]
pub struct Rollout {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Wait until the rollout is done (or fails, or the timeout passes).
    Status {
        /// `deployment/NAME` (or `deployment NAME`).
        resource: String,
        name: Option<String>,
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List the revisions.
    History { resource: String, name: Option<String> },
    /// Stop rolling out template changes (the current revision keeps running).
    Pause { resource: String, name: Option<String> },
    /// Roll out again.
    Resume { resource: String, name: Option<String> },
    /// Go back to the previous revision, or to --to-revision.
    Undo {
        resource: String,
        name: Option<String>,
        #[arg(long)]
        to_revision: Option<u64>,
    },
}

fn deployment_name(resource: &str, name: Option<&str>) -> anyhow::Result<String> {
    let (kind, name) = resources::target(resource, name)?;
    if kind.kind != "Deployment" {
        anyhow::bail!("rollouts are of deployments: wasmctl rollout status deployment/NAME");
    }
    name.ok_or_else(|| anyhow::anyhow!("which deployment? wasmctl rollout ... deployment/NAME"))
}

/// `name`'s ReplicaSets, oldest revision first.
async fn revisions(client: &Client, namespace: &str, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
    let mut sets: Vec<ReplicaSet> = client.list(Some(namespace)).await?;
    sets.retain(|rs| rs.metadata.owner_references.iter().any(|o| Some(&o.uid) == d.metadata.uid.as_ref()));
    sets.sort_by_key(ReplicaSet::revision);
    Ok(sets)
}

impl Rollout {
    pub async fn run(self, client: &Client, namespace: &str) -> anyhow::Result<()> {
        match self.command {
            RolloutCommand::Status { resource, name, timeout } => {
                status(client, namespace, &deployment_name(&resource, name.as_deref())?, timeout).await
            }
            RolloutCommand::History { resource, name } => {
                let name = deployment_name(&resource, name.as_deref())?;
                let d: Deployment = client.get(Some(namespace), &name).await?;
                let rows: Vec<Vec<String>> = revisions(client, namespace, &d)
                    .await?
                    .iter()
                    .map(|rs| {
                        let module = rs
                            .spec
                            .template
                            .spec
                            .containers
                            .first()
                            .map(|c| c.image.clone())
                            .unwrap_or_default();
                        let cause = rs.metadata.annotations.get("kubernetes.io/change-cause").cloned();
                        vec![
                            rs.revision().to_string(),
                            module,
                            rs.spec.replicas.to_string(),
                            cause.unwrap_or("<none>".into()),
                        ]
                    })
                    .collect();
                crate::out!("deployment.apps/{name}");
                table(&["REVISION", "MODULE", "REPLICAS", "CHANGE-CAUSE"], &rows);
                Ok(())
            }
            RolloutCommand::Pause { resource, name } => {
                set_paused(client, namespace, &deployment_name(&resource, name.as_deref())?, true).await
            }
            RolloutCommand::Resume { resource, name } => {
                set_paused(client, namespace, &deployment_name(&resource, name.as_deref())?, false).await
            }
            RolloutCommand::Undo { resource, name, to_revision } => {
                let name = deployment_name(&resource, name.as_deref())?;
                let mut d: Deployment = client.get(Some(namespace), &name).await?;
                let sets = revisions(client, namespace, &d).await?;
                let target = match to_revision {
                    Some(n) => sets.iter().find(|rs| rs.revision() == n),
                    // The one before the newest.
                    None => sets.iter().rev().nth(1),
                };
                let Some(rs) = target else {
                    match to_revision {
                        Some(n) => anyhow::bail!("unable to find specified revision {n} in history"),
                        None => anyhow::bail!("no rollout history found for deployment {name:?}"),
                    }
                };
                if rs.runs(&d.spec.template) {
                    crate::out!(
                        "deployment.apps/{name} skipped rollback (current template already matches revision {})",
                        rs.revision()
                    );
                    return Ok(());
                }
                let mut template = rs.spec.template.clone();
                template.metadata.labels.remove(TEMPLATE_HASH_LABEL);
                d.spec.template = template;
                client.update(&d).await?;
                crate::out!("deployment.apps/{name} rolled back");
                Ok(())
            }
        }
    }
}

async fn set_paused(client: &Client, namespace: &str, name: &str, paused: bool) -> anyhow::Result<()> {
    let mut d: Deployment = client.get(Some(namespace), name).await?;
    let word = if paused { "paused" } else { "resumed" };
    if d.spec.paused == paused {
        anyhow::bail!("deployment.apps/{name} is already {word}");
    }
    d.spec.paused = paused;
    client.update(&d).await?;
    crate::out!("deployment.apps/{name} {word}");
    Ok(())
}

/// kubectl's `rollout status`: prints each change of where the rollout is until it is done.
async fn status(client: &Client, namespace: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let d: Deployment = client.get(Some(namespace), name).await?;
        let s = d.status.clone().unwrap_or_default();
        let want = d.spec.replicas;
        let observed = d.metadata.generation.unwrap_or(0) <= s.observed_generation;
        let deadline_exceeded = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if deadline_exceeded {
            anyhow::bail!("deployment {name:?} exceeded its progress deadline");
        }
        let now = if !observed {
            "Waiting for deployment spec update to be observed...".to_string()
        } else if s.updated_replicas < want {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} out of {want} new replicas have been updated...",
                s.updated_replicas
            )
        } else if s.replicas > s.updated_replicas {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                s.replicas - s.updated_replicas
            )
        } else if s.available_replicas < s.updated_replicas {
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available...",
                s.available_replicas, s.updated_replicas
            )
        } else {
            crate::out!("deployment {name:?} successfully rolled out");
            return Ok(());
        };
        if now != said {
            crate::out!("{now}");
            said = now;
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out waiting for the rollout of deployment {name:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
