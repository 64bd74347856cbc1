"""The repository layout and the guard against ``operator/`` shadowing the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.repo import REPO_ROOT


def test_operator_folder_never_shadows_stdlib_operator() -> None:
    # given the repo root first on sys.path (as `python -c` run from the root, or pytest's rootdir)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import collections, operator; from operator import itemgetter;"
        "assert itemgetter(1)([0, 7]) == 7;"
        "assert collections.OrderedDict(a=1)['a'] == 1;"
        "print(operator.__file__)"
    )
    # when a fresh interpreter imports collections and operator from the repo root
    result = subprocess.run(
        [sys.executable, "-c", script, str(REPO_ROOT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # then both are the standard library's
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(REPO_ROOT)), result.stdout
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()
    assert not (REPO_ROOT / "operator.py").exists()


def test_operator_package_imports_under_its_own_name() -> None:
    import obflow_operator

    assert obflow_operator.__file__ is not None
    assert "operator/obflow_operator" in obflow_operator.__file__


def test_design_card_layout_exists() -> None:
    for name in (
        "pyproject.toml",
        "operator",
        "crds",
        "flink_job",
        "capture_agent",
        "charts",
        "docker",
        "tests",
        "kind-config.yaml",
        "benchmarks",
        "examples",
    ):
        assert (REPO_ROOT / name).exists(), name


COMPONENTS = ("capture_agent", "flink_job", "obflow_operator", "obflow_dev")


def imported_modules(path: Path, *, top_level_only: bool) -> set[str]:
    """The modules ``path`` imports: at module level only, or anywhere (inside functions too)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_core_imports_no_component_and_no_dev_tooling() -> None:
    """obflow/ (config, events, logging, health, the DataHub client, dead letters) imports none of the components
    nor obflow_dev; the command line, obflow/cli, reaches them only inside the command that needs them."""
    offenders = []
    for path in sorted((REPO_ROOT / "obflow").rglob("*.py")):
        in_cli = path.is_relative_to(REPO_ROOT / "obflow" / "cli")
        for module in imported_modules(path, top_level_only=in_cli):
            if module.split(".")[0] in COMPONENTS:
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_no_component_imports_the_dev_tooling() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)} imports {module}"
        for folder in ("capture_agent", "flink_job", "operator/obflow_operator")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        for module in imported_modules(path, top_level_only=False)
        if module.split(".")[0] == "obflow_dev"
    ]
    assert not offenders, "\n".join(offenders)
