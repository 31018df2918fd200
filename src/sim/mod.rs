//! Built-in simulators of the services dmstrack talks to, all on 127.0.0.1: DMS (signature
//! checks, scripted statuses, faults), OSS (V1 presigned URLs, Range, CRC-64, faults), and
//! sample export zips. `dmstrack demo` and the tests use them; nothing here is used in
//! production paths.

pub mod credentials;
pub mod dms;
pub mod oss;
pub mod zipgen;
