#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need, idempotently: system packages (as root),
# the .venv and the pinned Python packages. A second run with nothing changed takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: Java 17 runs Flink; MariaDB is the second real engine of the capture tests;
# promtool (Debian's prometheus package) checks and unit-tests the alert rules.
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# dockerd and debootstrap build obflow's images from local bases (scripts/docker/build.sh)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # validates docker/compose.yaml
# the e2e suite's single-node cluster (tools/cluster): its bridge, iptables, and the pause binary
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables-save >/dev/null 2>&1 || missing+=(iptables)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -n "$(find /usr/lib -name libc.a -print -quit 2>/dev/null)" ] || missing+=(libc6-dev)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the TLS tests make their CA and certificates
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing system packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The capture tests start their own MariaDB in a temporary directory; the packaged one stays off.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now mariadb prometheus docker containerd >/dev/null 2>&1 || true
  fi
fi

"$PYTHON" - <<'PY'
import sys
if not ((3, 11) <= sys.version_info[:2] <= (3, 12)):
    sys.exit(f"bootstrap: Python 3.11 or 3.12 is needed (apache-flink 2.3.0), found {sys.version.split()[0]}")
PY

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.obflow-installed"
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into $VENV (pinned by constraints.txt)"
  # (grep drops the noise of this machine's global pip config about absent local indexes)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" \
    2> >(grep -v "^WARNING: Location .file:///" >&2)
  echo "$want" > "$stamp"
fi
