//! Service nodePorts. A NodePort Service's ports that name none get one, as Kubernetes'
//! apiserver allocates them: a random free port of 30000-32767. An update keeps the ports a
//! Service already holds (a re-applied manifest without nodePorts does not move them). The
//! store has the last word: it refuses a port another Service holds when the write applies,
//! so of two writers racing for one port one wins; an allocation that lost such a race is
//! made again.

use std::collections::BTreeSet;

use rand::Rng;
use serde_json::Value;
use wasmkube_api::{NODE_PORT, NODE_PORT_RANGE};
use wasmkube_store::{ObjectKey, ObjectStore};

use super::ApiError;

/// Fills in `service`'s missing nodePorts (keeping those of `current`, its stored version,
/// for the same port); true if any was allocated here.
pub fn allocate(store: &ObjectStore, service: &mut Value, current: Option<&Value>) -> Result<bool, ApiError> {
    let kept: Vec<&Value> = current
        .filter(|c| c["spec"]["type"].as_str() == Some(NODE_PORT))
        .and_then(|c| c["spec"]["ports"].as_array())
        .map(|ports| ports.iter().collect())
        .unwrap_or_default();
    let node_port = service["spec"]["type"].as_str() == Some(NODE_PORT);
    let key = ObjectKey::of(service);
    // Anything but a list of objects is for validation to refuse. (Looked up without
    // indexing: `value["x"]` on a mutable object inserts a null.)
    let ports = service.get_mut("spec").and_then(|s| s.get_mut("ports")).and_then(Value::as_array_mut);
    let Some(ports) = ports else { return Ok(false) };
    let Some(mut ports) = ports.iter_mut().map(Value::as_object_mut).collect::<Option<Vec<_>>>() else {
        return Ok(false);
    };
    if !node_port {
        // A NodePort Service becoming another type lets go of the ports it held, as
        // Kubernetes drops type-dependent fields: the ports as they were read are not the
        // client's to keep.
        for port in ports.iter_mut() {
            if missing(port) || port.get("nodePort").is_some_and(|n| kept.iter().any(|k| k["nodePort"] == *n))
            {
                port.remove("nodePort");
            }
        }
        return Ok(false);
    }
    for port in ports.iter_mut().filter(|p| missing(p)) {
        // The port of the same name (or, unnamed, the same number) keeps its nodePort.
        let same = |k: &&&Value| match port.get("name").filter(|n| !n.is_null()) {
            Some(name) => k["name"] == *name,
            None => k["name"].is_null() && k.get("port") == port.get("port"),
        };
        if let Some(held) = kept.iter().find(same) {
            port.insert("nodePort".into(), held["nodePort"].clone());
        }
    }
    if !ports.iter().any(|p| missing(p)) {
        return Ok(false);
    }
    let (services, _) = store.list("Service", None)?;
    let mut taken: BTreeSet<i64> =
        services.iter().filter(|s| ObjectKey::of(s) != key).flat_map(node_ports).collect();
    taken.extend(ports.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)));
    let (start, end) = (i64::from(*NODE_PORT_RANGE.start()), i64::from(*NODE_PORT_RANGE.end()));
    for (i, port) in ports.iter_mut().enumerate().filter(|(_, p)| missing(p)) {
        // A random start, then the next free one: two writers rarely pick the same port.
        let size = end - start + 1;
        let first = rand::rng().random_range(0..size);
        let free = (0..size).map(|k| start + (first + k) % size).find(|p| !taken.contains(p)).ok_or_else(|| {
            ApiError::invalid(format!(
                "spec.ports[{i}].nodePort: Internal error: failed to allocate a nodePort: range {start}-{end} is full"
            ))
        })?;
        taken.insert(free);
        port.insert("nodePort".into(), Value::from(free));
    }
    Ok(true)
}

/// No nodePort asked for: none, null or 0 (as Kubernetes reads 0).
fn missing(port: &serde_json::Map<String, Value>) -> bool {
    port.get("nodePort").is_none_or(|n| n.is_null() || n.as_i64() == Some(0))
}

fn node_ports(service: &Value) -> Vec<i64> {
    if service["spec"]["type"].as_str() != Some(NODE_PORT) {
        return Vec::new();
    }
    service["spec"]["ports"]
        .as_array()
        .map(|ports| ports.iter().filter_map(|p| p["nodePort"].as_i64()).collect())
        .unwrap_or_default()
}
