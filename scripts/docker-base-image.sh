#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) base image from the Debian archive with
# debootstrap and imports it into Docker, for machines that reach the Debian
# archive but no image registry. Does nothing when Docker already has the image.
#
#   scripts/docker-base-image.sh [IMAGE]     # default: chatd-base:bookworm
#
# DEBIAN_MIRROR overrides the archive (default http://deb.debian.org/debian).
# Needs root (debootstrap) and a running Docker daemon.
set -euo pipefail

image=${1:-${BASE_IMAGE:-chatd-base:bookworm}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}

if "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image: present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/chatd-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
echo "base image $image: debootstrap bookworm from $mirror (a few minutes)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}

# The same suites as Debian's own container images: release, updates, security.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# Container habits: no package caches or documentation kept in layers.
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
cat >"$root/etc/apt/apt.conf.d/docker-no-recommends" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/*

tar --numeric-owner -C "$root" -c . |
  "$docker" import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
echo "base image $image: imported ($("$docker" image inspect -f '{{.Size}}' "$image") bytes)"
