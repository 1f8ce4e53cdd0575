//! When this node last heard from each peer, or got a message through to it: evidence that
//! the peer's process is up and reachable, from the Raft traffic that flows anyway. It is
//! noted by the HTTP layer (a batch received, a batch taken), so a peer whose Raft thread is
//! busy applying still counts as in touch. A leader exchanges heartbeats with every
//! follower every 150 ms, so a peer it has not been in touch with for a second is very
//! likely gone — seconds before a heartbeat written through the log could tell.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{LeaderState, Membership};

#[derive(Debug)]
pub struct Contact {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Per peer id: the last batch from it, or the last batch it took.
    last: HashMap<u64, Instant>,
    /// Peers a batch could not be delivered to since they were last heard from (refused,
    /// reset, timed out): evidence that they are gone, not merely slow.
    failing: std::collections::HashSet<u64>,
    node_id: u64,
    /// Who leads as the driver last published it.
    state: LeaderState,
    voters: Vec<u64>,
    /// When this node last became leader (None while it does not lead).
    leading_since: Option<Instant>,
    /// The last other node seen leading while this node followed, and the one that led
    /// before this node's current term (0: none known).
    last_leader: u64,
    predecessor: u64,
    /// When this node started: the earliest contact it can claim.
    started: Instant,
    /// The last moment this node led (a deposed leader counts from there, not from its
    /// start, while the next election runs).
    led_until: Option<Instant>,
}

impl Contact {
    pub(crate) fn new(node_id: u64) -> Self {
        let inner = Inner {
            last: HashMap::new(),
            failing: std::collections::HashSet::new(),
            node_id,
            state: LeaderState::default(),
            voters: Vec::new(),
            leading_since: None,
            last_leader: 0,
            predecessor: 0,
            started: Instant::now(),
            led_until: None,
        };
        Contact { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Peer `id` was heard from, or took a batch of messages, just now.
    pub fn heard(&self, id: u64) {
        let mut inner = self.lock();
        inner.last.insert(id, Instant::now());
        inner.failing.remove(&id);
    }

    /// A batch of messages to peer `id` could not be delivered.
    pub fn failed(&self, id: u64) {
        self.lock().failing.insert(id);
    }

    /// Whether the last attempt to reach peer `id` failed (and nothing was heard since). A
    /// peer is lost only when it is silent *and* unreachable: one that is merely slow (a
    /// starved machine answering late) is not declared gone.
    pub fn unreachable(&self, id: u64) -> bool {
        self.lock().failing.contains(&id)
    }

    /// Follows leadership as the driver publishes it (every loop of the driver).
    pub(crate) fn observe(&self, state: &LeaderState) {
        let mut inner = self.lock();
        if state.is_leader {
            inner.led_until = Some(Instant::now());
        }
        if state.is_leader && inner.leading_since.is_none() {
            inner.leading_since = Some(Instant::now());
            // The leader this node followed last; forgotten once used, so a later term of
            // this node's never takes a live follower for a silent predecessor.
            inner.predecessor = std::mem::take(&mut inner.last_leader);
        } else if !state.is_leader {
            inner.leading_since = None;
            if state.leader_id != 0 && state.leader_id != inner.node_id {
                inner.last_leader = state.leader_id;
            }
        }
        inner.state = *state;
    }

    /// Follows the membership: a peer that is new (or an id given again after its holder
    /// left) is counted from now, not from what an earlier holder did.
    pub(crate) fn members(&self, membership: &Membership) {
        let mut inner = self.lock();
        let now = Instant::now();
        let ids: Vec<u64> = membership.voters.iter().chain(&membership.learners).copied().collect();
        inner.last.retain(|id, _| ids.contains(id));
        for id in ids {
            if id != inner.node_id {
                inner.last.entry(id).or_insert(now);
            }
        }
        inner.voters = membership.voters.clone();
    }

    /// How long this leader has been out of touch with peer `id` (None when this node does
    /// not lead). Counted from when this node took the lead for every peer but the one that
    /// led before it: followers talk only to their leader, so what this node heard from
    /// them before says nothing, while its predecessor's silence began when it was last
    /// heard.
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

    /// How long this node has been out of touch with the cluster: zero for the only voter;
    /// for a leader, since it last heard from a quorum of voters; for a follower, since it
    /// last heard from its leader (or, during an election, the last leader it followed).
    pub fn out_of_touch(&self) -> Duration {
        let inner = self.lock();
        let now = Instant::now();
        let others: Vec<u64> = inner.voters.iter().copied().filter(|v| *v != inner.node_id).collect();
        if inner.state.is_leader {
            // A quorum is a majority of the voters: this node (when it votes) and enough
            // others. The most recent contacts among the others, that many deep, say when
            // it last had one.
            let majority = inner.voters.len() / 2 + 1;
            let needed = majority - usize::from(inner.voters.len() > others.len());
            if needed == 0 {
                return Duration::ZERO;
            }
            let mut heard: Vec<Instant> =
                others.iter().map(|v| inner.last.get(v).copied().unwrap_or(inner.started)).collect();
            heard.sort_unstable_by(|a, b| b.cmp(a));
            let quorum = heard.get(needed - 1).copied().unwrap_or(inner.started);
            return now.saturating_duration_since(quorum);
        }
        let leader = match inner.state.leader_id {
            0 => inner.last_leader,
            id => id,
        };
        // Its leader, or while there is none, the last one it followed — or its own lead.
        let heard = inner.last.get(&leader).copied().unwrap_or(inner.started);
        let heard = heard.max(inner.started).max(inner.led_until.unwrap_or(inner.started));
        now.saturating_duration_since(heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader_id: u64, is_leader: bool) -> LeaderState {
        LeaderState { leader_id, term: 1, is_leader }
    }

    fn three() -> Membership {
        Membership { voters: vec![1, 2, 3], ..Default::default() }
    }

    #[test]
    fn a_new_leader_counts_its_predecessor_from_when_it_was_last_heard() {
        let contact = Contact::new(1);
        contact.members(&three());
        // Node 1 follows node 3, hearing from it.
        contact.observe(&state(3, false));
        contact.heard(3);
        std::thread::sleep(Duration::from_millis(30));
        assert!(contact.out_of_touch() >= Duration::from_millis(30), "node 3 fell silent");
        assert_eq!(contact.silence(2), None, "only a leader judges its peers");
        // An election: still out of touch with the last leader.
        contact.observe(&state(0, false));
        assert!(contact.out_of_touch() >= Duration::from_millis(30));
        // Node 1 takes the lead; node 2 voted for it.
        contact.heard(2);
        contact.observe(&state(1, true));
        assert!(contact.out_of_touch() < Duration::from_millis(10), "a quorum (1 and 2) is in touch");
        let predecessor = contact.silence(3).expect("leading");
        let follower = contact.silence(2).expect("leading");
        assert!(predecessor >= Duration::from_millis(30), "{predecessor:?}");
        assert!(follower < Duration::from_millis(10), "a follower counts from the new term: {follower:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(contact.silence(2).expect("leading") >= Duration::from_millis(20));
        assert!(contact.out_of_touch() >= Duration::from_millis(20), "no quorum heard since");
        contact.heard(3);
        assert!(contact.out_of_touch() < Duration::from_millis(10));
        // Deposed and elected again without following anyone: no predecessor this time.
        contact.observe(&state(0, false));
        contact.observe(&state(1, true));
        std::thread::sleep(Duration::from_millis(20));
        assert!(contact.silence(3).expect("leading") < Duration::from_millis(25));
    }

    #[test]
    fn a_deposed_leader_counts_from_its_lead_while_an_election_runs() {
        let contact = Contact::new(1);
        contact.members(&three());
        contact.observe(&state(1, true));
        std::thread::sleep(Duration::from_millis(30));
        contact.observe(&state(1, true));
        contact.observe(&state(0, false));
        assert!(contact.out_of_touch() < Duration::from_millis(10), "{:?}", contact.out_of_touch());
        // A leader that is not a voter (it removed itself) needs a majority of the others.
        let contact = Contact::new(4);
        contact.members(&Membership { voters: vec![1], learners: vec![4], ..Default::default() });
        contact.observe(&state(4, true));
        contact.heard(1);
        assert!(contact.out_of_touch() < Duration::from_millis(10));
    }

    #[test]
    fn a_peer_is_unreachable_from_a_failed_delivery_until_it_is_heard_again() {
        let contact = Contact::new(1);
        contact.members(&three());
        assert!(!contact.unreachable(2));
        contact.failed(2);
        assert!(contact.unreachable(2) && !contact.unreachable(3));
        contact.heard(2);
        assert!(!contact.unreachable(2));
    }

    #[test]
    fn the_only_voter_is_always_in_touch_and_a_new_member_counts_from_its_joining() {
        let contact = Contact::new(1);
        contact.members(&Membership { voters: vec![1], ..Default::default() });
        contact.observe(&state(1, true));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(contact.out_of_touch(), Duration::ZERO);
        contact.members(&Membership { voters: vec![1], learners: vec![4], ..Default::default() });
        assert!(contact.silence(4).expect("leading") < Duration::from_millis(10));
    }
}
