//! The reconcile loop: on the leader, read a snapshot, plan, commit the plan; repeat on every
//! change (and on a resync timer, in case a change was missed).

use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::broadcast::error::RecvError;
use wasmkube_raft::{ClusterHandle, ProposeError};
use wasmkube_store::{Command, ObjectKey};

use crate::actions::{Action, PlanContext};
use crate::deployment::{plan_deployment, plan_orphans};
use crate::events::{EVENT_TTL, EventRecorder, plan_event_gc};
use crate::nodes::{HeartbeatClock, plan_node_lifecycle};
use crate::placement::plan_placement;
use crate::snapshot::Snapshot;

/// A pass at least this often, so a node that falls silent is noticed in time.
const RESYNC: Duration = Duration::from_secs(1);
/// The kinds whose changes start a pass.
const WATCHED: [&str; 3] = ["Deployment", "Pod", "Node"];
/// Events are swept on their own, slower clock: reading them all on every pass would cost
/// more than the sweep is worth.
const EVENT_SWEEP: Duration = Duration::from_secs(60);

/// Runs the controllers until `shutdown` resolves.
pub async fn run(cluster: ClusterHandle, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut changes = cluster.store().subscribe_all();
    let mut leader = cluster.leader();
    let mut rng = StdRng::from_os_rng();
    let mut next_sweep = tokio::time::Instant::now() + EVENT_SWEEP;
    // Heartbeats as this leader has seen them; a new leader starts every node's clock afresh.
    let mut clock: Option<HeartbeatClock> = None;
    let mut recorder = EventRecorder::default();
    loop {
        if !leader.borrow().is_leader {
            clock = None;
            tokio::select! {
                _ = &mut shutdown => return,
                r = leader.changed() => if r.is_err() { return } else { continue },
            }
        }
        let clock = clock.get_or_insert_with(HeartbeatClock::default);
        if crate::faults::take_injected_panic() {
            panic!("injected panic in the controllers (debug build fault)");
        }
        // When it acted, its own writes wake it again to check the result.
        if let Err(e) = reconcile_once(&cluster, &mut rng, clock, &mut recorder).await {
            tracing::warn!("reconcile failed, retrying: {e}");
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep += EVENT_SWEEP;
            sweep_events(&cluster).await;
        }
        // Wait for a change to what the controllers decide over; other writes (services,
        // events, modules) cost nothing.
        let resync = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                r = changes.recv() => match r {
                    Ok(e) if !e.concerns(&WATCHED) => continue,
                    Err(RecvError::Closed) => return,
                    _ => {}
                },
                _ = tokio::time::sleep_until(resync) => {}
                _ = leader.changed() => {}
            }
            break;
        }
        // Coalesce a burst of changes into one pass.
        while changes.try_recv().is_ok() {}
    }
}

/// One pass over everything.
async fn reconcile_once(
    cluster: &ClusterHandle,
    rng: &mut StdRng,
    clock: &mut HeartbeatClock,
    recorder: &mut EventRecorder,
) -> Result<(), String> {
    // Decide over everything committed so far: a new leader may not have applied its
    // predecessor's last writes yet, and acting on an older snapshot would do them twice.
    // (raft-rs answers a read index only once the leader has committed in its own term.)
    cluster.read_barrier().await.map_err(|e| format!("read barrier: {e}"))?;
    let snapshot = Snapshot::read(cluster.store()).map_err(|e| e.to_string())?;
    let seed: u64 = rand::Rng::random(rng);
    let mut ctx = PlanContext { now: now(), rng: StdRng::seed_from_u64(seed) };
    let now = std::time::Instant::now();
    clock.observe(&snapshot.nodes, now);
    let mut actions = plan_node_lifecycle(&snapshot.nodes, &snapshot.pods, clock, now, &mut ctx);
    actions.extend(snapshot.deployments.iter().flat_map(|d| plan_deployment(d, &snapshot.pods, &mut ctx)));
    actions.extend(plan_orphans(&snapshot.deployments, &snapshot.pods));
    plan_placement(&snapshot, &mut actions, &mut ctx);
    let (events, mut actions): (Vec<Action>, Vec<Action>) =
        actions.into_iter().partition(|a| matches!(a, Action::RecordEvent(_)));
    let events = events.into_iter().filter_map(|a| match a {
        Action::RecordEvent(e) => Some(*e),
        _ => None,
    });
    actions
        .extend(recorder.admit(events.collect(), now).into_iter().map(|e| Action::RecordEvent(Box::new(e))));
    let results = join_all(actions.into_iter().map(|a| execute(cluster, a))).await;
    for r in results {
        match r {
            Ok(()) => {}
            // Someone changed the object since the snapshot: the next pass sees the new state.
            Err(ProposeError::Rejected(e)) => tracing::debug!("action skipped: {e}"),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

async fn sweep_events(cluster: &ClusterHandle) {
    let events: Vec<wasmkube_api::Event> = match cluster.store().list("Event", None) {
        Ok((items, _)) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
        Err(e) => {
            tracing::warn!("event sweep skipped: {e}");
            return;
        }
    };
    for action in plan_event_gc(&events, SystemTime::now(), EVENT_TTL) {
        if let Err(e) = execute(cluster, action).await {
            tracing::debug!("event not expired: {e}");
        }
    }
}

async fn execute(cluster: &ClusterHandle, action: Action) -> Result<(), ProposeError> {
    let command = match action {
        Action::CreatePod(pod) => Command::Create { object: json(&*pod) },
        Action::DeletePod { namespace, name, resource_version } => Command::Delete {
            key: ObjectKey::new("Pod", Some(&namespace), &name),
            precondition: Some(resource_version),
        },
        Action::BindPod { mut pod, node } => {
            let precondition = pod.metadata.revision();
            pod.spec.node_name = Some(node);
            Command::Update { object: json(&*pod), precondition }
        }
        Action::UpdateDeploymentStatus { namespace, name, status } => Command::UpdateStatus {
            key: ObjectKey::new("Deployment", Some(&namespace), &name),
            status: json(&status),
            precondition: None,
        },
        Action::UpdateNodeStatus { name, status, resource_version } => Command::UpdateStatus {
            key: ObjectKey::new("Node", None, &name),
            status: json(&*status),
            precondition: Some(resource_version),
        },
        Action::RecordEvent(event) => Command::RecordEvent { object: json(&*event) },
        Action::DeleteEvent { namespace, name } => {
            Command::Delete { key: ObjectKey::new("Event", Some(&namespace), &name), precondition: None }
        }
    };
    cluster.propose(command).await.map(drop)
}

/// Serialising our own types cannot fail: no maps with non-string keys, no I/O.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
