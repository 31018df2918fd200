//! dmstrack archives Alibaba Cloud DMS Enterprise data-tracking exports unattended.
//!
//! See README.md ("Architecture") for how the modules fit together.

pub mod config;
pub mod credentials;
pub mod dms;
pub mod extract;
pub mod secret;
pub mod sim;
