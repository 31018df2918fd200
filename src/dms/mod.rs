//! The DMS Enterprise API: request signing ([`signer`]), wire types ([`types`]) and the
//! retrying client ([`client`]).

pub mod client;
pub mod types;

pub use client::{DmsClient, DmsError, GatewayError};
pub use types::{DownloadStatus, ExportStatus};
