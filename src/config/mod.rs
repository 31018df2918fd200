//! The configuration: where the file is found, the typed settings every module receives, and
//! the errors that point at `file:line:column`.
//!
//! Loading runs in two stages. `raw.rs` deserializes the TOML text straight into structs that
//! reject unknown keys (so toml reports the position of a typo, a wrong type or a bad
//! duration); `validate.rs` then applies defaults, resolves paths and checks every rule in one
//! pass, collecting all problems, each located with `locate.rs`.

mod locate;
mod raw;
mod tickets_dir;
mod validate;

pub use tickets_dir::{TicketFile, fingerprint_on_disk, tickets_file_paths};

/// Validates the text of a tickets file (as if read from `source`) against the tickets in
/// `seen`, which it extends; `dmstrack add` checks a new file with it before writing it.
pub(crate) fn validate_tickets_text(
    text: &str,
    source: &Path,
    default_tid: Option<i64>,
    seen: &mut validate::TicketIndex,
) -> Result<Vec<TicketSpec>, Vec<Diagnostic>> {
    validate::validate_tickets_file(text, source, default_tid, seen)
}

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::secret::Secret;
use crate::net::signer::SignatureVersion;

/// The official endpoint: DMS Enterprise uses the central endpoint for every region.
pub const DEFAULT_ENDPOINT: &str = "https://dms-enterprise.aliyuncs.com";
/// The system-wide config file, the last place looked at.
pub const SYSTEM_CONFIG: &str = "/etc/dmstrack/config.toml";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (absolute when it could be made so).
    pub source: PathBuf,
    /// `[dms]`.
    pub dms: DmsSettings,
    /// `[credentials]`.
    pub credentials: CredentialsSettings,
    /// `[poll]`.
    pub poll: PollSettings,
    /// `[download]`.
    pub download: DownloadSettings,
    /// `[archive]`.
    pub archive: ArchiveSettings,
    /// `[state]`.
    pub state: StateSettings,
    /// `[http]`; `None` means no listener.
    pub http: Option<HttpSettings>,
    /// `[hooks]`.
    pub hooks: HookSettings,
    /// `[upload]`; `None` means archives stay local.
    pub upload: Option<UploadSettings>,
    /// `[watch]`.
    pub watch: WatchSettings,
    /// `[[tickets]]`: the main file's in file order, then those of the tickets folder, file
    /// by file in name order.
    pub tickets: Vec<TicketSpec>,
    /// The files of the tickets folder and what became of each (a bad one is skipped).
    pub ticket_files: Vec<TicketFile>,
    /// Where each ticket is listed, for messages that name it.
    pub(crate) ticket_index: validate::TicketIndex,
    /// The contents it was read from ([`fingerprint_on_disk`] tells whether they changed).
    pub fingerprint: [u8; 32],
    /// Keys holding a secret inline (`credentials.access_key_secret`, …), for `check`'s warning.
    pub inline_secret_keys: Vec<&'static str>,
}

/// `[dms]`: how to reach and call the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DmsSettings {
    /// Base URL (http or https); requests go to its `/`.
    pub endpoint: reqwest::Url,
    /// Signature algorithm.
    pub signature: SignatureVersion,
    /// Default tenant id for every ticket.
    pub tid: Option<i64>,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout of one API call.
    pub request_timeout: Duration,
    /// Attempts per API call for retryable failures.
    pub max_attempts: u32,
    /// One limit over every API call of the process.
    pub max_requests_per_second: f64,
}

/// Which credential provider to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// The Alibaba Cloud default chain, in the official SDKs' order.
    #[default]
    Default,
    /// `access_key_id` + `access_key_secret(_file)` [+ `security_token`] from this file.
    Static,
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `ALIBABA_CLOUD_SECURITY_TOKEN`.
    Env,
    /// `~/.aliyun/config.json` or `~/.alibabacloud/credentials.ini`.
    Profile,
    /// The ECS instance's RAM role via the metadata service.
    EcsRamRole,
    /// RRSA: `AssumeRoleWithOIDC` with a projected token file.
    Oidc,
    /// STS `AssumeRole` signed with source credentials.
    RamRoleArn,
    /// A credentials URI returning JSON.
    Uri,
}

impl CredentialSource {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Static => "static",
            Self::Env => "env",
            Self::Profile => "profile",
            Self::EcsRamRole => "ecs_ram_role",
            Self::Oidc => "oidc",
            Self::RamRoleArn => "ram_role_arn",
            Self::Uri => "uri",
        }
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[credentials]`. Paths are resolved against the config file's folder. Secrets are masked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CredentialsSettings {
    /// The provider.
    pub source: CredentialSource,
    /// Static AccessKey id.
    pub access_key_id: Option<String>,
    /// Static secret written inline (discouraged).
    pub access_key_secret: Option<Secret>,
    /// File holding the static secret (read at start and on reload).
    pub access_key_secret_file: Option<PathBuf>,
    /// Static STS token.
    pub security_token: Option<Secret>,
    /// Profile name for `profile`.
    pub profile: Option<String>,
    /// ECS RAM role name.
    pub role_name: Option<String>,
    /// ECS metadata service base URL.
    pub metadata_endpoint: Option<reqwest::Url>,
    /// Role ARN for `oidc` and `ram_role_arn`.
    pub role_arn: Option<String>,
    /// OIDC provider ARN.
    pub oidc_provider_arn: Option<String>,
    /// Projected OIDC token file, re-read at every refresh.
    pub oidc_token_file: Option<PathBuf>,
    /// STS role session name.
    pub role_session_name: Option<String>,
    /// STS endpoint base URL.
    pub sts_endpoint: Option<reqwest::Url>,
    /// STS region (`sts.<region>.aliyuncs.com`), else `ALIBABA_CLOUD_STS_REGION`.
    pub sts_region: Option<String>,
    /// Requested lifetime of assumed-role credentials (STS `DurationSeconds`).
    pub session_duration: Option<Duration>,
    /// Optional session policy (JSON) for assumed roles.
    pub policy: Option<String>,
    /// Optional external id for `AssumeRole`.
    pub external_id: Option<String>,
    /// Credentials URI for `uri`.
    pub credentials_uri: Option<reqwest::Url>,
}

/// `[poll]`: the per-ticket status poll schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSettings {
    /// First delay.
    pub initial_interval: Duration,
    /// Cap on a delay.
    pub max_interval: Duration,
    /// Growth per poll.
    pub multiplier: f64,
    /// Each delay is spread by ±this fraction, in [0, 1).
    pub jitter: f64,
    /// A ticket not archived this long after it was first seen ends failed.
    pub give_up_after: Duration,
}

/// `[download]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownloadSettings {
    /// Downloads at once.
    pub concurrency: usize,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// A body that delivers nothing for this long fails (a slow one does not).
    pub read_timeout: Duration,
    /// Attempts per download before the ticket waits for its next poll.
    pub max_attempts: u32,
    /// Compare the CRC-64 with `x-oss-hash-crc64ecma` when present.
    pub verify_crc64: bool,
}

/// `[archive]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveSettings {
    /// Where archives are published.
    pub dir: PathBuf,
    /// Keep the downloaded zip beside the extracted files.
    pub keep_zip: bool,
    /// Most bytes one archive may unpack to.
    pub max_unpacked_bytes: u64,
    /// Most entries one archive may hold.
    pub max_entries: u64,
    /// Local archive folders older than this are removed (only once uploaded, with
    /// `[upload]`); `None` keeps them forever.
    pub retention: Option<Duration>,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    /// Where ticket state files live.
    pub dir: PathBuf,
}

/// `[http]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Address of the `/metrics`, `/healthz`, `/readyz` listener.
    pub listen: SocketAddr,
}

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSettings {
    /// argv run after each publish, with `{dir}`, `{order_id}`, `{download_key_id}` filled in.
    pub on_archived: Option<Vec<String>>,
    /// argv run after each confirmed upload; also `{url}`.
    pub on_uploaded: Option<Vec<String>>,
    /// How long a hook may run before it is killed.
    pub timeout: Duration,
    /// Runs of one hook for one ticket before it is reported failed.
    pub max_attempts: u32,
}

/// Where archives are uploaded: `oss://` (Alibaba Cloud OSS) or `s3://` (S3-compatible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Alibaba Cloud OSS, signed with `[credentials]` (OSS V4).
    Oss,
    /// An S3-compatible store, signed with `[upload.credentials]` or the AWS variables (SigV4).
    S3,
}

impl StoreKind {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Oss => "oss",
            Self::S3 => "s3",
        }
    }
}

/// What goes up for each ticket besides `manifest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadContent {
    /// The downloaded zip (about 7× smaller than the SQL).
    #[default]
    Zip,
    /// Every extracted file, under `files/`.
    Files,
}

/// `[upload.credentials]`: S3 keys (a file for the secret is preferred).
#[derive(Debug, Clone, PartialEq)]
pub struct S3KeySettings {
    /// `access_key_id`.
    pub access_key_id: String,
    /// `secret_access_key` written inline (discouraged).
    pub secret_access_key: Option<Secret>,
    /// `secret_access_key_file`.
    pub secret_access_key_file: Option<PathBuf>,
    /// `session_token`.
    pub session_token: Option<Secret>,
}

/// `[upload]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSettings {
    /// OSS or S3.
    pub kind: StoreKind,
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Where requests go.
    pub endpoint: reqwest::Url,
    /// The signing region.
    pub region: String,
    /// The zip or the files.
    pub content: UploadContent,
    /// Object or part uploads at once.
    pub concurrency: usize,
    /// Objects above this size go up in parts of this size.
    pub part_size: u64,
    /// `false`: the local folder is removed once its upload is confirmed.
    pub keep_local: bool,
    /// S3 keys from the config (else the AWS environment variables).
    pub s3_keys: Option<S3KeySettings>,
}

/// `[watch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// The tickets folder: `*.toml` files with more `[[tickets]]`.
    pub tickets_dir: PathBuf,
    /// Whether the config named it (an explicit folder must exist; the default one is used
    /// only when it does).
    pub explicit: bool,
}

/// `REVERSE` (rollback / UNDO SQL) or `FORWARD` (rebuild / REDO SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RollbackSqlType {
    /// UNDO SQL: rolls back what ran.
    #[serde(rename = "REVERSE")]
    Reverse,
    /// REDO SQL: replays what ran.
    #[serde(rename = "FORWARD")]
    Forward,
}

impl RollbackSqlType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reverse => "REVERSE",
            Self::Forward => "FORWARD",
        }
    }
}

/// `ColumnFilter.Operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ColumnOperator {
    Equal,
    NotEqual,
    In,
    Between,
    Less,
    More,
    NotIn,
}

/// `ColumnFilter` of `DownloadDataTrackResult`, serialized as the API's JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ColumnFilter {
    /// Serialized field order is alphabetical, as the official SDK sends it.
    #[serde(rename = "BetweenEnd", skip_serializing_if = "Option::is_none")]
    pub between_end: Option<String>,
    /// Lower bound for `BETWEEN`.
    #[serde(rename = "BetweenStart", skip_serializing_if = "Option::is_none")]
    pub between_start: Option<String>,
    /// The column.
    #[serde(rename = "ColumnName")]
    pub column_name: String,
    /// Values for `IN` / `NOT_IN`.
    #[serde(rename = "InList", skip_serializing_if = "Vec::is_empty")]
    pub in_list: Vec<String>,
    /// The comparison.
    #[serde(rename = "Operator")]
    pub operator: ColumnOperator,
    /// The value compared with.
    #[serde(rename = "Value", skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What `DownloadDataTrackResult` is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExportSpec {
    /// REVERSE or FORWARD.
    pub rollback_sql_type: RollbackSqlType,
    /// `yyyy-MM-dd HH:mm:ss`.
    pub filter_start_time: Option<String>,
    /// `yyyy-MM-dd HH:mm:ss`.
    pub filter_end_time: Option<String>,
    /// Tables to keep.
    pub filter_tables: Vec<String>,
    /// `INSERT`, `UPDATE`, `DELETE`.
    pub filter_types: Vec<String>,
    /// Column condition.
    pub column_filter: Option<ColumnFilter>,
    /// Event ids to keep.
    pub event_ids: Vec<i64>,
}

/// Where a ticket's `DownloadKeyId` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TicketSource {
    /// An export that already exists.
    Existing {
        /// Its key.
        download_key_id: String,
    },
    /// dmstrack starts the export itself, exactly once.
    Export(Box<ExportSpec>),
}

/// One watched ticket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TicketSpec {
    /// The data-tracking ticket.
    pub order_id: i64,
    /// The effective tenant id (the ticket's, else `dms.tid`).
    pub tid: Option<i64>,
    /// Shown in logs and status.
    pub label: Option<String>,
    /// Existing export or one to start.
    pub source: TicketSource,
}

/// The environment that changes where things are: systemd's directories. Passed in rather
/// than read inside, so tests never touch the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEnv {
    /// `$DMSTRACK_CONFIG`.
    pub dmstrack_config: Option<PathBuf>,
    /// First entry of `$STATE_DIRECTORY` (systemd `StateDirectory=`).
    pub state_directory: Option<PathBuf>,
    /// First entry of `$CONFIGURATION_DIRECTORY` (systemd `ConfigurationDirectory=`).
    pub configuration_directory: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`): a file path in the config may
    /// start with `$CREDENTIALS_DIRECTORY/`, so one config serves every unit (each unit has
    /// its own `/run/credentials/<unit>/`).
    pub credentials_directory: Option<PathBuf>,
}

impl ConfigEnv {
    /// Reads the variables from the process environment.
    pub fn from_process() -> Self {
        // systemd joins several directories with ':'; the first one is ours.
        let first = |name: &str| {
            std::env::var_os(name)
                .and_then(|v| {
                    v.to_str()
                        .map(|s| s.split(':').next().unwrap_or("").to_owned())
                })
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Self {
            dmstrack_config: std::env::var_os("DMSTRACK_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            state_directory: first("STATE_DIRECTORY"),
            configuration_directory: first("CONFIGURATION_DIRECTORY"),
            credentials_directory: first("CREDENTIALS_DIRECTORY"),
        }
    }

    /// The config file to use: `-c FILE`, else `$DMSTRACK_CONFIG`, else
    /// `$CONFIGURATION_DIRECTORY/config.toml`, else `/etc/dmstrack/config.toml`.
    pub fn config_path(&self, flag: Option<&Path>) -> PathBuf {
        if let Some(path) = flag {
            return path.to_owned();
        }
        if let Some(path) = &self.dmstrack_config {
            return path.clone();
        }
        if let Some(dir) = &self.configuration_directory {
            return dir.join("config.toml");
        }
        PathBuf::from(SYSTEM_CONFIG)
    }
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key path (`tickets[1].download_key_id`), when one can be named.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is wrong; every problem found is listed.
    #[error("{}", render_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &ConfigEnv) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path);
        let source = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        // Fingerprinted under the absolute path, as the watcher sees it: a relative `-c`
        // would otherwise look changed at once and reload for nothing.
        let mut fingerprint = tickets_dir::Fingerprint::default();
        fingerprint.add(&source, &bytes);
        let text = bytes
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        let mut config = Self::from_toml_str(&text, &source, env)?;
        config.read_tickets_dir(&mut fingerprint);
        config.fingerprint = fingerprint.finish();
        Ok(config)
    }

    /// Where a ticket is listed (`file:line:column`), if it is configured.
    pub fn ticket_place(&self, spec: &TicketSpec) -> Option<&str> {
        self.ticket_index
            .get(&(spec.order_id, spec.source.clone()))
            .map(String::as_str)
    }

    /// Parses and validates `text` as if read from `source` (relative paths resolve against
    /// `source`'s folder).
    pub fn from_toml_str(text: &str, source: &Path, env: &ConfigEnv) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                return Err(ConfigError::Invalid(vec![parse_diagnostic(
                    text, source, &err,
                )]));
            }
        };
        validate::validate(raw, text, source, env).map_err(ConfigError::Invalid)
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new("."))
    }
}

pub(crate) fn parse_diagnostic(text: &str, source: &Path, err: &toml::de::Error) -> Diagnostic {
    let span = err.span().unwrap_or(0..0);
    let (line, column) = locate::line_column(text, span.start);
    let path = locate::path_at(text, &span);
    Diagnostic {
        file: source.to_owned(),
        line,
        column,
        key: (!path.is_empty()).then_some(path),
        message: plain_serde_message(err.message().trim()),
    }
}

/// serde names Rust types in its messages (`expected u32`, `expected struct RawDms`); say it
/// in the words of the file instead.
fn plain_serde_message(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, plain) in [
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, plain);
    }
    if let Some(at) = out.find("expected struct Raw") {
        out.replace_range(at.., "expected a table");
    }
    out
}

#[cfg(test)]
mod tests;
