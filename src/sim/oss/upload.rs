//! The header-signed half of the OSS simulator: PutObject, the multipart calls
//! (InitiateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload,
//! ListParts), HeadObject, GetObject, DeleteObject, and the bucket-level GetBucketInfo and
//! ListObjects, with OSS's validation rules and answers (`shared/reference/oss-upload.md` §2)
//! and the injected upload faults (`UploadFault`).
//!
//! Each request goes: bucket exists → header signature (`header_auth`) → injected fault →
//! the operation. Bodies stream into a `BodySink` (memory, then a temp file), so big parts do
//! not sit in memory.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use base64::Engine as _;
use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use md5::Digest as _;

use super::body::SimBody;
use super::header_auth::{self, SignedParts};
use super::presigned::{object_response, parse_query};
use super::reply::{OssError, iso8601, new_upload_id, upper_hex, xml_escape};
use super::server::{Outcome, Target};
use super::store::{BodySink, MIN_PART_SIZE, ObjectType, Part, Received, StoredObject, Upload};
use super::{OssOperation, Shared, UploadFault};

/// Largest CompleteMultipartUpload document accepted.
const MAX_COMPLETE_XML: u64 = 2 * 1024 * 1024;

/// Content type of objects uploaded without one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why an operation did not produce an answer.
enum Failure {
    Oss(OssError),
    /// Close the connection without answering (injected, or the client went away).
    Drop,
}

impl From<OssError> for Failure {
    fn from(error: OssError) -> Self {
        Self::Oss(error)
    }
}

type OpResult = Result<Response<SimBody>, Failure>;

/// What every operation needs.
struct Call<'a> {
    shared: &'a Shared,
    parts: &'a Parts,
    target: &'a Target,
    query: &'a [(String, String)],
    cut: &'a Arc<AtomicBool>,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn object_id(&self) -> (String, String) {
        (self.target.bucket.clone(), self.target.key.clone())
    }

    fn url_encoded(&self) -> bool {
        self.param("encoding-type") == Some("url")
    }

    /// The key as a listing shows it: URL-encoded when the request asked for it.
    fn shown(&self, key: &str) -> String {
        if self.url_encoded() {
            url_encode(key)
        } else {
            key.to_owned()
        }
    }
}

/// Answers a request that carries an `Authorization` header.
pub(super) async fn answer(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    target: &Target,
    raw_query: &str,
    request_id: &str,
    cut: &Arc<AtomicBool>,
) -> Outcome {
    let error = |error: OssError| Outcome::error(error, request_id, &shared.host_id, cut);
    let query = parse_query(raw_query);
    let Some(operation) = classify(&parts.method, &target.key, &query) else {
        return error(OssError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "The simulator does not implement this operation.",
            "0000-00000003",
        ));
    };
    let call_number = {
        let mut state = shared.lock();
        let count = state.calls.entry(operation).or_default();
        *count += 1;
        *count
    };
    let call = Call {
        shared,
        parts,
        target,
        query: &query,
        cut,
    };
    let (result, fault) = run(&call, body, operation, call_number).await;
    let mut outcome = match result {
        Ok(response) => Outcome::answer(response),
        Err(Failure::Oss(oss)) => error(oss),
        Err(Failure::Drop) => Outcome::dropped(),
    };
    if !target.key.is_empty() {
        outcome.key = Some(target.key.clone());
    }
    outcome.operation = Some(operation);
    outcome.upload_fault = fault;
    outcome
}

/// Which operation a header-signed request is, from its method, key and sub-resources.
fn classify(method: &Method, key: &str, query: &[(String, String)]) -> Option<OssOperation> {
    let has = |name: &str| query.iter().any(|(n, _)| n == name);
    if key.is_empty() {
        return match *method {
            Method::GET if has("bucketInfo") => Some(OssOperation::GetBucketInfo),
            Method::GET if !has("uploads") && !has("acl") => Some(OssOperation::ListObjects),
            _ => None,
        };
    }
    match *method {
        Method::PUT if has("uploadId") && has("partNumber") => Some(OssOperation::UploadPart),
        Method::PUT if !has("uploadId") && !has("partNumber") && !has("acl") => {
            Some(OssOperation::PutObject)
        }
        Method::POST if has("uploads") => Some(OssOperation::InitiateMultipartUpload),
        Method::POST if has("uploadId") => Some(OssOperation::CompleteMultipartUpload),
        Method::DELETE if has("uploadId") => Some(OssOperation::AbortMultipartUpload),
        Method::DELETE => Some(OssOperation::DeleteObject),
        Method::GET if has("uploadId") => Some(OssOperation::ListParts),
        Method::GET => Some(OssOperation::GetObject),
        Method::HEAD => Some(OssOperation::HeadObject),
        _ => None,
    }
}

async fn run(
    call: &Call<'_>,
    body: Incoming,
    operation: OssOperation,
    call_number: u64,
) -> (OpResult, Option<UploadFault>) {
    let shared = call.shared;
    if !shared.lock().buckets.contains(&call.target.bucket) {
        let error = OssError::no_such_bucket(&call.target.bucket);
        return (Err(error.into()), None);
    }
    let now = shared.now();
    let verified = {
        let state = shared.lock();
        let signed = SignedParts {
            method: call.parts.method.as_str(),
            bucket: &call.target.bucket,
            key: &call.target.key,
            query: call.query,
            headers: &call.parts.headers,
        };
        header_auth::verify(&signed, &state.credentials, &shared.config.region, now)
    };
    if let Err(error) = verified {
        return (Err(error.into()), None);
    }
    let fault = shared.lock().take_upload_fault(operation, call_number);
    let refused = match fault {
        Some(UploadFault::InternalError) => Some(OssError::internal_error()),
        Some(UploadFault::SlowDown) => Some(OssError::slow_down()),
        Some(UploadFault::RefuseCredentials) => {
            let ak = authorization_access_key(&call.parts.headers);
            Some(OssError::invalid_access_key_id(&ak))
        }
        Some(UploadFault::AccessDenied) => Some(OssError::access_denied(
            "You have no right to access this object because of bucket acl.",
        )),
        Some(UploadFault::DropAfterRequestBytes(limit)) => {
            // Whatever happens while reading, the answer is a dropped connection.
            let _ = receive(shared, body, Some(limit)).await;
            return (Err(Failure::Drop), fault);
        }
        Some(UploadFault::Stall) => {
            let _ = receive(shared, body, None).await;
            std::future::pending::<()>().await;
            unreachable!("a stalled request never answers");
        }
        Some(UploadFault::DropAfterApplying) | None => None,
    };
    if let Some(error) = refused {
        return (Err(error.into()), fault);
    }
    let result = match operation {
        OssOperation::PutObject => put_object(call, body).await,
        OssOperation::InitiateMultipartUpload => initiate(call),
        OssOperation::UploadPart => upload_part(call, body).await,
        OssOperation::CompleteMultipartUpload => complete(call, body).await,
        OssOperation::AbortMultipartUpload => abort(call),
        OssOperation::ListParts => list_parts(call),
        OssOperation::HeadObject => get_object(call, true),
        OssOperation::GetObject => get_object(call, false),
        OssOperation::DeleteObject => delete_object(call),
        OssOperation::GetBucketInfo => bucket_info(call),
        OssOperation::ListObjects => list_objects(call),
    };
    if fault == Some(UploadFault::DropAfterApplying) {
        return (Err(Failure::Drop), fault);
    }
    (result, fault)
}

/// The AccessKey id named in the `Authorization` header (for error documents).
fn authorization_access_key(headers: &HeaderMap) -> String {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(rest) = value.split("Credential=").nth(1) {
        return rest.split('/').next().unwrap_or("").to_owned();
    }
    value
        .strip_prefix("OSS ")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(ak, _)| ak.to_owned())
        .unwrap_or_default()
}

/// Reads the request body into a sink. With `drop_after`, stops (and fails) once that many
/// bytes are in, or at the end of a shorter body.
async fn receive(
    shared: &Shared,
    mut body: Incoming,
    drop_after: Option<u64>,
) -> Result<Received, Failure> {
    let mut sink = BodySink::new(shared.files.path());
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            // The client went away mid-body: nobody is left to answer.
            Some(Err(_)) => return Err(Failure::Drop),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    sink.write(&data).map_err(io_failure)?;
                    if drop_after.is_some_and(|limit| sink.len() >= limit) {
                        return Err(Failure::Drop);
                    }
                }
            }
        }
    }
    if drop_after.is_some() {
        return Err(Failure::Drop);
    }
    sink.finish().map_err(io_failure)
}

fn io_failure(_: io::Error) -> Failure {
    Failure::Oss(OssError::internal_error())
}

/// 400 `InvalidDigest` unless a sent `Content-MD5` is the base64 MD5 of the body.
fn check_content_md5(call: &Call<'_>, md5: &[u8; 16]) -> Result<(), OssError> {
    let Some(sent) = call.header("content-md5") else {
        return Ok(());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(sent.trim());
    if decoded.as_deref() == Ok(md5.as_slice()) {
        return Ok(());
    }
    Err(OssError::new(
        StatusCode::BAD_REQUEST,
        "InvalidDigest",
        "The Content-MD5 you specified was invalid.",
        "0016-00000402",
    )
    .with("Content-MD5", sent))
}

fn content_md5(md5: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

fn empty_answer(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("content-length", "0")
}

fn xml_answer(xml: String, cut: &Arc<AtomicBool>) -> Response<SimBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/xml")
        .body(SimBody::full(Bytes::from(xml), cut))
        .expect("static header names and values are valid")
}

async fn put_object(call: &Call<'_>, body: Incoming) -> OpResult {
    let received = receive(call.shared, body, None).await?;
    check_content_md5(call, &received.md5)?;
    let md5 = received.md5;
    let content_type = call.header("content-type").unwrap_or(DEFAULT_CONTENT_TYPE);
    let object = StoredObject::normal(received, content_type, true, call.shared.now());
    let response = empty_answer(StatusCode::OK)
        .header("etag", format!("\"{}\"", object.etag))
        .header("x-oss-hash-crc64ecma", object.crc64)
        .header("content-md5", content_md5(&md5))
        .body(SimBody::empty(call.cut))
        .expect("valid headers");
    call.shared.lock().objects.insert(call.object_id(), object);
    Ok(response)
}

fn initiate(call: &Call<'_>) -> OpResult {
    let content_type = call.header("content-type").unwrap_or(DEFAULT_CONTENT_TYPE);
    let upload_id = {
        let mut state = call.shared.lock();
        let upload_id = state
            .next_upload_ids
            .pop_front()
            .unwrap_or_else(new_upload_id);
        let upload = Upload {
            bucket: call.target.bucket.clone(),
            key: call.target.key.clone(),
            content_type: content_type.to_owned(),
            initiated: call.shared.now(),
            parts: BTreeMap::new(),
        };
        state.uploads.insert(upload_id.clone(), upload);
        upload_id
    };
    let encoding = if call.url_encoded() {
        "  <EncodingType>url</EncodingType>\n"
    } else {
        ""
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>\n{encoding}  \
         <Bucket>{}</Bucket>\n  <Key>{}</Key>\n  <UploadId>{}</UploadId>\n\
         </InitiateMultipartUploadResult>\n",
        xml_escape(&call.target.bucket),
        xml_escape(&call.shown(&call.target.key)),
        xml_escape(&upload_id),
    );
    Ok(xml_answer(xml, call.cut))
}

/// The upload named by `uploadId`, if it belongs to this bucket and key.
fn upload_of<'s>(
    uploads: &'s mut BTreeMap<String, Upload>,
    call: &Call<'_>,
) -> Result<&'s mut Upload, OssError> {
    let upload_id = call.param("uploadId").unwrap_or("");
    uploads
        .get_mut(upload_id)
        .filter(|u| u.bucket == call.target.bucket && u.key == call.target.key)
        .ok_or_else(|| OssError::no_such_upload(upload_id))
}

async fn upload_part(call: &Call<'_>, body: Incoming) -> OpResult {
    let number = call
        .param("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            OssError::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive.",
                "0042-00000101",
            )
            .with("ArgumentName", "partNumber")
        })?;
    upload_of(&mut call.shared.lock().uploads, call)?;
    let received = receive(call.shared, body, None).await?;
    check_content_md5(call, &received.md5)?;
    let part = Part {
        data: received.data,
        md5: received.md5,
        crc64: received.crc64,
        last_modified: call.shared.now(),
    };
    let response = empty_answer(StatusCode::OK)
        .header("etag", format!("\"{}\"", part.etag()))
        .header("x-oss-hash-crc64ecma", part.crc64)
        .header("content-md5", content_md5(&part.md5))
        .body(SimBody::empty(call.cut))
        .expect("valid headers");
    // The upload may have been aborted or completed while the body was arriving.
    upload_of(&mut call.shared.lock().uploads, call)?
        .parts
        .insert(number, part);
    Ok(response)
}

#[derive(serde::Deserialize)]
struct CompleteDocument {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletePart>,
}

#[derive(serde::Deserialize)]
struct CompletePart {
    #[serde(rename = "PartNumber")]
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

fn malformed_xml() -> OssError {
    OssError::new(
        StatusCode::BAD_REQUEST,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published \
         schema.",
        "0042-00000205",
    )
}

/// The parts a Complete names, checked in OSS's order: ascending numbers, then each part
/// exists with that ETag.
fn chosen_parts(
    document: &[u8],
    uploaded: &BTreeMap<u32, Part>,
) -> Result<Vec<(u32, Part)>, OssError> {
    let text = std::str::from_utf8(document).map_err(|_| malformed_xml())?;
    let document: CompleteDocument = quick_xml::de::from_str(text).map_err(|_| malformed_xml())?;
    if document.parts.is_empty() {
        return Err(malformed_xml());
    }
    if document
        .parts
        .windows(2)
        .any(|w| w[0].part_number >= w[1].part_number)
    {
        // EC 0042-00000209 per oss-upload.md.
        return Err(OssError::new(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "The list of parts was not in ascending order. Parts list must be specified in \
             order by part number.",
            "0042-00000209",
        ));
    }
    document
        .parts
        .iter()
        .map(|named| {
            let etag = named.etag.trim().trim_matches('"');
            match uploaded.get(&named.part_number) {
                Some(part) if part.etag().eq_ignore_ascii_case(etag) => {
                    Ok((named.part_number, part.clone()))
                }
                _ => Err(OssError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidPart",
                    "One or more of the specified parts could not be found or the specified \
                     entity tag might not have matched the part's entity tag.",
                    "0042-00000210",
                )
                .with("PartNumber", named.part_number.to_string())
                .with("ETag", &named.etag)),
            }
        })
        .collect()
}

async fn complete(call: &Call<'_>, body: Incoming) -> OpResult {
    let uploaded = upload_of(&mut call.shared.lock().uploads, call)?
        .parts
        .clone();
    let document = receive(call.shared, body, None).await?;
    let complete_all = call
        .header("x-oss-complete-all")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let chosen = if complete_all {
        uploaded.into_iter().collect::<Vec<_>>()
    } else {
        if document.data.len() > MAX_COMPLETE_XML {
            return Err(malformed_xml().into());
        }
        let bytes = document.data.read_all().map_err(io_failure)?;
        chosen_parts(&bytes, &uploaded)?
    };
    if chosen.is_empty() {
        return Err(malformed_xml().into());
    }
    if let Some((number, part)) = chosen[..chosen.len() - 1]
        .iter()
        .find(|(_, part)| part.data.len() < MIN_PART_SIZE)
    {
        // EC 0042-00000213 per oss-upload.md.
        return Err(OssError::new(
            StatusCode::BAD_REQUEST,
            "EntityTooSmall",
            "Your proposed upload is smaller than the minimum allowed size.",
            "0042-00000213",
        )
        .with("PartNumber", number.to_string())
        .with("ProposedSize", part.data.len().to_string())
        .with("MinSizeAllowed", MIN_PART_SIZE.to_string())
        .into());
    }

    let mut sink = BodySink::new(call.shared.files.path());
    let mut md5_of_md5s = md5::Md5::new();
    for (_, part) in &chosen {
        part.data.copy_into(&mut sink).map_err(io_failure)?;
        md5_of_md5s.update(part.md5);
    }
    let assembled = sink.finish().map_err(io_failure)?;
    let etag = format!("{}-{}", upper_hex(&md5_of_md5s.finalize()), chosen.len());
    let object_id = call.object_id();
    let crc64 = assembled.crc64;
    {
        let mut state = call.shared.lock();
        let upload_id = call.param("uploadId").unwrap_or("").to_owned();
        // Aborted meanwhile: the assembled copy is dropped with its temp file.
        upload_of(&mut state.uploads, call)?;
        let upload = state
            .uploads
            .remove(&upload_id)
            .expect("the upload was just found");
        let object = StoredObject {
            data: assembled.data,
            etag: etag.clone(),
            crc64,
            send_crc: true,
            object_type: ObjectType::Multipart,
            content_type: upload.content_type,
            last_modified: call.shared.now(),
        };
        state.objects.insert(object_id, object);
    }
    let host = call.header("host").unwrap_or("127.0.0.1");
    let encoding = if call.url_encoded() {
        "  <EncodingType>url</EncodingType>\n"
    } else {
        ""
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult>\n{encoding}  \
         <Location>http://{}/{}/{}</Location>\n  <Bucket>{}</Bucket>\n  <Key>{}</Key>\n  \
         <ETag>{}</ETag>\n</CompleteMultipartUploadResult>\n",
        xml_escape(host),
        xml_escape(&call.target.bucket),
        xml_escape(&url_encode(&call.target.key)),
        xml_escape(&call.target.bucket),
        xml_escape(&call.shown(&call.target.key)),
        xml_escape(&format!("\"{etag}\"")),
    );
    let mut response = xml_answer(xml, call.cut);
    let headers = response.headers_mut();
    headers.insert("x-oss-hash-crc64ecma", crc64.into());
    headers.insert("etag", super::reply::header_value(&format!("\"{etag}\"")));
    Ok(response)
}

fn abort(call: &Call<'_>) -> OpResult {
    let mut state = call.shared.lock();
    upload_of(&mut state.uploads, call)?;
    state.uploads.remove(call.param("uploadId").unwrap_or(""));
    Ok(empty_answer(StatusCode::NO_CONTENT)
        .body(SimBody::empty(call.cut))
        .expect("valid headers"))
}

fn list_parts(call: &Call<'_>) -> OpResult {
    let invalid = |name: &str| {
        OssError::invalid_argument(format!("{name} is not a valid number."), "0042-00000102")
            .with("ArgumentName", name)
    };
    let max_parts = match call.param("max-parts") {
        None | Some("") => 1000,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| invalid("max-parts"))?
            .min(1000),
    };
    let marker = match call.param("part-number-marker") {
        None | Some("") => 0,
        Some(text) => text
            .parse::<u32>()
            .map_err(|_| invalid("part-number-marker"))?,
    };
    let upload = upload_of(&mut call.shared.lock().uploads, call)?.clone();
    let after: Vec<(&u32, &Part)> = upload.parts.range(marker + 1..).collect();
    let listed = &after[..after.len().min(max_parts)];
    let truncated = after.len() > listed.len();
    let next_marker = listed.last().map_or(marker, |(n, _)| **n);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListPartsResult>\n  <Bucket>{}</Bucket>\n  \
         <Key>{}</Key>\n  <UploadId>{}</UploadId>\n  <PartNumberMarker>{marker}</PartNumberMarker>\n  \
         <NextPartNumberMarker>{next_marker}</NextPartNumberMarker>\n  <MaxParts>{max_parts}</MaxParts>\n  \
         <IsTruncated>{truncated}</IsTruncated>\n",
        xml_escape(&upload.bucket),
        xml_escape(&call.shown(&upload.key)),
        xml_escape(call.param("uploadId").unwrap_or("")),
    );
    for (number, part) in listed {
        xml.push_str(&format!(
            "  <Part>\n    <PartNumber>{number}</PartNumber>\n    <LastModified>{}</LastModified>\n    \
             <ETag>&quot;{}&quot;</ETag>\n    <HashCrc64ecma>{}</HashCrc64ecma>\n    <Size>{}</Size>\n  </Part>\n",
            iso8601(part.last_modified),
            part.etag(),
            part.crc64,
            part.data.len(),
        ));
    }
    xml.push_str("</ListPartsResult>\n");
    Ok(xml_answer(xml, call.cut))
}

fn get_object(call: &Call<'_>, head: bool) -> OpResult {
    let object = call.shared.lock().objects.get(&call.object_id()).cloned();
    let object = object.ok_or_else(|| OssError::no_such_key(&call.target.key))?;
    object_response(&object, head, &call.parts.headers, None, call.cut).map_err(io_failure)
}

fn delete_object(call: &Call<'_>) -> OpResult {
    call.shared.lock().objects.remove(&call.object_id());
    Ok(empty_answer(StatusCode::NO_CONTENT)
        .body(SimBody::empty(call.cut))
        .expect("valid headers"))
}

fn bucket_info(call: &Call<'_>) -> OpResult {
    let bucket = xml_escape(&call.target.bucket);
    let region = xml_escape(&call.shared.config.region);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BucketInfo>\n  <Bucket>\n    \
         <AccessMonitor>Disabled</AccessMonitor>\n    <CreationDate>2026-01-01T00:00:00.000Z</CreationDate>\n    \
         <ExtranetEndpoint>oss-{region}.aliyuncs.com</ExtranetEndpoint>\n    \
         <IntranetEndpoint>oss-{region}-internal.aliyuncs.com</IntranetEndpoint>\n    \
         <Location>oss-{region}</Location>\n    <StorageClass>Standard</StorageClass>\n    \
         <DataRedundancyType>LRS</DataRedundancyType>\n    <Name>{bucket}</Name>\n    \
         <Owner>\n      <DisplayName>1234567890123456</DisplayName>\n      <ID>1234567890123456</ID>\n    </Owner>\n    \
         <AccessControlList>\n      <Grant>private</Grant>\n    </AccessControlList>\n  </Bucket>\n</BucketInfo>\n"
    );
    Ok(xml_answer(xml, call.cut))
}

fn list_objects(call: &Call<'_>) -> OpResult {
    let prefix = call.param("prefix").unwrap_or("");
    let marker = call.param("marker").unwrap_or("");
    let delimiter = call.param("delimiter").unwrap_or("");
    let max_keys = match call.param("max-keys") {
        None | Some("") => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                OssError::invalid_argument("max-keys is not valid.", "0015-00000101")
                    .with("ArgumentName", "max-keys")
            })?,
    };
    let entries: Vec<(String, StoredObject)> = {
        let state = call.shared.lock();
        let mut entries: Vec<(String, StoredObject)> = state
            .objects
            .iter()
            .filter(|((bucket, key), _)| {
                *bucket == call.target.bucket && key.starts_with(prefix) && key.as_str() > marker
            })
            .map(|((_, key), object)| (key.clone(), object.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    };
    let mut contents = Vec::new();
    let mut prefixes: VecDeque<String> = VecDeque::new();
    let mut truncated = false;
    let mut next_marker = String::new();
    for (key, object) in entries {
        let common = (!delimiter.is_empty())
            .then(|| {
                key[prefix.len()..]
                    .find(delimiter)
                    .map(|at| key[..prefix.len() + at + delimiter.len()].to_owned())
            })
            .flatten();
        if let Some(common) = &common
            && prefixes.back() == Some(common)
        {
            continue;
        }
        if contents.len() + prefixes.len() == max_keys {
            truncated = true;
            break;
        }
        match common {
            Some(common) => {
                next_marker = common.clone();
                prefixes.push_back(common);
            }
            None => {
                next_marker = key.clone();
                contents.push((key, object));
            }
        }
    }
    let shown = |text: &str| xml_escape(&call.shown(text));
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>\n  <Name>{}</Name>\n  \
         <Prefix>{}</Prefix>\n  <Marker>{}</Marker>\n  <MaxKeys>{max_keys}</MaxKeys>\n  \
         <Delimiter>{}</Delimiter>\n",
        xml_escape(&call.target.bucket),
        shown(prefix),
        shown(marker),
        shown(delimiter),
    );
    if call.url_encoded() {
        xml.push_str("  <EncodingType>url</EncodingType>\n");
    }
    xml.push_str(&format!("  <IsTruncated>{truncated}</IsTruncated>\n"));
    if truncated {
        xml.push_str(&format!(
            "  <NextMarker>{}</NextMarker>\n",
            shown(&next_marker)
        ));
    }
    for (key, object) in &contents {
        xml.push_str(&format!(
            "  <Contents>\n    <Key>{}</Key>\n    <LastModified>{}</LastModified>\n    \
             <ETag>&quot;{}&quot;</ETag>\n    <Type>{}</Type>\n    <Size>{}</Size>\n    \
             <StorageClass>Standard</StorageClass>\n  </Contents>\n",
            shown(key),
            iso8601(object.last_modified),
            object.etag,
            object.object_type.as_str(),
            object.len(),
        ));
    }
    for common in &prefixes {
        xml.push_str(&format!(
            "  <CommonPrefixes>\n    <Prefix>{}</Prefix>\n  </CommonPrefixes>\n",
            shown(common)
        ));
    }
    xml.push_str("</ListBucketResult>\n");
    Ok(xml_answer(xml, call.cut))
}

/// URL-encodes a key for `encoding-type=url` listings: every byte but `A-Z a-z 0-9 - _ . ~ /`.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
