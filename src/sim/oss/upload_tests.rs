//! The upload side of the simulator over real loopback HTTP, driven by requests signed with
//! the production V4 signer (`crate::job::upload::oss_sign`; the simulator's verifier itself is
//! proven independently by the oss2 replays in `replay_tests.rs`): multipart round trips,
//! OSS's validation errors, authentication refusals and the injected faults.

use base64::Engine as _;
use md5::Digest as _;

use super::*;
use crate::credentials::Credentials;
use crate::job::upload::crc64;
use crate::job::upload::oss_sign::{OssEndpoint, OssRequest, sign_v4};

const BUCKET: &str = "dmstrack-archive";
const REGION: &str = "cn-hangzhou";
const KEY: &str = "dms-archive/11223344/e23dd7ec/x REDO+31201~a*b=c 归档.zip";
const AK: &str = "LTAI5tUploadTestKey";
const SECRET: &str = "UploadTestSecretNotReal";

fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn oracle_crc(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
}

fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&amp;", "&"),
    )
}

/// A simulator with the upload bucket and a long-term key.
async fn simulator() -> OssSimulator {
    let sim = OssSimulator::start().await.unwrap();
    sim.create_bucket(BUCKET);
    sim.add_access_key(AK, SECRET);
    sim
}

/// A small OSS client over reqwest, signing with the production V4 signer.
struct Client<'a> {
    sim: &'a OssSimulator,
    http: reqwest::Client,
    credentials: Credentials,
    /// Added to the simulator's clock when signing.
    skew: jiff::SignedDuration,
}

/// One answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn element(&self, name: &str) -> Option<String> {
        xml_element(&self.text(), name)
    }

    /// Asserts an OSS error: status, `Code`, request id and `EC` present.
    fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.element("Code").as_deref(),
            Some(code),
            "{}",
            self.text()
        );
        assert_eq!(
            self.element("RequestId").as_deref(),
            self.header("x-oss-request-id")
        );
        assert!(self.element("EC").is_some());
        assert_eq!(self.element("EC").as_deref(), self.header("x-oss-ec"));
        self
    }
}

impl<'a> Client<'a> {
    fn new(sim: &'a OssSimulator) -> Self {
        Self::with_credentials(sim, Credentials::new(AK, Secret::new(SECRET), None))
    }

    fn with_credentials(sim: &'a OssSimulator, credentials: Credentials) -> Self {
        Self {
            sim,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            credentials,
            skew: jiff::SignedDuration::ZERO,
        }
    }

    async fn try_send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::Result<Answer> {
        let endpoint = OssEndpoint::parse(&self.sim.base_url()).unwrap();
        let url = endpoint.url(BUCKET, key, query);
        let request = OssRequest {
            method,
            bucket: BUCKET,
            key,
            query,
            headers,
        };
        let signed = sign_v4(
            &request,
            REGION,
            &self.credentials,
            self.sim.now() + self.skew,
        );
        let mut builder = self.http.request(method.parse().unwrap(), url).body(body);
        for (name, value) in headers.iter().copied().chain(signed.wire_pairs()) {
            builder = builder.header(name, value);
        }
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        self.try_send(method, key, query, headers, body)
            .await
            .unwrap()
    }

    async fn put_object(&self, key: &str, data: &[u8]) -> Answer {
        let md5 = content_md5(data);
        let headers = [
            ("Content-Type", "application/zip"),
            ("Content-MD5", md5.as_str()),
        ];
        self.send("PUT", key, &[], &headers, data.to_vec()).await
    }

    async fn initiate(&self, key: &str) -> String {
        let answer = self
            .send(
                "POST",
                key,
                &[("uploads", "")],
                &[("Content-Type", "application/zip")],
                Vec::new(),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.element("UploadId").unwrap()
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: &[u8]) -> Answer {
        let md5 = content_md5(data);
        let number = number.to_string();
        let query = [("partNumber", number.as_str()), ("uploadId", upload_id)];
        self.send(
            "PUT",
            key,
            &query,
            &[("Content-MD5", md5.as_str())],
            data.to_vec(),
        )
        .await
    }

    async fn complete(&self, key: &str, upload_id: &str, parts: &[(u32, &str)]) -> Answer {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        self.send(
            "POST",
            key,
            &[("uploadId", upload_id)],
            &[],
            xml.into_bytes(),
        )
        .await
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Answer {
        self.send("DELETE", key, &[("uploadId", upload_id)], &[], Vec::new())
            .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str, marker: &str, max: &str) -> Answer {
        let query = [
            ("uploadId", upload_id),
            ("part-number-marker", marker),
            ("max-parts", max),
        ];
        self.send("GET", key, &query, &[], Vec::new()).await
    }

    async fn head(&self, key: &str) -> Answer {
        self.send("HEAD", key, &[], &[], Vec::new()).await
    }
}

/// `<PartNumber>` values of a ListParts answer.
fn listed_parts(answer: &Answer) -> Vec<u32> {
    answer
        .text()
        .split("<PartNumber>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn multipart_round_trip_with_production_signed_requests() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let parts = [sample(150_000, 1), sample(102_400, 2), sample(777, 3)];
    let whole: Vec<u8> = parts.concat();

    let upload_id = client.initiate(KEY).await;
    assert_eq!(upload_id.len(), 32);
    let mut etags = Vec::new();
    let mut crcs = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let answer = client
            .upload_part(KEY, &upload_id, i as u32 + 1, data)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let crc: u64 = answer
            .header("x-oss-hash-crc64ecma")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(crc, oracle_crc(data));
        crcs.push((crc, data.len() as u64));
        etags.push(answer.header("etag").unwrap().to_owned());
    }
    let uploads = sim.multipart_uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].key, KEY);
    assert_eq!(uploads[0].parts.len(), 3);
    assert_eq!(uploads[0].parts[1].info.etag, etags[1]);

    // ListParts pages: 2 then 1.
    let page = client.list_parts(KEY, &upload_id, "", "2").await;
    assert_eq!(listed_parts(&page), [1, 2]);
    assert_eq!(page.element("IsTruncated").as_deref(), Some("true"));
    assert_eq!(page.element("NextPartNumberMarker").as_deref(), Some("2"));
    let page = client.list_parts(KEY, &upload_id, "2", "2").await;
    assert_eq!(listed_parts(&page), [3]);
    assert_eq!(page.element("IsTruncated").as_deref(), Some("false"));
    assert_eq!(page.element("Size").as_deref(), Some("777"));

    let named: Vec<(u32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, etag)| (i as u32 + 1, etag.as_str()))
        .collect();
    let answer = client.complete(KEY, &upload_id, &named).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let crc: u64 = answer
        .header("x-oss-hash-crc64ecma")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(crc, oracle_crc(&whole));
    assert_eq!(crc, crc64::combine_parts(crcs));
    let etag = answer.element("ETag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with("-3\""), "{etag}");
    assert_eq!(answer.element("Key").as_deref(), Some(KEY));
    assert!(sim.multipart_uploads().is_empty());

    let head = client.head(KEY).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert_eq!(head.header("x-oss-object-type"), Some("Multipart"));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert_eq!(
        head.header("x-oss-hash-crc64ecma"),
        Some(crc.to_string().as_str())
    );
    assert_eq!(head.header("content-type"), Some("application/zip"));

    let get = client.send("GET", KEY, &[], &[], Vec::new()).await;
    assert_eq!(get.body, whole);
    let objects = sim.objects(BUCKET);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].object_type, ObjectType::Multipart);
    assert_eq!(objects[0].info.crc64ecma, crc);
    assert_eq!(sim.object_bytes(BUCKET, KEY).unwrap(), whole);

    // The upload is gone: Complete and Abort now answer NoSuchUpload.
    client
        .complete(KEY, &upload_id, &named)
        .await
        .expect_error(404, "NoSuchUpload");
    client
        .abort(KEY, &upload_id)
        .await
        .expect_error(404, "NoSuchUpload");
    assert_eq!(sim.call_count(OssOperation::UploadPart), 3);
    assert_eq!(sim.call_count(OssOperation::CompleteMultipartUpload), 2);
}

#[tokio::test]
async fn put_object_answers_md5_etag_and_crc_and_big_objects_go_to_disk() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let answer = client.put_object("small.json", b"{}\n").await;
    assert_eq!(answer.status, 200);
    // MD5 of "{}\n" as upper-case hex.
    assert_eq!(
        answer.header("etag"),
        Some("\"8A80554C91D9FCA8ACB82F023DE02F11\"")
    );
    assert_eq!(
        answer.header("content-md5"),
        Some("ioBVTJHZ/KisuC8CPeAvEQ==")
    );
    assert_eq!(
        answer.header("x-oss-hash-crc64ecma"),
        Some(oracle_crc(b"{}\n").to_string().as_str())
    );

    let big = sample(3 * 1024 * 1024 + 5, 9);
    let answer = client.put_object("big.zip", &big).await;
    assert_eq!(answer.status, 200);
    let objects = sim.objects(BUCKET);
    let on_disk: Vec<(&str, bool)> = objects
        .iter()
        .map(|o| (o.key.as_str(), o.on_disk))
        .collect();
    assert_eq!(on_disk, [("big.zip", true), ("small.json", false)]);
    assert_eq!(objects[0].object_type, ObjectType::Normal);
    // Served back from the file, whole and by range.
    let get = client.send("GET", "big.zip", &[], &[], Vec::new()).await;
    assert_eq!(get.body, big);
    let range = client
        .send(
            "GET",
            "big.zip",
            &[],
            &[("Range", "bytes=1048570-1048580")],
            Vec::new(),
        )
        .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, big[1_048_570..=1_048_580]);
    assert_eq!(sim.object_bytes(BUCKET, "big.zip").unwrap(), big);

    // Replacing keeps one object; deleting removes it.
    let answer = client.put_object("big.zip", b"now small").await;
    assert_eq!(answer.status, 200);
    assert!(!sim.objects(BUCKET)[0].on_disk);
    let answer = client.send("DELETE", "big.zip", &[], &[], Vec::new()).await;
    assert_eq!(answer.status, 204);
    assert_eq!(sim.objects(BUCKET).len(), 1);
}

#[tokio::test]
async fn a_wrong_content_md5_is_invalid_digest_and_stores_nothing() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let wrong = content_md5(b"other");
    for md5 in [wrong.as_str(), "not base64!"] {
        let answer = client
            .send(
                "PUT",
                "a.zip",
                &[],
                &[("Content-MD5", md5)],
                b"hello".to_vec(),
            )
            .await;
        answer.expect_error(400, "InvalidDigest");
    }
    assert!(sim.objects(BUCKET).is_empty());

    let upload_id = client.initiate("b.zip").await;
    let answer = client
        .send(
            "PUT",
            "b.zip",
            &[("partNumber", "1"), ("uploadId", &upload_id)],
            &[("Content-MD5", &wrong)],
            b"hello".to_vec(),
        )
        .await;
    answer.expect_error(400, "InvalidDigest");
    assert!(sim.multipart_uploads()[0].parts.is_empty());
}

#[tokio::test]
async fn complete_checks_order_etags_and_part_sizes() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let upload_id = client.initiate(KEY).await;
    let small = sample(1000, 4);
    let big = sample(102_400, 5);
    let small_etag = client.upload_part(KEY, &upload_id, 1, &small).await;
    let small_etag = small_etag.header("etag").unwrap().to_owned();
    let big_etag = client.upload_part(KEY, &upload_id, 2, &big).await;
    let big_etag = big_etag.header("etag").unwrap().to_owned();

    let answer = client
        .complete(KEY, &upload_id, &[(2, &big_etag), (1, &small_etag)])
        .await;
    answer.expect_error(400, "InvalidPartOrder");
    assert_eq!(answer.element("EC").as_deref(), Some("0042-00000209"));
    client
        .complete(KEY, &upload_id, &[(1, &small_etag), (1, &small_etag)])
        .await
        .expect_error(400, "InvalidPartOrder");
    client
        .complete(KEY, &upload_id, &[(1, &big_etag), (2, &big_etag)])
        .await
        .expect_error(400, "InvalidPart");
    client
        .complete(KEY, &upload_id, &[(1, &small_etag), (3, &big_etag)])
        .await
        .expect_error(400, "InvalidPart");
    let answer = client
        .complete(KEY, &upload_id, &[(1, &small_etag), (2, &big_etag)])
        .await;
    answer.expect_error(400, "EntityTooSmall");
    assert_eq!(answer.element("EC").as_deref(), Some("0042-00000213"));
    client
        .send(
            "POST",
            KEY,
            &[("uploadId", &upload_id)],
            &[],
            b"<nope".to_vec(),
        )
        .await
        .expect_error(400, "MalformedXML");
    assert!(sim.objects(BUCKET).is_empty());
    assert_eq!(sim.multipart_uploads().len(), 1);

    // ETags compare without case; a small last part is fine; gaps in numbers are allowed.
    let lower = big_etag.to_ascii_lowercase();
    let answer = client.complete(KEY, &upload_id, &[(2, &lower)]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(sim.object_bytes(BUCKET, KEY).unwrap(), big);
    let upload_id = client.initiate(KEY).await;
    client.upload_part(KEY, &upload_id, 5, &big).await;
    client.upload_part(KEY, &upload_id, 9, &small).await;
    let answer = client
        .complete(KEY, &upload_id, &[(5, &big_etag), (9, &small_etag)])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        sim.object_bytes(BUCKET, KEY).unwrap(),
        [big, small].concat()
    );
}

#[tokio::test]
async fn the_same_part_number_overwrites_and_abort_forgets_the_upload() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let upload_id = client.initiate(KEY).await;
    client.upload_part(KEY, &upload_id, 1, b"first").await;
    let second = client.upload_part(KEY, &upload_id, 1, b"second!").await;
    let uploads = sim.multipart_uploads();
    assert_eq!(uploads[0].parts.len(), 1);
    assert_eq!(uploads[0].parts[0].info.len, 7);
    assert_eq!(
        Some(uploads[0].parts[0].info.etag.as_str()),
        second.header("etag")
    );

    for bad in ["0", "10001", "x"] {
        client
            .send(
                "PUT",
                KEY,
                &[("partNumber", bad), ("uploadId", &upload_id)],
                &[],
                b"x".to_vec(),
            )
            .await
            .expect_error(400, "InvalidArgument");
    }
    // An upload id for another key is unknown there.
    client
        .upload_part("other.zip", &upload_id, 1, b"x")
        .await
        .expect_error(404, "NoSuchUpload");

    let answer = client.abort(KEY, &upload_id).await;
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    assert!(sim.multipart_uploads().is_empty());
    client
        .upload_part(KEY, &upload_id, 2, b"late")
        .await
        .expect_error(404, "NoSuchUpload");
    client
        .list_parts(KEY, &upload_id, "", "10")
        .await
        .expect_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn head_of_a_missing_object_is_404_with_the_error_in_x_oss_err() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let answer = client.head("missing.zip").await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header("x-oss-ec"), Some("0026-00000001"));
    let xml = base64::engine::general_purpose::STANDARD
        .decode(answer.header("x-oss-err").unwrap())
        .unwrap();
    let xml = String::from_utf8(xml).unwrap();
    assert_eq!(xml_element(&xml, "Code").as_deref(), Some("NoSuchKey"));
    assert_eq!(
        xml_element(&xml, "RequestId").as_deref(),
        answer.header("x-oss-request-id")
    );
    let answer = client
        .send("GET", "missing.zip", &[], &[], Vec::new())
        .await;
    answer.expect_error(404, "NoSuchKey");
}

#[tokio::test]
async fn bucket_level_checks_list_and_describe_the_bucket() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    for key in ["p/a.zip", "p/b/c.zip", "p/b/d.zip", "q.zip"] {
        client.put_object(key, key.as_bytes()).await;
    }
    let info = client
        .send("GET", "", &[("bucketInfo", "")], &[], Vec::new())
        .await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.element("Name").as_deref(), Some(BUCKET));
    assert_eq!(info.element("Location").as_deref(), Some("oss-cn-hangzhou"));

    let list = |query: Vec<(&'static str, &'static str)>| {
        let client = &client;
        async move { client.send("GET", "", &query, &[], Vec::new()).await }
    };
    let all = list(vec![("prefix", "p/")]).await;
    assert_eq!(
        all.text().matches("<Contents>").count(),
        3,
        "{}",
        all.text()
    );
    let folders = list(vec![("prefix", "p/"), ("delimiter", "/")]).await;
    assert_eq!(folders.text().matches("<Contents>").count(), 1);
    assert_eq!(
        xml_element(
            folders.text().split("<CommonPrefixes>").nth(1).unwrap(),
            "Prefix"
        )
        .as_deref(),
        Some("p/b/")
    );
    let first = list(vec![("prefix", "p/"), ("max-keys", "1")]).await;
    assert_eq!(first.element("IsTruncated").as_deref(), Some("true"));
    assert_eq!(first.element("NextMarker").as_deref(), Some("p/a.zip"));
    let rest = list(vec![("prefix", "p/"), ("marker", "p/a.zip")]).await;
    assert_eq!(rest.text().matches("<Contents>").count(), 2);

    // Another bucket does not exist until created.
    let endpoint = OssEndpoint::parse(&sim.base_url()).unwrap();
    let request = OssRequest {
        method: "GET",
        bucket: "other-bucket",
        key: "",
        query: &[("bucketInfo", "")],
        headers: &[],
    };
    let signed = sign_v4(&request, REGION, &client.credentials, sim.now());
    let mut builder = client
        .http
        .get(endpoint.url("other-bucket", "", &[("bucketInfo", "")]));
    for (name, value) in signed.wire_pairs() {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<Code>NoSuchBucket</Code>")
    );
}

#[tokio::test]
async fn authentication_refusals() {
    let sim = simulator().await;
    let unknown = Client::with_credentials(
        &sim,
        Credentials::new("LTAI5tUnknown", Secret::new(SECRET), None),
    );
    unknown
        .put_object("a.zip", b"a")
        .await
        .expect_error(403, "InvalidAccessKeyId");

    let wrong_secret = Client::with_credentials(
        &sim,
        Credentials::new(AK, Secret::new("not the secret"), None),
    );
    let answer = wrong_secret.put_object("a.zip", b"a").await;
    answer.expect_error(403, "SignatureDoesNotMatch");
    let canonical = answer.element("CanonicalRequest").unwrap();
    assert!(
        canonical.starts_with("PUT\n/dmstrack-archive/a.zip\n"),
        "{canonical}"
    );
    let string_to_sign = answer.element("StringToSign").unwrap();
    assert!(
        string_to_sign.starts_with("OSS4-HMAC-SHA256\n"),
        "{string_to_sign}"
    );

    // 15 minutes of skew either way are tolerated, 16 are not.
    let mut client = Client::new(&sim);
    for (minutes, ok) in [(-16, false), (-14, true), (14, true), (16, false)] {
        client.skew = jiff::SignedDuration::from_mins(minutes);
        let answer = client.put_object("a.zip", b"a").await;
        if ok {
            assert_eq!(answer.status, 200, "{minutes}: {}", answer.text());
        } else {
            answer.expect_error(403, "RequestTimeTooSkewed");
        }
    }
    // The simulator's clock moves too.
    client.skew = jiff::SignedDuration::ZERO;
    sim.set_clock_offset(jiff::SignedDuration::from_mins(20));
    client.skew = jiff::SignedDuration::from_mins(-20);
    client
        .put_object("a.zip", b"a")
        .await
        .expect_error(403, "RequestTimeTooSkewed");
    sim.set_clock_offset(jiff::SignedDuration::ZERO);

    // STS: expiry follows the simulator's clock.
    let expires = sim.now() + jiff::SignedDuration::from_mins(30);
    sim.add_sts_credentials("STS.NTemp", "TempSecret", "CAISToken+/=", expires);
    let sts = Client::with_credentials(
        &sim,
        Credentials::new(
            "STS.NTemp",
            Secret::new("TempSecret"),
            Some(Secret::new("CAISToken+/=")),
        ),
    );
    assert_eq!(sts.put_object("s.zip", b"s").await.status, 200);
    let recorded = sim.requests().pop().unwrap();
    assert_eq!(
        recorded.header("x-oss-security-token"),
        Some("CAISToken+/=")
    );
    assert!(!format!("{recorded:?}").contains("CAISToken"));
    sim.set_clock_offset(jiff::SignedDuration::from_mins(31));
    let mut late = sts;
    late.skew = jiff::SignedDuration::ZERO;
    late.put_object("s.zip", b"s")
        .await
        .expect_error(403, "SecurityTokenExpired");
    sim.set_clock_offset(jiff::SignedDuration::ZERO);

    let no_token = Client::with_credentials(
        &sim,
        Credentials::new("STS.NTemp", Secret::new("TempSecret"), None),
    );
    no_token
        .put_object("s.zip", b"s")
        .await
        .expect_error(403, "InvalidAccessKeyId");

    // A request without a signature but with an Authorization header of another kind.
    let response = client
        .http
        .put(format!("{}/{BUCKET}/x", sim.base_url()))
        .header("authorization", "Bearer nope")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn error_faults_are_consumed_once_per_call_in_order() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    sim.inject_upload_fault(OssOperation::PutObject, UploadFault::InternalError);
    sim.inject_upload_fault(OssOperation::PutObject, UploadFault::SlowDown);
    sim.inject_upload_fault(OssOperation::PutObject, UploadFault::RefuseCredentials);
    sim.inject_upload_fault(OssOperation::PutObject, UploadFault::AccessDenied);
    client
        .put_object("a.zip", b"a")
        .await
        .expect_error(500, "InternalError");
    client
        .put_object("a.zip", b"a")
        .await
        .expect_error(503, "SlowDown");
    client
        .put_object("a.zip", b"a")
        .await
        .expect_error(403, "InvalidAccessKeyId");
    client
        .put_object("a.zip", b"a")
        .await
        .expect_error(403, "AccessDenied");
    assert!(sim.objects(BUCKET).is_empty());
    assert_eq!(client.put_object("a.zip", b"a").await.status, 200);
    assert_eq!(sim.call_count(OssOperation::PutObject), 5);

    // By call number: the 3rd UploadPart fails, the others pass.
    let upload_id = client.initiate(KEY).await;
    sim.inject_upload_fault_on_call(OssOperation::UploadPart, 3, UploadFault::InternalError);
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for n in 1..=4 {
            statuses.push(client.upload_part(KEY, &upload_id, n, b"p").await.status);
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 500, 200]);
    let faults: Vec<Option<UploadFault>> = sim
        .requests()
        .iter()
        .filter(|r| r.operation == Some(OssOperation::UploadPart))
        .map(|r| r.upload_fault)
        .collect();
    assert_eq!(faults, [None, None, Some(UploadFault::InternalError), None]);

    // A HEAD error keeps its code in x-oss-err.
    sim.inject_upload_fault(OssOperation::HeadObject, UploadFault::SlowDown);
    let head = client.head("a.zip").await;
    assert_eq!(head.status, 503);
    assert!(head.header("x-oss-err").is_some());
}

#[tokio::test]
async fn a_connection_dropped_mid_part_stores_nothing() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let upload_id = client.initiate(KEY).await;
    sim.inject_upload_fault(
        OssOperation::UploadPart,
        UploadFault::DropAfterRequestBytes(200_000),
    );
    let data = sample(2 * 1024 * 1024, 7);
    let query = [("partNumber", "1"), ("uploadId", upload_id.as_str())];
    let error = client
        .try_send("PUT", KEY, &query, &[], data.clone())
        .await
        .unwrap_err();
    assert!(!error.is_status(), "{error:?}");
    assert!(sim.multipart_uploads()[0].parts.is_empty());
    let record = sim.requests().pop().unwrap();
    assert_eq!(record.status, 0);
    assert_eq!(
        record.upload_fault,
        Some(UploadFault::DropAfterRequestBytes(200_000))
    );
    // The retry goes through.
    let answer = client.upload_part(KEY, &upload_id, 1, &data).await;
    assert_eq!(answer.status, 200);

    sim.inject_upload_fault(
        OssOperation::PutObject,
        UploadFault::DropAfterRequestBytes(10),
    );
    assert!(
        client
            .try_send("PUT", "p.zip", &[], &[], b"short body".to_vec())
            .await
            .is_err()
    );
    assert!(sim.objects(BUCKET).is_empty());
}

#[tokio::test]
async fn a_complete_whose_answer_is_lost_still_completes() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let upload_id = client.initiate(KEY).await;
    let data = sample(5000, 8);
    let etag = client.upload_part(KEY, &upload_id, 1, &data).await;
    let etag = etag.header("etag").unwrap().to_owned();
    sim.inject_upload_fault(
        OssOperation::CompleteMultipartUpload,
        UploadFault::DropAfterApplying,
    );
    let xml = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let result = client
        .try_send(
            "POST",
            KEY,
            &[("uploadId", &upload_id)],
            &[],
            xml.into_bytes(),
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    // The object exists; the upload is gone; a HEAD tells the client what happened.
    assert!(sim.multipart_uploads().is_empty());
    let head = client.head(KEY).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-oss-object-type"), Some("Multipart"));
    assert_eq!(
        head.header("x-oss-hash-crc64ecma"),
        Some(oracle_crc(&data).to_string().as_str())
    );
    client
        .complete(KEY, &upload_id, &[(1, &etag)])
        .await
        .expect_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_is_logged() {
    let sim = simulator().await;
    let client = Client::new(&sim);
    let answers = [
        client.put_object("a.zip", b"a").await,
        client.head("a.zip").await,
        client.head("nope").await,
        client
            .send("GET", "", &[("bucketInfo", "")], &[], Vec::new())
            .await,
    ];
    let logged = sim.requests();
    assert_eq!(logged.len(), answers.len());
    for (answer, record) in answers.iter().zip(&logged) {
        assert_eq!(
            answer.header("x-oss-request-id"),
            Some(record.request_id.as_str())
        );
        assert_eq!(answer.header("server"), Some("AliyunOSS"));
        assert_eq!(answer.status, record.status);
    }
    assert_eq!(logged[0].operation, Some(OssOperation::PutObject));
    assert_eq!(logged[0].key.as_deref(), Some("a.zip"));
    assert_eq!(logged[3].operation, Some(OssOperation::GetBucketInfo));
    assert_eq!(logged[3].key, None);
}
