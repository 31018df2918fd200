//! Entry names: turning the raw name bytes into text, the component-wise safety check that
//! decides whether a name may be written under the destination, and the escaped form used
//! in error messages.

use std::fmt::Write as _;

/// General-purpose flag bit 11 (EFS): the name is declared UTF-8.
const UTF8_NAME_FLAG: u16 = 1 << 11;

/// Decodes a raw entry name.
///
/// Valid UTF-8 stays UTF-8 even without the UTF-8 flag, because Java and many Windows writers
/// store UTF-8 names without setting it. A name that claims UTF-8 but is not is refused rather
/// than guessed at. An unflagged name that is not UTF-8 is GB18030 (GBK, code page 936) when
/// it decodes cleanly, as written by Windows Explorer, 7-Zip and WinRAR on a Chinese system;
/// anything else is legacy CP437, decoded by `cp437`.
///
/// Every byte string is valid CP437, so a name that is also clean GB18030 is read as GB18030:
/// DMS exports come from Chinese systems far more often than from DOS ones. Such a CP437 name
/// (e.g. `\x81ber.txt`, "über.txt") turns into CJK text, but never into an error or a path
/// outside the destination.
///
/// An Info-ZIP Unicode Path extra field (0x7075) never reaches this function: the zip crate
/// replaces the raw name with it, and sets the UTF-8 flag, when its CRC-32 matches the raw
/// name and its content is UTF-8; otherwise the field is ignored.
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
        Err(_) => match clean_gb18030(raw) {
            Some(text) => Ok(text),
            None => cp437().ok_or("name cannot be decoded as CP437"),
        },
    }
}

/// `raw` as GB18030 when every byte sequence is valid and none decodes to U+FFFD (which
/// GB18030 can encode, but no real name holds). As in Windows code page 936 (and the WHATWG
/// decoder behind encoding_rs), a lone 0x80 is "€".
fn clean_gb18030(raw: &[u8]) -> Option<String> {
    encoding_rs::GB18030
        .decode_without_bom_handling_and_without_replacement(raw)
        .filter(|text| !text.contains(char::REPLACEMENT_CHARACTER))
        .map(std::borrow::Cow::into_owned)
}

/// The best text for a raw name in an error message about the archive as a whole: decoded
/// as for extraction when it can be (CP437 aside), else lossy UTF-8.
pub(super) fn name_for_message(raw: &[u8], flags: u16) -> String {
    decode_name(raw, flags, || None).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
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

    /// Stands in for the zip crate's CP437 decoding, and records that it was asked.
    fn cp437_marker(asked: &std::cell::Cell<bool>) -> impl FnOnce() -> Option<String> + '_ {
        || {
            asked.set(true);
            Some("<cp437>".to_owned())
        }
    }

    // The GBK byte strings below were produced by Python's `str.encode("gbk")` and their
    // decodings by `bytes.decode("gb18030")` (CPython's own codec tables, independent of
    // encoding_rs).

    #[test]
    fn utf8_wins_with_or_without_flag_even_when_also_valid_gb18030() {
        let chinese = "数据/表.sql".as_bytes();
        assert_eq!(decode_name(chinese, 0, || None).unwrap(), "数据/表.sql");
        assert_eq!(
            decode_name(chinese, UTF8_NAME_FLAG, || None).unwrap(),
            "数据/表.sql"
        );
        // "数据" in UTF-8 is also clean GB18030 ("鏁版嵁"): the UTF-8 reading comes first.
        let utf8 = "数据".as_bytes();
        assert_eq!(clean_gb18030(utf8).unwrap(), "鏁版嵁");
        assert_eq!(decode_name(utf8, 0, || None).unwrap(), "数据");
    }

    #[test]
    fn unflagged_gbk_names_decode_as_gb18030() {
        let asked = std::cell::Cell::new(false);
        // "回滚语句_订单.sql" in code page 936.
        let gbk = b"\xbb\xd8\xb9\xf6\xd3\xef\xbe\xe4_\xb6\xa9\xb5\xa5.sql";
        assert_eq!(
            decode_name(gbk, 0, cp437_marker(&asked)).unwrap(),
            "回滚语句_订单.sql"
        );
        // "数据/表_订单.sql": the separator is plain ASCII in GBK.
        let nested = b"\xca\xfd\xbe\xdd/\xb1\xed_\xb6\xa9\xb5\xa5.sql";
        assert_eq!(
            decode_name(nested, 0, cp437_marker(&asked)).unwrap(),
            "数据/表_订单.sql"
        );
        // A four-byte GB18030 sequence (U+0080).
        assert_eq!(
            decode_name(b"\x81\x30\x81\x30", 0, || None).unwrap(),
            "\u{80}"
        );
        assert!(!asked.get());
        // The UTF-8 flag forbids any other reading.
        assert_eq!(
            decode_name(gbk, UTF8_NAME_FLAG, || None).unwrap_err(),
            "name is flagged as UTF-8 but is not valid UTF-8"
        );
    }

    #[test]
    fn names_that_are_not_clean_gb18030_fall_back_to_cp437() {
        for raw in [
            // "café.txt" in CP437: 0x82 cannot be followed by "." in GB18030.
            &b"caf\x82.txt"[..],
            // A lead byte with nothing after it.
            b"x\xbb",
            // 0xFF is never a GB18030 lead byte.
            b"\xff.sql",
            // Valid GB18030 for U+FFFD, the replacement character itself.
            b"a\x84\x31\xa4\x37.sql",
        ] {
            let asked = std::cell::Cell::new(false);
            assert_eq!(
                decode_name(raw, 0, cp437_marker(&asked)).unwrap(),
                "<cp437>",
                "{raw:x?}"
            );
            assert!(asked.get());
        }
        assert_eq!(
            decode_name(b"caf\x82.txt", UTF8_NAME_FLAG, || None).unwrap_err(),
            "name is flagged as UTF-8 but is not valid UTF-8"
        );
    }

    /// Every byte string is valid CP437, so a legacy name that also happens to be clean
    /// GB18030 is read as GB18030 (see `decode_name`).
    #[test]
    fn names_valid_in_both_gb18030_and_cp437_are_gb18030() {
        // CP437 would read "über.txt"; 0x81 0x62 is the GBK character "乥".
        assert_eq!(decode_name(b"\x81ber.txt", 0, || None).unwrap(), "乥er.txt");
    }

    #[test]
    fn names_for_messages_use_the_same_decoding() {
        let gbk = b"\xb6\xa9\xb5\xa5.sql";
        assert_eq!(name_for_message(gbk, 0), "订单.sql");
        assert_eq!(name_for_message(b"caf\x82.txt", 0), "caf\u{fffd}.txt");
        assert_eq!(
            name_for_message(gbk, UTF8_NAME_FLAG),
            "\u{fffd}\u{fffd}\u{fffd}\u{fffd}.sql"
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
