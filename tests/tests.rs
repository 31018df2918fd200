//! The integration test binary (one binary, as ripgrep does, so it links once).
//!
//! - `dms_client`: the API client against the DMS simulator: retries, faults, nonces, rate
//!   limit, secrets.
//! - `cli`: the `dmstrack` binary: exit codes, output, config errors.
//! - `operations`: running in production: sd_notify, SIGHUP reloads, metrics, health
//!   endpoints, JSON logs, hooks, read-only containers.

mod support;

mod cli;
mod dms_client;
mod operations;
