//! The reconcile loop, on the leader only. On gaining leadership it lists Deployments, Pods
//! and Nodes once into a `ClusterView`; from then on every change marks the keys it touches
//! (a work queue, deduplicated), and a pass plans only those: the Deployments whose spec or
//! pods changed, the pods that changed (orphans), the unbound pods (placement), and node
//! lifecycle on a one-second tick. A full resync every `RESYNC` is only a safety net.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmkube_api::{Deployment, Event, Node, Pod, ReplicaSet, Resource};
use wasmkube_apiserver::{Objects, Write, WriteError};
use wasmkube_cache::SharedCache;
use wasmkube_raft::ProposeError;

use crate::actions::{Action, PlanContext};
use crate::deployment::{BURST_REPLICAS, plan_deployment, plan_orphans};
use crate::events::{EVENT_TTL, EventRecorder, plan_event_gc};
use crate::nodes::{HeartbeatClock, plan_node_lifecycle};
use crate::placement::plan_placement;
use crate::revisions::{
    current_hash, newest_template, plan_adoption, plan_orphan_revisions, plan_revisions, revision_owner,
};
use crate::view::{ClusterView, Dirty};

/// Node lifecycle is judged at least this often (and four times per node grace), so a node
/// that falls silent is noticed in time.
const TICK: Duration = Duration::from_secs(1);

/// The control loops' settings (node options).
#[derive(Debug, Clone, Copy)]
pub struct ControllerConfig {
    /// How long the leader may be out of touch with a node before it declares it lost
    /// (`--node-grace`).
    pub node_grace: Duration,
    /// Whether a rollout past its progress deadline is rolled back (`--no-auto-rollback`
    /// turns it off).
    pub auto_rollback: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { node_grace: crate::nodes::NODE_GRACE, auto_rollback: true }
    }
}
/// Everything is planned again this often, in case a change was somehow missed.
const RESYNC: Duration = Duration::from_secs(30);
/// Events are swept on their own, slower clock: reading them all on every pass would cost
/// more than the sweep is worth.
const EVENT_SWEEP: Duration = Duration::from_secs(60);

/// Runs the controllers until `shutdown` resolves.
pub async fn run(
    objects: Objects,
    cache: SharedCache,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let tick = (config.node_grace / 4).clamp(Duration::from_millis(50), TICK);
    let cluster = objects.cluster().clone();
    let mut leader = cluster.leader();
    let mut rng = StdRng::from_os_rng();
    loop {
        if !leader.borrow_and_update().is_leader {
            tokio::select! {
                _ = &mut shutdown => return,
                r = leader.changed() => if r.is_err() { return } else { continue },
            }
        }
        let (mut view, mut pending) = ClusterView::open(&cache);
        // Heartbeats as this leader has seen them; a new leader starts every node's clock afresh.
        let mut clock = HeartbeatClock::default();
        let mut recorder = EventRecorder::default();
        // The term whose read barrier this leader has passed (0: none yet).
        let mut caught_up_in = 0;
        let start = tokio::time::Instant::now();
        let (mut next_tick, mut next_resync, mut next_sweep) =
            (start + tick, start + RESYNC, start + EVENT_SWEEP);
        while leader.borrow_and_update().is_leader {
            if crate::faults::take_injected_panic() {
                panic!("injected panic in the controllers (debug build fault)");
            }
            // The work is cleared only once a pass has done it; a failed pass is retried
            // with everything it had to do.
            let lost = crate::nodes::lost_nodes(&cluster, config.node_grace);
            match reconcile(
                &objects,
                &mut view,
                &mut pending,
                &mut rng,
                (&mut clock, &lost),
                &mut recorder,
                &mut caught_up_in,
                config.auto_rollback,
            )
            .await
            {
                // What the writes left undone (a create that failed) is the next pass's work.
                Ok(more) => pending = more,
                Err(e) => tracing::warn!("reconcile failed, retrying: {e}"),
            }
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep += EVENT_SWEEP;
                sweep_events(&objects).await;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                changed = view.changed() => match changed {
                    Some(dirty) => pending.merge(dirty),
                    None => return,
                },
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + tick;
                    // A rollout under way is looked at again every tick: one that stalls
                    // changes nothing, and its progress deadline must still be noticed.
                    pending.merge(view.rolling());
                }
                _ = tokio::time::sleep_until(next_resync) => {
                    next_resync = tokio::time::Instant::now() + RESYNC;
                    pending.merge(view.everything());
                }
                _ = leader.changed() => {}
            }
        }
    }
}

/// One pass over the work in `dirty` (and whatever changed since it was queued).
#[allow(clippy::too_many_arguments, reason = "the term's state, each part borrowed on its own")]
async fn reconcile(
    objects: &Objects,
    view: &mut ClusterView,
    pending: &mut Dirty,
    rng: &mut StdRng,
    (clock, lost): (&mut HeartbeatClock, &HashMap<String, Duration>),
    recorder: &mut EventRecorder,
    caught_up_in: &mut u64,
    rollback: bool,
) -> Result<Dirty, String> {
    // Decide over everything committed so far: a new leader may not have applied its
    // predecessor's last writes yet, and acting on an older view would do them twice.
    // (raft-rs answers a read index only once the leader has committed in its own term.)
    // Once per term is enough: after that, every entry that commits is one this leader
    // proposed, and a pass's writes are applied here before the pass ends (a create whose
    // outcome is unknown is counted as on its way, see `ASSUME_FOR`). (A leader that
    // was deposed without knowing it yet cannot commit anything: its writes fail, and
    // check_quorum makes it step down within an election timeout.) A barrier on every
    // pass would wait, each time, for followers busy applying the last burst.
    let cluster = objects.cluster();
    let leading = *cluster.leader().borrow();
    if *caught_up_in != leading.term {
        cluster.read_barrier().await.map_err(|e| format!("read barrier: {e}"))?;
        *caught_up_in = leading.term;
    }
    // Queued with the rest of the work: a failed pass keeps it all for the next one.
    pending.merge(view.catch_up());
    pending.merge(view.expire_assumed(std::time::Instant::now()));
    let work = &*pending;
    let seed: u64 = rand::Rng::random(rng);
    let mut ctx = PlanContext { now: now(), rng: StdRng::seed_from_u64(seed) };
    let now = std::time::Instant::now();
    let nodes = view.nodes();
    clock.observe(&nodes, now);
    let on_unready: Vec<Pod> =
        nodes.iter().filter(|n| !n.is_ready()).flat_map(|n| view.pods_on(&n.metadata.name)).collect();
    let mut actions = plan_node_lifecycle(&nodes, &on_unready, clock, lost, now, &mut ctx);
    let mut gone = false;
    // Adoptions are a pass's share however many Deployments need them (after an upgrade,
    // every pod of every Deployment does).
    let mut adoptions = BURST_REPLICAS;
    for key in &work.deployments {
        match view.deployment(key) {
            Some(d) => {
                let sets = replica_sets_of(objects.store(), d);
                // Paused: it keeps running (and scaling) the revision it was at.
                let paused = match newest_template(&sets) {
                    Some(template) if d.spec.paused && template != d.spec.template => {
                        let mut at = d.clone();
                        at.spec.template = template;
                        Some(at)
                    }
                    _ => None,
                };
                let d = paused.as_ref().unwrap_or(d);
                let hash = current_hash(d, &sets);
                let owned: Vec<&Pod> = view.owned_pods(d).collect();
                let revisions = plan_revisions(d, &hash, &owned, &sets, rollback, &mut ctx);
                let revision = revision_owner(&hash, &sets, &revisions);
                // A new ReplicaSet: one of the same name may be left by a Deployment deleted
                // and made again before a pass saw it gone.
                gone |= revisions.iter().any(|a| matches!(a, Action::CreateReplicaSet(_)));
                actions.extend(plan_deployment(d, &hash, revision.as_ref(), owned.iter().copied(), &mut ctx));
                actions.extend(revisions);
                actions.extend(plan_adoption(d, &owned, &sets, &mut adoptions));
            }
            None => gone = true,
        }
    }
    // A Deployment deleted: its revisions go with it — first in the pass's writes, so a new
    // Deployment's ReplicaSet of the same name is made in the same pass.
    if gone {
        let alive = view.deployments().into_iter().filter_map(|d| d.metadata.uid).collect();
        let orphaned = plan_orphan_revisions(&all_replica_sets(objects.store()), &alive);
        actions.splice(0..0, orphaned);
    }
    let orphans: Vec<Pod> = view.without_owner(&work.pods).cloned().collect();
    if !orphans.is_empty() {
        actions.extend(plan_orphans(&view.deployments(), &orphans));
    }
    let unbound = view.unbound_pods();
    let placing = actions.iter().filter_map(|a| match a {
        Action::CreatePod(pod) => pod.owner_uid(),
        _ => None,
    });
    let spread = view.spread(placing.chain(unbound.iter().filter_map(Pod::owner_uid)));
    plan_placement(&nodes, view.usage(), spread, &unbound, &mut actions, &mut ctx);
    let (events, mut actions): (Vec<Action>, Vec<Action>) =
        actions.into_iter().partition(|a| matches!(a, Action::RecordEvent(_)));
    let events = events.into_iter().filter_map(|a| match a {
        Action::RecordEvent(e) => Some(*e),
        _ => None,
    });
    actions
        .extend(recorder.admit(events.collect(), now).into_iter().map(|e| Action::RecordEvent(Box::new(e))));
    // A leader deposed while it planned must not act on its plan (its writes would still be
    // forwarded to the new leader, next to the new leader's own).
    if *cluster.leader().borrow() != leading || !leading.is_leader {
        return Err("leadership changed during the pass; not acting on its plan".into());
    }
    let (count, planned) = (actions.len(), now.elapsed());
    // The pods asked for are counted as on their way until they show up stored: a create
    // whose outcome is unknown (a timed-out proposal that may still commit) is not made
    // again by the next pass (Kubernetes' expectations; kube-scheduler's assumed pods).
    let until = std::time::Instant::now() + ASSUME_FOR;
    let (mut writes, mut creates) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for action in actions {
        let made = match action {
            Action::CreatePod(pod) => Write::create(&*pod).map(|w| {
                let key = format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name
                );
                let owner = pod.owner_uid().map(str::to_string);
                view.assume(*pod, until);
                (w, Some((key, owner)))
            }),
            other => write_of(other).map(|w| (w, None)),
        };
        match made {
            Ok((write, created)) => {
                writes.push(write);
                creates.push(created);
            }
            Err(e) => tracing::error!("a planned write is invalid, skipped: {e}"),
        }
    }
    let results = objects.write_many(writes).await;
    if count > 0 {
        tracing::debug!(actions = count, planned = ?planned, total = ?now.elapsed(), "reconcile pass");
    }
    // A create that failed is no longer counted (its owner is the next pass's work); one whose
    // outcome is unknown stays counted until it shows up or `ASSUME_FOR` passes.
    let (mut more, mut failure, mut over_quota) = (Dirty::default(), None, None);
    for (result, created) in results.into_iter().zip(creates) {
        match result {
            Ok(_) => {}
            Err(e @ WriteError::QuotaExceeded { .. }) => {
                // No longer counted, but not queued again either: the store takes such
                // writes once objects are deleted, and the resync tries then.
                if let Some((key, _)) = created {
                    view.forget(&key);
                }
                over_quota = Some(e);
            }
            Err(WriteError::Propose(ProposeError::Timeout(t))) => {
                failure = Some(format!("a write's outcome is unknown after {t:?}"));
            }
            Err(e) => {
                // The owner is queued again, even when the pod was not assumed (its name was
                // taken: the create fails, and the replica is still missing).
                if let Some((key, owner)) = created {
                    more.merge(view.forget(&key));
                    if let Some(owner) = owner {
                        view.owner_dirty(&owner, &mut more);
                    }
                }
                match e {
                    // Someone changed the object since it was read: its change queues it again.
                    WriteError::Propose(ProposeError::Rejected(e)) => tracing::debug!("action skipped: {e}"),
                    e => failure = Some(e.to_string()),
                }
            }
        }
    }
    if let Some(e) = over_quota {
        // Not retried at once: the store takes such writes again once objects are deleted.
        tracing::warn!("some of the pass's writes were refused: {e}");
    }
    match failure {
        // The pass is retried whole, with the owners of the creates that failed.
        Some(e) => {
            pending.merge(more);
            Err(e)
        }
        None => Ok(more),
    }
}

/// Every ReplicaSet (read from the store: they are few, and only the controllers write them).
fn all_replica_sets(store: &wasmkube_store::ObjectStore) -> Vec<ReplicaSet> {
    match store.list("ReplicaSet", None) {
        Ok((items, _)) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
        Err(e) => {
            tracing::warn!("reading ReplicaSets: {e}");
            Vec::new()
        }
    }
}

/// The ReplicaSets `d` owns.
fn replica_sets_of(store: &wasmkube_store::ObjectStore, d: &Deployment) -> Vec<ReplicaSet> {
    let Ok((items, _)) = store.list("ReplicaSet", d.metadata.namespace.as_deref()) else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value::<ReplicaSet>(v).ok())
        .filter(|rs| rs.metadata.owner_references.iter().any(|o| Some(&o.uid) == d.metadata.uid.as_ref()))
        .collect()
}

/// How long a pod asked for and not yet seen stored is counted as on its way.
const ASSUME_FOR: Duration = Duration::from_secs(30);

async fn sweep_events(objects: &Objects) {
    let events: Vec<Event> = match objects.store().list("Event", None) {
        Ok((items, _)) => items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect(),
        Err(e) => {
            tracing::warn!("event sweep skipped: {e}");
            return;
        }
    };
    for action in plan_event_gc(&events, SystemTime::now(), EVENT_TTL) {
        let result = match write_of(action) {
            Ok(write) => objects.write(write).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!("event not expired: {e}");
        }
    }
}

/// The write that carries out `action` (each one checked as a client's would be).
fn write_of(action: Action) -> Result<Write, WriteError> {
    Ok(match action {
        Action::CreatePod(pod) => Write::create(&*pod)?,
        Action::DeletePod { namespace, name, resource_version } => {
            Write::delete(Pod::KIND, Some(&namespace), &name, Some(resource_version))
        }
        Action::AdoptPod(pod) => Write::update(&*pod)?,
        Action::BindPod { mut pod, node } => {
            pod.spec.node_name = Some(node);
            Write::update(&*pod)?
        }
        Action::UpdateDeploymentStatus { namespace, name, status } => {
            Write::update_status::<Deployment, _>(Some(&namespace), &name, &status, None)
        }
        Action::UpdateDeployment(d) => Write::update(&*d)?,
        Action::CreateReplicaSet(rs) => Write::create(&*rs)?,
        Action::UpdateReplicaSet(rs) => Write::update(&*rs)?,
        Action::UpdateReplicaSetStatus { namespace, name, status } => {
            Write::update_status::<ReplicaSet, _>(Some(&namespace), &name, &status, None)
        }
        Action::DeleteReplicaSet { namespace, name, resource_version } => {
            Write::delete(ReplicaSet::KIND, Some(&namespace), &name, Some(resource_version))
        }
        Action::UpdateNodeStatus { name, status, resource_version } => {
            Write::update_status::<Node, _>(None, &name, &*status, Some(resource_version))
        }
        Action::RecordEvent(event) => Write::record_event(&event)?,
        Action::DeleteEvent { namespace, name } => Write::delete(Event::KIND, Some(&namespace), &name, None),
    })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
