//! The bottom layer: what every network client shares. Secret types that never print
//! themselves, the signed URL, pure Alibaba Cloud RPC signing, the process-wide rate limit,
//! jittered backoff, and transport errors rendered without their URL.

pub mod access_key;
pub mod ratelimit;
pub mod retry;
pub mod secret;
pub mod signed_url;
pub mod signer;

use std::error::Error as _;

/// `User-Agent` of every request dmstrack sends.
pub const USER_AGENT: &str = concat!("dmstrack/", env!("CARGO_PKG_VERSION"));

/// Describes a transport error without its URL: a V1-signed API URL carries the signature and
/// STS token, and a presigned OSS URL is a bearer credential, so reqwest's own `Display`
/// ("error sending request for url (…)") must never be shown.
pub fn transport_error_text(err: reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "the response body broke off"
    } else if err.is_request() {
        "the request failed"
    } else {
        "HTTP error"
    };
    let err = err.without_url();
    let mut text = kind.to_owned();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Most bytes read of an error answer: enough for any XML or JSON error the services send,
/// and a misbehaving peer cannot make dmstrack buffer more.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Reads a response body up to `limit` bytes; `Err(true)` when it is longer (the rest is not
/// read), `Err(false)` when the body broke off. Bodies of API answers and errors are small;
/// nothing a server sends is buffered without a bound.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(err) => return Err(BodyError::Transport(transport_error_text(err))),
        }
    }
}

/// The message for a 3xx answer that was not followed: it names the target host (never the
/// target's query, and never ours), so an operator sees where the request was being sent.
pub fn redirect_refusal(status: u16, headers: &reqwest::header::HeaderMap) -> String {
    let target = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|location| match reqwest::Url::parse(location) {
            Ok(url) => match (url.host_str(), url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                (None, _) => "an unnamed host".to_owned(),
            },
            Err(_) => "the same host".to_owned(),
        })
        .unwrap_or_else(|| "nowhere (no Location)".to_owned());
    format!(
        "HTTP {status}: redirected to {target}; redirects are not followed (the signed request \
         and its credentials would go to another host)"
    )
}

/// Why [`read_bounded`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body broke off.
    #[error("{0}")]
    Transport(String),
}

/// The text of the first `<name>…</name>` element of a small XML error body (OSS and the
/// gateway's XML form), trimmed; empty when absent. Error bodies are flat, so a full XML
/// parser would add nothing.
pub fn xml_element(body: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    body.find(&open)
        .and_then(|start| {
            let rest = &body[start + open.len()..];
            rest.find(&close).map(|end| rest[..end].trim().to_owned())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_elements_of_error_bodies() {
        let body = "<?xml version=\"1.0\"?>\n<Error>\n  <Code>AccessDenied</Code>\n  <Message> Request has expired. </Message>\n</Error>";
        assert_eq!(xml_element(body, "Code"), "AccessDenied");
        assert_eq!(xml_element(body, "Message"), "Request has expired.");
        assert_eq!(xml_element(body, "RequestId"), "");
        assert_eq!(xml_element("<Code>unclosed", "Code"), "");
    }
}
