#!/bin/sh
# obflow's Flink image: `jobmanager`, `standalone-job ARGS` (the JobManager running the job, as the
# operator starts it) or `taskmanager ARGS`; anything else is run as given.
# Configuration: /opt/flink/conf (mounted, may be read-only; Flink's stock configuration when empty)
# is copied to a writable directory, config.yaml flattened and FLINK_PROPERTIES (newline-separated
# "key: value" lines) applied over it.
set -eu

role="${1:-help}"
case "$role" in
  jobmanager|standalone-job|taskmanager) shift ;;
  help|--help|-h)
    echo "usage: jobmanager | standalone-job [ARGS] | taskmanager [ARGS] | COMMAND [ARGS]"
    exit 0 ;;
  *) exec "$@" ;;
esac

conf_dir="${FLINK_CONF_DIR:-/opt/flink/conf}"
work_conf="$(mktemp -d /tmp/flink-conf.XXXXXX)"
if [ -n "$(ls -A "$conf_dir" 2>/dev/null)" ]; then
  cp -L "$conf_dir"/* "$work_conf"/
fi
for file in config.yaml log4j-console.properties log4j.properties log4j-cli.properties; do
  [ -f "$work_conf/$file" ] || cp "$FLINK_HOME/conf/$file" "$work_conf/"
done
python3 -m obflow.container flink-config "$work_conf" "$work_conf"
# Flink's PythonDriver logs the whole environment of the Python process it starts at INFO, the
# DataHub access key and database password with it: that logger says warnings only
for file in "$work_conf"/log4j*.properties; do
  printf '\nlogger.obflow_python_env.name = org.apache.flink.client.python.PythonEnvUtils\nlogger.obflow_python_env.level = WARN\n' >>"$file"
done
export FLINK_CONF_DIR="$work_conf"
export FLINK_LOG_DIR="${FLINK_LOG_DIR:-/tmp/flink-log}"
mkdir -p "$FLINK_LOG_DIR"

# A TaskManager tells the JobManager and the other TaskManagers where to reach it; Flink's stock
# configuration says localhost, which only works with everything in one container. Unless given
# (the operator passes -Dtaskmanager.host=$(POD_IP)), it is this container's own IP address.
if [ "$role" = taskmanager ]; then
  case " $* ${FLINK_PROPERTIES:-}" in
    *"taskmanager.host"*) ;;
    *) set -- "$@" "-Dtaskmanager.host=$(python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))')" ;;
  esac
fi

case "$role" in
  jobmanager) exec "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@" ;;
  standalone-job) exec "$FLINK_HOME/bin/standalone-job.sh" start-foreground "$@" ;;
  taskmanager) exec "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@" ;;
esac
