//! Replays of the oss2 2.19.1 golden requests (`tests/fixtures/golden/oss/`), byte for byte
//! over a raw TCP connection: each is accepted once the simulator knows the fixture's keys and
//! its clock stands at the fixture's time, and refused with `SignatureDoesNotMatch` after one
//! flipped signature character, one changed signed header, or a changed key.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::golden::{self, GoldenRequest, part_body};
use super::*;

/// What came back on the wire.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` as one HTTP/1.1 request and reads one response (by `Content-Length`; HEAD and
/// 204 have no body).
async fn send_raw(addr: SocketAddr, raw: &[u8], head: bool) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut buffer = Vec::new();
    let header_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0; 8192];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("answer within 10 s")
            .unwrap();
        assert!(read > 0, "connection closed before the headers");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head_text = String::from_utf8(buffer[..header_end].to_vec()).unwrap();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let length = if head || status == 204 { 0 } else { length };
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0; length - body.len()];
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..read]);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A simulator serving the fixtures' bucket, with the fixture's keys registered and its clock
/// at the fixture's time (plus `skew`), and the state the operation needs.
async fn simulator_for(fixture: &GoldenRequest, skew: jiff::SignedDuration) -> OssSimulator {
    let inputs = &fixture.inputs;
    let sim = OssSimulator::start_with(OssSimConfig {
        bucket: inputs.bucket.clone(),
        region: inputs.region.clone(),
        ..OssSimConfig::default()
    })
    .await
    .unwrap();
    let offset = jiff::Timestamp::now().duration_until(fixture.time()) + skew;
    sim.set_clock_offset(offset);
    match &inputs.security_token {
        None => sim.add_access_key(&inputs.access_key_id, inputs.access_key_secret.as_str()),
        Some(token) => sim.add_sts_credentials(
            &inputs.access_key_id,
            inputs.access_key_secret.as_str(),
            token.as_str(),
            fixture.time() + jiff::SignedDuration::from_hours(1),
        ),
    }
    let key = fixture.key();
    let bucket = &inputs.bucket;
    let upload_id = inputs.upload_id.as_deref();
    match fixture.operation.as_str() {
        "UploadPart" | "AbortMultipartUpload" => {
            sim.create_multipart_upload(bucket, key, upload_id);
        }
        "ListParts" => {
            let id = sim.create_multipart_upload(bucket, key, upload_id);
            for n in 1..=3 {
                sim.put_part(&id, n, part_body(n, 1000 + n as usize))
                    .unwrap();
            }
        }
        "CompleteMultipartUpload" => {
            let id = sim.create_multipart_upload(bucket, key, upload_id);
            for part in inputs.parts.as_ref().unwrap() {
                let info = sim
                    .put_part(
                        &id,
                        part.part_number,
                        part_body(part.part_number, part.size),
                    )
                    .unwrap();
                assert_eq!(info.etag, format!("\"{}\"", part.etag));
                assert_eq!(info.crc64ecma, part.crc64);
            }
        }
        "HeadObject" | "GetObject" => {
            sim.put_object_in(bucket, key, &b"hello dmstrack\n"[..]);
        }
        "ListObjects" => {
            let prefix = &inputs.params.iter().find(|(k, _)| k == "prefix").unwrap().1;
            sim.put_object_in(bucket, &format!("{prefix}b.zip"), &b"b"[..]);
            sim.put_object_in(bucket, &format!("{prefix}a.zip"), &b"a"[..]);
        }
        _ => {}
    }
    sim
}

fn expected_status(fixture: &GoldenRequest) -> u16 {
    match fixture.operation.as_str() {
        "AbortMultipartUpload" => 204,
        _ => 200,
    }
}

fn is_head(fixture: &GoldenRequest) -> bool {
    fixture.request.method == "HEAD"
}

#[tokio::test]
async fn every_oss2_request_is_accepted_byte_for_byte() {
    let fixtures = golden::load_all();
    for fixture in &fixtures {
        let name = &fixture.name;
        let sim = simulator_for(fixture, jiff::SignedDuration::ZERO).await;
        let response = send_raw(sim.addr(), &fixture.raw_http(), is_head(fixture)).await;
        assert_eq!(
            response.status,
            expected_status(fixture),
            "{name}: {}",
            response.text()
        );
        assert_eq!(response.header("x-oss-request-id").unwrap().len(), 24);
        check_effect(&sim, fixture, &response);
    }
}

/// What each accepted request did to the simulator's state and answered.
fn check_effect(sim: &OssSimulator, fixture: &GoldenRequest, response: &RawResponse) {
    let name = &fixture.name;
    let bucket = &fixture.inputs.bucket;
    let key = fixture.key();
    let operation = match fixture.operation.as_str() {
        "PutObject" => OssOperation::PutObject,
        "InitiateMultipartUpload" => OssOperation::InitiateMultipartUpload,
        "UploadPart" => OssOperation::UploadPart,
        "CompleteMultipartUpload" => OssOperation::CompleteMultipartUpload,
        "AbortMultipartUpload" => OssOperation::AbortMultipartUpload,
        "ListParts" => OssOperation::ListParts,
        "HeadObject" => OssOperation::HeadObject,
        "GetObject" => OssOperation::GetObject,
        "GetBucketInfo" => OssOperation::GetBucketInfo,
        "ListObjects" => OssOperation::ListObjects,
        other => panic!("{name}: unknown operation {other}"),
    };
    assert_eq!(sim.call_count(operation), 1, "{name}");
    let text = response.text();
    match operation {
        OssOperation::PutObject => {
            assert_eq!(
                sim.object_bytes(bucket, key),
                Some(fixture.body()),
                "{name}"
            );
            let info = sim.object_info_in(bucket, key).unwrap();
            assert_eq!(response.header("etag"), Some(info.etag.as_str()), "{name}");
            let crc = info.crc64ecma.to_string();
            assert_eq!(response.header("x-oss-hash-crc64ecma"), Some(crc.as_str()));
        }
        OssOperation::InitiateMultipartUpload => {
            let upload_id = xml_element(&text, "UploadId").unwrap();
            let uploads = sim.multipart_uploads();
            assert_eq!(uploads.len(), 1, "{name}");
            assert_eq!(uploads[0].upload_id, upload_id);
            assert_eq!(uploads[0].key, key);
            assert_eq!(xml_element(&text, "Key").as_deref(), Some(key));
        }
        OssOperation::UploadPart => {
            let part = &fixture.inputs.parts.as_ref().unwrap()[0];
            let expected_etag = format!("\"{}\"", part.etag);
            assert_eq!(
                response.header("etag"),
                Some(expected_etag.as_str()),
                "{name}"
            );
            let crc = part.crc64.to_string();
            assert_eq!(response.header("x-oss-hash-crc64ecma"), Some(crc.as_str()));
            let uploads = sim.multipart_uploads();
            assert_eq!(uploads[0].parts.len(), 1, "{name}");
            assert_eq!(uploads[0].parts[0].info.len, part.size as u64);
        }
        OssOperation::CompleteMultipartUpload => {
            let parts = fixture.inputs.parts.as_ref().unwrap();
            let whole: Vec<u8> = parts
                .iter()
                .flat_map(|p| part_body(p.part_number, p.size))
                .collect();
            assert_eq!(sim.object_bytes(bucket, key), Some(whole.clone()), "{name}");
            let crc = crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(&whole);
            let crc_text = crc.to_string();
            assert_eq!(
                response.header("x-oss-hash-crc64ecma"),
                Some(crc_text.as_str())
            );
            let etag = xml_element(&text, "ETag").unwrap();
            assert!(etag.ends_with(&format!("-{}\"", parts.len())), "{etag}");
            assert!(sim.multipart_uploads().is_empty(), "{name}");
            let objects = sim.objects(bucket);
            assert_eq!(objects[0].object_type, ObjectType::Multipart);
        }
        OssOperation::AbortMultipartUpload => {
            assert!(sim.multipart_uploads().is_empty(), "{name}");
        }
        OssOperation::ListParts => {
            let numbers: Vec<String> = text
                .split("<PartNumber>")
                .skip(1)
                .map(|s| s.split('<').next().unwrap().to_owned())
                .collect();
            let first_page = fixture
                .inputs
                .params
                .iter()
                .any(|(k, v)| k == "part-number-marker" && v.is_empty());
            if first_page {
                assert_eq!(numbers, ["1", "2", "3"], "{name}");
            } else {
                // part-number-marker=1, max-parts=2.
                assert_eq!(numbers, ["2", "3"], "{name}");
                assert_eq!(xml_element(&text, "PartNumberMarker").as_deref(), Some("1"));
            }
            assert_eq!(xml_element(&text, "IsTruncated").as_deref(), Some("false"));
            assert_eq!(
                xml_element(&text, "NextPartNumberMarker").as_deref(),
                Some("3")
            );
        }
        OssOperation::HeadObject => {
            assert_eq!(response.header("content-length"), Some("15"), "{name}");
            assert_eq!(response.header("x-oss-object-type"), Some("Normal"));
            assert!(response.header("x-oss-hash-crc64ecma").is_some());
            assert!(response.body.is_empty());
        }
        OssOperation::GetObject => {
            assert_eq!(response.body, b"hello dmstrack\n", "{name}");
        }
        OssOperation::GetBucketInfo => {
            assert_eq!(xml_element(&text, "Name").as_deref(), Some(bucket.as_str()));
        }
        OssOperation::ListObjects => {
            // max-keys=1: the first key, and a marker to go on from.
            assert_eq!(
                xml_element(&text, "IsTruncated").as_deref(),
                Some("true"),
                "{name}"
            );
            assert_eq!(text.matches("<Contents>").count(), 1, "{text}");
            let listed = xml_element(&text, "Key").unwrap();
            assert!(listed.ends_with("a.zip"), "{listed}");
            // encoding-type=url: '/' kept, so the key reads the same.
            assert_eq!(xml_element(&text, "EncodingType").as_deref(), Some("url"));
        }
        OssOperation::DeleteObject => unreachable!(),
    }
}

/// The raw request with one header's value replaced (name compared case-insensitively).
fn with_header(fixture: &GoldenRequest, name: &str, value: &str) -> GoldenRequest {
    let mut changed = fixture.clone();
    for (n, v) in &mut changed.request.headers {
        if n.eq_ignore_ascii_case(name) {
            *v = value.to_owned();
        }
    }
    changed
}

/// The request with the last character of its signature changed.
fn with_flipped_signature(fixture: &GoldenRequest) -> GoldenRequest {
    let authorization = fixture.header("authorization").unwrap().to_owned();
    let (at, old) = if authorization.starts_with("OSS4-HMAC-SHA256") {
        let start = authorization.find("Signature=").unwrap() + "Signature=".len();
        (start + 63, authorization.as_bytes()[start + 63])
    } else {
        // V1: the base64 signature ends with '='; change the character before it.
        let at = authorization.len() - 2;
        (at, authorization.as_bytes()[at])
    };
    let new = if old == b'a' { 'b' } else { 'a' };
    let mut flipped = authorization.clone();
    flipped.replace_range(at..=at, &new.to_string());
    with_header(fixture, "authorization", &flipped)
}

/// One signed header changed: `Content-Type` when sent, else the date (one second later).
fn with_changed_signed_header(fixture: &GoldenRequest) -> GoldenRequest {
    if fixture.header("content-type").is_some() {
        return with_header(fixture, "content-type", "application/x-changed");
    }
    match fixture.header("x-oss-date") {
        Some(date) => with_header(fixture, "x-oss-date", &date.replace("120000Z", "120001Z")),
        None => {
            let date = fixture
                .header("date")
                .unwrap()
                .replace("12:00:00", "12:00:01");
            with_header(fixture, "date", &date)
        }
    }
}

/// The request for another key: one more character at the end of the path.
fn with_changed_key(fixture: &GoldenRequest) -> GoldenRequest {
    let mut changed = fixture.clone();
    changed.request.path.push('x');
    changed
}

#[tokio::test]
async fn altered_oss2_requests_are_refused_with_signature_does_not_match() {
    let fixtures = golden::load_all();
    for fixture in &fixtures {
        let variants = [
            ("flipped signature", with_flipped_signature(fixture)),
            ("changed header", with_changed_signed_header(fixture)),
            ("changed key", with_changed_key(fixture)),
        ];
        for (what, variant) in variants {
            let name = format!("{} ({what})", fixture.name);
            let sim = simulator_for(fixture, jiff::SignedDuration::ZERO).await;
            let response = send_raw(sim.addr(), &variant.raw_http(), is_head(fixture)).await;
            assert_eq!(response.status, 403, "{name}: {}", response.text());
            let error = if is_head(fixture) {
                let encoded = response
                    .header("x-oss-err")
                    .expect("HEAD errors carry x-oss-err");
                use base64::Engine as _;
                let xml = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap();
                String::from_utf8(xml).unwrap()
            } else {
                response.text()
            };
            assert_eq!(
                xml_element(&error, "Code").as_deref(),
                Some("SignatureDoesNotMatch"),
                "{name}: {error}"
            );
            if what == "flipped signature" {
                // Only the signature changed: the server's own strings are oss2's.
                assert_eq!(
                    xml_element(&error, "StringToSign").as_deref(),
                    Some(fixture.signing.string_to_sign.as_str()),
                    "{name}"
                );
                assert_eq!(
                    xml_element(&error, "CanonicalRequest"),
                    fixture.signing.canonical_request,
                    "{name}"
                );
            }
            assert_eq!(
                sim.objects(&fixture.inputs.bucket).len(),
                initial_objects(fixture)
            );
        }
    }
}

/// How many objects [`simulator_for`] stored before the request.
fn initial_objects(fixture: &GoldenRequest) -> usize {
    match fixture.operation.as_str() {
        "HeadObject" | "GetObject" => 1,
        "ListObjects" => 2,
        _ => 0,
    }
}

#[tokio::test]
async fn oss2_requests_are_refused_outside_the_skew_window_and_accepted_inside() {
    let fixtures = golden::load_all();
    let v4 = fixtures
        .iter()
        .find(|f| f.name == "put_object_v4_sts_manifest__path")
        .unwrap();
    let v1 = fixtures
        .iter()
        .find(|f| f.name == "put_object_v1_plain__path")
        .unwrap();
    for fixture in [v4, v1] {
        for (minutes, status) in [(-16, 403), (-14, 200), (14, 200), (16, 403)] {
            let skew = jiff::SignedDuration::from_mins(minutes);
            let sim = simulator_for(fixture, skew).await;
            let response = send_raw(sim.addr(), &fixture.raw_http(), false).await;
            assert_eq!(response.status, status, "{} {minutes}", fixture.name);
            if status == 403 {
                assert_eq!(
                    xml_element(&response.text(), "Code").as_deref(),
                    Some("RequestTimeTooSkewed")
                );
            }
        }
    }
}

#[tokio::test]
async fn oss2_sts_requests_fail_once_the_token_expired_or_differs() {
    let fixtures = golden::load_all();
    let fixture = fixtures
        .iter()
        .find(|f| f.name == "upload_part_v4_sts__virtual")
        .unwrap();
    let inputs = &fixture.inputs;
    let sim = simulator_for(fixture, jiff::SignedDuration::ZERO).await;
    let token = inputs.security_token.as_deref().unwrap();
    let register = |expires_in_secs: i64, token: &str| {
        sim.add_sts_credentials(
            &inputs.access_key_id,
            inputs.access_key_secret.as_str(),
            token,
            fixture.time() + jiff::SignedDuration::from_secs(expires_in_secs),
        );
    };
    let code = |response: &RawResponse| xml_element(&response.text(), "Code").unwrap();

    register(0, token);
    let response = send_raw(sim.addr(), &fixture.raw_http(), false).await;
    assert_eq!(response.status, 403);
    assert_eq!(code(&response), "SecurityTokenExpired");
    assert_eq!(
        xml_element(&response.text(), "EC").as_deref(),
        Some("0002-00000007")
    );

    register(3600, "CAISAnotherToken");
    let response = send_raw(sim.addr(), &fixture.raw_http(), false).await;
    assert_eq!(code(&response), "InvalidSecurityToken");

    register(3600, token);
    let without_token = {
        let mut changed = fixture.clone();
        changed
            .request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("x-oss-security-token"));
        changed
    };
    let response = send_raw(sim.addr(), &without_token.raw_http(), false).await;
    assert_eq!(code(&response), "InvalidAccessKeyId");

    assert!(sim.remove_access_key(&inputs.access_key_id));
    let response = send_raw(sim.addr(), &fixture.raw_http(), false).await;
    assert_eq!(code(&response), "InvalidAccessKeyId");

    register(3600, token);
    let response = send_raw(sim.addr(), &fixture.raw_http(), false).await;
    assert_eq!(response.status, 200, "{}", response.text());
}
