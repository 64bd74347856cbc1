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
export FLINK_CONF_DIR="$work_conf"
export FLINK_LOG_DIR="${FLINK_LOG_DIR:-/tmp/flink-log}"
mkdir -p "$FLINK_LOG_DIR"

case "$role" in
  jobmanager) exec "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@" ;;
  standalone-job) exec "$FLINK_HOME/bin/standalone-job.sh" start-foreground "$@" ;;
  taskmanager) exec "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@" ;;
esac
