//! Event retention: like Kubernetes, events are kept for an hour, so they never grow without
//! bound.

use std::time::{Duration, SystemTime};

use wasmkube_api::Event;

use crate::actions::Action;

pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// Deletes every event last seen more than `ttl` before `now` (or with no readable timestamp).
pub fn plan_event_gc(events: &[Event], now: SystemTime, ttl: Duration) -> Vec<Action> {
    events
        .iter()
        .filter(|e| {
            let seen = e.last_timestamp.as_deref().or(e.metadata.creation_timestamp.as_deref());
            match seen.and_then(|t| humantime::parse_rfc3339(t).ok()) {
                Some(t) => now.duration_since(t).is_ok_and(|age| age > ttl),
                None => true,
            }
        })
        .map(|e| Action::DeleteEvent {
            namespace: e.metadata.namespace.clone().unwrap_or_default(),
            name: e.metadata.name.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmkube_api::ObjectMeta;

    fn event(name: &str, at: SystemTime) -> Event {
        Event {
            metadata: ObjectMeta::named(Some("default"), name),
            last_timestamp: Some(humantime::format_rfc3339_seconds(at).to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn only_expired_events_go() {
        let now = SystemTime::now();
        let events =
            [event("old", now - Duration::from_secs(7200)), event("new", now - Duration::from_secs(60))];
        let actions = plan_event_gc(&events, now, EVENT_TTL);
        assert_eq!(actions, vec![Action::DeleteEvent { namespace: "default".into(), name: "old".into() }]);
    }
}
