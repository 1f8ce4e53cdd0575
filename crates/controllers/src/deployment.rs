//! The deployment controller's decisions: how many pods of which template to create or
//! delete, rolling old templates out within maxSurge/maxUnavailable, and the status to report.

use rand::Rng;
use wasmkube_api::{
    Condition, DEPLOYMENT_LABEL, Deployment, DeploymentStatus, ObjectMeta, ObjectReference, OwnerReference,
    PREFERRED_NODE_ANNOTATION, Pod, TEMPLATE_HASH_LABEL, WOKEN_ON,
};

use crate::actions::{Action, PlanContext, event_for};

const SOURCE: &str = "deployment-controller";

/// Most pods one pass creates or deletes for one Deployment (Kubernetes' `burstReplicas`):
/// the work of a pass, and the memory of its plan, stay bounded however many replicas are
/// asked for; the next pass (woken by these writes) does the next share.
pub const BURST_REPLICAS: usize = 1000;

/// A stable short hash of the pod template (FNV-1a over its canonical JSON): pods carry it, so
/// a template change is seen as a new revision to roll out.
pub fn template_hash(d: &Deployment) -> String {
    let json = serde_json::to_vec(&d.spec.template).unwrap_or_default();
    let hash =
        json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

fn owned_by<'a>(d: &Deployment, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<&'a Pod> {
    let uid = d.metadata.uid.as_deref();
    pods.into_iter()
        .filter(|p| {
            p.metadata.namespace == d.metadata.namespace
                && p.metadata
                    .owner_references
                    .iter()
                    .any(|o| o.kind == "Deployment" && Some(o.uid.as_str()) == uid)
        })
        .collect()
}

/// Plans one Deployment against the pods that exist (borrowed: a Deployment of 10,000
/// replicas is planned without copying them).
/// `hash` is the pod-template-hash of its template (`revisions::current_hash`), `revision`
/// the ReplicaSet that keeps it (`revisions::revision_owner`): the controller of the pods
/// it creates.
pub fn plan_deployment<'a, R: Rng>(
    d: &Deployment,
    hash: &str,
    revision: Option<&OwnerReference>,
    pods: impl IntoIterator<Item = &'a Pod>,
    ctx: &mut PlanContext<R>,
) -> Vec<Action> {
    let hash = hash.to_string();
    // A pod that ended (its node refused it, as the kubelet's OutOfmemory) is not a replica:
    // it is deleted and replaced, as a ReplicaSet counts only active pods.
    let (ended, owned): (Vec<&Pod>, Vec<&Pod>) = owned_by(d, pods).into_iter().partition(|p| p.is_terminal());
    let (current, old): (Vec<&Pod>, Vec<&Pod>) =
        owned.iter().partition(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash));
    let want = d.spec.replicas as usize;
    let (max_surge, max_unavailable) = rollout_bounds(d);
    let mut actions: Vec<Action> = ended.iter().take(BURST_REPLICAS).map(|p| delete(p)).collect();

    // Grow the current template, within the surge budget while old pods remain.
    let allowed = (want + max_surge).saturating_sub(owned.len());
    let to_create = want.saturating_sub(current.len()).min(allowed).min(BURST_REPLICAS);
    for i in 0..to_create {
        let mut pod = new_pod(d, &hash, revision, ctx);
        // Woken from zero by a request: its first pod goes where that request waits — unless
        // a pod of it ended there (that node refused it: the replacement goes elsewhere).
        if i == 0
            && owned.is_empty()
            && let Some(node) = d.metadata.annotations.get(WOKEN_ON)
            && !ended.iter().any(|p| p.spec.node_name.as_ref() == Some(node))
        {
            pod.metadata.annotations.insert(PREFERRED_NODE_ANNOTATION.into(), node.clone());
        }
        actions.push(Action::CreatePod(Box::new(pod)));
    }

    // Retire old-template pods: unready ones at once, ready ones while enough stay available.
    let ready = owned.iter().filter(|p| p.is_ready()).count();
    let mut removable_ready = ready.saturating_sub(want.saturating_sub(max_unavailable));
    let old_left = old.len();
    for p in sorted_for_deletion(old).into_iter().take(BURST_REPLICAS) {
        if !p.is_ready() {
            actions.push(delete(p));
        } else if removable_ready > 0 {
            removable_ready -= 1;
            actions.push(delete(p));
        }
    }

    // Shrink the current template to the wanted count, unready and newest first.
    let excess = current.len().saturating_sub(want).min(BURST_REPLICAS);
    let deleting: Vec<Action> = first_for_deletion(current.clone(), excess).into_iter().map(delete).collect();
    actions.extend(deleting);

    if to_create > 0 || excess > 0 {
        let verb = if to_create > 0 { "up" } else { "down" };
        let involved = reference(d);
        let msg = format!("Scaled {verb} pods of {} to {want} (template {hash})", d.metadata.name);
        actions.push(Action::RecordEvent(Box::new(event_for(
            ctx,
            involved,
            "Normal",
            "ScalingReplicaSet",
            msg,
            SOURCE,
        ))));
    }

    // The status counts stored pods only, not the ones still on their way (assumed by the
    // view, without a resourceVersion yet).
    let stored = |pods: &[&Pod]| pods.iter().filter(|p| p.metadata.resource_version.is_some()).count() as u32;
    let updated = stored(&current);
    let current_ready = current.iter().filter(|p| p.is_ready()).count() as u32;
    let previous = d.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let rs_name = format!("{}-{hash}", d.metadata.name);
    // As the deployment controller words them (kubectl's `rollout status` reads them). The
    // progress is in the message, so its update time is when the rollout last moved on.
    let done = old_left == 0 && updated == want as u32 && current_ready == want as u32;
    let progress = format!("{current_ready} of {want} new pods available");
    let before = previous.iter().find(|c| c.type_ == "Progressing");
    let deadline = u64::from(d.spec.progress_deadline_seconds.unwrap_or(DEFAULT_PROGRESS_DEADLINE));
    let stalled = before.is_some_and(|c| {
        let same = c.message.as_deref().is_some_and(|m| m.ends_with(&format!("{progress}.")));
        let timed_out = c.reason.as_deref() == Some("ProgressDeadlineExceeded");
        same && (timed_out || older_than(c.last_update_time.as_deref(), &ctx.now, deadline))
    });
    let (progressing_ok, progressing) = if done {
        (true, ("NewReplicaSetAvailable", format!("ReplicaSet {rs_name:?} has successfully progressed.")))
    } else if d.spec.paused {
        (true, ("DeploymentPaused", "Deployment is paused.".to_string()))
    } else if stalled {
        (
            false,
            (
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {rs_name:?} has timed out progressing: {progress}."),
            ),
        )
    } else {
        (true, ("ReplicaSetUpdated", format!("ReplicaSet {rs_name:?} is progressing: {progress}.")))
    };
    let available = ready >= want.saturating_sub(max_unavailable);
    let availability = if available {
        ("MinimumReplicasAvailable", "Deployment has minimum availability.")
    } else {
        ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    };
    let conditions = vec![
        condition(previous, "Available", available, availability.0, availability.1.into(), &ctx.now),
        condition(previous, "Progressing", progressing_ok, progressing.0, progressing.1, &ctx.now),
    ];
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation.unwrap_or(0),
        replicas: stored(&owned),
        updated_replicas: updated,
        ready_replicas: ready as u32,
        available_replicas: ready as u32,
        unavailable_replicas: (want as u32).saturating_sub(ready as u32),
        conditions,
    };
    if d.status.as_ref() != Some(&status) {
        actions.push(Action::UpdateDeploymentStatus {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            name: d.metadata.name.clone(),
            status,
        });
    }
    actions
}

/// Kubernetes' default progress deadline, in seconds.
pub const DEFAULT_PROGRESS_DEADLINE: u32 = 600;

/// Whether RFC 3339 time `then` is more than `seconds` before `now` (never, unreadable).
fn older_than(then: Option<&str>, now: &str, seconds: u64) -> bool {
    let (Some(then), Ok(now)) =
        (then.and_then(|t| humantime::parse_rfc3339(t).ok()), humantime::parse_rfc3339(now))
    else {
        return false;
    };
    now.duration_since(then).is_ok_and(|d| d.as_secs() > seconds)
}

/// A condition, keeping its times while it says the same: the transition time while its
/// status holds, the update time while its reason and message do too.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: &str,
) -> Condition {
    let mut c = Condition::new(type_, ok);
    c.reason = Some(reason.into());
    c.message = Some(message);
    let before = previous.iter().find(|p| p.type_ == type_);
    let held = before.filter(|p| p.status == c.status);
    c.last_transition_time =
        held.and_then(|p| p.last_transition_time.clone()).or_else(|| Some(now.to_string()));
    let same = held.filter(|p| p.reason == c.reason && p.message == c.message);
    c.last_update_time = same.and_then(|p| p.last_update_time.clone()).or_else(|| Some(now.to_string()));
    c
}

/// Pods owned by a Deployment that no longer exists are deleted (garbage collection), a
/// burst per pass.
pub fn plan_orphans(deployments: &[Deployment], pods: &[Pod]) -> Vec<Action> {
    pods.iter()
        .filter(|p| {
            let owners: Vec<&OwnerReference> =
                p.metadata.owner_references.iter().filter(|o| o.kind == "Deployment").collect();
            !owners.is_empty()
                && !owners
                    .iter()
                    .any(|o| deployments.iter().any(|d| d.metadata.uid.as_deref() == Some(o.uid.as_str())))
        })
        .take(BURST_REPLICAS)
        .map(delete)
        .collect()
}

/// maxSurge and maxUnavailable, defaulting to Kubernetes' 25% (surge rounded up, at least 1).
fn rollout_bounds(d: &Deployment) -> (usize, usize) {
    let replicas = d.spec.replicas as usize;
    let ru = d.spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let surge = ru.and_then(|r| r.max_surge).map_or(replicas.div_ceil(4).max(1), |s| s as usize);
    let unavailable = ru.and_then(|r| r.max_unavailable).map_or(replicas / 4, |u| u as usize);
    (surge, unavailable)
}

/// Unready first, then newest first (names break ties deterministically).
fn deletion_order(a: &&Pod, b: &&Pod) -> std::cmp::Ordering {
    a.is_ready()
        .cmp(&b.is_ready())
        .then_with(|| b.metadata.creation_timestamp.cmp(&a.metadata.creation_timestamp))
        .then_with(|| b.metadata.name.cmp(&a.metadata.name))
}

fn sorted_for_deletion(mut pods: Vec<&Pod>) -> Vec<&Pod> {
    pods.sort_by(deletion_order);
    pods
}

/// The first `n` of `pods` in deletion order, without sorting them all (a Deployment of
/// 10,000 replicas that is not shrinking costs nothing here).
fn first_for_deletion(mut pods: Vec<&Pod>, n: usize) -> Vec<&Pod> {
    if n == 0 {
        return Vec::new();
    }
    if n < pods.len() {
        pods.select_nth_unstable_by(n - 1, deletion_order);
        pods.truncate(n);
    }
    pods.sort_by(deletion_order);
    pods
}

fn delete(p: &Pod) -> Action {
    Action::DeletePod {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone(),
        resource_version: p.metadata.revision().unwrap_or(0),
    }
}

/// The owner references of a pod of `d`: its ReplicaSet as controller (when known), and `d`.
pub(crate) fn pod_owners(d: &Deployment, revision: Option<&OwnerReference>) -> Vec<OwnerReference> {
    match revision {
        Some(rs) => vec![rs.clone(), OwnerReference { controller: Some(false), ..owned_by_deployment(d) }],
        None => vec![owned_by_deployment(d)],
    }
}

/// `d` as the controlling owner of what it makes (its pods, its ReplicaSets).
pub(crate) fn owned_by_deployment(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
    }
}

fn reference(d: &Deployment) -> ObjectReference {
    ObjectReference {
        kind: "Deployment".into(),
        namespace: d.metadata.namespace.clone(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
    }
}

/// A pod of `d`'s template `hash`, controlled by its ReplicaSet (`revision`) as Kubernetes'
/// are; it names its Deployment too (not as controller), by which the control plane finds
/// a Deployment's pods, spreads them and reads their metrics across revisions.
fn new_pod<R: Rng>(
    d: &Deployment,
    hash: &str,
    revision: Option<&OwnerReference>,
    ctx: &mut PlanContext<R>,
) -> Pod {
    let template = &d.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.to_string());
    labels.insert(DEPLOYMENT_LABEL.into(), d.metadata.name.clone());
    let name = format!("{}-{}-{}", d.metadata.name, hash.get(..8).unwrap_or(hash), ctx.suffix(5));
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: ObjectMeta {
            uid: Some(ctx.uid()),
            labels,
            annotations: template.metadata.annotations.clone(),
            creation_timestamp: Some(ctx.now.clone()),
            owner_references: pod_owners(d, revision),
            ..ObjectMeta::named(d.metadata.namespace.as_deref(), &name)
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use wasmkube_api::{Condition, Container, LabelSelector, PodSpec, PodStatus, PodTemplateSpec};

    fn ctx() -> PlanContext<StdRng> {
        PlanContext { now: "2026-01-01T00:00:00Z".into(), rng: StdRng::seed_from_u64(7) }
    }

    pub(crate) fn deployment(replicas: u32, image_char: char) -> Deployment {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_string(), "hello".to_string())].into();
        Deployment {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            metadata: ObjectMeta {
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..ObjectMeta::named(Some("default"), "hello")
            },
            spec: wasmkube_api::DeploymentSpec {
                replicas,
                selector: LabelSelector { match_labels: labels.clone() },
                template: PodTemplateSpec {
                    metadata: ObjectMeta { labels, ..Default::default() },
                    spec: PodSpec {
                        containers: vec![Container {
                            name: "app".into(),
                            image: format!("sha256:{}", image_char.to_string().repeat(64)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                },
                strategy: None,
                ..Default::default()
            },
            status: None,
        }
    }

    fn existing(d: &Deployment, ready: bool, rv: &str, ctx: &mut PlanContext<StdRng>) -> Pod {
        let mut p = new_pod(d, &template_hash(d), None, ctx);
        p.metadata.resource_version = Some(rv.into());
        p.status = Some(PodStatus { conditions: vec![Condition::new("Ready", ready)], ..Default::default() });
        p
    }

    fn count(actions: &[Action]) -> (usize, usize) {
        let creates = actions.iter().filter(|a| matches!(a, Action::CreatePod(_))).count();
        let deletes = actions.iter().filter(|a| matches!(a, Action::DeletePod { .. })).count();
        (creates, deletes)
    }

    #[test]
    fn creates_missing_replicas_owned_and_labelled() {
        let d = deployment(5, 'a');
        let actions = plan_deployment(&d, &template_hash(&d), None, &[], &mut ctx());
        assert_eq!(count(&actions), (5, 0));
        let Some(Action::CreatePod(p)) = actions.first() else { panic!("first action creates a pod") };
        assert_eq!(p.metadata.owner_references[0].uid, "d-uid");
        assert_eq!(p.metadata.labels.get("app").map(String::as_str), Some("hello"));
        assert_eq!(p.metadata.labels.get(TEMPLATE_HASH_LABEL), Some(&template_hash(&d)));
        assert!(
            actions.iter().any(|a| matches!(a, Action::RecordEvent(e) if e.reason == "ScalingReplicaSet"))
        );
    }

    #[test]
    fn pods_are_controlled_by_their_replica_set_and_name_their_deployment() {
        let d = deployment(2, 'a');
        let rs = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "hello-abc".into(),
            uid: "rs-uid".into(),
            controller: Some(true),
        };
        let actions = plan_deployment(&d, &template_hash(&d), Some(&rs), &[], &mut ctx());
        let Some(Action::CreatePod(p)) = actions.first() else { panic!("first action creates a pod") };
        let controller: Vec<&str> = p
            .metadata
            .owner_references
            .iter()
            .filter(|o| o.controller == Some(true))
            .map(|o| o.kind.as_str())
            .collect();
        assert_eq!(controller, ["ReplicaSet"], "one controller, its ReplicaSet");
        assert_eq!(p.owner_uid(), Some("d-uid"), "and its Deployment, found across revisions");
        assert_eq!(owned_by(&d, [p.as_ref()]).len(), 1);
    }

    #[test]
    fn the_first_pod_after_a_wake_from_zero_prefers_the_node_that_woke_it() {
        let mut d = deployment(3, 'a');
        d.metadata.annotations.insert(WOKEN_ON.into(), "b".into());
        let mut c = ctx();
        let preferred = |actions: &[Action]| -> Vec<Option<String>> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::CreatePod(p) => {
                        Some(p.metadata.annotations.get(PREFERRED_NODE_ANNOTATION).cloned())
                    }
                    _ => None,
                })
                .collect()
        };
        let actions = plan_deployment(&d, &template_hash(&d), None, &[], &mut c);
        assert_eq!(
            preferred(&actions),
            [Some("b".to_string()), None, None],
            "only the first, the rest spread"
        );
        // A pod of it that ended on that node (refused there): its replacement goes anywhere.
        let mut refused = existing(&d, false, "1", &mut c);
        refused.spec.node_name = Some("b".into());
        refused.status = Some(PodStatus { phase: Some("Failed".into()), ..Default::default() });
        let actions = plan_deployment(&d, &template_hash(&d), None, [&refused], &mut c);
        assert_eq!(preferred(&actions), [None, None, None]);
        // With a pod running, the annotation left on the Deployment prefers nothing.
        let running = existing(&d, true, "1", &mut c);
        let actions = plan_deployment(&d, &template_hash(&d), None, [&running], &mut c);
        assert_eq!(preferred(&actions), [None, None]);
    }

    #[test]
    fn one_pass_creates_or_deletes_at_most_a_burst() {
        let mut c = ctx();
        let huge = deployment(wasmkube_api::MAX_REPLICAS, 'a');
        assert_eq!(
            count(&plan_deployment(&huge, &template_hash(&huge), None, &[], &mut c)),
            (BURST_REPLICAS, 0)
        );
        let big = deployment(2 * BURST_REPLICAS as u32, 'a');
        let pods: Vec<Pod> =
            (0..2 * BURST_REPLICAS).map(|i| existing(&big, true, &i.to_string(), &mut c)).collect();
        assert_eq!(
            count(&plan_deployment(
                &deployment(0, 'a'),
                &template_hash(&deployment(0, 'a')),
                None,
                &pods,
                &mut c
            )),
            (0, BURST_REPLICAS)
        );
    }

    #[test]
    fn pods_on_their_way_are_not_created_again_nor_reported_as_replicas() {
        let d = deployment(3, 'a');
        let mut c = ctx();
        let stored = existing(&d, true, "5", &mut c);
        let mut on_the_way = new_pod(&d, &template_hash(&d), None, &mut c);
        on_the_way.metadata.resource_version = None;
        let actions = plan_deployment(&d, &template_hash(&d), None, [&stored, &on_the_way], &mut c);
        assert_eq!(count(&actions), (1, 0), "only the third replica is created");
        let status = actions.iter().find_map(|a| match a {
            Action::UpdateDeploymentStatus { status, .. } => Some(status.clone()),
            _ => None,
        });
        assert_eq!(
            status.map(|s| (s.replicas, s.ready_replicas)),
            Some((1, 1)),
            "the status counts stored pods"
        );
    }

    #[test]
    fn a_pod_its_node_refused_is_deleted_and_replaced() {
        let d = deployment(2, 'a');
        let mut c = ctx();
        let running = existing(&d, true, "4", &mut c);
        let mut refused = existing(&d, false, "5", &mut c);
        refused.status = Some(PodStatus {
            phase: Some("Failed".into()),
            reason: Some("OutOfmemory".into()),
            ..Default::default()
        });
        let actions = plan_deployment(&d, &template_hash(&d), None, [&running, &refused], &mut c);
        assert_eq!(count(&actions), (1, 1), "{actions:?}");
        let deleted = actions.iter().find_map(|a| match a {
            Action::DeletePod { name, .. } => Some(name.clone()),
            _ => None,
        });
        assert_eq!(deleted.as_deref(), Some(refused.metadata.name.as_str()));
        let status = actions.iter().find_map(|a| match a {
            Action::UpdateDeploymentStatus { status, .. } => Some(status.replicas),
            _ => None,
        });
        assert_eq!(status, Some(1), "a pod that ended is not a replica");
    }

    #[test]
    fn the_first_to_delete_are_the_full_orders_first() {
        let d = deployment(0, 'a');
        let mut c = ctx();
        let pods: Vec<Pod> = (0..200)
            .map(|i| {
                let mut p = existing(&d, i % 3 != 0, &i.to_string(), &mut c);
                p.metadata.creation_timestamp = Some(format!("2026-01-01T00:00:{:02}Z", i % 7));
                p
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let full = sorted_for_deletion(refs.clone());
        for n in [0, 1, 17, 67, 199, 200, 500] {
            let first = first_for_deletion(refs.clone(), n);
            let want: Vec<&str> = full.iter().take(n).map(|p| p.metadata.name.as_str()).collect();
            assert_eq!(first.iter().map(|p| p.metadata.name.as_str()).collect::<Vec<_>>(), want, "n = {n}");
        }
    }

    #[test]
    fn scales_down_unready_first_and_is_idle_when_converged() {
        let d = deployment(2, 'a');
        let mut c = ctx();
        let pods = vec![
            existing(&d, true, "1", &mut c),
            existing(&d, false, "2", &mut c),
            existing(&d, true, "3", &mut c),
        ];
        let actions = plan_deployment(&d, &template_hash(&d), None, &pods, &mut c);
        assert_eq!(count(&actions), (0, 1));
        assert!(actions.iter().any(|a| matches!(a, Action::DeletePod { resource_version: 2, .. })));

        let mut settled = d.clone();
        let two = &pods[..1].iter().chain(&pods[2..]).cloned().collect::<Vec<_>>();
        // The status a pass over the two reports, conditions and all, once written...
        let reported = plan_deployment(&settled, &template_hash(&settled), None, two, &mut c)
            .into_iter()
            .find_map(|a| match a {
                Action::UpdateDeploymentStatus { status, .. } => Some(status),
                _ => None,
            });
        let reported: DeploymentStatus = reported.expect("a status");
        assert_eq!((reported.replicas, reported.updated_replicas, reported.available_replicas), (2, 2, 2));
        let progressing = reported.conditions.iter().find(|c| c.type_ == "Progressing");
        assert_eq!(progressing.and_then(|c| c.reason.as_deref()), Some("NewReplicaSetAvailable"));
        settled.status = Some(reported);
        assert!(
            plan_deployment(&settled, &template_hash(&settled), None, two, &mut c).is_empty(),
            "a converged deployment needs nothing"
        );
    }

    #[test]
    fn a_rollout_that_does_not_move_for_its_deadline_has_failed() {
        let mut d = deployment(2, 'a');
        d.spec.progress_deadline_seconds = Some(30);
        let hash = template_hash(&d);
        let mut c = ctx();
        let pods = [existing(&d, false, "1", &mut c), existing(&d, false, "2", &mut c)];
        let progressing = |d: &Deployment, pods: &[Pod], c: &mut PlanContext<StdRng>| {
            let status =
                plan_deployment(d, &template_hash(d), None, pods, c).into_iter().find_map(|a| match a {
                    Action::UpdateDeploymentStatus { status, .. } => Some(status),
                    _ => None,
                });
            status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Progressing"))
        };
        // Since a minute ago at 0 of 2 (the context's clock is 2026-01-01T00:00:00Z).
        let mut stuck = Condition::new("Progressing", true);
        stuck.reason = Some("ReplicaSetUpdated".into());
        stuck.message =
            Some(format!("ReplicaSet \"hello-{hash}\" is progressing: 0 of 2 new pods available."));
        stuck.last_update_time = Some("2025-12-31T23:59:00Z".into());
        d.status = Some(DeploymentStatus { conditions: vec![stuck.clone()], ..Default::default() });
        let failed = progressing(&d, &pods, &mut c).expect("a Progressing condition");
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        // Within its deadline, or having moved on since, it is still progressing.
        stuck.last_update_time = Some("2025-12-31T23:59:45Z".into());
        d.status = Some(DeploymentStatus { conditions: vec![stuck], ..Default::default() });
        let fine = progressing(&d, &pods, &mut c).expect("a Progressing condition");
        assert_eq!(fine.reason.as_deref(), Some("ReplicaSetUpdated"));
        let moved = [existing(&d, true, "1", &mut c), existing(&d, false, "2", &mut c)];
        if let Some(s) = d.status.as_mut() {
            s.conditions[0].last_update_time = Some("2025-12-31T23:00:00Z".into());
        }
        let moved_on = progressing(&d, &moved, &mut c).expect("a Progressing condition");
        assert_eq!(moved_on.reason.as_deref(), Some("ReplicaSetUpdated"), "1 of 2 now: progress");
    }

    #[test]
    fn template_change_rolls_within_surge_and_availability() {
        let old = deployment(4, 'a');
        let mut c = ctx();
        let pods: Vec<Pod> = (0..4).map(|i| existing(&old, true, &i.to_string(), &mut c)).collect();
        let new = deployment(4, 'b');
        assert_ne!(template_hash(&old), template_hash(&new));
        // maxSurge 1, maxUnavailable 1: one new pod, one old pod retired.
        assert_eq!(count(&plan_deployment(&new, &template_hash(&new), None, &pods, &mut c)), (1, 1));
    }

    #[test]
    fn orphans_are_collected() {
        let d = deployment(1, 'a');
        let mut c = ctx();
        let pod = existing(&d, true, "4", &mut c);
        assert!(plan_orphans(std::slice::from_ref(&d), std::slice::from_ref(&pod)).is_empty());
        assert_eq!(plan_orphans(&[], &[pod]).len(), 1);
    }
}
