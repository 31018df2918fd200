//! The running process around the watch loop: wiring a config into services, reloads,
//! systemd notifications, the HTTP listener and log output.

pub mod config_watch;
pub mod daemon;
pub mod http;
pub mod logging;
pub mod notify;
pub mod services;
