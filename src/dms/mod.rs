//! The DMS Enterprise API: wire types ([`types`]) and the retrying client ([`client`]).
//! Request signing is pure and lives below, in `net::signer`.

pub mod client;
#[cfg(test)]
pub(crate) mod golden_tests;
pub mod types;

pub use client::{DmsClient, DmsError, GatewayError};
pub use types::{DownloadStatus, ExportStatus};
