//! The deterministic simulation of the bank: seeded workloads over a fault-injecting
//! store, with crashes, evictions, snapshots, redeliveries, rebuilds, dead letters and
//! replays into copies, and the invariants checked as it goes. See `simulation.rs`.

pub mod checks;
pub mod faults;
pub mod run;
pub mod workload;
pub mod world;
