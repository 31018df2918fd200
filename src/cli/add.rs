//! `dmstrack add`: one ticket as a file of the tickets folder, written atomically (temp file
//! and rename), so a running daemon picks it up within seconds and a stopped one at its next
//! start. The file is named after the ticket; a ticket already in the config (main file or
//! tickets folder) is refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Exit, RollbackSqlTypeArg, load_config};
use crate::config::{ColumnFilter, Config, ConfigEnv, RollbackSqlType};

/// Arguments of `dmstrack add`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["download_key_id", "rollback_sql_type"]))]
pub(super) struct AddArgs {
    /// The data-tracking ticket id.
    #[arg(long)]
    order_id: i64,
    /// The key of an export that already exists.
    #[arg(long)]
    download_key_id: Option<String>,
    /// Or let dmstrack start the export: which SQL DMS prepares (any case).
    #[arg(long, value_enum, ignore_case = true)]
    rollback_sql_type: Option<RollbackSqlTypeArg>,
    /// Start of the time filter, "yyyy-MM-dd HH:mm:ss".
    #[arg(
        long,
        requires = "rollback_sql_type",
        conflicts_with = "download_key_id"
    )]
    filter_start_time: Option<String>,
    /// End of the time filter, "yyyy-MM-dd HH:mm:ss".
    #[arg(
        long,
        requires = "rollback_sql_type",
        conflicts_with = "download_key_id"
    )]
    filter_end_time: Option<String>,
    /// A table to keep (repeat, or separate with commas).
    #[arg(
        long = "filter-table",
        value_delimiter = ',',
        requires = "rollback_sql_type",
        conflicts_with = "download_key_id"
    )]
    filter_tables: Vec<String>,
    /// INSERT, UPDATE or DELETE (repeat, or separate with commas).
    #[arg(
        long = "filter-type",
        value_delimiter = ',',
        requires = "rollback_sql_type",
        conflicts_with = "download_key_id"
    )]
    filter_types: Vec<String>,
    /// An event id to keep (repeat, or separate with commas).
    #[arg(
        long = "event-id",
        value_delimiter = ',',
        requires = "rollback_sql_type",
        conflicts_with = "download_key_id"
    )]
    event_ids: Vec<i64>,
    /// Column filter, as for `dmstrack export` (the config's shape).
    #[arg(long, value_parser = super::export::parse_column_filter, requires = "rollback_sql_type",
        conflicts_with = "download_key_id")]
    column_filter: Option<ColumnFilter>,
    /// Tenant id [default: dms.tid from the config].
    #[arg(long)]
    tid: Option<i64>,
    /// Shown in logs and status.
    #[arg(long)]
    label: Option<String>,
}

impl AddArgs {
    /// An existing export, for `dmstrack export --add`.
    pub(super) fn existing(
        order_id: i64,
        download_key_id: String,
        tid: Option<i64>,
        label: Option<String>,
    ) -> Self {
        Self {
            order_id,
            download_key_id: Some(download_key_id),
            rollback_sql_type: None,
            filter_start_time: None,
            filter_end_time: None,
            filter_tables: Vec::new(),
            filter_types: Vec::new(),
            event_ids: Vec::new(),
            column_filter: None,
            tid,
            label,
        }
    }
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    format!(
        "[{}]",
        items.iter().map(show).collect::<Vec<_>>().join(", ")
    )
}

/// The ticket as a `[[tickets]]` table.
pub(super) fn ticket_toml(args: &AddArgs) -> String {
    let mut text = format!(
        "# Added by `dmstrack add` on {}.\n[[tickets]]\norder_id = {}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        args.order_id
    );
    if let Some(key) = &args.download_key_id {
        text.push_str(&format!("download_key_id = {}\n", quoted(key)));
    }
    if let Some(kind) = args.rollback_sql_type.map(RollbackSqlType::from) {
        let mut fields = vec![format!("rollback_sql_type = {}", quoted(kind.as_str()))];
        if let Some(t) = &args.filter_start_time {
            fields.push(format!("filter_start_time = {}", quoted(t)));
        }
        if let Some(t) = &args.filter_end_time {
            fields.push(format!("filter_end_time = {}", quoted(t)));
        }
        if !args.filter_tables.is_empty() {
            fields.push(format!(
                "filter_tables = {}",
                list(&args.filter_tables, |t| quoted(t))
            ));
        }
        if !args.filter_types.is_empty() {
            fields.push(format!(
                "filter_types = {}",
                list(&args.filter_types, |t| quoted(t))
            ));
        }
        if !args.event_ids.is_empty() {
            fields.push(format!(
                "event_ids = {}",
                list(&args.event_ids, ToString::to_string)
            ));
        }
        if let Some(f) = &args.column_filter {
            let mut inner = vec![
                format!("column_name = {}", quoted(&f.column_name)),
                format!("operator = {}", quoted(operator_name(f.operator))),
            ];
            for (key, value) in [
                ("value", &f.value),
                ("between_start", &f.between_start),
                ("between_end", &f.between_end),
            ] {
                if let Some(value) = value {
                    inner.push(format!("{key} = {}", quoted(value)));
                }
            }
            if !f.in_list.is_empty() {
                inner.push(format!("in_list = {}", list(&f.in_list, |v| quoted(v))));
            }
            fields.push(format!("column_filter = {{ {} }}", inner.join(", ")));
        }
        text.push_str(&format!("export = {{ {} }}\n", fields.join(", ")));
    }
    if let Some(tid) = args.tid {
        text.push_str(&format!("tid = {tid}\n"));
    }
    if let Some(label) = &args.label {
        text.push_str(&format!("label = {}\n", quoted(label)));
    }
    text
}

fn operator_name(operator: crate::config::ColumnOperator) -> &'static str {
    use crate::config::ColumnOperator::*;
    match operator {
        Equal => "EQUAL",
        NotEqual => "NOT_EQUAL",
        In => "IN",
        Between => "BETWEEN",
        Less => "LESS",
        More => "MORE",
        NotIn => "NOT_IN",
    }
}

/// The file name: the order and the key (or the export's parameters' hash), path-safe.
fn file_name(ticket_id: &str) -> String {
    format!("{ticket_id}.toml")
}

pub(super) fn run(path: &Path, env: &ConfigEnv, args: &AddArgs) -> Exit {
    let config = match load_config(path, env) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    match add(&config, args) {
        Ok(path) => {
            println!("{}", path.display());
            Exit::Success
        }
        Err((exit, message)) => {
            eprintln!("dmstrack add: {message}");
            exit
        }
    }
}

/// Adds the ticket to `config`'s tickets folder; returns the file written.
pub(super) fn add(config: &Config, args: &AddArgs) -> Result<PathBuf, (Exit, String)> {
    let text = ticket_toml(args);
    let folder = &config.watch.tickets_dir;
    let probe = folder.join(".probe.toml");
    // Validate exactly as the daemon will: the ticket alone, then against every other one.
    let mut index = config.ticket_index.clone();
    let tickets = crate::config::validate_tickets_text(&text, &probe, config.dms.tid, &mut index)
        .map_err(|diagnostics| {
        let problem = diagnostics
            .iter()
            .map(|d| {
                // Say "already listed" about the config, not about a file not written yet.
                d.message.clone()
            })
            .collect::<Vec<_>>()
            .join("; ");
        let exit = if problem.contains("duplicate ticket") {
            Exit::Failure
        } else {
            Exit::Usage
        };
        (exit, problem)
    })?;
    let ticket = tickets.first().expect("one ticket");
    let id = crate::watch::state::ticket_id(ticket);
    let target = folder.join(file_name(&id));
    if target.exists() {
        return Err((
            Exit::Failure,
            format!("{} exists already", target.display()),
        ));
    }
    let io = |e: std::io::Error| (Exit::Failure, format!("{}: {e}", folder.display()));
    std::fs::create_dir_all(folder).map_err(io)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".toml")
        .tempfile_in(folder)
        .map_err(io)?;
    tmp.write_all(text.as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // persist_noclobber: never replace a file that appeared meanwhile.
    tmp.persist_noclobber(&target).map_err(|e| io(e.error))?;
    let _ = crate::job::archive::sync_dir(folder);
    Ok(std::path::absolute(&target).unwrap_or(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_toml() {
        assert_eq!(quoted("a\"b\\c\n订"), "\"a\\\"b\\\\c\\n订\"");
        let parsed: toml::Value =
            toml::from_str(&format!("x = {}", quoted("é \u{1} \"q\""))).unwrap();
        assert_eq!(parsed["x"].as_str(), Some("é \u{1} \"q\""));
    }
}
