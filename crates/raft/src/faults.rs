//! Injected network faults for tests: peers this node cannot reach (in either direction), a
//! share of messages dropped, and a delay. Empty by default; the daemon exposes a way to set
//! them only in debug builds (see `wasmlet`'s `/debug/v1/faults`).

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultPlan {
    /// Peers cut off from this node: nothing is sent to them or accepted from them.
    #[serde(default)]
    pub partitioned_from: HashSet<u64>,
    /// Percentage (0-100) of outgoing messages dropped at random.
    #[serde(default)]
    pub drop_percent: u8,
    /// Delay added before each outgoing batch.
    #[serde(default)]
    pub delay_ms: u64,
    /// How many of the next outgoing snapshots are lost in flight (the sender sees the
    /// send fail, as it would on a broken connection).
    #[serde(default)]
    pub lose_snapshots: u32,
    /// Delay before this node answers a peer's request for module bytes (a slow pull, as
    /// over a poor link).
    #[serde(default)]
    pub blob_delay_ms: u64,
}

#[derive(Default)]
pub struct Faults {
    plan: RwLock<FaultPlan>,
}

impl Faults {
    pub fn set(&self, plan: FaultPlan) {
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    pub fn plan(&self) -> FaultPlan {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn cut(&self, peer: u64) -> bool {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).partitioned_from.contains(&peer)
    }

    /// Whether to drop one outgoing message, by the plan's percentage.
    pub(crate) fn drop_one(&self) -> bool {
        let percent = self.plan.read().unwrap_or_else(|p| p.into_inner()).drop_percent;
        percent > 0 && rand::random_range(0..100u8) < percent
    }

    /// Whether to lose this outgoing snapshot, by the plan's count (which it uses up).
    pub(crate) fn lose_snapshot(&self) -> bool {
        let mut plan = self.plan.write().unwrap_or_else(|p| p.into_inner());
        let lose = plan.lose_snapshots > 0;
        plan.lose_snapshots = plan.lose_snapshots.saturating_sub(1);
        lose
    }

    /// How long to hold a peer's request for module bytes before answering it.
    pub fn blob_delay(&self) -> Duration {
        Duration::from_millis(self.plan.read().unwrap_or_else(|p| p.into_inner()).blob_delay_ms)
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.plan.read().unwrap_or_else(|p| p.into_inner()).delay_ms)
    }
}
