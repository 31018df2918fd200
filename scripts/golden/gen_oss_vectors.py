#!/usr/bin/env python3
"""Golden OSS requests produced by the official Python SDK (oss2), for dmstrack's signer tests
and the OSS simulator's replay tests.

Run from the repository root:  python3 scripts/golden/gen_oss_vectors.py
It creates its own venv under target/golden-oss-venv with pinned oss2 (PyPI), freezes oss2's
clock, mounts a capturing requests adapter on oss2's HTTP session (nothing leaves the
process: every request is answered by a canned response) and writes one JSON file per
captured request to tests/fixtures/golden/oss/, plus crc64_combine.json.

Request fixture shape (tests/fixtures/golden/oss/<name>.json):

    {
      "name": "<file stem>",
      "generator": "oss2==2.19.1",
      "operation": "PutObject" | "InitiateMultipartUpload" | "UploadPart" |
                   "CompleteMultipartUpload" | "AbortMultipartUpload" | "ListParts" |
                   "HeadObject" | "GetObject" | "GetBucketInfo" | "ListObjects",
      "inputs": {
        "auth": "v1" | "v4",
        "access_key_id": str, "access_key_secret": str,
        "security_token": str | null,            # STS credentials when set
        "region": "cn-hangzhou",                 # used by V4 only
        "bucket": str,
        "key": str | null,                       # decoded object key; null for bucket-level
        "endpoint": "http://127.0.0.1:9000" | "http://oss-cn-hangzhou.aliyuncs.com",
        "addressing": "path" | "virtual",        # oss2 _determine_endpoint_type outcome
        "time": "2026-11-27T12:00:00Z",          # the frozen clock
        "params": [[name, value], ...],          # decoded query parameters given to the signer
                                                 # (sub-resources like `uploads` have "")
        "upload_id": str | null,                 # multipart operations
        "parts": [{"part_number", "size", "etag", "crc64"}] | null
                                                 # CompleteMultipartUpload: the parts it names;
                                                 # part bytes = part_body(part_number, size)
        "additional_headers": [names] | null     # V4 AdditionalHeaders asked of the signer
      },
      "request": {                               # what went on the wire
        "method": str,
        "url": str,                              # full URL as sent
        "host": str,                             # the Host header urllib3 adds
        "path": str,                             # raw, percent-encoded
        "query": str,                            # raw query string ("" if none)
        "headers": [[name, value], ...],         # as sent by requests, in order, Host excluded
        "body_base64": str,                      # exact body bytes ("" when none)
        "body_text": str | null                  # the same body when it is UTF-8 text
      },
      "signing": {                               # oss2's own debug output for this request
        "canonical_request": str | null,         # V4 only
        "string_to_sign": str
      }
    }

part_body(n, size) is bytes((i * 7 + n) % 256 for i in range(size)); every multipart fixture
with a body uses it, so a replay can recreate parts without storing 100 KB in JSON.

crc64_combine.json: {"generator", "cases": [{"data_len", "seed", "split", "crc1", "crc2",
"len2", "combined", "whole"}]} where data = part_body(seed, data_len), crc1/crc2 are
CRC-64/XZ of data[:split] / data[split:], combined = oss2's Crc64.combine(crc1, crc2, len2).
"""

import base64
import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

OSS2_VERSION = "2.19.1"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "golden-oss-venv"
OUT = ROOT / "tests" / "fixtures" / "golden" / "oss"


def ensure_venv():
    """Re-executes this script inside the pinned venv (creating it when missing)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    subprocess.check_call(
        [str(python), "-m", "pip", "install", "-q", f"oss2=={OSS2_VERSION}"]
    )
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


ensure_venv()

import oss2  # noqa: E402
import oss2.auth  # noqa: E402
import oss2.http  # noqa: E402
import oss2.utils  # noqa: E402
import requests  # noqa: E402
import requests.adapters  # noqa: E402
from requests.structures import CaseInsensitiveDict  # noqa: E402

assert oss2.__version__ == OSS2_VERSION, oss2.__version__

FROZEN = dt.datetime(2026, 11, 27, 12, 0, 0)
FROZEN_ISO = "2026-11-27T12:00:00Z"


class FrozenDatetime(dt.datetime):
    @classmethod
    def utcnow(cls):
        return FROZEN


oss2.auth.datetime = FrozenDatetime
oss2.utils.http_date = lambda *a, **k: "Fri, 27 Nov 2026 12:00:00 GMT"
# The real User-Agent names the machine's OS release; pin it so reruns give the same bytes.
oss2.http.USER_AGENT = f"aliyun-sdk-python/{OSS2_VERSION}(Linux/golden/x86_64;3.11)"

BUCKET = "dmstrack-archive"
REGION = "cn-hangzhou"
PREFIX = "dms-archive/11223344/e23dd7ec-a19f-4a69-8eb3-8ffd26e6abcd/"
LONG_TERM = ("LTAI5tExampleKeyId0001", "ExampleSecret0001DoNotUse", None)
STS = ("STS.NExampleTempKeyId02", "ExampleTempSecret0002", "CAISExampleSecurityToken+/=0002")
PLAIN_KEY = PREFIX + "x_REDO_31201_207.zip"
# Space, '+', '~', '*', '=' and Chinese in one key, plus a sub-folder.
ODD_KEY = PREFIX + "files/x REDO+31201~a*b=c 归档.zip"
UPLOAD_ID = "0004B9894A22E5B1888A1E29F8236E2D"
ENDPOINTS = {
    "path": "http://127.0.0.1:9000",
    "virtual": "http://oss-cn-hangzhou.aliyuncs.com",
}


def part_body(n, size):
    return bytes((i * 7 + n) % 256 for i in range(size))


def crc64(data):
    c = oss2.utils.Crc64()
    c.update(data)
    return c.crc


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def etag_of(data):
    return hashlib.md5(data).hexdigest().upper()


class SigningLog(logging.Handler):
    """Collects oss2's 'Make signature' debug lines for the request being built."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Make signature:"):
            self.lines.append(message)

    def take(self, label):
        value = None
        for line in self.lines:
            head = f"Make signature: {label} = "
            if line.startswith(head):
                value = line[len(head):]
        if value is not None and value[:2] in ("b'", 'b"'):
            import ast

            value = ast.literal_eval(value).decode("utf-8")
        return value


SIGNING_LOG = SigningLog()
logging.getLogger("oss2.auth").addHandler(SIGNING_LOG)
logging.getLogger("oss2.auth").setLevel(logging.DEBUG)
# oss2 logs its complaints about the canned answers; they are expected and not shown.
logging.getLogger("oss2").propagate = False
logging.getLogger("oss2").addHandler(logging.NullHandler())


class CaptureAdapter(requests.adapters.BaseAdapter):
    """Records each prepared request and answers it with a canned OSS-like response."""

    def __init__(self):
        super().__init__()
        self.captured = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body
        if body is None:
            raw = b""
        elif isinstance(body, (bytes, bytearray)):
            raw = bytes(body)
        elif isinstance(body, str):
            raw = body.encode("utf-8")
        elif hasattr(body, "read"):
            raw = body.read()
        else:
            raw = b"".join(body)
        self.captured.append((request, raw))
        response = requests.Response()
        response.status_code = 200
        response.headers = CaseInsensitiveDict(
            {
                "x-oss-request-id": "5C3D9175B6FC201293AD4890",
                "content-length": "0",
                "etag": f'"{etag_of(raw)}"',
                "x-oss-hash-crc64ecma": str(crc64(raw)),
            }
        )
        response.raw = io.BytesIO(b"")
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


def request_record(prepared, raw):
    from urllib.parse import urlsplit

    parts = urlsplit(prepared.url)
    headers = [[k, v] for k, v in prepared.headers.items()]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "method": prepared.method,
        "url": prepared.url,
        "host": parts.netloc,
        "path": parts.path,
        "query": parts.query,
        "headers": headers,
        "body_base64": base64.b64encode(raw).decode(),
        "body_text": text,
    }


def make_auth(version, creds):
    ak, secret, token = creds
    if version == "v1":
        return oss2.StsAuth(ak, secret, token) if token else oss2.Auth(ak, secret)
    if token:
        return oss2.StsAuth(ak, secret, token, auth_version=oss2.AUTH_VERSION_4)
    return oss2.AuthV4(ak, secret)


FIXTURES = []


def capture(name, operation, version, creds, addressing, key, call, *, params=(),
            upload_id=None, parts=None, additional_headers=None):
    adapter = CaptureAdapter()
    session = oss2.Session(adapter=adapter)
    bucket = oss2.Bucket(
        make_auth(version, creds), ENDPOINTS[addressing], BUCKET,
        session=session, region=REGION,
    )
    SIGNING_LOG.lines.clear()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # oss2 prints some errors
            call(bucket)
    except Exception:  # noqa: BLE001
        # The canned answers are not full OSS documents (oss2 fails to parse them, or finds
        # their CRC wrong); only the request, captured before, matters here.
        pass
    assert len(adapter.captured) == 1, (name, len(adapter.captured))
    prepared, raw = adapter.captured[0]
    ak, secret, token = creds
    fixture = {
        "name": name,
        "generator": f"oss2=={OSS2_VERSION}",
        "operation": operation,
        "inputs": {
            "auth": version,
            "access_key_id": ak,
            "access_key_secret": secret,
            "security_token": token,
            "region": REGION,
            "bucket": BUCKET,
            "key": key,
            "endpoint": ENDPOINTS[addressing],
            "addressing": addressing,
            "time": FROZEN_ISO,
            "params": [list(p) for p in params],
            "upload_id": upload_id,
            "parts": parts,
            "additional_headers": additional_headers,
        },
        "request": request_record(prepared, raw),
        "signing": {
            "canonical_request": SIGNING_LOG.take("canonical_request"),
            "string_to_sign": SIGNING_LOG.take("string to be signed"),
        },
    }
    FIXTURES.append(fixture)


def complete_parts():
    sizes = [(1, 102400), (2, 102400), (3, 1234)]
    parts = []
    for n, size in sizes:
        data = part_body(n, size)
        parts.append({"part_number": n, "size": size, "etag": etag_of(data), "crc64": crc64(data)})
    return parts


def generate():
    hello = b"hello dmstrack\n"
    manifest = b"{}\n"
    small_part = part_body(1, 2048)
    for addressing in ("path", "virtual"):
        sfx = f"__{addressing}"
        # PutObject, V4, long-term and STS, both keys.
        for version, creds, cname in (("v4", LONG_TERM, "v4"), ("v4", STS, "v4_sts"),
                                      ("v1", LONG_TERM, "v1"), ("v1", STS, "v1_sts")):
            for kname, key in (("plain", PLAIN_KEY), ("odd", ODD_KEY)):
                capture(
                    f"put_object_{cname}_{kname}{sfx}", "PutObject", version, creds, addressing, key,
                    lambda b, key=key: b.put_object(
                        key, hello, headers={"Content-Type": "application/zip", "Content-MD5": md5_b64(hello)}
                    ),
                )
        capture(
            f"put_object_v4_sts_manifest{sfx}", "PutObject", "v4", STS, addressing, PREFIX + "manifest.json",
            lambda b: b.put_object(
                PREFIX + "manifest.json", manifest,
                headers={"Content-Type": "application/json", "Content-MD5": md5_b64(manifest)},
            ),
        )
        for cname, creds in (("v4", LONG_TERM), ("v4_sts", STS)):
            capture(
                f"initiate_multipart_upload_{cname}{sfx}", "InitiateMultipartUpload", "v4", creds, addressing,
                ODD_KEY, lambda b: b.init_multipart_upload(ODD_KEY, headers={"Content-Type": "application/zip"}),
                params=[("uploads", "")],
            )
            capture(
                f"upload_part_{cname}{sfx}", "UploadPart", "v4", creds, addressing, ODD_KEY,
                lambda b: b.upload_part(ODD_KEY, UPLOAD_ID, 1, small_part,
                                        headers={"Content-MD5": md5_b64(small_part)}),
                params=[("uploadId", UPLOAD_ID), ("partNumber", "1")], upload_id=UPLOAD_ID,
                parts=[{"part_number": 1, "size": len(small_part), "etag": etag_of(small_part),
                        "crc64": crc64(small_part)}],
            )
            parts = complete_parts()
            capture(
                f"complete_multipart_upload_{cname}{sfx}", "CompleteMultipartUpload", "v4", creds, addressing,
                ODD_KEY,
                lambda b, parts=parts: b.complete_multipart_upload(
                    ODD_KEY, UPLOAD_ID,
                    [oss2.models.PartInfo(p["part_number"], p["etag"], size=p["size"], part_crc=p["crc64"])
                     for p in parts],
                ),
                params=[("uploadId", UPLOAD_ID)], upload_id=UPLOAD_ID, parts=parts,
            )
            capture(
                f"abort_multipart_upload_{cname}{sfx}", "AbortMultipartUpload", "v4", creds, addressing, ODD_KEY,
                lambda b: b.abort_multipart_upload(ODD_KEY, UPLOAD_ID),
                params=[("uploadId", UPLOAD_ID)], upload_id=UPLOAD_ID,
            )
            capture(
                f"list_parts_{cname}{sfx}", "ListParts", "v4", creds, addressing, ODD_KEY,
                lambda b: b.list_parts(ODD_KEY, UPLOAD_ID, marker="1", max_parts=2),
                params=[("uploadId", UPLOAD_ID), ("part-number-marker", "1"), ("max-parts", "2")],
                upload_id=UPLOAD_ID,
            )
            capture(
                f"list_parts_first_page_{cname}{sfx}", "ListParts", "v4", creds, addressing, ODD_KEY,
                lambda b: b.list_parts(ODD_KEY, UPLOAD_ID),
                params=[("uploadId", UPLOAD_ID), ("part-number-marker", ""), ("max-parts", "1000")],
                upload_id=UPLOAD_ID,
            )
            for kname, key in (("plain", PLAIN_KEY), ("odd", ODD_KEY)):
                capture(
                    f"head_object_{cname}_{kname}{sfx}", "HeadObject", "v4", creds, addressing, key,
                    lambda b, key=key: b.head_object(key),
                )
            capture(
                f"get_object_{cname}{sfx}", "GetObject", "v4", creds, addressing, ODD_KEY,
                lambda b: b.get_object(ODD_KEY).read(),
            )
            capture(
                f"get_bucket_info_{cname}{sfx}", "GetBucketInfo", "v4", creds, addressing, None,
                lambda b: b.get_bucket_info(), params=[("bucketInfo", "")],
            )
            capture(
                f"list_objects_{cname}{sfx}", "ListObjects", "v4", creds, addressing, None,
                lambda b: b.list_objects(prefix=PREFIX, max_keys=1),
                params=[("prefix", PREFIX), ("delimiter", ""), ("marker", ""), ("max-keys", "1"),
                        ("encoding-type", "url")],
            )
        capture(
            f"head_object_v1{sfx}", "HeadObject", "v1", LONG_TERM, addressing, ODD_KEY,
            lambda b: b.head_object(ODD_KEY),
        )
        capture(
            f"upload_part_v1{sfx}", "UploadPart", "v1", LONG_TERM, addressing, ODD_KEY,
            lambda b: b.upload_part(ODD_KEY, UPLOAD_ID, 1, small_part),
            params=[("uploadId", UPLOAD_ID), ("partNumber", "1")], upload_id=UPLOAD_ID,
            parts=[{"part_number": 1, "size": len(small_part), "etag": etag_of(small_part),
                    "crc64": crc64(small_part)}],
        )
        capture(
            f"list_parts_v1{sfx}", "ListParts", "v1", LONG_TERM, addressing, ODD_KEY,
            lambda b: b.list_parts(ODD_KEY, UPLOAD_ID, marker="1", max_parts=2),
            params=[("uploadId", UPLOAD_ID), ("part-number-marker", "1"), ("max-parts", "2")],
            upload_id=UPLOAD_ID,
        )

    # V4 with AdditionalHeaders (oss2's Bucket never asks for them; the signer does on request).
    capture_additional_headers()


def capture_additional_headers():
    adapter = CaptureAdapter()
    session = oss2.Session(adapter=adapter)
    auth = oss2.AuthV4(LONG_TERM[0], LONG_TERM[1])
    body = b"hello dmstrack\n"
    url = f"{ENDPOINTS['path']}/{BUCKET}/{oss2.compat.urlquote(PLAIN_KEY, safe='')}"
    req = oss2.http.Request(
        "PUT", url, data=body,
        headers=CaseInsensitiveDict({"Content-Type": "application/zip", "Content-MD5": md5_b64(body),
                                     "Host": "127.0.0.1:9000", "X-Custom-Trace": "abc"}),
        region=REGION, product="oss",
    )
    SIGNING_LOG.lines.clear()
    auth._sign_request(req, BUCKET, PLAIN_KEY, ["host", "X-Custom-Trace"])
    session.do_request(req, timeout=5)
    prepared, raw = adapter.captured[0]
    FIXTURES.append({
        "name": "put_object_v4_additional_headers__path",
        "generator": f"oss2=={OSS2_VERSION}",
        "operation": "PutObject",
        "inputs": {
            "auth": "v4", "access_key_id": LONG_TERM[0], "access_key_secret": LONG_TERM[1],
            "security_token": None, "region": REGION, "bucket": BUCKET, "key": PLAIN_KEY,
            "endpoint": ENDPOINTS["path"], "addressing": "path", "time": FROZEN_ISO, "params": [],
            "upload_id": None, "parts": None, "additional_headers": ["host", "x-custom-trace"],
        },
        "request": request_record(prepared, raw),
        "signing": {
            "canonical_request": SIGNING_LOG.take("canonical_request"),
            "string_to_sign": SIGNING_LOG.take("string to be signed"),
        },
    })


def crc_cases():
    import random

    rng = random.Random(20261127)
    cases = []
    for seed, data_len in ((1, 0), (2, 1), (3, 9), (4, 1000), (5, 65536), (6, 430000), (7, 1048583)):
        data = part_body(seed, data_len)
        whole = crc64(data)
        splits = sorted({0, data_len, *[rng.randint(0, data_len) for _ in range(3)]})
        for split in splits:
            a, b = data[:split], data[split:]
            c1, c2 = crc64(a), crc64(b)
            combined = oss2.utils.Crc64().combine(c1, c2, len(b))
            assert combined == whole, (seed, data_len, split)
            cases.append({"data_len": data_len, "seed": seed, "split": split, "crc1": c1, "crc2": c2,
                          "len2": len(b), "combined": combined, "whole": whole})
    c1, c2 = crc64(b"12345"), crc64(b"6789")
    cases.append({"data": "123456789", "split": 5, "crc1": c1, "crc2": c2, "len2": 4,
                  "combined": oss2.utils.Crc64().combine(c1, c2, 4), "whole": crc64(b"123456789")})
    return {"generator": f"oss2=={OSS2_VERSION}", "cases": cases}


def main():
    generate()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    names = set()
    for fixture in FIXTURES:
        assert fixture["name"] not in names, fixture["name"]
        names.add(fixture["name"])
        path = OUT / f"{fixture['name']}.json"
        path.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (OUT / "crc64_combine.json").write_text(json.dumps(crc_cases(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(FIXTURES)} request fixtures and crc64_combine.json to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
