#!/usr/bin/env bash
# Builds the container image from Containerfile with the first engine that can pull base
# images (podman, then docker, then buildah), as dmstrack:<version>, and runs
# `dmstrack --version` and `dmstrack demo` in it. Without such an engine it says so and exits
# 0 without pretending: on the project's machines only the docker client exists (no daemon)
# and base images cannot be pulled, so the image build is not tested there.
#
# Usage: scripts/build-image.sh [TAG]     (default dmstrack:<Cargo.toml version>)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
version="$(sed -nE 's/^version = "([^"]+)"/\1/p' Cargo.toml | head -n1)"
tag="${1:-dmstrack:$version}"

engine=""
for candidate in podman docker buildah; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    case "$candidate" in
    docker) docker info >/dev/null 2>&1 || continue ;;
    podman) podman info >/dev/null 2>&1 || continue ;;
    esac
    engine="$candidate"
    break
done
if [[ -z "$engine" ]]; then
    echo "build-image: SKIPPED: no container engine can run here (docker client without a" \
        "daemon, no podman/buildah); the Containerfile was not built or tested" >&2
    exit 0
fi
# The base images must come from their registries; when they cannot, skip the same way.
base="$(sed -nE 's/^FROM ([^ ]+).*/\1/p' Containerfile | tail -n1)"
if ! "$engine" pull "$base" >/dev/null 2>&1; then
    echo "build-image: SKIPPED: $engine cannot pull $base here; the Containerfile was not" \
        "built or tested" >&2
    exit 0
fi
case "$engine" in
buildah) buildah bud --format docker -t "$tag" -f Containerfile . ;;
podman) podman build --format docker -t "$tag" -f Containerfile . ;;
*) docker build -t "$tag" -f Containerfile . ;;
esac
runner="$engine"
[[ "$engine" == buildah ]] && runner=podman
if command -v "$runner" >/dev/null 2>&1; then
    "$runner" run --rm "$tag" --version
    "$runner" run --rm --entrypoint /usr/local/bin/dmstrack "$tag" demo --dir /tmp/demo
fi
echo "build-image: built $tag with $engine"
