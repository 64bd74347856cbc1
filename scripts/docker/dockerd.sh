#!/usr/bin/env bash
# A Docker daemon for building and trying obflow's images on a machine that has none running:
#   scripts/docker/dockerd.sh start   # idempotent; prints the DOCKER_HOST to use
#   scripts/docker/dockerd.sh stop
#   scripts/docker/dockerd.sh running   # exit 0 if it answers
# Its own data root, exec root and socket (nothing shared with a system Docker), no bridge and no
# iptables rules (builds use --network host; test containers use host or no networking).
# Needs root and Debian's docker.io (apt-get install docker.io).
set -euo pipefail

ROOT=${OBFLOW_DOCKER_ROOT:-/var/lib/obflow-docker}
RUN_DIR=${OBFLOW_DOCKER_RUN:-/run/obflow-docker}
SOCKET="$RUN_DIR.sock"
export DOCKER_HOST="unix://$SOCKET"

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if ! answers; then
      command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd missing: apt-get install docker.io" >&2; exit 1; }
      mkdir -p "$ROOT" "$RUN_DIR"
      nohup dockerd --data-root "$ROOT" --exec-root "$RUN_DIR" -H "$DOCKER_HOST" --pidfile "$RUN_DIR.pid" \
        --iptables=false --ip-forward=false --bridge=none >"$RUN_DIR.log" 2>&1 &
      for _ in $(seq 1 60); do answers && break; sleep 0.5; done
      answers || { echo "dockerd.sh: dockerd did not start; see $RUN_DIR.log" >&2; tail -5 "$RUN_DIR.log" >&2; exit 1; }
    fi
    echo "$DOCKER_HOST"
    ;;
  stop)
    if [ -f "$RUN_DIR.pid" ]; then
      pid=$(cat "$RUN_DIR.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "dockerd.sh: dockerd ($pid) did not stop within 30 s; killing it" >&2
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
    # what dockerd mounts for itself and leaves behind when it cannot clean up
    for mount in "$RUN_DIR/netns/default" "$ROOT"; do
      if mountpoint -q "$mount"; then umount "$mount" 2>/dev/null || umount -l "$mount"; fi
    done
    ;;
  running) answers ;;
  *) echo "usage: $0 start|stop|running" >&2; exit 2 ;;
esac
