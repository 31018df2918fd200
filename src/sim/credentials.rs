//! Loopback fakes of the credential services: the ECS metadata service (IMDSv2 and v1), STS
//! (`AssumeRole` with real V1 signature checks, `AssumeRoleWithOIDC` against a token file)
//! and a credentials URI. Each is an axum server on 127.0.0.1 spawned on the current tokio
//! runtime (so paused-time tests stay deterministic), keeps a log of the requests it got,
//! and issues numbered credentials (`STS.fake.1`, `STS.fake.2`, …) so tests can count
//! refreshes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::json;

use crate::net::secret::{MASK, Secret};
use crate::net::signer::{format_timestamp, v1_signature, v1_string_to_sign};

/// Parameters a log must not show.
const SENSITIVE_PARAMS: &[&str] = &["Signature", "OIDCToken", "SecurityToken"];

/// One request a fake received. Signatures, tokens and OIDC tokens are masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Query and form parameters, merged (sensitive values masked).
    pub params: BTreeMap<String, String>,
    /// Whether an `X-aliyun-ecs-metadata-token` header came with it.
    pub metadata_token: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spawned server; aborted when dropped.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn spawn(router: Router) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, task })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}{path}", self.addr))
            .expect("a loopback URL is valid")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decodes `a=b&c=d` (query or form body; `+` is a space in forms).
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn masked(params: &[(String, String)]) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(k, v)| {
            let shown = if SENSITIVE_PARAMS.contains(&k.as_str()) {
                MASK.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// Credentials numbered `n`, expiring `lifetime` from now (wall clock).
fn issue(prefix: &str, n: u64, lifetime: Duration) -> serde_json::Value {
    let lifetime = jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::MAX);
    let expiration = jiff::Timestamp::now()
        .checked_add(lifetime)
        .unwrap_or(jiff::Timestamp::MAX);
    json!({
        "AccessKeyId": format!("STS.{prefix}.{n}"),
        "AccessKeySecret": format!("{prefix}-secret-{n}"),
        "SecurityToken": format!("{prefix}-token-{n}"),
        "Expiration": format_timestamp(expiration),
    })
}

/// The Alibaba Cloud error body with a fresh `RequestId`.
fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "RequestId": uuid::Uuid::new_v4().to_string().to_uppercase(),
        "HostId": "sts.aliyuncs.com",
        "Code": code,
        "Message": message,
    });
    (status, axum::Json(body)).into_response()
}

fn outage_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let code = if status.is_server_error() {
        "ServiceUnavailable"
    } else {
        "Forbidden"
    };
    api_error(status, code, "the fake is switched to fail")
}

// ---------------------------------------------------------------------------------------
// ECS metadata service
// ---------------------------------------------------------------------------------------

/// How the metadata fake behaves.
#[derive(Debug, Clone)]
pub struct ImdsOptions {
    /// The RAM role attached to the "instance" (`None`: no role, listing answers 404).
    pub role: Option<String>,
    /// IMDSv2: `PUT /latest/api/token` hands out tokens. When false it answers 403.
    pub v2_enabled: bool,
    /// IMDSv1: requests without a token are served. When false they get 401.
    pub v1_enabled: bool,
    /// Lifetime of issued credentials.
    pub lifetime: Duration,
}

impl Default for ImdsOptions {
    fn default() -> Self {
        Self {
            role: Some("dms-reader".to_owned()),
            v2_enabled: true,
            v1_enabled: true,
            lifetime: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug)]
struct ImdsState {
    options: Mutex<ImdsOptions>,
    tokens: Mutex<HashSet<String>>,
    issued: AtomicU64,
    outage: Mutex<Option<u16>>,
    log: Mutex<Vec<LoggedRequest>>,
}

/// A fake ECS metadata service. See [`ImdsOptions`].
#[derive(Debug)]
pub struct ImdsFake {
    server: Server,
    state: Arc<ImdsState>,
}

impl ImdsFake {
    /// Starts the fake on 127.0.0.1 on the current runtime.
    pub async fn start(options: ImdsOptions) -> std::io::Result<Self> {
        let state = Arc::new(ImdsState {
            options: Mutex::new(options),
            tokens: Mutex::new(HashSet::new()),
            issued: AtomicU64::new(0),
            outage: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/latest/api/token", put(imds_token))
            .route(
                "/latest/meta-data/ram/security-credentials/",
                get(imds_roles),
            )
            .route(
                "/latest/meta-data/ram/security-credentials/{role}",
                get(imds_credentials),
            )
            .with_state(Arc::clone(&state));
        Ok(Self {
            server: Server::spawn(router).await?,
            state,
        })
    }

    /// The service root, for `metadata_endpoint`.
    pub fn endpoint(&self) -> reqwest::Url {
        self.server.url("/")
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// How many credentials were handed out (the last one is `STS.imds.<n>`).
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Makes credential requests answer `status` (`None`: serve normally).
    pub fn set_outage(&self, status: Option<u16>) {
        *lock(&self.state.outage) = status;
    }

    /// Changes the lifetime of credentials issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        lock(&self.state.options).lifetime = lifetime;
    }
}

impl ImdsState {
    fn record(&self, method: &str, path: &str, headers: &HeaderMap) -> bool {
        let token = headers
            .get("x-aliyun-ecs-metadata-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        lock(&self.log).push(LoggedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            params: BTreeMap::new(),
            metadata_token: token.is_some(),
        });
        match token {
            Some(token) => lock(&self.tokens).contains(&token),
            None => lock(&self.options).v1_enabled,
        }
    }
}

async fn imds_token(State(state): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    state.record("PUT", "/latest/api/token", &headers);
    if !lock(&state.options).v2_enabled {
        return (StatusCode::FORBIDDEN, "IMDSv2 is not enabled").into_response();
    }
    if headers
        .get("x-aliyun-ecs-metadata-token-ttl-seconds")
        .is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            "missing X-aliyun-ecs-metadata-token-ttl-seconds",
        )
            .into_response();
    }
    let token = format!("imds-session-{}", uuid::Uuid::new_v4().simple());
    lock(&state.tokens).insert(token.clone());
    token.into_response()
}

async fn imds_roles(State(state): State<Arc<ImdsState>>, headers: HeaderMap) -> Response {
    if !state.record(
        "GET",
        "/latest/meta-data/ram/security-credentials/",
        &headers,
    ) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match lock(&state.options).role.clone() {
        Some(role) => role.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn imds_credentials(
    State(state): State<Arc<ImdsState>>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/latest/meta-data/ram/security-credentials/{role}");
    if !state.record("GET", &path, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some(status) = *lock(&state.outage) {
        return outage_response(status);
    }
    let options = lock(&state.options).clone();
    if options.role.as_deref() != Some(role.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = issue("imds", n, options.lifetime);
    body["Code"] = json!("Success");
    body["LastUpdated"] = json!(format_timestamp(jiff::Timestamp::now()));
    axum::Json(body).into_response()
}

// ---------------------------------------------------------------------------------------
// STS
// ---------------------------------------------------------------------------------------

/// How the STS fake behaves.
#[derive(Debug, Clone)]
pub struct StsOptions {
    /// AccessKeys allowed to sign `AssumeRole` (id → secret).
    pub access_keys: HashMap<String, Secret>,
    /// `AssumeRoleWithOIDC` accepts exactly the current contents (trimmed) of this file,
    /// re-read for every request. `None`: every OIDC call is refused.
    pub oidc_token_file: Option<PathBuf>,
    /// Lifetime of issued credentials.
    pub lifetime: Duration,
}

impl Default for StsOptions {
    fn default() -> Self {
        Self {
            access_keys: HashMap::new(),
            oidc_token_file: None,
            lifetime: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug)]
struct StsState {
    options: Mutex<StsOptions>,
    nonces: Mutex<HashSet<String>>,
    issued: AtomicU64,
    outage: Mutex<Option<u16>>,
    log: Mutex<Vec<LoggedRequest>>,
}

/// A fake STS. See [`StsOptions`].
#[derive(Debug)]
pub struct StsFake {
    server: Server,
    state: Arc<StsState>,
}

impl StsFake {
    /// Starts the fake on 127.0.0.1 on the current runtime.
    pub async fn start(options: StsOptions) -> std::io::Result<Self> {
        let state = Arc::new(StsState {
            options: Mutex::new(options),
            nonces: Mutex::new(HashSet::new()),
            issued: AtomicU64::new(0),
            outage: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(sts).with_state(Arc::clone(&state));
        Ok(Self {
            server: Server::spawn(router).await?,
            state,
        })
    }

    /// The endpoint root, for `sts_endpoint`.
    pub fn endpoint(&self) -> reqwest::Url {
        self.server.url("/")
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// How many requests asked for `action`.
    pub fn count(&self, action: &str) -> usize {
        lock(&self.state.log)
            .iter()
            .filter(|r| r.params.get("Action").map(String::as_str) == Some(action))
            .count()
    }

    /// How many credentials were handed out (the last one is `STS.fake.<n>`).
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Makes every request answer `status` (`None`: serve normally).
    pub fn set_outage(&self, status: Option<u16>) {
        *lock(&self.state.outage) = status;
    }

    /// Changes the lifetime of credentials issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        lock(&self.state.options).lifetime = lifetime;
    }
}

/// Why the STS fake says no; becomes an [`api_error`] response.
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Refusal> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                &format!("Missing{name}"),
                &format!("{name} is mandatory for this action."),
            )
        })
}

async fn sts(
    State(state): State<Arc<StsState>>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut pairs = parse_pairs(query.as_deref().unwrap_or(""));
    if method == Method::POST {
        pairs.extend(parse_pairs(&String::from_utf8_lossy(&body)));
    }
    lock(&state.log).push(LoggedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        params: masked(&pairs),
        metadata_token: false,
    });
    if let Some(status) = *lock(&state.outage) {
        return outage_response(status);
    }
    let params: HashMap<String, String> = pairs.iter().cloned().collect();
    let result = match params.get("Action").map(String::as_str) {
        Some("AssumeRole") => assume_role(&state, &method, &pairs, &params),
        Some("AssumeRoleWithOIDC") => assume_role_with_oidc(&state, &params),
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found.",
        )),
    };
    match result {
        Ok(()) => {
            let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let lifetime = lock(&state.options).lifetime;
            let body = json!({
                "RequestId": uuid::Uuid::new_v4().to_string().to_uppercase(),
                "AssumedRoleUser": {"Arn": params.get("RoleArn"), "AssumedRoleId": format!("fake:{n}")},
                "Credentials": issue("fake", n, lifetime),
            });
            axum::Json(body).into_response()
        }
        Err(refusal) => api_error(refusal.status, &refusal.code, &refusal.message),
    }
}

fn check_role_params(params: &HashMap<String, String>) -> Result<(), Refusal> {
    required(params, "RoleArn")?;
    required(params, "RoleSessionName")?;
    let duration: u64 = required(params, "DurationSeconds")?.parse().unwrap_or(0);
    if !(900..=43200).contains(&duration) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.DurationSeconds",
            "The parameter DurationSeconds is wrong.",
        ));
    }
    for name in ["Format", "Version", "Timestamp"] {
        required(params, name)?;
    }
    Ok(())
}

/// Verifies the V1 signature exactly as STS does: recompute over every parameter but
/// `Signature` with the secret of `AccessKeyId`.
fn assume_role(
    state: &StsState,
    method: &Method,
    pairs: &[(String, String)],
    params: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let id = required(params, "AccessKeyId")?;
    let signature = required(params, "Signature")?;
    if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1")
        || params.get("SignatureVersion").map(String::as_str) != Some("1.0")
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards.",
        ));
    }
    let nonce = required(params, "SignatureNonce")?;
    let Some(secret) = lock(&state.options).access_keys.get(id).cloned() else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    };
    let unsigned: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "Signature").collect();
    let unsigned: Vec<(&str, &str)> = unsigned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = v1_signature(
        secret.expose(),
        &v1_string_to_sign(method.as_str(), &unsigned),
    );
    if expected != signature {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        ));
    }
    if !lock(&state.nonces).insert(nonce.to_owned()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    check_role_params(params)
}

/// Accepts only the token file's current contents.
fn assume_role_with_oidc(
    state: &StsState,
    params: &HashMap<String, String>,
) -> Result<(), Refusal> {
    required(params, "OIDCProviderArn")?;
    let token = required(params, "OIDCToken")?;
    let file = lock(&state.options).oidc_token_file.clone();
    let current = file.and_then(|f| std::fs::read_to_string(f).ok());
    if current.as_deref().map(str::trim) != Some(token) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "AuthenticationFail.OIDCToken.Invalid",
            "The OIDC token is invalid or has expired.",
        ));
    }
    check_role_params(params)
}

// ---------------------------------------------------------------------------------------
// Credentials URI
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct UriState {
    lifetime: Mutex<Duration>,
    issued: AtomicU64,
    outage: Mutex<Option<u16>>,
    log: Mutex<Vec<LoggedRequest>>,
}

/// A fake credentials URI: any GET returns `{"Code":"Success",…}` with `STS.uri.<n>`.
#[derive(Debug)]
pub struct UriFake {
    server: Server,
    state: Arc<UriState>,
}

impl UriFake {
    /// Starts the fake on 127.0.0.1 on the current runtime.
    pub async fn start(lifetime: Duration) -> std::io::Result<Self> {
        let state = Arc::new(UriState {
            lifetime: Mutex::new(lifetime),
            issued: AtomicU64::new(0),
            outage: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .fallback(uri_credentials)
            .with_state(Arc::clone(&state));
        Ok(Self {
            server: Server::spawn(router).await?,
            state,
        })
    }

    /// The URL to configure (`/credentials`).
    pub fn url(&self) -> reqwest::Url {
        self.server.url("/credentials")
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// How many credentials were handed out.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Makes every request answer `status` (`None`: serve normally).
    pub fn set_outage(&self, status: Option<u16>) {
        *lock(&self.state.outage) = status;
    }
}

async fn uri_credentials(
    State(state): State<Arc<UriState>>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    lock(&state.log).push(LoggedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        params: masked(&parse_pairs(uri.query().unwrap_or(""))),
        metadata_token: false,
    });
    if let Some(status) = *lock(&state.outage) {
        return outage_response(status);
    }
    if method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = issue("uri", n, *lock(&state.lifetime));
    body["Code"] = json!("Success");
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pairs_decodes_percent_and_plus() {
        assert_eq!(
            parse_pairs("a=b%20c&d=e+f&g=%2B&h"),
            vec![
                ("a".to_owned(), "b c".to_owned()),
                ("d".to_owned(), "e f".to_owned()),
                ("g".to_owned(), "+".to_owned()),
                ("h".to_owned(), String::new()),
            ]
        );
    }

    #[tokio::test]
    async fn sts_fake_rejects_a_bad_signature_and_unknown_action() {
        let mut keys = HashMap::new();
        keys.insert("LTAIsource".to_owned(), Secret::new("right-secret"));
        let fake = StsFake::start(StsOptions {
            access_keys: keys,
            ..StsOptions::default()
        })
        .await
        .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut url = fake.endpoint();
        url.set_query(Some(
            "Action=AssumeRole&AccessKeyId=LTAIsource&Signature=AAAA&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&SignatureNonce=1",
        ));
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["Code"], "SignatureDoesNotMatch");
        assert!(body["RequestId"].as_str().is_some_and(|s| !s.is_empty()));

        let mut url = fake.endpoint();
        url.set_query(Some("Action=Nope"));
        assert_eq!(client.get(url).send().await.unwrap().status(), 404);
        assert_eq!(fake.count("AssumeRole"), 1);
        assert_eq!(fake.requests()[0].params["Signature"], MASK);
        assert_eq!(fake.issued(), 0);
    }
}
