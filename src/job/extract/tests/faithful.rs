//! Faithful extraction: every file byte-identical, every folder created, whatever the
//! writer's options and the number of threads.

use std::io::Write;

use zip::ZipWriter;

use super::*;

#[test]
fn data_descriptor_entries_extract_byte_identical() {
    let big: Vec<u8> = (0..300_000_u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = ZipWriter::new_stream(Vec::new());
    writer.start_file("big.bin", deflated()).unwrap();
    writer.write_all(&big).unwrap();
    writer.start_file("dir/small.txt", stored()).unwrap();
    writer.write_all(b"small").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let flags = u16_at(&zip, headers(&zip)[0].central + 8);
    assert_ne!(
        flags & DATA_DESCRIPTOR_FLAG,
        0,
        "fixture must use data descriptors"
    );

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(
        &scene,
        &report,
        &[("big.bin", &big), ("dir/small.txt", b"small")],
    );
    assert_eq!(report.dirs, ["dir"]);
    assert_eq!(report.entries, 2);
}

#[test]
fn zip64_entries_extract_byte_identical() {
    let data = b"zip64 payload\n".repeat(1000);
    let zip = build_zip(
        &[FileItem("a.sql", &data), FileItem("b.sql", b"")],
        deflated().large_file(true),
    );
    // The zip64 extended-information extra field (id 0x0001) must be present.
    let entry = headers(&zip)[0];
    let name_len = usize::from(u16_at(&zip, entry.local + 26));
    assert_eq!(u16_at(&zip, entry.local + 30 + name_len), 0x0001);

    let scene = Scene::new(&zip);
    let report = scene.extract(&options()).unwrap();
    assert_extracted(&scene, &report, &[("a.sql", &data), ("b.sql", b"")]);
}

#[test]
fn nested_and_empty_folders_are_created() {
    let zip = build_zip(
        &[
            Dir("empty/"),
            Dir("a/b/c/"),
            FileItem("a/b/c/d.txt", b"deep"),
            FileItem("x/y/z.txt", b"implicit parents"),
            FileItem("top.txt", b""),
        ],
        deflated(),
    );
    let scene = Scene::new(&zip);
    let report = scene
        .extract(&ExtractOptions {
            sync: true,
            ..options()
        })
        .unwrap();
    assert_extracted(
        &scene,
        &report,
        &[
            ("a/b/c/d.txt", b"deep"),
            ("x/y/z.txt", b"implicit parents"),
            ("top.txt", b""),
        ],
    );
    assert_eq!(report.dirs, ["a", "a/b", "a/b/c", "empty", "x", "x/y"]);
    assert_eq!(report.entries, 5);
    assert!(scene.dest.join("empty").is_dir());
    assert!(listing(&scene.dest.join("empty")).is_empty());
    assert_eq!(scene.root_listing(), ["staging"]);
}

#[test]
fn parallel_extraction_matches_single_threaded() {
    let contents: Vec<(String, Vec<u8>)> = (0..12_u32)
        .map(|i| {
            let rows = 1 + (i * 3_000) % 17_000;
            let text = (0..rows)
                .flat_map(|r| format!("insert into t{i} values ({r}, 'v{r}');\n").into_bytes())
                .collect();
            (format!("part{}/t{i}.sql", i % 3), text)
        })
        .collect();
    let items: Vec<Item<'_>> = contents
        .iter()
        .map(|(name, data)| FileItem(name, data))
        .collect();
    let zip = build_zip(&items, deflated());
    let expected: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();

    let serial = Scene::new(&zip);
    let one = serial
        .extract(&ExtractOptions {
            threads: 1,
            ..options()
        })
        .unwrap();
    let parallel = Scene::new(&zip);
    let four = parallel
        .extract(&ExtractOptions {
            threads: 4,
            ..options()
        })
        .unwrap();
    let all_cores = Scene::new(&zip);
    let auto = all_cores
        .extract(&ExtractOptions {
            threads: 0,
            ..options()
        })
        .unwrap();
    assert_eq!(one, four);
    assert_eq!(one, auto);
    assert_extracted(&parallel, &four, &expected);
    assert_eq!(four.dirs, ["part0", "part1", "part2"]);
}

#[test]
fn synced_extraction_is_faithful_past_the_flush_queue() {
    // More files than the flusher's queue holds, so workers also sync inline when it is full.
    let contents: Vec<(String, Vec<u8>)> = (0..40_u32)
        .map(|i| {
            let text = format!("select {i};\n").repeat(1 + i as usize * 50);
            (format!("many/{i}.sql"), text.into_bytes())
        })
        .collect();
    let items: Vec<Item<'_>> = contents
        .iter()
        .map(|(name, data)| FileItem(name, data))
        .collect();
    let zip = build_zip(&items, deflated());
    let expected: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(name, data)| (name.as_str(), data.as_slice()))
        .collect();

    for threads in [1, 2] {
        let synced = Scene::new(&zip);
        let report = synced
            .extract(&ExtractOptions {
                threads,
                sync: true,
                ..options()
            })
            .unwrap();
        assert_extracted(&synced, &report, &expected);
        let unsynced = Scene::new(&zip);
        let plain = unsynced
            .extract(&ExtractOptions {
                threads,
                ..options()
            })
            .unwrap();
        assert_eq!(report, plain, "threads={threads}");
    }
}

#[test]
fn empty_archive_extracts_to_nothing() {
    let scene = Scene::new(&build_zip(&[], deflated()));
    let report = scene.extract(&options()).unwrap();
    assert_eq!(
        report,
        ExtractReport {
            files: Vec::new(),
            dirs: Vec::new(),
            entries: 0,
            unpacked_bytes: 0,
        }
    );
}
