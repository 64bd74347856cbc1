#!/usr/bin/env bash
# Builds obflow's images from the repo's Dockerfiles:
#   scripts/docker/build.sh [flink] [capture] [operator] [seekdb] [emulator]   # default: all five
#   scripts/docker/build.sh zookeeper prometheus alertmanager       # Compose's stand-ins
# Images are tagged obflow/<name>:<version of pyproject.toml> (OBFLOW_IMAGE_TAG overrides).
# The stand-ins (docker/standins/) are Debian's own packages laid out as the official images, for
# docker/compose.yaml on a machine that cannot pull those (ZOOKEEPER_IMAGE=obflow/zookeeper:<tag>, ...).
#
# Base images: with OBFLOW_BASES=official the Dockerfiles' defaults (flink:2.3.0-java17,
# python:3.11-slim-bookworm) are pulled as usual. Otherwise (the default; no registry is reachable
# here) they are made locally with debootstrap (Debian bookworm minbase + python3, and + Java 17 for
# Flink), cached as tarballs in ~/.cache/obflow/images and imported once.
# Docker: the one DOCKER_HOST points at, else a private daemon (scripts/docker/dockerd.sh).
# The host's CA bundle is lent to the build stage (docker/build-certs/) for pip behind a TLS proxy,
# and removed afterwards; it never reaches an image.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${OBFLOW_IMAGE_CACHE:-$HOME/.cache/obflow/images}
TAG=${OBFLOW_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
images=("$@")
((${#images[@]})) || images=(flink capture operator seekdb emulator)

# One build at a time: builds share the daemon, the tags and the lent CA bundle.
exec 9>"${TMPDIR:-/tmp}/obflow-image-build.lock"
flock 9

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  DOCKER_HOST=$(scripts/docker/dockerd.sh start)
  export DOCKER_HOST
fi

# debootstrap_base NAME PACKAGES: a local base image made from Debian, cached as a tarball
debootstrap_base() {
  local name=$1 packages=$2 image="obflow-base/$1:bookworm" tarball="$CACHE/$1-bookworm.tar"
  docker image inspect "$image" >/dev/null 2>&1 && return
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "build.sh: debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
    local rootfs
    rootfs=$(mktemp -d)
    echo "build.sh: debootstrap $name ($packages)" >&2
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
      || { echo "build.sh: debootstrap failed; see $rootfs.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    mkdir -p "$CACHE"
    tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$rootfs" "$rootfs.log"
  fi
  docker import "$tarball" "$image" >/dev/null
}

python_base=()
flink_base=()
if [ "${OBFLOW_BASES:-local}" != official ]; then
  debootstrap_base python python3,python3-venv,ca-certificates
  python_base=(--build-arg BASE_IMAGE=obflow-base/python:bookworm)
  if [[ " ${images[*]} " == *" flink "* || " ${images[*]} " == *" zookeeper "* ]]; then
    debootstrap_base java17-python python3,python3-venv,ca-certificates,openjdk-17-jre-headless
    flink_base=(--build-arg BASE_IMAGE=obflow-base/java17-python:bookworm)
  fi
fi

trap 'rm -f docker/build-certs/ca.pem' EXIT
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -f "$bundle" ]; then cp "$bundle" docker/build-certs/ca.pem; break; fi
done

# A hash of everything a build reads — the Dockerfile, its build args and what it COPYs from the
# context: an image whose label matches is up to date and not rebuilt.
inputs_hash() {
  local dockerfile=$1; shift
  local sources
  sources=$(awk '/^COPY / && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$dockerfile" | grep -v '^docker/build-certs')
  # shellcheck disable=SC2086  # one path per word
  { printf '%s\n' "$@"
    cat "$dockerfile"
    if [ -n "$sources" ]; then
      { git ls-files -- $sources 2>/dev/null || find $sources -type f -not -path '*/__pycache__/*'; } | sort | xargs cat
    fi
  } | sha256sum | cut -c1-16
}

build() {
  local name=$1 dockerfile=$2; shift 2
  local started=$SECONDS hash
  hash=$(inputs_hash "$dockerfile" "$@")
  if [ "$(docker image inspect -f '{{index .Config.Labels "obflow.io/inputs"}}' "obflow/$name:$TAG" 2>/dev/null)" = "$hash" ]; then
    echo "obflow/$name:$TAG is up to date"
    return
  fi
  local log
  log=$(mktemp)
  if ! DOCKER_BUILDKIT=0 docker build --network host --label "obflow.io/inputs=$hash" \
      -t "obflow/$name:$TAG" -f "$dockerfile" "$@" . >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build.sh: building obflow/$name failed (whole log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
  # the image this one replaces, now untagged (its build stages stay: they are the layer cache)
  docker image prune --force --filter "label=obflow.io/inputs" >/dev/null
  echo "obflow/$name:$TAG built in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "obflow/$name:$TAG" | numfmt --to=iec))"
}

for image in "${images[@]}"; do
  case "$image" in
    flink) build flink docker/flink.Dockerfile "${flink_base[@]}" ;;
    capture) build capture docker/python.Dockerfile "${python_base[@]}" --build-arg EXTRAS=capture --build-arg COMMAND=capture ;;
    operator) build operator docker/python.Dockerfile "${python_base[@]}" --build-arg EXTRAS=operator --build-arg COMMAND=operator ;;
    seekdb) build seekdb docker/seekdb.Dockerfile "${python_base[@]}" ;;
    emulator) build datahub-emulator docker/python.Dockerfile "${python_base[@]}" --build-arg EXTRAS=datahub \
        --build-arg COMMAND=datahub-emulator --build-arg DEV_TOOLS=yes ;;
    zookeeper) build zookeeper docker/standins/zookeeper.Dockerfile "${flink_base[@]}" ;;
    prometheus|alertmanager) build "$image" "docker/standins/$image.Dockerfile" "${python_base[@]}" ;;
    *) echo "build.sh: unknown image '$image' (flink, capture, operator, seekdb, emulator, zookeeper, prometheus, alertmanager)" >&2
       exit 2 ;;
  esac
done
