//! Sample DMS export zips: deterministic rollback (UNDO) / rebuild (REDO) SQL text, and zips
//! of it written in a streaming way.
//!
//! DMS data-tracking exports are zips of SQL files. Their exact layout is not documented (see
//! `shared/reference/dms-api.md`, "Not confirmed"), so this module makes plausible ones:
//! `UPDATE` / `INSERT` / `DELETE` lines over a few shop tables, with ids and timestamps that
//! advance the way a binlog does and random amounts, names and cities. The mix is tuned so
//! deflate compresses it about 7:1, like the benchmark target "512 MiB of SQL in 8 files, about
//! 70 MiB zipped". Text is generated line by line through [`SqlText`] (an `io::Read`), so a
//! 512 MiB zip is written with a few KiB of memory.
//!
//! It does not decide where exports are stored or served; the OSS simulator does that.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Read, Seek, Write};

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// One entry of a sample zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFile {
    /// Path inside the zip, `/`-separated, UTF-8 (Chinese is fine). A path ending in `/` is an
    /// empty folder and its `bytes` must be 0.
    pub path: String,
    /// Exact uncompressed size of the SQL text.
    pub bytes: u64,
}

impl SampleFile {
    /// A SQL file of exactly `bytes` bytes.
    pub fn new(path: impl Into<String>, bytes: u64) -> Self {
        Self {
            path: path.into(),
            bytes,
        }
    }

    /// An empty folder (a trailing `/` is added if missing).
    pub fn empty_dir(path: impl Into<String>) -> Self {
        let mut path = path.into();
        if !path.ends_with('/') {
            path.push('/');
        }
        Self { path, bytes: 0 }
    }

    /// Whether this entry is a folder.
    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// What a sample zip contains. The same spec always produces the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Entries in zip order.
    pub files: Vec<SampleFile>,
    /// Seed of the SQL generator; each file derives its own stream from it.
    pub seed: u64,
}

impl SampleSpec {
    /// One SQL file.
    pub fn single(path: impl Into<String>, bytes: u64, seed: u64) -> Self {
        Self {
            files: vec![SampleFile::new(path, bytes)],
            seed,
        }
    }

    /// A rollback (UNDO) export of `total_bytes` of SQL split over `file_count` files named
    /// `回滚/<db>.<table>_<n>.sql`; the last file takes the remainder.
    pub fn rollback(total_bytes: u64, file_count: usize, seed: u64) -> Self {
        Self::split("回滚", total_bytes, file_count, seed)
    }

    /// A rebuild (REDO) export, like [`SampleSpec::rollback`] under `重建/`.
    pub fn rebuild(total_bytes: u64, file_count: usize, seed: u64) -> Self {
        Self::split("重建", total_bytes, file_count, seed)
    }

    /// The benchmark export: 512 MiB of rollback SQL in 8 files (about 70 MiB zipped).
    pub fn benchmark() -> Self {
        Self::rollback(512 * 1024 * 1024, 8, 2026)
    }

    /// A small export for the demo and tests (about 200 KiB of SQL): two rollback files, a
    /// nested file with an ASCII name, and an empty folder.
    pub fn demo(seed: u64) -> Self {
        Self {
            files: vec![
                SampleFile::new("回滚/shop.orders_1.sql", 120 * 1024),
                SampleFile::new("回滚/shop.users_2.sql", 60 * 1024),
                SampleFile::new("meta/tables/summary.sql", 20 * 1024),
                SampleFile::empty_dir("空目录"),
            ],
            seed,
        }
    }

    /// Sum of the SQL sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    fn split(folder: &str, total_bytes: u64, file_count: usize, seed: u64) -> Self {
        let count = file_count.max(1);
        let each = total_bytes / count as u64;
        let files = (0..count)
            .map(|i| {
                let (db, table) = TABLES[i % TABLES.len()].name;
                let bytes = if i + 1 == count {
                    total_bytes - each * (count as u64 - 1)
                } else {
                    each
                };
                SampleFile::new(format!("{folder}/{db}.{table}_{}.sql", i + 1), bytes)
            })
            .collect();
        Self { files, seed }
    }
}

/// Writes the zip described by `spec` to `out`: deflate, UTF-8 names, a directory entry for
/// each parent folder, fixed timestamps (so the bytes depend on the spec only). The SQL is
/// streamed into the compressor; memory use does not grow with file sizes.
pub fn write_sample_zip<W: Write + Seek>(out: W, spec: &SampleSpec) -> io::Result<()> {
    let timestamp = zip::DateTime::from_date_and_time(2026, 11, 27, 10, 21, 33)
        .map_err(|e| io::Error::other(format!("fixed zip timestamp: {e}")))?;
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(timestamp);
    let mut zip = ZipWriter::new(out);
    let mut dirs_written: HashSet<String> = HashSet::new();
    for (index, file) in spec.files.iter().enumerate() {
        if file.is_dir() && file.bytes != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "folder entry {:?} cannot have {} bytes",
                    file.path, file.bytes
                ),
            ));
        }
        // Parent folders first, each once.
        let parts: Vec<&str> = file.path.trim_end_matches('/').split('/').collect();
        for depth in 1..parts.len() {
            let dir = format!("{}/", parts[..depth].join("/"));
            if dirs_written.insert(dir.clone()) {
                zip.add_directory(dir, base.unix_permissions(0o755))?;
            }
        }
        if file.is_dir() {
            if dirs_written.insert(file.path.clone()) {
                zip.add_directory(file.path.clone(), base.unix_permissions(0o755))?;
            }
            continue;
        }
        let options = base
            .unix_permissions(0o644)
            .large_file(file.bytes >= u64::from(u32::MAX));
        zip.start_file(file.path.clone(), options)?;
        let mut text = SqlText::new(file_seed(spec.seed, index), file.bytes);
        io::copy(&mut text, &mut zip)?;
    }
    zip.finish()?;
    Ok(())
}

/// The zip described by `spec`, in memory. Meant for small specs (demo, tests).
pub fn sample_zip(spec: &SampleSpec) -> Vec<u8> {
    let mut out = io::Cursor::new(Vec::new());
    write_sample_zip(&mut out, spec).expect("writing a zip into memory cannot fail");
    out.into_inner()
}

/// Each file gets its own stream, so files in one zip differ from each other.
fn file_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Exactly `len` bytes of generated SQL, one statement per line, as an [`io::Read`].
///
/// The last line is shortened to a `--` comment (or blank lines) so the length is exact and
/// the text stays valid UTF-8 and valid SQL.
#[derive(Debug)]
pub struct SqlText {
    generator: SqlGenerator,
    remaining: u64,
    line: String,
    line_pos: usize,
}

impl SqlText {
    /// A reader of `len` bytes of SQL generated from `seed`.
    pub fn new(seed: u64, len: u64) -> Self {
        Self {
            generator: SqlGenerator::new(seed),
            remaining: len,
            line: String::with_capacity(512),
            line_pos: 0,
        }
    }

    fn next_line(&mut self) {
        self.line.clear();
        self.line_pos = 0;
        self.generator.write_statement(&mut self.line);
        self.line.push('\n');
        let remaining = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        if self.line.len() > remaining {
            self.line.clear();
            if remaining < 3 {
                self.line.extend(std::iter::repeat_n('\n', remaining));
            } else {
                self.line.push_str("--");
                self.line.extend(std::iter::repeat_n('-', remaining - 3));
                self.line.push('\n');
            }
        }
    }
}

impl Read for SqlText {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() && self.remaining > 0 {
            if self.line_pos == self.line.len() {
                self.next_line();
            }
            let pending = &self.line.as_bytes()[self.line_pos..];
            let n = pending.len().min(buf.len() - written);
            buf[written..written + n].copy_from_slice(&pending[..n]);
            self.line_pos += n;
            written += n;
            self.remaining -= n as u64;
        }
        Ok(written)
    }
}

/// A column and how its values are made.
#[derive(Debug, Clone, Copy)]
enum Value {
    /// The table's own id, increasing.
    Id,
    /// A foreign id near the table's own (orders of recent users, items of recent orders).
    RecentId(u64),
    /// An id drawn uniformly from a range.
    AnyId(u64, u64),
    /// A money amount with two decimals, below the bound.
    Amount(u32),
    /// A small count.
    Quantity,
    /// The clock, as `'YYYY-MM-DD HH:MM:SS'`.
    Now,
    /// One word from a list.
    Pick(&'static [&'static str]),
    /// A mobile number.
    Phone,
    /// A SKU code.
    Sku,
    /// A payment provider's trade number: the date and 16 random digits.
    TradeNo,
    /// A client IPv4 address in a private range.
    Ip,
}

#[derive(Debug)]
struct Table {
    name: (&'static str, &'static str),
    columns: &'static [(&'static str, Value)],
    /// Columns an UPDATE sets (indexes into `columns`).
    updated: &'static [usize],
}

const STATUSES: &[&str] = &[
    "CREATED",
    "PAID",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
    "REFUNDED",
];
const CHANNELS: &[&str] = &["ALIPAY", "WECHAT", "UNIONPAY", "BALANCE"];
const NAMES: &[&str] = &[
    "张伟",
    "王芳",
    "李娜",
    "刘洋",
    "陈静",
    "杨磊",
    "赵敏",
    "黄勇",
    "周杰",
    "吴霞",
    "Alice Chen",
    "Bob Li",
    "Carol Wang",
    "David Zhou",
];
const CITIES: &[&str] = &[
    "杭州",
    "上海",
    "北京",
    "深圳",
    "广州",
    "成都",
    "武汉",
    "南京",
    "Singapore",
    "Hong Kong",
];
const WAREHOUSES: &[&str] = &["HZ-01", "HZ-02", "SH-01", "BJ-03", "SZ-02"];

const TABLES: &[Table] = &[
    Table {
        name: ("shop", "orders"),
        columns: &[
            ("id", Value::Id),
            ("user_id", Value::AnyId(100_000, 999_999)),
            ("status", Value::Pick(STATUSES)),
            ("amount", Value::Amount(100_000)),
            ("pay_channel", Value::Pick(CHANNELS)),
            ("client_ip", Value::Ip),
            ("created_at", Value::Now),
            ("updated_at", Value::Now),
        ],
        updated: &[2, 3, 5, 7],
    },
    Table {
        name: ("shop", "users"),
        columns: &[
            ("id", Value::Id),
            ("name", Value::Pick(NAMES)),
            ("phone", Value::Phone),
            ("city", Value::Pick(CITIES)),
            ("created_at", Value::Now),
            ("updated_at", Value::Now),
        ],
        updated: &[2, 3, 5],
    },
    Table {
        name: ("shop", "order_items"),
        columns: &[
            ("id", Value::Id),
            ("order_id", Value::RecentId(3_000)),
            ("sku", Value::Sku),
            ("quantity", Value::Quantity),
            ("price", Value::Amount(50_000)),
            ("updated_at", Value::Now),
        ],
        updated: &[2, 3, 4, 5],
    },
    Table {
        name: ("shop", "payments"),
        columns: &[
            ("id", Value::Id),
            ("order_id", Value::RecentId(1_000)),
            ("channel", Value::Pick(CHANNELS)),
            ("trade_no", Value::TradeNo),
            ("amount", Value::Amount(100_000)),
            ("status", Value::Pick(STATUSES)),
            ("paid_at", Value::Now),
        ],
        updated: &[2, 3, 5, 6],
    },
    Table {
        name: ("inventory", "stock"),
        columns: &[
            ("id", Value::Id),
            ("sku", Value::Sku),
            ("warehouse", Value::Pick(WAREHOUSES)),
            ("quantity", Value::Quantity),
            ("updated_at", Value::Now),
        ],
        updated: &[3, 4],
    },
];

/// 2026-11-27 00:00:00 UTC, where the generated clock starts.
const CLOCK_START: i64 = 1_795_737_600;

/// Generates one SQL statement at a time from a seeded RNG.
#[derive(Debug)]
pub struct SqlGenerator {
    rng: fastrand::Rng,
    /// Seconds since the epoch of the current statement; moves forward slowly.
    clock: i64,
    /// Last id per table, increasing like an auto-increment column.
    ids: Vec<u64>,
    /// `clock` formatted, recomputed only when the clock moves.
    clock_text: (i64, String),
}

impl SqlGenerator {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let ids = TABLES.iter().map(|_| rng.u64(100_000..900_000)).collect();
        Self {
            clock: CLOCK_START + rng.i64(0..86_400),
            rng,
            ids,
            clock_text: (i64::MIN, String::new()),
        }
    }

    /// Appends one statement (no newline) to `out`.
    pub fn write_statement(&mut self, out: &mut String) {
        self.clock += self.rng.i64(0..5);
        let table_index = self.rng.usize(..TABLES.len());
        let table = &TABLES[table_index];
        let (db, name) = table.name;
        let roll = self.rng.u8(..100);
        if roll < 55 {
            // Existing rows are updated; they cluster behind the newest id.
            let id = self.ids[table_index].saturating_sub(self.rng.u64(0..200_000));
            let _ = write!(out, "UPDATE `{db}`.`{name}` SET ");
            for (i, &column) in table.updated.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let (column_name, value) = table.columns[column];
                let _ = write!(out, "`{column_name}`=");
                self.write_value(out, value, table_index);
            }
            let _ = write!(out, " WHERE `id`={id} LIMIT 1;");
        } else if roll < 85 {
            self.ids[table_index] += self.rng.u64(1..4);
            let _ = write!(out, "INSERT INTO `{db}`.`{name}`(");
            for (i, (column_name, _)) in table.columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "`{column_name}`");
            }
            out.push_str(") VALUES (");
            for (i, &(_, value)) in table.columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                self.write_value(out, value, table_index);
            }
            out.push_str(");");
        } else {
            let id = self.ids[table_index].saturating_sub(self.rng.u64(0..200_000));
            let _ = write!(out, "DELETE FROM `{db}`.`{name}` WHERE `id`={id} LIMIT 1;");
        }
    }

    fn write_value(&mut self, out: &mut String, value: Value, table_index: usize) {
        let rng = &mut self.rng;
        let _ = match value {
            Value::Id => write!(out, "{}", self.ids[table_index]),
            Value::RecentId(spread) => write!(
                out,
                "{}",
                self.ids[table_index].saturating_sub(rng.u64(0..spread))
            ),
            Value::AnyId(low, high) => write!(out, "{}", rng.u64(low..=high)),
            Value::Amount(bound) => {
                let cents = rng.u32(100..bound);
                write!(out, "{}.{:02}", cents / 100, cents % 100)
            }
            Value::Quantity => write!(out, "{}", rng.u8(1..10)),
            Value::Now => {
                if self.clock_text.0 != self.clock {
                    let at = jiff::Timestamp::from_second(self.clock)
                        .expect("the generated clock stays in range");
                    self.clock_text = (self.clock, at.strftime("%Y-%m-%d %H:%M:%S").to_string());
                }
                write!(out, "'{}'", self.clock_text.1)
            }
            Value::Pick(words) => write!(out, "'{}'", words[rng.usize(..words.len())]),
            Value::Phone => write!(out, "'13{}{:08}'", rng.u8(0..10), rng.u32(0..100_000_000)),
            Value::Sku => write!(out, "'SKU-{:05}'", rng.u32(0..20_000)),
            Value::Ip => write!(out, "'10.{}.{}.{}'", rng.u8(..), rng.u8(..), rng.u8(1..255)),
            Value::TradeNo => write!(out, "'20261127{:016}'", rng.u64(0..10_000_000_000_000_000)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(seed: u64, len: u64) -> String {
        let mut text = String::new();
        SqlText::new(seed, len)
            .read_to_string(&mut text)
            .expect("generated SQL is UTF-8");
        text
    }

    fn open(zip: &[u8]) -> zip::ZipArchive<io::Cursor<&[u8]>> {
        zip::ZipArchive::new(io::Cursor::new(zip)).expect("a readable zip")
    }

    #[test]
    fn the_same_seed_gives_the_same_zip_and_another_seed_differs() {
        let first = sample_zip(&SampleSpec::demo(7));
        assert_eq!(first, sample_zip(&SampleSpec::demo(7)));
        assert_ne!(first, sample_zip(&SampleSpec::demo(8)));
    }

    #[test]
    fn entries_have_the_requested_names_and_exact_sizes() {
        let spec = SampleSpec::demo(3);
        let zip = sample_zip(&spec);
        let mut archive = open(&zip);
        let mut names = Vec::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().into_owned();
            names.push(name.clone());
            if entry.is_dir() {
                assert_eq!(entry.size(), 0);
                continue;
            }
            assert_eq!(entry.compression(), CompressionMethod::Deflated);
            let wanted = spec.files.iter().find(|f| f.path == name).unwrap();
            assert_eq!(entry.size(), wanted.bytes, "{name}");
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            assert_eq!(text.len() as u64, wanted.bytes);
            assert!(text.ends_with('\n'));
        }
        assert_eq!(
            names,
            [
                "回滚/",
                "回滚/shop.orders_1.sql",
                "回滚/shop.users_2.sql",
                "meta/",
                "meta/tables/",
                "meta/tables/summary.sql",
                "空目录/",
            ]
        );
    }

    #[test]
    fn files_in_one_zip_get_different_text() {
        let spec = SampleSpec {
            files: vec![
                SampleFile::new("a.sql", 4096),
                SampleFile::new("b.sql", 4096),
            ],
            seed: 1,
        };
        let zip = sample_zip(&spec);
        let mut archive = open(&zip);
        let mut read = |name: &str| {
            let mut text = String::new();
            archive
                .by_name(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_ne!(read("a.sql"), read("b.sql"));
    }

    #[test]
    fn sql_text_has_the_exact_length_for_every_small_size() {
        for len in 0..400 {
            assert_eq!(sql(11, len).len() as u64, len);
        }
        // The full lines do not depend on where the text is cut.
        let long = sql(11, 10_000);
        let short = sql(11, 5_000);
        let complete = &short[..short[..short.len() - 1].rfind('\n').unwrap() + 1];
        assert!(long.starts_with(complete));
    }

    #[test]
    fn sql_lines_are_well_formed_statements() {
        let text = sql(5, 200_000);
        let mut kinds = [0_usize; 3];
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[..lines.len() - 1] {
            assert!(line.ends_with(';'), "{line}");
            if let Some(rest) = line.strip_prefix("INSERT INTO `") {
                kinds[0] += 1;
                let (columns, values) = rest.split_once(") VALUES (").unwrap();
                let columns = columns.split_once('(').unwrap().1;
                let values = values.strip_suffix(");").unwrap();
                assert_eq!(
                    columns.split(',').count(),
                    values.split(',').count(),
                    "{line}"
                );
            } else if line.starts_with("UPDATE `") {
                kinds[1] += 1;
                assert!(
                    line.contains("` SET `") && line.ends_with(" LIMIT 1;"),
                    "{line}"
                );
            } else if line.starts_with("DELETE FROM `") {
                kinds[2] += 1;
                assert!(line.contains(" WHERE `id`="), "{line}");
            } else {
                panic!("unexpected line {line}");
            }
        }
        assert!(kinds.iter().all(|&n| n > 100), "{kinds:?}");
        assert!(text.contains("`updated_at`='2026-11-2"));
    }

    #[test]
    fn compression_ratio_puts_512_mib_near_70_mib() {
        let spec = SampleSpec::single("回滚/ratio.sql", 2 * 1024 * 1024, 2026);
        let zip = sample_zip(&spec);
        let ratio = spec.total_bytes() as f64 / zip.len() as f64;
        // 512 MiB / 8.3 = 62 MiB and 512 MiB / 6.6 = 78 MiB.
        assert!((6.6..8.3).contains(&ratio), "ratio {ratio:.2}");
    }

    #[test]
    fn rollback_and_rebuild_split_the_total_exactly() {
        let spec = SampleSpec::rollback(1000, 3, 1);
        let sizes: Vec<u64> = spec.files.iter().map(|f| f.bytes).collect();
        assert_eq!(sizes, [333, 333, 334]);
        assert_eq!(spec.files[0].path, "回滚/shop.orders_1.sql");
        assert_eq!(
            SampleSpec::rebuild(10, 1, 1).files[0].path,
            "重建/shop.orders_1.sql"
        );
        let benchmark = SampleSpec::benchmark();
        assert_eq!(benchmark.files.len(), 8);
        assert_eq!(benchmark.total_bytes(), 512 * 1024 * 1024);
    }

    #[test]
    fn writing_to_a_file_matches_the_in_memory_zip() {
        let spec = SampleSpec::rollback(300_000, 2, 9);
        let mut file = tempfile::tempfile().unwrap();
        write_sample_zip(&mut file, &spec).unwrap();
        file.rewind().unwrap();
        let mut written = Vec::new();
        file.read_to_end(&mut written).unwrap();
        assert_eq!(written, sample_zip(&spec));
    }

    #[test]
    fn a_folder_entry_with_bytes_is_rejected() {
        let spec = SampleSpec {
            files: vec![SampleFile::new("dir/", 10)],
            seed: 0,
        };
        let error = write_sample_zip(io::Cursor::new(Vec::new()), &spec).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    /// Measures the benchmark zip: `cargo test --release --lib sim::zipgen -- --ignored --nocapture`.
    #[test]
    #[ignore = "writes 512 MiB of SQL; run manually in release builds"]
    fn benchmark_zip_is_about_70_mib() {
        let spec = SampleSpec::benchmark();
        let mut file = tempfile::tempfile().unwrap();
        let started = std::time::Instant::now();
        write_sample_zip(&mut file, &spec).unwrap();
        let len = file.seek(io::SeekFrom::End(0)).unwrap();
        let mib = len as f64 / (1024.0 * 1024.0);
        eprintln!(
            "512 MiB of SQL -> {mib:.1} MiB zipped (ratio {:.2}) in {:?}",
            spec.total_bytes() as f64 / len as f64,
            started.elapsed()
        );
        assert!((60.0..80.0).contains(&mib), "{mib:.1} MiB");
    }
}
