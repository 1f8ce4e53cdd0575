//! Admission checks: turning an untrusted JSON body into a valid object of a known kind.

use serde_json::Value;

use crate::{Deployment, Event, KindInfo, Module, Node, ObjectMeta, Pod, Resource, Service};

/// Why an object was refused; `field` is a JSON path such as `spec.replicas`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: String) -> Self {
        ValidationError { field: field.into(), message }
    }
}

/// Checks a DNS-1123 label-ish name: lower-case alphanumerics and '-', 1..=63 characters.
/// Module names (64 hex digits) are checked by the Module kind itself.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let ok_chars =
        name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = !name.starts_with(['-', '.']) && !name.ends_with(['-', '.']);
    if name.is_empty() || name.len() > 63 || !ok_chars || !ok_ends {
        return Err(ValidationError::new(
            field,
            format!(
                "{name:?} is not a valid name: use 1-63 lower-case letters, digits, '-' or '.', starting and ending alphanumeric"
            ),
        ));
    }
    Ok(())
}

/// Most bytes all of one object's annotations may hold (keys and values), as in Kubernetes.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 << 10;
/// Most labels one object may carry.
pub const MAX_LABELS: usize = 64;

/// Kubernetes' qualified name: an optional DNS-subdomain prefix and '/', then a name of at
/// most 63 characters, alphanumerics with '-', '_' or '.' inside.
fn check_qualified_name(field: &str, key: &str) -> Result<(), ValidationError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if !prefix_ok || name.is_empty() || !is_label_value(name) {
        return Err(ValidationError::new(
            field,
            format!(
                "{key:?} is not a valid key: an optional DNS prefix and '/', then 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
            ),
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 alphanumerics with '-', '_' or '.' inside.
fn is_label_value(v: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
            && v.bytes().next().is_some_and(alnum)
            && v.bytes().last().is_some_and(alnum))
}

/// A label selector's keys and values, checked as labels are.
pub(crate) fn check_selector(
    field: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    for (k, v) in selector {
        check_qualified_name(field, k)?;
        if !is_label_value(v) {
            return Err(ValidationError::new(
                format!("{field}.{k}"),
                format!("{v:?} is not a valid label value"),
            ));
        }
    }
    Ok(())
}

/// Labels and annotations as Kubernetes checks them: qualified keys, label values of at most
/// 63 characters, at most `MAX_LABELS` labels and `MAX_ANNOTATIONS_BYTES` of annotations.
pub(crate) fn check_labels_and_annotations(prefix: &str, meta: &ObjectMeta) -> Result<(), ValidationError> {
    let labels = format!("{prefix}.labels");
    if meta.labels.len() > MAX_LABELS {
        return Err(ValidationError::new(labels, format!("more than {MAX_LABELS} labels")));
    }
    for (k, v) in &meta.labels {
        check_qualified_name(&labels, k)?;
        if !is_label_value(v) {
            return Err(ValidationError::new(
                format!("{labels}.{k}"),
                format!(
                    "{v:?} is not a valid label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
                ),
            ));
        }
    }
    let annotations = format!("{prefix}.annotations");
    let mut total = 0;
    for (k, v) in &meta.annotations {
        check_qualified_name(&annotations, k)?;
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(ValidationError::new(
            annotations,
            format!("{total} bytes of annotations; at most {MAX_ANNOTATIONS_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// Parses `body` as an object of `kind`, fills `apiVersion`/`kind`, checks it, and returns
/// the normalised JSON. Unknown fields, wrong types and invalid values are refused.
pub fn validate_object(kind: &KindInfo, body: Value) -> Result<Value, ValidationError> {
    match kind.kind {
        "Pod" => normalise::<Pod>(body),
        "Deployment" => normalise::<Deployment>(body),
        "Service" => normalise::<Service>(body),
        "Node" => normalise::<Node>(body),
        "Event" => normalise::<Event>(body),
        "Module" => normalise::<Module>(body),
        "HorizontalPodAutoscaler" => normalise::<crate::HorizontalPodAutoscaler>(body),
        "ReplicaSet" => normalise::<crate::ReplicaSet>(body),
        other => Err(ValidationError::new("kind", format!("unknown kind {other:?}"))),
    }
}

/// The checks `validate_object` makes after parsing, for an object that is typed already
/// (written by the node's own parts rather than read from a request body).
pub fn validate_typed<T: Resource>(object: &T) -> Result<(), ValidationError> {
    check_labels_and_annotations("metadata", object.meta())?;
    object.validate()
}

fn normalise<T: Resource>(mut body: Value) -> Result<Value, ValidationError> {
    let info = T::KIND;
    for (field, want) in [("apiVersion", info.api_version), ("kind", info.kind)] {
        let mut fill = false;
        match body.get(field) {
            // As in Kubernetes, the body must say what it is; the version may be left out.
            None | Some(Value::Null) if field == "kind" => {
                return Err(ValidationError::new(field, format!("is required (expected {want:?})")));
            }
            Some(Value::String(s)) if s.is_empty() && field == "kind" => {
                return Err(ValidationError::new(field, format!("is required (expected {want:?})")));
            }
            None | Some(Value::Null) => fill = true,
            Some(Value::String(s)) if s.is_empty() => fill = true,
            Some(Value::String(s)) if s == want => {}
            Some(other) => {
                return Err(ValidationError::new(field, format!("is {other}, expected {want:?}")));
            }
        }
        if fill && let Some(obj) = body.as_object_mut() {
            obj.insert(field.to_string(), Value::String(want.to_string()));
        }
    }
    let typed: T = serde_json::from_value(body).map_err(|e| ValidationError::new("body", e.to_string()))?;
    validate_typed(&typed)?;
    serde_json::to_value(&typed).map_err(|e| ValidationError::new("body", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_kind;
    use serde_json::json;

    fn deployment(replicas: Value) -> Value {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "hello"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "hello"}},
                "template": {
                    "metadata": {"labels": {"app": "hello"}},
                    "spec": {"containers": [{"name": "app", "image": format!("sha256:{}", "a".repeat(64))}]}
                }
            }
        })
    }

    #[test]
    fn valid_deployment_is_normalised() {
        let kind = find_kind("Deployment").expect("registered");
        let v = validate_object(kind, deployment(json!(3))).expect("valid");
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["spec"]["replicas"], 3);
    }

    #[test]
    fn bad_inputs_are_refused_with_the_field_named() {
        let kind = find_kind("Deployment").expect("registered");
        let err = validate_object(kind, deployment(json!(-1))).unwrap_err();
        assert!(err.message.contains("invalid value"), "{err}");

        let err = validate_object(kind, deployment(json!(1_000_000_000))).unwrap_err();
        assert_eq!(err.field, "spec.replicas");
        assert!(err.message.contains("more than the 100000 replicas"), "{err}");
        validate_object(kind, deployment(json!(crate::MAX_REPLICAS))).expect("the limit itself is fine");

        let mut unknown = deployment(json!(1));
        unknown["spec"]["minReadySeconds"] = json!(true);
        let err = validate_object(kind, unknown).unwrap_err();
        assert!(err.message.contains("unknown field `minReadySeconds`"), "{err}");

        let mut bad_image = deployment(json!(1));
        bad_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
        let err = validate_object(kind, bad_image).unwrap_err();
        assert_eq!(err.field, "spec.template.spec.containers[0].image");

        let mut no_kind = deployment(json!(1));
        no_kind.as_object_mut().map(|o| o.remove("kind"));
        let err = validate_object(kind, no_kind).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("kind", "is required (expected \"Deployment\")")
        );

        let mut wrong_kind = deployment(json!(1));
        wrong_kind["kind"] = json!("Pod");
        assert_eq!(validate_object(kind, wrong_kind).unwrap_err().field, "kind");

        let mut bad_name = deployment(json!(1));
        bad_name["metadata"]["name"] = json!("Hello_World");
        assert_eq!(validate_object(kind, bad_name).unwrap_err().field, "metadata.name");

        let mut mismatched = deployment(json!(1));
        mismatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        assert_eq!(validate_object(kind, mismatched).unwrap_err().field, "spec.template.metadata.labels");
    }

    #[test]
    fn labels_and_annotations_are_checked_as_kubernetes_does() {
        let kind = find_kind("Deployment").expect("registered");
        let with = |field: &str, key: &str, value: String| {
            let mut d = deployment(json!(1));
            d["metadata"][field] = json!({key: value});
            validate_object(kind, d)
        };
        with("labels", "app.kubernetes.io/name", "hello".into()).expect("a prefixed key");
        with("labels", "tier", String::new()).expect("an empty value");
        with("annotations", "note", "any text at all, spaces/slashes: fine".into()).expect("free-form value");
        for (field, key, value, refused) in [
            ("labels", "bad key", "x".to_string(), "metadata.labels"),
            ("labels", "Example.COM/x", "x".into(), "metadata.labels"),
            ("labels", "/x", "x".into(), "metadata.labels"),
            ("labels", &"k".repeat(64), "x".into(), "metadata.labels"),
            ("labels", "app", "v".repeat(64), "metadata.labels.app"),
            ("labels", "app", "-dash".into(), "metadata.labels.app"),
            ("labels", "app", "has space".into(), "metadata.labels.app"),
            ("annotations", "not ok!", "x".into(), "metadata.annotations"),
            ("annotations", "big", "x".repeat(MAX_ANNOTATIONS_BYTES), "metadata.annotations"),
        ] {
            let err = with(field, key, value).expect_err(key);
            assert_eq!(err.field, refused, "{key}: {err}");
        }
        let mut template = deployment(json!(1));
        template["spec"]["template"]["metadata"]["annotations"] = json!({"bad key": "x"});
        let err = validate_object(kind, template).expect_err("template metadata is checked too");
        assert_eq!(err.field, "spec.template.metadata.annotations");
    }

    #[test]
    fn a_deployment_restarts_its_pods_always() {
        let kind = find_kind("Deployment").expect("registered");
        let mut d = deployment(json!(1));
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        validate_object(kind, d.clone()).expect("Always");
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let err = validate_object(kind, d).expect_err("Never is not for a Deployment");
        assert_eq!(err.field, "spec.template.spec.restartPolicy");
    }

    #[test]
    fn service_ports_are_1_to_65535() {
        let kind = find_kind("Service").expect("registered");
        let svc = |port: i64| json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": "s"}, "ports": [{"port": port}]}});
        validate_object(kind, svc(80)).expect("port 80");
        validate_object(kind, svc(65535)).expect("port 65535");
        for bad in [0, 65536, -1] {
            let err = validate_object(kind, svc(bad)).expect_err("out of range");
            assert!(err.to_string().contains("port"), "{bad}: {err}");
        }
    }

    #[test]
    fn node_port_services_are_checked() {
        let kind = find_kind("Service").expect("registered");
        let svc = |type_: &str, ports: Value| json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {"app": "s"}, "type": type_, "ports": ports}});
        validate_object(kind, svc("NodePort", json!([{"port": 80}]))).expect("allocated later");
        validate_object(
            kind,
            svc("NodePort", json!([{"port": 80, "nodePort": 30080, "targetPort": "http"}])),
        )
        .expect("given");
        validate_object(kind, svc("ClusterIP", json!([{"port": 80, "targetPort": 8080}])))
            .expect("targetPort");
        let refused = [
            (svc("LoadBalancer", json!([{"port": 80}])), "spec.type", "Unsupported value"),
            (svc("NodePort", json!([])), "spec.ports", "Required value"),
            (
                svc("ClusterIP", json!([{"port": 80, "nodePort": 30080}])),
                "spec.ports[0].nodePort",
                "Forbidden",
            ),
            (
                svc("NodePort", json!([{"port": 80, "nodePort": 8080}])),
                "spec.ports[0].nodePort",
                "valid range",
            ),
            (
                svc("NodePort", json!([{"port": 80, "nodePort": 32768}])),
                "spec.ports[0].nodePort",
                "valid range",
            ),
            (
                svc("NodePort", json!([{"port": 80, "nodePort": 30080}, {"port": 81, "nodePort": 30080}])),
                "spec.ports[1].nodePort",
                "Duplicate value",
            ),
            (
                svc("NodePort", json!([{"port": 80, "protocol": "UDP"}])),
                "spec.ports[0].protocol",
                "Unsupported",
            ),
            (
                svc("ClusterIP", json!([{"port": 80, "targetPort": 0}])),
                "spec.ports[0].targetPort",
                "port number",
            ),
            (
                svc("ClusterIP", json!([{"port": 80, "targetPort": "No Spaces"}])),
                "spec.ports[0].targetPort",
                "port name",
            ),
        ];
        for (object, field, message) in refused {
            let err = validate_object(kind, object.clone()).expect_err("refused");
            assert_eq!(err.field, field, "{object}: {err}");
            assert!(err.message.contains(message), "{object}: {err}");
        }
    }
}
