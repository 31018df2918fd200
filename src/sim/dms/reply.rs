//! The wire shape of the simulator's answers: gateway errors (with the status chosen for each
//! code, see the table in `mod.rs`), DMS business bodies, and the deliberately broken body.

use axum::body::Body;
use hyper::{Response, StatusCode, header};
use serde_json::{Map, Value, json};

use super::HOST_ID;

/// The content type the gateway answers JSON with.
pub(super) const JSON_CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// A gateway-level error: HTTP 4xx/5xx with `{RequestId, HostId, Code, Message, Recommend}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GatewayError {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
    /// `x-acs-retry-after` in milliseconds (throttling only).
    pub(super) retry_after_ms: Option<u64>,
}

impl GatewayError {
    fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(super) fn incomplete_signature(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards. ({detail})"),
        )
    }

    pub(super) fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    pub(super) fn access_key_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    }

    pub(super) fn signature_mismatch(server_string_to_sign: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{server_string_to_sign}"
            ),
        )
    }

    pub(super) fn content_hash_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation. x-acs-content-sha256 is not the SHA-256 of the request body.",
        )
    }

    pub(super) fn nonce_used() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        )
    }

    pub(super) fn timestamp_expired() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        )
    }

    pub(super) fn timestamp_format() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    }

    pub(super) fn token_expired() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        )
    }

    pub(super) fn token_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Mismatch",
            "Specified SecurityToken is mismatch with the AccessKey.",
        )
    }

    pub(super) fn token_missing() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingSecurityToken",
            "SecurityToken is mandatory for temporary credentials.",
        )
    }

    pub(super) fn action_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    pub(super) fn invalid_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        )
    }

    pub(super) fn unsupported_method() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedHTTPMethod",
            "This http method is not supported.",
        )
    }

    /// A required business parameter is absent: the gateway names it in the code.
    pub(super) fn missing_business_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    /// A business parameter does not have its declared type (e.g. a non-numeric `OrderId`).
    pub(super) fn invalid_business_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid."),
        )
    }

    pub(super) fn throttled(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "Throttling.User",
                "Request was denied due to user flow control.",
            )
        }
    }

    pub(super) fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    pub(super) fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The request processing has failed due to some unknown error, exception or failure.",
        )
    }
}

/// A fresh `RequestId` in the gateway's upper-case UUID form.
pub(super) fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

fn json_response(status: StatusCode, request_id: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, JSON_CONTENT_TYPE)
        .header("x-acs-request-id", request_id)
        .body(Body::from(body))
        .expect("static status and header names are valid")
}

/// The gateway's error answer.
pub(super) fn gateway_error(error: &GatewayError, request_id: &str) -> Response<Body> {
    let body = json!({
        "RequestId": request_id,
        "HostId": HOST_ID,
        "Code": error.code,
        "Message": error.message,
        "Recommend": format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=dms-enterprise&requestId={request_id}",
            error.code
        ),
    });
    let mut response = json_response(error.status, request_id, body.to_string());
    if let Some(ms) = error.retry_after_ms {
        response
            .headers_mut()
            .insert("x-acs-retry-after", ms.to_string().parse().expect("digits"));
    }
    response
}

/// HTTP 200 `Success: true` with the payload fields. `ErrorCode`/`ErrorMessage` say
/// `UnknownError` even on success, as the API's own samples do.
pub(super) fn business_success(payload: Map<String, Value>, request_id: &str) -> Response<Body> {
    let mut body = Map::new();
    body.insert("RequestId".into(), request_id.into());
    body.insert("Success".into(), true.into());
    body.insert("ErrorMessage".into(), "UnknownError".into());
    body.insert("ErrorCode".into(), "UnknownError".into());
    body.extend(payload);
    json_response(StatusCode::OK, request_id, Value::Object(body).to_string())
}

/// HTTP 200 `Success: false`: how DMS reports a business failure.
pub(super) fn business_failure(code: &str, message: &str, request_id: &str) -> Response<Body> {
    let body = json!({
        "RequestId": request_id,
        "Success": false,
        "ErrorCode": code,
        "ErrorMessage": message,
    });
    json_response(StatusCode::OK, request_id, body.to_string())
}

/// HTTP 200 with a JSON content type and a body cut off mid-value.
pub(super) fn malformed_json(request_id: &str) -> Response<Body> {
    json_response(
        StatusCode::OK,
        request_id,
        format!("{{\"RequestId\":\"{request_id}\",\"Success\":tru"),
    )
}
