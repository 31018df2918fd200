#!/usr/bin/env bash
# Validates config/k8s-*.yaml:
#   1. against the Kubernetes object schemas with kubernetes-validate (PyPI, pinned below;
#      it ships the OpenAPI schemas of every Kubernetes release, so it works offline), in
#      strict mode (unknown fields are errors), for the oldest release the examples support
#      (1.29: native sidecars) and the newest it knows;
#   2. by scripts/validate_k8s.py, for what kubernetes-validate cannot know: the PodMonitor
#      (a Prometheus Operator custom resource), and how the objects fit together and with
#      dmstrack (probes, ports, labels, volumes, the RRSA label, the ConfigMap's config passing
#      `dmstrack check`).
#
# Usage: scripts/validate-k8s.sh [path/to/dmstrack]   (default target/debug/dmstrack)
# Creates its venv once under target/k8s-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=("kubernetes-validate==1.37.0")
VERSIONS=("1.29.0" "1.37.0")
VENV="target/k8s-venv"
MARKER="$VENV/.dmstrack-installed"
WANT="${PACKAGES[*]}"
binary="${1:-target/debug/dmstrack}"

mkdir -p target
exec 9>"$VENV.lock"
flock 9
if [ ! -f "$MARKER" ] || [ "$(cat "$MARKER")" != "$WANT" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2; then
        echo "validate-k8s: pip could not install ${WANT} (is PyPI reachable?)" >&2
        exit 1
    fi
    printf '%s' "$WANT" >"$MARKER"
fi

manifests=(config/k8s-*.yaml)
for version in "${VERSIONS[@]}"; do
    # --quiet prints only problems; the PodMonitor's missing schema is a warning, checked
    # by validate_k8s.py instead.
    if ! output="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}" 2>&1)"; then
        printf '%s\n' "$output" >&2
        echo "validate-k8s: the manifests do not validate against Kubernetes $version" >&2
        exit 1
    fi
    unexpected="$(grep -v "Couldn't find schema for kind PodMonitor" <<<"$output" || true)"
    if [[ -n "$unexpected" ]]; then
        printf '%s\n' "$unexpected" >&2
        echo "validate-k8s: unexpected warnings against Kubernetes $version" >&2
        exit 1
    fi
    echo "kubernetes-validate --strict -k $version: ${manifests[*]} valid"
done
"$VENV/bin/python" scripts/validate_k8s.py --binary "$binary" "${manifests[@]}"
