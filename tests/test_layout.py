"""The repository layout and the guard against ``operator/`` shadowing the standard library."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


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
