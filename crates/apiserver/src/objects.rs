//! The object API inside the process: the one way anything on a node writes an object.
//!
//! The HTTP server, the controllers, the scheduler's bindings, the agent's statuses and
//! events, the supervisor's events: every write is a `Write`, and a `Write` can only be made
//! by the constructors below, which run the same validation as a request body gets
//! (`wasmkube_api::validate_object` / `validate_typed`) and the same admission (namespace,
//! uid and creation time filled in on create; `apiVersion` and `kind` from the type). What
//! reaches Raft is therefore always an object the API would have accepted from a client.
//!
//! (`ClusterHandle::propose` is a disallowed method outside this module — see clippy.toml.)

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use wasmkube_api::{
    DEFAULT_NAMESPACE, Event, KindInfo, Resource, ValidationError, validate_object, validate_typed,
};
use wasmkube_raft::{ClusterHandle, ProposeError};
use wasmkube_store::{Command, ObjectKey, ObjectStore};

/// Why a write was not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The object is not one the API admits: nothing was proposed.
    #[error("{kind} is invalid: {error}")]
    Invalid { kind: &'static str, error: ValidationError },
    /// The store is at its quota: only writes that do not grow it (status reports, deletes)
    /// are taken until objects are deleted. Nothing was proposed.
    #[error(
        "the cluster's store holds {size} bytes, at its quota of {quota} (wasmlet --quota-bytes): delete objects to make room"
    )]
    QuotaExceeded { size: u64, quota: u64 },
    /// Proposed (or refused by Raft before it was): see `ProposeError`.
    #[error(transparent)]
    Propose(#[from] ProposeError),
}

/// One validated, admitted write, ready to be proposed.
#[derive(Debug, Clone)]
pub struct Write(Command);

impl Write {
    /// Creates `object`: checked as a request body would be, then admitted (namespace
    /// defaulted for namespaced kinds, uid and creation time given when the writer left them
    /// out).
    pub fn create<T: Resource>(object: &T) -> Result<Write, WriteError> {
        validate_typed(object).map_err(invalid::<T>)?;
        Ok(Write(Command::Create { object: admitted(T::KIND, typed_json(object)) }))
    }

    /// Creates an object from its JSON (a request body): parsed and checked as `kind`, then
    /// admitted as `create` does.
    pub fn create_json(kind: &'static KindInfo, object: Value) -> Result<Write, WriteError> {
        let object =
            validate_object(kind, object).map_err(|error| WriteError::Invalid { kind: kind.kind, error })?;
        Ok(Write(Command::Create { object: admitted(kind, object) }))
    }

    /// Replaces `object`'s metadata and spec (its status is kept), on the condition that it
    /// still has the resourceVersion it was read at, when it carries one.
    pub fn update<T: Resource>(object: &T) -> Result<Write, WriteError> {
        validate_typed(object).map_err(invalid::<T>)?;
        let precondition = object.meta().revision();
        Ok(Write(Command::Update { object: typed_json(object), precondition }))
    }

    /// Replaces an object's metadata and spec from its JSON (a request body), with
    /// `precondition` as the resourceVersion it must still have.
    pub fn update_json(
        kind: &'static KindInfo,
        object: Value,
        precondition: Option<u64>,
    ) -> Result<Write, WriteError> {
        let object =
            validate_object(kind, object).map_err(|error| WriteError::Invalid { kind: kind.kind, error })?;
        Ok(Write(Command::Update { object, precondition }))
    }

    /// Replaces only the status of the object of `T`'s kind named `name`.
    pub fn update_status<T: Resource, S: Serialize>(
        namespace: Option<&str>,
        name: &str,
        status: &S,
        precondition: Option<u64>,
    ) -> Write {
        Write::status_json(T::KIND, namespace, name, json(status), precondition)
    }

    /// Replaces only the status of an object (a request body's status, already checked
    /// with the rest of its object).
    pub fn status_json(
        kind: &'static KindInfo,
        namespace: Option<&str>,
        name: &str,
        status: Value,
        precondition: Option<u64>,
    ) -> Write {
        Write(Command::UpdateStatus { key: key(kind, namespace, name), status, precondition })
    }

    /// Removes the object of `kind` named `name`, if it still has resourceVersion
    /// `precondition` when one is given.
    pub fn delete(
        kind: &'static KindInfo,
        namespace: Option<&str>,
        name: &str,
        precondition: Option<u64>,
    ) -> Write {
        Write(Command::Delete { key: key(kind, namespace, name), precondition })
    }

    /// Records `event`, counted into the existing event of its subject and reason if there is
    /// one (Kubernetes' aggregation).
    pub fn record_event(event: &Event) -> Result<Write, WriteError> {
        validate_typed(event).map_err(invalid::<Event>)?;
        Ok(Write(Command::RecordEvent { object: admitted(Event::KIND, typed_json(event)) }))
    }

    /// Stores a join token (the cluster's own record, not an API kind): its id, the sha256 of
    /// its secret, and when it expires.
    pub fn join_token(id: &str, secret_sha256: &str, expires_at: &str) -> Write {
        Write(Command::Create {
            object: serde_json::json!({
                "apiVersion": "wasmkube.io/v1",
                "kind": "JoinToken",
                "metadata": {"name": id},
                "spec": {"secretSha256": secret_sha256, "expiresAt": expires_at},
            }),
        })
    }

    /// The object this write is about.
    pub fn key(&self) -> Option<ObjectKey> {
        self.0.key()
    }

    /// Whether the write can grow the store (a new object, or a bigger one).
    fn grows(&self) -> bool {
        matches!(self.0, Command::Create { .. } | Command::Update { .. } | Command::RecordEvent { .. })
    }
}

/// The object API of this node: writes through Raft, reads from the node's applied store.
#[derive(Clone)]
pub struct Objects {
    cluster: ClusterHandle,
    /// Bytes of objects past which the store takes only writes that do not grow it.
    quota: u64,
}

impl Objects {
    pub fn new(cluster: ClusterHandle) -> Self {
        Objects { cluster, quota: wasmkube_raft::limits::DEFAULT_QUOTA_BYTES as u64 }
    }

    /// With a store quota of `bytes` (at most `wasmkube_raft::limits::MAX_QUOTA_BYTES`).
    pub fn with_quota(self, bytes: u64) -> Self {
        Objects { quota: bytes.min(wasmkube_raft::limits::MAX_QUOTA_BYTES as u64), ..self }
    }

    /// Proposes `write`; the stored object (or the Raft outcome) once it has committed.
    #[allow(clippy::disallowed_methods)] // this is the one place writes are proposed
    pub async fn write(&self, write: Write) -> Result<Value, WriteError> {
        self.within_quota(&write)?;
        Ok(self.cluster.propose(write.0).await?)
    }

    /// Proposes `writes` in as few Raft entries as they fit in; each write's outcome, in
    /// order (for a write that went in a batch, its new `metadata.resourceVersion` only).
    #[allow(clippy::disallowed_methods)] // this is the one place writes are proposed
    pub async fn write_many(&self, writes: Vec<Write>) -> Vec<Result<Value, WriteError>> {
        let mut outcomes: Vec<Option<Result<Value, WriteError>>> = Vec::with_capacity(writes.len());
        let mut commands = Vec::with_capacity(writes.len());
        for write in writes {
            match self.within_quota(&write) {
                Ok(()) => {
                    outcomes.push(None);
                    commands.push(write.0);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let mut proposed = self.cluster.propose_many(commands).await.into_iter();
        outcomes
            .into_iter()
            .map(|refused| match refused {
                Some(refused) => refused,
                None => proposed.next().unwrap_or(Err(ProposeError::Stopped)).map_err(WriteError::from),
            })
            .collect()
    }

    /// Refuses a write that would grow a store already at its quota (as etcd refuses writes
    /// past `--quota-backend-bytes`, but still takes deletes): a store may not outgrow what a
    /// snapshot can carry to a new member.
    fn within_quota(&self, write: &Write) -> Result<(), WriteError> {
        let size = self.store().size();
        match write.grows() && size >= self.quota {
            true => Err(WriteError::QuotaExceeded { size, quota: self.quota }),
            false => Ok(()),
        }
    }

    /// This node's applied store, for reads.
    pub fn store(&self) -> &ObjectStore {
        self.cluster.store()
    }

    pub fn cluster(&self) -> &ClusterHandle {
        &self.cluster
    }
}

fn invalid<T: Resource>(error: ValidationError) -> WriteError {
    WriteError::Invalid { kind: T::KIND.kind, error }
}

fn key(kind: &KindInfo, namespace: Option<&str>, name: &str) -> ObjectKey {
    let namespace = if kind.namespaced { Some(namespace.unwrap_or(DEFAULT_NAMESPACE)) } else { None };
    ObjectKey::new(kind.kind, namespace, name)
}

/// `object` as JSON, saying what it is (`apiVersion` and `kind` from its type, whatever the
/// writer left in those fields).
fn typed_json<T: Resource>(object: &T) -> Value {
    let mut value = json(object);
    if let Some(fields) = value.as_object_mut() {
        fields.insert("apiVersion".into(), Value::from(T::KIND.api_version));
        fields.insert("kind".into(), Value::from(T::KIND.kind));
    }
    value
}

/// Admission on create: the namespace defaulted for namespaced kinds, and a uid and creation
/// time when the writer gave none.
fn admitted(kind: &KindInfo, mut object: Value) -> Value {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return object };
    if kind.namespaced && meta.get("namespace").is_none_or(Value::is_null) {
        meta.insert("namespace".into(), Value::from(DEFAULT_NAMESPACE));
    }
    if meta.get("uid").is_none_or(Value::is_null) {
        meta.insert("uid".into(), Value::from(uuid::Uuid::new_v4().to_string()));
    }
    if meta.get("creationTimestamp").is_none_or(Value::is_null) {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        meta.insert("creationTimestamp".into(), Value::from(now));
    }
    object
}

/// Serialising our own types cannot fail: no maps with non-string keys, no I/O.
fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::testing::OneVoter;
    use wasmkube_api::{Container, ObjectMeta, Pod, PodSpec, PodStatus};

    /// The object API over a one-voter cluster (stopped when the second value drops).
    async fn objects(dir: &std::path::Path) -> (Objects, OneVoter) {
        let node = OneVoter::start(dir).await;
        (Objects::new(node.cluster.clone()), node)
    }

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta::named(None, name),
            spec: PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: format!("sha256:{}", "a".repeat(64)),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn stored(objects: &Objects, name: &str) -> Option<Value> {
        objects.store().get(&ObjectKey::new("Pod", Some(DEFAULT_NAMESPACE), name)).expect("read")
    }

    #[tokio::test]
    async fn a_typed_create_is_admitted_as_a_request_body_would_be() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, _node) = objects(dir.path()).await;
        let created = objects.write(Write::create(&pod("p")).expect("valid")).await.expect("committed");
        let meta = &created["metadata"];
        assert_eq!((created["apiVersion"].as_str(), created["kind"].as_str()), (Some("v1"), Some("Pod")));
        assert_eq!(meta["namespace"], DEFAULT_NAMESPACE, "namespace defaulted");
        assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36), "uid given: {meta}");
        assert!(meta["creationTimestamp"].as_str().is_some(), "creation time given: {meta}");
        // A writer that names the identity keeps it (a controller's pods, a node's own object).
        let mut named = pod("q");
        named.metadata.uid = Some("fixed".into());
        let created = objects.write(Write::create(&named).expect("valid")).await.expect("committed");
        assert_eq!(created["metadata"]["uid"], "fixed");
    }

    #[tokio::test]
    async fn an_invalid_object_from_inside_the_node_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, _node) = objects(dir.path()).await;
        let mut bad_label = pod("p");
        bad_label.metadata.labels.insert("bad key".into(), "x".into());
        let mut bad_image = pod("q");
        bad_image.spec.containers[0].image = "nginx:latest".into();
        let mut bad_name = pod("Not_A_Name");
        bad_name.metadata.labels.clear();
        for (name, object) in [("p", bad_label), ("q", bad_image), ("Not_A_Name", bad_name)] {
            let err = Write::create(&object).expect_err(name);
            assert!(matches!(err, WriteError::Invalid { kind: "Pod", .. }), "{name}: {err}");
            assert!(stored(&objects, name).is_none());
        }
        // The same checks on update, and from JSON.
        let good = objects.write(Write::create(&pod("p")).expect("valid")).await.expect("committed");
        let mut relabelled: Pod = serde_json::from_value(good).expect("a pod");
        relabelled.metadata.labels.insert("app".into(), "-dash".into());
        assert!(Write::update(&relabelled).is_err());
        let json = serde_json::json!({"kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": []}});
        let err = Write::create_json(Pod::KIND, json).expect_err("no container");
        assert!(err.to_string().starts_with("Pod is invalid: spec.containers"), "{err}");
    }

    #[tokio::test]
    async fn many_writes_go_in_batches_with_an_outcome_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (objects, _node) = objects(dir.path()).await;
        let mut writes: Vec<Write> =
            (0..600).map(|i| Write::create(&pod(&format!("p{i}"))).expect("valid")).collect();
        writes.push(Write::create(&pod("p0")).expect("valid"));
        let status = PodStatus { phase: Some("Running".into()), ..Default::default() };
        writes.push(Write::update_status::<Pod, _>(None, "p1", &status, None));
        let outcomes = objects.write_many(writes).await;
        assert_eq!(outcomes.len(), 602);
        assert!(outcomes[..600].iter().all(Result::is_ok));
        assert!(
            matches!(&outcomes[600], Err(WriteError::Propose(ProposeError::Rejected(_)))),
            "p0 exists already: {:?}",
            outcomes[600]
        );
        assert!(outcomes[601].is_ok());
        assert_eq!(stored(&objects, "p1").expect("stored")["status"]["phase"], "Running");
        assert_eq!(objects.store().list("Pod", None).expect("list").0.len(), 600);
    }
}
