//! `[[tickets]]`: each ticket's identity, its export filters, and duplicates. The same rules
//! hold for the main file and for every file of the tickets folder.

use std::collections::HashMap;

use super::Checker;
use super::key;
use crate::config::locate::Seg;
use crate::config::raw::{RawExport, RawTicket};
use crate::config::{ColumnFilter, ColumnOperator, ExportSpec, TicketSource, TicketSpec};

/// Where each ticket is listed (`file:line:column`), by identity, across the main file and
/// the tickets folder: a ticket listed twice is an error that names both places.
pub(crate) type TicketIndex = HashMap<(i64, TicketSource), String>;

pub(crate) fn validate_tickets(
    c: &mut Checker<'_>,
    raw: Vec<RawTicket>,
    default_tid: Option<i64>,
    seen: &mut TicketIndex,
) -> Vec<TicketSpec> {
    let places = if raw.is_empty() {
        Vec::new()
    } else {
        crate::config::locate::ticket_places(c.text)
    };
    let mut tickets = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let at = |k: &'static str| [key("tickets"), Seg::Index(i), key(k)];
        if t.order_id <= 0 {
            c.error(
                &at("order_id"),
                format!("{} is not a ticket id (must be positive)", t.order_id),
            );
        }
        if let Some(tid) = t.tid
            && tid <= 0
        {
            c.error(
                &at("tid"),
                format!("{tid} is not a tenant id (must be positive)"),
            );
        }
        let source = match (t.download_key_id, t.export) {
            (Some(_), Some(_)) => {
                c.error(
                    &at("export"),
                    "set download_key_id (an existing export) or export (start one), not both",
                );
                continue;
            }
            (None, None) => {
                c.error(
                    &[key("tickets"), Seg::Index(i)],
                    "needs download_key_id (an existing export) or export (start one)",
                );
                continue;
            }
            (Some(k), None) => {
                if k.trim().is_empty() || k.trim() != k || k.chars().any(char::is_control) {
                    c.error(
                        &at("download_key_id"),
                        format!("{k:?} is not a DownloadKeyId"),
                    );
                }
                TicketSource::Existing { download_key_id: k }
            }
            (None, Some(e)) => TicketSource::Export(Box::new(validate_export(c, i, e))),
        };
        let identity = (t.order_id, source.clone());
        let place = match places.get(i) {
            Some((line, column)) => format!("{}:{line}:{column}", c.source.display()),
            None => c.source.display().to_string(),
        };
        if let Some(earlier) = seen.get(&identity) {
            let what = match &source {
                TicketSource::Existing { download_key_id } => format!(
                    "order_id {} with download_key_id {download_key_id:?}",
                    t.order_id
                ),
                TicketSource::Export(_) => format!("order_id {} with the same export", t.order_id),
            };
            c.error(
                &[key("tickets"), Seg::Index(i), key("order_id")],
                format!("duplicate ticket: {what} is already listed at {earlier}"),
            );
        } else {
            seen.insert(identity, place);
        }
        tickets.push(TicketSpec {
            order_id: t.order_id,
            tid: t.tid.or(default_tid),
            label: t.label,
            source,
        });
    }
    tickets
}

fn validate_export(c: &mut Checker<'_>, i: usize, e: RawExport) -> ExportSpec {
    let at = |k: &'static str| [key("tickets"), Seg::Index(i), key("export"), key(k)];
    let mut times = Vec::new();
    for (k, v) in [
        ("filter_start_time", &e.filter_start_time),
        ("filter_end_time", &e.filter_end_time),
    ] {
        if let Some(v) = v {
            match jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", v) {
                Ok(t) => times.push(t),
                Err(_) => c.error(
                    &at(k),
                    format!("{v:?} is not a time like \"2026-11-27 00:00:00\""),
                ),
            }
        }
    }
    if let [start, end] = times[..]
        && start > end
    {
        c.error(&at("filter_end_time"), "is before filter_start_time");
    }
    for (j, ty) in e.filter_types.iter().enumerate() {
        if !["INSERT", "UPDATE", "DELETE"].contains(&ty.as_str()) {
            c.error(
                &[
                    key("tickets"),
                    Seg::Index(i),
                    key("export"),
                    key("filter_types"),
                    Seg::Index(j),
                ],
                format!("{ty:?} is not INSERT, UPDATE or DELETE"),
            );
        }
    }
    for (j, table) in e.filter_tables.iter().enumerate() {
        if table.trim().is_empty() {
            c.error(
                &[
                    key("tickets"),
                    Seg::Index(i),
                    key("export"),
                    key("filter_tables"),
                    Seg::Index(j),
                ],
                "is empty",
            );
        }
    }
    let column_filter = e.column_filter.map(|f| {
        use ColumnOperator::*;
        let problem = match f.operator {
            _ if f.column_name.trim().is_empty() => Some("column_name is empty"),
            Between if f.between_start.is_none() || f.between_end.is_none() => {
                Some("BETWEEN needs between_start and between_end")
            }
            In | NotIn if f.in_list.is_empty() => Some("IN and NOT_IN need in_list"),
            Equal | NotEqual | Less | More if f.value.is_none() => {
                Some("this operator needs value")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            c.error(&at("column_filter"), problem);
        }
        ColumnFilter {
            between_end: f.between_end,
            between_start: f.between_start,
            column_name: f.column_name,
            in_list: f.in_list,
            operator: f.operator,
            value: f.value,
        }
    });
    ExportSpec {
        rollback_sql_type: e.rollback_sql_type,
        filter_start_time: e.filter_start_time,
        filter_end_time: e.filter_end_time,
        filter_tables: e.filter_tables,
        filter_types: e.filter_types,
        column_filter,
        event_ids: e.event_ids,
    }
}
