"""The ports obflow's processes listen on by default, each defined here once.

Config defaults, the operator's pods, Services and NetworkPolicies, the CLI's option defaults and the
container entrypoint's health checks take them from here. The chart, the Compose files and the example
configs are YAML and spell them out; tests name them literally, as a reader of a manifest would.
"""

FLINK_REST = 8081
FLINK_BLOB = 6124
FLINK_METRICS = 9249
"""Flink's Prometheus reporter in a Kubernetes pod, where one Flink process runs."""
FLINK_METRICS_RANGE = f"{FLINK_METRICS}-9260"
"""The reporter's ports on one host, where each Flink process there takes the next free one."""
CAPTURE_HTTP = 9300
"""The capture agent's /healthz, /readyz and /metrics."""
JOB_RUNNER_HTTP = 9310
"""The job runner's /healthz, /readyz and /metrics."""
OPERATOR_METRICS = 9400
OPERATOR_LIVENESS = 8080
DATAHUB_EMULATOR = 8090
