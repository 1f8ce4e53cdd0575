//! A Deployment's revisions, kept as ReplicaSets as Kubernetes keeps them: one per pod
//! template the Deployment has run, named `<deployment>-<pod-template-hash>`, owned by it
//! (by uid), numbered by `deployment.kubernetes.io/revision`. The newest template gets the
//! next number; going back to an older template (`rollout undo`) renumbers its ReplicaSet
//! as the newest, so its pods keep their hash and nothing restarts needlessly. Each
//! ReplicaSet shows how many of the Deployment's pods run its template; old ones left with
//! none are kept up to `revisionHistoryLimit` (10) for undo, the rest deleted.
//!
//! Which ReplicaSet runs the Deployment's template is decided by comparing the templates
//! as this software reads them, not by hashing their serialized form: a new field that a
//! later version defaults into every template changes both sides alike, so an upgrade does
//! not make every Deployment a new revision (and restart every pod).

use rand::Rng;
use wasmkube_api::{
    Deployment, LabelSelector, ObjectMeta, OwnerReference, Pod, REVISION_ANNOTATION, ReplicaSet,
    ReplicaSetSpec, ReplicaSetStatus, TEMPLATE_HASH_LABEL,
};

use crate::actions::{Action, PlanContext};
use crate::deployment::{owned_by_deployment, template_hash};

/// Old revisions kept when the Deployment does not say.
pub const REVISION_HISTORY: u32 = 10;

/// The pod-template-hash of `d`'s template: its ReplicaSet's, else a new one.
pub fn current_hash(d: &Deployment, sets: &[ReplicaSet]) -> String {
    sets.iter()
        .find(|rs| rs.runs(&d.spec.template))
        .and_then(|rs| rs.template_hash())
        .map(str::to_string)
        .unwrap_or_else(|| template_hash(d))
}

/// Pods whose stored ReplicaSet (by their hash) is not their controller — made by a version
/// before pods had one, or named a ReplicaSet whose create lost a race — adopted by it, as
/// Kubernetes' ReplicaSet controller adopts the pods its selector matches; at most
/// `budget` (what is left of the pass's share, taken down by what is planned here). Only
/// bound, live, stored pods (a pod being placed or deleted is written by that first). Owner
/// references of other kinds are kept.
pub fn plan_adoption(d: &Deployment, owned: &[&Pod], sets: &[ReplicaSet], budget: &mut usize) -> Vec<Action> {
    if *budget == 0 {
        return Vec::new();
    }
    let owners: std::collections::HashMap<&str, OwnerReference> = sets
        .iter()
        .filter_map(|rs| {
            let hash = rs.template_hash()?;
            Some((hash, revision_owner(hash, std::slice::from_ref(rs), &[])?))
        })
        .collect();
    let adoptions: Vec<Action> = owned
        .iter()
        .filter(|p| p.metadata.resource_version.is_some() && p.spec.node_name.is_some() && !p.is_terminal())
        .filter_map(|p| {
            let owner = owners.get(p.metadata.labels.get(TEMPLATE_HASH_LABEL)?.as_str())?;
            let controller = p.metadata.owner_references.iter().find(|o| o.controller == Some(true));
            if controller.is_some_and(|c| c.kind == owner.kind && c.uid == owner.uid) {
                return None;
            }
            let others = p.metadata.owner_references.iter().filter(|o| {
                o.controller != Some(true)
                    && !(o.kind == "Deployment" && d.metadata.uid.as_deref() == Some(&o.uid))
            });
            let mut refs = crate::deployment::pod_owners(d, Some(owner));
            refs.extend(others.cloned());
            let mut adopted = (*p).clone();
            adopted.metadata.owner_references = refs;
            Some(Action::AdoptPod(Box::new(adopted)))
        })
        .take(*budget)
        .collect();
    *budget -= adoptions.len();
    adoptions
}

/// The ReplicaSet that keeps template `hash`, as the owner of its pods: stored (`sets`) or
/// about to be (`planned`, from `plan_revisions`).
pub fn revision_owner(hash: &str, sets: &[ReplicaSet], planned: &[Action]) -> Option<OwnerReference> {
    let new = planned.iter().filter_map(|a| match a {
        Action::CreateReplicaSet(rs) => Some(rs.as_ref()),
        _ => None,
    });
    let rs = sets.iter().chain(new).find(|rs| rs.template_hash() == Some(hash))?;
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone()?,
        controller: Some(true),
    })
}

/// The writes that keep `d`'s ReplicaSets (`sets`, those it owns) true to its pods (`owned`,
/// on the way ones included) with `hash` the current template's; and, when `rollback` and
/// its rollout has passed its progress deadline, the Deployment back at the revision
/// before (one whose pods were available: never back to another that failed).
pub fn plan_revisions<R: Rng>(
    d: &Deployment,
    hash: &str,
    owned: &[&Pod],
    sets: &[ReplicaSet],
    rollback: bool,
    ctx: &mut PlanContext<R>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if rollback && !d.spec.paused && deadline_exceeded(d) {
        let before = sets
            .iter()
            .filter(|rs| rs.template_hash() != Some(hash))
            .filter(|rs| rs.status.as_ref().is_some_and(|s| s.available_replicas > 0))
            .max_by_key(|rs| rs.revision());
        if let Some(rs) = before {
            let mut back = d.clone();
            back.spec.template = rs.spec.template.clone();
            back.spec.template.metadata.labels.remove(TEMPLATE_HASH_LABEL);
            let message = format!(
                "Rolled back deployment {:?} to revision {}: the rollout did not progress within {}s",
                d.metadata.name,
                rs.revision(),
                d.spec.progress_deadline_seconds.unwrap_or(crate::deployment::DEFAULT_PROGRESS_DEADLINE)
            );
            let involved = wasmkube_api::ObjectReference {
                kind: "Deployment".into(),
                namespace: d.metadata.namespace.clone(),
                name: d.metadata.name.clone(),
                uid: d.metadata.uid.clone(),
            };
            let event =
                crate::actions::event_for(ctx, involved, "Warning", "DeploymentRollback", message, SOURCE);
            actions.push(Action::UpdateDeployment(Box::new(back)));
            actions.push(Action::RecordEvent(Box::new(event)));
        }
    }
    let newest = sets.iter().map(ReplicaSet::revision).max().unwrap_or(0);
    let counts = |h: &str| {
        let of: Vec<&&Pod> = owned
            .iter()
            .filter(|p| p.metadata.resource_version.is_some())
            .filter(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL).map(String::as_str) == Some(h))
            .collect();
        let ready = of.iter().filter(|p| p.is_ready()).count() as u32;
        ReplicaSetStatus {
            replicas: of.len() as u32,
            ready_replicas: ready,
            available_replicas: ready,
            observed_generation: 1,
        }
    };
    match sets.iter().find(|rs| rs.template_hash() == Some(hash)) {
        None => {
            let mut rs = new_replica_set(d, hash, newest + 1, ctx);
            rs.status = Some(counts(hash));
            actions.push(Action::CreateReplicaSet(Box::new(rs)));
        }
        // An older revision's template is current again: it becomes the newest.
        Some(rs) if rs.revision() < newest => {
            let mut renumbered = rs.clone();
            renumbered.metadata.annotations.insert(REVISION_ANNOTATION.into(), (newest + 1).to_string());
            renumbered.spec.replicas = d.spec.replicas;
            actions.push(Action::UpdateReplicaSet(Box::new(renumbered)));
        }
        Some(_) => {}
    }
    for rs in sets {
        let Some(h) = rs.template_hash() else { continue };
        let status = counts(h);
        let want = if h == hash { d.spec.replicas } else { status.replicas };
        if rs.spec.replicas != want && !(h == hash && rs.revision() < newest) {
            let mut scaled = rs.clone();
            scaled.spec.replicas = want;
            actions.push(Action::UpdateReplicaSet(Box::new(scaled)));
        }
        if rs.status.as_ref() != Some(&status) {
            actions.push(Action::UpdateReplicaSetStatus {
                namespace: rs.metadata.namespace.clone().unwrap_or_default(),
                name: rs.metadata.name.clone(),
                status,
            });
        }
    }
    // History: old revisions without pods beyond the limit go, oldest first.
    let limit = d.spec.revision_history_limit.unwrap_or(REVISION_HISTORY) as usize;
    let mut old: Vec<&ReplicaSet> =
        sets.iter().filter(|rs| rs.template_hash() != Some(hash) && counts_nothing(rs, owned)).collect();
    old.sort_by_key(|rs| std::cmp::Reverse(rs.revision()));
    for rs in old.into_iter().skip(limit) {
        actions.push(Action::DeleteReplicaSet {
            namespace: rs.metadata.namespace.clone().unwrap_or_default(),
            name: rs.metadata.name.clone(),
            resource_version: rs.metadata.revision().unwrap_or(0),
        });
    }
    actions
}

const SOURCE: &str = "deployment-controller";

/// Whether `d`'s status says its rollout passed its progress deadline.
fn deadline_exceeded(d: &Deployment) -> bool {
    let conditions = d.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
}

/// The newest revision's pod template, for a paused Deployment (which keeps running it).
pub fn newest_template(sets: &[ReplicaSet]) -> Option<wasmkube_api::PodTemplateSpec> {
    let newest = sets.iter().max_by_key(|rs| rs.revision())?;
    let mut template = newest.spec.template.clone();
    template.metadata.labels.remove(TEMPLATE_HASH_LABEL);
    Some(template)
}

/// True when no pod of `owned` (stored or on its way) runs `rs`'s template.
fn counts_nothing(rs: &ReplicaSet, owned: &[&Pod]) -> bool {
    let hash = rs.template_hash();
    !owned.iter().any(|p| p.metadata.labels.get(TEMPLATE_HASH_LABEL).map(String::as_str) == hash)
}

fn new_replica_set<R: Rng>(
    d: &Deployment,
    hash: &str,
    revision: u64,
    ctx: &mut PlanContext<R>,
) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template.metadata.labels.insert(TEMPLATE_HASH_LABEL.into(), hash.to_string());
    let mut selector = d.spec.selector.match_labels.clone();
    selector.insert(TEMPLATE_HASH_LABEL.into(), hash.to_string());
    ReplicaSet {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        metadata: ObjectMeta {
            uid: Some(ctx.uid()),
            labels: template.metadata.labels.clone(),
            annotations: [(REVISION_ANNOTATION.to_string(), revision.to_string())].into(),
            creation_timestamp: Some(ctx.now.clone()),
            owner_references: vec![owned_by_deployment(d)],
            ..ObjectMeta::named(d.metadata.namespace.as_deref(), &format!("{}-{hash}", d.metadata.name))
        },
        spec: ReplicaSetSpec {
            replicas: d.spec.replicas,
            selector: LabelSelector { match_labels: selector },
            template,
        },
        status: None,
    }
}

/// ReplicaSets whose owning Deployment is gone (uids of the live ones in `alive`): deleted.
pub fn plan_orphan_revisions(sets: &[ReplicaSet], alive: &std::collections::HashSet<String>) -> Vec<Action> {
    sets.iter()
        .filter(|rs| {
            let owners: Vec<&OwnerReference> =
                rs.metadata.owner_references.iter().filter(|o| o.kind == "Deployment").collect();
            !owners.is_empty() && !owners.iter().any(|o| alive.contains(&o.uid))
        })
        .map(|rs| Action::DeleteReplicaSet {
            namespace: rs.metadata.namespace.clone().unwrap_or_default(),
            name: rs.metadata.name.clone(),
            resource_version: rs.metadata.revision().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use wasmkube_api::{Condition, PodStatus};

    use super::*;

    fn ctx() -> PlanContext<StdRng> {
        PlanContext { now: "2026-01-01T00:00:00Z".into(), rng: StdRng::seed_from_u64(7) }
    }

    fn deployment(image: char) -> Deployment {
        crate::deployment::tests::deployment(2, image)
    }

    fn stored(action: &Action) -> ReplicaSet {
        match action {
            Action::CreateReplicaSet(rs) | Action::UpdateReplicaSet(rs) => {
                let mut rs = (**rs).clone();
                rs.metadata.resource_version = Some("1".into());
                rs
            }
            other => panic!("not a ReplicaSet write: {other:?}"),
        }
    }

    fn pod(hash: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.resource_version = Some("1".into());
        p.metadata.labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
        p.status =
            Some(PodStatus { conditions: vec![Condition::new("Ready", ready)], ..PodStatus::default() });
        p
    }

    #[test]
    fn each_template_gets_the_next_revision_and_going_back_renumbers_the_old_one() {
        let (a, b) = (deployment('a'), deployment('b'));
        let hash_a = current_hash(&a, &[]);
        let first = plan_revisions(&a, &hash_a, &[], &[], true, &mut ctx());
        let rs_a = stored(&first[0]);
        assert_eq!((rs_a.revision(), rs_a.metadata.name.clone()), (1, format!("hello-{hash_a}")));
        assert_eq!(rs_a.metadata.owner_references[0].uid, "d-uid");
        assert!(rs_a.runs(&a.spec.template));
        // Its pods' controller, planned and stored alike.
        let owner = revision_owner(&hash_a, &[], &first).expect("the planned ReplicaSet");
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ReplicaSet", rs_a.metadata.uid.as_deref().unwrap_or(""))
        );
        assert_eq!(revision_owner(&hash_a, std::slice::from_ref(&rs_a), &[]), Some(owner));
        assert_eq!(revision_owner("other", std::slice::from_ref(&rs_a), &first), None);
        // A new template: revision 2; the old one keeps its pods' count.
        let hash_b = current_hash(&b, std::slice::from_ref(&rs_a));
        assert_ne!(hash_a, hash_b);
        let (pa, pb) = (pod(&hash_a, true), pod(&hash_b, false));
        let second = plan_revisions(&b, &hash_b, &[&pa, &pb], std::slice::from_ref(&rs_a), true, &mut ctx());
        let rs_b =
            second.iter().find(|a| matches!(a, Action::CreateReplicaSet(_))).map(stored).expect("created");
        assert_eq!(rs_b.revision(), 2);
        let scaled = second.iter().find_map(|x| match x {
            Action::UpdateReplicaSet(rs) if rs.metadata.name == rs_a.metadata.name => Some(rs.spec.replicas),
            _ => None,
        });
        assert_eq!(scaled, Some(1), "the old revision shows the one pod it still has");
        // Back to a's template (undo): its ReplicaSet, renumbered 3; the hash is a's again.
        let sets = [rs_a.clone(), rs_b];
        assert_eq!(current_hash(&a, &sets), hash_a);
        let third = plan_revisions(&a, &hash_a, &[], &sets, true, &mut ctx());
        let renumbered = third.iter().find(|x| matches!(x, Action::UpdateReplicaSet(_))).map(stored);
        assert_eq!(
            renumbered.map(|rs| (rs.metadata.name.clone(), rs.revision())),
            Some((rs_a.metadata.name, 3))
        );
    }

    #[test]
    fn a_template_read_with_new_defaults_is_still_the_same_revision() {
        // The stored ReplicaSet's template went through JSON; a field this software defaults
        // (here: an empty env list) reads back equal, whatever the serialized form.
        let d = deployment('a');
        let rs = stored(&plan_revisions(&d, &current_hash(&d, &[]), &[], &[], true, &mut ctx())[0]);
        let mut json = serde_json::to_value(&rs).expect("json");
        json["spec"]["template"]["spec"]["containers"][0]["env"] = serde_json::json!([]);
        let reread: ReplicaSet = serde_json::from_value(json).expect("reads");
        assert_eq!(current_hash(&d, &[reread]), current_hash(&d, &[rs]));
    }

    #[test]
    fn pods_their_replica_set_does_not_control_are_adopted_once() {
        let d = deployment('a');
        let hash = current_hash(&d, &[]);
        let rs = stored(&plan_revisions(&d, &hash, &[], &[], true, &mut ctx())[0]);
        let owner = revision_owner(&hash, std::slice::from_ref(&rs), &[]).expect("owner");
        let bound = |refs: Vec<OwnerReference>| {
            let mut p = pod(&hash, true);
            p.spec.node_name = Some("a".into());
            p.metadata.owner_references = refs;
            p
        };
        // Made by an earlier version (its Deployment as controller), one naming a ReplicaSet
        // never stored, one already its ReplicaSet's, and one not placed yet.
        let other = OwnerReference {
            kind: "Other".into(),
            uid: "o".into(),
            controller: Some(false),
            ..owner.clone()
        };
        let legacy = bound(vec![crate::deployment::owned_by_deployment(&d), other.clone()]);
        let mut lost = owner.clone();
        lost.uid = "never-stored".into();
        let dangling = bound(crate::deployment::pod_owners(&d, Some(&lost)));
        let adopted = bound(crate::deployment::pod_owners(&d, Some(&owner)));
        let mut unbound = legacy.clone();
        unbound.spec.node_name = None;
        let pods = [&legacy, &dangling, &adopted, &unbound];
        let mut budget = 10;
        let actions = plan_adoption(&d, &pods, std::slice::from_ref(&rs), &mut budget);
        assert_eq!(budget, 8, "two of the pass's share taken");
        let mut none_left = 0;
        assert!(plan_adoption(&d, &pods, std::slice::from_ref(&rs), &mut none_left).is_empty());
        let adoptions: Vec<&Pod> = actions
            .iter()
            .filter_map(|a| match a {
                Action::AdoptPod(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(adoptions.len(), 2, "the legacy and the dangling pod: {actions:?}");
        let mut expected = crate::deployment::pod_owners(&d, Some(&owner));
        assert_eq!(adoptions[1].metadata.owner_references, expected);
        expected.push(other);
        assert_eq!(adoptions[0].metadata.owner_references, expected, "a reference of another kind is kept");
        assert!(adoptions.iter().all(|p| p.owner_uid() == Some("d-uid")));
    }

    #[test]
    fn old_revisions_beyond_the_limit_are_deleted_and_orphans_too() {
        let mut d = deployment('z');
        d.spec.revision_history_limit = Some(2);
        let sets: Vec<ReplicaSet> = (1..=4u64)
            .map(|r| {
                let mut old = deployment(char::from(b'a' + r as u8));
                old.metadata = d.metadata.clone();
                stored(&plan_revisions(&old, &format!("h{r}"), &[], &[], true, &mut ctx())[0])
            })
            .map(|mut rs| {
                let r = rs.metadata.name.trim_start_matches("hello-h").to_string();
                rs.metadata.annotations.insert(REVISION_ANNOTATION.into(), r);
                rs
            })
            .collect();
        let actions = plan_revisions(&d, "hz", &[], &sets, true, &mut ctx());
        let deleted: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::DeleteReplicaSet { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["hello-h2", "hello-h1"], "revisions 4 and 3 kept");
        let alive: std::collections::HashSet<String> = ["other".to_string()].into();
        assert_eq!(plan_orphan_revisions(&sets, &alive).len(), 4);
        let alive: std::collections::HashSet<String> = ["d-uid".to_string()].into();
        assert!(plan_orphan_revisions(&sets, &alive).is_empty());
    }
}
