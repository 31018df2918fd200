//! Entry names as real writers store them: UTF-8 with and without the flag, GBK from Chinese
//! Windows tools, legacy CP437, and the Info-ZIP Unicode Path extra field.

use zip::ZipArchive;

use super::*;

/// One entry of a zip written byte by byte by [`windows_zip`].
struct Legacy<'a> {
    /// The name exactly as stored; a trailing `/` makes a folder entry.
    name: &'a [u8],
    data: &'a [u8],
    /// Extra fields, stored in both the local and the central header.
    extra: Vec<u8>,
}

fn legacy<'a>(name: &'a [u8], data: &'a [u8]) -> Legacy<'a> {
    Legacy {
        name,
        data,
        extra: Vec::new(),
    }
}

/// A zip as Windows Explorer's "Send to > Compressed (zipped) folder" writes it on a zh-CN
/// system: names in the OEM code page (936, GBK) with general-purpose bit 11 clear, "made by"
/// MS-DOS (host 0, version 2.0), DOS attributes (0x10 folder, 0x20 archive) and an entry per
/// folder. 7-Zip and WinRAR write a name the same way whenever it fits the OEM code page,
/// which every GBK name does. Entries are stored, so no compressor is involved. (Checked
/// once against an independent reader: Python's `zipfile.ZipFile(..., metadata_encoding=
/// "gbk")` lists the Chinese names and finds every CRC-32 right.)
fn windows_zip(entries: &[Legacy<'_>]) -> Vec<u8> {
    fn u16s(out: &mut Vec<u8>, values: &[u16]) {
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    fn u32s(out: &mut Vec<u8>, values: &[u32]) {
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    const VERSION_20: u16 = 20;
    // 2024-05-17 09:30:00 in MS-DOS date and time.
    const DOS_TIME: u16 = (9 << 11) | (30 << 5);
    const DOS_DATE: u16 = ((2024 - 1980) << 9) | (5 << 5) | 17;

    let mut zip = Vec::new();
    let mut central = Vec::new();
    for entry in entries {
        let offset = u32::try_from(zip.len()).unwrap();
        let crc = crc32fast::hash(entry.data);
        let size = u32::try_from(entry.data.len()).unwrap();
        let name_len = u16::try_from(entry.name.len()).unwrap();
        let extra_len = u16::try_from(entry.extra.len()).unwrap();
        let attributes: u32 = if entry.name.ends_with(b"/") {
            0x10
        } else {
            0x20
        };

        zip.extend_from_slice(b"PK\x03\x04");
        // Version needed, flags (bit 11 clear), method (stored), time, date.
        u16s(&mut zip, &[VERSION_20, 0, 0, DOS_TIME, DOS_DATE]);
        u32s(&mut zip, &[crc, size, size]);
        u16s(&mut zip, &[name_len, extra_len]);
        zip.extend_from_slice(entry.name);
        zip.extend_from_slice(&entry.extra);
        zip.extend_from_slice(entry.data);

        central.extend_from_slice(b"PK\x01\x02");
        // Made by MS-DOS 2.0, version needed, flags, method, time, date.
        u16s(
            &mut central,
            &[VERSION_20, VERSION_20, 0, 0, DOS_TIME, DOS_DATE],
        );
        u32s(&mut central, &[crc, size, size]);
        // Name, extra and comment lengths, disk, internal attributes.
        u16s(&mut central, &[name_len, extra_len, 0, 0, 0]);
        u32s(&mut central, &[attributes, offset]);
        central.extend_from_slice(entry.name);
        central.extend_from_slice(&entry.extra);
    }
    let central_offset = u32::try_from(zip.len()).unwrap();
    let central_len = u32::try_from(central.len()).unwrap();
    let count = u16::try_from(entries.len()).unwrap();
    zip.extend_from_slice(&central);
    zip.extend_from_slice(b"PK\x05\x06");
    u16s(&mut zip, &[0, 0, count, count]);
    u32s(&mut zip, &[central_len, central_offset]);
    u16s(&mut zip, &[0]);
    zip
}

/// An Info-ZIP Unicode Path extra field (0x7075, APPNOTE 4.6.9) giving `unicode` for a raw
/// name whose CRC-32 is `raw_crc`.
fn unicode_path_field(raw_crc: u32, unicode: &str) -> Vec<u8> {
    let mut field = Vec::new();
    field.extend_from_slice(&0x7075_u16.to_le_bytes());
    field.extend_from_slice(&u16::try_from(5 + unicode.len()).unwrap().to_le_bytes());
    field.push(1);
    field.extend_from_slice(&raw_crc.to_le_bytes());
    field.extend_from_slice(unicode.as_bytes());
    field
}

// GBK bytes from Python's `str.encode("gbk")`, an encoder independent of encoding_rs.
/// "回滚语句_订单.sql"
const GBK_ROLLBACK: &[u8] = b"\xbb\xd8\xb9\xf6\xd3\xef\xbe\xe4_\xb6\xa9\xb5\xa5.sql";
/// "数据/"
const GBK_DATA_DIR: &[u8] = b"\xca\xfd\xbe\xdd/";
/// "数据/表_订单.sql"
const GBK_DATA_ORDERS: &[u8] = b"\xca\xfd\xbe\xdd/\xb1\xed_\xb6\xa9\xb5\xa5.sql";
/// "订单.sql"
const GBK_ORDERS: &[u8] = b"\xb6\xa9\xb5\xa5.sql";

#[test]
fn gbk_names_from_chinese_windows_tools_extract_under_their_chinese_names() {
    let zip = windows_zip(&[
        legacy(GBK_ROLLBACK, b"rollback;\n"),
        legacy(GBK_DATA_DIR, b""),
        legacy(GBK_DATA_ORDERS, b"insert into t values (1);\n"),
    ]);
    // The fixture really is what the old rule misread: not UTF-8, so decoded as CP437.
    let archive = ZipArchive::new(Cursor::new(&zip)).unwrap();
    let as_cp437 = archive
        .by_index_data(0)
        .unwrap()
        .name()
        .unwrap()
        .into_owned();
    assert_eq!(as_cp437, "╗╪╣÷╙∩╛Σ_╢⌐╡Ñ.sql");

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(
        &scene,
        &report,
        &[
            ("回滚语句_订单.sql", b"rollback;\n"),
            ("数据/表_订单.sql", b"insert into t values (1);\n"),
        ],
    );
    assert_eq!(report.dirs, ["数据"]);
    assert_eq!(report.entries, 3);
    assert_eq!(scene.dest_listing(), ["回滚语句_订单.sql", "数据"]);
    assert_eq!(listing(&scene.dest.join("数据")), ["表_订单.sql"]);
}

#[test]
fn chinese_names_survive_with_and_without_the_utf8_flag() {
    let one = "数据/订单表.sql";
    let two = "报表/汇总.csv";
    // Its UTF-8 bytes are also clean GB18030 ("鏁版嵁.sql").
    let three = "数据.sql";
    let mut zip = build_zip(
        &[
            FileItem(one, b"select 1;"),
            FileItem(two, b"a,b\n"),
            FileItem(three, b"both"),
        ],
        deflated(),
    );
    let all = headers(&zip);
    let flags = |zip: &[u8], i: usize| u16_at(zip, all[i].central + 8);
    assert_ne!(
        flags(&zip, 1) & UTF8_FLAG,
        0,
        "the writer flags non-ASCII names"
    );
    // What Java and some Windows writers produce: UTF-8 bytes, no flag.
    set_flags(&mut zip, all[1], 0, UTF8_FLAG);
    set_flags(&mut zip, all[2], 0, UTF8_FLAG);
    assert_eq!(flags(&zip, 1) & UTF8_FLAG, 0);

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(
        &scene,
        &report,
        &[(one, b"select 1;"), (two, b"a,b\n"), (three, b"both")],
    );
    assert_eq!(report.dirs, ["报表", "数据"]);
}

#[test]
fn legacy_cp437_names_are_decoded_and_false_utf8_flags_rejected() {
    let mut zip = build_zip(&[FileItem("cafX.txt", b"cp437")], stored());
    // 0x82 is "é" in CP437, invalid as UTF-8, and cannot be followed by "." in GB18030.
    rename(&mut zip, "cafX.txt", b"caf\x82.txt");
    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("café.txt", b"cp437")]);

    let entry = headers(&zip)[0];
    set_flags(&mut zip, entry, UTF8_FLAG, 0);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::UnsafeName { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entry \"caf\u{fffd}.txt\": name is flagged as UTF-8 but is not valid UTF-8"
    );
}

/// Every byte string is valid CP437; one that is also clean GB18030 is read as GB18030.
#[test]
fn names_valid_as_both_gb18030_and_cp437_are_gb18030() {
    let mut zip = build_zip(&[FileItem("Xber.txt", b"either")], stored());
    // CP437 would read "über.txt"; GBK reads 0x81 0x62 as "乥" (per Python's gb18030 codec).
    rename(&mut zip, "Xber.txt", b"\x81ber.txt");
    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("乥er.txt", b"either")]);
}

/// zip 9.x applies the Unicode Path field itself when its CRC-32 matches the stored name
/// (and sets the UTF-8 flag), and ignores it otherwise; both outcomes are pinned here. The
/// field names the traditional-script "訂單.sql" so the test can tell which name was used.
#[test]
fn unicode_path_extra_field_wins_only_when_its_crc_matches() {
    let matching = windows_zip(&[Legacy {
        name: GBK_ORDERS,
        data: b"unicode path",
        extra: unicode_path_field(crc32fast::hash(GBK_ORDERS), "訂單.sql"),
    }]);
    let scene = Scene::new(&matching);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("訂單.sql", b"unicode path")]);

    let stale = windows_zip(&[Legacy {
        name: GBK_ORDERS,
        data: b"stored name",
        extra: unicode_path_field(crc32fast::hash(b"something else"), "訂單.sql"),
    }]);
    let scene = Scene::new(&stale);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("订单.sql", b"stored name")]);
}

/// The Unicode Path field is checked like any name: it cannot smuggle a path out.
#[test]
fn unicode_path_extra_field_is_checked_like_the_stored_name() {
    let zip = windows_zip(&[Legacy {
        name: GBK_ORDERS,
        data: b"payload",
        extra: unicode_path_field(crc32fast::hash(GBK_ORDERS), "../订单.sql"),
    }]);
    let scene = Scene::new(&zip);
    let err = scene.extract(&options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"../订单.sql\": path escapes the archive (\"..\")"
    );
    assert_eq!(scene.root_listing(), ["staging"]);
}

#[test]
fn duplicate_gbk_names_are_named_in_chinese() {
    let zip = windows_zip(&[legacy(GBK_ORDERS, b"1"), legacy(GBK_ORDERS, b"2")]);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"订单.sql\": the archive holds more than one entry with this name"
    );
}
