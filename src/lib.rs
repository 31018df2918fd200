//! dmstrack archives Alibaba Cloud DMS Enterprise data-tracking exports unattended.
//!
//! The modules are layers, and every arrow points down (README.md, "Architecture"):
//!
//! ```text
//! cli ─▶ service ─▶ watch ─▶ job ─▶ dms ─▶ credentials ─▶ config ─▶ telemetry, net
//! ```
//!
//! `sim` holds the loopback simulators of DMS, OSS and the credential services that `demo`
//! and the tests use; it is the default cargo feature `sim`, left out of
//! `--no-default-features` builds.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod dms;
pub mod job;
pub mod net;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod telemetry;
pub mod watch;
