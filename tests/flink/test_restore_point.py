"""``obflow job run`` resumes from the newest savepoint or retained checkpoint unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from flink_job.job import latest_restore_point, latest_savepoint_file, storage_uri
from obflow.config import ObflowConfig


def make(folder: Path, mtime: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"x")
    os.utime(folder / "_metadata", (mtime, mtime))
    return folder


def test_the_newest_of_savepoint_and_checkpoints_wins(tmp_path: Path) -> None:
    config = ObflowConfig(checkpoint={"dir": str(tmp_path / "ck"), "savepoint_dir": str(tmp_path / "sp")})
    assert latest_restore_point(config) is None  # a first start
    savepoint = make(tmp_path / "sp" / "savepoint-1", 1000)
    (tmp_path / "sp" / "LATEST").write_text(savepoint.as_uri())
    assert latest_restore_point(config) == savepoint.as_uri()
    make(tmp_path / "ck" / "job-a" / "chk-3", 900)
    newer = make(tmp_path / "ck" / "job-b" / "chk-7", 2000)
    (tmp_path / "ck" / "job-b" / "chk-8").mkdir()  # in progress: no _metadata yet
    assert latest_restore_point(config) == str(newer)


def test_file_uris_work_like_paths(tmp_path: Path) -> None:
    """The operator configures ``file:///data/<name>/...`` URIs; they resolve like plain paths."""
    config = ObflowConfig(checkpoint={"dir": (tmp_path / "ck").as_uri(), "savepoint_dir": (tmp_path / "sp").as_uri()})
    assert storage_uri(config.checkpoint.dir) == (tmp_path / "ck").as_uri()
    assert storage_uri("relative/dir") == (Path.cwd() / "relative" / "dir").as_uri()
    assert latest_savepoint_file(config) == tmp_path / "sp" / "LATEST"
    newer = make(tmp_path / "ck" / "job-b" / "chk-7", 2000)
    assert latest_restore_point(config) == str(newer)
    remote = ObflowConfig(checkpoint={"dir": "s3://bucket/ck", "savepoint_dir": "s3://bucket/sp"})
    assert latest_restore_point(remote) is None  # not on this filesystem: Flink's HA store knows
