#!/usr/bin/env python3
"""Benchmark: dmstrack's download + verify + extract against `curl -o` + `unzip -q`.

For each export size, starts examples/bench_fixture (DMS and OSS simulators on 127.0.0.1
serving a generated export: SQL text in 8 files, about 7:1 deflated) and runs N rounds, each
timing both contenders on the same zip, alternating which goes first:

  (a) target/release/dmstrack run --once -c CONFIG   (fresh state and archive folders)
  (b) curl -sS -o FILE URL && unzip -q FILE -d OUT

Wall time is measured with time.monotonic(), CPU time with os.wait4(), peak RSS as each
process's own VmHWM (see spawn_measured for why not ru_maxrss). Before each timed run the previous outputs are deleted and `sync`
flushes dirty pages, so neither contender pays for the other's writeback; the page cache is
not dropped (that needs root). dmstrack's archive is compared with unzip's output (the same
paths, sizes and SHA-256), and with its own manifest.

Then it measures the daemon waiting on many tickets: CPU time over an idle window with 1000
tickets answering INIT, and memory with 10,000.

Exit status: 0 when every target holds (dmstrack's median wall time <= 0.7 x curl+unzip,
its peak RSS <= 64 MiB, archives identical), 1 when one misses, 2 on a setup problem.
Python 3 standard library only.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "target" / "release"
DMSTRACK = RELEASE / "dmstrack"
FIXTURE = RELEASE / "examples" / "bench_fixture"
MIB = 1024 * 1024


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

    def __init__(self, args, work, log):
        work.mkdir(parents=True, exist_ok=True)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(FIXTURE), "--dir", str(work), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.info = json.loads(self.wait_for("BENCH_FIXTURE"))

    def wait_for(self, tag):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                fail_setup(f"the fixture stopped before saying {tag}; see {self.log.name}")
            name, _, payload = line.strip().partition(" ")
            if name == tag:
                return payload

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
          f"zip {info['zip_bytes'] / MIB:.1f} MiB; {rounds} rounds", flush=True)

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


def main():
    global DMSTRACK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128MiB,512MiB",
                        help="uncompressed export sizes, comma-separated (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (default 3)")
    parser.add_argument("--work", type=Path, default=REPO / "target" / "bench",
                        help="work folder; generated zips are cached here (default %(default)s)")
    parser.add_argument("--max-ratio", type=float, default=0.7,
                        help="target: dmstrack wall time / curl+unzip (default %(default)s)")
    parser.add_argument("--max-rss-mib", type=float, default=64.0,
                        help="target: dmstrack peak RSS (default %(default)s)")
    parser.add_argument("--idle-tickets", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--rss-tickets", type=int, default=10000)
    parser.add_argument("--skip-waiting", action="store_true",
                        help="skip the idle-CPU and many-tickets measurements")
    parser.add_argument("--no-build", action="store_true", help="use the existing release build")
    parser.add_argument("--dmstrack", type=Path, default=DMSTRACK,
                        help="the dmstrack binary to measure, e.g. a copy of an older build "
                             "(default %(default)s)")
    args = parser.parse_args()
    DMSTRACK = args.dmstrack.resolve()

    check_tools()
    if not args.no_build:
        build()
    for binary in (DMSTRACK, FIXTURE):
        if not binary.exists():
            fail_setup(f"{binary} is missing; run without --no-build")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}; work folder: {args.work}")

    results = [bench_size(parse_size(s), args.rounds, args.work) for s in args.sizes.split(",")]

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

    if not args.skip_waiting:
        waiting = [bench_waiting(args.idle_tickets, args.idle_seconds, args.work),
                   bench_waiting(args.rss_tickets, args.idle_seconds, args.work)]
        print("\n| waiting tickets | start-up: state written, each ticket queried once "
              "| CPU during start-up | CPU while idle after it | RSS | peak RSS |")
        print("|---|---|---|---|---|---|")
        for w in waiting:
            print(f"| {w['tickets']} | {w['first_round_s']:.1f} s ({w['queries']} queries) "
                  f"| {w['startup_cpu_s']:.2f} s | {w['idle_cpu_s']:.2f} s in {w['idle_s']:.0f} s "
                  f"| {w['rss_kib'] / 1024:.1f} MiB | {w['peak_rss_kib'] / 1024:.1f} MiB |")
        print("(every ticket answers INIT; the fixture's config polls every 10m at up to "
              "200 requests/s, so after start-up the daemon only waits)")

    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
