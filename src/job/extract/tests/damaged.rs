//! Damaged downloads: failures that a fresh download can fix.

use super::*;

#[test]
fn wrong_crc_is_a_corrupt_download() {
    let mut zip = build_zip(
        &[FileItem("a.sql", b"insert into t values (1);\n")],
        deflated(),
    );
    let entry = headers(&zip)[0];
    set_crc(&mut zip, entry, 0xdead_beef);
    let err = Scene::new(&zip).extract(&options()).unwrap_err();
    assert!(matches!(err, ExtractError::CorruptEntry { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("entry \"a.sql\": CRC-32 mismatch: stored deadbeef, computed "),
        "{err}"
    );
    assert!(err.is_corrupt_download());
}

#[test]
fn damaged_entry_data_is_a_corrupt_download() {
    let text: Vec<u8> = (0..20_000_u32)
        .flat_map(|i| format!("insert into t values ({i}, 'row {i}');\n").into_bytes())
        .collect();
    for options_used in [stored(), deflated()] {
        let mut zip = build_zip(&[FileItem("rows.sql", &text)], options_used);
        let entry = headers(&zip)[0];
        let middle = data_start(&zip, entry) + 200;
        for byte in &mut zip[middle..middle + 16] {
            *byte ^= 0x5a;
        }
        let err = Scene::new(&zip).extract(&options()).unwrap_err();
        assert!(matches!(err, ExtractError::CorruptEntry { .. }), "{err:?}");
        assert!(err.is_corrupt_download(), "{err}");
        assert!(err.to_string().starts_with("entry \"rows.sql\": "), "{err}");
    }
}

#[test]
fn truncated_zip_is_a_corrupt_download() {
    let zip = build_zip(
        &[FileItem("a.sql", &[b'x'; 10_000]), FileItem("b.sql", b"y")],
        deflated(),
    );
    for keep in [zip.len() / 2, zip.len() - 10, 0] {
        let err = Scene::new(&zip[..keep]).extract(&options()).unwrap_err();
        assert!(
            matches!(err, ExtractError::BadArchive { .. }),
            "{keep}: {err:?}"
        );
        assert!(err.is_corrupt_download(), "{err}");
    }
}
