#!/usr/bin/env bash
# Builds Kubernetes binaries from Debian's `kubernetes` source package (1.20.2, full vendor tree) with
# Debian's Go and no network for Go modules, and caches them outside the repo, with the pause
# container's source (src/pause.c) for the test cluster's pause image. Idempotent: what is in the
# cache is not built again. Prints the cache's bin directory on its last line.
#
#   scripts/kube/build.sh [component ...]   default: kube-apiserver kube-controller-manager
#   scripts/kube/build.sh --node            the five a whole node needs (tools/cluster)
#   OBFLOW_KUBE_CACHE=DIR                   cache root (default ~/.cache/obflow/kubernetes)
#
# Cold: ≈ 6.5 min for the default two on 2 cores, ≈ 8 min more for kube-scheduler, kubelet and
# kube-proxy; ≈ 2.2 GB of build tree (removed afterwards).
set -euo pipefail

components=("$@")
((${#components[@]})) || components=(kube-apiserver kube-controller-manager)
[ "${components[*]}" != --node ] || components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
cache=${OBFLOW_KUBE_CACHE:-$HOME/.cache/obflow/kubernetes}
bin="$cache/bin"
mkdir -p "$bin"

install_packages() {
  (($#)) || return 0
  [ "$(id -u)" -eq 0 ] || { echo "kube build: install as root: apt-get install $*" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What runs next to the binaries: etcd, kubectl for the tests, openssl for the service-account keys.
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
install_packages "${need[@]}"

missing=()
for c in "${components[@]}"; do [ -x "$bin/$c" ] || missing+=("$c"); done
pause_c="$cache/src/pause.c"
if ((${#missing[@]} == 0)) && [ -f "$pause_c" ]; then echo "$bin"; exit 0; fi

# Build tools, and Debian's reflect2 1.0.2 sources for the one fix the recipe needs.
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need+=(golang-github-modern-go-reflect2-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
install_packages "${need[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/obflow-kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# `apt-get source` from a private apt directory with a deb-src list, leaving the host's apt alone.
apt_dir="$work/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/sources.list.d"
sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$apt_dir/sources.list.d/debian-src.sources"
apt_opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives")
echo "kube build: fetching Debian's kubernetes sources" >&2
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" source -qq --download-only kubernetes >/dev/null)
(cd "$work" && dpkg-source -x --no-check kubernetes_*.dsc src >/dev/null)
install -D -m 0644 "$work/src/build/pause/linux/pause.c" "$pause_c"
if ((${#missing[@]} == 0)); then echo "$bin"; exit 0; fi

# reflect2 1.0.1 (vendored) crashes on the first custom-resource create; Debian's 1.0.2 does not.
rsync -a --delete /usr/share/gocode/src/github.com/modern-go/reflect2/ "$work/src/vendor/github.com/modern-go/reflect2/"

what=$(printf 'cmd/%s ' "${missing[@]}")
echo "kube build: building ${missing[*]} (several minutes)" >&2
(cd "$work/src" && GOPROXY=off GOFLAGS=-mod=vendor GOCACHE="$cache/go-build" make WHAT="$what" >"$work/build.log" 2>&1) || {
  tail -40 "$work/build.log" >&2; exit 1; }
for c in "${missing[@]}"; do
  install -m 0755 "$work/src/_output/local/go/bin/$c" "$bin/$c"
done
echo "$bin"
