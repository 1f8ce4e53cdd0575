//! End-to-end tests with real `wasmlet` and `wasmctl` processes: the processes come from
//! `wasmkube-fleet` (shared with the benchmarks); this crate adds what only tests need.

pub mod linearizability;

pub use wasmkube_fleet::*;
