//! The integration test binary (one binary, as ripgrep does, so it links once).
//!
//! - `dms_client`: the API client against the DMS simulator: retries, faults, nonces, rate
//!   limit, secrets.
//! - `cli`: the `dmstrack` binary: exit codes, output, config errors.
//! - `keyless`: role-based credentials end to end (STS, IMDS, RRSA fakes).

mod support;

mod cli;
mod dms_client;
mod keyless;
