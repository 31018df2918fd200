//! dmstrack archives Alibaba Cloud DMS Enterprise data-tracking exports unattended.
//!
//! See README.md ("Architecture") for how the modules fit together.

pub mod archive;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod demo;
pub mod dms;
pub mod download;
pub mod extract;
pub mod health;
pub mod hooks;
pub mod http;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod pipeline;
pub mod ratelimit;
pub mod retry;
pub mod scheduler;
pub mod secret;
pub mod signed_url;
pub mod sim;
pub mod state;
