//! `dmstrack export`: one `DownloadDataTrackResult`; prints the new `DownloadKeyId`.

use super::{Exit, one_shot_client, parse_rollback_sql_type};
use crate::config::{ColumnFilter, Config, ExportSpec, RollbackSqlType};

/// Arguments of `dmstrack export`.
#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    /// The data-tracking ticket id.
    #[arg(long)]
    order_id: i64,
    /// REVERSE (rollback / UNDO SQL) or FORWARD (rebuild / REDO SQL).
    #[arg(long, value_parser = parse_rollback_sql_type)]
    rollback_sql_type: RollbackSqlType,
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
    /// Column filter as the API's JSON object, e.g. '{"ColumnName":"id","Operator":"IN","InList":["1"]}'.
    #[arg(long, value_parser = parse_column_filter)]
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

pub(super) fn parse_column_filter(value: &str) -> Result<ColumnFilter, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Wire {
        column_name: String,
        operator: crate::config::ColumnOperator,
        value: Option<String>,
        between_start: Option<String>,
        between_end: Option<String>,
        #[serde(default)]
        in_list: Vec<String>,
    }
    let w: Wire =
        serde_json::from_str(value).map_err(|e| format!("not a ColumnFilter object: {e}"))?;
    Ok(ColumnFilter {
        between_end: w.between_end,
        between_start: w.between_start,
        column_name: w.column_name,
        in_list: w.in_list,
        operator: w.operator,
        value: w.value,
    })
}

pub(super) async fn run(config: &Config, args: &ExportArgs) -> Exit {
    for ty in &args.filter_types {
        if !["INSERT", "UPDATE", "DELETE"].contains(&ty.as_str()) {
            eprintln!("dmstrack: --filter-type {ty:?} is not INSERT, UPDATE or DELETE");
            return Exit::Usage;
        }
    }
    let spec = ExportSpec {
        rollback_sql_type: args.rollback_sql_type,
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
