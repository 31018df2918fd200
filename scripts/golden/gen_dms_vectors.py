#!/usr/bin/env python3
"""Golden requests for dmstrack's Alibaba Cloud RPC signing, made by the OFFICIAL Python SDKs.

Regenerate (from the repository root; needs PyPI, nothing else):

    python3 scripts/golden/gen_dms_vectors.py

The script creates (or reuses) a venv in target/golden-venv-dms, pip-installs the pinned
versions below into it, re-runs itself there and writes tests/fixtures/golden/dms/*.json.
Nothing reaches the network: every SDK sends through `requests`' HTTPAdapter (or the copy
vendored in aliyunsdkcore), whose `send` is replaced by a recorder that answers a canned
success; sockets are disabled outright. Time, nonces and the user-agent's platform parts are
frozen by monkeypatching the SDKs' own clock / nonce helpers, so the output is byte-stable.

Pinned SDKs (generated with Python 3.11.7; another Python may change the old SDK's bytes):
    alibabacloud-dms-enterprise20181101==3.0.0  V3 ACS3-HMAC-SHA256 (default) and, with
        Config(signature_algorithm='v2'), V1 HMAC-SHA1; via alibabacloud-tea-openapi==0.4.6,
        darabonba-core==1.0.9
    aliyun-python-sdk-core==2.16.1 + aliyun-python-sdk-dms-enterprise==1.53.12
                                                the old V1 RPC client
    alibabacloud-credentials==1.0.12            STS AssumeRole (V1, GET, query) and
                                                AssumeRoleWithOIDC (unsigned, GET, query):
                                                the provider dmstrack's src/credentials/sts.rs follows
    alibabacloud-sts20150401==1.2.0             STS AssumeRole as a V1 POST (tea-openapi 'v2')
                                                and AssumeRoleWithOIDC as an anonymous POST

Output: tests/fixtures/golden/dms/dms.json and sts.json, each
    {"generator": str, "packages": {name: version}, "cases": [case, ...]}
with every case:
    name         unique id, e.g. "dms_v3_query_status_sts"
    sdk          "name==version" of the package that made the request
    service      "dms" | "sts"
    signature    "v3" | "v1" | "none"
    inputs       what the caller asked for, before any encoding:
                 action, version, host, timestamp ("yyyy-MM-ddTHH:mm:ssZ"), nonce,
                 access_key_id, access_key_secret, security_token (null without STS),
                 dms: order_id, tid, download_key_id | export {rollback_sql_type,
                      filter_start_time, filter_end_time, filter_tables, filter_types,
                      column_filter (object as the API names it), event_ids}
                 sts: role_arn, role_session_name, duration_seconds, policy, external_id,
                      oidc_provider_arn, oidc_token
    same_business_params
                 true when the SDK encodes the action's parameters (JSON lists and
                 objects) exactly as dmstrack does, so dmstrack's builders must reproduce
                 them; false for the old SDK (json.dumps with ", " and \\u escapes)
    sent         the HTTP request exactly as the SDK handed it to the transport:
                 method, host (of the URL; the SDKs that set no Host header leave it to
                 the transport), path, query (raw, as in the URL), headers [[name, value],
                 ...] in the SDK's order, body (UTF-8 text, "" when empty)
    sdk_signing  what the SDK computed on the way (captured from its own functions):
                 v3: canonical_request, string_to_sign, signature, authorization
                 v1: string_to_sign, signature
    dmstrack     (only where dmstrack sends this request shape) the SDK's own signing
                 functions applied to the request dmstrack builds from the same inputs:
                 method, params [[name, value]] (business + common, unencoded),
                 headers [[name, value]] (v3: the signed headers, host included),
                 query (the query string dmstrack puts on the wire), body,
                 and the SDK's canonical_request / string_to_sign / signature / authorization.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "golden-venv-dms"
OUT = ROOT / "tests" / "fixtures" / "golden" / "dms"

PINS = {
    "alibabacloud-dms-enterprise20181101": "3.0.0",
    "alibabacloud-tea-openapi": "0.4.6",
    "darabonba-core": "1.0.9",
    "alibabacloud-credentials": "1.0.12",
    "alibabacloud-sts20150401": "1.2.0",
    "aliyun-python-sdk-core": "2.16.1",
    "aliyun-python-sdk-dms-enterprise": "1.53.12",
}


def ensure_venv() -> None:
    """Re-runs this script inside the pinned venv (created or topped up as needed)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = [f"{name}=={version}" for name, version in PINS.items()]
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True
    ).stdout.lower().replace("_", "-")
    if any(pin.lower() not in frozen for pin in wanted):
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


# ---------------------------------------------------------------------------------------
# Fixed inputs (obviously fake credentials)
# ---------------------------------------------------------------------------------------

AK_ID = "LTAI5tGoldenKeyId0001"
AK_SECRET = "GoldenSecret0001DoNotUse"
STS_ID = "STS.GoldenStsKeyId0002"
STS_SECRET = "GoldenStsSecret0002DoNotUse"
# Real tokens are base64-like: `+`, `/` and `=` must survive both encodings.
STS_TOKEN = "CAIS+Golden/Token0002==DoNotUse"
DMS_HOST = "dms-enterprise.aliyuncs.com"
STS_HOST = "sts.aliyuncs.com"
TIMESTAMP = "2024-05-06T07:08:09Z"
# Every reserved character dmstrack must encode, plus Chinese: `*` `~` space `+` `/` `=`.
AWKWARD_KEY = "dk-2024/订单 a+b*c~d=e"
EXPORT = {
    "rollback_sql_type": "REVERSE",
    "filter_start_time": "2023-04-23 00:00:00",
    "filter_end_time": "2023-04-23 23:59:59",
    "filter_tables": ["订单 a+b*c~d", "clients/x=y"],
    "filter_types": ["UPDATE", "DELETE"],
    "column_filter": {
        "ColumnName": "account name",
        "InList": ["1 2", "a+b", "c*~d/é=订"],
        "Operator": "IN",
    },
    "event_ids": [1, 22, 333],
}
ROLE_ARN = "acs:ram::1234567890123456:role/golden-dms-reader"
OIDC_PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-golden"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnb2xkZW4ifQ.c2lnbmF0dXJlLWdvbGRlbg"
# Compact, as users write it in dmstrack's config: `*`, `/`, `:` and `"` need encoding.
POLICY = '{"Version":"1","Statement":[{"Effect":"Allow","Action":"dms:*","Resource":"acs:dms:*:*:*/x~y"}]}'
POLICY_WITH_SPACES = '{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "dms:*", "Resource": "*"}]}'
EXTERNAL_ID = "golden-ext~id+1=/"

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def nonce(n: int) -> str:
    """32 lower-case hex digits, like tea-openapi's and aliyunsdkcore's nonces."""
    return f"901d{n:028x}"


def uuid_nonce(n: int) -> str:
    """A UUID string, like alibabacloud-credentials' nonces."""
    return f"6b0f3d2e-90a1-5c3e-8d7f-{n:012x}"


# ---------------------------------------------------------------------------------------
# Capture machinery (runs only inside the venv)
# ---------------------------------------------------------------------------------------


class Harness:
    """Freezes clocks and nonces, records what the SDKs send and compute."""

    def __init__(self) -> None:
        import datetime as real_datetime
        import platform
        import socket
        import time
        import types

        self.sent = []
        self.hash_inputs = []
        self.sign_inputs = []
        self.hmac_messages = []
        self.v1_strings = []
        self.response = b"{}"
        self.nonce = "unset"
        self.timestamp = real_datetime.datetime.strptime(TIMESTAMP, "%Y-%m-%dT%H:%M:%SZ")
        harness = self

        def no_network(*_args, **_kwargs):
            raise RuntimeError("the golden generator never touches the network")

        socket.socket.connect = no_network
        socket.create_connection = no_network
        socket.getaddrinfo = no_network

        # The user-agent is signed (V3): freeze the platform parts it reads.
        platform.system = lambda: "Linux"
        platform.release = lambda: "6.1.0"
        platform.machine = lambda: "x86_64"
        platform.python_version = lambda: "3.11.7"

        class FrozenDatetime(real_datetime.datetime):
            @classmethod
            def utcnow(cls):
                return harness.timestamp

            @classmethod
            def now(cls, tz=None):
                return harness.timestamp if tz is None else harness.timestamp.replace(tzinfo=tz)

        frozen_struct = time.strptime(TIMESTAMP, "%Y-%m-%dT%H:%M:%SZ")
        frozen_time = types.SimpleNamespace(
            strftime=time.strftime,
            gmtime=lambda *_: frozen_struct,
            time=time.time,
            mktime=time.mktime,
            localtime=time.localtime,
        )

        # Transports: requests (tea-openapi, darabonba, Tea) and aliyunsdkcore's vendored copy.
        import requests
        import requests.adapters
        from aliyunsdkcore.vendored import requests as vendored_requests
        from aliyunsdkcore.vendored.requests import adapters as vendored_adapters

        def recorder(module):
            def send(_adapter, request, **_kwargs):
                harness.sent.append(request)
                response = module.models.Response()
                response.status_code = 200
                response.reason = "OK"
                response._content = harness.response
                response.headers = module.structures.CaseInsensitiveDict(
                    {"content-type": "application/json;charset=utf-8"}
                )
                response.url = request.url
                response.request = request
                response.encoding = "utf-8"
                return response

            return send

        requests.adapters.HTTPAdapter.send = recorder(requests)
        vendored_adapters.HTTPAdapter.send = recorder(vendored_requests)

        # tea-openapi: clock, nonce, and its signing internals.
        import alibabacloud_tea_openapi.utils as tea_utils

        tea_utils.datetime = FrozenDatetime
        tea_utils.Utils.get_nonce = staticmethod(lambda: harness.nonce)
        real_hash = tea_utils.Utils.hash
        real_signature_method = tea_utils.signature_method
        real_hmac = tea_utils.hmac

        def recording_hash(raw, sign_type):
            harness.hash_inputs.append(bytes(raw))
            return real_hash(raw, sign_type)

        def recording_signature_method(secret, source, sign_type):
            harness.sign_inputs.append(source)
            return real_signature_method(secret, source, sign_type)

        def recording_hmac_new(key, msg=None, digestmod=""):
            harness.hmac_messages.append(msg.decode("utf-8") if isinstance(msg, bytes) else msg)
            return real_hmac.new(key, msg, digestmod)

        tea_utils.Utils.hash = staticmethod(recording_hash)
        tea_utils.signature_method = recording_signature_method
        tea_utils.hmac = types.SimpleNamespace(new=recording_hmac_new)

        # aliyunsdkcore: clock, nonce, and the string to sign it returns.
        from aliyunsdkcore.auth.composer import rpc_signature_composer
        from aliyunsdkcore.utils import parameter_helper as core_helper

        core_helper.time = frozen_time
        core_helper.get_uuid = lambda: harness.nonce
        real_get_signed_url = rpc_signature_composer.get_signed_url

        def recording_get_signed_url(*args, **kwargs):
            url, string_to_sign = real_get_signed_url(*args, **kwargs)
            harness.v1_strings.append(string_to_sign)
            return url, string_to_sign

        rpc_signature_composer.get_signed_url = recording_get_signed_url

        # alibabacloud-credentials: clock, nonce, string to sign.
        from alibabacloud_credentials.utils import parameter_helper as cred_helper

        cred_helper.datetime = types.SimpleNamespace(datetime=FrozenDatetime)
        cred_helper.get_uuid = lambda: harness.nonce
        real_compose = cred_helper.compose_string_to_sign

        def recording_compose(method, queries):
            string_to_sign = real_compose(method, queries)
            harness.v1_strings.append(string_to_sign)
            return string_to_sign

        cred_helper.compose_string_to_sign = recording_compose

        self.tea_utils = tea_utils
        self.core_composer = rpc_signature_composer

    def begin(self, nonce_value: str, response: dict) -> None:
        self.sent.clear()
        self.hash_inputs.clear()
        self.sign_inputs.clear()
        self.hmac_messages.clear()
        self.v1_strings.clear()
        self.nonce = nonce_value
        self.response = json.dumps(response).encode()

    def only_request(self) -> dict:
        from urllib.parse import urlsplit

        assert len(self.sent) == 1, f"expected exactly one request, got {len(self.sent)}"
        prepared = self.sent[0]
        url = urlsplit(prepared.url)
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        return {
            "method": prepared.method,
            "host": url.netloc,
            "path": url.path,
            "query": url.query,
            "headers": [[name, value] for name, value in prepared.headers.items()],
            "body": body.decode("utf-8"),
        }

    # SDK signing functions applied to the shape dmstrack sends ------------------------

    def sdk_v3(self, method: str, params: list, headers: list, secret: str, ak: str) -> dict:
        """tea-openapi's Utils.get_authorization over dmstrack's query and signed headers."""
        from darabonba.request import DaraRequest

        request = DaraRequest()
        request.method = method
        request.pathname = "/"
        request.query = dict(params)
        request.headers = dict(headers)
        self.hash_inputs.clear()
        self.sign_inputs.clear()
        authorization = self.tea_utils.Utils.get_authorization(
            request, "ACS3-HMAC-SHA256", EMPTY_SHA256, ak, secret
        )
        return {
            "canonical_request": self.hash_inputs[-1].decode("utf-8"),
            "string_to_sign": self.sign_inputs[-1],
            "signature": authorization.rsplit("Signature=", 1)[1],
            "authorization": authorization,
            "query": canonical_query(self.tea_utils, params),
        }

    def sdk_v1(self, method: str, params: list, secret: str) -> dict:
        """tea-openapi's get_rpcsignature over dmstrack's parameters; aliyunsdkcore's composer
        must agree."""
        self.hmac_messages.clear()
        signature = self.tea_utils.Utils.get_rpcsignature(dict(params), method, secret)
        string_to_sign = self.hmac_messages[-1]
        core_string = getattr(self.core_composer, "__compose_string_to_sign")(method, dict(params))
        assert core_string == string_to_sign, (core_string, string_to_sign)
        core_signature = getattr(self.core_composer, "__get_signature")(core_string, secret)
        assert core_signature == signature
        query = canonical_query(self.tea_utils, params)
        query += "&Signature=" + self.tea_utils.Utils.get_encode_param(signature)
        return {"string_to_sign": string_to_sign, "signature": signature, "query": query}


def canonical_query(tea_utils, params: list) -> str:
    """The SDK's own RFC 3986 canonical query (names here are plain ASCII)."""
    return tea_utils.get_canonical_query_string(dict(params))


def decode_pairs(raw: str) -> list:
    from urllib.parse import parse_qsl

    return [[k, v] for k, v in parse_qsl(raw, keep_blank_values=True)]


# ---------------------------------------------------------------------------------------
# DMS cases
# ---------------------------------------------------------------------------------------

QUERY_STATUS_ANSWER = {
    "RequestId": "GOLDEN-REQUEST",
    "Success": True,
    "ErrorCode": "UnknownError",
    "StatusResult": {"DownloadStatus": "INIT", "StatusDesc": "Initializing", "TotalCount": 0},
}
EXPORT_ANSWER = {"RequestId": "GOLDEN-REQUEST", "Success": True, "DownloadKeyId": "dk-golden"}


def dms_inputs(action: str, n: int, token: bool, order_id: int) -> dict:
    inputs = {
        "action": action,
        "version": "2018-11-01",
        "host": DMS_HOST,
        "timestamp": TIMESTAMP,
        "nonce": nonce(n),
        "access_key_id": STS_ID if token else AK_ID,
        "access_key_secret": STS_SECRET if token else AK_SECRET,
        "security_token": STS_TOKEN if token else None,
        "order_id": order_id,
        "tid": 3,
    }
    if action == "QueryDataTrackResultDownloadStatus":
        inputs["download_key_id"] = AWKWARD_KEY
    else:
        inputs["export"] = EXPORT
    return inputs


def tea_dms_call(h: Harness, inputs: dict, algorithm: str | None):
    from alibabacloud_dms_enterprise20181101 import models
    from alibabacloud_dms_enterprise20181101.client import Client
    from alibabacloud_tea_openapi import utils_models

    config = utils_models.Config(
        access_key_id=inputs["access_key_id"],
        access_key_secret=inputs["access_key_secret"],
        security_token=inputs["security_token"],
        endpoint=inputs["host"],
    )
    if algorithm:
        config.signature_algorithm = algorithm
    client = Client(config)
    if inputs["action"] == "QueryDataTrackResultDownloadStatus":
        h.begin(inputs["nonce"], QUERY_STATUS_ANSWER)
        client.query_data_track_result_download_status(
            models.QueryDataTrackResultDownloadStatusRequest(
                order_id=inputs["order_id"],
                download_key_id=inputs["download_key_id"],
                tid=inputs["tid"],
            )
        )
    else:
        export = inputs["export"]
        cf = export["column_filter"]
        h.begin(inputs["nonce"], EXPORT_ANSWER)
        client.download_data_track_result(
            models.DownloadDataTrackResultRequest(
                order_id=inputs["order_id"],
                tid=inputs["tid"],
                rollback_sqltype=export["rollback_sql_type"],
                filter_start_time=export["filter_start_time"],
                filter_end_time=export["filter_end_time"],
                filter_table_list=export["filter_tables"],
                filter_type_list=export["filter_types"],
                event_id_list=export["event_ids"],
                column_filter=models.DownloadDataTrackResultRequestColumnFilter(
                    column_name=cf["ColumnName"],
                    in_list=cf["InList"],
                    operator=cf["Operator"],
                ),
            )
        )


def core_dms_call(h: Harness, inputs: dict):
    from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkdms_enterprise.request.v20181101 import (
        DownloadDataTrackResultRequest,
        QueryDataTrackResultDownloadStatusRequest,
    )

    if inputs["security_token"]:
        credential = StsTokenCredential(
            inputs["access_key_id"], inputs["access_key_secret"], inputs["security_token"]
        )
    else:
        credential = AccessKeyCredential(inputs["access_key_id"], inputs["access_key_secret"])
    client = AcsClient(region_id="cn-hangzhou", credential=credential, auto_retry=False)
    if inputs["action"] == "QueryDataTrackResultDownloadStatus":
        request = QueryDataTrackResultDownloadStatusRequest.QueryDataTrackResultDownloadStatusRequest()
        request.set_OrderId(inputs["order_id"])
        request.set_DownloadKeyId(inputs["download_key_id"])
        request.set_Tid(inputs["tid"])
        answer = QUERY_STATUS_ANSWER
    else:
        export = inputs["export"]
        request = DownloadDataTrackResultRequest.DownloadDataTrackResultRequest()
        request.set_OrderId(inputs["order_id"])
        request.set_Tid(inputs["tid"])
        request.set_RollbackSQLType(export["rollback_sql_type"])
        request.set_FilterStartTime(export["filter_start_time"])
        request.set_FilterEndTime(export["filter_end_time"])
        request.set_FilterTableList(export["filter_tables"])
        request.set_FilterTypeList(export["filter_types"])
        request.set_EventIdList(export["event_ids"])
        request.set_ColumnFilter(export["column_filter"])
        answer = EXPORT_ANSWER
    request.set_endpoint(inputs["host"])
    request.set_protocol_type("https")
    h.begin(inputs["nonce"], answer)
    client.do_action_with_exception(request)


V1_COMMON = {
    "AccessKeyId",
    "Action",
    "Format",
    "RegionId",
    "SecurityToken",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "Timestamp",
    "Version",
}


def dms_case(h: Harness, name: str, sdk: str, inputs: dict, signature: str) -> dict:
    old_core = sdk.startswith("aliyun-python-sdk-dms-enterprise")
    if old_core:
        core_dms_call(h, inputs)
    else:
        tea_dms_call(h, inputs, "v2" if signature == "v1" else None)
    sent = h.only_request()
    case = {
        "name": name,
        "sdk": sdk,
        "service": "dms",
        "signature": signature,
        "inputs": inputs,
        "same_business_params": not old_core,
        "sent": sent,
    }
    pairs = decode_pairs(sent["query"]) + (
        decode_pairs(sent["body"]) if sent["body"] else []
    )
    if signature == "v3":
        authorization = dict(sent["headers"])["Authorization"]
        case["sdk_signing"] = {
            "canonical_request": h.hash_inputs[-1].decode("utf-8"),
            "string_to_sign": h.sign_inputs[-1],
            "signature": authorization.rsplit("Signature=", 1)[1],
            "authorization": authorization,
        }
        business = pairs
    else:
        signature_value = dict(pairs)["Signature"]
        string_to_sign = h.v1_strings[-1] if h.v1_strings else h.hmac_messages[-1]
        case["sdk_signing"] = {"string_to_sign": string_to_sign, "signature": signature_value}
        business = [p for p in pairs if p[0] not in V1_COMMON]
    if case["same_business_params"]:
        case["dmstrack"] = dmstrack_dms_shape(h, inputs, business, signature)
    return case


def dmstrack_dms_shape(h: Harness, inputs: dict, business: list, signature: str) -> dict:
    """The request src/dms/signer.rs `sign` builds for these inputs, signed by the SDK."""
    token = inputs["security_token"]
    ak, secret = inputs["access_key_id"], inputs["access_key_secret"]
    if signature == "v3":
        headers = [
            ["host", inputs["host"]],
            ["x-acs-action", inputs["action"]],
            ["x-acs-content-sha256", EMPTY_SHA256],
            ["x-acs-date", inputs["timestamp"]],
            ["x-acs-signature-nonce", inputs["nonce"]],
            ["x-acs-version", inputs["version"]],
        ]
        if token:
            headers += [["x-acs-accesskey-id", ak], ["x-acs-security-token", token]]
        signed = h.sdk_v3("POST", business, headers, secret, ak)
        return {"method": "POST", "params": business, "headers": headers, "body": "", **signed}
    params = business + [
        ["AccessKeyId", ak],
        ["Action", inputs["action"]],
        ["Format", "JSON"],
        ["SignatureMethod", "HMAC-SHA1"],
        ["SignatureNonce", inputs["nonce"]],
        ["SignatureVersion", "1.0"],
        ["Timestamp", inputs["timestamp"]],
        ["Version", inputs["version"]],
    ]
    if token:
        params.append(["SecurityToken", token])
    signed = h.sdk_v1("POST", params, secret)
    headers = [["x-acs-action", inputs["action"]], ["x-acs-version", inputs["version"]]]
    return {"method": "POST", "params": params, "headers": headers, "body": "", **signed}


def dms_cases(h: Harness) -> list:
    tea = "alibabacloud-dms-enterprise20181101==3.0.0"
    core = "aliyun-python-sdk-dms-enterprise==1.53.12 (aliyun-python-sdk-core==2.16.1)"
    query = "QueryDataTrackResultDownloadStatus"
    export = "DownloadDataTrackResult"
    cases = []
    n = 0
    for sdk, signatures in ((tea, ("v3", "v1")), (core, ("v1",))):
        label = "tea" if sdk == tea else "core"
        for signature in signatures:
            for action, short, order_id in ((query, "query_status", 123456), (export, "export", 406)):
                for token in (False, True):
                    n += 1
                    name = f"dms_{signature}_{label}_{short}_{'sts' if token else 'ak'}"
                    inputs = dms_inputs(action, n, token, order_id)
                    cases.append(dms_case(h, name, sdk, inputs, signature))
    return cases


# ---------------------------------------------------------------------------------------
# STS cases
# ---------------------------------------------------------------------------------------

STS_ANSWER = {
    "RequestId": "GOLDEN-REQUEST",
    "AssumedRoleUser": {"Arn": ROLE_ARN, "AssumedRoleId": "golden:1"},
    "Credentials": {
        "AccessKeyId": "STS.GoldenIssued",
        "AccessKeySecret": "GoldenIssuedSecretDoNotUse",
        "SecurityToken": "GoldenIssuedToken",
        "Expiration": "2099-01-01T00:00:00Z",
    },
}


def sts_inputs(action: str, n: int, *, token: bool, policy=None, external_id=None, uuid=True) -> dict:
    return {
        "action": action,
        "version": "2015-04-01",
        "host": STS_HOST,
        "timestamp": TIMESTAMP,
        "nonce": uuid_nonce(n) if uuid else nonce(n),
        "access_key_id": STS_ID if token else AK_ID,
        "access_key_secret": STS_SECRET if token else AK_SECRET,
        "security_token": STS_TOKEN if token else None,
        "role_arn": ROLE_ARN,
        "role_session_name": "dmstrack-golden",
        "duration_seconds": 3600,
        "policy": policy,
        "external_id": external_id,
        "oidc_provider_arn": OIDC_PROVIDER_ARN if action == "AssumeRoleWithOIDC" else None,
        "oidc_token": OIDC_TOKEN if action == "AssumeRoleWithOIDC" else None,
    }


def credentials_assume_role(h: Harness, name: str, inputs: dict) -> dict:
    from alibabacloud_credentials.provider import RamRoleArnCredentialsProvider

    provider = RamRoleArnCredentialsProvider(
        access_key_id=inputs["access_key_id"],
        access_key_secret=inputs["access_key_secret"],
        security_token=inputs["security_token"],
        role_arn=inputs["role_arn"],
        role_session_name=inputs["role_session_name"],
        duration_seconds=inputs["duration_seconds"],
        policy=inputs["policy"],
        external_id=inputs["external_id"],
        sts_endpoint=inputs["host"],
    )
    h.begin(inputs["nonce"], STS_ANSWER)
    provider.get_credentials()
    sent = h.only_request()
    pairs = decode_pairs(sent["query"])
    signature = dict(pairs)["Signature"]
    params = [p for p in pairs if p[0] != "Signature"]
    case = {
        "name": name,
        "sdk": "alibabacloud-credentials==1.0.12",
        "service": "sts",
        "signature": "v1",
        "inputs": inputs,
        "same_business_params": True,
        "sent": sent,
        "sdk_signing": {"string_to_sign": h.v1_strings[-1], "signature": signature},
    }
    # dmstrack sends this very request (GET, everything in the query).
    case["dmstrack"] = dmstrack_assume_role_shape(h, inputs)
    assert sorted(case["dmstrack"]["params"]) == sorted(params), "not the request dmstrack sends"
    assert case["dmstrack"]["signature"] == signature, "credentials and tea-openapi disagree"
    return case


def dmstrack_assume_role_shape(h: Harness, inputs: dict) -> dict:
    """The GET src/credentials/sts.rs `assume_role_query` builds for these inputs; its query
    string is the canonical one, signed by tea-openapi's RFC 3986 V1 function."""
    params = [
        ["Action", "AssumeRole"],
        ["Format", "JSON"],
        ["Version", inputs["version"]],
        ["Timestamp", inputs["timestamp"]],
        ["DurationSeconds", str(inputs["duration_seconds"])],
        ["RoleArn", inputs["role_arn"]],
        ["RoleSessionName", inputs["role_session_name"]],
        ["SignatureMethod", "HMAC-SHA1"],
        ["SignatureVersion", "1.0"],
        ["SignatureNonce", inputs["nonce"]],
        ["AccessKeyId", inputs["access_key_id"]],
    ]
    if inputs["policy"]:
        params.append(["Policy", inputs["policy"]])
    if inputs["external_id"]:
        params.append(["ExternalId", inputs["external_id"]])
    if inputs["security_token"]:
        params.append(["SecurityToken", inputs["security_token"]])
    signed = h.sdk_v1("GET", params, inputs["access_key_secret"])
    return {"method": "GET", "params": params, "headers": [], "body": "", **signed}


def sts_client(inputs: dict, algorithm: str | None, anonymous: bool):
    from alibabacloud_sts20150401.client import Client
    from alibabacloud_tea_openapi import utils_models

    config = utils_models.Config(endpoint=inputs["host"])
    if not anonymous:
        config.access_key_id = inputs["access_key_id"]
        config.access_key_secret = inputs["access_key_secret"]
        config.security_token = inputs["security_token"]
    if algorithm:
        config.signature_algorithm = algorithm
    return Client(config)


def tea_assume_role_v1(h: Harness, name: str, inputs: dict) -> dict:
    from alibabacloud_sts20150401 import models

    client = sts_client(inputs, "v2", anonymous=False)
    h.begin(inputs["nonce"], STS_ANSWER)
    client.assume_role(
        models.AssumeRoleRequest(
            role_arn=inputs["role_arn"],
            role_session_name=inputs["role_session_name"],
            duration_seconds=inputs["duration_seconds"],
            policy=inputs["policy"],
            external_id=inputs["external_id"],
        )
    )
    sent = h.only_request()
    pairs = decode_pairs(sent["query"]) + (decode_pairs(sent["body"]) if sent["body"] else [])
    return {
        "name": name,
        "sdk": "alibabacloud-sts20150401==1.2.0",
        "service": "sts",
        "signature": "v1",
        "inputs": inputs,
        "same_business_params": True,
        "sent": sent,
        "sdk_signing": {"string_to_sign": h.hmac_messages[-1], "signature": dict(pairs)["Signature"]},
        # dmstrack sends AssumeRole as a GET, so this SDK's POST is not its shape; the GET it
        # would send for these inputs (spaces in the policy) is signed by the same SDK here.
        "dmstrack": dmstrack_assume_role_shape(h, inputs),
    }


def credentials_oidc(h: Harness, name: str, inputs: dict, token_file: Path) -> dict:
    from alibabacloud_credentials.provider import OIDCRoleArnCredentialsProvider

    # As the kubelet writes it: no trailing newline (this SDK sends the file unstripped).
    token_file.write_text(inputs["oidc_token"])
    provider = OIDCRoleArnCredentialsProvider(
        role_arn=inputs["role_arn"],
        oidc_provider_arn=inputs["oidc_provider_arn"],
        oidc_token_file_path=str(token_file),
        role_session_name=inputs["role_session_name"],
        duration_seconds=inputs["duration_seconds"],
        policy=inputs["policy"],
        sts_endpoint=inputs["host"],
    )
    h.begin("unused", STS_ANSWER)
    provider.get_credentials()
    return {
        "name": name,
        "sdk": "alibabacloud-credentials==1.0.12",
        "service": "sts",
        "signature": "none",
        "inputs": inputs,
        "same_business_params": True,
        "sent": h.only_request(),
    }


def tea_oidc(h: Harness, name: str, inputs: dict) -> dict:
    from alibabacloud_sts20150401 import models

    client = sts_client(inputs, None, anonymous=True)
    h.begin(inputs["nonce"], STS_ANSWER)
    client.assume_role_with_oidc(
        models.AssumeRoleWithOIDCRequest(
            role_arn=inputs["role_arn"],
            oidcprovider_arn=inputs["oidc_provider_arn"],
            oidctoken=inputs["oidc_token"],
            role_session_name=inputs["role_session_name"],
            duration_seconds=inputs["duration_seconds"],
            policy=inputs["policy"],
        )
    )
    return {
        "name": name,
        "sdk": "alibabacloud-sts20150401==1.2.0",
        "service": "sts",
        "signature": "none",
        "inputs": inputs,
        "same_business_params": True,
        "sent": h.only_request(),
    }


def sts_cases(h: Harness) -> list:
    import tempfile

    role, oidc = "AssumeRole", "AssumeRoleWithOIDC"
    cases = [
        credentials_assume_role(h, "sts_assume_role_ak", sts_inputs(role, 1, token=False)),
        credentials_assume_role(
            h,
            "sts_assume_role_policy_external_id",
            sts_inputs(role, 2, token=False, policy=POLICY, external_id=EXTERNAL_ID),
        ),
        credentials_assume_role(
            h,
            "sts_assume_role_sts_source_policy_external_id",
            sts_inputs(role, 3, token=True, policy=POLICY, external_id=EXTERNAL_ID),
        ),
        # alibabacloud-credentials signs spaces as `+` (quote_plus) while sending them as `+`
        # too, which a %20 gateway rejects; tea-openapi's V1 is the RFC 3986 reference for them.
        tea_assume_role_v1(
            h,
            "sts_assume_role_tea_v1_post_policy_with_spaces",
            sts_inputs(role, 4, token=True, policy=POLICY_WITH_SPACES, external_id=EXTERNAL_ID, uuid=False),
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        cases.append(credentials_oidc(h, "sts_oidc", sts_inputs(oidc, 5, token=False), token_file))
        cases.append(
            credentials_oidc(
                h, "sts_oidc_policy", sts_inputs(oidc, 6, token=False, policy=POLICY), token_file
            )
        )
    cases.append(
        tea_oidc(h, "sts_oidc_tea_post", sts_inputs(oidc, 7, token=False, policy=POLICY_WITH_SPACES, uuid=False))
    )
    for case in cases:
        if case["signature"] == "none":
            case["inputs"]["access_key_id"] = None
            case["inputs"]["access_key_secret"] = None
            case["inputs"]["security_token"] = None
            case["inputs"]["nonce"] = None
    return cases


def write(name: str, cases: list) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    document = {
        "generator": "scripts/golden/gen_dms_vectors.py",
        "packages": PINS,
        "cases": cases,
    }
    path = OUT / name
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(cases)} cases)")


def main() -> None:
    ensure_venv()
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "DEBUG"):
        os.environ.pop(variable, None)
    h = Harness()
    write("dms.json", dms_cases(h))
    write("sts.json", sts_cases(h))


if __name__ == "__main__":
    main()
