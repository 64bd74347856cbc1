"""The one configuration model shared by every obflow component.

A YAML file (R10.1) gives the values; every key can be overridden from the environment as
``OBFLOW_<SECTION>__<KEY>`` (nested keys joined by ``__``, e.g. ``OBFLOW_OUTPUT__ROLLING__MAX_SIZE``)
and the environment wins (R10.2). Validation (R10.3) reports every problem at once, each naming the
dotted key, the bad value and what is allowed; components refuse to start on any problem (R10.4).
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from obflow import ports
from obflow.columns import ColumnType, parse_sql_type
from obflow.problems import UNSET, field_problems, short_repr
from obflow.units import ByteSize, Duration

_NAME_PART = re.compile(r"[A-Za-z_][\w$#]*")
DATAHUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # a project or topic: a letter, then letters, digits, _
# DataHub's own lengths (its SDK checks them too; the emulator refuses other names)
DATAHUB_PROJECT_LENGTH = (3, 32)
DATAHUB_TOPIC_LENGTH = (1, 128)
_HTTP_URL = re.compile(r"https?://[^\s/:]+(:\d{1,5})?(/\S*)?")


def _table_name(value: str) -> str:
    if not all(_NAME_PART.fullmatch(part) for part in value.split(".")) or value.count(".") > 1:
        raise ValueError("expected TABLE or SCHEMA.TABLE, each part a letter or _ then letters, digits, _, $ or #")
    return value


def _datahub_name(value: str, kind: str, length: tuple[int, int]) -> str:
    low, high = length
    if not DATAHUB_NAME.fullmatch(value) or not low <= len(value) <= high:
        raise ValueError(
            f"expected a DataHub {kind} name: {low} to {high} letters, digits or _, starting with a letter"
        )
    return value


def _datahub_project(value: str) -> str:
    return _datahub_name(value, "project", DATAHUB_PROJECT_LENGTH)


def _datahub_topic(value: str) -> str:
    return _datahub_name(value, "topic", DATAHUB_TOPIC_LENGTH)


def _datahub_name_pattern(length: tuple[int, int]) -> str:
    return rf"^[A-Za-z][A-Za-z0-9_]{{{length[0] - 1},{length[1] - 1}}}$"


def _http_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:8090")
    return value.rstrip("/")


# The JSON schemas (and so the CRD) carry the same rules as patterns; validation here gives the
# friendlier messages above.
TableName = Annotated[
    str,
    AfterValidator(_table_name),
    WithJsonSchema({"type": "string", "pattern": r"^[A-Za-z_][\w$#]*(\.[A-Za-z_][\w$#]*)?$"}),
]
DataHubProject = Annotated[
    str,
    AfterValidator(_datahub_project),
    WithJsonSchema({"type": "string", "pattern": _datahub_name_pattern(DATAHUB_PROJECT_LENGTH)}),
]
DataHubTopic = Annotated[
    str,
    AfterValidator(_datahub_topic),
    WithJsonSchema({"type": "string", "pattern": _datahub_name_pattern(DATAHUB_TOPIC_LENGTH)}),
]
HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "pattern": r"^https?://[^\s/:]+(:\d{1,5})?(/\S*)?$"}),
]


# the choices of settings the DataPipeline spec shares (obflow_operator.spec)
SourceEngine = Literal["oceanbase", "mysql", "mariadb"]
TenantMode = Literal["oracle", "mysql"]
DataHubProtocol = Literal["pb", "json"]
DataHubCompression = Literal["lz4", "none"]
CaptureMethod = Literal["changelog", "binlog"]
CaptureInstall = Literal["missing", "never"]
PythonExecutionMode = Literal["thread", "process"]
CheckpointMode = Literal["exactly_once", "at_least_once"]
StateBackend = Literal["hashmap", "rocksdb"]
OutputFormat = Literal["json", "parquet", "csv"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def field_error(field: str, message: str) -> ValueError:
    """A cross-field error reported under ``<section>.<field>`` rather than the whole section."""
    return ValueError(f"{field}: {message}")


ENV_PREFIX = "OBFLOW_"
ENV_NESTED_DELIMITER = "__"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _sql_type(value: str) -> str:
    parse_sql_type(value)
    return value


class ColumnConfig(Section):
    """One output column of a table: its source name, its SQL type, and optionally a new name."""

    name: str = Field(min_length=1, description="Column name in the database.")
    type: Annotated[str, AfterValidator(_sql_type)] = Field(description="SQL type as declared, e.g. NUMBER(12,2).")
    rename: str | None = Field(None, min_length=1, description="Name in the output files; default: name.")

    @property
    def output_name(self) -> str:
        return self.rename or self.name

    @property
    def column_type(self) -> ColumnType:
        return parse_sql_type(self.type)


class TableConfig(Section):
    """One captured table. In YAML a bare string ``"SCHEMA.TABLE"`` is shorthand for ``{name: ...}``."""

    name: TableName
    primary_key: list[str] = Field(
        default_factory=list,
        description="Primary key columns; empty means: read them from the database catalog.",
    )
    columns: list[ColumnConfig] = Field(
        default_factory=list,
        description="Output columns, typed (selection, rename); empty: the table's columns, as its events say.",
    )

    @model_validator(mode="after")
    def _unique_output_names(self) -> TableConfig:
        names = [c.output_name for c in self.columns]
        reserved = [n for n in names if n.startswith("_")]
        if reserved:
            raise field_error("columns", f"output names starting with _ are reserved for metadata: {reserved}")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise field_error("columns", f"output names must be unique; {twice} appear twice (use rename)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class SourceConfig(Section):
    """The database whose changes are captured (R10.5)."""

    engine: SourceEngine = "oceanbase"
    mode: TenantMode = Field(
        "oracle", description="OceanBase tenant compatibility mode; mysql/mariadb engines are always mysql."
    )
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(2881, ge=1, le=65535)
    user: str = Field("root", min_length=1)
    tenant: str | None = Field(None, description="OceanBase tenant; the login becomes user@tenant.")
    password: SecretStr = SecretStr("")
    database: str = Field("obflow", min_length=1, description="Database (MySQL mode) or schema (Oracle).")
    tables: list[TableConfig] = Field(default_factory=list)
    connect_timeout: Duration = Field(
        10.0, gt=0, description="A connection attempt to the database gives up after this long."
    )
    heartbeat_interval: Duration = Field(10.0, gt=0, description="Keep-alive ping on the connection (R1.6).")
    reconnect_max_backoff: Duration = Field(
        5.0, gt=0, le=30, description="Cap of the reconnect backoff; at most 30s so R1.7 holds."
    )
    tls: bool = Field(
        False,
        description="Connect over TLS, refusing a server without it; the server's certificate is verified, "
        "host name included, against ca_file. Off, MySQL mode's driver still uses TLS when the server offers it, "
        "unverified; Oracle mode's connects in the clear.",
    )
    ca_file: Path | None = Field(
        None,
        description="With tls: the CA certificates (PEM) the server's certificate must chain to; unset, certifi's.",
    )

    def schema_and_table(self, table: TableConfig) -> tuple[str, str]:
        """``(schema, table)`` of a configured table; the schema defaults to ``database``."""
        schema, _, name = table.name.rpartition(".")
        return schema or self.database, name

    def qualified_tables(self) -> dict[str, TableConfig]:
        """Every configured table by its ``SCHEMA.TABLE`` name, as change events name it."""
        return {".".join(self.schema_and_table(t)): t for t in self.tables}

    @model_validator(mode="after")
    def _mode_fits_engine(self) -> SourceConfig:
        if self.engine != "oceanbase" and self.mode == "oracle" and "mode" in self.model_fields_set:
            raise field_error("mode", f"'oracle' exists only for engine 'oceanbase'; use mode: mysql for {self.engine}")
        if self.engine != "oceanbase":
            self.mode = "mysql"
        return self

    @model_validator(mode="after")
    def _ca_file_needs_tls(self) -> SourceConfig:
        if self.ca_file is not None and not self.tls:
            raise field_error("ca_file", "is used only over TLS; set source.tls: true as well, or drop ca_file")
        return self


class RetryConfig(Section):
    attempts: int = Field(3, ge=0, le=100, description="Retries after the first failure (R1.5: 3).")
    interval: Duration = Field(2.0, ge=0, description="Pause between tries (R1.5: 2s).")


class DataHubConfig(Section):
    """Where change events travel (R10.6)."""

    endpoint: HttpUrl = f"http://127.0.0.1:{ports.DATAHUB_EMULATOR}"
    project: DataHubProject = "obflow"
    topic: DataHubTopic = "changes"
    dead_letter_topic: DataHubTopic = "changes_dlq"
    access_id: str = "obflow"
    access_key: SecretStr = SecretStr("obflow-local-key")
    shards: int = Field(4, ge=1, le=256)
    protocol: DataHubProtocol = "pb"
    compression: DataHubCompression = "lz4"
    batch_size: int = Field(500, ge=1, le=1000, description="Records per put request.")
    request_timeout: Duration = Field(
        30.0, gt=0, description="A request to DataHub waiting this long for its answer fails (and is retried)."
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    ca_file: Path | None = Field(
        None,
        description="https endpoints: the CA certificates (PEM) the endpoint's certificate must chain to; "
        "unset, the public CAs of certifi. The certificate is always verified, host name included.",
    )


class CaptureConfig(Section):
    method: CaptureMethod = "changelog"
    poll_interval: Duration = Field(0.2, gt=0, description="The pause after a read of the changes that found none.")
    batch_size: int = Field(1000, ge=1, le=100_000)
    state_dir: Path = Path("state/capture")
    snapshot: bool = Field(True, description="Snapshot the tables (op=r) on first start, and tables added later.")
    install: CaptureInstall = Field(
        "missing",
        description="changelog: at start, create the change log and triggers of configured tables that have none "
        "(never: a DBA applies the reviewed `obflow capture install --print` instead).",
    )
    gap_max_count: int = Field(10_000, ge=0, description="Open sequence gaps tracked at most.")
    gap_max_age: Duration = Field(60.0, ge=0, description="How long an open gap is waited for.")
    binlog_server_id: int = Field(
        8001,
        ge=1,
        le=2**32 - 1,
        description="binlog: the replica id the agent reads as; unique among the database's replicas.",
    )
    http_port: int = Field(
        ports.CAPTURE_HTTP, ge=0, le=65535, description="Health and metrics port; 0 picks a free one."
    )


def max_parallelism_problem(parallelism: int, max_parallelism: int) -> str | None:
    """What is wrong with a job's most parallelism (which its state can be rescaled to) for its parallelism."""
    if max_parallelism < parallelism:
        return f"must be at least parallelism ({parallelism}); raise it or lower parallelism"
    return None


class FlinkConfig(Section):
    parallelism: int = Field(2, ge=1, le=32768)
    max_parallelism: int = Field(128, ge=1, le=32768)
    execution_mode: PythonExecutionMode = Field(
        "thread",
        description="Where PyFlink runs the job's Python functions: inside the TaskManager's JVM (thread) or in a "
        "Python process of their own beside it (process).",
    )
    job_name: str = Field("obflow", min_length=1)
    restart_attempts: int = Field(
        10,
        ge=0,
        description="Restarts in a row (each from the latest checkpoint, the wait doubling from restart_delay up to "
        "2 minutes) before the job fails for good; 10 minutes without a failure start the count afresh.",
    )
    restart_delay: Duration = Field(10.0, ge=0, description="The wait before the first restart of a series.")
    dedup_records: int = Field(
        10_000,
        ge=0,
        le=10_000_000,
        description="Copies of a change are dropped when they arrive within this many records of the shard "
        "after the original (the capture agent re-sends at most one capture.batch_size); 8 bytes of state "
        "each, per shard.",
    )
    idle_poll_max: Duration = Field(
        2.0,
        ge=0,
        description="A shard with nothing new is polled less often, down to once per this long: what a change "
        "arriving on a quiet shard may wait, and what an idle pipeline costs (one request per shard per this).",
    )
    out_of_orderness: Duration = Field(
        5.0, ge=0, description="Watermark delay behind the newest commit time seen (event time, R2.3)."
    )
    metrics_port: str = Field(
        ports.FLINK_METRICS_RANGE,
        pattern=r"^\d{1,5}(-\d{1,5})?$",
        description="Prometheus reporter port or range (R7.1).",
    )

    @model_validator(mode="after")
    def _max_covers_parallelism(self) -> FlinkConfig:
        problem = max_parallelism_problem(self.parallelism, self.max_parallelism)
        if problem:
            raise field_error("max_parallelism", problem)
        return self


class CheckpointConfig(Section):
    """R10.8: interval and retention (R2.4: every 5 minutes, R4.4: latest 3 kept)."""

    interval: Duration = Field(300.0, gt=0, description="How often a checkpoint is taken (R2.4).")
    retained: int = Field(3, ge=1, le=100, description="Retained checkpoints (R4.4).")
    dir: str = Field("state/checkpoints", min_length=1, description="Path or URI of the state backend.")
    savepoint_dir: str = Field("state/savepoints", min_length=1)
    timeout: Duration = Field(600.0, gt=0, description="A checkpoint not complete after this long fails.")
    tolerable_failures: int = Field(
        2**31 - 1, ge=0, description="Failed checkpoints tolerated before the job fails (R2.5)."
    )
    mode: CheckpointMode = "exactly_once"
    backend: StateBackend = Field("hashmap", description="Flink state backend (R4.2).")


class RollingConfig(Section):
    max_size: ByteSize = Field(1024**3, gt=0, description="Roll to a new file at this size (R3.4).")
    max_span: Duration = Field(
        3600.0, gt=0, description="Roll once a file has been open this long, or its commit times span it (R3.5)."
    )


class OutputConfig(Section):
    """R10.7: output format and path."""

    format: OutputFormat = "parquet"
    path: str = Field("output", min_length=1)
    rolling: RollingConfig = Field(default_factory=RollingConfig)
    write_retries: int = Field(3, ge=0, le=100, description="Retries of a failed file write (R3.7).")
    dead_letter_path: str = Field(
        "output/_dead_letter", min_length=1, description="Dead-letter files, used while DataHub is unreachable."
    )
    metrics_port: int = Field(
        ports.JOB_RUNNER_HTTP,
        ge=0,
        le=65535,
        description="The job runner's /metrics, /healthz, /readyz; 0 picks a free port.",
    )


class LoggingConfig(Section):
    level: LogLevel = "INFO"
    format: Literal["json", "text"] = "text"


class ObflowConfig(BaseSettings):
    """The whole configuration: one YAML file, overridden by ``OBFLOW_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    source: SourceConfig = Field(default_factory=SourceConfig)
    datahub: DataHubConfig = Field(default_factory=DataHubConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    flink: FlinkConfig = Field(default_factory=FlinkConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; sources listed first win, so env beats file.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _dedup_covers_a_capture_batch(self) -> ObflowConfig:
        if 0 < self.flink.dedup_records < self.capture.batch_size:
            raise field_error(
                "flink.dedup_records",
                f"must be at least capture.batch_size ({self.capture.batch_size}): a capture agent re-sends up to "
                "one batch after a crash, and copies further back than the window are not dropped; raise it",
            )
        return self


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str
    value: str | None = None
    env_var: str | None = None

    def __str__(self) -> str:
        got = f" (got {self.value})" if self.value is not None else ""
        origin = f" [from {self.env_var}]" if self.env_var else ""
        return f"{self.key}: {self.message}{got}{origin}"


class ConfigError(Exception):
    """Every problem found in a configuration, each naming the key and the fix."""

    def __init__(self, problems: list[ConfigProblem], origin: str = "configuration") -> None:
        self.problems = problems
        self.origin = origin
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {origin}: {len(problems)} problem(s)\n{lines}")


def load_config(path: str | Path | None = None) -> ObflowConfig:
    """The effective config: defaults < YAML file at ``path`` < ``OBFLOW_*`` environment variables.

    Raises :class:`ConfigError` listing every problem.
    """
    origin = str(path) if path is not None else "configuration"
    data = read_yaml(path) if path is not None else {}
    try:
        config = ObflowConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_problems_from(exc), origin) from None
    except SettingsError as exc:  # a variable pydantic-settings decodes as JSON (a list or a section) that is not
        raise ConfigError(_env_json_problems() or [ConfigProblem("<environment>", str(exc))], origin) from None
    problems = _unusable_files(config)
    if problems:
        raise ConfigError(problems, origin)
    return config


def _unusable_files(config: ObflowConfig) -> list[ConfigProblem]:
    """Files the config names that this machine cannot use; checked where the config is loaded, since
    only there do the paths mean something (the operator builds configs for other machines)."""
    problems = []
    for key, ca_file in (("datahub.ca_file", config.datahub.ca_file), ("source.ca_file", config.source.ca_file)):
        if ca_file is None:
            continue
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"cannot be used as CA certificates ({reason}); give a readable PEM file of CA certificates"
            problems.append(ConfigProblem(key, message, str(ca_file), env_overrides().get(key)))
    return problems


def _env_json_problems() -> list[ConfigProblem]:
    problems = []
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or not value.lstrip().startswith(("[", "{")):
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            key = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTED_DELIMITER, ".")
            message = f"not valid JSON ({exc}); a list or a section set by a variable is written as JSON"
            problems.append(ConfigProblem(key, message, short_repr(value), name))
    return problems


MAX_CONFIG_BYTES = 1024**2
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 100_000  # counted as expanded: a YAML alias counts every time it is used


class UnreadableYamlError(ValueError):
    """A YAML file that cannot be taken in: unreadable, too large, not UTF-8, not YAML, or (parsed) past the
    bounds of :func:`yaml_shape_trouble`."""


def bounded_yaml(path: str | Path, all_documents: bool = False) -> Any:
    """The YAML in ``path`` (every document, as a list, with ``all_documents``) within the bounds: at most
    MAX_CONFIG_BYTES, UTF-8, MAX_CONFIG_DEPTH levels, MAX_CONFIG_VALUES values as expanded, text keys.
    Raises :class:`UnreadableYamlError` saying which bound, or what the file lacks."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UnreadableYamlError(f"{file} is {size:,} bytes; a config file may have at most {MAX_CONFIG_BYTES:,}")
        raw = file.read_bytes()
    except OSError as exc:
        raise UnreadableYamlError(f"cannot read {file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableYamlError(f"not UTF-8 text: byte {exc.start} is {raw[exc.start : exc.start + 1]!r}") from None
    try:
        data = list(yaml.safe_load_all(text)) if all_documents else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(exc, "problem", None) or str(exc)
        raise UnreadableYamlError(f"not valid YAML{where}: {detail}") from None
    except RecursionError:
        raise UnreadableYamlError(f"nested too deeply (a config nests at most {MAX_CONFIG_DEPTH} levels)") from None
    trouble = yaml_shape_trouble(data)
    if trouble:
        raise UnreadableYamlError(trouble)
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The config file's sections (:func:`bounded_yaml`); a :class:`ConfigError` for a file it refuses or
    whose top level is not a mapping."""
    try:
        data = bounded_yaml(path)
    except UnreadableYamlError as exc:
        raise ConfigError([ConfigProblem("<file>", str(exc))], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        message = f"the top level must be a mapping of sections, not {type(data).__name__}"
        raise ConfigError([ConfigProblem("<file>", message)], str(path))
    return data


def yaml_shape_trouble(data: Any) -> str | None:
    """Why ``data`` (parsed YAML: a config, a manifest) is too deep or too large to take in, or has a key
    that is not text, walking at most MAX_CONFIG_VALUES values; None when it is fine."""
    budget = MAX_CONFIG_VALUES
    pending: list[tuple[Any, str, int]] = [(data, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        budget -= 1
        if budget < 0:
            return f"expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases used over and over?)"
        if depth > MAX_CONFIG_DEPTH:
            return f"nested too deeply at {where} (a config nests at most {MAX_CONFIG_DEPTH} levels)"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return f"key {key!r} under {where or 'the top level'} is not text; quote it"
                pending.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{n}]", depth + 1) for n, item in enumerate(value))
    return None


def env_overrides() -> dict[str, str]:
    """Dotted config keys set from the environment, each mapped to the variable that set it."""
    source = EnvSettingsSource(ObflowConfig, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER)
    overridden = {key for key, _ in flatten(source())}
    by_key: dict[str, str] = {}
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTED_DELIMITER, ".")
        if any(key == k or k.startswith(key + ".") for k in overridden):
            by_key[key] = name
    return by_key


def secret_keys(model: type[BaseModel] = ObflowConfig, prefix: str = "") -> set[str]:
    """Dotted keys of every ``SecretStr`` field: their values are never shown."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is SecretStr:
            keys.add(prefix + name)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= secret_keys(annotation, f"{prefix}{name}.")
    return keys


def redacted_dump(config: ObflowConfig) -> dict[str, Any]:
    """The config as plain data, durations and sizes as text, secrets as ``**********``."""
    return config.model_dump(mode="json")


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of nested mappings."""
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _problems_from(exc: ValidationError) -> list[ConfigProblem]:
    secrets = secret_keys()
    env_vars = env_overrides()
    problems = []
    for problem in field_problems(exc, ObflowConfig):
        key = problem.key() or "<root>"
        value = None if key in secrets or problem.value is UNSET else short_repr(problem.value)
        env_var = next((var for k, var in env_vars.items() if key == k or key.startswith(k + ".")), None)
        problems.append(ConfigProblem(key, problem.message, value, env_var))
    return problems


def secret_values(config: ObflowConfig) -> list[str]:
    """The plain values of every secret in ``config`` (to keep them out of logs)."""
    values = []
    for key in secret_keys():
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        values.append(node.get_secret_value())
    return [v for v in values if v]
