//! Uploads end to end, in process: archives go to the OSS simulator (header-signed V4, proven
//! against oss2) and to a real S3 server (moto, authentication on), the zip or the files then
//! `manifest.json` last, every object confirmed; faults, refused credentials, a restart in
//! the middle of a multipart upload, hooks at least once, `keep_local` and retention.

use base64::Engine as _;
use std::io::Write as _;
use std::time::Duration;

use dmstrack::sim::dms::StatusStep;
use dmstrack::sim::oss::{OssOperation, UploadFault};
use dmstrack::sim::zipgen::{SampleSpec, sample_zip};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::support::world::{VIRTUAL_LIMIT, World, wait_until};
use crate::support::{self, AK_ID, AK_SECRET};

const KEY: &str = "e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd";
const OBJECT: &str = "exports/x_REDO_31201_207.zip";
const BUCKET: &str = "dmstrack-archive";
const PREFIX: &str = "dms-archive";

/// A zip of incompressible bytes (stored), so it is `len` bytes and needs several parts.
fn big_zip(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let mut writer = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file(
            "回滚/blob.sql",
            SimpleFileOptions::default().compression_method(CompressionMethod::Stored),
        )
        .unwrap();
    writer.write_all(&data).unwrap();
    writer.finish().unwrap().into_inner()
}

/// A world with one ticket ready at once, and `[upload]` to the OSS simulator's bucket.
async fn oss_world(zip: &[u8]) -> World {
    let mut world = World::new("v3").await;
    world.oss.put_object(OBJECT, zip.to_vec());
    world.oss.create_bucket(BUCKET);
    world.oss.add_access_key(AK_ID, AK_SECRET);
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    let endpoint = world.oss.base_url();
    world
        .config
        .ticket(7, KEY, "up")
        .set("upload", "url", &format!("\"oss://{BUCKET}/{PREFIX}\""))
        .set("upload", "endpoint", &format!("{endpoint:?}"));
    world
}

fn remote(name: &str) -> String {
    format!("{PREFIX}/7/{KEY}/{name}")
}

fn upload_of(world: &World) -> serde_json::Value {
    world.record(7, KEY)["upload"].clone()
}

/// The upload-side requests, in order: (operation, key).
fn upload_requests(world: &World) -> Vec<(OssOperation, String)> {
    world
        .oss
        .requests()
        .into_iter()
        .filter_map(|r| Some((r.operation?, r.key.unwrap_or_default())))
        .filter(|(op, _)| *op != OssOperation::GetObject)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_zip_then_the_manifest_go_up_confirmed_and_the_local_zip_goes() {
    let zip = sample_zip(&SampleSpec::demo(41));
    let world = oss_world(&zip).await;
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));

    let objects: Vec<String> = world
        .oss
        .objects(BUCKET)
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        objects,
        [remote("manifest.json"), remote("x_REDO_31201_207.zip")]
    );
    assert_eq!(
        world
            .oss
            .object_bytes(BUCKET, &remote("x_REDO_31201_207.zip"))
            .unwrap(),
        zip
    );
    let dir = world.final_dir(7, KEY);
    assert_eq!(
        world
            .oss
            .object_bytes(BUCKET, &remote("manifest.json"))
            .unwrap(),
        std::fs::read(dir.join("manifest.json")).unwrap()
    );
    // manifest.json last, after the zip was confirmed.
    let puts: Vec<String> = upload_requests(&world)
        .into_iter()
        .filter(|(op, _)| *op == OssOperation::PutObject)
        .map(|(_, key)| key)
        .collect();
    assert_eq!(
        puts,
        [remote("x_REDO_31201_207.zip"), remote("manifest.json")]
    );
    // Every upload request is V4-signed with the DMS credentials and sends Content-MD5.
    for request in world.oss.requests() {
        if request.operation == Some(OssOperation::PutObject) {
            assert!(
                request
                    .header("authorization")
                    .is_some_and(|a| a.starts_with("OSS4-HMAC-SHA256 Credential="))
            );
            assert!(request.header("content-md5").is_some());
        }
    }
    let upload = upload_of(&world);
    assert_eq!(upload["state"], "uploaded");
    assert_eq!(upload["attempts"], 1);
    assert_eq!(upload["last_error"], serde_json::Value::Null);
    assert_eq!(
        upload["url"],
        format!("oss://{BUCKET}/{PREFIX}/7/{KEY}/").as_str()
    );
    // The zip was kept only until its upload was confirmed (keep_zip = false).
    assert!(!dir.join("x_REDO_31201_207.zip").exists());
    assert!(dir.join("manifest.json").exists() && dir.join("files").is_dir());
}

/// Above `part_size` the zip goes up in parts; a 500 and a connection dropped in the middle
/// of a part are retried, and the object assembled in the bucket is the zip.
#[tokio::test(start_paused = true)]
async fn multipart_rides_out_a_500_and_a_dropped_connection() {
    let zip = big_zip(350 * 1024, 1);
    let mut world = oss_world(&zip).await;
    world.config.set("upload", "part_size", "\"100KiB\"");
    world
        .oss
        .inject_upload_fault_on_call(OssOperation::UploadPart, 2, UploadFault::InternalError);
    world.oss.inject_upload_fault_on_call(
        OssOperation::UploadPart,
        3,
        UploadFault::DropAfterRequestBytes(50_000),
    );
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    let stored = world
        .oss
        .object_bytes(BUCKET, &remote("x_REDO_31201_207.zip"));
    assert_eq!(stored.as_deref(), Some(zip.as_slice()));
    let summary = world
        .oss
        .objects(BUCKET)
        .into_iter()
        .find(|o| o.key == remote("x_REDO_31201_207.zip"))
        .unwrap();
    assert_eq!(format!("{:?}", summary.object_type), "Multipart");
    assert_eq!(
        world.oss.call_count(OssOperation::InitiateMultipartUpload),
        1
    );
    assert_eq!(
        world.oss.call_count(OssOperation::UploadPart),
        4 + 2,
        "four parts, two of them sent twice"
    );
    assert!(
        world.oss.multipart_uploads().is_empty(),
        "nothing left half done"
    );
    assert_eq!(upload_of(&world)["state"], "uploaded");
}

/// Refused credentials are a final, clear failure: not retried in a loop, shown in `status`,
/// and `run --once` exits 1.
#[tokio::test(start_paused = true)]
async fn refused_credentials_fail_the_upload_without_hammering() {
    let zip = sample_zip(&SampleSpec::demo(42));
    let world = oss_world(&zip).await;
    assert!(world.oss.remove_access_key(AK_ID));
    let outcome = world.run_once().await;
    assert_eq!(outcome.failed, 1, "the upload failed");
    let upload = upload_of(&world);
    assert_eq!(upload["state"], "failed");
    assert!(
        upload["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidAccessKeyId")),
        "{upload}"
    );
    let refused: Vec<_> = world
        .oss
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert!(refused.len() <= 2, "{} refused requests", refused.len());
    assert!(world.oss.objects(BUCKET).is_empty());
    // The archive itself is fine, and the zip stays until an upload is confirmed.
    assert!(
        world
            .final_dir(7, KEY)
            .join("x_REDO_31201_207.zip")
            .exists()
    );
}

/// `archive.retention` with `[upload]`: a folder old enough is removed once its upload is
/// confirmed, by `run --once` too (at start-up), and its record no longer names it.
#[tokio::test(start_paused = true)]
async fn retention_removes_an_old_uploaded_folder_in_run_once() {
    let zip = sample_zip(&SampleSpec::demo(46));
    let mut world = oss_world(&zip).await;
    world.config.set("archive", "retention", "\"1d\"");
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(upload_of(&world)["state"], "uploaded");
    let dir = world.final_dir(7, KEY);
    assert!(dir.exists(), "archived just now: kept");

    // The same folder, archived long ago by its manifest.
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["archived_at"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let outcome = world.run_once().await;
    assert_eq!(outcome.failed, 0);
    assert!(!dir.exists(), "removed by archive.retention");
    assert_eq!(world.record(7, KEY)["archive"], serde_json::Value::Null);
    assert_eq!(world.record(7, KEY)["state"], "archived");
}

/// `content = "files"` sends every extracted file under `files/`; `keep_local = false`
/// removes the local folder once the manifest is confirmed, and `status` shows no archive.
#[tokio::test(start_paused = true)]
async fn files_content_and_keep_local_false() {
    let zip = sample_zip(&SampleSpec::demo(43));
    let mut world = oss_world(&zip).await;
    world
        .config
        .set("upload", "content", "\"files\"")
        .set("upload", "keep_local", "false");
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    let keys: Vec<String> = world
        .oss
        .objects(BUCKET)
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(keys.contains(&remote("manifest.json")));
    assert!(
        keys.contains(&remote("files/回滚/shop.orders_1.sql")),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.ends_with(".zip")));
    assert!(
        !world.final_dir(7, KEY).exists(),
        "the local folder is gone"
    );
    let record = world.record(7, KEY);
    assert_eq!(record["archive"], serde_json::Value::Null);
    assert_eq!(record["state"], "archived");
    // Nothing half removed is left in the work folders either.
    assert!(support::tree(&world.archive().join(".dmstrack/trash")).is_empty());
}

/// An OSS world uploading `zip` in 100 KiB parts, one at a time, stopped while part
/// `hung_part` hangs.
async fn stopped_mid_multipart(zip: &[u8], hung_part: u64) -> World {
    let mut world = oss_world(zip).await;
    world
        .config
        .set("upload", "part_size", "\"100KiB\"")
        .set("upload", "concurrency", "1");
    world
        .oss
        .inject_upload_fault_on_call(OssOperation::UploadPart, hung_part, UploadFault::Stall);
    let running = world.start(false).await;
    wait_until("a part hangs", VIRTUAL_LIMIT, || {
        world.oss.call_count(OssOperation::UploadPart) >= hung_part
    })
    .await;
    running.shutdown.cancel();
    running.run.await.unwrap();
    world
}

/// A stop in the middle of a multipart upload (the daemon is stopped while a part hangs):
/// the next run resumes the same upload, sends only the parts not yet confirmed, and the
/// object is whole.
#[tokio::test(start_paused = true)]
async fn a_stop_mid_multipart_resumes_the_same_upload() {
    let zip = big_zip(450 * 1024, 2);
    let world = stopped_mid_multipart(&zip, 3).await;
    assert_eq!(upload_of(&world)["state"], "pending");
    let [upload] = world.oss.multipart_uploads().try_into().unwrap();

    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(
        world.oss.call_count(OssOperation::InitiateMultipartUpload),
        1,
        "the same upload was resumed"
    );
    assert_eq!(world.oss.call_count(OssOperation::ListParts), 1);
    // Five parts: two confirmed before the stop, one hung, then three sent after it.
    assert_eq!(world.oss.call_count(OssOperation::UploadPart), 3 + 3);
    let stored = world
        .oss
        .object_bytes(BUCKET, &remote("x_REDO_31201_207.zip"));
    assert_eq!(stored.as_deref(), Some(zip.as_slice()));
    assert!(world.oss.multipart_uploads().is_empty());
    let _ = upload;
}

/// A multipart upload begun before `part_size` was raised past the file is not left behind:
/// the next run aborts it and sends the object in one PUT.
#[tokio::test(start_paused = true)]
async fn an_upload_no_longer_continued_is_aborted_not_left_in_the_bucket() {
    let zip = big_zip(450 * 1024, 3);
    let mut world = stopped_mid_multipart(&zip, 2).await;
    assert_eq!(world.oss.multipart_uploads().len(), 1);

    world.config.set("upload", "part_size", "\"1MiB\"");
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(world.oss.call_count(OssOperation::AbortMultipartUpload), 1);
    assert!(
        world.oss.multipart_uploads().is_empty(),
        "nothing left behind"
    );
    let stored = world
        .oss
        .object_bytes(BUCKET, &remote("x_REDO_31201_207.zip"));
    assert_eq!(stored.as_deref(), Some(zip.as_slice()));
    assert!(
        upload_of(&world)["multipart"].is_null(),
        "{}",
        upload_of(&world)
    );
}

/// An object already in the bucket with the same size and CRC-64 is not sent again.
#[tokio::test(start_paused = true)]
async fn an_object_already_there_is_not_sent_again() {
    let zip = sample_zip(&SampleSpec::demo(44));
    let world = oss_world(&zip).await;
    world
        .oss
        .put_object_in(BUCKET, &remote("x_REDO_31201_207.zip"), zip.clone());
    assert_eq!(world.run_once().await.failed, 0);
    let puts: Vec<String> = upload_requests(&world)
        .into_iter()
        .filter(|(op, _)| *op == OssOperation::PutObject)
        .map(|(_, key)| key)
        .collect();
    assert_eq!(
        puts,
        [remote("manifest.json")],
        "only the manifest was sent"
    );
}

/// An object of the same size but other bytes is replaced: the parts digested for the
/// comparison are the ones sent (each part's MD5 and CRC-64 checked by the service).
#[tokio::test(start_paused = true)]
async fn a_same_size_object_with_other_bytes_is_replaced_part_by_part() {
    let zip = big_zip(450 * 1024, 5);
    let mut world = oss_world(&zip).await;
    world
        .config
        .set("upload", "part_size", "\"100KiB\"")
        .set("upload", "concurrency", "2");
    let mut other = zip.clone();
    let middle = other.len() / 2;
    other[middle] ^= 0xff;
    world
        .oss
        .put_object_in(BUCKET, &remote("x_REDO_31201_207.zip"), other);
    let outcome = world.run_once().await;
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    assert_eq!(world.oss.call_count(OssOperation::UploadPart), 5);
    let stored = world
        .oss
        .object_bytes(BUCKET, &remote("x_REDO_31201_207.zip"));
    assert_eq!(stored.as_deref(), Some(zip.as_slice()));
    assert_eq!(upload_of(&world)["state"], "uploaded");
}

/// Hooks run at least once: a hook that fails runs again (up to `max_attempts`), its outcome
/// is in `status`; `on_uploaded` gets `{url}` after the upload is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_again_until_they_succeed_and_on_uploaded_gets_the_url() {
    let zip = sample_zip(&SampleSpec::demo(45));
    let mut world = oss_world(&zip).await.real_time();
    let hooks = world.root().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let flaky = hooks.join("flaky.sh");
    // Fails on its first run, succeeds on the second.
    dmstrack::sim::write_executable(
        &flaky,
        &format!(
            "#!/bin/sh\necho run >> {runs}\n[ -e {mark} ] && exit 0\ntouch {mark}\necho first run fails >&2\nexit 3\n",
            runs = hooks.join("runs").display(),
            mark = hooks.join("mark").display()
        ),
    )
    .unwrap();
    let notify = hooks.join("notify.sh");
    dmstrack::sim::write_executable(
        &notify,
        &format!(
            "#!/bin/sh\necho \"$1 $DMSTRACK_UPLOAD_URL\" > {}\n",
            hooks.join("url").display()
        ),
    )
    .unwrap();
    world
        .config
        .set(
            "hooks",
            "on_archived",
            &format!("[{:?}, \"{{dir}}\"]", flaky.display().to_string()),
        )
        .set(
            "hooks",
            "on_uploaded",
            &format!("[{:?}, \"{{url}}\"]", notify.display().to_string()),
        )
        .set("hooks", "max_attempts", "3");
    let outcome = tokio::time::timeout(Duration::from_secs(60), world.run_once())
        .await
        .expect("the run ends");
    assert_eq!((outcome.archived, outcome.failed), (1, 0));
    let runs = std::fs::read_to_string(hooks.join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 2, "ran again after failing once");
    let url = format!("oss://{BUCKET}/{PREFIX}/7/{KEY}/");
    assert_eq!(
        std::fs::read_to_string(hooks.join("url")).unwrap().trim(),
        format!("{url} {url}")
    );
    let record = world.record(7, KEY);
    assert_eq!(record["hooks"]["on_archived"]["state"], "ok");
    assert_eq!(record["hooks"]["on_archived"]["attempts"], 2);
    assert_eq!(record["hooks"]["on_uploaded"]["state"], "ok");
}

/// The same archive to a real S3 server (moto with authentication on): multipart with the
/// S3 keys from `[upload.credentials]`, every part and the object confirmed by their ETags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_goes_up_to_a_real_s3_server() {
    let s3 = crate::support::moto::moto_s3("upload-e2e").await;
    let zip = big_zip(300 * 1024, 3);
    let mut world = World::new("v3").await.real_time();
    world.oss.put_object(OBJECT, zip.clone());
    world
        .dms
        .script_ticket(7, KEY, [StatusStep::success(world.fresh_urls(OBJECT), 69)]);
    std::fs::write(world.root().join("s3_secret"), &s3.secret_access_key).unwrap();
    world
        .config
        .ticket(7, KEY, "s3")
        .set("upload", "url", &format!("\"s3://{}/{PREFIX}\"", s3.bucket))
        .set("upload", "endpoint", &format!("{:?}", s3.endpoint))
        .set("upload", "region", &format!("{:?}", s3.region))
        .set("upload", "part_size", "\"100KiB\"")
        .set(
            "upload.credentials",
            "access_key_id",
            &format!("{:?}", s3.access_key_id),
        )
        .set(
            "upload.credentials",
            "secret_access_key_file",
            "\"s3_secret\"",
        );
    let outcome = world.run_once().await;
    assert_eq!(
        (outcome.archived, outcome.failed),
        (1, 0),
        "{}",
        world.record(7, KEY)
    );
    let store = dmstrack::job::upload::store::ObjectStore::new(
        &s3.endpoint.parse().unwrap(),
        &s3.bucket,
        &s3.region,
        dmstrack::job::upload::store::StoreCredentials::S3(
            dmstrack::job::upload::s3_sign::S3Credentials::new(
                s3.access_key_id.clone(),
                dmstrack::net::secret::Secret::new(s3.secret_access_key.clone()),
                None,
            ),
        ),
        Duration::from_secs(5),
        Duration::from_secs(30),
        std::sync::Arc::new(dmstrack::telemetry::Metrics::new()),
    )
    .unwrap();
    let stored = store
        .get_small(&format!("{PREFIX}/7/{KEY}/x_REDO_31201_207.zip"))
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(zip.as_slice()));
    let manifest = store
        .get_small(&format!("{PREFIX}/7/{KEY}/manifest.json"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        manifest,
        std::fs::read(world.final_dir(7, KEY).join("manifest.json")).unwrap()
    );
    assert_eq!(upload_of(&world)["state"], "uploaded");
    // The parts carried CRC-32 checksums the server kept: the object's composite checksum
    // is the one computed here from the zip with an independent CRC implementation.
    let crc32 = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let part_crcs: Vec<u8> = zip
        .chunks(100 * 1024)
        .flat_map(|part| crc32.checksum(part).to_be_bytes())
        .collect();
    let composite =
        base64::engine::general_purpose::STANDARD.encode(crc32.checksum(&part_crcs).to_be_bytes());
    let parts = zip.len().div_ceil(100 * 1024);
    let key = format!("{PREFIX}/7/{KEY}/x_REDO_31201_207.zip");
    let head = crate::s3_moto::send(
        &s3,
        &crate::s3_moto::admin_credentials(&s3),
        crate::s3_moto::Call::new("HEAD", Some(&key)).header("x-amz-checksum-mode", "ENABLED"),
    )
    .await;
    assert_eq!(head.status, 200);
    // S3 answers `<crc>-<parts>`; moto leaves the suffix out.
    let stored = head.header("x-amz-checksum-crc32").unwrap_or_default();
    assert!(
        stored == composite || stored == format!("{composite}-{parts}"),
        "{stored} is not {composite}-{parts}"
    );
}
