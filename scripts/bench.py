#!/usr/bin/env python3
"""Benchmarks of dmstrack: archive speed, idle cost, CPU per status poll, 10,000 tickets, upload.

Commands (from the repository root; each builds the release binaries first unless --no-build):

    python3 scripts/bench.py                      # --archive (128 MiB, 512 MiB) + --waiting
    python3 scripts/bench.py --archive --sizes 512MiB --rounds 3 --max-ratio 0.4 --max-rss-mib 32
    python3 scripts/bench.py --waiting            # idle CPU with 1000 tickets, RSS with 10,000
    python3 scripts/bench.py --poll-cpu --rounds 3   # CPU per status poll vs the official SDK
    python3 scripts/bench.py --scale --rounds 3      # 10,000 tickets, state on the work disk
    python3 scripts/bench.py --poll-profile       # where dmstrack's CPU per poll goes (perf)
    python3 scripts/bench.py --upload --rounds 3  # 512 MiB to a local S3 server, vs boto3
    python3 scripts/bench.py --upload --s3-server s3s-fs --no-build   # another server
    python3 scripts/bench.py --upload --upload-variants 64MiB:4,16MiB:8 \\
        --boto3-variants default,64MiB:4,64MiB:4/nocrc --no-build
    python3 scripts/bench.py --poll-cpu --scale --no-build   # several modes in one run
    TOKIO_WORKER_THREADS=1 python3 scripts/bench.py --poll-cpu --work target/bench-1worker
                                                  # the daemon inherits the environment

With no mode flag it runs --archive and --waiting (--skip-waiting: --archive alone). --rounds
applies to --archive, --poll-cpu, --scale and --upload. Raw figures of every run also go to
WORK/results.json (WORK = --work, default target/bench).

--archive: for each export size, starts examples/bench_fixture (DMS and OSS simulators on 127.0.0.1
serving a generated export: SQL text in 8 files, about 7:1 deflated) and runs N rounds, each
timing both contenders on the same zip, alternating which goes first:

  (a) target/release/dmstrack run --once -c CONFIG   (fresh state and archive folders)
  (b) curl -sS -o FILE URL && unzip -q FILE -d OUT

Wall time is measured with time.monotonic(), CPU time with os.wait4(), peak RSS as each
process's own VmHWM (see spawn_measured for why not ru_maxrss). Before each timed run the previous outputs are deleted and `sync`
flushes dirty pages, so neither contender pays for the other's writeback; the page cache is
not dropped (that needs root). dmstrack's archive is compared with unzip's output (the same
paths, sizes and SHA-256), and with its own manifest.

Targets: dmstrack's median wall time <= --max-ratio x curl+unzip (default 0.7), its peak RSS
<= --max-rss-mib (default 64), archives identical.

--waiting: the daemon waiting on many tickets: CPU time over an idle window with 1000 tickets
answering INIT, and memory with 10,000 (no target; reported).

--poll-cpu: the CPU cost of one status poll, dmstrack against the official Python SDK. The
fixture's polling mode scripts one ticket answering DOWNLOADING forever on the loopback DMS
simulator; dmstrack's config polls it every --poll-interval-ms (initial = max interval,
jitter 0, max_requests_per_second 1000, [http] listen on a free port). Each contender runs twice per
round, once until --few polls and once until --many polls, and its CPU time (user + system of
the whole process, from wait4: nanosecond-based, unlike /proc/PID/stat's clock ticks) is taken
when it has exited; per poll = (cpu(many) - cpu(few)) / (polls(many) - polls(few)), so start-up
and shutdown cancel out. Polls are counted by the simulator (status queries answered with
Success: true); dmstrack is stopped with SIGTERM once the simulator has seen the wanted count
(dmstrack_polls_total from /metrics is read just before, the same in both runs, as a check).
The SDK is scripts/bench_sdk_poll.py in a venv created under target/bench-venv with
alibabacloud-dms-enterprise20181101==3.0.0, alibabacloud-tea-openapi==0.4.6 and
darabonba-core==1.0.9 pinned (V3 signing, the fixture's static AccessKey, http to 127.0.0.1);
it also reports its own in-process marginal cost (getrusage after --few calls and at the end).
Target: dmstrack per poll <= --max-poll-ratio x the SDK's (default 0.1). Each round also measures
the floor under that figure the same way (few vs many, wait4): examples/poll_floor makes the
same GET every --poll-interval-ms on one kept-alive connection to the same simulator (unsigned,
so it answers an error of about the same size) with a current-thread runtime as dmstrack's: the
timer wake alone, a hand-written HTTP/1.1 exchange on a tokio TcpStream, hyper's HTTP/1 client,
and reqwest (dmstrack's client) with nothing else (--floor-modes picks them). No target; it
tells what dmstrack's own work costs and what any client pays to wake up on this machine.

--scale: --scale-tickets (10,000) tickets answering INIT, state and archive under WORK (its
filesystem type is printed: it should be a real disk, not tmpfs), max_requests_per_second
--scale-rps (1000), poll interval 10 minutes. Measures the time until every ticket was queried
once (the fixture's BENCH_FIXTURE_POLLED), /healthz latency sampled every 50 ms during that
first round (a new connection per sample; max and p99), the daemon's peak RSS (VmHWM), its
CPU during the first round and over --idle-seconds after it (from /proc/PID/stat, clock
ticks, after a settling pause of --settle-seconds for the state writer's batches), and the
state database's dmstrack_state_commits_total, dmstrack_state_records_written_total and
dmstrack_state_commit_duration_seconds from /metrics. Targets: /healthz max <=
--max-healthz-ms (250), peak RSS <= --max-scale-rss-mib (64), idle CPU <= --max-idle-cpu
(0.05 s).

--poll-profile: dmstrack polling as in --poll-cpu, measured three ways: 10 s plain (user and
system CPU and context switches per poll, from /proc/PID/task/*), 10 s under `strace -c -f`
(system calls per poll), then --profile-seconds under `perf record -e cpu-clock --call-graph
dwarf` (needs perf: apt-get install linux-perf), broken down by the task the CPU was spent
in, the parts of the poll task, the kind of instruction, and the top functions (self and
inclusive). No target; it explains a --poll-cpu miss.

--upload: the upload of a --upload-size (512 MiB) zip to a local S3 server on 127.0.0.1, dmstrack
against boto3's managed transfer of the same file to the same server. The server is moto 5.2.5
(the venv of scripts/moto-venv.sh, the one the S3 tests use), run by scripts/bench_s3.py serve
as tests/support/moto.rs runs it: authentication turns on after an IAM user, its allow-all
policy and its access key were created with the unsigned allowance, then the bucket; bodies
stay in memory (MOTO_S3_DEFAULT_KEY_BUFFER_SIZE = 4 GiB; --moto-on-disk: moto's default,
temporary files past 5 MiB), and every request is logged with the server's own times. The
fixture's upload mode (examples/bench_fixture --upload-only SIZE) writes, once, a file of
random bytes (the upload does not read a zip's structure), and before every dmstrack run
(its `stage` command) deletes archive/ and state/ and publishes the ticket's archive anew with
dmstrack's own `publish`: <archive>/<order_id>/<key>/x_REDO_1.zip (a hard link to that file)
and manifest.json. Its config has [upload] url = "s3://bench/bench" at moto, the key's secret
in a file, part_size and concurrency from --upload-variants (PART:CONCURRENCY, comma-separated;
the first one is held to the targets). dmstrack finds the archive at start-up, takes it as
archived (no download; DMS is not even queried), and uploads it: the zip with a multipart
upload, then manifest.json. Each round runs, in alternating order, every dmstrack variant
(`dmstrack run --once`) and every --boto3-variants entry (scripts/bench_s3.py upload:
S3Client.upload_file with the default TransferConfig, 8 MiB parts and 10 threads, or
PART:CONCURRENCY; /nocrc sets request_checksum_calculation = when_required, so boto3 declares
no per-part CRC32; dmstrack sends Content-MD5 and, on S3, x-amz-checksum-crc32 with every part). --s3-server s3s-fs runs
the same rounds against s3s-fs 0.14.1 instead, a Rust S3 server over a folder (none of the S3
servers on PyPI besides moto has both SigV4 and multipart uploads: local-s3-server, pys3local
and s3serve have no multipart, pys3server is a framework without a storage backend), installed
once with `cargo install s3s-fs@0.14.1 --features binary --locked --root target/s3s-fs`,
with one made-up key and its folder on tmpfs (/dev/shm), so bodies stay in memory as with
moto; its per-part and Complete times come from its debug log (the end of each part only, so
"parts" starts at dmstrack's "multipart upload" log line, or at boto3's upload_file call).

Measured per run: the upload's wall time (dmstrack: from its JSON log line "dmstrack started"
to "uploaded", which covers planning, HeadObject, the multipart upload (each part digested as
it is read to be sent) and manifest.json, a few ms after the process began; boto3: the upload_file call alone,
timed inside the process after the imports and the client were made, so Python's ~0.3 s of
start-up is not counted), MiB/s from it, the process's own wall time, CPU time (wait4) and
peak RSS (VmHWM); moto's CPU time over the run (/proc, clock ticks); and from moto's request
log the server's view: the time from the start to the first request,
the span of the part uploads ("bodies"), and the CompleteMultipartUpload. After each run the
objects are checked with HeadObject (size, and an ETag equal to the multipart ETag computed
here with hashlib from the file: MD5 of the parts' MD5s, "-N") and deleted. Targets for the
first dmstrack variant: >= --min-upload-mibs (200) MiB/s, peak RSS <= --max-upload-rss-mib
(64), wall time <= --max-upload-ratio (1.0) x the first boto3 variant's.

Every mode reports median and spread (min..max) over its rounds, and the machine's load:
the load average and the share of all cores busy during the measurement (/proc/stat), so runs
on a busy machine can be told apart.

Exit status: 0 when every target holds, 1 when one misses, 2 on a setup problem. Python 3
standard library only (the SDK venv and the moto venv are created with pip from PyPI).
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "target" / "release"
DMSTRACK = RELEASE / "dmstrack"
FIXTURE = RELEASE / "examples" / "bench_fixture"
POLL_FLOOR = RELEASE / "examples" / "poll_floor"
FLOOR_MODES = ("sleep", "socket", "hyper", "reqwest")
SDK_POLL = REPO / "scripts" / "bench_sdk_poll.py"
SDK_VENV = REPO / "target" / "bench-venv"
SDK_PINS = {
    "alibabacloud-dms-enterprise20181101": "3.0.0",
    "alibabacloud-tea-openapi": "0.4.6",
    "darabonba-core": "1.0.9",
}
MIB = 1024 * 1024
NAN = float("nan")


def parse_size(text):
    units = {"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def human(n):
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def fail_setup(message):
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(2)


def check_tools():
    missing = [tool for tool in ("curl", "unzip", "sync") if shutil.which(tool) is None]
    if missing:
        hints = {"unzip": "apt-get install unzip", "curl": "apt-get install curl"}
        for tool in missing:
            print(f"bench: `{tool}` is missing; install it ({hints.get(tool, 'coreutils')})",
                  file=sys.stderr)
        sys.exit(2)


def build():
    command = ["cargo", "build", "--release", "--examples", "--bins"]
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        fail_setup("the release build failed")


class Measured:
    """One finished child: wall seconds, peak RSS (KiB), CPU seconds, exit status."""

    def __init__(self, wall, maxrss_kib, cpu, status):
        self.wall = wall
        self.maxrss_kib = maxrss_kib
        self.cpu = cpu
        self.status = status


def vm_hwm_kib(pid):
    """The process's own peak RSS so far (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def spawn_measured(argv, log, env=None):
    """Runs argv to its end with stdout+stderr into `log`; measures it.

    Peak RSS is the child's own VmHWM, read every few ms until it exits. ru_maxrss from
    wait4 is not used for it: Linux starts a spawned child's ru_maxrss at the spawning
    process's peak RSS (the memory it had before exec), so from Python every child would
    show at least ~18 MiB. wait4 still gives the exit status and CPU times.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    started = time.monotonic()
    pid = os.posix_spawnp(argv[0], argv, env or os.environ, file_actions=actions)
    peak = [0]
    exited = threading.Event()

    def sample():
        while not exited.is_set():
            peak[0] = max(peak[0], vm_hwm_kib(pid) or 0)
            exited.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Wait without reaping, so the pid cannot be reused while the sampler still reads it.
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - started
    exited.set()
    sampler.join()
    _, status, usage = os.wait4(pid, 0)
    return Measured(wall, peak[0], usage.ru_utime + usage.ru_stime,
                    os.waitstatus_to_exitcode(status))


def drop_outputs(*paths):
    """Deletes earlier outputs and flushes dirty pages, so the next timed run starts clean."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    subprocess.run(["sync"], check=True)


class Fixture:
    """examples/bench_fixture as a child; it exits when our end of its stdin closes."""

    def __init__(self, args, work, log, env=None):
        work.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(FIXTURE), "--dir", str(work), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.info = json.loads(self.wait_for("BENCH_FIXTURE"))

    def wait_for(self, tag):
        """The payload of the next stdout line tagged `tag` (earlier lines are skipped)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                fail_setup(f"the fixture stopped before saying {tag}; see {self.log.name}")
            name, _, payload = line.strip().partition(" ")
            if name == tag:
                return payload

    def command(self, command, tag):
        """Sends one command line and returns the payload of its answer tagged `tag`."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.wait_for(tag)

    def queries(self, wait_for=None, limit_s=120):
        """{"queries", "answered"}: status queries the simulator received / answered with
        Success: true; with `wait_for`, once that many were received (or after `limit_s`)."""
        command = "count" if wait_for is None else f"await {wait_for} {limit_s}"
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.wait_for("BENCH_FIXTURE_QUERIES"))

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def tree_digest(root):
    """{relative path: (size, sha256)} for files, and the set of relative directories."""
    files, dirs = {}, set()
    for folder, subdirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        for sub in subdirs:
            dirs.add((rel / sub).as_posix())
        for name in names:
            path = Path(folder) / name
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    sha.update(chunk)
            files[(rel / name).as_posix()] = (path.stat().st_size, sha.hexdigest())
    return files, dirs


def verify(archive_root, unzip_out):
    """Problems found comparing dmstrack's archive with unzip's output (empty = identical)."""
    manifests = list(archive_root.glob("*/*/manifest.json"))
    if len(manifests) != 1:
        return [f"expected one published archive under {archive_root}, found {len(manifests)}"]
    published = manifests[0].parent
    ours, our_dirs = tree_digest(published / "files")
    theirs, their_dirs = tree_digest(unzip_out)
    problems = []
    if set(ours) != set(theirs):
        problems.append(f"different files: only dmstrack {sorted(set(ours) - set(theirs))}, "
                        f"only unzip {sorted(set(theirs) - set(ours))}")
    problems += [f"{path}: dmstrack {ours[path]} != unzip {theirs[path]}"
                 for path in sorted(set(ours) & set(theirs)) if ours[path] != theirs[path]]
    if our_dirs != their_dirs:
        problems.append(f"different folders: dmstrack {sorted(our_dirs)}, unzip {sorted(their_dirs)}")
    manifest = json.loads(manifests[0].read_text())
    listed = {f["path"]: (f["bytes"], f["sha256"]) for f in manifest["files"]}
    if listed != ours:
        problems.append("manifest.json does not match the published files")
    return problems


def bench_size(size, rounds, work_root):
    work = work_root / f"size-{size}"
    fixture = Fixture(["--size", str(size)], work, work / "fixture.log")
    info = fixture.info
    config = Path(info["config"])
    state, archive = config.parent / "state", config.parent / "archive"
    download, unzip_out = work / "curl.zip", work / "unzipped"
    unzip_env = dict(os.environ, LC_ALL="C.UTF-8")  # UTF-8 entry names stay UTF-8
    print(f"\n{human(info['sql_bytes'])} of SQL in {info['files']} files, "
          f"zip {info['zip_bytes'] / MIB:.1f} MiB; {rounds} rounds; load {load_average()}; "
          f"busiest now: {busiest_processes()}", flush=True)
    load = SystemLoad()

    ours, theirs, problems = [], [], []

    def run_dmstrack(i):
        drop_outputs(state, archive)
        m = spawn_measured([str(DMSTRACK), "run", "--once", "-c", str(config),
                            "--log-format", "json"], work / f"dmstrack-{i}.log")
        if m.status != 0:
            problems.append(f"round {i}: dmstrack exited {m.status}; see {work}/dmstrack-{i}.log")
        ours.append(m)
        print(f"  round {i} dmstrack     {m.wall:6.2f} s  {m.maxrss_kib / 1024:5.1f} MiB  "
              f"cpu {m.cpu:5.2f} s", flush=True)

    def run_curl_unzip(i):
        drop_outputs(download, unzip_out)
        started = time.monotonic()
        curl = spawn_measured(["curl", "-sS", "-o", str(download), info["url"]],
                              work / f"curl-{i}.log")
        unzip = spawn_measured(["unzip", "-q", str(download), "-d", str(unzip_out)],
                               work / f"unzip-{i}.log", unzip_env) if curl.status == 0 else None
        wall = time.monotonic() - started
        if curl.status != 0 or unzip is None or unzip.status != 0:
            problems.append(f"round {i}: curl+unzip failed; see {work}/curl-{i}.log, unzip-{i}.log")
            unzip = unzip or curl
        m = Measured(wall, max(curl.maxrss_kib, unzip.maxrss_kib), curl.cpu + unzip.cpu, 0)
        m.parts = (curl, unzip)
        theirs.append(m)
        print(f"  round {i} curl+unzip   {m.wall:6.2f} s  {m.maxrss_kib / 1024:5.1f} MiB  "
              f"cpu {m.cpu:5.2f} s  (curl {curl.wall:.2f} s, unzip {unzip.wall:.2f} s)",
              flush=True)

    try:
        for i in range(1, rounds + 1):
            # Alternate who goes first, so neither always inherits a warmer cache.
            if i % 2:
                run_curl_unzip(i)
                run_dmstrack(i)  # keeps unzip's output: it is compared below
            else:
                run_dmstrack(i)
                run_curl_unzip(i)
            if not problems:
                problems += [f"round {i}: {p}" for p in verify(archive, unzip_out)]
    finally:
        fixture.stop()
    print(f"  all cores busy {load.busy_share():.0%} during these rounds; load {load_average()}",
          flush=True)
    return {
        "sql_bytes": info["sql_bytes"],
        "zip_bytes": info["zip_bytes"],
        "ours": ours,
        "theirs": theirs,
        "problems": problems,
    }


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: field 14 (utime) and 15 (stime) are at offsets 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_kib(pid):
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def bench_waiting(tickets, idle_seconds, work_root):
    """Starts the daemon on `tickets` INIT tickets; CPU over an idle window and memory."""
    work = work_root / f"waiting-{tickets}"
    fixture = Fixture(["--waiting", str(tickets)], work, work / "fixture.log")
    config = Path(fixture.info["config"])
    drop_outputs(config.parent / "state", config.parent / "archive")
    log = open(work / "dmstrack.log", "w")
    started = time.monotonic()
    daemon = subprocess.Popen([str(DMSTRACK), "run", "-c", str(config), "--log-format", "json"],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        polled = json.loads(fixture.wait_for("BENCH_FIXTURE_POLLED"))
        first_round = time.monotonic() - started
        time.sleep(2)  # let the last answers be handled and saved
        startup_cpu = proc_cpu_seconds(daemon.pid)
        memory = proc_memory_kib(daemon.pid)
        time.sleep(idle_seconds)
        idle_cpu = proc_cpu_seconds(daemon.pid) - startup_cpu
        if daemon.poll() is not None:
            fail_setup(f"the daemon stopped early; see {work}/dmstrack.log")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        log.close()
        fixture.stop()
    return {
        "tickets": tickets,
        "queries": polled["queries"],
        "first_round_s": first_round,
        "startup_cpu_s": startup_cpu,
        "idle_s": idle_seconds,
        "idle_cpu_s": idle_cpu,
        "rss_kib": memory["VmRSS"],
        "peak_rss_kib": memory["VmHWM"],
    }


# ---------------------------------------------------------------------------------------
# Shared by --poll-cpu and --scale
# ---------------------------------------------------------------------------------------


def spread(values, fmt="{:.3f}"):
    """'median (min..max)' of the values, each formatted with `fmt`."""
    values = list(values)
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}..{fmt.format(max(values))})")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for dmstrack's [http] listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SystemLoad:
    """The machine's load over a window: load average and the share of all cores busy."""

    def __init__(self):
        self.started = self._jiffies()

    @staticmethod
    def _jiffies():
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]), idle

    def busy_share(self):
        total, idle = self._jiffies()
        dt = total - self.started[0]
        return 1 - (idle - self.started[1]) / dt if dt else 0.0


def load_average():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busiest_processes(count=4, window=1.0):
    """The processes that used most CPU over the next `window` seconds, as 'name NN%'."""

    def snapshot():
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            ticks[(stat.parent.name, name)] = int(fields[11]) + int(fields[12])
        return ticks

    before = snapshot()
    time.sleep(window)
    after = snapshot()
    hz = os.sysconf("SC_CLK_TCK")
    used = sorted(((after[k] - before.get(k, after[k])) / hz / window, k[1]) for k in after)
    busy = [f"{name} {share:.0%}" for share, name in reversed(used[-count:]) if share > 0]
    return ", ".join(busy) or "none"


def filesystem_of(path):
    """(mount point, type, device) of the filesystem holding `path`, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("/", "?", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, fstype = line.split()[:3]
        mount = mount.replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, fstype, device)
    return best


def start_daemon(config, log):
    """Starts `dmstrack run -c config` with stdout+stderr into `log`; returns its pid."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    argv = [str(DMSTRACK), "run", "-c", str(config), "--log-format", "json"]
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)


def stop_daemon(pid, timeout=30):
    """SIGTERM, then reaps it: (exit code, CPU seconds from wait4)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        time.sleep(0.01)


def daemon_alive(pid):
    """True while the child has not exited (it is not reaped here)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return info is None


def http_get(port, path, timeout=10):
    """(status, body text, seconds) of GET http://127.0.0.1:port/path on a new connection."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read().decode()
        return response.status, body, time.monotonic() - started
    finally:
        connection.close()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape_metrics(port):
    """{(name, labels text): value} from dmstrack's /metrics."""
    status, body, _ = http_get(port, "/metrics")
    if status != 200:
        fail_setup(f"/metrics answered {status}")
    values = {}
    for line in body.splitlines():
        match = METRIC_LINE.match(line)
        if match:
            values[(match[1], match[2] or "")] = float(match[3])
    return values


def metric_sum(values, name):
    return sum(v for (n, _), v in values.items() if n == name)


def histogram_quantile(values, name, q):
    """Upper bound of the bucket holding quantile q of a Prometheus histogram (or None)."""
    buckets = []
    for (n, labels), v in values.items():
        if n == f"{name}_bucket":
            le = re.search(r'le="([^"]+)"', labels)[1]
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = q * buckets[-1][1]
    return next(le for le, count in buckets if count >= wanted)


# ---------------------------------------------------------------------------------------
# --poll-cpu
# ---------------------------------------------------------------------------------------


def ensure_sdk_venv():
    """The Python of target/bench-venv with the pinned SDK packages (created as needed)."""
    python = SDK_VENV / "bin" / "python"
    wanted = [f"{name}=={version}" for name, version in SDK_PINS.items()]
    if not python.exists():
        print(f"$ python3 -m venv {SDK_VENV}", flush=True)
        if subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)]).returncode != 0:
            fail_setup("cannot create the SDK venv (apt-get install python3-venv?)")
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True,
                            text=True).stdout.lower().replace("_", "-")
    if any(pin.lower() not in frozen.splitlines() for pin in wanted):
        print(f"$ {python} -m pip install -q {' '.join(wanted)}", flush=True)
        if subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted]).returncode:
            fail_setup("cannot install the pinned SDK into the venv")
    return python


def poll_dmstrack(fixture, config, port, polls, log):
    """One dmstrack run stopped after `polls` polls: (CPU s, answered polls, metrics polls)."""
    drop_outputs(config.parent / "state", config.parent / "archive")
    before = fixture.queries()
    pid = start_daemon(config, log)
    try:
        reached = fixture.queries(wait_for=before["queries"] + polls)
        if reached["queries"] < before["queries"] + polls or not daemon_alive(pid):
            fail_setup(f"dmstrack made {reached['queries'] - before['queries']} of {polls} "
                       f"polls; see {log}")
        # The same scrape in both runs, so its cost cancels out too.
        counted = metric_sum(scrape_metrics(port), "dmstrack_polls_total")
    finally:
        status, cpu = stop_daemon(pid)
    if status != 0:
        fail_setup(f"dmstrack exited {status} on SIGTERM; see {log}")
    after = fixture.queries()
    return cpu, after["answered"] - before["answered"], counted


def poll_sdk(fixture, python, polls, few, interval, log):
    """One SDK run of `polls` calls: (CPU s from wait4, answered polls, its own report)."""
    info = fixture.info
    before = fixture.queries()
    argv = [str(python), str(SDK_POLL), "--endpoint", info["dms_endpoint"].removeprefix("http://"),
            "--access-key-id", info["access_key_id"], "--order-id", str(info["order_id"]),
            "--download-key-id", info["download_key_id"], "--polls", str(polls),
            "--mark", str(min(few, polls)), "--interval", str(interval)]
    env = dict(os.environ, BENCH_SDK_ACCESS_KEY_SECRET=info["access_key_secret"])
    m = spawn_measured(argv, log, env)
    if m.status != 0:
        fail_setup(f"the SDK poller exited {m.status}; see {log}")
    after = fixture.queries()
    report = json.loads(Path(log).read_text().strip().splitlines()[-1])
    return m.cpu, after["answered"] - before["answered"], report


def poll_floor(fixture, mode, polls, interval_ms, log):
    """One examples/poll_floor run of `polls` requests: CPU s from wait4."""
    info = fixture.info
    url = (f"{info['dms_endpoint']}/?Action=QueryDataTrackResultDownloadStatus"
           f"&OrderId={info['order_id']}")
    m = spawn_measured([str(POLL_FLOOR), mode, url, str(polls), str(interval_ms)], log)
    if m.status != 0:
        fail_setup(f"poll_floor {mode} exited {m.status}; see {log}")
    return m.cpu


def bench_poll_cpu(rounds, few, many, interval_ms, work_root, floor_modes=FLOOR_MODES):
    work = work_root / "poll-cpu"
    port = free_port()
    fixture = Fixture(["--polling", "--poll-interval", f"{interval_ms}ms", "--max-rps", "1000",
                       "--http-listen", f"127.0.0.1:{port}"], work, work / "fixture.log")
    config = Path(fixture.info["config"])
    python = ensure_sdk_venv()
    print(f"\nCPU per status poll: one ticket polled every {interval_ms} ms; {few} vs {many} "
          f"polls; {rounds} rounds; load {load_average()}; busiest now: {busiest_processes()}",
          flush=True)
    load = SystemLoad()
    rows = []
    try:
        for i in range(1, rounds + 1):
            row = {}

            def ours():
                a = poll_dmstrack(fixture, config, port, few, work / f"dmstrack-{i}-few.log")
                b = poll_dmstrack(fixture, config, port, many, work / f"dmstrack-{i}-many.log")
                row["dmstrack"] = {"few": a, "many": b,
                                   "per_poll_s": (b[0] - a[0]) / (b[1] - a[1])}
                print(f"  round {i} dmstrack  {a[1]:4d} polls {a[0]:.3f} s, {b[1]:4d} polls "
                      f"{b[0]:.3f} s (metrics: {a[2]:.0f}, {b[2]:.0f} polls) -> "
                      f"{row['dmstrack']['per_poll_s'] * 1000:.3f} ms/poll", flush=True)

            def theirs():
                a = poll_sdk(fixture, python, few, few, interval_ms / 1000,
                             work / f"sdk-{i}-few.log")
                b = poll_sdk(fixture, python, many, few, interval_ms / 1000,
                             work / f"sdk-{i}-many.log")
                own = b[2]
                inside = (own["cpu_end_s"] - own["cpu_mark_s"]) / (own["polls"] - own["mark"])
                row["sdk"] = {"few": a[:2], "many": b[:2], "report": own,
                              "per_poll_s": (b[0] - a[0]) / (b[1] - a[1]),
                              "in_process_per_poll_s": inside}
                print(f"  round {i} SDK       {a[1]:4d} polls {a[0]:.3f} s, {b[1]:4d} polls "
                      f"{b[0]:.3f} s -> {row['sdk']['per_poll_s'] * 1000:.3f} ms/poll "
                      f"(in-process {inside * 1000:.3f}; statuses {own['statuses']})", flush=True)

            def floors():
                row["floor"] = {}
                for mode in floor_modes:
                    a = poll_floor(fixture, mode, few, interval_ms, work / f"floor-{mode}.log")
                    b = poll_floor(fixture, mode, many, interval_ms, work / f"floor-{mode}.log")
                    row["floor"][mode] = (b - a) / (many - few)
                print(f"  round {i} floor     " + ", ".join(
                    f"{mode} {cost * 1000:.3f}" for mode, cost in row["floor"].items())
                    + " ms/poll", flush=True)

            # Alternate who goes first.
            for contender in ((ours, theirs) if i % 2 else (theirs, ours)):
                contender()
            floors()
            rows.append(row)
    finally:
        fixture.stop()
    return {"interval_ms": interval_ms, "few": few, "many": many, "rounds": rows,
            "busy_share": load.busy_share(), "load_after": load_average()}


# ---------------------------------------------------------------------------------------
# --scale
# ---------------------------------------------------------------------------------------


class HealthProbe:
    """GET /healthz every `period` seconds on a new connection, until stopped."""

    def __init__(self, port, period=0.05):
        self.port, self.period = port, period
        self.latencies, self.failures, self.refused = [], [], 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        next_at = time.monotonic()
        while not self.stopped.is_set():
            try:
                status, _, seconds = http_get(self.port, "/healthz")
                if status == 200:
                    self.latencies.append(seconds)
                else:
                    self.failures.append(f"HTTP {status}")
            except ConnectionRefusedError:
                if self.latencies:
                    self.failures.append("refused")
                else:
                    self.refused += 1  # not listening yet
            except OSError as err:
                self.failures.append(str(err))
            next_at = max(next_at + self.period, time.monotonic())
            self.stopped.wait(next_at - time.monotonic())

    def stop(self):
        self.stopped.set()
        self.thread.join()

    def summary(self):
        ordered = sorted(self.latencies)
        if not ordered:
            return {"samples": 0, "failures": self.failures}
        return {"samples": len(ordered), "failures": self.failures,
                "max_ms": ordered[-1] * 1000,
                "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
                "median_ms": statistics.median(ordered) * 1000}


def state_metrics(values):
    name = "dmstrack_state_commit_duration_seconds"
    count = metric_sum(values, f"{name}_count")
    return {
        "commits": metric_sum(values, "dmstrack_state_commits_total"),
        "records": metric_sum(values, "dmstrack_state_records_written_total"),
        "commit_failures": metric_sum(values, "dmstrack_state_commit_failures_total"),
        "commit_mean_ms": metric_sum(values, f"{name}_sum") / count * 1000 if count else None,
        "commit_p99_le_ms": (histogram_quantile(values, name, 0.99) or 0) * 1000,
        "commit_max_le_ms": (histogram_quantile(values, name, 1.0) or 0) * 1000,
        "polls": metric_sum(values, "dmstrack_polls_total"),
    }


def bench_scale_once(i, tickets, rps, idle_seconds, settle_seconds, work_root):
    work = work_root / f"scale-{tickets}"
    port = free_port()
    fixture = Fixture(["--waiting", str(tickets), "--max-rps", str(rps),
                       "--http-listen", f"127.0.0.1:{port}"], work, work / f"fixture-{i}.log")
    config = Path(fixture.info["config"])
    drop_outputs(config.parent / "state", config.parent / "archive")
    log = work / f"dmstrack-{i}.log"
    load = SystemLoad()
    started = time.monotonic()
    pid = start_daemon(config, log)
    probe = HealthProbe(port)
    ended = threading.Event()

    def watchdog():  # a daemon that dies would leave us waiting for the fixture forever
        while not ended.wait(0.2):
            if not daemon_alive(pid):
                fixture.proc.kill()
                return

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        polled = json.loads(fixture.wait_for("BENCH_FIXTURE_POLLED"))
        first_round = time.monotonic() - started
        probe.stop()
        first_round_cpu = proc_cpu_seconds(pid)
        at_first_round = state_metrics(scrape_metrics(port))
        busy_first_round = load.busy_share()
        time.sleep(settle_seconds)  # the writer's last batch and any late answers
        idle_start = proc_cpu_seconds(pid)
        idle_load = SystemLoad()
        time.sleep(idle_seconds)
        idle_cpu = proc_cpu_seconds(pid) - idle_start
        busy_idle = idle_load.busy_share()
        memory = proc_memory_kib(pid)
        at_end = state_metrics(scrape_metrics(port))
    finally:
        ended.set()
        probe.stop()
        status, total_cpu = stop_daemon(pid)
        fixture.stop()
    if status != 0:
        fail_setup(f"dmstrack exited {status} on SIGTERM; see {log}")
    return {
        "queries": polled["queries"], "first_round_s": first_round,
        "first_round_cpu_s": first_round_cpu, "healthz": probe.summary(),
        "idle_s": idle_seconds, "idle_cpu_s": idle_cpu,
        "rss_kib": memory["VmRSS"], "peak_rss_kib": memory["VmHWM"], "total_cpu_s": total_cpu,
        "state_at_first_round": at_first_round, "state_at_end": at_end,
        "busy_share_first_round": busy_first_round, "busy_share_idle": busy_idle,
        "load_after": load_average(),
    }


def bench_scale(rounds, tickets, rps, idle_seconds, settle_seconds, work_root):
    work = work_root / f"scale-{tickets}"
    work.mkdir(parents=True, exist_ok=True)
    mount, fstype, device = filesystem_of(work)
    statfs = subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True,
                            text=True).stdout.strip()
    print(f"\n{tickets} tickets at {rps} requests/s; state on {work}: {fstype} ({device} on "
          f"{mount}; stat -f: {statfs}); {rounds} rounds; load {load_average()}; "
          f"busiest now: {busiest_processes()}", flush=True)
    if fstype in ("tmpfs", "ramfs", "overlay"):
        print(f"  warning: {work} is on {fstype}, not a real disk", flush=True)
    runs = []
    for i in range(1, rounds + 1):
        r = bench_scale_once(i, tickets, rps, idle_seconds, settle_seconds, work_root)
        h, st = r["healthz"], r["state_at_end"]
        print(f"  round {i}: first round {r['first_round_s']:.1f} s ({r['queries']} queries, "
              f"CPU {r['first_round_cpu_s']:.2f} s, machine busy "
              f"{r['busy_share_first_round']:.0%}); /healthz {h['samples']} samples max "
              f"{h.get('max_ms', float('nan')):.1f} ms p99 {h.get('p99_ms', float('nan')):.1f} ms"
              f"{' failures ' + str(h['failures'][:3]) if h['failures'] else ''}; "
              f"peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB; idle CPU {r['idle_cpu_s']:.2f} s "
              f"in {r['idle_s']:.0f} s; commits {st['commits']:.0f}, records "
              f"{st['records']:.0f}, commit mean {st['commit_mean_ms'] or 0:.1f} ms",
              flush=True)
        runs.append(r)
    return {"tickets": tickets, "rps": rps, "filesystem": {"mount": mount, "type": fstype,
            "device": device, "stat_f": statfs}, "runs": runs}


# ---------------------------------------------------------------------------------------
# --poll-profile
# ---------------------------------------------------------------------------------------

# Where a sample's CPU went, by the task it ran in: the first rule (in this order) whose
# pattern occurs anywhere in the sample's stack names it.
PROFILE_TASKS = [
    ("poll task: Scheduler::start_poll_or_export -> DmsClient::call", "start_poll_or_export"),
    ("hyper connection task (socket writes and reads)", "Dispatcher<"),
    ("state writer (watch::state)", "watch::state::"),
    ("scheduler loop: watch::Scheduler::run", "watch::Scheduler::run"),
    ("HTTP listener (axum)", "axum::"),
    ("tokio worker parked: epoll_wait / futex / timer wheel", "park_internal|park_timeout|Driver::park"),
    ("tokio worker loop (maintenance, stealing, wake-ups)", "multi_thread::worker::run"),
]
# Within the poll task: the first rule matching a frame below start_poll_or_export.
PROFILE_POLL_PARTS = [
    ("V3 signing (net::signer::sign)", r"net::signer::"),
    ("response JSON (serde_json)", r"serde_json::"),
    ("URL building / parsing (url::, idna::)", r"url::|idna::"),
    ("metrics / telemetry", r"telemetry::"),
    ("reqwest + hyper client (request building, pool, send)", r"reqwest::|hyper::|hyper_util::|tower::|http::"),
    ("tokio (spawn, wake, timers)", r"tokio::"),
]
# What the sampled instruction itself was (the leaf frame).
PROFILE_LEAF = [
    ("kernel: context switch / scheduler / wake-up",
     r"finish_task_switch|__schedule|schedule|try_to_wake_up|_raw_spin_unlock|futex|ttwu|enqueue|dequeue|update_curr|select_task_rq|pick_next"),
    ("kernel: TCP/IP loopback (both ends of the socket)",
     r"tcp_|ip_|sock_|skb|net_|__dev_queue|loopback|netif|napi|inet_|__sys_recv|sk_"),
    ("kernel: epoll", r"ep_|epoll"),
    ("kernel: other", r"\[kernel"),
    ("libc malloc / free", r"malloc|_int_free|cfree|free@|realloc|tcache|calloc"),
    ("libc memcpy / memmove / memset / memcmp", r"__mem"),
    ("libc other / vdso", r"libc\.so|libm\.so|\[vdso\]|ld-linux"),
    ("dmstrack binary (Rust code)", r"."),
]
PROFILE_GENERIC = re.compile(
    r"^(start_thread|clone3|std::|core::ops::function|tokio::runtime::(task|blocking|scheduler::multi_thread::worker::(run|Context::run_task))|"
    r"<std::|\[unknown\]|0x|entry_SYSCALL|do_syscall_64|<core::future::poll_fn|tokio::runtime::task)")


def read_perf_samples(perf_data):
    """[(leaf 'sym (dso)', [frame symbols leaf..root])] from `perf script`."""
    out = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "ip,sym,dso"],
                         capture_output=True, text=True).stdout
    samples, frames = [], []
    for line in out.splitlines() + [""]:
        line = line.strip()
        if not line:
            if frames:
                samples.append(frames)
            frames = []
            continue
        _, _, rest = line.partition(" ")
        frames.append(rest)
    return samples


def first_rule(rules, text):
    for name, pattern in rules:
        if re.search(pattern, text):
            return name
    return "other"


def profile_tables(samples):
    total = len(samples)
    tasks, parts, leaves, selfs, inclusive = {}, {}, {}, {}, {}
    for frames in samples:
        stack = "\n".join(frames)
        task = first_rule(PROFILE_TASKS, stack)
        tasks[task] = tasks.get(task, 0) + 1
        if task == PROFILE_TASKS[0][0]:
            below = []
            for frame in frames:
                if "start_poll_or_export" in frame:
                    break
                below.append(frame)
            part = first_rule(PROFILE_POLL_PARTS, "\n".join(below))
            if part == "other":
                part = first_rule(PROFILE_LEAF, frames[0]) + " (directly)"
            parts[part] = parts.get(part, 0) + 1
        leaf = first_rule(PROFILE_LEAF, frames[0])
        leaves[leaf] = leaves.get(leaf, 0) + 1
        name = frames[0].rsplit(" (", 1)[0]
        selfs[name] = selfs.get(name, 0) + 1
        for sym in {f.rsplit(" (", 1)[0] for f in frames}:
            if not PROFILE_GENERIC.match(sym):
                inclusive[sym] = inclusive.get(sym, 0) + 1

    def table(title, counts, limit=None, of=total):
        print(f"\n| {title} | % of samples |")
        print("|---|---|")
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]:
            print(f"| {name.replace('|', '/')} | {100 * n / of:.1f} |")

    table("task the CPU was spent in", tasks)
    poll_total = tasks.get(PROFILE_TASKS[0][0], 0)
    if poll_total:
        table(f"inside the poll task ({100 * poll_total / total:.1f} % of all; "
              f"shares of all samples)", parts)
    for title, key in (("poll task", "start_poll_or_export"),
                       ("scheduler loop", "watch::Scheduler::run"),
                       ("hyper connection task", "Dispatcher<")):
        below_counts = {}
        for frames in samples:
            if not any(key in f for f in frames):
                continue
            below = set()
            for frame in frames:
                if key in frame:
                    break
                below.add(frame.rsplit(" (", 1)[0])
            for sym in below:
                if not PROFILE_GENERIC.match(sym):
                    below_counts[sym] = below_counts.get(sym, 0) + 1
        table(f"inside the {title}: top functions, inclusive (% of all samples)",
              below_counts, 20)
    table("what the sampled instruction was (self cost by kind)", leaves)
    table("top functions, self", selfs, 25)
    table("top functions, inclusive (generic runtime frames left out)", inclusive, 40)
    return {"samples": total, "tasks": tasks, "poll_parts": parts, "leaves": leaves,
            "self_top": dict(sorted(selfs.items(), key=lambda kv: -kv[1])[:40])}


def thread_counters(pid):
    """{"utime", "stime" (clock ticks), "voluntary", "involuntary" (context switches)} summed
    over the process's live threads, and the thread count."""
    totals = {"utime": 0, "stime": 0, "voluntary": 0, "involuntary": 0, "threads": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        totals["utime"] += int(fields[11])
        totals["stime"] += int(fields[12])
        totals["voluntary"] += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status)[1])
        totals["involuntary"] += int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status)[1])
        totals["threads"] += 1
    return totals


def per_poll_counters(fixture, pid, seconds):
    """Polls, CPU split and context switches per poll over a plain window (no tracer)."""
    before, polls_before = thread_counters(pid), fixture.queries()
    time.sleep(seconds)
    after, polls_after = thread_counters(pid), fixture.queries()
    polls = polls_after["answered"] - polls_before["answered"]
    hz = os.sysconf("SC_CLK_TCK")
    delta = {k: after[k] - before[k] for k in ("utime", "stime", "voluntary", "involuntary")}
    return {"polls": polls, "threads": after["threads"],
            "user_ms_per_poll": delta["utime"] / hz / polls * 1000,
            "system_ms_per_poll": delta["stime"] / hz / polls * 1000,
            "voluntary_switches_per_poll": delta["voluntary"] / polls,
            "involuntary_switches_per_poll": delta["involuntary"] / polls}


def syscalls_per_poll(fixture, pid, seconds):
    """{syscall: calls per poll} from `strace -c -f` attached for `seconds` (None without
    strace). strace slows the process; the counts stay right."""
    if shutil.which("strace") is None:
        return None
    before = fixture.queries()
    traced = subprocess.run(["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p",
                             str(pid)], capture_output=True, text=True)
    polls = fixture.queries()["answered"] - before["answered"]
    counts = {}
    for line in traced.stderr.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3]) / polls
    return {"polls": polls, "per_poll": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def bench_poll_profile(seconds, interval_ms, frequency, work_root):
    """perf record (cpu-clock, DWARF call graphs) of dmstrack polling one ticket."""
    if shutil.which("perf") is None:
        fail_setup("perf is missing (apt-get install linux-perf)")
    work = work_root / "poll-profile"
    port = free_port()
    fixture = Fixture(["--polling", "--poll-interval", f"{interval_ms}ms", "--max-rps", "1000",
                       "--http-listen", f"127.0.0.1:{port}"], work, work / "fixture.log")
    config = Path(fixture.info["config"])
    drop_outputs(config.parent / "state", config.parent / "archive")
    perf_data = work / "perf.data"
    print(f"\nprofile of dmstrack polling one ticket every {interval_ms} ms: perf record "
          f"-e cpu-clock -F {frequency} --call-graph dwarf for {seconds:.0f} s; load "
          f"{load_average()}", flush=True)
    pid = start_daemon(config, work / "dmstrack.log")
    try:
        fixture.queries(wait_for=20)  # past start-up
        plain = per_poll_counters(fixture, pid, 10)
        traced = syscalls_per_poll(fixture, pid, 10)
        before = fixture.queries()
        cpu_before = proc_cpu_seconds(pid)
        record = subprocess.run(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(frequency),
             "--call-graph", "dwarf,32768", "-p", str(pid), "-o", str(perf_data),
             "--", "sleep", str(seconds)], capture_output=True, text=True)
        cpu = proc_cpu_seconds(pid) - cpu_before
        after = fixture.queries()
    finally:
        status, _ = stop_daemon(pid)
        fixture.stop()
    if record.returncode != 0:
        fail_setup(f"perf record failed: {record.stderr.strip()[-500:]}")
    polls = after["answered"] - before["answered"]
    samples = read_perf_samples(perf_data)
    print(f"{polls} polls, {len(samples)} samples ({len(samples) / frequency:.2f} s sampled; "
          f"/proc CPU {cpu:.2f} s, {cpu / polls * 1000:.3f} ms/poll while recorded — perf's own "
          f"unwinding inflates it); {perf_data}")
    print(f"\nwithout a profiler, over 10 s ({plain['polls']} polls, {plain['threads']} threads): "
          f"user {plain['user_ms_per_poll']:.3f} ms + system {plain['system_ms_per_poll']:.3f} ms "
          f"per poll (clock ticks); context switches per poll: "
          f"{plain['voluntary_switches_per_poll']:.1f} voluntary, "
          f"{plain['involuntary_switches_per_poll']:.1f} involuntary")
    if traced:
        print(f"system calls per poll (strace -c -f, {traced['polls']} polls): " + ", ".join(
            f"{name} {count:.1f}" for name, count in traced["per_poll"].items() if count >= 0.05))
    result = profile_tables(samples)
    result.update({"polls": polls, "cpu_s": cpu, "seconds": seconds, "plain": plain,
                   "syscalls": traced})
    return result


# ---------------------------------------------------------------------------------------
# --upload
# ---------------------------------------------------------------------------------------

S3_HELPER = REPO / "scripts" / "bench_s3.py"
MOTO_VENV_SCRIPT = REPO / "scripts" / "moto-venv.sh"
UPLOAD_BUCKET = "bench"


def s3_environment(**extra):
    """os.environ without proxies or AWS settings (everything talks to 127.0.0.1), plus extra."""
    dropped = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
               "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("AWS_")}
    env.update(extra)
    return env


def moto_python():
    """The moto venv's python (scripts/moto-venv.sh creates it once, with pinned versions)."""
    out = subprocess.run(["bash", str(MOTO_VENV_SCRIPT)], capture_output=True, text=True)
    if out.returncode != 0:
        fail_setup(f"scripts/moto-venv.sh failed: {out.stderr.strip()[-800:]}")
    return Path(out.stdout.strip())


class S3Server:
    """What --upload needs of a local S3 server: endpoint, key, CPU and memory of its process,
    its view of each request (see requests_since), HeadObject + DeleteObject."""

    name = "?"

    def __init__(self, python, work):
        self.python = python
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"{self.name}.log", "w")
        self.proc = None
        self.access_key_id = self.secret = None
        self.helper_env = None

    def wait_ready(self, ready):
        deadline = time.monotonic() + 60
        while not ready():
            if self.proc.poll() is not None:
                fail_setup(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            if time.monotonic() > deadline:
                fail_setup(f"{self.name} did not answer within 60 s; see {self.log.name}")
            time.sleep(0.1)

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def memory_kib(self):
        return proc_memory_kib(self.proc.pid)

    def mark(self):
        return None

    def requests_since(self, mark):
        """[{"op", "t0", "t1", "bytes", ...}] of the requests since `mark` ([] if unknown)."""
        return []

    def heads(self, keys, delete):
        """{key: {"size", "etag"} or {"missing": true}} from HeadObject; then deletes them."""
        argv = [str(self.python), str(S3_HELPER), "heads", "--endpoint", self.endpoint,
                "--access-key-id", self.access_key_id, "--bucket", UPLOAD_BUCKET]
        for key in keys:
            argv += ["--key", key]
        if delete:
            argv.append("--delete")
        out = subprocess.run(argv, capture_output=True, text=True, env=self.helper_env)
        if out.returncode != 0:
            fail_setup(f"HeadObject failed: {out.stderr.strip()[-800:]}")
        return json.loads(out.stdout)

    def stop(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class MotoServer(S3Server):
    """moto's S3 server (scripts/bench_s3.py serve) with authentication on: an IAM user, its
    access key and the bucket are created with the unsigned allowance; every request is
    logged with its server-side times. It exits when our end of its stdin closes."""

    name = "moto"

    def __init__(self, python, work, in_memory):
        super().__init__(python, work)
        self.description = (f"moto 5.2.5 (authentication on; bodies in "
                            f"{'memory' if in_memory else 'temporary files past 5 MiB'})")
        self.requests = work / "moto-requests.jsonl"
        self.requests.write_text("")
        env = s3_environment(INITIAL_NO_AUTH_ACTION_COUNT="3", PYTHONUNBUFFERED="1")
        if in_memory:
            # moto keeps an object or part in memory up to this size, else in a temporary
            # file; 4 GiB keeps every body in memory (no disk writes on a shared disk).
            env["MOTO_S3_DEFAULT_KEY_BUFFER_SIZE"] = str(4 << 30)
        self.proc = subprocess.Popen(
            [str(python), str(S3_HELPER), "serve", "--port", str(self.port),
             "--request-log", str(self.requests)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=env)

        def ready():
            try:
                return http_get(self.port, "/moto-api/data.json", timeout=5)[0] == 200
            except OSError:
                return False

        self.wait_ready(ready)
        out = subprocess.run([str(python), str(S3_HELPER), "setup", "--endpoint", self.endpoint,
                              "--bucket", UPLOAD_BUCKET], capture_output=True, text=True,
                             env=s3_environment())
        if out.returncode != 0:
            fail_setup(f"moto set-up failed: {out.stderr.strip()[-800:]}")
        keys = json.loads(out.stdout)
        self.access_key_id, self.secret = keys["access_key_id"], keys["secret_access_key"]
        self.helper_env = s3_environment(BENCH_S3_SECRET=self.secret)

    def mark(self):
        """Where the request log ends now."""
        return self.requests.stat().st_size

    def requests_since(self, mark):
        with open(self.requests) as f:
            f.seek(mark)
            return [json.loads(line) for line in f if line.strip()]


S3S_FS_VERSION = "0.14.1"
S3S_FS = REPO / "target" / "s3s-fs" / "bin" / "s3s-fs"
# A made-up key for a server on 127.0.0.1 that lives as long as this script.
S3S_FS_KEY = ("AKIABENCHS3SFS000001", "bench-s3s-fs-secret-for-loopback-only")
S3S_FS_LOG_LINE = re.compile(
    r"^\s*(\S+Z)\s+DEBUG s3s_fs::s3: (write file, path: \S*\.part-(\d+), size: (\d+)|"
    r"write file, from: |multipart etag)")


def ensure_s3s_fs():
    """target/s3s-fs/bin/s3s-fs, installed once with cargo from crates.io (a Rust S3 server
    over a folder, from the s3s project; the last version that builds with Rust 1.95)."""
    if not S3S_FS.exists():
        command = ["cargo", "install", f"s3s-fs@{S3S_FS_VERSION}", "--features", "binary",
                   "--locked", "--root", str(S3S_FS.parent.parent)]
        print("$ " + " ".join(command), flush=True)
        if subprocess.run(command).returncode != 0:
            fail_setup("cannot install s3s-fs with cargo")
    return S3S_FS


class S3sFsServer(S3Server):
    """s3s-fs (SigV4 with one key; each part a file, Complete copies them into the object)
    over a folder on tmpfs, so bodies stay in memory as moto's do. Its debug log gives each
    part's end and the Complete's copy; requests_since turns that into request records."""

    name = "s3s-fs"

    def __init__(self, python, work):
        super().__init__(python, work)
        binary = ensure_s3s_fs()
        self.description = f"s3s-fs {S3S_FS_VERSION} (authentication on; data on tmpfs)"
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
        self.root = Path(tempfile.mkdtemp(prefix="dmstrack-bench-s3s-", dir=base))
        (self.root / UPLOAD_BUCKET).mkdir()
        self.access_key_id, self.secret = S3S_FS_KEY
        self.helper_env = s3_environment(BENCH_S3_SECRET=self.secret)
        self.log_path = Path(self.log.name)
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--access-key",
             self.access_key_id, "--secret-key", self.secret, str(self.root)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(s3_environment(), RUST_LOG="s3s_fs=debug", NO_COLOR="1"))

        def ready():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        self.wait_ready(ready)

    def mark(self):
        self.log.flush()
        return self.log_path.stat().st_size

    def requests_since(self, mark):
        """From the debug log: a 'part' record per part (its end only: t0 = t1) and one
        'complete' record from the end of the last part to the multipart ETag line (the
        Complete's copy of every part into the object, and a little client latency)."""
        records, last_part_end = [], None
        with open(self.log_path, errors="replace") as f:
            f.seek(mark)
            for line in f:
                match = S3S_FS_LOG_LINE.match(line)
                if not match:
                    continue
                stamp = datetime.fromisoformat(match[1].replace("Z", "+00:00")).timestamp()
                if match[3]:
                    records.append({"op": "part", "t0": stamp, "t1": stamp,
                                    "bytes": int(match[4])})
                    last_part_end = stamp
                elif match[2] == "multipart etag" and last_part_end is not None:
                    records.append({"op": "complete", "t0": last_part_end, "t1": stamp,
                                    "bytes": 0})
        return records

    def stop(self):
        super().stop()
        shutil.rmtree(self.root, ignore_errors=True)


def expected_etags(path, part_sizes):
    """{part size: the ETag S3 gives this file uploaded in parts of that size} (the plain MD5
    when it fits in one part), computed here with hashlib, independently of both clients."""
    size = path.stat().st_size
    step = MIB
    if any(p % step for p in part_sizes):
        fail_setup("part sizes must be whole MiB")
    whole = hashlib.md5()
    current = {p: hashlib.md5() for p in part_sizes}
    digests = {p: [] for p in part_sizes}
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(step):
            whole.update(block)
            offset += len(block)
            for p in part_sizes:
                current[p].update(block)
                if offset % p == 0 or offset == size:
                    digests[p].append(current[p].digest())
                    current[p] = hashlib.md5()
    etags = {}
    for p in part_sizes:
        if size <= p:
            etags[p] = whole.hexdigest()
        else:
            etags[p] = f"{hashlib.md5(b''.join(digests[p])).hexdigest()}-{len(digests[p])}"
    return etags


def log_events(log):
    """{message: (wall-clock seconds, fields)} of the first line of each message in a JSON
    log."""
    events = {}
    for line in Path(log).read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
        events.setdefault(record.get("message", ""), (stamp, record))
    return events


def server_phases(records, parts_began=None):
    """What the server saw of one client's upload, in seconds: the span of its part (or
    single PutObject) requests ("bodies", from the first one's start, or from `parts_began`
    when the server only tells when each part ended) and the CompleteMultipartUpload."""
    if not records:
        return {}
    body = [r for r in records if r["op"] == "part"] or \
        [r for r in records if r["op"] == "put" and r["bytes"] > MIB]
    complete = [r for r in records if r["op"] == "complete"]
    phases = {"requests": {op: sum(1 for r in records if r["op"] == op)
                           for op in sorted({r["op"] for r in records})}}
    if body:
        ends_only = all(r["t0"] == r["t1"] for r in body)
        began = parts_began if ends_only else min(r["t0"] for r in body)
        phases["parts_t0"] = began
        if began is not None:
            phases["body_s"] = max(r["t1"] for r in body) - began
    if complete:
        phases["complete_s"] = sum(r["t1"] - r["t0"] for r in complete)
    return phases


def variant_name(part_size, concurrency):
    return f"{human(part_size).replace(' ', '')}x{concurrency}"


def parse_variants(text):
    """dmstrack's '64MiB:4,16MiB:8' -> [(part size, concurrency)]."""
    variants = []
    for item in text.split(","):
        size, _, concurrency = item.strip().partition(":")
        variants.append((parse_size(size), int(concurrency or 4)))
    return variants


def parse_boto3_variants(text):
    """boto3's 'default,64MiB:4,64MiB:4/nocrc' -> [(part size and concurrency, or None for
    the default TransferConfig; its request_checksum_calculation)]."""
    variants = []
    for item in text.split(","):
        item, _, flag = item.strip().partition("/")
        if flag not in ("", "nocrc"):
            fail_setup(f"unknown boto3 variant flag /{flag} (want /nocrc)")
        checksum = "when_required" if flag == "nocrc" else "when_supported"
        transfer = None if item == "default" else parse_variants(item)[0]
        variants.append((transfer, checksum))
    return variants


def bench_upload(size, rounds, ours_variants, boto3_variants, server_kind, in_memory,
                 work_root):
    work = work_root / "upload"
    work.mkdir(parents=True, exist_ok=True)
    python = moto_python()
    server = (MotoServer(python, work, in_memory) if server_kind == "moto"
              else S3sFsServer(python, work))
    main_part, main_concurrency = ours_variants[0]
    fixture = Fixture(["--upload-only", str(size), "--s3-endpoint", server.endpoint,
                       "--s3-bucket", UPLOAD_BUCKET, "--s3-access-key-id", server.access_key_id,
                       "--part-size", f"{main_part // MIB}MiB",
                       "--upload-concurrency", str(main_concurrency)],
                      work, work / "fixture.log", env=server.helper_env)
    info = fixture.info
    zip_path, zip_bytes = Path(info["zip"]), info["zip_bytes"]
    config = Path(info["config"])
    configs = {}
    for part, concurrency in ours_variants:
        text = re.sub(r'(?m)^part_size = ".*"$', f'part_size = "{part // MIB}MiB"',
                      config.read_text())
        text = re.sub(r"(?m)^concurrency = \d+$", f"concurrency = {concurrency}", text)
        path = config.parent / f"config-{variant_name(part, concurrency)}.toml"
        path.write_text(text)
        configs[(part, concurrency)] = path
    boto3_part_sizes = {8 * MIB if v is None else v[0] for v, _ in boto3_variants}
    etags = expected_etags(zip_path, {p for p, _ in ours_variants} | boto3_part_sizes)
    manifest_bytes = (Path(info["archive_dir"]) / "manifest.json").stat().st_size
    mounted = filesystem_of(zip_path)
    print(f"\nupload of {human(zip_bytes)} ({zip_path}, on {mounted[1]}) to "
          f"{server.description} at {server.endpoint}; {rounds} rounds; load "
          f"{load_average()}; busiest now: {busiest_processes()}", flush=True)
    load = SystemLoad()
    results = {}
    problems = []

    def record(name, row):
        results.setdefault(name, []).append(row)

    def run_ours(i, variant):
        name = f"dmstrack {variant_name(*variant)}"
        staged = json.loads(fixture.command("stage", "BENCH_FIXTURE_STAGED"))
        if "error" in staged:
            fail_setup(f"staging the archive failed: {staged['error']}")
        subprocess.run(["sync"], check=True)
        log = work / f"dmstrack-{variant_name(*variant)}-{i}.log"
        cpu_before, mark = server.cpu(), server.mark()
        m = spawn_measured([str(DMSTRACK), "run", "--once", "-c", str(configs[variant]),
                            "--log-format", "json"], log)
        server_cpu = server.cpu() - cpu_before
        events = log_events(log)
        multipart = events.get("multipart upload", (None,))[0]
        phases = server_phases(server.requests_since(mark), parts_began=multipart)
        row = {"process_wall_s": m.wall, "cpu_s": m.cpu, "peak_rss_kib": m.maxrss_kib,
               "status": m.status, "server_cpu_s": server_cpu, "server": phases}
        if m.status != 0 or "uploaded" not in events or "dmstrack started" not in events:
            problems.append(f"round {i} {name}: exit {m.status}, no 'uploaded' line; see {log}")
            row["wall_s"] = m.wall
        else:
            started = events["dmstrack started"][0]
            row["wall_s"] = events["uploaded"][0] - started
            row["bytes_sent"] = events["uploaded"][1].get("bytes")
            # Planning, the digest pass, HeadObject and the multipart initiation: the time
            # before the first part could be sent.
            began = phases.get("parts_t0") or multipart
            if began is not None:
                row["before_parts_s"] = began - started
        keys = [info["zip_key"], info["manifest_key"]]
        found = server.heads(keys, delete=True)
        want = etags[variant[0]]
        zip_head, manifest_head = found[keys[0]], found[keys[1]]
        if zip_head.get("size") != zip_bytes or zip_head.get("etag") != want:
            problems.append(f"round {i} {name}: the zip in the bucket is {zip_head}, want size "
                            f"{zip_bytes} and ETag {want}")
        if manifest_head.get("size") != manifest_bytes:
            problems.append(f"round {i} {name}: manifest.json in the bucket is {manifest_head}, "
                            f"want {manifest_bytes} bytes")
        row["etag"] = zip_head.get("etag")
        record(name, row)
        print_upload_row(i, name, row, zip_bytes)

    def run_boto3(i, boto3_variant):
        variant, checksum = boto3_variant
        label = "default" if variant is None else variant_name(*variant)
        if checksum == "when_required":
            label += "-nocrc"
        name = f"boto3 upload_file {label}"
        key = f"boto3/{label}/{zip_path.name}"
        subprocess.run(["sync"], check=True)
        log = work / f"boto3-{label}-{i}.log"
        argv = [str(python), str(S3_HELPER), "upload", "--endpoint", server.endpoint,
                "--access-key-id", server.access_key_id, "--bucket", UPLOAD_BUCKET,
                "--key", key, "--file", str(zip_path)]
        if variant is not None:
            argv += ["--part-size", f"{variant[0] // MIB}MiB", "--concurrency", str(variant[1])]
        argv += ["--checksum", checksum]
        cpu_before, mark = server.cpu(), server.mark()
        m = spawn_measured(argv, log, server.helper_env)
        server_cpu = server.cpu() - cpu_before
        try:
            report = json.loads(Path(log).read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = None
        phases = server_phases(server.requests_since(mark),
                               parts_began=report["t0"] if report else None)
        row = {"process_wall_s": m.wall, "cpu_s": m.cpu, "peak_rss_kib": m.maxrss_kib,
               "status": m.status, "server_cpu_s": server_cpu, "server": phases}
        if m.status != 0 or report is None:
            problems.append(f"round {i} {name}: exit {m.status}; see {log}")
            row["wall_s"] = m.wall
        else:
            row.update(wall_s=report["transfer_s"], transfer_cpu_s=report["transfer_cpu_s"],
                       boto3_part_size=report["part_size"],
                       boto3_concurrency=report["concurrency"])
            if phases.get("parts_t0") is not None:
                row["before_parts_s"] = phases["parts_t0"] - report["t0"]
        found = server.heads([key], delete=True)[key]
        want = etags[8 * MIB if variant is None else variant[0]]
        if found.get("size") != zip_bytes or found.get("etag") != want:
            problems.append(f"round {i} {name}: the object in the bucket is {found}, want size "
                            f"{zip_bytes} and ETag {want}")
        row["etag"] = found.get("etag")
        record(name, row)
        print_upload_row(i, name, row, zip_bytes)

    try:
        for i in range(1, rounds + 1):
            ours = [lambda v=v: run_ours(i, v) for v in ours_variants]
            theirs = [lambda v=v: run_boto3(i, v) for v in boto3_variants]
            # Alternate who goes first, so neither always follows the other's memory churn.
            for run in (ours + theirs if i % 2 else theirs + ours):
                run()
    finally:
        fixture.stop()
        server_memory = server.memory_kib()
        server.stop()
    busy = load.busy_share()
    print(f"  all cores busy {busy:.0%} during these rounds; load {load_average()}; "
          f"{server.name} peak RSS {server_memory['VmHWM'] / 1024:.0f} MiB", flush=True)
    return {"zip_bytes": zip_bytes, "rounds": rounds, "server": server.description,
            "server_name": server.name, "contenders": results, "problems": problems,
            "busy_share": busy, "load_after": load_average(),
            "server_peak_rss_kib": server_memory["VmHWM"],
            "main": f"dmstrack {variant_name(*ours_variants[0])}"}


def print_upload_row(i, name, row, size):
    server = row["server"]
    print(f"  round {i} {name:32s} {row['wall_s']:6.2f} s {size / MIB / row['wall_s']:6.1f} MiB/s"
          f"  process {row['process_wall_s']:5.2f} s  cpu {row['cpu_s']:5.2f} s  "
          f"peak RSS {row['peak_rss_kib'] / 1024:5.1f} MiB  server cpu "
          f"{row['server_cpu_s']:5.2f} s  before parts {row.get('before_parts_s', NAN):.2f} s, "
          f"parts {server.get('body_s', NAN):.2f} s, complete "
          f"{server.get('complete_s', NAN):.2f} s", flush=True)


def report_upload(result, args):
    size = result["zip_bytes"]
    contenders = result["contenders"]
    main = result["main"]
    # The first boto3 variant given (round 1 runs them in the order given).
    reference = next((n for n in contenders if n.startswith("boto3")), None)
    ref_wall = statistics.median(r["wall_s"] for r in contenders[reference]) if reference else None

    def col(rows, fmt, source, scale=1.0):
        return spread([source(r) * scale for r in rows], fmt)

    print(f"\n| upload of {human(size)} to {result['server_name']} on 127.0.0.1 | wall (upload) "
          f"| MiB/s | process wall | CPU (process) | server CPU | peak RSS | before parts "
          f"| parts | complete | wall / {reference} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in contenders.items():
        wall = statistics.median(r["wall_s"] for r in rows)
        ratio = f"{wall / ref_wall:.2f}" if ref_wall else "-"
        print(f"| {name} | {col(rows, '{:.2f}', lambda r: r['wall_s'])} s "
              f"| {size / MIB / wall:.0f} | {col(rows, '{:.2f}', lambda r: r['process_wall_s'])} s "
              f"| {col(rows, '{:.2f}', lambda r: r['cpu_s'])} s "
              f"| {col(rows, '{:.2f}', lambda r: r['server_cpu_s'])} s "
              f"| {col(rows, '{:.1f}', lambda r: r['peak_rss_kib'], 1 / 1024)} MiB "
              f"| {col(rows, '{:.2f}', lambda r: r.get('before_parts_s', NAN))} s "
              f"| {col(rows, '{:.2f}', lambda r: r['server'].get('body_s', NAN))} s "
              f"| {col(rows, '{:.2f}', lambda r: r['server'].get('complete_s', NAN))} s "
              f"| {ratio} |")
    ours = contenders[main]
    wall = statistics.median(r["wall_s"] for r in ours)
    rate = size / MIB / wall
    rss = max(r["peak_rss_kib"] for r in ours) / 1024
    misses = list(result["problems"])
    if rate < args.min_upload_mibs:
        misses.append(f"{main}: {rate:.0f} MiB/s < {args.min_upload_mibs:.0f} MiB/s")
    if rss > args.max_upload_rss_mib:
        misses.append(f"{main}: peak RSS {rss:.1f} MiB > {args.max_upload_rss_mib:.0f} MiB")
    if ref_wall and wall / ref_wall > args.max_upload_ratio:
        misses.append(f"{main} / {reference} wall time {wall / ref_wall:.2f} > "
                      f"{args.max_upload_ratio}")
    print(f"(median (min..max) of {result['rounds']} rounds against {result['server']}. Wall "
          f"(upload): dmstrack from its 'dmstrack started' log line to 'uploaded', boto3 the "
          f"upload_file call alone (after the imports and the client). Before parts: until the "
          f"first part began (dmstrack: planning, digest pass, HeadObject, initiation). Parts: "
          f"first part began to last part answered; complete: CompleteMultipartUpload, both "
          f"as the server logged them. Server CPU: the server process over the run. All cores "
          f"busy {result['busy_share']:.0%}, load {result['load_after']}. Targets for {main}: "
          f">= {args.min_upload_mibs:.0f} MiB/s, peak RSS <= {args.max_upload_rss_mib:.0f} MiB, "
          f"wall <= {args.max_upload_ratio} x {reference}: {'ok' if not misses else 'MISS'})")
    for miss in misses:
        print(f"  - {miss}")
    return bool(misses)


def report_archive(results, args):
    failed = False
    print("\n| export (SQL / zip) | dmstrack | curl + unzip | ratio | dmstrack peak RSS "
          "| curl / unzip peak RSS | result |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        ours = statistics.median(m.wall for m in r["ours"])
        theirs = statistics.median(m.wall for m in r["theirs"])
        ratio = ours / theirs
        rss = max(m.maxrss_kib for m in r["ours"]) / 1024
        curl_rss = max(m.parts[0].maxrss_kib for m in r["theirs"]) / 1024
        unzip_rss = max(m.parts[1].maxrss_kib for m in r["theirs"]) / 1024
        misses = []
        if ratio > args.max_ratio:
            misses.append(f"ratio > {args.max_ratio}")
        if rss > args.max_rss_mib:
            misses.append(f"RSS > {args.max_rss_mib:.0f} MiB")
        misses += r["problems"]
        failed |= bool(misses)
        print(f"| {human(r['sql_bytes'])} / {r['zip_bytes'] / MIB:.1f} MiB | {ours:.2f} s "
              f"| {theirs:.2f} s | {ratio:.2f} | {rss:.1f} MiB | {curl_rss:.1f} / {unzip_rss:.1f} MiB "
              f"| {'ok' if not misses else 'MISS'} |")
        for miss in misses:
            print(f"  - {miss}")
    print(f"(median of {args.rounds} rounds; targets: ratio <= {args.max_ratio}, "
          f"RSS <= {args.max_rss_mib:.0f} MiB)")
    for r in results:
        ratios = [o.wall / t.wall for o, t in zip(r["ours"], r["theirs"])]
        print(f"  {human(r['sql_bytes'])}: dmstrack wall {spread([m.wall for m in r['ours']], '{:.2f}')} s, "
              f"CPU {spread([m.cpu for m in r['ours']], '{:.2f}')} s; curl+unzip wall "
              f"{spread([m.wall for m in r['theirs']], '{:.2f}')} s, CPU "
              f"{spread([m.cpu for m in r['theirs']], '{:.2f}')} s; per-round ratio "
              f"{spread(ratios, '{:.2f}')}")
    return failed


def report_waiting(waiting):
    print("\n| waiting tickets | start-up: state written, each ticket queried once "
          "| CPU during start-up | CPU while idle after it | RSS | peak RSS |")
    print("|---|---|---|---|---|---|")
    for w in waiting:
        print(f"| {w['tickets']} | {w['first_round_s']:.1f} s ({w['queries']} queries) "
              f"| {w['startup_cpu_s']:.2f} s | {w['idle_cpu_s']:.2f} s in {w['idle_s']:.0f} s "
              f"| {w['rss_kib'] / 1024:.1f} MiB | {w['peak_rss_kib'] / 1024:.1f} MiB |")
    print("(every ticket answers INIT; the fixture's config polls every 10m at up to "
          "200 requests/s, so after start-up the daemon only waits)")


def report_poll_cpu(result, args):
    rows = result["rounds"]
    ours = [r["dmstrack"]["per_poll_s"] * 1000 for r in rows]
    theirs = [r["sdk"]["per_poll_s"] * 1000 for r in rows]
    inside = [r["sdk"]["in_process_per_poll_s"] * 1000 for r in rows]
    ratios = [o / t for o, t in zip(ours, theirs)]
    ratio = statistics.median(ours) / statistics.median(theirs)
    missed = ratio > args.max_poll_ratio
    print(f"\n| CPU per status poll (every {result['interval_ms']} ms, "
          f"({result['many']} - {result['few']} polls)) | median (min..max) ms |")
    print("|---|---|")
    print(f"| dmstrack (whole process, wait4) | {spread(ours)} |")
    print(f"| official Python SDK (whole process, wait4) | {spread(theirs)} |")
    print(f"| official Python SDK (in-process getrusage, after call {result['few']}) "
          f"| {spread(inside)} |")
    print(f"| ratio dmstrack / SDK | {ratio:.3f} (per round {spread(ratios)}) "
          f"{'MISS' if missed else 'ok'} |")
    floor_labels = {
        "sleep": "floor: the timer wake alone, no request",
        "socket": "floor: hand-written HTTP/1.1 on a tokio TcpStream",
        "hyper": "floor: hyper's HTTP/1 client connection",
        "reqwest": "floor: reqwest::Client (dmstrack's HTTP client), nothing else",
    }
    for mode in rows[0].get("floor", {}):
        costs = [r["floor"][mode] * 1000 for r in rows]
        share = statistics.median(costs) / statistics.median(theirs)
        print(f"| {floor_labels[mode]} | {spread(costs)} (/ SDK {share:.3f}) |")
    print(f"({len(rows)} rounds; target ratio <= {args.max_poll_ratio}; all cores busy "
          f"{result['busy_share']:.0%} during the measurement, load {result['load_after']})")
    return missed


def report_scale(result, args):
    runs = result["runs"]
    fs = result["filesystem"]
    misses = []

    def col(key, fmt, scale=1.0, source=None):
        return spread([(source(r) if source else r[key]) * scale for r in runs], fmt)

    healthz_max = [r["healthz"].get("max_ms", float("inf")) for r in runs]
    peak = [r["peak_rss_kib"] / 1024 for r in runs]
    idle = [r["idle_cpu_s"] for r in runs]
    if max(healthz_max) > args.max_healthz_ms:
        misses.append(f"/healthz max {max(healthz_max):.1f} ms > {args.max_healthz_ms:.0f} ms")
    if any(r["healthz"]["failures"] for r in runs):
        misses.append("/healthz failed: " + "; ".join(
            str(r["healthz"]["failures"][:3]) for r in runs if r["healthz"]["failures"]))
    if max(peak) > args.max_scale_rss_mib:
        misses.append(f"peak RSS {max(peak):.1f} MiB > {args.max_scale_rss_mib:.0f} MiB")
    if max(idle) > args.max_idle_cpu:
        misses.append(f"idle CPU {max(idle):.2f} s > {args.max_idle_cpu} s")
    print(f"\n| {result['tickets']} tickets, {result['rps']} requests/s, state on "
          f"{fs['type']} ({fs['device']}) | median (min..max) |")
    print("|---|---|")
    print(f"| first round (each ticket queried once) | {col('first_round_s', '{:.1f}')} s |")
    print(f"| CPU until then | {col('first_round_cpu_s', '{:.2f}')} s |")
    print(f"| /healthz max during it | {spread(healthz_max, '{:.1f}')} ms |")
    print(f"| /healthz p99 | {col(None, '{:.1f}', source=lambda r: r['healthz']['p99_ms'])} ms |")
    print(f"| /healthz median | {col(None, '{:.1f}', source=lambda r: r['healthz']['median_ms'])} ms |")
    print(f"| /healthz samples | {col(None, '{:.0f}', source=lambda r: r['healthz']['samples'])} |")
    print(f"| peak RSS (VmHWM) | {spread(peak, '{:.1f}')} MiB |")
    print(f"| RSS after idle | {col('rss_kib', '{:.1f}', 1 / 1024)} MiB |")
    print(f"| idle CPU over {runs[0]['idle_s']:.0f} s | {spread(idle, '{:.2f}')} s |")
    for when, key in (("at first round", "state_at_first_round"), ("at end", "state_at_end")):
        print(f"| state commits {when} | {col(None, '{:.0f}', source=lambda r: r[key]['commits'])} |")
        print(f"| state records written {when} | {col(None, '{:.0f}', source=lambda r: r[key]['records'])} |")
    print(f"| state commit mean | {col(None, '{:.2f}', source=lambda r: r['state_at_end']['commit_mean_ms'] or 0)} ms |")
    print(f"| state commit p99 (bucket bound) | {col(None, '{:.1f}', source=lambda r: r['state_at_end']['commit_p99_le_ms'])} ms |")
    print(f"| state commit max (bucket bound) | {col(None, '{:.1f}', source=lambda r: r['state_at_end']['commit_max_le_ms'])} ms |")
    print(f"| machine busy (all cores) during first round / idle | "
          f"{col('busy_share_first_round', '{:.0%}')} / {col('busy_share_idle', '{:.0%}')} |")
    print(f"({len(runs)} rounds; targets: /healthz max <= {args.max_healthz_ms:.0f} ms, peak RSS "
          f"<= {args.max_scale_rss_mib:.0f} MiB, idle CPU <= {args.max_idle_cpu} s; "
          f"{'ok' if not misses else 'MISS'})")
    for miss in misses:
        print(f"  - {miss}")
    return bool(misses)


def main():
    global DMSTRACK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_argument_group("modes (none given: --archive and --waiting)")
    modes.add_argument("--archive", action="store_true",
                       help="archive speed and RSS against curl + unzip")
    modes.add_argument("--waiting", action="store_true",
                       help="idle CPU and RSS of the daemon waiting on many tickets")
    modes.add_argument("--poll-cpu", action="store_true",
                       help="CPU per status poll, dmstrack against the official Python SDK")
    modes.add_argument("--scale", action="store_true",
                       help="10,000 tickets: first round, /healthz latency, RSS, idle CPU")
    modes.add_argument("--poll-profile", action="store_true",
                       help="perf profile of dmstrack polling one ticket (needs perf)")
    modes.add_argument("--upload", action="store_true",
                       help="upload of a zip to a local S3 server (moto), against boto3")
    parser.add_argument("--sizes", default="128MiB,512MiB",
                        help="uncompressed export sizes, comma-separated (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per size / poll-cpu / scale measurement (default 3)")
    parser.add_argument("--work", type=Path, default=REPO / "target" / "bench",
                        help="work folder; generated zips are cached here (default %(default)s)")
    parser.add_argument("--max-ratio", type=float, default=0.7,
                        help="target: dmstrack wall time / curl+unzip (default %(default)s)")
    parser.add_argument("--max-rss-mib", type=float, default=64.0,
                        help="target: dmstrack peak RSS (default %(default)s)")
    parser.add_argument("--idle-tickets", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="idle window of --waiting and --scale (default %(default)s)")
    parser.add_argument("--rss-tickets", type=int, default=10000)
    parser.add_argument("--skip-waiting", action="store_true",
                        help="without a mode flag: run --archive alone")
    parser.add_argument("--poll-interval-ms", type=int, default=20,
                        help="--poll-cpu: poll interval (default %(default)s)")
    parser.add_argument("--few", type=int, default=10,
                        help="--poll-cpu: polls of the short run (default %(default)s)")
    parser.add_argument("--many", type=int, default=500,
                        help="--poll-cpu: polls of the long run (default %(default)s)")
    parser.add_argument("--floor-modes", default=",".join(FLOOR_MODES),
                        help="--poll-cpu: examples/poll_floor clients measured beside dmstrack "
                             "(comma-separated; empty for none) (default %(default)s)")
    parser.add_argument("--max-poll-ratio", type=float, default=0.1,
                        help="target: dmstrack CPU per poll / SDK's (default %(default)s)")
    parser.add_argument("--profile-seconds", type=float, default=30.0,
                        help="--poll-profile: recording time (default %(default)s)")
    parser.add_argument("--profile-frequency", type=int, default=4000,
                        help="--poll-profile: samples per second (default %(default)s)")
    parser.add_argument("--scale-tickets", type=int, default=10000)
    parser.add_argument("--scale-rps", type=float, default=1000.0,
                        help="--scale: dms.max_requests_per_second (default %(default)s)")
    parser.add_argument("--settle-seconds", type=float, default=5.0,
                        help="--scale: pause between the first round and the idle window "
                             "(default %(default)s)")
    parser.add_argument("--max-healthz-ms", type=float, default=250.0)
    parser.add_argument("--max-scale-rss-mib", type=float, default=64.0)
    parser.add_argument("--max-idle-cpu", type=float, default=0.05,
                        help="--scale: target CPU seconds over the idle window "
                             "(default %(default)s)")
    parser.add_argument("--upload-size", default="512MiB",
                        help="--upload: size of the zip (default %(default)s)")
    parser.add_argument("--upload-variants", default="64MiB:4",
                        help="--upload: dmstrack's upload.part_size:concurrency settings, "
                             "comma-separated; the first is the one held to the targets "
                             "(default %(default)s)")
    parser.add_argument("--boto3-variants", default="default,64MiB:4",
                        help="--upload: boto3 TransferConfig settings (part size:max "
                             "concurrency, or 'default'), each optionally with /nocrc "
                             "(request_checksum_calculation = when_required); the first is "
                             "the reference of the ratio (default %(default)s)")
    parser.add_argument("--s3-server", choices=["moto", "s3s-fs"], default="moto",
                        help="--upload: the local S3 server (s3s-fs: installed once with "
                             "cargo install into target/s3s-fs) (default %(default)s)")
    parser.add_argument("--moto-on-disk", action="store_true",
                        help="--upload: let moto keep bodies past 5 MiB in temporary files "
                             "(its default) instead of in memory")
    parser.add_argument("--min-upload-mibs", type=float, default=200.0,
                        help="target: dmstrack's upload rate in MiB/s (default %(default)s)")
    parser.add_argument("--max-upload-rss-mib", type=float, default=64.0,
                        help="target: dmstrack's peak RSS while uploading (default %(default)s)")
    parser.add_argument("--max-upload-ratio", type=float, default=1.0,
                        help="target: dmstrack upload wall time / boto3's (default %(default)s)")
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--dmstrack", type=Path, default=DMSTRACK,
                        help="the dmstrack binary to measure, e.g. a copy of an older build "
                             "(default %(default)s)")
    args = parser.parse_args()
    DMSTRACK = args.dmstrack.resolve()
    if not (args.archive or args.waiting or args.poll_cpu or args.scale or args.poll_profile
            or args.upload):
        args.archive, args.waiting = True, not args.skip_waiting

    if args.archive:
        check_tools()
    if not args.no_build:
        build()
    for binary in (DMSTRACK, FIXTURE, POLL_FLOOR):
        if not binary.exists():
            fail_setup(f"{binary} is missing; run without --no-build")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}; work folder: {args.work}; load {load_average()}")

    failed = False
    raw = {}
    if args.archive:
        results = [bench_size(parse_size(s), args.rounds, args.work)
                   for s in args.sizes.split(",")]
        raw["archive"] = [{**r, "ours": [vars(m) for m in r["ours"]],
                           "theirs": [{k: v for k, v in vars(m).items() if k != "parts"}
                                      for m in r["theirs"]]} for r in results]
        failed |= report_archive(results, args)
    if args.waiting:
        waiting = [bench_waiting(args.idle_tickets, args.idle_seconds, args.work),
                   bench_waiting(args.rss_tickets, args.idle_seconds, args.work)]
        raw["waiting"] = waiting
        report_waiting(waiting)
    if args.poll_cpu:
        floor_modes = [m for m in args.floor_modes.split(",") if m]
        result = bench_poll_cpu(args.rounds, args.few, args.many, args.poll_interval_ms,
                                args.work, floor_modes)
        raw["poll_cpu"] = result
        failed |= report_poll_cpu(result, args)
    if args.scale:
        result = bench_scale(args.rounds, args.scale_tickets, args.scale_rps,
                             args.idle_seconds, args.settle_seconds, args.work)
        raw["scale"] = result
        failed |= report_scale(result, args)
    if args.poll_profile:
        raw["poll_profile"] = bench_poll_profile(args.profile_seconds, args.poll_interval_ms,
                                                 args.profile_frequency, args.work)

    if args.upload:
        result = bench_upload(parse_size(args.upload_size), args.rounds,
                              parse_variants(args.upload_variants),
                              parse_boto3_variants(args.boto3_variants), args.s3_server,
                              not args.moto_on_disk, args.work)
        raw["upload"] = result
        failed |= report_upload(result, args)

    (args.work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
