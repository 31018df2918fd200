#!/usr/bin/env python3
"""The S3 side of scripts/bench.py --upload: moto's server, its set-up, and boto3's transfer.

Runs with the python of the moto venv (scripts/moto-venv.sh: moto[server]==5.2.5,
boto3==1.44.8, botocore==1.44.8); by hand:

    PY=$(scripts/moto-venv.sh)
    INITIAL_NO_AUTH_ACTION_COUNT=3 $PY scripts/bench_s3.py serve --port 5123 \\
        --request-log requests.jsonl < /dev/tty &
    $PY scripts/bench_s3.py setup --endpoint http://127.0.0.1:5123 --bucket bench
    BENCH_S3_SECRET=... $PY scripts/bench_s3.py upload --endpoint http://127.0.0.1:5123 \\
        --access-key-id ID --bucket bench --key k.zip --file F [--part-size 64MiB --concurrency 4]
    BENCH_S3_SECRET=... $PY scripts/bench_s3.py heads --endpoint ... --access-key-id ID \\
        --bucket B --key K [--key K2 ...] [--delete]

serve: moto's standalone server on 127.0.0.1, run the way moto.server.main runs it (werkzeug's
threaded server, moto's request handler) and started as tests/support/moto.rs starts it: it
exits when its stdin reaches EOF, so it dies with the script that holds the pipe. With
--request-log, every request is also appended to that file as one JSON line: the operation
(head, put, initiate, part, complete, delete, ...), method, status, body bytes, and the
wall-clock time (time.time()) when the server began handling it (its headers were read; the
body is read inside) and when its answer was written, so a caller can split a client's upload
into phases as the server saw them, the same way for every client. Authentication turns on
after INITIAL_NO_AUTH_ACTION_COUNT unsigned actions (3), which `setup` spends on creating an
IAM user, its allow-all policy and its access key; setup then checks that an unsigned request
is refused, creates the bucket, and prints {"access_key_id", "secret_access_key", "bucket"}.

upload: boto3's managed transfer (`S3Client.upload_file`, s3transfer) of one file; with no
--part-size / --concurrency, the default TransferConfig (8 MiB threshold and parts, 10
threads), else multipart_threshold = multipart_chunksize = --part-size and max_concurrency =
--concurrency; --checksum when_required turns off botocore's default CRC32 of each part
(request_checksum_calculation), so the upload declares no checksum algorithm, as dmstrack's
(which sends Content-MD5) does not. The client is built before the clock starts; prints one JSON line with the
transfer's own wall time (time.monotonic around upload_file) and when it began (t0,
time.time()), this process's CPU time during it (getrusage), and the HeadObject answer
afterwards (size, ETag).

heads: HeadObject of every --key (prints {key: {"size", "etag"} or {"missing": true}}), then
with --delete DeleteObject of each. The secret comes from BENCH_S3_SECRET, never from argv.
"""

import argparse
import json
import os
import resource
import sys
import threading
import time

REGION = "us-east-1"
ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def parse_size(text):
    units = {"KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client(service, endpoint, key_id, secret, checksum="when_supported"):
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"},
                    s3={"addressing_style": "path"}, max_pool_connections=16,
                    request_checksum_calculation=checksum)
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=key_id, aws_secret_access_key=secret, config=config)


class RequestLog:
    """WSGI middleware: one JSON line per request (see the top of this file)."""

    def __init__(self, app, path):
        self.app = app
        self.out = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    @staticmethod
    def operation(environ):
        method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
        names = {pair.split("=", 1)[0] for pair in query.split("&") if pair}
        if method == "POST" and "uploads" in names:
            return "initiate"
        if method == "PUT" and "partNumber" in names:
            return "part"
        if method == "POST" and "uploadId" in names:
            return "complete"
        if method == "DELETE" and "uploadId" in names:
            return "abort"
        if method == "GET" and "uploadId" in names:
            return "list-parts"
        return {"PUT": "put", "HEAD": "head", "GET": "get", "DELETE": "delete"}.get(
            method, method.lower())

    def __call__(self, environ, start_response):
        started = time.time()
        status = []

        def recording_start_response(line, headers, exc_info=None):
            status.append(int(line.split()[0]))
            return start_response(line, headers, exc_info)

        body = self.app(environ, recording_start_response)
        try:
            yield from body
        finally:
            if hasattr(body, "close"):
                body.close()
            record = {"op": self.operation(environ), "method": environ["REQUEST_METHOD"],
                      "path": environ.get("PATH_INFO", ""),
                      "status": status[0] if status else None,
                      "bytes": int(environ.get("CONTENT_LENGTH") or 0),
                      "t0": started, "t1": time.time()}
            with self.lock:
                self.out.write(json.dumps(record) + "\n")


def serve(argv):
    parser = argparse.ArgumentParser(prog="bench_s3.py serve")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--request-log")
    args = parser.parse_args(argv)

    def watch_parent():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    if args.request_log:
        app = RequestLog(app, args.request_log)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


def setup(args):
    from botocore.exceptions import ClientError

    anyone = ("AKIAUNSIGNEDSETUP000", "unused")
    iam = client("iam", args.endpoint, *anyone)
    iam.create_user(UserName="bench")
    iam.put_user_policy(UserName="bench", PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="bench")["AccessKey"]
    try:
        client("s3", args.endpoint, *anyone).list_buckets()
        sys.exit("bench_s3: moto still accepts unsigned requests after set-up")
    except ClientError as error:
        if error.response["Error"]["Code"] != "InvalidAccessKeyId":
            raise
    s3 = client("s3", args.endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    s3.create_bucket(Bucket=args.bucket)
    print(json.dumps({"access_key_id": key["AccessKeyId"],
                      "secret_access_key": key["SecretAccessKey"], "bucket": args.bucket}))


def secret():
    value = os.environ.get("BENCH_S3_SECRET")
    if not value:
        sys.exit("bench_s3: set BENCH_S3_SECRET")
    return value


def head(s3, bucket, key):
    from botocore.exceptions import ClientError

    try:
        answer = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return {"missing": True}
        raise
    return {"size": answer["ContentLength"], "etag": answer["ETag"].strip('"')}


def upload(args):
    from boto3.s3.transfer import TransferConfig

    s3 = client("s3", args.endpoint, args.access_key_id, secret(), args.checksum)
    if args.part_size is None and args.concurrency is None:
        transfer = TransferConfig()
    else:
        part = parse_size(args.part_size or "8MiB")
        transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                                  max_concurrency=args.concurrency or 10)
    cpu_before = cpu_seconds()
    wall_clock = time.time()
    started = time.monotonic()
    s3.upload_file(args.file, args.bucket, args.key, Config=transfer)
    wall = time.monotonic() - started
    cpu = cpu_seconds() - cpu_before
    print(json.dumps({"transfer_s": wall, "transfer_cpu_s": cpu, "t0": wall_clock,
                      "part_size": transfer.multipart_chunksize,
                      "threshold": transfer.multipart_threshold,
                      "concurrency": transfer.max_request_concurrency,
                      "head": head(s3, args.bucket, args.key)}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="moto's server (argv goes to moto.server.main)")
    p = commands.add_parser("setup")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    for name in ("upload", "heads"):
        p = commands.add_parser(name)
        p.add_argument("--endpoint", required=True)
        p.add_argument("--access-key-id", required=True)
        p.add_argument("--bucket", required=True)
        if name == "upload":
            p.add_argument("--key", required=True)
            p.add_argument("--file", required=True)
            p.add_argument("--part-size")
            p.add_argument("--concurrency", type=int)
            p.add_argument("--checksum", choices=["when_supported", "when_required"],
                           default="when_supported",
                           help="botocore's request_checksum_calculation (default: its "
                                "default, when_supported: a CRC32 per part)")
        else:
            p.add_argument("--key", action="append", required=True)
            p.add_argument("--delete", action="store_true")
    args = parser.parse_args()
    if args.command == "setup":
        setup(args)
    elif args.command == "upload":
        upload(args)
    else:
        s3 = client("s3", args.endpoint, args.access_key_id, secret())
        found = {key: head(s3, args.bucket, key) for key in args.key}
        if args.delete:
            for key in args.key:
                s3.delete_object(Bucket=args.bucket, Key=key)
        print(json.dumps(found))


if __name__ == "__main__":
    main()
