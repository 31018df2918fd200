//! Wire types of the two data-tracking actions dmstrack calls, and how requests become
//! query parameters. Kept apart from the client so the simulator and tests share them.

use serde::Deserialize;

use crate::config::ExportSpec;
use crate::net::signed_url::{SignedUrl, SignedUrlError};

/// The API version of DMS Enterprise.
pub const API_VERSION: &str = "2018-11-01";
/// Polls an export's preparation.
pub const ACTION_QUERY_STATUS: &str = "QueryDataTrackResultDownloadStatus";
/// Starts an export.
pub const ACTION_EXPORT: &str = "DownloadDataTrackResult";

/// `StatusResult.DownloadStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadStatus {
    /// Initialising.
    Init,
    /// A transient state during initialisation.
    Listing,
    /// DMS is preparing the file.
    Downloading,
    /// Ready: `DownloadUrl` is set.
    Success,
    /// The export failed; `StatusDesc` says why.
    Fail,
    /// A value this version does not know; treated as "not ready yet".
    Other(String),
}

impl DownloadStatus {
    /// Parses the API's spelling.
    pub fn parse(value: &str) -> Self {
        match value.trim() {
            "INIT" => Self::Init,
            "LISTING" => Self::Listing,
            "DOWNLOADING" => Self::Downloading,
            "DOWNLOAD_SUCCESS" => Self::Success,
            "DOWNLOAD_FAIL" => Self::Fail,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The label of `dmstrack_polls_total`: the API's spelling, or `other` for a value this
    /// version does not know (a metric label never takes an unbounded value from the server).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Listing => "LISTING",
            Self::Downloading => "DOWNLOADING",
            Self::Success => "DOWNLOAD_SUCCESS",
            Self::Fail => "DOWNLOAD_FAIL",
            Self::Other(_) => "other",
        }
    }

    /// The API's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Init => "INIT",
            Self::Listing => "LISTING",
            Self::Downloading => "DOWNLOADING",
            Self::Success => "DOWNLOAD_SUCCESS",
            Self::Fail => "DOWNLOAD_FAIL",
            Self::Other(other) => other,
        }
    }
}

/// The common envelope of every DMS answer. `Success` decides; `ErrorCode` is filled even on
/// success (the documented sample says `"UnknownError"`), so it is never used to decide.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Envelope {
    #[serde(default)]
    pub(crate) request_id: String,
    pub(crate) success: Option<bool>,
    #[serde(default)]
    pub(crate) error_code: Option<String>,
    #[serde(default)]
    pub(crate) error_message: Option<String>,
}

/// `StatusResult` as sent.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawStatusResult {
    #[serde(default)]
    pub(crate) download_status: Option<String>,
    #[serde(default)]
    pub(crate) download_url: Option<String>,
    #[serde(default)]
    pub(crate) status_desc: Option<String>,
    #[serde(default)]
    pub(crate) total_count: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct QueryStatusBody {
    pub(crate) status_result: Option<RawStatusResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ExportBody {
    pub(crate) download_key_id: Option<String>,
}

/// One status answer, decoded. `Debug` leaves out `body`, which holds the signed URL.
#[derive(Clone)]
pub struct ExportStatus {
    /// The gateway's request id, for support tickets.
    pub request_id: String,
    /// Where the export is.
    pub status: DownloadStatus,
    /// The signed zip URL (only with `DOWNLOAD_SUCCESS`).
    pub url: Option<SignedUrl>,
    /// `StatusDesc` (DMS's reason on failure).
    pub status_desc: Option<String>,
    /// `TotalCount`.
    pub total_count: Option<i64>,
    /// The whole response body, for `dmstrack query` to print.
    pub body: serde_json::Value,
}

impl std::fmt::Debug for ExportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportStatus")
            .field("request_id", &self.request_id)
            .field("status", &self.status)
            .field("url", &self.url)
            .field("status_desc", &self.status_desc)
            .field("total_count", &self.total_count)
            .finish_non_exhaustive()
    }
}

impl ExportStatus {
    pub(crate) fn from_raw(
        request_id: String,
        raw: RawStatusResult,
        body: serde_json::Value,
    ) -> Result<Self, SignedUrlError> {
        let status = DownloadStatus::parse(raw.download_status.as_deref().unwrap_or(""));
        let url = match raw.download_url.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() && status == DownloadStatus::Success => {
                Some(SignedUrl::parse(text)?)
            }
            _ => None,
        };
        Ok(Self {
            request_id,
            status,
            url,
            status_desc: raw.status_desc,
            total_count: raw.total_count,
            body,
        })
    }
}

/// Parameters of `QueryDataTrackResultDownloadStatus`.
pub fn query_status_params(
    order_id: i64,
    download_key_id: &str,
    tid: Option<i64>,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("OrderId".to_owned(), order_id.to_string()),
        ("DownloadKeyId".to_owned(), download_key_id.to_owned()),
    ];
    if let Some(tid) = tid {
        params.push(("Tid".to_owned(), tid.to_string()));
    }
    params
}

/// Parameters of `DownloadDataTrackResult`. Lists and the column filter go on the wire as
/// compact JSON strings, as the official SDK sends them.
pub fn export_params(order_id: i64, tid: Option<i64>, spec: &ExportSpec) -> Vec<(String, String)> {
    let mut params = vec![
        ("OrderId".to_owned(), order_id.to_string()),
        (
            "RollbackSQLType".to_owned(),
            spec.rollback_sql_type.as_str().to_owned(),
        ),
    ];
    if let Some(start) = &spec.filter_start_time {
        params.push(("FilterStartTime".to_owned(), start.clone()));
    }
    if let Some(end) = &spec.filter_end_time {
        params.push(("FilterEndTime".to_owned(), end.clone()));
    }
    if !spec.filter_tables.is_empty() {
        params.push((
            "FilterTableList".to_owned(),
            compact_json(&spec.filter_tables),
        ));
    }
    if !spec.filter_types.is_empty() {
        params.push((
            "FilterTypeList".to_owned(),
            compact_json(&spec.filter_types),
        ));
    }
    if let Some(filter) = &spec.column_filter {
        params.push(("ColumnFilter".to_owned(), compact_json(filter)));
    }
    if !spec.event_ids.is_empty() {
        params.push(("EventIdList".to_owned(), compact_json(&spec.event_ids)));
    }
    if let Some(tid) = tid {
        params.push(("Tid".to_owned(), tid.to_string()));
    }
    params
}

/// Compact JSON of plain data (these types cannot fail to serialize).
fn compact_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_metric_labels_are_a_fixed_set() {
        assert_eq!(DownloadStatus::parse("LISTING").metric_label(), "LISTING");
        for unknown in ["PAUSED", "a\"b", &"x".repeat(1000)] {
            let status = DownloadStatus::parse(unknown);
            assert_eq!(status.as_str(), unknown.trim());
            assert_eq!(status.metric_label(), "other");
        }
    }
    use crate::config::{ColumnFilter, ColumnOperator, RollbackSqlType};

    #[test]
    fn export_params_match_the_sdk_wire_form() {
        let spec = ExportSpec {
            rollback_sql_type: RollbackSqlType::Reverse,
            filter_start_time: Some("2023-04-23 00:00:00".into()),
            filter_end_time: None,
            filter_tables: vec!["table1".into(), "table2".into()],
            filter_types: vec!["UPDATE".into(), "DELETE".into()],
            column_filter: Some(ColumnFilter {
                between_end: None,
                between_start: None,
                column_name: "account_name".into(),
                in_list: vec!["1".into(), "2".into()],
                operator: ColumnOperator::In,
                value: None,
            }),
            event_ids: vec![1, 2],
        };
        let params = export_params(406, Some(3), &spec);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("ColumnFilter"),
            Some(r#"{"ColumnName":"account_name","InList":["1","2"],"Operator":"IN"}"#)
        );
        assert_eq!(get("EventIdList"), Some("[1,2]"));
        assert_eq!(get("FilterTableList"), Some(r#"["table1","table2"]"#));
        assert_eq!(get("FilterTypeList"), Some(r#"["UPDATE","DELETE"]"#));
        assert_eq!(get("FilterStartTime"), Some("2023-04-23 00:00:00"));
        assert_eq!(get("FilterEndTime"), None);
        assert_eq!(get("RollbackSQLType"), Some("REVERSE"));
        assert_eq!(get("OrderId"), Some("406"));
        assert_eq!(get("Tid"), Some("3"));
    }

    #[test]
    fn status_spellings_round_trip() {
        for s in [
            "INIT",
            "LISTING",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "DOWNLOAD_FAIL",
            "SOMETHING_NEW",
        ] {
            assert_eq!(DownloadStatus::parse(s).as_str(), s);
        }
    }
}
