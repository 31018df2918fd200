//! The extraction benchmark (ignored by default).

use std::fmt::Write as _;
use std::fs;
use std::io::Write;

use tempfile::TempDir;
use zip::ZipWriter;

use super::*;

/// The benchmark from the brief: 512 MiB of SQL in 8 deflated files, against `unzip -q`.
/// Run: `cargo test --release --lib extract::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn throughput_512_mib_of_sql_in_8_deflated_files() {
    use std::time::Instant;

    const FILES: usize = 8;
    const FILE_BYTES: usize = 64 << 20;
    let work = TempDir::new().unwrap();
    let zip_path = work.path().join("export.zip");
    let started = Instant::now();
    let mut writer = ZipWriter::new(std::io::BufWriter::new(
        fs::File::create(&zip_path).unwrap(),
    ));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for f in 0..FILES {
        writer
            .start_file(format!("x_REDO_31201_207/table_{f}.sql"), deflated())
            .unwrap();
        let mut written = 0;
        let mut row = 0_u64;
        let mut chunk = String::with_capacity(1 << 20);
        while written < FILE_BYTES {
            chunk.clear();
            while chunk.len() < (1 << 20) - 200 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                row += 1;
                let _ = writeln!(
                    chunk,
                    "INSERT INTO `orders_{f}` (`id`, `user_id`, `amount`, `status`, `note`) VALUES ({row}, {}, {}.{:02}, '{}', 'order note {:x}');",
                    seed >> 44,
                    (seed >> 20) % 100_000,
                    (seed >> 8) % 100,
                    ["PAID", "REFUNDED", "SHIPPED", "NEW"][(seed % 4) as usize],
                    seed >> 24,
                );
            }
            let take = chunk.len().min(FILE_BYTES - written);
            writer.write_all(&chunk.as_bytes()[..take]).unwrap();
            written += take;
        }
    }
    writer.finish().unwrap();
    let zip_len = fs::metadata(&zip_path).unwrap().len();
    eprintln!(
        "sample: {} MiB in {FILES} files, zip {} MiB, built in {:.1?}",
        (FILES * FILE_BYTES) >> 20,
        zip_len >> 20,
        started.elapsed()
    );

    let total = (FILES * FILE_BYTES) as u64;
    for (threads, sync) in [(0, false), (1, false), (0, true)] {
        let dest = work.path().join(format!("dest-{threads}-{sync}"));
        fs::create_dir(&dest).unwrap();
        // Reset the peak-RSS counter so VmHWM measures this extraction alone.
        fs::write("/proc/self/clear_refs", "5").unwrap();
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        let report = extract_zip(
            &zip_path,
            &dest,
            &ExtractOptions {
                threads,
                sync,
                ..options()
            },
        )
        .unwrap();
        let elapsed = started.elapsed();
        let cpu = cpu_seconds().0 - cpu_before.0;
        let peak = fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
            .unwrap();
        assert_eq!(report.unpacked_bytes, total);
        eprintln!(
            "extract_zip threads={threads} sync={sync}: {elapsed:.2?}, {:.0} MiB/s, \
             {cpu:.2} CPU-s, peak RSS {peak}",
            (total >> 20) as f64 / elapsed.as_secs_f64()
        );
        fs::remove_dir_all(&dest).unwrap();
    }

    let dest = work.path().join("dest-unzip");
    let children_before = cpu_seconds().1;
    let started = Instant::now();
    let status = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&zip_path)
        .arg("-d")
        .arg(&dest)
        .status();
    match status {
        Ok(status) if status.success() => {
            let elapsed = started.elapsed();
            let cpu = cpu_seconds().1 - children_before;
            eprintln!(
                "unzip -q: {elapsed:.2?}, {:.0} MiB/s, {cpu:.2} CPU-s",
                (total >> 20) as f64 / elapsed.as_secs_f64()
            );
        }
        other => eprintln!("unzip -q not run: {other:?}"),
    }
}

/// (this process, its waited-for children) CPU seconds, user + system, from
/// `/proc/self/stat` (in USER_HZ ticks, 100 per second on Linux).
fn cpu_seconds() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name, which may contain spaces.
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 after the name.
    (
        (fields[11] + fields[12]) / 100.0,
        (fields[13] + fields[14]) / 100.0,
    )
}
