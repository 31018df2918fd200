#!/usr/bin/env python3
"""The official Python SDK polling one DMS ticket, for scripts/bench.py --poll-cpu.

Runs inside the venv scripts/bench.py creates (target/bench-venv, pinned
alibabacloud-dms-enterprise20181101==3.0.0, alibabacloud-tea-openapi==0.4.6,
darabonba-core==1.0.9); by hand:

    target/bench-venv/bin/python scripts/bench_sdk_poll.py --endpoint 127.0.0.1:PORT \\
        --access-key-id ID --order-id N --download-key-id KEY --polls 500
    (the AccessKey secret comes from the environment variable BENCH_SDK_ACCESS_KEY_SECRET)

One client (V3 ACS3-HMAC-SHA256 signing, the SDK's default; plain http, since the endpoint is
the loopback simulator of examples/bench_fixture) calls query_data_track_result_download_status
--polls times, starting one call every --interval seconds (the next start is the previous start
plus the interval, or at once when a call took longer). It prints one JSON line: the number of
calls, the statuses answered, and this process's own CPU time (user + system,
resource.getrusage, microseconds) after the imports, after --mark calls and at the end, so the
caller can take the marginal cost per call either inside this process or across two runs.
"""

import argparse
import json
import os
import resource
import sys
import time


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="HOST:PORT of the DMS simulator")
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--order-id", type=int, required=True)
    parser.add_argument("--download-key-id", required=True)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--mark", type=int, default=10,
                        help="also report the CPU time after this many calls (default 10)")
    parser.add_argument("--interval", type=float, default=0.020, help="seconds (default 0.020)")
    args = parser.parse_args()
    secret = os.environ.get("BENCH_SDK_ACCESS_KEY_SECRET")
    if not secret:
        sys.exit("bench_sdk_poll: set BENCH_SDK_ACCESS_KEY_SECRET")

    from alibabacloud_dms_enterprise20181101 import models
    from alibabacloud_dms_enterprise20181101.client import Client
    from alibabacloud_tea_openapi import utils_models

    cpu_imported = cpu_seconds()
    client = Client(utils_models.Config(
        access_key_id=args.access_key_id,
        access_key_secret=secret,
        endpoint=args.endpoint,
        protocol="http",
    ))
    request = models.QueryDataTrackResultDownloadStatusRequest(
        order_id=args.order_id, download_key_id=args.download_key_id)

    statuses = {}
    cpu_mark = None
    next_start = time.monotonic()
    for done in range(1, args.polls + 1):
        delay = next_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_start = max(next_start + args.interval, time.monotonic())
        answer = client.query_data_track_result_download_status(request)
        status = answer.body.status_result.download_status if answer.body.success else "error"
        statuses[status] = statuses.get(status, 0) + 1
        if done == args.mark:
            cpu_mark = cpu_seconds()
    print(json.dumps({
        "polls": args.polls,
        "statuses": statuses,
        "cpu_imported_s": cpu_imported,
        "mark": args.mark,
        "cpu_mark_s": cpu_mark,
        "cpu_end_s": cpu_seconds(),
    }), flush=True)


if __name__ == "__main__":
    main()
