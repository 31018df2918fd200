//! The OSS simulator's HTTP front: the accept loop, one hyper connection per client, and the
//! per-request path that resolves the bucket (path-style for an IP or `localhost` Host,
//! virtual-hosted `<bucket>.<host>` otherwise), hands the request to the presigned-URL half
//! (no `Authorization` header) or the header-signed half, then stamps `x-oss-request-id`,
//! turns HEAD errors into OSS's body-less form (`x-oss-err`) and logs the request.
//!
//! A handler that answers `None` makes the service fail, which closes the connection without
//! an answer: that is how the "drop after N request bytes" and "apply, then drop" faults
//! reach the client.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response};
use percent_encoding::percent_decode_str;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::body::{CuttableStream, SimBody};
use super::reply::{OssError, header_value, new_request_id};
use super::{OssFault, OssOperation, OssRequestRecord, Shared, UploadFault, presigned, upload};
use crate::net::secret::Secret;

/// Which bucket and key a request names.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) bucket: String,
    /// Decoded; `""` for a bucket-level request.
    pub(super) key: String,
}

/// An answer being built (or `None`: drop the connection), plus what the log should say.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) response: Option<Response<SimBody>>,
    pub(super) key: Option<String>,
    pub(super) operation: Option<OssOperation>,
    pub(super) fault: Option<OssFault>,
    pub(super) upload_fault: Option<UploadFault>,
}

impl Outcome {
    pub(super) fn answer(response: Response<SimBody>) -> Self {
        Self {
            response: Some(response),
            key: None,
            operation: None,
            fault: None,
            upload_fault: None,
        }
    }

    pub(super) fn error(
        error: OssError,
        request_id: &str,
        host_id: &str,
        cut: &Arc<AtomicBool>,
    ) -> Self {
        Self::answer(error.into_response(request_id, host_id, cut))
    }

    /// Close the connection without answering.
    pub(super) fn dropped() -> Self {
        Self {
            response: None,
            key: None,
            operation: None,
            fault: None,
            upload_fault: None,
        }
    }

    pub(super) fn for_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    pub(super) fn with_operation(mut self, operation: OssOperation) -> Self {
        self.operation = Some(operation);
        self
    }
}

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // An accept error (e.g. too many open files) concerns one connection only.
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let cut = Arc::new(AtomicBool::new(false));
    let io = hyper_util::rt::TokioIo::new(CuttableStream {
        inner: stream,
        cut: Arc::clone(&cut),
    });
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let cut = Arc::clone(&cut);
        async move {
            match handle(&shared, request, &cut).await {
                Some(response) => Ok::<_, io::Error>(response),
                None => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "simulated connection drop",
                )),
            }
        }
    });
    // Errors here are the client going away or an injected drop; both end the connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// The bucket and key a request names, from `Host` and the raw path.
fn resolve_target(request: &Parts) -> Result<Target, OssError> {
    let host = request
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host_name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let path_style = host_name.is_empty()
        || host_name == "localhost"
        || host_name.parse::<std::net::IpAddr>().is_ok();
    let Ok(path) = percent_decode_str(request.uri.path()).decode_utf8() else {
        return Err(OssError::invalid_argument(
            "The request path is not valid UTF-8 after percent-decoding.",
            "0016-00000001",
        ));
    };
    let path = path.strip_prefix('/').unwrap_or(&path);
    if path_style {
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        Ok(Target {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    } else {
        let bucket = host_name.split('.').next().unwrap_or("");
        Ok(Target {
            bucket: bucket.to_owned(),
            key: path.to_owned(),
        })
    }
}

async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
    cut: &Arc<AtomicBool>,
) -> Option<Response<SimBody>> {
    let request_id = new_request_id();
    let (parts, body) = request.into_parts();
    let raw_path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let mut outcome = match resolve_target(&parts) {
        Err(error) => Outcome::error(error, &request_id, &shared.host_id, cut),
        Ok(target) if parts.headers.contains_key("authorization") => {
            upload::answer(shared, &parts, body, &target, &raw_query, &request_id, cut).await
        }
        Ok(target) => presigned::answer(shared, &parts, &target, &raw_query, &request_id, cut),
    };
    if let Some(response) = &mut outcome.response {
        let headers = response.headers_mut();
        headers.insert("x-oss-request-id", header_value(&request_id));
        headers.insert("server", HeaderValue::from_static("AliyunOSS"));
        let failed = response.status().is_client_error() || response.status().is_server_error();
        if parts.method == Method::HEAD && failed {
            // OSS answers HEAD errors with the status and headers only; oss2 decodes the error
            // document from the base64 `x-oss-err` header.
            if let Some(xml) = response.body().memory_bytes() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
                response
                    .headers_mut()
                    .insert("x-oss-err", header_value(&encoded));
            }
            *response.body_mut() = SimBody::empty(cut);
            response.headers_mut().remove("content-length");
        }
    }
    let record = OssRequestRecord {
        method: parts.method.as_str().to_owned(),
        path: raw_path,
        query: Secret::new(raw_query),
        range: parts
            .headers
            .get("range")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        status: outcome.response.as_ref().map_or(0, |r| r.status().as_u16()),
        key: outcome.key,
        operation: outcome.operation,
        fault: outcome.fault,
        upload_fault: outcome.upload_fault,
        request_id,
    };
    shared.lock().requests.push(record);
    outcome.response
}
