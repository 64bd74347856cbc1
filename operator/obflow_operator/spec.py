"""The ``DataPipeline`` custom resource's spec: one pydantic model, the source of the CRD's schema.

Field names are camelCase as Kubernetes users expect. What the spec shares with the runtime
configuration (:mod:`obflow.config`) is declared there once: a table is a :class:`~obflow.config.TableConfig`,
and a field that is a runtime setting takes the setting's default, bounds and description
(:func:`runtime_setting`), so it means the same thing in a ``DataPipeline`` and in an ``obflow.yaml``.
Secrets never appear in the spec: the database password and the DataHub key are references to keys of
Kubernetes Secrets.

:func:`runtime_config` turns a spec into the :class:`~obflow.config.ObflowConfig` every component
runs with, so the runtime model's own checks (cross-field rules, SQL column types) apply to specs too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from obflow import ports
from obflow.config import (
    CaptureConfig,
    CaptureInstall,
    CaptureMethod,
    CheckpointConfig,
    CheckpointMode,
    DataHubCompression,
    DataHubConfig,
    DataHubProject,
    DataHubProtocol,
    DataHubTopic,
    FlinkConfig,
    HttpUrl,
    LoggingConfig,
    LogLevel,
    ObflowConfig,
    OutputConfig,
    OutputFormat,
    PythonExecutionMode,
    RetryConfig,
    RollingConfig,
    SourceConfig,
    SourceEngine,
    StateBackend,
    TableConfig,
    TenantMode,
    field_error,
    max_parallelism_problem,
)
from obflow.problems import field_problems
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


_BOUNDS = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le", annotated_types.Lt: "lt"}


def runtime_setting(section: type[BaseModel], name: str) -> Any:
    """The spec's field for the runtime setting ``name`` of ``section`` (:mod:`obflow.config`): the setting's
    default, description and bounds, a duration written as text as everywhere in the spec. Declared once, the
    two cannot drift apart; a duration's bounds are the runtime model's to check (:func:`runtime_config`)."""
    field = section.model_fields[name]
    setting: TypeAdapter[Any] = TypeAdapter(
        Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation  # type: ignore[arg-type]
    )
    default = setting.dump_python(field.get_default(call_default_factory=True), mode="json")
    bounds = {}
    if not isinstance(default, str):
        bounds = {
            _BOUNDS[type(rule)]: getattr(rule, _BOUNDS[type(rule)]) for rule in field.metadata if type(rule) in _BOUNDS
        }
    return Field(default, description=field.description, **bounds)


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
    engine: SourceEngine = runtime_setting(SourceConfig, "engine")
    mode: TenantMode = runtime_setting(SourceConfig, "mode")
    host: str = Field(min_length=1, description="Database host (a Service name works).")
    port: int = runtime_setting(SourceConfig, "port")
    user: str = Field("root", min_length=1, description="Login user unless credentials.user is set.")
    tenant: str | None = runtime_setting(SourceConfig, "tenant")
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
    connect_timeout: SpecDuration = runtime_setting(SourceConfig, "connect_timeout")
    heartbeat_interval: SpecDuration = runtime_setting(SourceConfig, "heartbeat_interval")
    reconnect_max_backoff: SpecDuration = runtime_setting(SourceConfig, "reconnect_max_backoff")

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> SourceSpec:
        if self.ca_secret is not None and not self.tls:
            raise ValueError("caSecret: is used only over TLS; set source.tls: true as well, or drop caSecret")
        return self


class CaptureSpec(SpecSection):
    image: str = Field("obflow/capture:0.1.0", min_length=1, description="Capture agent image.")
    method: CaptureMethod = runtime_setting(CaptureConfig, "method")
    poll_interval: SpecDuration = runtime_setting(CaptureConfig, "poll_interval")
    batch_size: int = runtime_setting(CaptureConfig, "batch_size")
    snapshot: bool = runtime_setting(CaptureConfig, "snapshot")
    install: CaptureInstall = runtime_setting(CaptureConfig, "install")
    gap_max_count: int = runtime_setting(CaptureConfig, "gap_max_count")
    gap_max_age: SpecDuration = runtime_setting(CaptureConfig, "gap_max_age")
    binlog_server_id: int = runtime_setting(CaptureConfig, "binlog_server_id")
    resources: Resources = Field(default_factory=lambda: Resources(cpu="250m", memory="512Mi"))


class RetrySpec(SpecSection):
    attempts: int = runtime_setting(RetryConfig, "attempts")
    interval: SpecDuration = runtime_setting(RetryConfig, "interval")


class DataHubSpec(SpecSection):
    endpoint: HttpUrl = Field(description="DataHub endpoint, e.g. https://dh-cn-hangzhou.aliyuncs.com.")
    project: DataHubProject
    topic: DataHubTopic = runtime_setting(DataHubConfig, "topic")
    dead_letter_topic: DataHubTopic = runtime_setting(DataHubConfig, "dead_letter_topic")
    shards: int = runtime_setting(DataHubConfig, "shards")
    protocol: DataHubProtocol = runtime_setting(DataHubConfig, "protocol")
    compression: DataHubCompression = runtime_setting(DataHubConfig, "compression")
    credentials: DataHubCredentials = Field(description="Secret references; never plain text.")
    ca_secret: SecretKeyRef | None = Field(
        None,
        description="https endpoints whose certificate a private CA signed: the Secret key holding that CA's "
        "certificates (PEM). Unset, the public CAs are trusted. The certificate is always verified.",
    )
    batch_size: int = runtime_setting(DataHubConfig, "batch_size")
    request_timeout: SpecDuration = runtime_setting(DataHubConfig, "request_timeout")
    retry: RetrySpec = Field(default_factory=RetrySpec)


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
    interval: SpecDuration = runtime_setting(CheckpointConfig, "interval")
    retained: int = runtime_setting(CheckpointConfig, "retained")
    timeout: SpecDuration = runtime_setting(CheckpointConfig, "timeout")
    mode: CheckpointMode = runtime_setting(CheckpointConfig, "mode")
    # on Kubernetes the state lives in RocksDB (incremental checkpoints, beyond the heap); on one machine on the heap
    backend: StateBackend = Field("rocksdb", description=CheckpointConfig.model_fields["backend"].description)
    tolerable_failures: int = runtime_setting(CheckpointConfig, "tolerable_failures")


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
    parallelism: int = runtime_setting(FlinkConfig, "parallelism")
    max_parallelism: int = runtime_setting(FlinkConfig, "max_parallelism")
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
    restart_attempts: int = runtime_setting(FlinkConfig, "restart_attempts")
    restart_delay: SpecDuration = runtime_setting(FlinkConfig, "restart_delay")
    dedup_records: int = runtime_setting(FlinkConfig, "dedup_records")
    execution_mode: PythonExecutionMode = runtime_setting(FlinkConfig, "execution_mode")
    idle_poll_max: SpecDuration = runtime_setting(FlinkConfig, "idle_poll_max")
    out_of_orderness: SpecDuration = runtime_setting(FlinkConfig, "out_of_orderness")
    configuration: dict[str, str] = Field(
        default_factory=dict, description="Extra Flink configuration; wins over what the operator sets."
    )

    @model_validator(mode="after")
    def _max_covers_parallelism(self) -> FlinkSpec:
        problem = max_parallelism_problem(self.parallelism, self.max_parallelism)
        if problem:
            raise field_error("maxParallelism", problem)
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
    max_size: SpecSize = runtime_setting(RollingConfig, "max_size")
    max_span: SpecDuration = runtime_setting(RollingConfig, "max_span")


class OutputSpec(SpecSection):
    format: OutputFormat = runtime_setting(OutputConfig, "format")
    path: str | None = Field(None, description="Default: <storage.mountPath>/<name>/output.")
    claim_name: str | None = Field(None, description="A separate PersistentVolumeClaim mounted at path.")
    rolling: RollingSpec = Field(default_factory=RollingSpec)
    write_retries: int = runtime_setting(OutputConfig, "write_retries")

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
    log_level: LogLevel = runtime_setting(LoggingConfig, "level")
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


def _settings(section: SpecSection, runtime: type[BaseModel]) -> dict[str, Any]:
    """The values of ``section``'s fields that are settings of the runtime section ``runtime`` as well."""
    return section.model_dump(include=section.model_fields.keys() & runtime.model_fields.keys())


# runtime settings the spec holds elsewhere than under their own names (the others: their names in camelCase)
_SPEC_PLACE = {("checkpoint",): ("flink", "checkpoint"), ("logging", "level"): ("logLevel",)}


def spec_field(runtime_path: Sequence[str]) -> str:
    """Where the spec holds the runtime setting at ``runtime_path``: ``checkpoint.tolerable_failures`` is
    ``spec.flink.checkpoint.tolerableFailures``, ``logging.level`` is ``spec.logLevel``."""
    path = tuple(runtime_path)
    for prefix, place in _SPEC_PLACE.items():
        if path[: len(prefix)] == prefix:
            return ".".join(["spec", *place, *map(to_camel, path[len(prefix) :])])
    return ".".join(["spec", *map(to_camel, path)])


def runtime_config(name: str, spec: DataPipelineSpec) -> ObflowConfig:
    """The configuration the pipeline's components run with (secrets left at their defaults: they
    reach the containers from Secrets). Raises :class:`SpecError` naming spec fields."""
    paths = storage_paths(name, spec)
    data: dict[str, Any] = {
        "source": {
            **_settings(spec.source, SourceConfig),
            "ca_file": SOURCE_CA_FILE if spec.source.ca_secret else None,
        },
        "datahub": {
            **_settings(spec.datahub, DataHubConfig),
            "ca_file": DATAHUB_CA_FILE if spec.datahub.ca_secret else None,
        },
        "capture": {
            **_settings(spec.capture, CaptureConfig),
            "state_dir": paths["capture_state"],
            "http_port": ports.CAPTURE_HTTP,
        },
        "flink": {
            **_settings(spec.flink, FlinkConfig),
            "job_name": name,
            "metrics_port": str(ports.FLINK_METRICS),
        },
        "checkpoint": {
            **_settings(spec.flink.checkpoint, CheckpointConfig),
            "dir": paths["checkpoints"],
            "savepoint_dir": paths["savepoints"],
        },
        "output": {
            **_settings(spec.output, OutputConfig),
            "path": paths["output"],
            "dead_letter_path": paths["dead_letters"],
            "metrics_port": ports.JOB_RUNNER_HTTP,
        },
        "logging": {"level": spec.log_level, "format": "json"},
    }
    try:
        return _FromSpecOnly.model_validate(data)
    except ValidationError as exc:
        # the runtime model's own rules (a duration's bounds, rules across sections), which the spec does not repeat
        raise SpecError(
            [f"{spec_field(problem.path)}: {problem.message}" for problem in field_problems(exc, ObflowConfig)]
        ) from None
