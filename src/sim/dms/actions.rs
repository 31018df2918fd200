//! The two DMS actions the simulator serves, run after authentication:
//! `QueryDataTrackResultDownloadStatus` (answers the ticket's next scripted step) and
//! `DownloadDataTrackResult` (validates filters, records the request, mints a key).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::reply::GatewayError;
use super::{DOWNLOAD_ACTION, ExportRequest, State, StatusStep, Ticket, lock};

/// What an action decided.
#[derive(Debug)]
pub(super) enum Outcome {
    /// `Success: true` with these payload fields.
    Success(Map<String, Value>),
    /// `Success: false` with `ErrorCode` / `ErrorMessage`.
    Failure { code: String, message: String },
    /// A gateway-level rejection (e.g. a required parameter is missing).
    Gateway(GatewayError),
}

impl Outcome {
    fn invalid_parameter(message: String) -> Self {
        Self::Failure {
            code: "InvalidParameter".to_owned(),
            message,
        }
    }
}

/// Runs an authenticated action. The state lock is not held while a success URL is produced,
/// since that may call into another simulator.
pub(super) fn run(
    state: &Mutex<State>,
    call_number: u64,
    action: &str,
    params: &BTreeMap<String, String>,
) -> Outcome {
    let result = if action == DOWNLOAD_ACTION {
        download_data_track_result(state, call_number, params)
    } else {
        query_download_status(state, params)
    };
    result.unwrap_or_else(Outcome::Gateway)
}

fn required<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, GatewayError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| GatewayError::missing_business_parameter(name))
}

fn long(name: &str, value: &str) -> Result<i64, GatewayError> {
    value
        .trim()
        .parse()
        .map_err(|_| GatewayError::invalid_business_parameter(name))
}

fn optional_long(
    params: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<i64>, GatewayError> {
    params
        .get(name)
        .filter(|value| !value.is_empty())
        .map(|value| long(name, value))
        .transpose()
}

fn query_download_status(
    state: &Mutex<State>,
    params: &BTreeMap<String, String>,
) -> Result<Outcome, GatewayError> {
    let order_id = long("OrderId", required(params, "OrderId")?)?;
    let download_key_id = required(params, "DownloadKeyId")?;
    optional_long(params, "Tid")?;
    let step = {
        let mut state = lock(state);
        let Some(ticket) = state
            .tickets
            .get_mut(&(order_id, download_key_id.to_owned()))
        else {
            return Ok(Outcome::invalid_parameter(format!(
                "The download task of ticket {order_id} with DownloadKeyId {download_key_id} does not exist."
            )));
        };
        let index = ticket.answered.min(ticket.steps.len().saturating_sub(1));
        ticket.answered += 1;
        ticket.steps.get(index).cloned().unwrap_or(StatusStep::Init)
    };
    let (status, desc) = step.status_and_desc();
    let mut result = json!({
        "DownloadStatus": status,
        "StatusDesc": desc,
        "TotalCount": 0,
    });
    if let StatusStep::Success { url, total_count } = &step {
        // The documented sample ends the URL with a newline; clients must trim it.
        result["DownloadUrl"] = format!("{}\n", url.resolve()).into();
        result["TotalCount"] = (*total_count).into();
    }
    let mut payload = Map::new();
    payload.insert("StatusResult".to_owned(), result);
    Ok(Outcome::Success(payload))
}

fn json_list<T: serde::de::DeserializeOwned>(
    params: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<T>, Outcome> {
    params
        .get(name)
        .filter(|value| !value.is_empty())
        .map(|value| {
            serde_json::from_str(value).map_err(|error| {
                Outcome::invalid_parameter(format!("{name} is not valid JSON of its type: {error}"))
            })
        })
        .transpose()
}

const COLUMN_FILTER_OPERATORS: [&str; 7] = [
    "EQUAL",
    "NOT_EQUAL",
    "IN",
    "BETWEEN",
    "LESS",
    "MORE",
    "NOT_IN",
];

fn column_filter(params: &BTreeMap<String, String>) -> Result<Option<Value>, Outcome> {
    let Some(filter) = json_list::<Value>(params, "ColumnFilter")? else {
        return Ok(None);
    };
    let name_ok = filter.get("ColumnName").is_some_and(Value::is_string);
    let operator_ok = filter
        .get("Operator")
        .and_then(Value::as_str)
        .is_some_and(|operator| COLUMN_FILTER_OPERATORS.contains(&operator));
    if !filter.is_object() || !name_ok || !operator_ok {
        return Err(Outcome::invalid_parameter(
            "ColumnFilter must be an object with ColumnName and a known Operator.".to_owned(),
        ));
    }
    Ok(Some(filter))
}

fn filter_time(params: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, Outcome> {
    let Some(value) = params.get(name).filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    let well_formed =
        value.len() == 19 && jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", value).is_ok();
    if !well_formed {
        return Err(Outcome::invalid_parameter(format!(
            "{name} must be yyyy-MM-dd HH:mm:ss."
        )));
    }
    Ok(Some(value.clone()))
}

fn download_data_track_result(
    state: &Mutex<State>,
    call_number: u64,
    params: &BTreeMap<String, String>,
) -> Result<Outcome, GatewayError> {
    let order_id = long("OrderId", required(params, "OrderId")?)?;
    let rollback_sql_type = required(params, "RollbackSQLType")?.to_owned();
    let tid = optional_long(params, "Tid")?;
    if !matches!(rollback_sql_type.as_str(), "REVERSE" | "FORWARD") {
        return Ok(Outcome::invalid_parameter(
            "RollbackSQLType must be REVERSE or FORWARD.".to_owned(),
        ));
    }
    let parsed = (|| {
        Ok::<_, Outcome>(ExportRequest {
            call_number,
            order_id,
            rollback_sql_type,
            filter_start_time: filter_time(params, "FilterStartTime")?,
            filter_end_time: filter_time(params, "FilterEndTime")?,
            filter_table_list: json_list(params, "FilterTableList")?,
            filter_type_list: json_list(params, "FilterTypeList")?,
            event_id_list: json_list(params, "EventIdList")?,
            column_filter: column_filter(params)?,
            tid,
            download_key_id: uuid::Uuid::new_v4().to_string(),
        })
    })();
    let export = match parsed {
        Ok(export) => export,
        Err(outcome) => return Ok(outcome),
    };
    let mut state = lock(state);
    let Some(steps) = state.export_scripts.get(&order_id).cloned() else {
        return Ok(Outcome::invalid_parameter(format!(
            "Ticket {order_id} does not exist or is not a data tracking ticket."
        )));
    };
    state.tickets.insert(
        (order_id, export.download_key_id.clone()),
        Ticket { steps, answered: 0 },
    );
    let mut payload = Map::new();
    payload.insert(
        "DownloadKeyId".to_owned(),
        export.download_key_id.clone().into(),
    );
    state.exports.push(export);
    Ok(Outcome::Success(payload))
}
