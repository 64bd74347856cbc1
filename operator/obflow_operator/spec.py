"""The ``DataPipeline`` custom resource's spec: one pydantic model, the source of the CRD's schema.

Field names are camelCase as Kubernetes users expect; where a section has the same shape as the
runtime configuration (:mod:`obflow.config`) the spec reuses it, so a table or a rolling policy means
the same thing in a ``DataPipeline`` and in an ``obflow.yaml``. Secrets never appear in the spec: the
database password and the DataHub key are references to keys of Kubernetes Secrets.

:func:`runtime_config` turns a spec into the :class:`~obflow.config.ObflowConfig` every component
runs with, so the runtime model's own checks (cross-field rules, SQL column types) apply to specs too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from obflow import ports
from obflow.config import DataHubProject, DataHubTopic, HttpUrl, ObflowConfig, TableConfig
from obflow.units import parse_duration, parse_size

GROUP = "obflow.io"
VERSION = "v1alpha1"
KIND = "DataPipeline"
PLURAL = "datapipelines"

DURATION_PATTERN = r"^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)$"
SIZE_PATTERN = r"^\d+(\.\d+)?\s*([KkMmGgTt]i?[Bb]|[Bb])?$"
# Kubernetes resource quantities as used for cpu and memory: 500m, 2, 1.5, 1600Mi, 2Gi, 1G
QUANTITY_PATTERN = r"^\d+(\.\d+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
_BINARY = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1000, "M": 1000**2, "G": 1000**3}


def _checked_text(parse: Callable[[Any], object]) -> AfterValidator:
    """Text ``parse`` accepts (its ValueError names what is expected), kept as the user wrote it."""

    def check(value: str) -> str:
        parse(value)
        return value

    return AfterValidator(check)


def _quantity(value: str) -> str:
    if not _QUANTITY.fullmatch(value):
        raise ValueError("expected a Kubernetes quantity such as 500m or 2 (cpu), 1600Mi or 2Gi (memory)")
    return value


def _text(pattern: str) -> WithJsonSchema:
    """The CRD checks the pattern; pydantic's validator gives the friendlier message."""
    return WithJsonSchema({"type": "string", "pattern": pattern})


SpecDuration = Annotated[str, _checked_text(parse_duration), _text(DURATION_PATTERN)]
SpecSize = Annotated[str, _checked_text(parse_size), _text(SIZE_PATTERN)]
Quantity = Annotated[str, AfterValidator(_quantity), _text(QUANTITY_PATTERN)]


def memory_bytes(quantity: str) -> int:
    """Bytes in a memory quantity such as ``1600Mi`` or ``2G``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity)
    if not match or match.group(2) not in {"", *_BINARY}:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match.group(1)) * _BINARY.get(match.group(2), 1))


class SpecSection(BaseModel):
    """Base of every spec section: camelCase names, unknown fields are errors."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True)

    def seconds(self, field: str) -> float:
        """A duration field of this section in seconds."""
        return parse_duration(getattr(self, field))


class SecretKeyRef(SpecSection):
    """A key of a Secret in the pipeline's namespace."""

    name: str = Field(min_length=1, description="Secret name.")
    key: str = Field(min_length=1, description="Key within the Secret.")


class SourceCredentials(SpecSection):
    user: SecretKeyRef | None = Field(None, description="Database user; default: source.user.")
    password: SecretKeyRef = Field(description="Database password.")


class DataHubCredentials(SpecSection):
    access_id: SecretKeyRef = Field(description="DataHub AccessKey ID.")
    access_key: SecretKeyRef = Field(description="DataHub AccessKey secret.")


class Resources(SpecSection):
    """Requests of a container; memory is also its limit (Flink sizes its memory from it)."""

    cpu: Quantity = Field("1", description="CPU request, e.g. 500m or 2.")
    memory: Quantity = Field("1Gi", description="Memory request and limit, e.g. 1600Mi or 2Gi.")


class TableSpec(TableConfig):
    """A captured table, as in obflow.yaml's ``source.tables`` (``primaryKey`` here)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SourceSpec(SpecSection):
    engine: Literal["oceanbase", "mysql", "mariadb"] = "oceanbase"
    mode: Literal["oracle", "mysql"] = Field("oracle", description="OceanBase tenant mode.")
    host: str = Field(min_length=1, description="Database host (a Service name works).")
    port: int = Field(2881, ge=1, le=65535)
    user: str = Field("root", min_length=1, description="Login user unless credentials.user is set.")
    tenant: str | None = Field(None, description="OceanBase tenant; the login becomes user@tenant.")
    database: str = Field(min_length=1, description="Schema (Oracle mode) or database (MySQL mode).")
    tables: list[TableSpec] = Field(min_length=1, description="Tables to capture.")
    credentials: SourceCredentials = Field(description="Secret references; never plain text.")
    tls: bool = Field(
        False,
        description="Connect over TLS, refusing a database without it; the database's certificate is verified, "
        "host name included, against caSecret's CAs (unset: the public CAs).",
    )
    ca_secret: SecretKeyRef | None = Field(
        None, description="With tls: the Secret key holding the CA certificates (PEM) that signed the database's."
    )

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> SourceSpec:
        if self.ca_secret is not None and not self.tls:
            raise ValueError("caSecret: is used only over TLS; set source.tls: true as well, or drop caSecret")
        return self


class CaptureSpec(SpecSection):
    image: str = Field("obflow/capture:0.1.0", min_length=1, description="Capture agent image.")
    method: Literal["changelog", "binlog"] = "changelog"
    poll_interval: SpecDuration = "200ms"
    batch_size: int = Field(1000, ge=1, le=100_000)
    snapshot: bool = Field(True, description="Snapshot the tables (op=r) on first start.")
    resources: Resources = Field(default_factory=lambda: Resources(cpu="250m", memory="512Mi"))


class DataHubSpec(SpecSection):
    endpoint: HttpUrl = Field(description="DataHub endpoint, e.g. https://dh-cn-hangzhou.aliyuncs.com.")
    project: DataHubProject
    topic: DataHubTopic = "changes"
    dead_letter_topic: DataHubTopic = "changes_dlq"
    shards: int = Field(4, ge=1, le=256)
    protocol: Literal["pb", "json"] = "pb"
    compression: Literal["lz4", "none"] = "lz4"
    credentials: DataHubCredentials = Field(description="Secret references; never plain text.")
    ca_secret: SecretKeyRef | None = Field(
        None,
        description="https endpoints whose certificate a private CA signed: the Secret key holding that CA's "
        "certificates (PEM). Unset, the public CAs are trusted. The certificate is always verified.",
    )


class JobManagerSpec(SpecSection):
    replicas: int = Field(2, ge=1, le=5, description="JobManagers; 2 or more for HA (R5.2).")
    resources: Resources = Field(default_factory=lambda: Resources(cpu="1", memory="1600Mi"))


class TaskManagerSpec(SpecSection):
    min_replicas: int = Field(1, ge=1, description="Fewest TaskManagers (the autoscaler's floor).")
    max_replicas: int = Field(8, ge=1, description="Most TaskManagers (the autoscaler's ceiling).")
    slots: int = Field(2, ge=1, le=64, description="Task slots per TaskManager.")
    resources: Resources = Field(default_factory=lambda: Resources(cpu="1", memory="2Gi"))

    @model_validator(mode="after")
    def _bounds(self) -> TaskManagerSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas: must be at least minReplicas ({self.min_replicas})")
        return self


class CheckpointSpec(SpecSection):
    interval: SpecDuration = Field("5m", description="R2.4.")
    retained: int = Field(3, ge=1, le=100, description="Retained checkpoints (R4.4).")
    timeout: SpecDuration = "10m"
    mode: Literal["exactly_once", "at_least_once"] = "exactly_once"
    backend: Literal["hashmap", "rocksdb"] = "rocksdb"


class SavepointSpec(SpecSection):
    retained: int = Field(
        5, ge=1, le=100, description="Savepoints kept; older ones the operator took are disposed of through Flink."
    )
    dispose: bool = Field(True, description="false: only forget older savepoints in status, keep their files.")
    timeout: SpecDuration = Field(
        "5m", description="A savepoint for a rescale, upgrade, suspend or rollback fails after this long."
    )


class FlinkSpec(SpecSection):
    image: str = Field("obflow/flink:0.1.0", min_length=1, description="Image with Flink, PyFlink and the job.")
    parallelism: int = Field(2, ge=1, le=32768)
    max_parallelism: int = Field(128, ge=1, le=32768)
    upgrade_mode: Literal["savepoint", "last-state", "stateless"] = Field(
        "savepoint",
        description="How a job change is rolled out: stop with a savepoint, restart from the latest "
        "checkpoint, or start empty.",
    )
    in_place_rescale: bool = Field(
        False,
        description="Rescale a running job in place through Flink's adaptive scheduler (tasks restart from "
        "the latest checkpoint; no stop, no new pods for the JobManagers) instead of stop-with-savepoint.",
    )
    rollout_timeout: SpecDuration = Field(
        "10m",
        description="A rescale or upgrade whose job does not run (every vertex at its parallelism) within "
        "this long is rolled back to the last stable spec.",
    )
    savepoint: SavepointSpec = Field(default_factory=SavepointSpec)
    job_manager: JobManagerSpec = Field(default_factory=JobManagerSpec)
    task_manager: TaskManagerSpec = Field(default_factory=TaskManagerSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    restart_attempts: int = Field(
        10,
        ge=0,
        description="Restarts in a row (each from the latest checkpoint, the wait doubling from restart_delay up to "
        "2 minutes) before the job fails for good; 10 minutes without a failure start the count afresh.",
    )
    restart_delay: SpecDuration = Field("10s", description="The wait before the first restart of a series.")
    dedup_records: int = Field(
        10_000, ge=0, le=10_000_000, description="Copies arriving within this many records of a shard are dropped."
    )
    configuration: dict[str, str] = Field(
        default_factory=dict, description="Extra Flink configuration; wins over what the operator sets."
    )

    @model_validator(mode="after")
    def _max_covers_parallelism(self) -> FlinkSpec:
        if self.max_parallelism < self.parallelism:
            raise ValueError(f"maxParallelism: must be at least parallelism ({self.parallelism})")
        return self


class StorageSpec(SpecSection):
    """The shared volume for checkpoints, savepoints, HA metadata, capture state and output."""

    claim_name: str | None = Field(
        None,
        description="A ReadWriteMany PersistentVolumeClaim mounted by every pod; empty: an emptyDir "
        "per pod, for trying things out only (state does not survive a pod).",
    )
    mount_path: str = Field("/data", pattern=r"^/", description="Where the volume is mounted.")
    checkpoint_dir: str | None = Field(None, description="Default: file://<mountPath>/<name>/checkpoints.")
    savepoint_dir: str | None = Field(None, description="Default: file://<mountPath>/<name>/savepoints.")
    ha_dir: str | None = Field(None, description="Default: file://<mountPath>/<name>/ha.")


class RollingSpec(SpecSection):
    max_size: SpecSize = Field("1GiB", description="Roll to a new file at this size (R3.4).")
    max_span: SpecDuration = Field("1h", description="Roll once a file spans this long (R3.5).")


class OutputSpec(SpecSection):
    format: Literal["json", "parquet", "csv"] = "parquet"
    path: str | None = Field(None, description="Default: <storage.mountPath>/<name>/output.")
    claim_name: str | None = Field(None, description="A separate PersistentVolumeClaim mounted at path.")
    rolling: RollingSpec = Field(default_factory=RollingSpec)
    write_retries: int = Field(3, ge=0, le=100)

    @model_validator(mode="after")
    def _claim_needs_path(self) -> OutputSpec:
        if self.claim_name and not self.path:
            raise ValueError("path: set the mount path of output.claimName, e.g. /output")
        return self


class AutoscalerSpec(SpecSection):
    """FLIP-271's idea: parallelism from the true processing rate (records per busy second)."""

    enabled: bool = False
    target_utilization: float = Field(0.7, gt=0, le=1, description="Busy ratio aimed at after scaling.")
    utilization_boundary: float = Field(
        0.1, ge=0, lt=1, description="No scaling while utilization is within target ± this."
    )
    min_parallelism: int = Field(1, ge=1)
    max_parallelism: int = Field(64, ge=1)
    stabilization_window: SpecDuration = Field(
        "5m", description="Metrics window for a decision; no decision this soon after a rescale."
    )
    scale_down_delay: SpecDuration = Field(
        "15m", description="Scale down only when lower parallelism was wanted for this long."
    )
    catch_up_duration: SpecDuration = Field("5m", description="Size the job to work off its lag in this long.")


class AlertsSpec(SpecSection):
    latency: SpecDuration = Field("60s", description="End-to-end latency alert threshold (R7.6).")
    checkpoint_failure_rate: float = Field(0.1, ge=0, le=1, description="R7.7.")
    load: float = Field(0.8, gt=0, le=1, description="Load above which scale-out is due (R5.6).")


class DeletionSpec(SpecSection):
    savepoint: bool = Field(True, description="Take a final savepoint of a running job before deleting.")
    timeout: SpecDuration = Field("5m", description="Give up on the final savepoint after this long.")


class PodTemplateSpec(SpecSection):
    """Merged into every pod the operator creates."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    service_account_name: str | None = Field(None, description="Default: the operator-made <name>-flink.")


class DataPipelineSpec(SpecSection):
    """What a ``DataPipeline`` asks for."""

    source: SourceSpec
    datahub: DataHubSpec
    capture: CaptureSpec = Field(default_factory=CaptureSpec)
    flink: FlinkSpec = Field(default_factory=FlinkSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    autoscaler: AutoscalerSpec = Field(default_factory=AutoscalerSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    deletion: DeletionSpec = Field(default_factory=DeletionSpec)
    pod_template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    suspend: bool = Field(False, description="true: stop the job with a savepoint and scale to zero.")


def with_parallelism(spec: DataPipelineSpec, parallelism: int) -> DataPipelineSpec:
    """``spec`` running at another parallelism (the autoscaler's choice, or a neutral one for hashing)."""
    return spec.model_copy(update={"flink": spec.flink.model_copy(update={"parallelism": parallelism})})


class SpecError(ValueError):
    """An invalid spec: every problem, each naming the field (``spec.…``) and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid DataPipeline spec: " + "; ".join(problems))


def storage_paths(name: str, spec: DataPipelineSpec) -> dict[str, str]:
    """Where checkpoints, savepoints, HA metadata, capture state and output live for pipeline ``name``."""
    root = f"{spec.storage.mount_path.rstrip('/')}/{name}"
    return {
        "checkpoints": spec.storage.checkpoint_dir or f"file://{root}/checkpoints",
        "savepoints": spec.storage.savepoint_dir or f"file://{root}/savepoints",
        "ha": spec.storage.ha_dir or f"file://{root}/ha",
        "capture_state": f"{root}/capture",
        "output": spec.output.path or f"{root}/output",
        "dead_letters": f"{root}/dead-letter",
    }


DATAHUB_CA_DIR = "/etc/obflow/datahub-ca"  # where datahub.caSecret is mounted, in every component
DATAHUB_CA_FILE = f"{DATAHUB_CA_DIR}/ca.pem"
SOURCE_CA_DIR = "/etc/obflow/source-ca"  # where source.caSecret is mounted, in the capture agent
SOURCE_CA_FILE = f"{SOURCE_CA_DIR}/ca.pem"


class _FromSpecOnly(ObflowConfig):
    """The runtime model without its environment source: the operator's own ``OBFLOW_*`` variables
    must not leak into the pipelines it builds."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any) -> tuple[Any, ...]:
        return (init_settings,)


def runtime_config(name: str, spec: DataPipelineSpec) -> ObflowConfig:
    """The configuration the pipeline's components run with (secrets left at their defaults: they
    reach the containers from Secrets). Raises :class:`SpecError` naming spec fields."""
    paths = storage_paths(name, spec)
    source = spec.source
    data: dict[str, Any] = {
        "source": {
            "engine": source.engine,
            "mode": source.mode,
            "host": source.host,
            "port": source.port,
            "user": source.user,
            "tenant": source.tenant,
            "database": source.database,
            "tables": [t.model_dump(exclude_defaults=True) for t in source.tables],
            "tls": source.tls,
            "ca_file": SOURCE_CA_FILE if source.ca_secret else None,
        },
        "datahub": {
            "endpoint": spec.datahub.endpoint,
            "project": spec.datahub.project,
            "topic": spec.datahub.topic,
            "dead_letter_topic": spec.datahub.dead_letter_topic,
            "shards": spec.datahub.shards,
            "protocol": spec.datahub.protocol,
            "compression": spec.datahub.compression,
            "ca_file": DATAHUB_CA_FILE if spec.datahub.ca_secret else None,
        },
        "capture": {
            "method": spec.capture.method,
            "poll_interval": spec.capture.poll_interval,
            "batch_size": spec.capture.batch_size,
            "snapshot": spec.capture.snapshot,
            "state_dir": paths["capture_state"],
            "http_port": ports.CAPTURE_HTTP,
        },
        "flink": {
            "parallelism": spec.flink.parallelism,
            "max_parallelism": spec.flink.max_parallelism,
            "job_name": name,
            "restart_attempts": spec.flink.restart_attempts,
            "restart_delay": spec.flink.restart_delay,
            "dedup_records": spec.flink.dedup_records,
            "metrics_port": str(ports.FLINK_METRICS),
        },
        "checkpoint": {
            "interval": spec.flink.checkpoint.interval,
            "retained": spec.flink.checkpoint.retained,
            "dir": paths["checkpoints"],
            "savepoint_dir": paths["savepoints"],
            "timeout": spec.flink.checkpoint.timeout,
            "mode": spec.flink.checkpoint.mode,
            "backend": spec.flink.checkpoint.backend,
        },
        "output": {
            "format": spec.output.format,
            "path": paths["output"],
            "rolling": spec.output.rolling.model_dump(),
            "write_retries": spec.output.write_retries,
            "dead_letter_path": paths["dead_letters"],
            "metrics_port": ports.JOB_RUNNER_HTTP,
        },
        "logging": {"level": spec.log_level, "format": "json"},
    }
    try:
        return _FromSpecOnly.model_validate(data)
    except ValidationError as exc:
        # the runtime model's own rules, which the spec model does not repeat
        problems = [f"spec: as runtime setting {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise SpecError(problems) from None
