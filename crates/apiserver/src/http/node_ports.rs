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
    if service["spec"]["type"].as_str() != Some(NODE_PORT) {
        return Ok(false);
    }
    let key = ObjectKey::of(service);
    let Some(ports) = service["spec"]["ports"].as_array_mut() else { return Ok(false) };
    let kept: Vec<&Value> = current
        .filter(|c| c["spec"]["type"].as_str() == Some(NODE_PORT))
        .and_then(|c| c["spec"]["ports"].as_array())
        .map(|ports| ports.iter().collect())
        .unwrap_or_default();
    for port in ports.iter_mut().filter(|p| missing(p)) {
        if let Some(held) = kept.iter().find(|k| k["port"] == port["port"] && k["name"] == port["name"]) {
            port["nodePort"] = held["nodePort"].clone();
        }
    }
    if !ports.iter().any(missing) {
        return Ok(false);
    }
    let (services, _) = store.list("Service", None)?;
    let mut taken: BTreeSet<i64> =
        services.iter().filter(|s| ObjectKey::of(s) != key).flat_map(node_ports).collect();
    taken.extend(ports.iter().filter_map(|p| p["nodePort"].as_i64()));
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
        port["nodePort"] = Value::from(free);
    }
    Ok(true)
}

fn missing(port: &Value) -> bool {
    port.get("nodePort").is_none_or(Value::is_null)
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
