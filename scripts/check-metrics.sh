#!/usr/bin/env bash
# Lints a live /metrics scrape with `promtool check metrics`: the benchmark fixture
# (examples/bench_fixture, the DMS and OSS simulators on 127.0.0.1) serves one small export,
# the real binary archives it as a daemon with [http] listen on a free loopback port, and the
# scrape taken after the archive (API, download, state, process and filesystem metrics all
# populated) must pass promtool without a remark and carry the families the alert rules in
# config/prometheus-rules.yml use.
#
# Usage: scripts/check-metrics.sh [path/to/dmstrack [path/to/bench_fixture]]
#   (defaults: target/debug/dmstrack and target/debug/examples/bench_fixture, which
#   `cargo test` builds; promtool comes from Debian's prometheus package, installed when
#   missing)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target/debug/dmstrack}"
fixture="${2:-target/debug/examples/bench_fixture}"
for exe in "$bin" "$fixture"; do
    if [[ ! -x "$exe" ]]; then
        echo "check-metrics: $exe is missing (cargo test builds it; or cargo build --examples)" >&2
        exit 2
    fi
done
if ! command -v promtool >/dev/null 2>&1; then
    echo "check-metrics: installing promtool (Debian package prometheus)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

work="$(mktemp -d)"
fixture_pid=""
daemon_pid=""
cleanup() {
    [[ -n "$daemon_pid" ]] && kill -TERM "$daemon_pid" 2>/dev/null || true
    exec 8>&- || true
    [[ -n "$fixture_pid" ]] && kill -TERM "$fixture_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The fixture serves until its stdin (a pipe held open by fd 8) closes.
mkfifo "$work/stdin"
"$fixture" --size 2MiB --files 2 --dir "$work" <"$work/stdin" >"$work/fixture.out" 2>"$work/fixture.err" &
fixture_pid=$!
exec 8>"$work/stdin"
for _ in $(seq 600); do
    grep -q '^BENCH_FIXTURE ' "$work/fixture.out" 2>/dev/null && break
    kill -0 "$fixture_pid" 2>/dev/null || {
        cat "$work/fixture.err" >&2
        exit 1
    }
    sleep 0.1
done
config="$(sed -n 's/^BENCH_FIXTURE //p' "$work/fixture.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"])')"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf '\n[http]\nlisten = "127.0.0.1:%s"\n' "$port" >>"$config"

"$bin" --log-format json run -c "$config" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
archived=""
for _ in $(seq 600); do
    if "$bin" status -c "$config" --json 2>/dev/null | grep -q '"state": "archived"'; then
        archived=yes
        break
    fi
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$archived" ]]; then
    tail -n 20 "$work/daemon.log" >&2
    echo "check-metrics: the daemon did not archive the fixture's ticket" >&2
    exit 1
fi

curl -fsS "http://127.0.0.1:$port/metrics" >"$work/metrics.txt"
if ! lint="$(promtool check metrics <"$work/metrics.txt" 2>&1)" || [[ -n "$lint" ]]; then
    printf '%s\n' "$lint" >&2
    echo "check-metrics: promtool check metrics found problems in the scrape" >&2
    exit 1
fi
for family in process_cpu_seconds_total process_resident_memory_bytes process_open_fds \
    process_start_time_seconds dmstrack_ready dmstrack_filesystem_avail_bytes \
    dmstrack_filesystem_size_bytes dmstrack_last_archive_timestamp_seconds \
    dmstrack_api_requests_total dmstrack_uploads_total dmstrack_hook_runs_total \
    dmstrack_state_commit_failures_total 'dmstrack_tickets{state="archived"} 1'; do
    if ! grep -qF "$family" "$work/metrics.txt"; then
        echo "check-metrics: the scrape has no $family (the alert rules use it)" >&2
        exit 1
    fi
done
echo "promtool check metrics: a live scrape of $(grep -c '^# TYPE' "$work/metrics.txt") families is clean"
