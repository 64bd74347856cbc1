#!/usr/bin/env bash
# The Compose stack (docker/compose.yaml) for a person: `make compose-up`, `make compose-down`.
#   scripts/docker/compose.sh up            # images built, docker/.env made once, up -d, health waited for
#   scripts/docker/compose.sh down [-v]     # -v: the volumes (data, checkpoints, files) too
#   scripts/docker/compose.sh ARGS...       # any other Compose command, e.g. ps, logs -f capture
# docker/.env, when missing, is made from docker/.env.example; with OBFLOW_BASES=official (a machine
# that can pull) it keeps the official ZooKeeper, Prometheus, Alertmanager and Grafana images, else
# it uses obflow's stand-ins (docker/standins/) and leaves Grafana out. Edit it afterwards at will.
# Docker: the one DOCKER_HOST points at, else the private daemon of scripts/docker/dockerd.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  DOCKER_HOST=$(scripts/docker/dockerd.sh start)
  export DOCKER_HOST
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "compose.sh: neither the docker compose plugin nor docker-compose: apt-get install docker-compose" >&2
  exit 1
fi
compose+=(--project-name obflow --env-file docker/.env -f docker/compose.yaml)
official=$([ "${OBFLOW_BASES:-local}" = official ] && echo yes || echo no)

make_env() {
  [ -f docker/.env ] && return
  local tag
  tag=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
  if [ "$official" = yes ]; then
    cp docker/.env.example docker/.env
  else
    sed -e "s|^ZOOKEEPER_IMAGE=.*|ZOOKEEPER_IMAGE=obflow/zookeeper:$tag|" \
        -e "s|^PROMETHEUS_IMAGE=.*|PROMETHEUS_IMAGE=obflow/prometheus:$tag|" \
        -e "s|^ALERTMANAGER_IMAGE=.*|ALERTMANAGER_IMAGE=obflow/alertmanager:$tag|" \
        -e "s|^COMPOSE_PROFILES=.*|COMPOSE_PROFILES=emulator|" docker/.env.example >docker/.env
  fi
  echo "compose.sh: made docker/.env from docker/.env.example (edit it: credentials, ports, sizes)"
}

case "${1:-up}" in
  up)
    images=(flink capture seekdb emulator)
    [ "$official" = yes ] || images+=(zookeeper prometheus alertmanager)
    scripts/docker/build.sh "${images[@]}"
    make_env
    "${compose[@]}" up -d
    echo "compose.sh: waiting for every container's health check"
    for _ in $(seq 1 60); do
      waiting=$("${compose[@]}" ps -q | xargs docker inspect -f \
        '{{if .State.Health}}{{if ne .State.Health.Status "healthy"}}{{.Name}} {{end}}{{end}}' | tr -d '\n')
      [ -z "$waiting" ] && break
      sleep 5
    done
    "${compose[@]}" ps
    [ -z "$waiting" ] || { echo "compose.sh: not healthy after 5 minutes: $waiting" >&2; exit 1; }
    port() { sed -n "s/^$1=//p" docker/.env; }
    echo "Flink UI http://localhost:$(port FLINK_UI_PORT)  Prometheus http://localhost:$(port PROMETHEUS_PORT)" \
      " Alertmanager http://localhost:$(port ALERTMANAGER_PORT)  seekdb 127.0.0.1:$(port DATABASE_PORT) (root)"
    ;;
  down) shift; "${compose[@]}" down "$@" ;;
  *) "${compose[@]}" "$@" ;;
esac
