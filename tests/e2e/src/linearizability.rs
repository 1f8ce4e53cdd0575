//! A linearizability checker for single-key registers with compare-and-set, after Lowe's
//! just-in-time linearization: events are replayed in time order, keeping every state the
//! register could be in; an operation must have taken effect by the time it returned.
//!
//! Every write stores a value never written before, so a write whose outcome is unknown
//! (timeout, connection lost) can take effect at most once, and only while the register
//! holds the value it expected; it may also never take effect.

use std::collections::{BTreeSet, HashSet};

/// One client operation on one key.
#[derive(Debug, Clone)]
pub struct Op {
    pub call: u64,
    /// Nanoseconds since the test began; `None` for an outcome that is unknown.
    pub ret: Option<u64>,
    pub kind: OpKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Observed `value` (`None`: the key did not exist).
    Read { value: Option<String> },
    /// Replaced `expected` with `new` (`Ok` writes and unknown writes only).
    Cas { expected: Option<String>, new: String },
}

type State = Option<String>;

/// Whether `ops` (all on one key, initially absent) is linearizable.
pub fn check(ops: &[Op]) -> Result<(), String> {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, true, i));
        if let Some(ret) = op.ret {
            events.push((ret, false, i));
        }
    }
    // Calls before returns at the same instant: overlapping is the permissive reading.
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    let mut pending: BTreeSet<usize> = BTreeSet::new();
    // A configuration: the register's state and the pending definite ops already applied.
    let mut configs: HashSet<(State, BTreeSet<usize>)> = HashSet::from([(None, BTreeSet::new())]);
    for (_, is_call, i) in events {
        if is_call {
            pending.insert(i);
            continue;
        }
        let mut next = HashSet::new();
        for config in closure(&configs, &pending, ops) {
            let (state, mut done) = config;
            if done.remove(&i) {
                next.insert((state, done));
            }
        }
        pending.remove(&i);
        if next.is_empty() {
            return Err(format!("operation {:?} cannot be linearized", ops[i]));
        }
        configs = next;
    }
    Ok(())
}

/// Every configuration reachable by applying pending operations in some order.
fn closure(
    start: &HashSet<(State, BTreeSet<usize>)>,
    pending: &BTreeSet<usize>,
    ops: &[Op],
) -> HashSet<(State, BTreeSet<usize>)> {
    let mut seen: HashSet<(State, BTreeSet<usize>)> = start.clone();
    let mut frontier: Vec<(State, BTreeSet<usize>)> = start.iter().cloned().collect();
    while let Some((state, done)) = frontier.pop() {
        for &p in pending.iter().filter(|p| !done.contains(p)) {
            let op = &ops[p];
            let next_state = match &op.kind {
                OpKind::Read { value } if *value == state => state.clone(),
                OpKind::Cas { expected, new } if *expected == state => Some(new.clone()),
                _ => continue,
            };
            let mut next_done = done.clone();
            // Unknown writes never return: once applied they need no tracking (their value is
            // unique, so they cannot apply twice).
            if op.ret.is_some() {
                next_done.insert(p);
            }
            let config = (next_state, next_done);
            if seen.insert(config.clone()) {
                frontier.push(config);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(call: u64, ret: Option<u64>, expected: Option<&str>, new: &str) -> Op {
        Op { call, ret, kind: OpKind::Cas { expected: expected.map(str::to_string), new: new.into() } }
    }

    fn read(call: u64, ret: u64, value: Option<&str>) -> Op {
        Op { call, ret: Some(ret), kind: OpKind::Read { value: value.map(str::to_string) } }
    }

    #[test]
    fn accepts_linearizable_histories() {
        let h = [
            cas(0, Some(10), None, "a"),
            read(11, 12, Some("a")),
            cas(13, Some(20), Some("a"), "b"),
            read(15, 16, Some("a")),
        ];
        assert!(check(&h).is_ok(), "a read overlapping a write may see either value");
        let unknown =
            [cas(0, None, None, "a"), read(5, 6, None), read(7, 8, Some("a")), read(9, 10, Some("a"))];
        assert!(check(&unknown).is_ok(), "an unknown write may take effect late");
        let never = [cas(0, None, None, "a"), read(5, 6, None)];
        assert!(check(&never).is_ok(), "or never");
    }

    #[test]
    fn refuses_stale_reads_and_lost_writes() {
        let stale = [cas(0, Some(10), None, "a"), read(11, 12, None)];
        assert!(check(&stale).is_err(), "a read after an acknowledged write must see it");
        let flapping = [cas(0, None, None, "a"), read(5, 6, Some("a")), read(7, 8, None)];
        assert!(check(&flapping).is_err(), "a value cannot come and go");
        let lost = [cas(0, Some(5), None, "a"), cas(6, Some(9), Some("a"), "b"), read(10, 11, Some("a"))];
        assert!(check(&lost).is_err(), "an acknowledged write cannot be undone");
    }
}
