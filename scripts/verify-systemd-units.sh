#!/usr/bin/env bash
# Checks the unit files in systemd/: `systemd-analyze verify` must print nothing (it reports
# unknown keys and bad values as warnings yet exits 0, so any output fails this script), and
# `systemd-analyze security --offline=true` must rate dmstrack.service at or below
# $MAX_EXPOSURE (default 2.0).
#
# Usage: scripts/verify-systemd-units.sh [path/to/dmstrack]
#   The binary (default target/debug/dmstrack) stands in for /usr/local/bin/dmstrack:
#   verify insists that every Exec*= program exists. Works offline, in a container without a
#   running systemd; installs Debian's systemd package first when systemd-analyze is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${1:-$root/target/debug/dmstrack}"
max_exposure="${MAX_EXPOSURE:-2.0}"

if [[ ! -x "$binary" ]]; then
    echo "verify-systemd-units: $binary is not an executable; build it first (cargo build)" >&2
    exit 2
fi
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-systemd-units: installing systemd (for systemd-analyze)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Same file names (the units refer to each other), with the install path swapped for the
# binary at hand.
for unit in "$root"/systemd/*.service "$root"/systemd/*.timer; do
    sed "s#/usr/local/bin/dmstrack#$binary#g" "$unit" >"$work/$(basename "$unit")"
done

units=("$work"/*.service "$work"/*.timer)
status=0
if ! output="$(cd "$work" && systemd-analyze verify "${units[@]}" 2>&1)"; then
    status=1
fi
if [[ -n "$output" ]]; then
    status=1
fi
if [[ "$status" -ne 0 ]]; then
    echo "verify-systemd-units: systemd-analyze verify found problems:" >&2
    printf '%s\n' "${output//$work\//systemd/}" >&2
    exit 1
fi
echo "systemd-analyze verify: ${#units[@]} units clean ($(systemd-analyze --version | head -n1))"

report="$(cd "$work" && systemd-analyze security --offline=true --no-pager "$work/dmstrack.service" 2>&1)" || true
line="$(grep -F 'Overall exposure level' <<<"$report" || true)"
if [[ -z "$line" ]]; then
    echo "verify-systemd-units: systemd-analyze security gave no overall score:" >&2
    printf '%s\n' "$report" >&2
    exit 1
fi
score="$(sed -E 's/.*: *([0-9]+\.[0-9]+).*/\1/' <<<"$line")"
echo "systemd-analyze security dmstrack.service: overall exposure $score (limit $max_exposure)"
grep -E '^✗' <<<"$report" | sed 's/^/  /' || true
if ! awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
    echo "verify-systemd-units: exposure $score is above $max_exposure" >&2
    exit 1
fi
