//! Entry names as real writers store them: UTF-8 with and without the flag, and legacy
//! CP437.

use super::*;

#[test]
fn chinese_names_survive_with_and_without_the_utf8_flag() {
    let one = "数据/订单表.sql";
    let two = "报表/汇总.csv";
    let mut zip = build_zip(
        &[FileItem(one, b"select 1;"), FileItem(two, b"a,b\n")],
        deflated(),
    );
    let all = headers(&zip);
    let flags = |zip: &[u8], i: usize| u16_at(zip, all[i].central + 8);
    assert_ne!(
        flags(&zip, 1) & UTF8_FLAG,
        0,
        "the writer flags non-ASCII names"
    );
    // What Java and Windows writers produce: UTF-8 bytes, no flag.
    set_flags(&mut zip, all[1], 0, UTF8_FLAG);
    assert_eq!(flags(&zip, 1) & UTF8_FLAG, 0);

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[(one, b"select 1;"), (two, b"a,b\n")]);
    assert_eq!(report.dirs, ["报表", "数据"]);
}

#[test]
fn legacy_cp437_names_are_decoded_and_false_utf8_flags_rejected() {
    let mut zip = build_zip(&[FileItem("Xber.txt", b"cp437")], stored());
    // 0x81 is "ü" in CP437 and invalid as UTF-8.
    rename(&mut zip, "Xber.txt", b"\x81ber.txt");
    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("über.txt", b"cp437")]);

    let entry = headers(&zip)[0];
    set_flags(&mut zip, entry, UTF8_FLAG, 0);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::UnsafeName { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entry \"\u{fffd}ber.txt\": name is flagged as UTF-8 but is not valid UTF-8"
    );
}
