#!/usr/bin/env bash
# Creates, once, the Python venv that runs moto's S3/IAM/STS server for the S3 integration
# tests (tests/support/moto.rs), and prints the path of its python.
#
#   scripts/moto-venv.sh [VENV_DIR]      # default: target/moto-venv
#
# Versions are pinned so every machine tests against the same server. A flock makes parallel
# callers (several test threads, or .ci/run and a test) install once; a marker file written
# last makes an interrupted install start over instead of leaving a half-filled venv in use.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=("moto[server]==5.2.5" "boto3==1.44.8" "botocore==1.44.8")
VENV="${1:-target/moto-venv}"
MARKER="$VENV/.dmstrack-installed"
WANT="${PACKAGES[*]}"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

if [ ! -f "$MARKER" ] || [ "$(cat "$MARKER")" != "$WANT" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2; then
    echo "moto-venv: pip could not install ${WANT} (is PyPI reachable?)" >&2
    exit 1
  fi
  printf '%s' "$WANT" >"$MARKER"
fi
echo "$(cd "$VENV" && pwd)/bin/python"
