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

/// Writes an executable script to `path` (mode 0755) so that it can be run at once, even while
/// other threads of this process start programs.
///
/// A file written here and then executed races with any concurrent `fork`: the child inherits
/// the open write descriptor until its `exec`, and executing a file that some process holds
/// open for writing fails with `ETXTBSY` ("Text file busy"). So the bytes go to a side file
/// that is never executed, and `install(1)` — a separate process — creates the executable;
/// no descriptor that writes to it ever exists in this process.
pub fn write_executable(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    let mut source = path.as_os_str().to_owned();
    source.push(".src");
    let source = std::path::PathBuf::from(source);
    std::fs::write(&source, content)?;
    let status = std::process::Command::new("install")
        .arg("-m")
        .arg("0755")
        .arg(&source)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .status()?;
    std::fs::remove_file(&source)?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "install -m 0755 {} failed: {status}",
            path.display()
        )))
    }
}
