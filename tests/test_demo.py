"""The local pipeline end to end: seekdb -> capture agent -> DataHub emulator -> PyFlink job -> files.

`obflow demo` as a user runs it, and the same pipeline with each component crashed (SIGKILL) and
restarted in turn while the load runs: every change must still be in the output exactly once, and
each row's changes in commit order. All components are real processes (obflow_dev.supervise).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obflow_dev.demo import LocalPipeline, verify
from tests.support.repo import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_pipeline_and_verifies_it_R9_2_R9_4(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--rows", "600", "--rate", "150", "--out", str(out), timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every change exactly once: yes, per-row commit order: yes" in result.stdout
    assert "committed  600 rows" in result.stdout
    logs = out / "logs"
    assert {"seekdb.log", "datahub.log", "capture.log", "job.log", "demo.log"} <= {p.name for p in logs.iterdir()}
    # stopped in the reverse order of starting; the job with a savepoint (exit 0)
    stops = [json.loads(line)["message"] for line in (logs / "demo.log").read_text().splitlines()
             if '"component.stopped"' in line]  # fmt: skip
    assert [m.split()[0] for m in stops] == ["job", "capture", "datahub", "seekdb"]
    assert stops[0] == "job stopped (exit 0)"
    shown = run_cli("output", "show", "--config", str(out / "pipeline.yaml"), "--limit", "3")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3


def test_every_component_crashes_in_turn_and_nothing_is_lost_or_doubled_R4_1_R4_5_R9_1_R9_2_R9_4(
    tmp_path: Path,
) -> None:
    pipeline = LocalPipeline(tmp_path / "pipeline", fmt="json")
    supervisor = pipeline.supervisor
    try:
        pipeline.start()
        generator = pipeline.load(total=2400, rate=120)
        crashes = []
        for name, at in (("capture", 400), ("job", 1000), ("datahub", 1600)):
            while generator.history.changes < at and generator.is_alive():
                time.sleep(0.1)
            supervisor.kill(name)
            time.sleep(2)  # down for a while, with the load going on
            began = time.monotonic()
            supervisor.restart(name, timeout=180)
            crashes.append((name, time.monotonic() - began))
        generator.join(120)
        assert generator.error is None and generator.history.changes == 2400
        deadline = time.monotonic() + 240
        while (result := verify(pipeline.config, generator.history)).rows < 2400 and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(5)  # anything extra would show up now
        result = verify(pipeline.config, generator.history)
    finally:
        pipeline.stop()
    print("restart to ready, seconds:", crashes)
    assert result.rows == 2400 and result.duplicates == 0 and result.missing == 0, result
    assert result.out_of_order == []
    job_log = (tmp_path / "pipeline" / "logs" / "job.log").read_text().splitlines()
    starts = [json.loads(line) for line in job_log if '"job.started"' in line]
    assert [s["restored_from"] is None for s in starts] == [True, False]
    assert "/chk-" in starts[1]["restored_from"]  # the restarted job resumed from its latest checkpoint


def test_ctrl_c_stops_every_component_and_leaves_nothing_running(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "obflow.cli", "demo", "--rows", "100000", "--rate", "100", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        # as from a terminal's foreground: a suite started in the background (`... &`) ignores SIGINT,
        # and a Python started with SIGINT ignored never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (no lock taken)
    )  # fmt: skip
    log = out / "logs" / "demo.log"
    deadline = time.monotonic() + 180
    while not (log.exists() and '"job ready"' in log.read_text()):
        assert demo.poll() is None and time.monotonic() < deadline, "the demo did not get the pipeline running"
        time.sleep(0.5)
    time.sleep(5)  # under load
    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    output, _ = demo.communicate(timeout=180)
    assert demo.returncode == 130, output
    assert "interrupted: stopping every component" in output
    pids = [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", log.read_text())]
    assert len(pids) == 4
    leftovers = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit() and alive_in(entry, pids)]
    assert leftovers == [], "processes of the pipeline still running"


def alive_in(proc: Path, groups: list[int]) -> bool:
    """A live (not zombie: dead, waiting for init to reap it) process in one of the process groups."""
    try:
        state, _, group = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
    except OSError:
        return False
    return int(group) in groups and state != "Z"
