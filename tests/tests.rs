//! The integration test binary (one binary, as ripgrep does, so it links once).
//!
//! - `dms_client`: the API client against the DMS simulator: retries, faults, nonces, rate
//!   limit, secrets.
//! - `cli`: the `dmstrack` binary: exit codes, output, config errors.
//! - `install`: the shipped example config and systemd units as installed: state in
//!   `$STATE_DIRECTORY`, keyless hosts, `status` naming its folder; log settings from the
//!   environment, shell completions.
//! - `keyless`: role-based credentials end to end (STS, IMDS, RRSA fakes).
//! - `manage`: the tickets folder, reloads without a signal (atomic rename, ConfigMap
//!   symlink swap), `add`, `retry` and `forget` with the daemon running and stopped.
//! - `pipeline`: the daemon in process against both simulators on paused time: the whole
//!   way from status query to published archive, faults, unsafe zips, restarts, secrets, scale.
//! - `process`: the real binary under SIGKILL, SIGTERM, `run --once` exit codes, and as an
//!   unprivileged user that may write only the state and archive folders.
//! - `proxy`: HTTP_PROXY / NO_PROXY for API, STS and OSS traffic; metadata goes direct.
//! - `review`: the review's findings as the situations that went wrong: an archive already
//!   there, keep_zip and a failed publish, one download limit across reloads, bounded bodies,
//!   redirects, secrets echoed by STS, one daemon per archive folder, a non-blocking resume.
//! - `s3_moto`: S3 requests signed by our SigV4 signer against a real S3 server (moto).
//! - `upload`: archives to the OSS simulator and to a real S3 server (moto): the zip or the
//!   files then the manifest, multipart, faults, refused credentials, a stop mid-upload,
//!   hooks at least once, keep_local.
//! - `operations`: running in production: sd_notify, SIGHUP reloads, metrics, health
//!   endpoints, JSON logs, hooks, read-only containers.

mod support;

mod cli;
mod dms_client;
mod install;
mod keyless;
mod manage;
mod operations;
mod pipeline;
mod process;
mod proxy;
mod review;
mod s3_moto;
mod upload;
