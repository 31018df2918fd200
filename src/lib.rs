//! dmstrack archives Alibaba Cloud DMS Enterprise data-tracking exports unattended.
//!
//! See README.md ("Architecture") for how the modules fit together.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod dms;
pub mod extract;
pub mod logging;
pub mod net;
pub mod ratelimit;
pub mod retry;
pub mod secret;
pub mod signed_url;
pub mod sim;
