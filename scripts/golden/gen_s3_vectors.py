#!/usr/bin/env python3
"""Golden S3 SigV4 requests from botocore, for src/job/upload/s3_sign.rs.

Run from anywhere with any python3 (3.9+):

    python3 scripts/golden/gen_s3_vectors.py

It creates target/golden-s3-venv with the pinned botocore (below), re-runs itself inside it,
and rewrites tests/fixtures/golden/s3/*.json (one file per case, plus nothing else: stale files
are removed). No request leaves the process: a `before-send` handler records the fully
prepared request and stops botocore before any network I/O. The clock is frozen at
2026-11-27T12:00:00Z. Default CRC32 checksums are off (request_checksum_calculation =
"when_required"), so requests carry only what we send ourselves (Content-MD5).

Payload hash. Each case names its `payload_signing`:
  * "unsigned": botocore config s3.payload_signing_enabled = False, so every request says
    `x-amz-content-sha256: UNSIGNED-PAYLOAD` (what dmstrack sends for bodies streamed from disk);
  * "default": botocore's own choice. Over https it is UNSIGNED-PAYLOAD for PutObject/UploadPart
    carrying Content-MD5 and the hex SHA-256 of the body for everything else; over http it is
    always the SHA-256 of the body.

Fixture shape (all strings unless said otherwise):

    {
      "name": "<file stem>",
      "generator": "botocore==<version>",
      "operation": "PutObject" | "CreateMultipartUpload" | ...,
      "params": {...},                  # the botocore call's parameters (Body as text)
      "endpoint": "http://127.0.0.1:9000" | null (botocore's default AWS endpoint),
      "addressing_style": "path" | "virtual" | "auto",
      "payload_signing": "unsigned" | "default",
      "region": "us-east-1",
      "credentials": {"access_key_id": ..., "secret_access_key": ..., "session_token": ... | null},
      "timestamp": "20261127T120000Z",
      "request": {
        "method": "PUT",
        "url": "<full URL as sent>",
        "host": "<Host header value botocore signed: host, or host:port for a non-default port>",
        "path": "<URL path as sent, already percent-encoded: the canonical URI for S3>",
        "query": [["name", "value"], ...],   # decoded, in the order sent
        "headers": [["Name", "value"], ...], # every header as sent, botocore's spelling, less
                                             # User-Agent and amz-sdk-* (unsigned bookkeeping)
        "body_base64": "<body>",             # "" when empty
        "body_sha256": "<hex>"
      },
      "signed_headers": "host;x-amz-content-sha256;x-amz-date",
      "canonical_request": "...",
      "string_to_sign": "...",
      "authorization": "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."
    }

Test credentials are made up; nothing here is a real key.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

BOTOCORE = "botocore==1.44.8"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "golden-s3-venv"
OUT = ROOT / "tests" / "fixtures" / "golden" / "s3"


def ensure_venv():
    """Re-executes this script inside the pinned venv unless already there."""
    if os.environ.get("DMSTRACK_GOLDEN_S3_VENV") == "1":
        return
    python = VENV / "bin" / "python"
    marker = VENV / ".dmstrack-installed"
    if not marker.exists() or marker.read_text() != BOTOCORE:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", BOTOCORE],
            check=True,
        )
        marker.write_text(BOTOCORE)
    env = dict(os.environ, DMSTRACK_GOLDEN_S3_VENV="1")
    os.execve(str(python), [str(python), __file__, *sys.argv[1:]], env)


ensure_venv()

import datetime  # noqa: E402

import botocore  # noqa: E402
import botocore.auth  # noqa: E402
import botocore.session  # noqa: E402
from botocore.awsrequest import AWSResponse  # noqa: E402,F401
from botocore.config import Config  # noqa: E402

FROZEN = datetime.datetime(2026, 11, 27, 12, 0, 0)
botocore.auth.get_current_datetime = lambda *a, **k: FROZEN

LONG_TERM = {
    "access_key_id": "AKIAEXAMPLEDMSTRACK01",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYExampleKey01",
    "session_token": None,
}
SESSION = {
    "access_key_id": "ASIAEXAMPLEDMSTRACK02",
    "secret_access_key": "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbExampleKey02",
    "session_token": "IQoJb3JpZ2luX2VjEXAMPLE+session/token==0002",
}

# What the signer records while botocore signs; read by the before-send handler.
_last = {}
_orig_canonical = botocore.auth.SigV4Auth.canonical_request
_orig_sts = botocore.auth.SigV4Auth.string_to_sign


def _record_canonical(self, request):
    value = _orig_canonical(self, request)
    _last["canonical_request"] = value
    _last["host"] = self.headers_to_sign(request)["host"]
    return value


def _record_sts(self, request, canonical_request):
    value = _orig_sts(self, request, canonical_request)
    _last["string_to_sign"] = value
    return value


botocore.auth.SigV4Auth.canonical_request = _record_canonical
botocore.auth.SigV4Auth.string_to_sign = _record_sts


# Unsigned headers botocore adds for itself (random ids, its version and the host's OS):
# left out of the fixtures so that regenerating them gives the same files.
BOOKKEEPING_HEADERS = {"user-agent", "amz-sdk-invocation-id", "amz-sdk-request"}


class Captured(Exception):
    """Raised from before-send so botocore stops before the network."""

    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def _capture(request, **_):
    raise Captured(request)


def _body_bytes(body):
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    position = body.tell()
    data = body.read()
    body.seek(position)
    return data


def client(endpoint, addressing_style, payload_signing, credentials, region="us-east-1"):
    session = botocore.session.get_session()
    s3_config = {"addressing_style": addressing_style}
    if payload_signing == "unsigned":
        s3_config["payload_signing_enabled"] = False
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3=s3_config,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 1, "mode": "standard"},
    )
    c = session.create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        aws_session_token=credentials["session_token"],
        config=config,
    )
    c.meta.events.register("before-send.s3", _capture)
    return c


def capture(name, operation, params, *, endpoint, addressing_style, payload_signing, credentials,
            region="us-east-1"):
    c = client(endpoint, addressing_style, payload_signing, credentials, region)
    method = getattr(c, botocore.xform_name(operation))
    _last.clear()
    try:
        method(**params)
    except Captured as captured:
        request = captured.request
    else:
        raise RuntimeError(f"{name}: botocore sent no request")
    body = _body_bytes(request.body)
    split = urlsplit(request.url)
    headers = [
        [k, v.decode() if isinstance(v, bytes) else v]
        for k, v in request.headers.items()
        if k.lower() not in BOOKKEEPING_HEADERS
    ]
    authorization = dict((k.lower(), v) for k, v in headers)["authorization"]
    signed_headers = authorization.split("SignedHeaders=")[1].split(",")[0]
    shown_params = dict(params)
    if isinstance(shown_params.get("Body"), bytes):
        shown_params["Body"] = shown_params["Body"].decode()
    return {
        "name": name,
        "generator": f"botocore=={botocore.__version__}",
        "operation": operation,
        "params": shown_params,
        "endpoint": endpoint,
        "addressing_style": addressing_style,
        "payload_signing": payload_signing,
        "region": region,
        "credentials": credentials,
        "timestamp": FROZEN.strftime("%Y%m%dT%H%M%SZ"),
        "request": {
            "method": request.method,
            "url": request.url,
            "host": _last["host"],
            "path": split.path,
            "query": [list(p) for p in parse_qsl(split.query, keep_blank_values=True)],
            "headers": headers,
            "body_base64": base64.b64encode(body).decode(),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        },
        "signed_headers": signed_headers,
        "canonical_request": _last["canonical_request"],
        "string_to_sign": _last["string_to_sign"],
        "authorization": authorization,
    }


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


BUCKET = "dmstrack-archive"
PREFIX = "dms-archive/11223344/e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd/"
ZIP_KEY = PREFIX + "x_REDO_31201_207.zip"
UPLOAD_ID = "VXBsb2FkIElEIGZvciBkbXN0cmFjaydzIHRlc3Q.example~upload+id/="
ZIP_BODY = b"hello dmstrack\n"
PART_BODY = b"part two of the archive\n"
COMPLETE_XML_PARTS = {
    "Parts": [
        {"PartNumber": 1, "ETag": '"5d41402abc4b2a76b9719d911017c592"'},
        {"PartNumber": 2, "ETag": '"7d793037a0760186574b0282f2f435e7"'},
    ]
}

# Keys whose encoding matters: space, '+', '~', '*', '=', Chinese, and the other reserved
# characters; one with '//', '.' and '..' segments shows that S3 does not normalise paths.
ODD_KEYS = {
    "space": PREFIX + "with space.zip",
    "plus": PREFIX + "a+b.zip",
    "tilde": PREFIX + "~tilde~.zip",
    "star": PREFIX + "star*.zip",
    "equals": PREFIX + "k=v.zip",
    "chinese": PREFIX + "订单/数据 跟踪.zip",
    "reserved": PREFIX + "!'()@:&$,;%#?[]^`{}|\"<>\\.zip",
    "dot_segments": PREFIX + "a//b/./c/../d.zip",
}

PATH_STYLE = {"endpoint": "http://127.0.0.1:9000", "addressing_style": "auto"}
MINIO_HOST = {"endpoint": "https://minio.example.internal:9000", "addressing_style": "path"}
AWS_VIRTUAL = {"endpoint": "https://s3.us-east-1.amazonaws.com", "addressing_style": "virtual"}


def operations(key):
    """Every call the uploader makes, on `key`."""
    return [
        ("put_object", "PutObject", {
            "Bucket": BUCKET, "Key": key, "Body": ZIP_BODY,
            "ContentMD5": md5_b64(ZIP_BODY), "ContentType": "application/zip",
        }),
        ("create_multipart", "CreateMultipartUpload", {
            "Bucket": BUCKET, "Key": key, "ContentType": "application/zip",
        }),
        ("upload_part", "UploadPart", {
            "Bucket": BUCKET, "Key": key, "PartNumber": 2, "UploadId": UPLOAD_ID,
            "Body": PART_BODY, "ContentMD5": md5_b64(PART_BODY),
        }),
        ("complete_multipart", "CompleteMultipartUpload", {
            "Bucket": BUCKET, "Key": key, "UploadId": UPLOAD_ID,
            "MultipartUpload": COMPLETE_XML_PARTS,
        }),
        ("abort_multipart", "AbortMultipartUpload", {
            "Bucket": BUCKET, "Key": key, "UploadId": UPLOAD_ID,
        }),
        ("list_parts", "ListParts", {
            "Bucket": BUCKET, "Key": key, "UploadId": UPLOAD_ID,
        }),
        ("list_parts_page", "ListParts", {
            "Bucket": BUCKET, "Key": key, "UploadId": UPLOAD_ID,
            "MaxParts": 2, "PartNumberMarker": 2,
        }),
        ("head_object", "HeadObject", {"Bucket": BUCKET, "Key": key}),
    ]


BUCKET_OPERATIONS = [
    ("head_bucket", "HeadBucket", {"Bucket": BUCKET}),
    ("list_objects_v2", "ListObjectsV2", {"Bucket": BUCKET, "Prefix": "dms-archive/", "MaxKeys": 1}),
]


def cases():
    # Every operation: UNSIGNED-PAYLOAD with and without a session token, and botocore's
    # default payload hashing (long-term key), path style on an IP and virtual-hosted on AWS.
    matrix = [("unsigned", "longterm", LONG_TERM), ("unsigned", "session", SESSION),
              ("default", "longterm", LONG_TERM)]
    for site_name, site in [("path", PATH_STYLE), ("virtual", AWS_VIRTUAL)]:
        for payload, cred_name, creds in matrix:
            for op_name, op, params in operations(ZIP_KEY) + BUCKET_OPERATIONS:
                name = f"{site_name}_{payload}_{cred_name}_{op_name}"
                yield name, op, params, dict(site, payload_signing=payload, credentials=creds)
    # Key encoding: PutObject in both styles, UploadPart (key plus query) in path style.
    for site_name, site in [("path", PATH_STYLE), ("virtual", AWS_VIRTUAL)]:
        for key_name, key in ODD_KEYS.items():
            for op_name, op, params in operations(key):
                if op_name == "put_object" or (op_name == "upload_part" and site_name == "path"):
                    name = f"{site_name}_key_{key_name}_{op_name}"
                    yield name, op, params, dict(
                        site, payload_signing="unsigned", credentials=LONG_TERM)
    # A named host with explicit path style (MinIO or Ceph without a virtual-host domain).
    for op_name, op, params in operations(ZIP_KEY)[:1] + BUCKET_OPERATIONS:
        yield f"minio_path_{op_name}", op, params, dict(
            MINIO_HOST, payload_signing="unsigned", credentials=SESSION)
    # AWS default endpoint (no endpoint_url) in another region, and a bucket name with dots,
    # which botocore moves back to path style over https.
    yield "aws_default_eu_west_1_put_object", "PutObject", operations(ZIP_KEY)[0][2], dict(
        endpoint=None, addressing_style="auto", payload_signing="unsigned",
        credentials=LONG_TERM, region="eu-west-1")
    dotted = dict(operations(ZIP_KEY)[0][2], Bucket="dmstrack.archive.example")
    yield "aws_dotted_bucket_put_object", "PutObject", dotted, dict(
        AWS_VIRTUAL, addressing_style="auto", payload_signing="unsigned", credentials=LONG_TERM)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*.json"):
        stale.unlink()
    count = 0
    for name, op, params, options in cases():
        fixture = capture(name, op, params, **options)
        (OUT / f"{name}.json").write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n")
        count += 1
    print(f"wrote {count} fixtures to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
