//! What every layer reports to: Prometheus metrics, liveness and readiness, and the per-state
//! ticket summary. It depends on nothing above it, so any layer can reach it.

pub mod health;
pub mod metrics;
pub mod process;
pub mod summary;

pub use metrics::{Metrics, Telemetry};
pub use summary::Summary;
