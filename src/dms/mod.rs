//! The DMS Enterprise API: request signing ([`signer`]), wire types ([`types`]) and the
//! retrying client ([`client`]).

pub mod client;
#[cfg(test)]
pub(crate) mod golden_tests;
pub mod signer;
pub mod types;

pub use client::{DmsClient, DmsError, GatewayError};
pub use types::{DownloadStatus, ExportStatus};
