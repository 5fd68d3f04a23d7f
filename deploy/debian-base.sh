#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines
# that reach a Debian mirror and PyPI but no container registry. Needs root, debootstrap and
# buildah (apt-get install debootstrap buildah).
#
#   deploy/debian-base.sh [TAG]     # default tag: localhost/python:3.11-bookworm-debootstrap
#   PYTHON_IMAGE=localhost/python:3.11-bookworm-debootstrap deploy/build.sh
set -euo pipefail
tag="${1:-localhost/python:3.11-bookworm-debootstrap}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
rootfs=$(mktemp -d /var/tmp/rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# Debian bookworm's python3 is 3.11, the version the project is developed with.
debootstrap --variant=minbase --include=python3,python-is-python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror"
# The image's Python is the container's own: let pip install into it (PEP 668 marker removed),
# as python:3.11-slim does.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
cp -a "$rootfs"/. "$mnt"/
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
buildah commit --rm "$ctr" "$tag"
echo "base image $tag"
