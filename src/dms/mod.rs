//! The DMS Enterprise API: request signing ([`signer`]), wire types and the client.

pub mod signer;
