//! `dmstrack export`: one `DownloadDataTrackResult`; prints the new `DownloadKeyId`.

use std::path::Path;

use super::{Exit, RollbackSqlTypeArg, one_shot_client};
use crate::config::{ColumnFilter, Config, ConfigEnv, ExportSpec, RollbackSqlType, TicketSource};

/// Arguments of `dmstrack export`.
#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    /// The data-tracking ticket id.
    #[arg(long)]
    order_id: i64,
    /// Which SQL DMS prepares (any case).
    #[arg(long, value_enum, ignore_case = true)]
    rollback_sql_type: RollbackSqlTypeArg,
    /// Start of the time filter, "yyyy-MM-dd HH:mm:ss".
    #[arg(long)]
    filter_start_time: Option<String>,
    /// End of the time filter, "yyyy-MM-dd HH:mm:ss".
    #[arg(long)]
    filter_end_time: Option<String>,
    /// A table to keep (repeat, or separate with commas).
    #[arg(long = "filter-table", value_delimiter = ',')]
    filter_tables: Vec<String>,
    /// INSERT, UPDATE or DELETE (repeat, or separate with commas).
    #[arg(long = "filter-type", value_delimiter = ',')]
    filter_types: Vec<String>,
    /// An event id to keep (repeat, or separate with commas).
    #[arg(long = "event-id", value_delimiter = ',')]
    event_ids: Vec<i64>,
    /// Column filter in the config's shape, as a TOML inline table or JSON object, e.g.
    /// '{ column_name = "id", operator = "IN", in_list = ["1", "2"] }' or
    /// '{"column_name": "id", "operator": "BETWEEN", "between_start": "1", "between_end": "9"}'.
    /// Keys: column_name, operator (EQUAL, NOT_EQUAL, IN, NOT_IN, BETWEEN, LESS, MORE), value,
    /// between_start, between_end, in_list.
    #[arg(long, value_name = "TABLE", value_parser = parse_column_filter)]
    column_filter: Option<ColumnFilter>,
    /// Tenant id [default: dms.tid from the config].
    #[arg(long)]
    tid: Option<i64>,
    /// Also add the new export as a ticket (as `dmstrack add --download-key-id` would), so the
    /// daemon archives it.
    #[arg(long)]
    add: bool,
    /// With --add: the ticket's label.
    #[arg(long, requires = "add")]
    label: Option<String>,
}

impl ExportArgs {
    /// The SQL type asked for.
    pub(super) fn rollback_sql_type(&self) -> RollbackSqlType {
        self.rollback_sql_type.into()
    }
}

/// `--column-filter`: the config's `column_filter` shape (snake_case keys), written as a TOML
/// inline table or as a JSON object, checked by the config's own rules. The API's PascalCase
/// JSON (`ColumnName`, `InList`, …) of earlier versions is still accepted.
pub(super) fn parse_column_filter(value: &str) -> Result<ColumnFilter, String> {
    let table = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(object)) => json_to_toml_inline(&object)?,
        Ok(_) => return Err("expected an object or an inline table, { column_name = … }".into()),
        // Not JSON: a TOML inline table, exactly as in the config file.
        Err(_) => value.trim().to_owned(),
    };
    let text = format!(
        "[[tickets]]\norder_id = 1\nexport = {{ rollback_sql_type = \"REVERSE\", column_filter = {table} }}\n"
    );
    let config = Config::from_toml_str(&text, Path::new("--column-filter"), &ConfigEnv::default())
        .map_err(|err| match err {
            crate::config::ConfigError::Invalid(diagnostics) => diagnostics
                .iter()
                .map(|d| match d.key.as_deref() {
                    Some(key) => {
                        let key = key.trim_start_matches("tickets[0].export.");
                        format!("{key}: {}", d.message)
                    }
                    None => d.message.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })?;
    match config.tickets.into_iter().next().map(|t| t.source) {
        Some(TicketSource::Export(spec)) => spec
            .column_filter
            .ok_or_else(|| "no column filter given".to_owned()),
        _ => Err("no column filter given".to_owned()),
    }
}

/// A flat JSON object as a TOML inline table. JSON string escapes are valid TOML basic-string
/// escapes (serde_json never writes `\/`), so values are re-encoded with serde_json.
fn json_to_toml_inline(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let mut fields = Vec::new();
    for (key, value) in object {
        let key = match key.as_str() {
            "ColumnName" => "column_name",
            "Operator" => "operator",
            "Value" => "value",
            "BetweenStart" => "between_start",
            "BetweenEnd" => "between_end",
            "InList" => "in_list",
            other => other,
        };
        let value = match value {
            serde_json::Value::String(_) => value.to_string(),
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => {
                value.to_string()
            }
            _ => return Err(format!("{key}: expected a string or a list of strings")),
        };
        // A key that is not a bare TOML key is quoted, so the config reports it as unknown.
        let key = if key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            key.to_owned()
        } else {
            serde_json::Value::String(key.to_owned()).to_string()
        };
        fields.push(format!("{key} = {value}"));
    }
    Ok(format!("{{ {} }}", fields.join(", ")))
}

pub(super) async fn run(config: &Config, args: &ExportArgs) -> Exit {
    for ty in &args.filter_types {
        if !["INSERT", "UPDATE", "DELETE"].contains(&ty.as_str()) {
            eprintln!("dmstrack: --filter-type {ty:?} is not INSERT, UPDATE or DELETE");
            return Exit::Usage;
        }
    }
    let spec = ExportSpec {
        rollback_sql_type: args.rollback_sql_type(),
        filter_start_time: args.filter_start_time.clone(),
        filter_end_time: args.filter_end_time.clone(),
        filter_tables: args.filter_tables.clone(),
        filter_types: args.filter_types.clone(),
        column_filter: args.column_filter.clone(),
        event_ids: args.event_ids.clone(),
    };
    let client = match one_shot_client(config).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    match client
        .start_export(args.order_id, args.tid.or(config.dms.tid), &spec)
        .await
    {
        Ok(key) => {
            println!("{key}");
            if !args.add {
                return Exit::Success;
            }
            let ticket =
                super::add::AddArgs::existing(args.order_id, key, args.tid, args.label.clone());
            match super::add::add(config, &ticket) {
                Ok(path) => {
                    println!("{}", path.display());
                    Exit::Success
                }
                Err((exit, message)) => {
                    eprintln!("dmstrack export --add: {message}");
                    exit
                }
            }
        }
        Err(err) => {
            eprintln!("dmstrack: {err}");
            Exit::from_code(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ColumnOperator;

    #[test]
    fn column_filter_takes_the_config_shape_as_toml_or_json() {
        let expected = ColumnFilter {
            between_end: None,
            between_start: None,
            column_name: "id".into(),
            in_list: vec!["1".into(), "2 3".into()],
            operator: ColumnOperator::In,
            value: None,
        };
        for text in [
            r#"{ column_name = "id", operator = "IN", in_list = ["1", "2 3"] }"#,
            r#"{"column_name": "id", "operator": "IN", "in_list": ["1", "2 3"]}"#,
            r#"{"ColumnName":"id","Operator":"IN","InList":["1","2 3"]}"#,
        ] {
            assert_eq!(parse_column_filter(text).unwrap(), expected, "{text}");
        }
        let between = parse_column_filter(
            r#"{"column_name": "t", "operator": "BETWEEN", "between_start": "a\"b", "between_end": "z"}"#,
        )
        .unwrap();
        assert_eq!(between.between_start.as_deref(), Some("a\"b"));
    }

    #[test]
    fn column_filter_errors_use_the_config_rules() {
        let err = parse_column_filter(r#"{ column_name = "id", operator = "IN" }"#).unwrap_err();
        assert_eq!(err, "column_filter: IN and NOT_IN need in_list");
        let err = parse_column_filter(r#"{"column_name": "id", "operator": "LIKE"}"#).unwrap_err();
        assert!(err.contains("unknown variant `LIKE`"), "{err}");
        let err = parse_column_filter(r#"{"column_name": "id", "colour": "red"}"#).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = parse_column_filter("[1]").unwrap_err();
        assert!(err.contains("expected an object"), "{err}");
    }
}
