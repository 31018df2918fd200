#!/usr/bin/env bash
# Checks the systemd units: `systemd-analyze verify` must print nothing (it reports unknown
# keys and bad values as warnings yet exits 0, so any output fails this script), every
# LoadCredential= must have a SetCredential= fallback of the same name (so a keyless host,
# with no secret file, starts the unit instead of failing with 243/CREDENTIALS), and
# `systemd-analyze security --offline=true` must rate dmstrack.service at or below
# $MAX_EXPOSURE (default 2.0).
#
# Usage:
#   scripts/verify-systemd-units.sh [path/to/dmstrack]
#       the units in systemd/; the binary (default target/debug/dmstrack) stands in for
#       /usr/bin/dmstrack (verify insists that every Exec*= program exists) and writes the
#       man pages that Documentation= names.
#   scripts/verify-systemd-units.sh --root DIR
#       the units installed under DIR (a scratch root the Debian package was installed into):
#       DIR/usr/lib/systemd/system, DIR/usr/bin/dmstrack and DIR/usr/share/man.
# Works offline, in a container without a running systemd; installs Debian's systemd package
# first when systemd-analyze is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
max_exposure="${MAX_EXPOSURE:-2.0}"
installed_root=""
if [[ "${1:-}" == "--root" ]]; then
    installed_root="$(cd "${2:?--root needs a folder}" && pwd)"
    binary="$installed_root/usr/bin/dmstrack"
    unit_dir="$installed_root/usr/lib/systemd/system"
else
    binary="${1:-$root/target/debug/dmstrack}"
    unit_dir="$root/systemd"
fi

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

# Documentation=man:… is checked with man(1): point MANPATH at the pages of this build.
if [[ -n "$installed_root" ]]; then
    export MANPATH="$installed_root/usr/share/man"
else
    "$binary" manpages --dir "$work/man/man1" >/dev/null
    export MANPATH="$work/man"
fi

# Same file names (the units refer to each other), with the install path swapped for the
# binary at hand.
for unit in "$unit_dir"/dmstrack*.service "$unit_dir"/dmstrack*.timer; do
    sed "s#/usr/bin/dmstrack#$binary#g" "$unit" >"$work/$(basename "$unit")"
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
    printf '%s\n' "${output//$work\//}" >&2
    exit 1
fi
echo "systemd-analyze verify: ${#units[@]} units clean ($(systemd-analyze --version | head -n1))"

# A credential without a fallback makes the unit fail (243/CREDENTIALS) when its file is
# missing, which is the normal case on a host with a RAM role.
for unit in "${units[@]}"; do
    while read -r id; do
        if ! grep -Eq "^SetCredential=${id}:" "$unit"; then
            echo "verify-systemd-units: $(basename "$unit"): LoadCredential=$id has no SetCredential=$id: fallback" >&2
            exit 1
        fi
    done < <(sed -nE 's/^LoadCredential=([^:]+):.*/\1/p' "$unit")
done
echo "credentials: every LoadCredential= has a SetCredential= fallback (keyless hosts start)"

for unit in dmstrack.service dmstrack@.service; do
    report="$(cd "$work" && systemd-analyze security --offline=true --no-pager "$work/$unit" 2>&1)" || true
    line="$(grep -F 'Overall exposure level' <<<"$report" || true)"
    if [[ -z "$line" ]]; then
        echo "verify-systemd-units: systemd-analyze security gave no overall score for $unit:" >&2
        printf '%s\n' "$report" >&2
        exit 1
    fi
    score="$(sed -E 's/.*: *([0-9]+\.[0-9]+).*/\1/' <<<"$line")"
    echo "systemd-analyze security $unit: overall exposure $score (limit $max_exposure)"
    grep -E '^✗' <<<"$report" | sed 's/^/  /' || true
    if ! awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
        echo "verify-systemd-units: exposure $score of $unit is above $max_exposure" >&2
        exit 1
    fi
done
