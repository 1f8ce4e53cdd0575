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

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.plan.read().unwrap_or_else(|p| p.into_inner()).delay_ms)
    }
}
