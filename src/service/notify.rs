//! systemd service notifications (sd_notify(3)): readiness, status, reload, stop and watchdog
//! pings over `$NOTIFY_SOCKET`. Outside systemd (no socket) every call is a no-op.
//!
//! The `sd-notify` crate is not used for sending: it reads `NOTIFY_SOCKET` from the process
//! environment on every call, so tests could only point it at their socket by mutating the
//! environment (unsafe in edition 2024 and racy across parallel tests), and it does not handle
//! systemd's abstract-namespace form `@name`. A datagram to a unix socket is all the protocol
//! needs, so [`Notifier`] sends it itself. The crate still provides the `CLOCK_MONOTONIC` read
//! for `MONOTONIC_USEC` (the crate forbids `unsafe`, and the read needs `clock_gettime`).

use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use tracing::debug;

/// A send that blocks longer than this is given up: a stalled service manager must not stall
/// the daemon's loop (the datagram is tiny, so a healthy manager takes it at once).
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends state changes to the service manager. Cheap to call; failures are logged at debug
/// level and never returned, since a missed notification must not stop the daemon.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    /// `WATCHDOG_USEC` as given by the service manager, when it is meant for this process.
    watchdog: Option<Duration>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment. The
    /// watchdog applies only when `WATCHDOG_PID` is unset or names this process (a child that
    /// inherited the variables must not ping on its parent's behalf).
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// A notifier that sends to `path` (a filesystem path, or `@name` for the abstract
    /// namespace), with the given full watchdog timeout (`WATCHDOG_USEC`).
    pub fn to_socket(path: impl Into<PathBuf>, watchdog: Option<Duration>) -> Self {
        let path = path.into();
        Self {
            target: Target::open(path.as_os_str()),
            watchdog: watchdog.filter(|d| !d.is_zero()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    fn from_vars(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        our_pid: u32,
    ) -> Self {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Self::disabled();
        };
        let pid_is_ours = match watchdog_pid {
            None => true,
            Some(pid) => pid.trim().parse::<u32>().is_ok_and(|pid| pid == our_pid),
        };
        let watchdog = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|_| pid_is_ours)
            .map(Duration::from_micros);
        Self::to_socket(PathBuf::from(socket), watchdog)
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup (or a reload) is complete.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=…`, folded onto one line (the protocol is line-based).
    pub fn status(&self, line: &str) {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.send(&format!("STATUS={}", line.trim()));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, which systemd ≥ 253 requires to match the reload
    /// to its request. Follow with [`ready`](Self::ready) when the reload is done.
    pub fn reloading(&self) {
        if !self.is_enabled() {
            return;
        }
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&format!("RELOADING=1\n{now}")),
            Err(e) => {
                debug!(error = %e, "cannot read CLOCK_MONOTONIC; sending RELOADING=1 alone");
                self.send("RELOADING=1");
            }
        }
    }

    /// `WATCHDOG=1`: the main loop is alive. Call it every [`watchdog_interval`](Self::watchdog_interval).
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to call [`watchdog`](Self::watchdog): half the service manager's timeout,
    /// as sd_watchdog_enabled(3) advises. `None` when no watchdog is configured for us.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.is_enabled()).map(|d| d / 2)
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        match target.socket.send_to_addr(message.as_bytes(), &target.addr) {
            Ok(sent) if sent == message.len() => {}
            Ok(sent) => debug!(sent, len = message.len(), "sd_notify message was cut short"),
            Err(e) => debug!(error = %e, "cannot send sd_notify message"),
        }
    }
}

impl Target {
    fn open(path: &OsStr) -> Option<Self> {
        let addr = match parse_address(path) {
            Ok(addr) => addr,
            Err(e) => {
                debug!(socket = ?path, error = %e, "unusable NOTIFY_SOCKET; notifications are off");
                return None;
            }
        };
        let socket = UnixDatagram::unbound()
            .and_then(|socket| {
                socket.set_write_timeout(Some(SEND_TIMEOUT))?;
                Ok(socket)
            })
            .inspect_err(|e| debug!(error = %e, "cannot create the sd_notify socket"))
            .ok()?;
        Some(Self { socket, addr })
    }
}

/// `/path` → a filesystem address; `@name` → the abstract name `name` (systemd writes the
/// leading NUL byte of an abstract address as `@`).
fn parse_address(path: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = path.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(path),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "expected an absolute path or @name, got {:?}",
                OsString::from(path)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for systemd: a datagram socket in a temporary folder.
    struct Manager {
        _dir: tempfile::TempDir,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl Manager {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Self {
                _dir: dir,
                path,
                socket,
            }
        }

        fn notifier(&self) -> Notifier {
            Notifier::to_socket(&self.path, None)
        }

        fn receive(&self) -> String {
            let mut buf = [0u8; 4096];
            let len = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..len].to_vec()).unwrap()
        }
    }

    #[test]
    fn ready_sends_ready() {
        let manager = Manager::new();
        manager.notifier().ready();
        assert_eq!(manager.receive(), "READY=1");
    }

    #[test]
    fn stopping_sends_stopping() {
        let manager = Manager::new();
        manager.notifier().stopping();
        assert_eq!(manager.receive(), "STOPPING=1");
    }

    #[test]
    fn watchdog_sends_watchdog_ping() {
        let manager = Manager::new();
        manager.notifier().watchdog();
        assert_eq!(manager.receive(), "WATCHDOG=1");
    }

    #[test]
    fn status_is_folded_onto_one_line() {
        let manager = Manager::new();
        manager
            .notifier()
            .status("2 waiting, 0 archived; last error: boom\nat line 2\r\n");
        assert_eq!(
            manager.receive(),
            "STATUS=2 waiting, 0 archived; last error: boom at line 2"
        );
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let manager = Manager::new();
        let clock = || match sd_notify::NotifyState::monotonic_usec_now().unwrap() {
            sd_notify::NotifyState::MonotonicUsec(usec) => usec,
            other => panic!("unexpected {other:?}"),
        };
        let before = clock();
        manager.notifier().reloading();
        let after = clock();
        let message = manager.receive();
        let (first, second) = message.split_once('\n').expect("two lines");
        assert_eq!(first, "RELOADING=1");
        let usec: i128 = second
            .strip_prefix("MONOTONIC_USEC=")
            .expect("MONOTONIC_USEC line")
            .parse()
            .unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn abstract_namespace_socket_is_reached() {
        let name = format!(
            "dmstrack-notify-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Notifier::to_socket(format!("@{name}"), None).ready();
        let mut buf = [0u8; 64];
        let len = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        let manager = Manager::new();
        let notifier = Notifier::to_socket(&manager.path, Some(Duration::from_secs(60)));
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(30)));
        assert_eq!(manager.notifier().watchdog_interval(), None);
    }

    #[test]
    fn watchdog_usec_applies_only_to_our_pid() {
        let manager = Manager::new();
        let socket = Some(manager.path.as_os_str());
        let interval = |usec, pid| Notifier::from_vars(socket, usec, pid, 4242).watchdog_interval();
        assert_eq!(
            interval(Some("20000000"), Some("4242")),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            interval(Some("20000000"), None),
            Some(Duration::from_secs(10))
        );
        assert_eq!(interval(Some("20000000"), Some("4243")), None);
        assert_eq!(interval(Some("20000000"), Some("not-a-pid")), None);
        assert_eq!(interval(Some("soon"), Some("4242")), None);
        assert_eq!(interval(Some("0"), Some("4242")), None);
        assert_eq!(interval(None, Some("4242")), None);
    }

    #[test]
    fn from_vars_sends_to_the_named_socket() {
        let manager = Manager::new();
        let notifier = Notifier::from_vars(Some(manager.path.as_os_str()), None, None, 1);
        assert!(notifier.is_enabled());
        notifier.status("hello");
        assert_eq!(manager.receive(), "STATUS=hello");
    }

    #[test]
    fn without_a_socket_everything_is_a_no_op() {
        let notifier = Notifier::from_vars(None, Some("20000000"), None, 1);
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
        notifier.status("x");
        notifier.reloading();
        notifier.watchdog();
        notifier.stopping();
        let empty = Notifier::from_vars(Some(OsStr::new("")), None, None, 1);
        assert!(!empty.is_enabled());
    }

    #[test]
    fn a_vanished_or_bad_socket_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let gone = Notifier::to_socket(dir.path().join("nobody-listens"), None);
        assert!(gone.is_enabled());
        gone.ready();
        gone.watchdog();
        let relative = Notifier::to_socket("relative/notify", None);
        assert!(!relative.is_enabled());
        relative.ready();
    }
}
