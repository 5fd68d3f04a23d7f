#!/usr/bin/env bash
# Build the synthloop image from the repository root, with Docker when a daemon answers,
# else with buildah (daemonless, vfs storage, chroot isolation: works as root without a daemon).
#
#   deploy/build.sh [TAG]                      # default tag: synthloop:0.1.0
#   PYTHON_IMAGE=IMAGE deploy/build.sh [TAG]   # another base than python:3.11-slim-bookworm,
#                                              # e.g. the one deploy/debian-base.sh makes
#   BUILD_CA_BUNDLE=FILE deploy/build.sh       # buildah only: mount FILE as the system CA bundle in
#                                              # every RUN step (a TLS-intercepting proxy's CA); it is
#                                              # not copied into the image
#
# Prints the build time and the image size when done.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-synthloop:0.1.0}"
args=(-f deploy/Dockerfile -t "$tag")
if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
fi
start=$(date +%s)
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    DOCKER_BUILDKIT=1 docker build "${args[@]}" .
    size="$(docker image inspect --format "{{.Size}}" "$tag") bytes"
elif command -v buildah >/dev/null; then
    export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}" BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
    if [[ -n "${BUILD_CA_BUNDLE:-}" ]]; then
        args+=(-v "$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    buildah bud --layers "${args[@]}" .
    size=$(buildah inspect --type image --format '{{.ImageSize}}' "$tag" 2>/dev/null \
        || buildah images --format '{{.Size}}' "$tag")
else
    echo "deploy/build.sh: neither a Docker daemon nor buildah is available" >&2
    exit 1
fi
echo "built $tag in $(( $(date +%s) - start )) s; size: $size"
