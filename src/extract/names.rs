//! Entry names: turning the raw name bytes into text, the component-wise safety check that
//! decides whether a name may be written under the destination, and the escaped form used
//! in error messages.

use std::fmt::Write as _;

/// General-purpose flag bit 11 (EFS): the name is declared UTF-8.
const UTF8_NAME_FLAG: u16 = 1 << 11;

/// Decodes a raw entry name.
///
/// Valid UTF-8 stays UTF-8 even without the UTF-8 flag, because Java and many Windows writers
/// store UTF-8 names without setting it (Chinese table names would otherwise turn into CP437
/// mojibake). A name that claims UTF-8 but is not is refused rather than guessed at. Anything
/// else is legacy CP437, decoded by `cp437`.
pub(super) fn decode_name(
    raw: &[u8],
    flags: u16,
    cp437: impl FnOnce() -> Option<String>,
) -> Result<String, &'static str> {
    match std::str::from_utf8(raw) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) if flags & UTF8_NAME_FLAG != 0 => {
            Err("name is flagged as UTF-8 but is not valid UTF-8")
        }
        Err(_) => cp437().ok_or("name cannot be decoded as CP437"),
    }
}

/// A name that passed [`check_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SafePath {
    /// Relative path, components joined with `/`; never empty.
    pub(super) path: String,
    /// The name ended with a separator, which marks a directory entry.
    pub(super) trailing_separator: bool,
}

/// Checks that `name` stays inside the destination without any rewriting.
///
/// Both `/` and `\` separate components, so Windows-style `..\..\x` is caught on Unix too.
/// Refused: empty names, NUL, absolute paths, drive prefixes (`C:`), and empty, `.` or `..`
/// components anywhere (only a single trailing separator is allowed, marking a directory).
pub(super) fn check_path(name: &str) -> Result<SafePath, String> {
    if name.is_empty() {
        return Err("name is empty".to_owned());
    }
    if name.contains('\0') {
        return Err("name contains a NUL byte".to_owned());
    }
    if name.starts_with(['/', '\\']) {
        return Err("path is absolute".to_owned());
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(format!("path has a drive prefix (\"{}\")", &name[..2]));
    }
    let trailing_separator = name.ends_with(['/', '\\']);
    let body = if trailing_separator {
        &name[..name.len() - 1]
    } else {
        name
    };
    let mut components = Vec::new();
    let mut depth: usize = 0;
    for component in body.split(['/', '\\']) {
        match component {
            "" => return Err("path has an empty component (\"//\")".to_owned()),
            "." => return Err("path has a \".\" component".to_owned()),
            ".." if depth == 0 => return Err("path escapes the archive (\"..\")".to_owned()),
            ".." => return Err("path has a \"..\" component".to_owned()),
            _ => {
                depth += 1;
                components.push(component);
            }
        }
    }
    Ok(SafePath {
        path: components.join("/"),
        trailing_separator,
    })
}

/// `name` in double quotes with control and bidirectional-formatting characters escaped, so
/// a hostile name cannot forge log lines or hide its real text on a terminal.
pub(super) fn shown(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c.is_control() || is_bidi_format(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(name: &str) -> String {
        check_path(name).expect_err(name)
    }

    #[test]
    fn accepts_plain_relative_paths() {
        let file = check_path("dir/sub/file.sql").unwrap();
        assert_eq!(file.path, "dir/sub/file.sql");
        assert!(!file.trailing_separator);

        let dir = check_path("dir/empty/").unwrap();
        assert_eq!(dir.path, "dir/empty");
        assert!(dir.trailing_separator);

        let windows = check_path("dir\\sub\\file.sql").unwrap();
        assert_eq!(windows.path, "dir/sub/file.sql");

        assert_eq!(check_path("数据/表.sql").unwrap().path, "数据/表.sql");
        // A colon later in the name is an ordinary character on Unix.
        assert_eq!(check_path("a/C:b").unwrap().path, "a/C:b");
        assert_eq!(check_path("..hidden/x..").unwrap().path, "..hidden/x..");
    }

    #[test]
    fn rejects_escapes_without_rewriting() {
        assert_eq!(rejected("../evil"), "path escapes the archive (\"..\")");
        assert_eq!(rejected("..\\..\\x"), "path escapes the archive (\"..\")");
        assert_eq!(rejected("a/../../evil"), "path has a \"..\" component");
        assert_eq!(rejected("a/../b"), "path has a \"..\" component");
        assert_eq!(rejected("/abs"), "path is absolute");
        assert_eq!(rejected("\\\\server\\share\\x"), "path is absolute");
        assert_eq!(rejected("C:\\x"), "path has a drive prefix (\"C:\")");
        assert_eq!(rejected("c:x"), "path has a drive prefix (\"c:\")");
        assert_eq!(rejected("a//b"), "path has an empty component (\"//\")");
        assert_eq!(rejected("./a"), "path has a \".\" component");
        assert_eq!(rejected("a/./b"), "path has a \".\" component");
        assert_eq!(rejected("/"), "path is absolute");
        assert_eq!(rejected(""), "name is empty");
        assert_eq!(rejected("a\0b"), "name contains a NUL byte");
    }

    #[test]
    fn decodes_utf8_with_or_without_flag_and_falls_back_to_cp437() {
        let chinese = "数据/表.sql".as_bytes();
        assert_eq!(decode_name(chinese, 0, || None).unwrap(), "数据/表.sql");
        assert_eq!(
            decode_name(chinese, UTF8_NAME_FLAG, || None).unwrap(),
            "数据/表.sql"
        );
        let cp437 = [0x81, b'.', b't'];
        assert_eq!(
            decode_name(&cp437, 0, || Some("ü.t".to_owned())).unwrap(),
            "ü.t"
        );
        assert_eq!(
            decode_name(&cp437, UTF8_NAME_FLAG, || Some("ü.t".to_owned())).unwrap_err(),
            "name is flagged as UTF-8 but is not valid UTF-8"
        );
    }

    #[test]
    fn shown_escapes_control_and_bidi_characters() {
        assert_eq!(shown("../etc/passwd"), "\"../etc/passwd\"");
        assert_eq!(shown("a\nb\u{1b}[31m"), "\"a\\nb\\u{1b}[31m\"");
        assert_eq!(shown("x\u{202e}gpj.sql"), "\"x\\u{202e}gpj.sql\"");
        assert_eq!(shown("数据"), "\"数据\"");
    }
}
