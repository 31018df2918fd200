//! Built-in simulators of the services dmstrack talks to, all on 127.0.0.1: DMS (signature
//! checks, scripted statuses, faults), OSS (V1 presigned URLs, Range, CRC-64, faults), and
//! sample export zips. `dmstrack demo` and the tests use them; nothing here is used in
//! production paths.

pub mod credentials;
pub mod dms;
pub mod oss;
pub mod zipgen;

/// Writes a simulator AccessKey secret to `path`, readable by its owner only (the configs the
/// demo and the benchmark write point `access_key_secret_file` at it).
pub fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())
}
