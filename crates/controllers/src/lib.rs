//! Reconcile loops that run on the Raft leader: the deployment controller (replicas and
//! rolling replacement), pod placement through the scheduler, garbage collection of pods
//! whose Deployment is gone, node lifecycle (NotReady, eviction), and expiry of old events.
//!
//! Decisions are pure functions from objects to a list of `Action`s (tested directly); the
//! loop in `runner` keeps a `ClusterView` current from the store's changes, plans the keys
//! that changed, executes the actions through Raft, and repeats. Leadership is the lease: a
//! node that is not leader decides nothing (and holds no view).

mod actions;
mod autoscale;
pub mod autoscaler;
mod deployment;
mod events;
mod faults;
mod nodes;
mod placement;
pub mod revisions;
mod runner;
mod view;

pub use actions::{Action, PlanContext, event_for};
pub use deployment::{plan_deployment, plan_orphans, template_hash};
pub use events::{BUDGET_PER_PASS, EVENT_TTL, EventRecorder, REPEAT_EVERY, plan_event_gc};
#[cfg(debug_assertions)]
pub use faults::inject_panic;
pub use nodes::{
    EVICT_AFTER, FENCE_AFTER, HEARTBEAT, HeartbeatClock, NODE_GRACE, NOT_READY_AFTER, lost_nodes,
    plan_node_lifecycle,
};
pub use placement::plan_placement;
pub use runner::{ControllerConfig, run};
pub use view::{ClusterView, Dirty};
