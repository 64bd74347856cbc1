"""The one configuration model: file, environment overrides, validation, secrets (R10.x)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from obflow.config import ConfigError, load_config, redacted_dump
from obflow.runtime import EXIT_INVALID_CONFIG
from tests.support.configs import problems_of, write_config
from tests.support.hostile import key_paths, mutated
from tests.support.repo import REPO_ROOT, run_cli

EXAMPLE = REPO_ROOT / "examples" / "pipeline.yaml"


def test_config_file_is_loaded_R10_1(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"flink": {"parallelism": 12}, "output": {"format": "csv"}})
    config = load_config(path)
    assert config.flink.parallelism == 12
    assert config.output.format == "csv"


def test_example_config_is_valid_and_complete() -> None:
    config = load_config(EXAMPLE)
    assert config.source.tables[1].primary_key == ["ORDER_ID", "LINE_NO"]
    assert config.source.tables[0].name == "ORDERS"
    documented = yaml.safe_load(EXAMPLE.read_text())
    assert set(documented) == set(type(config).model_fields), "every section is documented in the example"
    for section, keys in documented.items():
        model = getattr(config, section)
        missing = set(type(model).model_fields) - set(keys)
        assert not missing, f"{section}: {sorted(missing)} not in examples/pipeline.yaml"


def test_defaults_follow_the_requirements_R2_4_R4_4_R3_4_R3_5_R1_5_R3_7() -> None:
    config = load_config(None)
    assert config.checkpoint.interval == 300  # R2.4
    assert config.checkpoint.retained == 3  # R4.4
    assert config.output.rolling.max_size == 1024**3  # R3.4
    assert config.output.rolling.max_span == 3600  # R3.5
    assert (config.datahub.retry.attempts, config.datahub.retry.interval) == (3, 2)  # R1.5
    assert config.output.write_retries == 3  # R3.7


def test_environment_overrides_file_R10_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a file setting retained=4 and a nested rolling size
    path = write_config(tmp_path, {"checkpoint": {"retained": 4}, "output": {"rolling": {"max_size": "2GiB"}}})
    # when the environment sets the same keys
    monkeypatch.setenv("OBFLOW_CHECKPOINT__RETAINED", "5")
    monkeypatch.setenv("OBFLOW_OUTPUT__ROLLING__MAX_SIZE", "512MiB")
    config = load_config(path)
    # then the environment wins, and keys the environment did not set keep the file's values
    assert config.checkpoint.retained == 5
    assert config.output.rolling.max_size == 512 * 1024**2
    assert config.checkpoint.interval == 300


def test_source_datahub_output_and_checkpoint_sections_R10_5_R10_6_R10_7_R10_8(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {
            "source": {"engine": "mariadb", "host": "db", "port": 3306, "user": "u", "database": "shop"},
            "datahub": {"endpoint": "https://dh.example:443/", "project": "proj", "topic": "cdc"},
            "output": {"format": "json", "path": "/data/out"},
            "checkpoint": {"interval": "1m", "retained": 7, "dir": "file:///ck"},
        },
    )
    config = load_config(path)
    assert (config.source.host, config.source.port, config.source.mode) == ("db", 3306, "mysql")
    assert config.datahub.endpoint == "https://dh.example:443"
    assert (config.output.format, config.output.path) == ("json", "/data/out")
    assert (config.checkpoint.interval, config.checkpoint.retained) == (60, 7)


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"source": {"port": 0}}, "source.port", "greater than or equal to 1"),
        ({"source": {"engine": "mariadb", "mode": "oracle"}}, "source.mode", "use mode: mysql"),
        ({"source": {"tables": ["bad table"]}}, "source.tables.0.name", "SCHEMA.TABLE"),
        ({"source": {"ca_file": "/etc/ssl/ca.pem"}}, "source.ca_file", "set source.tls: true as well"),
        ({"source": {"tls": True, "ca_file": "/nonexistent/ca.pem"}}, "source.ca_file", "cannot be used as CA"),
        ({"datahub": {"endpoint": "ftp://x"}}, "datahub.endpoint", "http(s) URL"),
        ({"datahub": {"project": "9x"}}, "datahub.project", "DataHub project name"),
        ({"datahub": {"project": "p" * 33}}, "datahub.project", "3 to 32 letters"),  # DataHub's own limit
        ({"datahub": {"topic": "t" * 129}}, "datahub.topic", "1 to 128 letters"),
        ({"datahub": {"shards": 0}}, "datahub.shards", "greater than or equal to 1"),
        ({"datahub": {"retry": {"attempts": -1}}}, "datahub.retry.attempts", "greater than or equal to 0"),
        ({"capture": {"method": "magic"}}, "capture.method", "'changelog' or 'binlog'"),
        (
            {"flink": {"parallelism": 8, "max_parallelism": 4}},
            "flink.max_parallelism",
            "at least parallelism",
        ),
        ({"checkpoint": {"interval": "5 minutes"}}, "checkpoint.interval", "duration such as"),
        ({"checkpoint": {"retained": 0}}, "checkpoint.retained", "greater than or equal to 1"),
        ({"checkpoint": {"intervl": "5m"}}, "checkpoint.intervl", "did you mean 'interval'"),
        ({"output": {"format": "xml"}}, "output.format", "'json', 'parquet' or 'csv'"),
        ({"output": {"rolling": {"max_size": "12XB"}}}, "output.rolling.max_size", "size such as"),
        ({"logging": {"level": "LOUD"}}, "logging.level", "'INFO'"),
        ({"sauce": {}}, "sauce", "did you mean 'source'"),
    ],
)
def test_each_invalid_value_is_named_with_the_fix_R10_3(
    tmp_path: Path, data: dict[str, object], key: str, fragment: str
) -> None:
    problems = problems_of(write_config(tmp_path, data))
    assert key in problems, problems
    assert fragment in problems[key]


def test_all_problems_are_reported_at_once_R10_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBFLOW_FLINK__PARALLELISM", "lots")
    path = write_config(tmp_path, {"output": {"format": "xml"}, "checkpoint": {"retained": -1}})
    problems = problems_of(path)
    assert set(problems) == {"output.format", "checkpoint.retained", "flink.parallelism"}
    assert "[from OBFLOW_FLINK__PARALLELISM]" in problems["flink.parallelism"]
    assert "(got 'lots')" in problems["flink.parallelism"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("source: [unclosed", "not valid YAML at line 1"), ("- a\n- b\n", "must be a mapping")],
)
def test_broken_files_are_explained_R10_3(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in problems_of(write_config(tmp_path, text))["<file>"]


def test_missing_file_is_explained_R10_3(tmp_path: Path) -> None:
    assert "cannot read" in problems_of(tmp_path / "nope.yaml")["<file>"]


def test_validate_command_exit_codes_R10_4(tmp_path: Path) -> None:
    good = run_cli("config", "validate", str(EXAMPLE))
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout

    bad = run_cli("config", "validate", str(write_config(tmp_path, {"output": {"format": "xml"}})))
    assert bad.returncode == 2
    assert "output.format" in bad.stderr

    env_bad = run_cli("config", "validate", str(EXAMPLE), env={"OBFLOW_CHECKPOINT__RETAINED": "0"})
    assert env_bad.returncode == 2
    assert "checkpoint.retained" in env_bad.stderr and "OBFLOW_CHECKPOINT__RETAINED" in env_bad.stderr


def test_component_refuses_to_start_on_invalid_config_R10_4(tmp_path: Path) -> None:
    # given an invalid file, when a component starts with it in a fresh process
    path = write_config(tmp_path, {"checkpoint": {"interval": "soon"}, "output": {"format": "xml"}})
    code = f"import obflow.runtime as r; r.start_component('capture', {str(path)!r}); print('started')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    # then it exits 2 before starting, logging a config.invalid fault that names every key
    assert result.returncode == EXIT_INVALID_CONFIG
    assert "started" not in result.stdout
    assert "event=config.invalid" in result.stderr
    assert "checkpoint.interval" in result.stderr and "output.format" in result.stderr


def test_secrets_never_shown_R10_3(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {"source": {"password": "db-pass-123"}, "datahub": {"access_key": "dh-key-456", "shards": 0}},
    )
    shown = run_cli("config", "show", str(EXAMPLE), env={"OBFLOW_SOURCE__PASSWORD": "db-pass-123"})
    assert shown.returncode == 0, shown.stderr
    assert "db-pass-123" not in shown.stdout
    assert "**********" in shown.stdout
    assert "source.password <- OBFLOW_SOURCE__PASSWORD" in shown.stdout

    invalid = run_cli("config", "validate", str(path), env={"OBFLOW_DATAHUB__ACCESS_KEY": "x"})
    assert "dh-key-456" not in invalid.stderr + invalid.stdout


def test_secret_rejected_by_validation_is_not_echoed(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"datahub": {"access_key": ["s3cr3t-value"]}})
    problems = problems_of(path)
    assert "datahub.access_key" in problems
    assert "s3cr3t-value" not in problems["datahub.access_key"]


def test_show_round_trips_into_an_equal_config(tmp_path: Path) -> None:
    shown = run_cli("config", "show", str(EXAMPLE))
    copy = write_config(tmp_path, shown.stdout)
    reloaded = load_config(copy)
    original = load_config(EXAMPLE)
    assert reloaded.model_dump(exclude={"source": {"password"}, "datahub": {"access_key"}}) == original.model_dump(
        exclude={"source": {"password"}, "datahub": {"access_key"}}
    )


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, "
    f"*{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}, *{chr(97 + n)}]\n"
    for n in range(8)
)  # a few hundred bytes, 10**9 values expanded


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (ALIAS_BOMB.encode(), "expands to more than 100,000 values"),
        (b"source: " + b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (
            b"source: {tables: [{name: " + b"{a: " * 40 + b"1" + b"}" * 40 + b"}]}",
            "nested too deeply at source.tables[0]",
        ),
        (b"source:\n  database: \xff\xfeTRADE\n", "not UTF-8 text: byte 20"),
        (b"\x89PNG\r\n\x1a\n\x00", "not UTF-8 text: byte 0"),
        (b"source:\n  1: x\n", "key 1 under source is not text"),
        (b"? [a, b]\n: c\n", "found unhashable key"),
        (b"# pad\n" * 200_000, "a config file may have at most 1,048,576"),
    ],
    ids=["aliases", "deep-flow", "deep-mapping", "latin-1", "binary", "int-key", "list-key", "oversized"],
)
def test_hostile_config_files_get_a_bounded_clear_error(tmp_path: Path, content: bytes, fragment: str) -> None:
    """Each is refused before validation with the cap it passed (issue 21: the alias bomb took 22 s and
    0.5 GB to validate; the others were tracebacks)."""
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(content)
    assert fragment in problems_of(path)["<file>"]


def test_validate_command_turns_a_hostile_file_into_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(ALIAS_BOMB)
    result = run_cli("config", "validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "expands to more than" in result.stderr + result.stdout


@pytest.mark.parametrize("value", ["[bad", '{"name": ', "[1, 2"])
def test_a_variable_that_is_not_json_where_json_is_needed_is_named_R10_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A list or a section set by an environment variable is JSON; a broken one was a traceback."""
    monkeypatch.setenv("OBFLOW_SOURCE__TABLES", value)
    problem = problems_of(write_config(tmp_path, {}))["source.tables"]
    assert "not valid JSON" in problem and "[from OBFLOW_SOURCE__TABLES]" in problem
    result = run_cli("config", "validate", str(write_config(tmp_path, {})), env={"OBFLOW_SOURCE__TABLES": value})
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout


EXAMPLE_DOCUMENT = yaml.safe_load(EXAMPLE.read_text())
VARIABLES = ["OBFLOW_" + "__".join(str(key).upper() for key in path)
             for path in key_paths(EXAMPLE_DOCUMENT) if all(isinstance(key, str) for key in path)]  # fmt: skip


def valid_or_named(path: Path) -> None:
    """The file loads and shows (what ``config show`` prints), or every problem names its key; within 2 s."""
    started = time.monotonic()
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.problems and all(problem.key for problem in exc.problems), exc
    else:
        yaml.safe_dump(redacted_dump(config), sort_keys=False)
    assert time.monotonic() - started < 2


@settings(max_examples=300, deadline=None)
@given(document=mutated(EXAMPLE_DOCUMENT))
def test_any_values_at_the_configs_own_keys_are_valid_or_named_R10_3(document: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_config(Path(folder), document)
        valid_or_named(path)


@settings(max_examples=150, deadline=None)
@given(content=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_bytes_as_a_config_file_are_valid_or_named_R10_3(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pipeline.yaml"
        path.write_bytes(content)
        valid_or_named(path)


@settings(max_examples=150, deadline=None)
@given(variables=st.dictionaries(st.sampled_from(VARIABLES) | st.text(max_size=20).map("OBFLOW_".__add__),
                                 st.text(max_size=40), max_size=4))  # fmt: skip
def test_any_obflow_variables_are_valid_or_named_R10_3(variables: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as env:
        for name, value in variables.items():
            if "\x00" in name + value or "=" in name or not name.isprintable():
                continue  # not a variable a process can have
            env.setenv(name, value)
        valid_or_named(write_config(Path(folder), yaml.safe_load(EXAMPLE.read_text())))
