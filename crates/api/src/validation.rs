//! Admission checks: turning an untrusted JSON body into a valid object of a known kind.

use serde_json::Value;

use crate::{Deployment, Event, KindInfo, Module, Node, Pod, Resource, Service};

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
        other => Err(ValidationError::new("kind", format!("unknown kind {other:?}"))),
    }
}

fn normalise<T: Resource>(mut body: Value) -> Result<Value, ValidationError> {
    let info = T::KIND;
    for (field, want) in [("apiVersion", info.api_version), ("kind", info.kind)] {
        let mut fill = false;
        match body.get(field) {
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
    typed.validate()?;
    serde_json::to_value(&typed).map_err(|e| ValidationError::new("body", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::find_kind;
    use serde_json::json;

    fn deployment(replicas: Value) -> Value {
        json!({
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

        let mut unknown = deployment(json!(1));
        unknown["spec"]["paused"] = json!(true);
        let err = validate_object(kind, unknown).unwrap_err();
        assert!(err.message.contains("unknown field `paused`"), "{err}");

        let mut bad_image = deployment(json!(1));
        bad_image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
        let err = validate_object(kind, bad_image).unwrap_err();
        assert_eq!(err.field, "spec.template.spec.containers[0].image");

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
    fn service_types_beyond_cluster_ip_are_refused() {
        let kind = find_kind("Service").expect("registered");
        let svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "s"}, "type": "NodePort"}});
        let err = validate_object(kind, svc).unwrap_err();
        assert!(err.message.contains("not supported yet"), "{err}");
    }
}
