//! Turns byte spans and key paths into `line:column`, so every config message can say where
//! in the file the problem is. Works on toml's spanned document (`DeTable`), parsed from the
//! original text; going through `toml::Value` would lose the positions.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Renders a key path the way the messages show it: `tickets[1].export.filter_types`.
pub(crate) fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The `line:column` of the start of each `[[tickets]]` table, in one parse (a duplicate
/// ticket's message names the place of the first one; with 10,000 tickets, locating each by
/// itself would parse the file 10,000 times).
pub(crate) fn ticket_places(text: &str) -> Vec<(usize, usize)> {
    let Ok(doc) = DeTable::parse(text) else {
        return Vec::new();
    };
    let Some(tickets) = doc.get_ref().get("tickets") else {
        return Vec::new();
    };
    let DeValue::Array(items) = tickets.get_ref() else {
        return Vec::new();
    };
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    items
        .iter()
        .map(|item| {
            let offset = item.span().start.min(text.len());
            let line = newlines.partition_point(|&n| n < offset);
            let line_start = if line == 0 { 0 } else { newlines[line - 1] + 1 };
            (line + 1, text[line_start..offset].chars().count() + 1)
        })
        .collect()
}

/// The span of the key at `path` (the key itself where it is written, else its value), or of
/// the nearest ancestor that exists. `None` when the document cannot be parsed.
pub(crate) fn span_of(text: &str, path: &[Seg]) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut best: Option<Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    for seg in path {
        let next = match (seg, table, array) {
            (Seg::Key(key), Some(t), _) => t.get_key_value(*key).map(|(k, v)| (k.span(), v)),
            (Seg::Index(i), _, Some(items)) => items.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((span, value)) = next else { break };
        best = Some(span);
        (table, array) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(items) => (None, Some(&items[..])),
            _ => (None, None),
        };
    }
    best
}

/// The key path of the innermost key or value whose span contains `span`, to name the key in
/// a parse error (`tickets[0].export`), or an empty string when nothing matches. Every key is
/// searched: a table's own span does not always cover the keys under its `[header]`.
pub(crate) fn path_at(text: &str, span: &Range<usize>) -> String {
    fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
    }
    fn walk(
        value: &DeValue<'_>,
        prefix: &str,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        let consider = |path: String, range: Range<usize>, best: &mut Option<(usize, String)>| {
            let width = range.end - range.start;
            if contains(&range, span) && best.as_ref().is_none_or(|(w, _)| width <= *w) {
                *best = Some((width, path));
            }
        };
        match value {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    let path = if prefix.is_empty() {
                        key.get_ref().to_string()
                    } else {
                        format!("{prefix}.{}", key.get_ref())
                    };
                    consider(path.clone(), key.span(), best);
                    consider(path.clone(), child.span(), best);
                    walk(child.get_ref(), &path, span, best);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{prefix}[{i}]");
                    consider(path.clone(), item.span(), best);
                    walk(item.get_ref(), &path, span, best);
                }
            }
            _ => {}
        }
    }
    let Ok(doc) = DeTable::parse(text) else {
        return String::new();
    };
    let mut best = None;
    let root = DeValue::Table(doc.into_inner());
    walk(&root, "", span, &mut best);
    best.map(|(_, path)| path).unwrap_or_default()
}
