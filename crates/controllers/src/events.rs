//! Events: how often the controllers write them, and how long they are kept.
//!
//! A pod that fits nowhere is planned again on every pass; writing its FailedScheduling
//! event each time would make a stuck cluster write without end. As client-go's event
//! correlator does, the recorder writes an event when it first happens, then at most once
//! per `REPEAT_EVERY` per event, carrying the count of occurrences it held back; and one pass
//! writes at most `BUDGET_PER_PASS`. Events are named one per subject and reason (see
//! `event_for`), so recurrences grow `count` on one object. Like Kubernetes, events are kept
//! for an hour.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use wasmkube_api::Event;

use crate::actions::Action;

pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// One event is written again at most this often (client-go's spam filter refills once per
/// five minutes).
pub const REPEAT_EVERY: Duration = Duration::from_secs(300);
/// Most events one pass writes; the rest wait for a later pass.
pub const BUDGET_PER_PASS: usize = 100;
/// Events remembered; past this, those written longer than `REPEAT_EVERY` ago are forgotten.
const REMEMBER: usize = 20_000;

/// Held-back occurrences of recently written events, on the leader.
#[derive(Default)]
pub struct EventRecorder {
    recent: HashMap<String, Recent>,
}

struct Recent {
    written: Instant,
    held_back: u32,
}

impl EventRecorder {
    /// The events of one pass that should be written now, each with `count` set to the
    /// occurrences it stands for.
    pub fn admit(&mut self, events: Vec<Event>, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        for mut event in events {
            let key =
                format!("{}/{}", event.metadata.namespace.as_deref().unwrap_or(""), event.metadata.name);
            let held_back = match self.recent.get_mut(&key) {
                Some(r) if now.duration_since(r.written) < REPEAT_EVERY => {
                    r.held_back = r.held_back.saturating_add(1);
                    continue;
                }
                Some(r) => r.held_back,
                None => 0,
            };
            if out.len() == BUDGET_PER_PASS {
                continue;
            }
            event.count = held_back.saturating_add(1);
            self.recent.insert(key, Recent { written: now, held_back: 0 });
            out.push(event);
        }
        if self.recent.len() > REMEMBER {
            self.recent.retain(|_, r| now.duration_since(r.written) < REPEAT_EVERY);
        }
        out
    }
}

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

    fn occurrence(subject: &str) -> Event {
        Event { metadata: ObjectMeta::named(Some("default"), subject), count: 1, ..Default::default() }
    }

    #[test]
    fn a_recurring_event_is_written_once_per_interval_with_the_count_it_held_back() {
        let mut recorder = EventRecorder::default();
        let t0 = Instant::now();
        assert_eq!(recorder.admit(vec![occurrence("p.x")], t0).len(), 1, "the first occurrence is written");
        for s in 1..60 {
            let again = recorder.admit(vec![occurrence("p.x")], t0 + Duration::from_secs(s));
            assert!(again.is_empty(), "a recurrence within the interval is held back");
        }
        let later = recorder.admit(vec![occurrence("p.x")], t0 + REPEAT_EVERY);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].count, 60, "59 held back + this one");
    }

    #[test]
    fn one_pass_writes_at_most_its_budget() {
        let mut recorder = EventRecorder::default();
        let t0 = Instant::now();
        let many = |n: usize| (0..n).map(|i| occurrence(&format!("p{i}.x"))).collect::<Vec<_>>();
        assert_eq!(recorder.admit(many(1000), t0).len(), BUDGET_PER_PASS);
        // The ones over budget were not remembered as written: they go in later passes.
        let next = recorder.admit(many(1000), t0 + Duration::from_secs(1));
        assert_eq!(next.len(), BUDGET_PER_PASS);
        assert!(next.iter().all(|e| e.metadata.name != "p0.x"));
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
