//! Sending archives to object storage: request signing and the upload client.

pub mod s3_sign;
