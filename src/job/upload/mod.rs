//! Uploading archives to OSS: request signing and CRC-64 arithmetic.

pub mod crc64;
pub mod oss_sign;
