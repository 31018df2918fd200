//! Sending archives to object storage: OSS and S3 request signing, CRC-64 arithmetic, and the
//! upload client.

pub mod crc64;
pub mod digest;
pub mod error;
mod multipart;
pub mod ops;
pub mod oss_sign;
pub mod progress;
pub mod runner;
pub mod s3_sign;
pub mod store;
