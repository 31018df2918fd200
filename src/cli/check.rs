//! `dmstrack check [--online]`: validates the config (every problem with `file:line:column`),
//! warns about inline secrets in a file others can read, and with `--online` resolves the
//! credentials and queries each ticket once.

use std::path::Path;

use super::{Exit, one_shot_client};
use crate::config::{Config, ConfigEnv, TicketSource};
use crate::dms::DownloadStatus;
use crate::watch::state::ticket_id;

pub(super) async fn run(path: &Path, env: &ConfigEnv, online: bool) -> Exit {
    let config = match Config::load(path, env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return Exit::Config;
        }
    };
    println!(
        "{}: OK ({} ticket(s){})",
        config.source.display(),
        config.tickets.len(),
        if config.ticket_files.is_empty() {
            String::new()
        } else {
            format!(
                ", {} tickets file(s) in {}",
                config.ticket_files.len(),
                config.watch.tickets_dir.display()
            )
        }
    );
    if config.tickets.is_empty() {
        eprintln!(
            "warning: {}: no [[tickets]]: the daemon will have nothing to do",
            config.source.display()
        );
    }
    if let Some(warning) = inline_secret_warning(&config) {
        eprintln!("warning: {warning}");
    }
    // A bad tickets file does not stop the daemon (it is skipped), but it is a ticket problem.
    let mut bad_files = false;
    for file in config.bad_ticket_files() {
        bad_files = true;
        eprintln!("{}", file.problem.as_deref().unwrap_or(""));
        eprintln!(
            "{}: skipped: its tickets are not watched until it is fixed",
            file.path.display()
        );
    }
    let exit = check_credentials_and_api(&config, online).await;
    if bad_files && exit == Exit::Success {
        Exit::Failure
    } else {
        exit
    }
}

async fn check_credentials_and_api(config: &Config, online: bool) -> Exit {
    if !online {
        return match crate::credentials::CredentialProvider::new(
            &config.credentials,
            crate::credentials::CredentialEnv::from_process(),
        ) {
            Ok(provider) => {
                println!("credentials: {}", provider.describe());
                // s3:// keys come from elsewhere ([upload.credentials] or AWS_*): the daemon
                // would refuse to start without them, so `check` says so too.
                if let Some(upload) = &config.upload
                    && upload.kind == crate::config::StoreKind::S3
                    && let Err(err) = crate::service::services::s3_credentials(
                        upload,
                        &crate::credentials::CredentialEnv::from_process(),
                    )
                {
                    eprintln!("upload credentials: {err}");
                    return Exit::Failure;
                }
                Exit::Success
            }
            Err(err) => {
                eprintln!("credentials: {err}");
                Exit::Failure
            }
        };
    }
    online_check(config).await
}

async fn online_check(config: &Config) -> Exit {
    let client = match one_shot_client(config).await {
        Ok(client) => client,
        Err(Exit::Config) => return Exit::Failure,
        Err(exit) => return exit,
    };
    if let Err(err) = client.credentials().get().await {
        eprintln!("credentials: {err}");
        return if err.is_config() {
            Exit::Failure
        } else {
            Exit::TempFail
        };
    }
    println!("credentials: {}", client.credentials().describe());
    let mut exit = Exit::Success;
    let (records, _) = crate::watch::state::read_all(&config.state.dir);
    for ticket in &config.tickets {
        let name = match &ticket.label {
            Some(label) => format!("order {} ({label})", ticket.order_id),
            None => format!("order {}", ticket.order_id),
        };
        // An export ticket has a key once dmstrack started its export: it is in the state.
        let key = match &ticket.source {
            TicketSource::Existing { download_key_id } => download_key_id.clone(),
            TicketSource::Export(_) => {
                let id = ticket_id(ticket);
                match records
                    .iter()
                    .find(|r| r.id == id)
                    .and_then(|r| r.download_key_id.clone())
                {
                    Some(key) => key,
                    None => {
                        println!("{name}: export not started yet; nothing to query");
                        continue;
                    }
                }
            }
        };
        match client.query_status(ticket.order_id, &key, ticket.tid).await {
            Ok(status) => {
                let detail = status
                    .status_desc
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                println!("{name} key {key}: {}{detail}", status.status.as_str());
                if status.status == DownloadStatus::Fail {
                    exit = Exit::Failure;
                }
            }
            Err(err) => {
                eprintln!("{name} key {key}: {err}");
                match err.exit_code() {
                    75 => return Exit::TempFail,
                    78 => return Exit::Failure,
                    _ => exit = Exit::Failure,
                }
            }
        }
    }
    if let Some(upload) = &config.upload {
        match check_upload_target(config, upload, client.credentials().clone()).await {
            Exit::Success => {}
            Exit::TempFail => return Exit::TempFail,
            other => exit = other,
        }
    }
    exit
}

/// Lists at most one key under the upload prefix: the endpoint answers, the credentials are
/// accepted, and they may list (and, by the same policy, write) there.
async fn check_upload_target(
    config: &Config,
    upload: &crate::config::UploadSettings,
    credentials: crate::credentials::CredentialProvider,
) -> Exit {
    let target = format!(
        "{}://{}/{}",
        upload.kind.scheme(),
        upload.bucket,
        upload.prefix
    );
    let store_credentials = match upload.kind {
        crate::config::StoreKind::Oss => {
            crate::job::upload::store::StoreCredentials::Oss(credentials)
        }
        crate::config::StoreKind::S3 => match crate::service::services::s3_credentials(
            upload,
            &crate::credentials::CredentialEnv::from_process(),
        ) {
            Ok(keys) => crate::job::upload::store::StoreCredentials::S3(keys),
            Err(err) => {
                eprintln!("upload {target}: {err}");
                return Exit::Failure;
            }
        },
    };
    let store = match crate::job::upload::store::ObjectStore::new(
        &upload.endpoint,
        &upload.bucket,
        &upload.region,
        store_credentials,
        config.download.connect_timeout,
        config.download.read_timeout,
        std::sync::Arc::new(crate::telemetry::Metrics::new()),
    ) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("upload {target}: {err}");
            return Exit::Failure;
        }
    };
    let prefix = if upload.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", upload.prefix)
    };
    match store.check_access(&prefix).await {
        Ok(()) => {
            println!("upload {target}: reachable, credentials accepted");
            Exit::Success
        }
        Err(err) => {
            eprintln!("upload {target}: {err}");
            if err.is_final() {
                Exit::Failure
            } else {
                Exit::TempFail
            }
        }
    }
}

/// A secret written inline in a file that group or others can read is a leak waiting to
/// happen: say so, and say how to fix it.
fn inline_secret_warning(config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if config.inline_secret_keys.is_empty() {
        return None;
    }
    let mode = std::fs::metadata(&config.source).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{}: {} written inline in a file readable by group or others (mode {:04o}); \
             use access_key_secret_file (systemd LoadCredential=) or chmod 600",
            config.source.display(),
            config.inline_secret_keys.join(" and "),
            mode
        )
    })
}
