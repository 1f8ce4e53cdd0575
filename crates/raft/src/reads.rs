//! Linearizable reads (Raft ReadIndex) on their way: asked, confirmed by the leader's
//! quorum, answered once this replica has applied up to the confirmed index.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::handle::{ProposeError, Reply};

/// A read index not confirmed after this long is asked for again (see `due_again`).
const RETRY: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(crate) struct Reads {
    /// Waiting for the leader's confirmation, with when each was (last) asked.
    asked: HashMap<u64, (Reply, Instant)>,
    /// Confirmed at an index, waiting for this replica to apply up to it.
    confirmed: Vec<(u64, Reply)>,
    /// The term the asked reads belong to.
    term: u64,
}

impl Reads {
    pub(crate) fn asked(&mut self, id: u64, reply: Reply) {
        self.asked.insert(id, (reply, Instant::now()));
    }

    /// The reads to ask for again. raft-rs drops a read index request silently while the
    /// leader has not yet committed an entry in its term (right after an election), whether
    /// it was asked there or forwarded by a follower; asking again is safe (a read is
    /// idempotent; the first answer wins).
    pub(crate) fn due_again(&mut self) -> Vec<u64> {
        let now = Instant::now();
        self.asked
            .iter_mut()
            .filter(|(_, (_, asked))| now.duration_since(*asked) >= RETRY)
            .map(|(id, (_, asked))| {
                *asked = now;
                *id
            })
            .collect()
    }

    /// The leader confirmed read `id` at `index`.
    pub(crate) fn confirm(&mut self, id: u64, index: u64) {
        if let Some((reply, _)) = self.asked.remove(&id) {
            self.confirmed.push((index, reply));
        }
    }

    /// Answers the confirmed reads this replica has applied far enough for.
    pub(crate) fn answer(&mut self, applied: u64) {
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.confirmed.drain(..).partition(|(index, _)| *index <= applied);
        self.confirmed = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(Value::Null));
        }
    }

    /// raft-rs forgets read requests across terms: in a new term the unconfirmed ones are
    /// answered `NotLeader`, so their readers retry.
    pub(crate) fn term(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            for (_, (reply, _)) in self.asked.drain() {
                let _ = reply.send(Err(ProposeError::NotLeader));
            }
        }
    }
}
