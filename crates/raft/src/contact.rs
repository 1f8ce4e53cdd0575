//! When this node last heard from each peer, or got a message through to it: evidence that
//! the peer's process is up and reachable, from the Raft traffic that flows anyway. A leader
//! exchanges heartbeats with every follower every 150 ms, so a peer it has not been in touch
//! with for a second is very likely gone — seconds before a heartbeat written through the
//! log could tell. A follower is in touch with the cluster while it hears from its leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::LeaderState;

#[derive(Debug)]
pub struct Contact {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Per peer id: the last message from it, or the last batch it accepted.
    last: HashMap<u64, Instant>,
    /// When this node last became leader (None while it does not lead).
    leading_since: Option<Instant>,
    /// The last other node seen leading, and the one that led before this node's term.
    last_leader: u64,
    predecessor: u64,
    /// The last moment this node led or had heard from its leader.
    in_touch: Instant,
}

impl Default for Contact {
    fn default() -> Self {
        let now = Instant::now();
        let inner = Inner {
            last: HashMap::new(),
            leading_since: None,
            last_leader: 0,
            predecessor: 0,
            in_touch: now,
        };
        Contact { inner: Mutex::new(inner) }
    }
}

impl Contact {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Peer `id` was heard from, or took a batch of messages, just now.
    pub fn heard(&self, id: u64) {
        self.lock().last.insert(id, Instant::now());
    }

    /// Follows leadership as the driver publishes it (every loop of the driver, so at least
    /// every tick).
    pub(crate) fn observe(&self, state: &LeaderState, node_id: u64) {
        let now = Instant::now();
        let mut inner = self.lock();
        if state.is_leader {
            if inner.leading_since.is_none() {
                inner.leading_since = Some(now);
                inner.predecessor = inner.last_leader;
            }
            inner.in_touch = now;
            return;
        }
        inner.leading_since = None;
        if state.leader_id != 0 && state.leader_id != node_id {
            inner.last_leader = state.leader_id;
            if let Some(heard) = inner.last.get(&state.leader_id).copied() {
                inner.in_touch = inner.in_touch.max(heard);
            }
        }
    }

    /// How long this leader has been out of touch with peer `id` (None when this node does
    /// not lead). Counted from when this node took the lead for every peer but the one that
    /// led before it: followers talk only to their leader, so what this node heard from
    /// them before says nothing, while its predecessor's silence began when it was last heard.
    pub fn silence(&self, id: u64) -> Option<Duration> {
        let inner = self.lock();
        let since = inner.leading_since?;
        let heard = inner.last.get(&id).copied();
        let from = match heard {
            Some(at) if id == inner.predecessor => at,
            Some(at) => at.max(since),
            None => since,
        };
        Some(Instant::now().saturating_duration_since(from))
    }

    /// How long this node has been out of touch with the cluster: zero while it leads
    /// (raft-rs steps a leader that lost its quorum down within an election timeout) or
    /// hears from its leader, otherwise the time since it last did.
    pub fn out_of_touch(&self) -> Duration {
        Instant::now().saturating_duration_since(self.lock().in_touch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader_id: u64, is_leader: bool) -> LeaderState {
        LeaderState { leader_id, term: 1, is_leader }
    }

    #[test]
    fn a_new_leader_counts_its_predecessor_from_when_it_was_last_heard() {
        let contact = Contact::default();
        // Node 1 follows node 3, hearing from it and (long ago) from node 2.
        contact.heard(2);
        contact.observe(&state(3, false), 1);
        contact.heard(3);
        std::thread::sleep(Duration::from_millis(30));
        assert!(contact.out_of_touch() >= Duration::from_millis(30), "node 3 fell silent");
        assert_eq!(contact.silence(2), None, "only a leader judges its peers");
        // Node 3 is gone: node 1 takes the lead.
        contact.observe(&state(0, false), 1);
        contact.observe(&state(1, true), 1);
        assert!(contact.out_of_touch() < Duration::from_millis(10), "a leader is in touch");
        let predecessor = contact.silence(3).expect("leading");
        let follower = contact.silence(2).expect("leading");
        assert!(predecessor >= Duration::from_millis(30), "{predecessor:?}");
        assert!(follower < Duration::from_millis(10), "a follower counts from the new term: {follower:?}");
        contact.heard(2);
        std::thread::sleep(Duration::from_millis(20));
        assert!(contact.silence(2).expect("leading") >= Duration::from_millis(20));
        assert!(contact.silence(3).expect("leading") >= Duration::from_millis(50));
    }
}
