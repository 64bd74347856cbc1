"""Pure builders: a ``DataPipeline`` in, the manifests of every child out. No API calls here.

Children of pipeline ``NAME``:

- ServiceAccount, Role, RoleBinding ``NAME-flink``: Flink's Kubernetes HA keeps leader election and
  job metadata in ConfigMaps, so the Flink pods may read and write ConfigMaps of their namespace;
- ConfigMap ``NAME-flink-config``: Flink's ``config.yaml`` (Kubernetes HA, checkpointing, restarts,
  Prometheus reporter, memory from the container sizes) and its log4j configuration;
- ConfigMaps ``NAME-flink-env`` and ``NAME-capture-env``: each component's runtime configuration as
  ``OBFLOW_*`` environment variables (R8.6), split so a capture-only change leaves Flink alone;
- Deployment + Service ``NAME-jobmanager``: ≥ 2 JobManagers in Kubernetes HA (R5.1, R5.2), running
  the Python job in application mode (the runner only submits and watches it);
- Deployment ``NAME-taskmanager``: the job's subtasks, which read DataHub and write the output files
  (the only pods that mount a separate output claim); Deployment ``NAME-capture`` (one replica, Recreate: two agents
  never read the same source);
- PodDisruptionBudgets for the JobManagers and TaskManagers;
- with the operator's NetworkPolicy settings, NetworkPolicies ``NAME-jobmanager``, ``NAME-taskmanager``
  and ``NAME-capture`` that let each pod send and receive only what the pipeline needs (the flows
  are listed in :mod:`obflow_operator.network`).

Each manifest carries ``obflow.io/hash``, a digest of its own content, so the reconciler writes only
children whose desired state changed; each pod template carries the digest of the configuration it
reads, so a configuration change rolls exactly the pods that read it. Credentials come only from
Secrets (``secretKeyRef``), never from ConfigMaps.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from obflow import ports
from obflow.config import ENV_NESTED_DELIMITER, ENV_PREFIX, ObflowConfig, flatten
from obflow.flink_conf import checkpointing, prometheus_reporter, restart_strategy
from obflow.units import parse_duration
from obflow_operator.network import NetworkPolicySettings
from obflow_operator.spec import (
    DATAHUB_CA_FILE,
    GROUP,
    KIND,
    SOURCE_CA_FILE,
    VERSION,
    DataPipelineSpec,
    Resources,
    SecretKeyRef,
    SpecError,
    memory_bytes,
    runtime_config,
    storage_paths,
    with_parallelism,
)

HASH_ANNOTATION = f"{GROUP}/hash"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
MANAGED_BY = "obflow-operator"
FLINK_CONF_DIR = "/opt/flink/conf"
# JobManagers and TaskManagers bind their RPC (Pekko) on a port of the kernel's choosing: a container
# restarted in its pod keeps the pod's address, and with a fixed port its new actor system would have
# the old one's address too; the peers' stale association to that address then discards its messages
# and the restarted TaskManager never registers (seen in the e2e suite). Nothing dials a fixed RPC port:
# with Kubernetes HA every process finds the leader's actual address in the leader ConfigMap.
ANY_RPC_PORT = "0"
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
JOB_MODULE = "flink_job.job"
FLINK_UID = 9999  # the flink user of the official Flink image

# Flink's stock JVM options for Java 17 (its default config.yaml): writing our own config.yaml must
# keep them, or Flink's serializers fail on the module system.
JAVA_17_OPTS = " ".join(
    [
        *(
            f"--add-exports={m}=ALL-UNNAMED"
            for m in (
                "java.rmi/sun.rmi.registry",
                "jdk.compiler/com.sun.tools.javac.api",
                "jdk.compiler/com.sun.tools.javac.file",
                "jdk.compiler/com.sun.tools.javac.parser",
                "jdk.compiler/com.sun.tools.javac.tree",
                "jdk.compiler/com.sun.tools.javac.util",
                "java.security.jgss/sun.security.krb5",
            )
        ),
        *(
            f"--add-opens=java.base/{p}=ALL-UNNAMED"
            for p in (
                "java.lang",
                "java.net",
                "java.io",
                "java.nio",
                "sun.nio.ch",
                "java.lang.reflect",
                "java.text",
                "java.time",
                "java.util",
                "java.util.concurrent",
                "java.util.concurrent.atomic",
                "java.util.concurrent.locks",
            )
        ),
    ]
)

LOG4J_CONSOLE = """\
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = ConsoleAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = INFO
appender.console.name = ConsoleAppender
appender.console.type = CONSOLE
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
"""


@dataclass(frozen=True)
class Owner:
    """The ``DataPipeline`` the children belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class BuildOptions:
    """What depends on the cluster or on the pipeline's history rather than on its spec."""

    restore_path: str | None = None  # savepoint or checkpoint the job starts from
    job_id: str | None = None  # the job's fixed id; a new one for every new start (see job_id_for)
    pdb_api_version: str = "policy/v1"  # policy/v1beta1 on Kubernetes < 1.21
    # with in-place rescaling: the parallelism the running Flink pods started with, which their hash
    # keeps, so that rescaling in place does not restart them (see _flink_pods_hash)
    pods_parallelism: int | None = None
    network_policies: NetworkPolicySettings | None = None  # None: no NetworkPolicies


def job_id_for(uid: str, generation: int) -> str:
    """The fixed Flink job id of a pipeline's ``generation``-th start (32 hex digits)."""
    return hashlib.sha256(f"{uid}/{generation}".encode()).hexdigest()[:32]


def task_managers_for(spec: DataPipelineSpec, parallelism: int | None = None) -> int:
    """TaskManagers needed for ``parallelism`` (default: the spec's) at ``slots`` each, within the bounds."""
    tm = spec.flink.task_manager
    needed = math.ceil((parallelism or spec.flink.parallelism) / tm.slots)
    return max(tm.min_replicas, needed)


def validate(name: str, spec: DataPipelineSpec) -> ObflowConfig:
    """Rules across sections that the schema cannot express; returns the runtime config.
    Raises :class:`SpecError` naming the field and the fix."""
    problems = []
    tm = spec.flink.task_manager
    if task_managers_for(spec) > tm.max_replicas:
        problems.append(
            f"spec.flink.parallelism: {spec.flink.parallelism} needs {task_managers_for(spec)} TaskManagers of "
            f"{tm.slots} slots, more than taskManager.maxReplicas ({tm.max_replicas}); raise maxReplicas or slots"
        )
    if spec.autoscaler.max_parallelism > spec.flink.max_parallelism:
        problems.append(
            f"spec.autoscaler.maxParallelism: {spec.autoscaler.max_parallelism} exceeds flink.maxParallelism "
            f"({spec.flink.max_parallelism}), the most the job's state can be rescaled to; lower it"
        )
    if len(name) > 40:
        problems.append(f"metadata.name: {len(name)} characters; at most 40, so child names stay valid")
    if problems:
        raise SpecError(problems)
    return runtime_config(name, spec)


# --- runtime configuration as environment variables ---------------------------------------------

# which runtime settings each component reads; secrets are never among them
CAPTURE_SETTINGS = ("source", "datahub", "capture", "logging")
FLINK_SETTINGS = (
    "source.engine",
    "source.mode",
    "source.database",
    "source.tables",
    "datahub",
    "flink",
    "checkpoint",
    "output",
    "logging",
)
SECRET_SETTINGS = ("source.user", "source.password", "datahub.access_id", "datahub.access_key")


def job_view(config: ObflowConfig) -> ObflowConfig:
    """``config`` as the job needs it: of ``source.tables`` only those with configured columns (the job
    types every other table by the shape its changes carry, so adding or removing one is the capture's
    business alone, obflow_operator.changes)."""
    typed = [table for table in config.source.tables if table.columns]
    return config.model_copy(update={"source": config.source.model_copy(update={"tables": typed})})


def env_settings(config: ObflowConfig, selected: tuple[str, ...]) -> dict[str, str]:
    """``OBFLOW_*`` variables for the ``selected`` dotted settings (sections or keys), secrets excluded."""
    out: dict[str, str] = {}
    for key, value in flatten(config.model_dump(mode="json")):
        if key in SECRET_SETTINGS or not any(key == s or key.startswith(s + ".") for s in selected):
            continue
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        out[ENV_PREFIX + key.upper().replace(".", ENV_NESTED_DELIMITER)] = text
    return dict(sorted(out.items()))


def _secret_env(variable: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def datahub_secret_env(spec: DataPipelineSpec) -> list[dict[str, Any]]:
    creds = spec.datahub.credentials
    return [
        _secret_env("OBFLOW_DATAHUB__ACCESS_ID", creds.access_id),
        _secret_env("OBFLOW_DATAHUB__ACCESS_KEY", creds.access_key),
    ]


def source_secret_env(spec: DataPipelineSpec) -> list[dict[str, Any]]:
    creds = spec.source.credentials
    env = [_secret_env("OBFLOW_SOURCE__PASSWORD", creds.password)]
    if creds.user is not None:
        env.insert(0, _secret_env("OBFLOW_SOURCE__USER", creds.user))
    return env


# --- Flink configuration -------------------------------------------------------------------------


def _flink_memory(quantity: str) -> str:
    return f"{memory_bytes(quantity) // 1024**2}m"


def flink_configuration(owner: Owner, spec: DataPipelineSpec, options: BuildOptions) -> dict[str, str]:
    """Flink's configuration for the pipeline; ``spec.flink.configuration`` wins over every key."""
    flink = spec.flink
    paths = storage_paths(owner.name, spec)
    conf = {
        "env.java.opts.all": JAVA_17_OPTS,
        "kubernetes.cluster-id": owner.name,
        "kubernetes.namespace": owner.namespace,
        "high-availability.type": "kubernetes",
        "high-availability.storageDir": paths["ha"],
        "jobmanager.rpc.address": f"{owner.name}-jobmanager",
        "jobmanager.rpc.port": ANY_RPC_PORT,
        "jobmanager.bind-host": "0.0.0.0",
        "taskmanager.bind-host": "0.0.0.0",
        "taskmanager.rpc.port": ANY_RPC_PORT,
        "blob.server.port": str(ports.FLINK_BLOB),
        "rest.port": str(ports.FLINK_REST),
        "rest.address": f"{owner.name}-jobmanager",
        "rest.bind-address": "0.0.0.0",
        "jobmanager.memory.process.size": _flink_memory(flink.job_manager.resources.memory),
        "taskmanager.memory.process.size": _flink_memory(flink.task_manager.resources.memory),
        "taskmanager.numberOfTaskSlots": str(flink.task_manager.slots),
        "parallelism.default": str(flink.parallelism),
        "pipeline.max-parallelism": str(flink.max_parallelism),
        "execution.checkpointing.interval": flink.checkpoint.interval,
        **checkpointing(paths["checkpoints"], paths["savepoints"], flink.checkpoint.retained, flink.checkpoint.backend),
        **restart_strategy(flink.restart_attempts, parse_duration(flink.restart_delay)),
        **prometheus_reporter(str(ports.FLINK_METRICS)),
        "python.executable": "python3",
        "python.client.executable": "python3",
    }
    if flink.in_place_rescale:
        conf["jobmanager.scheduler"] = "adaptive"  # its resource requirements rescale the running job
    if options.restore_path:
        conf["execution.state-recovery.path"] = options.restore_path
    if options.job_id:
        conf["$internal.pipeline.job-id"] = options.job_id
    # A JobManager that restarts after its job FINISHED (stopped with a savepoint) finds the job in
    # the job result store and does not run it again; a new start gets a new job id instead.
    conf["job-result-store.delete-on-commit"] = "false"
    conf.update(flink.configuration)
    return conf


# --- manifests ------------------------------------------------------------------------------------


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "obflow",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }


def digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` annotated with the digest of its content (which the annotation is not part of)."""
    manifest["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest(manifest)
    return manifest


def _resources(resources: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": resources.cpu, "memory": resources.memory},
        "limits": {"memory": resources.memory},
    }


def _volumes(
    owner: Owner, spec: DataPipelineSpec, flink_conf: bool, output: bool, database: bool = False
) -> tuple[list[Any], list[Any]]:
    """Volumes and mounts: the shared storage, the output claim if separate (only the TaskManagers write
    output), Flink's configuration, DataHub's CA (every component talks to DataHub), the database's CA
    (only the capture agent, ``database``, talks to the database)."""
    storage = spec.storage
    volume: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": storage.claim_name}} if storage.claim_name else {"emptyDir": {}}
    )
    volumes = [{"name": "storage", **volume}]
    mounts: list[dict[str, Any]] = [{"name": "storage", "mountPath": storage.mount_path}]
    if output and spec.output.claim_name and spec.output.path:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": spec.output.claim_name}})
        mounts.append({"name": "output", "mountPath": spec.output.path})
    if flink_conf:
        volumes.append({"name": "flink-config", "configMap": {"name": f"{owner.name}-flink-config"}})
        mounts.append({"name": "flink-config", "mountPath": FLINK_CONF_DIR})
    cas = [("datahub-ca", spec.datahub.ca_secret, DATAHUB_CA_FILE)]
    if database:
        cas.append(("source-ca", spec.source.ca_secret, SOURCE_CA_FILE))
    for name, ca, path in cas:
        if ca is not None:
            items = [{"key": ca.key, "path": PurePosixPath(path).name}]
            volumes.append({"name": name, "secret": {"secretName": ca.name, "items": items}})
            mounts.append({"name": name, "mountPath": str(PurePosixPath(path).parent), "readOnly": True})
    return volumes, mounts


def _pod_template(
    owner: Owner, spec: DataPipelineSpec, component: str, containers: list[Any], volumes: list[Any], config_hash: str
) -> dict[str, Any]:
    overrides = spec.pod_template
    pod_spec: dict[str, Any] = {
        "serviceAccountName": overrides.service_account_name or f"{owner.name}-flink",
        "securityContext": {"runAsNonRoot": True, "runAsUser": FLINK_UID, "fsGroup": FLINK_UID},
        "containers": containers,
        "volumes": volumes,
    }
    if component == "capture" and not overrides.service_account_name:
        pod_spec["serviceAccountName"] = "default"
        pod_spec["automountServiceAccountToken"] = False  # the agent never talks to the API server
    if overrides.node_selector:
        pod_spec["nodeSelector"] = overrides.node_selector
    if overrides.tolerations:
        pod_spec["tolerations"] = overrides.tolerations
    if overrides.affinity:
        pod_spec["affinity"] = overrides.affinity
    if overrides.priority_class_name:
        pod_spec["priorityClassName"] = overrides.priority_class_name
    if overrides.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in overrides.image_pull_secrets]
    return {
        "metadata": {
            "labels": {**overrides.labels, **labels(owner, component)},
            "annotations": {**overrides.annotations, CONFIG_HASH_ANNOTATION: config_hash},
        },
        "spec": pod_spec,
    }


def _container(
    spec: DataPipelineSpec, name: str, image: str, args: list[str], env_config_map: str, extra_env: list[Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": args,
        "envFrom": [{"configMapRef": {"name": env_config_map}}],
        "env": extra_env,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def _http_probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _tcp_probe(port: str, period: int, failures: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}


def _deployment(
    owner: Owner, name: str, component: str, replicas: int, template: dict[str, Any], strategy: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(owner, component)},
            "strategy": strategy,
            "template": template,
        },
    }


# one new pod at a time, the old one kept until it is ready: with HA the standby JobManager takes
# over while the other is replaced
ONE_NEW_POD_AT_A_TIME = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
POD_IP_ENV = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def build_rbac(owner: Owner) -> list[dict[str, Any]]:
    name = f"{owner.name}-flink"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(owner, name, "flink")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(owner, name, "flink"),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(owner, name, "flink"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def build_config_maps(
    owner: Owner, spec: DataPipelineSpec, config: ObflowConfig, options: BuildOptions
) -> list[dict[str, Any]]:
    flink_yaml = yaml.safe_dump(flink_configuration(owner, spec, options), sort_keys=True, width=10_000)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(owner, f"{owner.name}-flink-config", "flink"),
            "data": {"config.yaml": flink_yaml, "log4j-console.properties": LOG4J_CONSOLE},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(owner, f"{owner.name}-flink-env", "flink"),
            "data": env_settings(job_view(config), FLINK_SETTINGS),
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(owner, f"{owner.name}-capture-env", "capture"),
            "data": env_settings(config, CAPTURE_SETTINGS),
        },
    ]


def build_jobmanager(owner: Owner, spec: DataPipelineSpec, config_hash: str) -> list[dict[str, Any]]:
    jm = spec.flink.job_manager
    volumes, mounts = _volumes(owner, spec, flink_conf=True, output=False)
    # each JobManager publishes its own address as leader (Flink's standalone-job takes no --host)
    own_address = "-Djobmanager.rpc.address=$(POD_IP)"
    args = ["standalone-job", own_address, "--job-classname", PYTHON_DRIVER, "-pym", JOB_MODULE]
    container = _container(
        spec, "jobmanager", spec.flink.image, args, f"{owner.name}-flink-env", [POD_IP_ENV, *datahub_secret_env(spec)]
    )
    container |= {
        "ports": [
            {"name": "rest", "containerPort": ports.FLINK_REST, "protocol": "TCP"},
            {"name": "blob", "containerPort": ports.FLINK_BLOB, "protocol": "TCP"},
            {"name": "flink-metrics", "containerPort": ports.FLINK_METRICS, "protocol": "TCP"},
            {"name": "runner-metrics", "containerPort": ports.JOB_RUNNER_HTTP, "protocol": "TCP"},
        ],
        "resources": _resources(jm.resources),
        "volumeMounts": mounts,
        # Ready: REST answers (leader or standby). Alive: its port is open. REST answers 503 while no
        # leader is elected, and a liveness probe on it killed both JobManagers in the middle of an
        # election, which left the pipeline without one for minutes.
        "startupProbe": _tcp_probe("rest", 5, 24),
        "livenessProbe": _tcp_probe("rest", 10, 6),
        "readinessProbe": _http_probe("/config", "rest", 5, 3),
    }
    replicas = 0 if spec.suspend else jm.replicas
    template = _pod_template(owner, spec, "jobmanager", [container], volumes, config_hash)
    name = f"{owner.name}-jobmanager"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name, "jobmanager"),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(owner, "jobmanager"),
            "ports": [
                {"name": "rest", "port": ports.FLINK_REST, "targetPort": "rest", "protocol": "TCP"},
                {"name": "blob", "port": ports.FLINK_BLOB, "targetPort": "blob", "protocol": "TCP"},
            ],
        },
    }
    return [_deployment(owner, name, "jobmanager", replicas, template, ONE_NEW_POD_AT_A_TIME), service]


def build_taskmanager(owner: Owner, spec: DataPipelineSpec, config_hash: str) -> dict[str, Any]:
    tm = spec.flink.task_manager
    volumes, mounts = _volumes(owner, spec, flink_conf=True, output=True)
    container = _container(
        spec,
        "taskmanager",
        spec.flink.image,
        ["taskmanager", "-Dtaskmanager.host=$(POD_IP)"],
        f"{owner.name}-flink-env",
        [POD_IP_ENV, *datahub_secret_env(spec)],
    )
    # the metrics reporter listens from the TaskManager's start to its end (its RPC port is not fixed)
    container |= {
        "ports": [
            {"name": "flink-metrics", "containerPort": ports.FLINK_METRICS, "protocol": "TCP"},
        ],
        "resources": _resources(tm.resources),
        "volumeMounts": mounts,
        "startupProbe": _tcp_probe("flink-metrics", 5, 24),
        "livenessProbe": _tcp_probe("flink-metrics", 10, 6),
        "readinessProbe": _tcp_probe("flink-metrics", 5, 3),
    }
    replicas = 0 if spec.suspend else task_managers_for(spec)
    template = _pod_template(owner, spec, "taskmanager", [container], volumes, config_hash)
    return _deployment(owner, f"{owner.name}-taskmanager", "taskmanager", replicas, template, ONE_NEW_POD_AT_A_TIME)


def build_capture(owner: Owner, spec: DataPipelineSpec, config_hash: str) -> dict[str, Any]:
    volumes, mounts = _volumes(owner, spec, flink_conf=False, output=False, database=True)
    env = [*source_secret_env(spec), *datahub_secret_env(spec)]
    container = _container(spec, "capture", spec.capture.image, ["capture", "run"], f"{owner.name}-capture-env", env)
    container |= {
        "ports": [{"name": "http", "containerPort": ports.CAPTURE_HTTP, "protocol": "TCP"}],
        "resources": _resources(spec.capture.resources),
        "volumeMounts": mounts,
        "startupProbe": _http_probe("/healthz", "http", 2, 30),
        "livenessProbe": _http_probe("/healthz", "http", 10, 3),
        "readinessProbe": _http_probe("/readyz", "http", 5, 3),
    }
    template = _pod_template(owner, spec, "capture", [container], volumes, config_hash)
    replicas = 0 if spec.suspend else 1
    # Recreate: the old agent is gone before the new one starts, so two never read the same source
    return _deployment(owner, f"{owner.name}-capture", "capture", replicas, template, {"type": "Recreate"})


def build_disruption_budgets(owner: Owner, spec: DataPipelineSpec, options: BuildOptions) -> list[dict[str, Any]]:
    budgets = [("jobmanager", {"minAvailable": 1}), ("taskmanager", {"maxUnavailable": 1})]
    if spec.flink.job_manager.replicas < 2:
        budgets = budgets[1:]  # one JobManager: a budget would block every node drain
    return [
        {
            "apiVersion": options.pdb_api_version,
            "kind": "PodDisruptionBudget",
            "metadata": _metadata(owner, f"{owner.name}-{component}", component),
            "spec": {**rule, "selector": {"matchLabels": labels(owner, component)}},
        }
        for component, rule in budgets
    ]


NETWORK_POLICY_API = "networking.k8s.io/v1"
DNS_PORT = 53


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _egress_to(host: str | None, port: int) -> dict[str, Any]:
    """Egress to a service outside the pipeline: at its address when ``host`` is one, else at any."""
    rule: dict[str, Any] = {"ports": _tcp(port)}
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return rule
    rule["to"] = [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]
    return rule


def _ingress_from(peers: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"from": peers, "ports": ports} if peers else {"ports": ports}


def build_network_policies(
    owner: Owner, spec: DataPipelineSpec, settings: NetworkPolicySettings
) -> list[dict[str, Any]]:
    """A NetworkPolicy per component that isolates its pods and allows the flows the pipeline needs."""
    pipeline = {k: v for k, v in labels(owner, "").items() if k != "app.kubernetes.io/component"}
    flink_pods = {
        "podSelector": {
            "matchLabels": pipeline,
            "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["jobmanager", "taskmanager"]}
            ],
        }
    }
    the_operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}},
        "podSelector": {"matchLabels": dict(settings.operator_labels)},
    }
    dns = {"ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}
    api_server: dict[str, Any] = {"ports": _tcp(*settings.api_server_ports)}
    if settings.api_server_cidrs:
        api_server["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in settings.api_server_cidrs]
    endpoint = urllib.parse.urlsplit(spec.datahub.endpoint)
    datahub = _egress_to(endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80))
    database = _egress_to(spec.source.host, spec.source.port)
    # anything between the pipeline's own Flink pods: their RPC ports are the kernel's choice
    from_flink, to_flink = {"from": [flink_pods]}, {"to": [flink_pods]}
    metrics = settings.metrics_from
    flows = {
        "jobmanager": (
            [
                {"from": [the_operator, *settings.rest_from], "ports": _tcp(ports.FLINK_REST)},
                from_flink,
                _ingress_from(metrics, _tcp(ports.FLINK_METRICS, ports.JOB_RUNNER_HTTP)),
            ],
            [dns, api_server, to_flink, datahub],  # the runner checks the change topic at start
        ),
        "taskmanager": (
            [from_flink, _ingress_from(metrics, _tcp(ports.FLINK_METRICS))],
            [dns, api_server, to_flink, datahub],
        ),
        "capture": ([_ingress_from(metrics, _tcp(ports.CAPTURE_HTTP))], [dns, database, datahub]),
    }
    return [
        {
            "apiVersion": NETWORK_POLICY_API,
            "kind": "NetworkPolicy",
            "metadata": _metadata(owner, f"{owner.name}-{component}", component),
            "spec": {
                "podSelector": {"matchLabels": labels(owner, component)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [*egress, *settings.extra_egress],
            },
        }
        for component, (ingress, egress) in flows.items()
    ]


def _flink_pods_hash(
    owner: Owner, spec: DataPipelineSpec, config_maps: list[dict[str, Any]], options: BuildOptions
) -> str:
    """The hash of what the Flink pods read when they start. With in-place rescaling it keeps the
    parallelism the pods started with: the adaptive scheduler changes it inside the running job, so a
    new parallelism must not restart the pods (the ConfigMaps still carry it, for the next start)."""
    started = options.pods_parallelism
    if spec.flink.in_place_rescale and started is not None and started != spec.flink.parallelism:
        as_started = with_parallelism(spec, started)
        config_maps = build_config_maps(owner, as_started, validate(owner.name, as_started), options)
    return digest([cm["data"] for cm in config_maps[:2]])


def build_children(owner: Owner, spec: DataPipelineSpec, options: BuildOptions | None = None) -> list[dict[str, Any]]:
    """Every child of the pipeline, in the order they are applied; raises :class:`SpecError`."""
    options = options or BuildOptions()
    config = validate(owner.name, spec)
    config_maps = build_config_maps(owner, spec, config, options)
    flink_hash = _flink_pods_hash(owner, spec, config_maps, options)
    capture_hash = digest(config_maps[2]["data"])
    children = [
        *build_rbac(owner),
        *config_maps,
        *build_jobmanager(owner, spec, flink_hash),
        build_taskmanager(owner, spec, flink_hash),
        build_capture(owner, spec, capture_hash),
        *build_disruption_budgets(owner, spec, options),
    ]
    if options.network_policies:
        children += build_network_policies(owner, spec, options.network_policies)
    return [with_hash(child) for child in children]
