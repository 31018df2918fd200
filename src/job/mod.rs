//! Work done on a ticket after its archive is published (upload to object storage).

pub mod upload;
