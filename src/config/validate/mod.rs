//! From the raw file to a [`Config`]: defaults, path resolution and every rule, checked in one
//! pass that collects all problems (an operator fixes a file once, not once per error).
//!
//! Each default carries its reason here, next to the rule that uses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod tickets;
mod upload;

use super::locate::{Seg, line_column, render_path, span_of};
use super::raw::*;
use super::*;

pub(crate) use self::tickets::{TicketIndex, validate_tickets};

/// Validates one file of the tickets folder (only `[[tickets]]`), continuing `seen` from the
/// files before it.
pub(crate) fn validate_tickets_file(
    text: &str,
    source: &Path,
    default_tid: Option<i64>,
    seen: &mut TicketIndex,
) -> Result<Vec<TicketSpec>, Vec<Diagnostic>> {
    let raw: RawTicketsFile =
        toml::from_str(text).map_err(|err| vec![super::parse_diagnostic(text, source, &err)])?;
    let mut c = Checker {
        text,
        source,
        diagnostics: Vec::new(),
    };
    // A bad file must not claim its tickets in `seen`: validate on a copy first.
    let mut local = seen.clone();
    let tickets = validate_tickets(&mut c, raw.tickets, default_tid, &mut local);
    if c.diagnostics.is_empty() {
        *seen = local;
        Ok(tickets)
    } else {
        c.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(c.diagnostics)
    }
}

/// Connect timeout for the API; the official SDK's default is 5 s.
const DMS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A status query returns a small JSON body; 30 s covers a slow gateway without hiding a hang.
const DMS_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Five attempts ride out a throttling burst or a short gateway outage (1 + 4 retries).
const DMS_MAX_ATTEMPTS: u32 = 5;
/// Well under DMS's per-user flow control, even with many tickets.
const DMS_MAX_RPS: f64 = 10.0;
const POLL_INITIAL: Duration = Duration::from_secs(5);
/// Exports take minutes to hours; 5 minutes bounds the lag after one finishes.
const POLL_MAX: Duration = Duration::from_secs(300);
const POLL_MULTIPLIER: f64 = 2.0;
const POLL_JITTER: f64 = 0.2;
/// Three days: longer than any export DMS prepares, short enough to notice a lost one.
const POLL_GIVE_UP: Duration = Duration::from_secs(72 * 3600);
const DOWNLOAD_CONCURRENCY: u32 = 2;
const DOWNLOAD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stall detector, not a total timeout: a slow body that keeps moving never trips it.
const DOWNLOAD_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DOWNLOAD_MAX_ATTEMPTS: u32 = 10;
const ARCHIVE_MAX_UNPACKED: u64 = 64 * 1024 * 1024 * 1024;
const ARCHIVE_MAX_ENTRIES: u64 = 100_000;
/// A hook that ships an archive somewhere may take a while; 5 minutes, then it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// A hook gets three runs (a flaky network, a restart in between) before it counts as failed.
const HOOK_MAX_ATTEMPTS: u32 = 3;
/// The tickets folder beside the config, used when it exists.
pub(crate) const DEFAULT_TICKETS_DIR: &str = "tickets.d";

pub(crate) struct Checker<'a> {
    pub(crate) text: &'a str,
    pub(crate) source: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let span = span_of(self.text, path).unwrap_or(0..0);
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            file: self.source.to_owned(),
            line,
            column,
            key: Some(render_path(path)),
            message: message.into(),
        });
    }

    pub(crate) fn positive(&mut self, path: &[Seg], value: Duration) -> Duration {
        if value.is_zero() {
            self.error(path, "must be greater than zero");
        }
        value
    }

    pub(crate) fn url(&mut self, path: &[Seg], value: &str) -> Option<reqwest::Url> {
        match reqwest::Url::parse(value.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                if url.query().is_some() || url.fragment().is_some() {
                    self.error(path, format!("{value:?} must not have a query or fragment"));
                    None
                } else {
                    Some(url)
                }
            }
            Ok(_) => {
                self.error(path, format!("{value:?} is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.error(path, format!("{value:?} is not a URL: {e}"));
                None
            }
        }
    }
}

pub(crate) fn key(k: &'static str) -> Seg {
    Seg::Key(k)
}

pub(crate) fn resolve(base: &Path, value: &str) -> PathBuf {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    source: &Path,
    env: &ConfigEnv,
) -> Result<Config, Vec<Diagnostic>> {
    let base = source
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut c = Checker {
        text,
        source,
        diagnostics: Vec::new(),
    };

    let dms = validate_dms(&mut c, raw.dms);
    let (credentials, inline_secret_keys) =
        validate_credentials(&mut c, raw.credentials, &base, env);
    let poll = validate_poll(&mut c, raw.poll);
    let download = validate_download(&mut c, raw.download);

    let state_dir = match raw.state.dir {
        Some(dir) if dir.trim().is_empty() => {
            c.error(&[key("state"), key("dir")], "must not be empty");
            base.join("state")
        }
        Some(dir) => resolve(&base, &dir),
        None => env
            .state_directory
            .clone()
            .unwrap_or_else(|| base.join("state")),
    };
    let archive = validate_archive(&mut c, raw.archive, &base, env);
    let http = raw.http.map(|h| {
        let listen = h.listen.as_deref().unwrap_or("127.0.0.1:9464");
        let addr = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
            c.error(
                &[key("http"), key("listen")],
                format!("{listen:?} is not an address like \"127.0.0.1:9464\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 9464))
        });
        HttpSettings { listen: addr }
    });
    let upload = raw
        .upload
        .and_then(|u| upload::validate_upload(&mut c, u, &base, env));
    let hooks = validate_hooks(&mut c, raw.hooks, upload.is_some());
    let watch = match raw.watch.tickets_dir {
        Some(dir) if dir.trim().is_empty() => {
            c.error(&[key("watch"), key("tickets_dir")], "must not be empty");
            WatchSettings {
                tickets_dir: base.join(DEFAULT_TICKETS_DIR),
                explicit: false,
            }
        }
        Some(dir) => WatchSettings {
            tickets_dir: resolve(&base, &dir),
            explicit: true,
        },
        None => WatchSettings {
            tickets_dir: base.join(DEFAULT_TICKETS_DIR),
            explicit: false,
        },
    };
    let mut ticket_index = TicketIndex::new();
    let tickets = validate_tickets(&mut c, raw.tickets, dms.tid, &mut ticket_index);

    if c.diagnostics.is_empty() {
        Ok(Config {
            source: source.to_owned(),
            dms,
            credentials,
            poll,
            download,
            archive,
            state: StateSettings { dir: state_dir },
            http,
            hooks,
            upload,
            watch,
            tickets,
            ticket_files: Vec::new(),
            ticket_index,
            fingerprint: [0; 32],
            inline_secret_keys,
        })
    } else {
        c.diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(c.diagnostics)
    }
}

fn validate_dms(c: &mut Checker<'_>, raw: RawDms) -> DmsSettings {
    let path = |k| [key("dms"), key(k)];
    let endpoint = raw.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let endpoint = c
        .url(&path("endpoint"), endpoint)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.parse().expect("valid"));
    if let Some(tid) = raw.tid
        && tid <= 0
    {
        c.error(
            &path("tid"),
            format!("{tid} is not a tenant id (must be positive)"),
        );
    }
    let max_attempts = raw.max_attempts.unwrap_or(DMS_MAX_ATTEMPTS);
    if max_attempts == 0 {
        c.error(&path("max_attempts"), "must be at least 1");
    }
    let rps = raw.max_requests_per_second.unwrap_or(DMS_MAX_RPS);
    if !(rps.is_finite() && rps > 0.0) {
        c.error(
            &path("max_requests_per_second"),
            format!("{rps} must be a positive number"),
        );
    }
    DmsSettings {
        endpoint,
        signature: raw.signature.unwrap_or_default(),
        tid: raw.tid,
        connect_timeout: c.positive(
            &path("connect_timeout"),
            raw.connect_timeout.map_or(DMS_CONNECT_TIMEOUT, |d| d.0),
        ),
        request_timeout: c.positive(
            &path("request_timeout"),
            raw.request_timeout.map_or(DMS_REQUEST_TIMEOUT, |d| d.0),
        ),
        max_attempts,
        max_requests_per_second: rps,
    }
}

/// Resolves a file path of `[credentials]`: a leading `$CREDENTIALS_DIRECTORY/` (or
/// `${CREDENTIALS_DIRECTORY}/`) is systemd's credentials folder; other relative paths are
/// relative to the config file's folder.
pub(crate) fn resolve_credential_file(
    c: &mut Checker<'_>,
    section: &'static str,
    k: &'static str,
    value: &str,
    base: &Path,
    env: &ConfigEnv,
) -> PathBuf {
    for prefix in ["$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/"] {
        if let Some(rest) = value.strip_prefix(prefix) {
            return match &env.credentials_directory {
                Some(dir) => dir.join(rest),
                None => {
                    c.error(
                        &[key(section), key(k)],
                        "uses $CREDENTIALS_DIRECTORY, which is not set (systemd sets it with LoadCredential=)",
                    );
                    PathBuf::from(rest)
                }
            };
        }
    }
    resolve(base, value)
}

fn validate_credentials(
    c: &mut Checker<'_>,
    raw: RawCredentials,
    base: &Path,
    env: &ConfigEnv,
) -> (CredentialsSettings, Vec<&'static str>) {
    let path = |k| [key("credentials"), key(k)];
    let source = raw.source.unwrap_or_default();
    let mut inline = Vec::new();
    if raw.access_key_secret.is_some() {
        inline.push("credentials.access_key_secret");
    }
    if raw.security_token.is_some() {
        inline.push("credentials.security_token");
    }
    let nonempty = |c: &mut Checker<'_>, k: &'static str, v: Option<String>| -> Option<String> {
        match v {
            Some(v) if v.trim().is_empty() => {
                c.error(&path(k), "must not be empty");
                None
            }
            other => other,
        }
    };
    let access_key_id = nonempty(c, "access_key_id", raw.access_key_id);
    let access_key_secret =
        nonempty(c, "access_key_secret", raw.access_key_secret).map(Secret::from);
    let access_key_secret_file = nonempty(c, "access_key_secret_file", raw.access_key_secret_file)
        .map(|p| {
            resolve_credential_file(c, "credentials", "access_key_secret_file", &p, base, env)
        });
    let security_token = nonempty(c, "security_token", raw.security_token).map(Secret::from);

    // The static keys make sense for `static`, and as the source credentials of `ram_role_arn`.
    let takes_static = matches!(
        source,
        CredentialSource::Static | CredentialSource::RamRoleArn
    );
    if !takes_static {
        for (k, present) in [
            ("access_key_id", access_key_id.is_some()),
            ("access_key_secret", access_key_secret.is_some()),
            ("access_key_secret_file", access_key_secret_file.is_some()),
            ("security_token", security_token.is_some()),
        ] {
            if present {
                c.error(&path(k), format!("is only used with source = \"static\" or \"ram_role_arn\", not \"{source}\""));
            }
        }
    }
    if takes_static {
        let static_given = access_key_id.is_some()
            || access_key_secret.is_some()
            || access_key_secret_file.is_some();
        if source == CredentialSource::Static || static_given {
            if access_key_id.is_none() {
                c.error(
                    &path("source"),
                    format!("source = \"{source}\" with static keys needs access_key_id"),
                );
            }
            match (&access_key_secret, &access_key_secret_file) {
                (Some(_), Some(_)) => c.error(
                    &path("access_key_secret_file"),
                    "set access_key_secret or access_key_secret_file, not both",
                ),
                (None, None) => c.error(
                    &path("source"),
                    format!("source = \"{source}\" with static keys needs access_key_secret_file (or access_key_secret)"),
                ),
                _ => {}
            }
        }
    }
    let url = |c: &mut Checker<'_>, k: &'static str, v: Option<String>| {
        v.and_then(|v| c.url(&path(k), &v))
    };
    let metadata_endpoint = url(c, "metadata_endpoint", raw.metadata_endpoint);
    let sts_endpoint = url(c, "sts_endpoint", raw.sts_endpoint);
    let credentials_uri = url(c, "credentials_uri", raw.credentials_uri);
    let session_duration = raw.session_duration.map(|d| d.0);
    if let Some(d) = session_duration
        && !(900..=43200).contains(&d.as_secs())
    {
        c.error(
            &path("session_duration"),
            "must be between 15m and 12h (STS DurationSeconds 900..43200)",
        );
    }
    let settings = CredentialsSettings {
        source,
        access_key_id,
        access_key_secret,
        access_key_secret_file,
        security_token,
        profile: nonempty(c, "profile", raw.profile),
        role_name: nonempty(c, "role_name", raw.role_name),
        metadata_endpoint,
        role_arn: nonempty(c, "role_arn", raw.role_arn),
        oidc_provider_arn: nonempty(c, "oidc_provider_arn", raw.oidc_provider_arn),
        oidc_token_file: nonempty(c, "oidc_token_file", raw.oidc_token_file)
            .map(|p| resolve(base, &p)),
        role_session_name: nonempty(c, "role_session_name", raw.role_session_name),
        sts_endpoint,
        sts_region: nonempty(c, "sts_region", raw.sts_region),
        session_duration,
        policy: nonempty(c, "policy", raw.policy),
        external_id: nonempty(c, "external_id", raw.external_id),
        credentials_uri,
    };
    (settings, inline)
}

fn validate_poll(c: &mut Checker<'_>, raw: RawPoll) -> PollSettings {
    let path = |k| [key("poll"), key(k)];
    let initial = c.positive(
        &path("initial_interval"),
        raw.initial_interval.map_or(POLL_INITIAL, |d| d.0),
    );
    let max = c.positive(
        &path("max_interval"),
        raw.max_interval.map_or(POLL_MAX, |d| d.0),
    );
    if initial > max {
        c.error(
            &path(if raw.initial_interval.is_some() {
                "initial_interval"
            } else {
                "max_interval"
            }),
            format!(
                "initial_interval ({}) is greater than max_interval ({})",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ),
        );
    }
    let multiplier = raw.multiplier.unwrap_or(POLL_MULTIPLIER);
    if !(multiplier.is_finite() && multiplier >= 1.0) {
        c.error(
            &path("multiplier"),
            format!("{multiplier} must be at least 1.0"),
        );
    }
    let jitter = raw.jitter.unwrap_or(POLL_JITTER);
    if !(0.0..1.0).contains(&jitter) {
        c.error(&path("jitter"), format!("{jitter} is outside [0, 1)"));
    }
    PollSettings {
        initial_interval: initial,
        max_interval: max,
        multiplier,
        jitter,
        give_up_after: c.positive(
            &path("give_up_after"),
            raw.give_up_after.map_or(POLL_GIVE_UP, |d| d.0),
        ),
    }
}

fn validate_download(c: &mut Checker<'_>, raw: RawDownload) -> DownloadSettings {
    let path = |k| [key("download"), key(k)];
    let concurrency = raw.concurrency.unwrap_or(DOWNLOAD_CONCURRENCY);
    if concurrency == 0 {
        c.error(&path("concurrency"), "must be at least 1");
    }
    let max_attempts = raw.max_attempts.unwrap_or(DOWNLOAD_MAX_ATTEMPTS);
    if max_attempts == 0 {
        c.error(&path("max_attempts"), "must be at least 1");
    }
    DownloadSettings {
        concurrency: concurrency.max(1) as usize,
        connect_timeout: c.positive(
            &path("connect_timeout"),
            raw.connect_timeout
                .map_or(DOWNLOAD_CONNECT_TIMEOUT, |d| d.0),
        ),
        read_timeout: c.positive(
            &path("read_timeout"),
            raw.read_timeout.map_or(DOWNLOAD_READ_TIMEOUT, |d| d.0),
        ),
        max_attempts,
        verify_crc64: raw.verify_crc64.unwrap_or(true),
    }
}

fn validate_archive(
    c: &mut Checker<'_>,
    raw: RawArchive,
    base: &Path,
    env: &ConfigEnv,
) -> ArchiveSettings {
    let path = |k| [key("archive"), key(k)];
    let dir = match raw.dir {
        Some(dir) if dir.trim().is_empty() => {
            c.error(&path("dir"), "must not be empty");
            base.join("archive")
        }
        Some(dir) => resolve(base, &dir),
        None => env
            .state_directory
            .as_ref()
            .map(|s| s.join("archive"))
            .unwrap_or_else(|| base.join("archive")),
    };
    let max_unpacked_bytes = raw.max_unpacked_bytes.map_or(ARCHIVE_MAX_UNPACKED, |s| s.0);
    if max_unpacked_bytes == 0 {
        c.error(&path("max_unpacked_bytes"), "must be greater than zero");
    }
    let max_entries = raw.max_entries.unwrap_or(ARCHIVE_MAX_ENTRIES);
    if max_entries == 0 {
        c.error(&path("max_entries"), "must be at least 1");
    }
    let retention = raw.retention.map(|d| c.positive(&path("retention"), d.0));
    ArchiveSettings {
        dir,
        keep_zip: raw.keep_zip.unwrap_or(false),
        max_unpacked_bytes,
        max_entries,
        retention,
    }
}

/// The placeholders a hook argument may use; `{url}` only in `on_uploaded`.
pub(crate) const HOOK_PLACEHOLDERS: [&str; 4] =
    ["{dir}", "{order_id}", "{download_key_id}", "{url}"];

fn validate_hook_argv(c: &mut Checker<'_>, name: &'static str, argv: &[String]) {
    let at = [key("hooks"), key(name)];
    match argv.first() {
        None => c.error(
            &at,
            "must name a program: [\"/path/to/program\", \"{dir}\"]",
        ),
        Some(program) if program.trim().is_empty() => {
            c.error(&at, "the program (first element) is empty")
        }
        _ => {}
    }
    let allowed: &[&str] = if name == "on_uploaded" {
        &HOOK_PLACEHOLDERS
    } else {
        &HOOK_PLACEHOLDERS[..3]
    };
    for (i, arg) in argv.iter().enumerate() {
        let mut rest = arg.as_str();
        while let Some(open) = rest.find('{') {
            let Some(len) = rest[open..].find('}') else {
                break;
            };
            let placeholder = &rest[open..open + len + 1];
            // Only what looks like one of ours (`{lower_case}`) is taken for a mistyped
            // placeholder; `${SHELL_VAR}` in a `sh -c` script or JSON like `{"a": 1}` is
            // passed on as written.
            let shaped = placeholder.len() > 2
                && placeholder[1..placeholder.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_');
            if shaped && !allowed.contains(&placeholder) {
                c.error(
                    &[key("hooks"), key(name), Seg::Index(i)],
                    format!(
                        "unknown placeholder {placeholder}; use {} or {}",
                        allowed[..allowed.len() - 1].join(", "),
                        allowed[allowed.len() - 1]
                    ),
                );
            }
            rest = &rest[open + len + 1..];
        }
    }
}

fn validate_hooks(c: &mut Checker<'_>, raw: RawHooks, uploads: bool) -> HookSettings {
    let path = |k| [key("hooks"), key(k)];
    if let Some(argv) = &raw.on_archived {
        validate_hook_argv(c, "on_archived", argv);
    }
    if let Some(argv) = &raw.on_uploaded {
        validate_hook_argv(c, "on_uploaded", argv);
        if !uploads {
            c.error(
                &path("on_uploaded"),
                "runs after an upload, but there is no [upload] section",
            );
        }
    }
    let max_attempts = raw.max_attempts.unwrap_or(HOOK_MAX_ATTEMPTS);
    if max_attempts == 0 {
        c.error(&path("max_attempts"), "must be at least 1");
    }
    HookSettings {
        on_archived: raw.on_archived,
        on_uploaded: raw.on_uploaded,
        timeout: c.positive(&path("timeout"), raw.timeout.map_or(HOOK_TIMEOUT, |d| d.0)),
        max_attempts: max_attempts.max(1),
    }
}
