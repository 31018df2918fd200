//! Building what the watch loop uses from a validated config: the API client, the
//! downloader, the archive layout, and (with `[upload]`) the bucket client with its
//! credentials. The limits that must hold across reloads (request rate, downloads at once,
//! uploads at once) are passed in, never rebuilt here.

use std::sync::Arc;

use crate::config::{Config, StoreKind, UploadSettings};
use crate::credentials::{CredentialEnv, CredentialProvider};
use crate::dms::DmsClient;
use crate::job::archive::ArchiveLayout;
use crate::job::download::Downloader;
use crate::job::limit::ConcurrencyLimit;
use crate::job::pipeline::PipelineContext;
use crate::job::upload::runner::UploadContext;
use crate::job::upload::s3_sign::S3Credentials;
use crate::job::upload::store::{ObjectStore, StoreCredentials};
use crate::net::ratelimit::RateLimiter;
use crate::net::secret::Secret;
use crate::telemetry::Telemetry;
use crate::watch::Services;

use super::daemon::StartError;

/// The limits a process keeps for its whole life; a reload resizes them in place.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `dms.max_requests_per_second` (replaced only when the rate changes).
    pub rate: Arc<RateLimiter>,
    /// `download.concurrency`.
    pub downloads: ConcurrencyLimit,
    /// `upload.concurrency`.
    pub uploads: ConcurrencyLimit,
}

impl Limits {
    /// The limits of a config.
    pub fn new(config: &Config) -> Self {
        Self {
            rate: Arc::new(RateLimiter::new(config.dms.max_requests_per_second)),
            downloads: ConcurrencyLimit::new(config.download.concurrency),
            uploads: ConcurrencyLimit::new(config.upload.as_ref().map_or(1, |u| u.concurrency)),
        }
    }
}

/// Builds what the scheduler uses from a config. Blocking: it reads secret files.
pub fn build_services(
    config: &Config,
    credentials: CredentialProvider,
    credential_env: &CredentialEnv,
    limits: &Limits,
    telemetry: Telemetry,
) -> Result<Services, StartError> {
    let http_error = |e| {
        StartError::Http(format!(
            "cannot build the HTTP client: {}",
            crate::net::transport_error_text(e)
        ))
    };
    let uploads = config
        .upload
        .as_ref()
        .map(|settings| {
            upload_context(
                config,
                settings,
                credentials.clone(),
                credential_env,
                limits,
                &telemetry,
            )
        })
        .transpose()?;
    let dms = DmsClient::new(
        &config.dms,
        credentials,
        Arc::clone(&limits.rate),
        telemetry.clone(),
    )
    .map_err(http_error)?;
    let downloader =
        Downloader::new(&config.download, Arc::clone(&telemetry.metrics)).map_err(http_error)?;
    let pipeline = PipelineContext {
        dms: dms.clone(),
        downloader,
        layout: ArchiveLayout::new(&config.archive.dir),
        archive: config.archive.clone(),
        download: config.download,
        permits: limits.downloads.clone(),
        upload_zip: config
            .upload
            .as_ref()
            .is_some_and(|u| u.content == crate::config::UploadContent::Zip),
    };
    Ok(Services {
        dms,
        pipeline: Arc::new(pipeline),
        poll: config.poll,
        telemetry,
        hooks: config.hooks.clone(),
        uploads: uploads.map(Arc::new),
        retention: config.archive.retention,
    })
}

fn upload_context(
    config: &Config,
    settings: &UploadSettings,
    credentials: CredentialProvider,
    credential_env: &CredentialEnv,
    limits: &Limits,
    telemetry: &Telemetry,
) -> Result<UploadContext, StartError> {
    let credentials = match settings.kind {
        // OSS signs with the DMS chain: one provider, so a refreshed STS token serves both.
        StoreKind::Oss => StoreCredentials::Oss(credentials),
        StoreKind::S3 => StoreCredentials::S3(s3_credentials(settings, credential_env)?),
    };
    let store = ObjectStore::new(
        &settings.endpoint,
        &settings.bucket,
        &settings.region,
        credentials,
        config.download.connect_timeout,
        config.download.read_timeout,
        Arc::clone(&telemetry.metrics),
    )
    .map_err(|e| StartError::Upload(format!("upload.endpoint: {e}")))?;
    Ok(UploadContext {
        store,
        settings: settings.clone(),
        slots: limits.uploads.clone(),
        metrics: Arc::clone(&telemetry.metrics),
    })
}

/// The S3 keys: `[upload.credentials]`, else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
/// (and `AWS_SESSION_TOKEN`) from the environment.
pub fn s3_credentials(
    settings: &UploadSettings,
    env: &CredentialEnv,
) -> Result<S3Credentials, StartError> {
    if let Some(keys) = &settings.s3_keys {
        let secret = match (&keys.secret_access_key, &keys.secret_access_key_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StartError::Upload(format!(
                        "upload.credentials.secret_access_key_file {}: {e}",
                        path.display()
                    ))
                })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(StartError::Upload(format!(
                        "upload.credentials.secret_access_key_file {} is empty",
                        path.display()
                    )));
                }
                Secret::new(text)
            }
            (None, None) => unreachable!("validation requires a secret"),
        };
        return Ok(S3Credentials::new(
            keys.access_key_id.clone(),
            secret,
            keys.session_token.clone(),
        ));
    }
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(S3Credentials::new(
            id,
            Secret::new(secret),
            env.get("AWS_SESSION_TOKEN").map(Secret::new),
        )),
        _ => Err(StartError::Upload(
            "s3:// needs [upload.credentials] or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
                .into(),
        )),
    }
}
