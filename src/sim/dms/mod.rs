//! In-process simulator of the DMS Enterprise API gateway (RPC style, version `2018-11-01`) on
//! 127.0.0.1: it authenticates V3 (`ACS3-HMAC-SHA256`) and V1 (`HMAC-SHA1`) requests the way
//! the gateway does, serves `QueryDataTrackResultDownloadStatus` from scripted status sequences
//! and `DownloadDataTrackResult` by minting download keys, injects faults by call number, and
//! records every call for assertions. Tests and `dmstrack demo` use it; production code never
//! does. Facts come from `reference/dms-api.md` §1–5.
//!
//! Layout: this file owns the public handle and the shared state; `verify` owns gateway
//! authentication, `actions` the two DMS actions, `reply` the wire shape of answers and
//! `server` the accept loop (hyper directly, so a connection can be closed unanswered).
//!
//! # Order of checks
//! Path and method; then the signature's own pieces (missing ones first); API version and
//! action; timestamp format and skew; coverage of the signed headers and the body hash (V3);
//! AccessKey; STS token; signature; nonce. A nonce is remembered only once a request has passed
//! every other check, so a forged request cannot burn one. Injected `Delay`s happen before any
//! check; the other injected faults replace the answer of a request that *passed*
//! authentication (its nonce is then spent, which makes a client that reuses a nonce on retry
//! visible as `SignatureNonceUsed`).
//!
//! # HTTP status per code
//! The reference lists two statuses for some codes; the choice and the reason:
//!
//! | Code | HTTP | why |
//! |---|---|---|
//! | `InvalidAccessKeyId.NotFound` | 404 | what aliyun SDK traces of the POP gateway show ("HTTP Status: 404 Error:InvalidAccessKeyId.NotFound") |
//! | `SignatureDoesNotMatch` | 400 | the POP gateway's answer in public traces; 403 is the OSS/S3 habit |
//! | `IncompleteSignature` | 400 | common error table |
//! | `MissingParameter`, `Missing{Name}` | 400 | common error table |
//! | `InvalidParameter` (a business parameter of the wrong type) | 400 | common error table |
//! | `SignatureNonceUsed` | 400 | common error table |
//! | `InvalidTimeStamp.Expired` / `.Format` | 400 | common error table |
//! | `InvalidSecurityToken.Expired` / `.Mismatch`, `MissingSecurityToken` | 400 | an auth failure the client must fix (refresh), not retry; same family as the above |
//! | `InvalidVersion` | 400 | a malformed request rather than a missing resource |
//! | `InvalidAction.NotFound` | 404 | the gateway reports an unknown API as not found |
//! | `UnsupportedHTTPMethod` | 400 | the reference gives 400/403; it is a client mistake |
//! | `Throttling.User` | 400 | the reference; plus `x-acs-retry-after: <ms>` |
//! | `InternalError` | 500 | the reference |
//! | `ServiceUnavailable` | 503 | the reference |
//!
//! Business outcomes are HTTP 200 with `Success` true or false, as DMS reports them. Answers are
//! always JSON (`Content-Type: application/json;charset=utf-8`), whatever `Format` says.
//! Successful answers carry `ErrorCode`/`ErrorMessage` = `UnknownError` (the documented quirk);
//! `StatusResult.DownloadUrl` is present only on `DOWNLOAD_SUCCESS` ("returned only when…")
//! and then ends in `\n`; `TotalCount` is 0 before success. An unknown ticket, an export of an
//! unscripted order and a bad filter are `Success: false` with `ErrorCode` `InvalidParameter`.
//!
//! The clock is the wall clock (plus [`DmsSimulator::set_clock_offset`]), not tokio time:
//! clients sign with the wall clock, and paused tokio time must not make them look skewed.
//!
//! `SignatureDoesNotMatch` carries, as newer gateways do, `server string to sign is:<…>`: for V1
//! the V1 string to sign (which holds `SecurityToken` for STS callers), for V3 the canonical
//! request (which holds the signed `x-acs-security-token` header). Clients must never echo
//! this message whole into logs; tests use it to prove they do not.

mod actions;
#[cfg(test)]
mod golden_tests;
mod reply;
mod server;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::SignedDuration;
use tokio_util::sync::CancellationToken;

use crate::net::secret::Secret;
use crate::net::signer::SignatureVersion;

/// The only API version the simulator serves (`x-acs-version` / `Version`).
pub const API_VERSION: &str = "2018-11-01";

/// `HostId` in gateway error bodies: the central DMS endpoint.
pub const HOST_ID: &str = "dms-enterprise.aliyuncs.com";

/// The action that reports an export's progress.
pub const QUERY_STATUS_ACTION: &str = "QueryDataTrackResultDownloadStatus";

/// The action that starts an export and mints a `DownloadKeyId`.
pub const DOWNLOAD_ACTION: &str = "DownloadDataTrackResult";

/// How far a request's timestamp may be from the simulator's clock, either way
/// ("must be within 15 minutes", reference §3.2 and the common error table).
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(15 * 60);

/// Where a `DOWNLOAD_SUCCESS` step gets its `DownloadUrl`.
///
/// `Debug` never prints a URL: a presigned URL is a bearer credential.
#[derive(Clone)]
pub enum UrlSource {
    /// The same URL on every answer.
    Fixed(String),
    /// Called at every answer, so each success can carry a freshly presigned URL (for
    /// example from the OSS simulator).
    Generated(Arc<dyn Fn() -> String + Send + Sync>),
}

impl UrlSource {
    /// A URL that never changes.
    pub fn fixed(url: impl Into<String>) -> Self {
        Self::Fixed(url.into())
    }

    /// A URL produced anew at every answer.
    pub fn generated(make: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self::Generated(Arc::new(make))
    }

    /// The URL to put in the next answer (without the trailing newline the API adds).
    pub fn resolve(&self) -> String {
        match self {
            Self::Fixed(url) => url.clone(),
            Self::Generated(make) => make(),
        }
    }
}

impl fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("UrlSource::Fixed(******)"),
            Self::Generated(_) => f.write_str("UrlSource::Generated(..)"),
        }
    }
}

impl From<String> for UrlSource {
    fn from(url: String) -> Self {
        Self::Fixed(url)
    }
}

impl From<&str> for UrlSource {
    fn from(url: &str) -> Self {
        Self::Fixed(url.to_owned())
    }
}

/// One answer of a ticket's scripted `DownloadStatus` sequence.
#[derive(Clone, Debug)]
pub enum StatusStep {
    /// `INIT`.
    Init,
    /// `LISTING`.
    Listing,
    /// `DOWNLOADING`.
    Downloading,
    /// `DOWNLOAD_FAIL` with this `StatusDesc`.
    Fail {
        /// The `StatusDesc` DMS gives with the failure.
        desc: String,
    },
    /// `DOWNLOAD_SUCCESS` with a `DownloadUrl` (sent with the documented trailing `\n`).
    Success {
        /// Where the URL comes from at each answer.
        url: UrlSource,
        /// `TotalCount`.
        total_count: u64,
    },
    /// Any other `DownloadStatus` (e.g. `FILTERING`), to test clients against values they
    /// do not know.
    Other {
        /// The `DownloadStatus` string.
        status: String,
        /// The `StatusDesc` string.
        desc: String,
    },
}

impl StatusStep {
    /// `DOWNLOAD_SUCCESS` with the given URL source and count.
    pub fn success(url: impl Into<UrlSource>, total_count: u64) -> Self {
        Self::Success {
            url: url.into(),
            total_count,
        }
    }

    /// `DOWNLOAD_FAIL` with the given description.
    pub fn fail(desc: impl Into<String>) -> Self {
        Self::Fail { desc: desc.into() }
    }

    /// This step `count` times, e.g. `StatusStep::Init.times(3)`.
    pub fn times(self, count: usize) -> Vec<Self> {
        vec![self; count]
    }

    /// `(DownloadStatus, StatusDesc)` as the API spells them.
    pub(crate) fn status_and_desc(&self) -> (&str, &str) {
        match self {
            Self::Init => ("INIT", "Initializing"),
            Self::Listing => ("LISTING", "Listing"),
            Self::Downloading => ("DOWNLOADING", "Downloading"),
            Self::Fail { desc } => ("DOWNLOAD_FAIL", desc),
            Self::Success { .. } => ("DOWNLOAD_SUCCESS", "SUCCESS"),
            Self::Other { status, desc } => (status, desc),
        }
    }
}

/// A fault to inject in place of (or, for `Delay`, before) a normal answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmsFault {
    /// HTTP 400 `Throttling.User` with `x-acs-retry-after: <ms>`.
    Throttling {
        /// The header's value, in milliseconds.
        retry_after_ms: u64,
    },
    /// HTTP 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// HTTP 500 `InternalError`.
    InternalError,
    /// HTTP 200 whose body is truncated, invalid JSON.
    MalformedJson,
    /// Close the connection without sending a single response byte.
    DropConnection,
    /// HTTP 200 with `Success: false` and this `ErrorCode` / `ErrorMessage`.
    BusinessFailure {
        /// `ErrorCode`.
        code: String,
        /// `ErrorMessage`.
        message: String,
    },
    /// Wait this long (tokio time) before handling the request at all; combines with the
    /// other faults.
    Delay(Duration),
}

/// One request as the simulator received and answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct DmsCall {
    /// 1-based number of the request among all requests received.
    pub number: u64,
    /// The HTTP method.
    pub method: String,
    /// The action named by the request, if any.
    pub action: Option<String>,
    /// Which signature the request carried (`None`: unsigned or unrecognised).
    pub signature_version: Option<SignatureVersion>,
    /// The AccessKey id the request claims.
    pub access_key_id: Option<String>,
    /// `x-acs-signature-nonce` (V3) or `SignatureNonce` (V1).
    pub nonce: Option<String>,
    /// `x-acs-date` (V3) or `Timestamp` (V1), as sent.
    pub timestamp: Option<String>,
    /// Business parameters (query and form body; V1 common parameters and the signature
    /// and token removed).
    pub params: BTreeMap<String, String>,
    /// The HTTP status answered; `None` if no answer was sent (dropped connection, or the
    /// client went away while the request was delayed).
    pub status: Option<u16>,
    /// The `Code` of a gateway error or the `ErrorCode` of `Success: false`; `None` on success.
    pub error_code: Option<String>,
    /// Faults injected into this call.
    pub faults: Vec<DmsFault>,
    /// When the request arrived (tokio time, so paused-time tests can measure gaps).
    pub at: tokio::time::Instant,
}

/// A `DownloadDataTrackResult` request the simulator accepted, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRequest {
    /// The call's number (see [`DmsCall::number`]).
    pub call_number: u64,
    /// `OrderId`.
    pub order_id: i64,
    /// `RollbackSQLType`: `REVERSE` or `FORWARD`.
    pub rollback_sql_type: String,
    /// `FilterStartTime` (`yyyy-MM-dd HH:mm:ss`).
    pub filter_start_time: Option<String>,
    /// `FilterEndTime` (`yyyy-MM-dd HH:mm:ss`).
    pub filter_end_time: Option<String>,
    /// `FilterTableList`, decoded from its JSON string.
    pub filter_table_list: Option<Vec<String>>,
    /// `FilterTypeList`, decoded from its JSON string.
    pub filter_type_list: Option<Vec<String>>,
    /// `EventIdList`, decoded from its JSON string.
    pub event_id_list: Option<Vec<i64>>,
    /// `ColumnFilter`, decoded from its JSON string (an object).
    pub column_filter: Option<serde_json::Value>,
    /// `Tid`.
    pub tid: Option<i64>,
    /// The `DownloadKeyId` minted for it.
    pub download_key_id: String,
}

/// A running simulator. Stops when dropped or on [`DmsSimulator::shutdown`].
#[derive(Debug)]
pub struct DmsSimulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Account {
    secret: Secret,
    security_token: Option<Secret>,
    token_expired: bool,
}

#[derive(Debug)]
struct Ticket {
    steps: Vec<StatusStep>,
    answered: usize,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<String, Account>,
    clock_offset: SignedDuration,
    /// (AccessKey id, nonce) pairs already accepted.
    used_nonces: HashSet<(String, String)>,
    tickets: HashMap<(i64, String), Ticket>,
    export_scripts: HashMap<i64, Vec<StatusStep>>,
    faults_by_call: HashMap<u64, Vec<DmsFault>>,
    faults_by_action: HashMap<(String, u64), Vec<DmsFault>>,
    action_counts: HashMap<String, u64>,
    call_count: u64,
    calls: Vec<DmsCall>,
    exports: Vec<ExportRequest>,
}

impl State {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now() + self.clock_offset
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock (a failing assertion in a test) must not hide the state
    // from the rest of the test.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DmsSimulator {
    /// Binds 127.0.0.1 on a free port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shutdown = CancellationToken::new();
        tokio::spawn(server::serve(
            listener,
            Arc::clone(&state),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            state,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint to configure in a client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes open connections.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Registers a long-lived AccessKey pair.
    pub fn add_access_key(&self, access_key_id: impl Into<String>, secret: impl Into<String>) {
        lock(&self.state).accounts.insert(
            access_key_id.into(),
            Account {
                secret: Secret::new(secret),
                security_token: None,
                token_expired: false,
            },
        );
    }

    /// Registers STS credentials: requests must carry exactly this token.
    pub fn add_sts_credentials(
        &self,
        access_key_id: impl Into<String>,
        secret: impl Into<String>,
        security_token: impl Into<String>,
    ) {
        lock(&self.state).accounts.insert(
            access_key_id.into(),
            Account {
                secret: Secret::new(secret),
                security_token: Some(Secret::new(security_token)),
                token_expired: false,
            },
        );
    }

    /// Marks the STS token of this AccessKey expired: its requests now get
    /// `InvalidSecurityToken.Expired`. Returns false if the key is unknown or not STS.
    pub fn expire_sts_token(&self, access_key_id: &str) -> bool {
        match lock(&self.state).accounts.get_mut(access_key_id) {
            Some(account) if account.security_token.is_some() => {
                account.token_expired = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets an AccessKey: its requests now get `InvalidAccessKeyId.NotFound`.
    pub fn remove_access_key(&self, access_key_id: &str) -> bool {
        lock(&self.state).accounts.remove(access_key_id).is_some()
    }

    /// Moves the simulator's clock (wall clock + offset) relative to the wall clock; a
    /// negative offset puts it behind.
    pub fn set_clock_offset(&self, offset: SignedDuration) {
        lock(&self.state).clock_offset = offset;
    }

    /// The simulator's clock: the wall clock plus the offset.
    pub fn now(&self) -> jiff::Timestamp {
        lock(&self.state).now()
    }

    /// Scripts the statuses of an existing ticket: each query answers the next step and the
    /// last step repeats. An empty script answers `INIT` forever. Replaces an earlier script
    /// and restarts it.
    pub fn script_ticket(
        &self,
        order_id: i64,
        download_key_id: impl Into<String>,
        steps: impl IntoIterator<Item = StatusStep>,
    ) {
        lock(&self.state).tickets.insert(
            (order_id, download_key_id.into()),
            Ticket {
                steps: steps.into_iter().collect(),
                answered: 0,
            },
        );
    }

    /// Scripts every export of this ticket: each `DownloadDataTrackResult` for `order_id`
    /// mints a key whose statuses follow a fresh copy of these steps. Without a script the
    /// action answers `Success: false`.
    pub fn script_export(&self, order_id: i64, steps: impl IntoIterator<Item = StatusStep>) {
        lock(&self.state)
            .export_scripts
            .insert(order_id, steps.into_iter().collect());
    }

    /// Injects a fault into the request with this 1-based number (counting every request
    /// received, any action). Several faults on one call combine (delays add up; the first
    /// answer-replacing fault wins).
    pub fn inject(&self, call_number: u64, fault: DmsFault) {
        lock(&self.state)
            .faults_by_call
            .entry(call_number)
            .or_default()
            .push(fault);
    }

    /// Injects a fault into the `nth` (1-based) request naming this action.
    pub fn inject_for_action(&self, action: &str, nth: u64, fault: DmsFault) {
        lock(&self.state)
            .faults_by_action
            .entry((action.to_owned(), nth))
            .or_default()
            .push(fault);
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<DmsCall> {
        lock(&self.state).calls.clone()
    }

    /// Every accepted `DownloadDataTrackResult` request, in order.
    pub fn exports(&self) -> Vec<ExportRequest> {
        lock(&self.state).exports.clone()
    }

    /// How many requests arrived (any action, any outcome).
    pub fn call_count(&self) -> u64 {
        lock(&self.state).call_count
    }

    /// How many requests named this action (any outcome).
    pub fn action_count(&self, action: &str) -> u64 {
        lock(&self.state)
            .action_counts
            .get(action)
            .copied()
            .unwrap_or(0)
    }

    /// How many status answers this ticket has given (0 if it is not scripted).
    pub fn status_answers(&self, order_id: i64, download_key_id: &str) -> usize {
        lock(&self.state)
            .tickets
            .get(&(order_id, download_key_id.to_owned()))
            .map_or(0, |ticket| ticket.answered)
    }
}

impl Drop for DmsSimulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
