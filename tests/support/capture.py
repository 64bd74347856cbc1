"""A capture agent in tests: its configuration for a test database and emulator, the agent running in a
thread, and the change topic read back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from datahub.exceptions import ResourceNotFoundException

from capture_agent.agent import CaptureAgent
from capture_agent.install import apply_ddl, change_log_ddl
from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.datahub.consumer import ShardReader, decode_events
from obflow.events import ChangeEvent
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.localdb import Engine
from tests.support.datahub import ACCESS_ID, ACCESS_KEY


def capture_config(engine: Engine, database: str, state_dir: Path, endpoint: str, **capture: Any) -> ObflowConfig:
    return ObflowConfig(
        source={"engine": "oceanbase" if engine.kind == "seekdb" else "mariadb", "mode": "mysql",
                "host": "127.0.0.1", "port": engine.port, "user": "root", "database": database,
                "tables": ["orders", "order_lines"], "reconnect_max_backoff": "2s", "heartbeat_interval": "1s"},
        datahub={"endpoint": endpoint, "access_id": ACCESS_ID, "access_key": ACCESS_KEY, "shards": 2,
                 "topic": f"cdc_{database}", "retry": {"attempts": 3, "interval": "200ms"}},
        capture={"state_dir": str(state_dir), "poll_interval": "50ms", "http_port": 0, **capture},
    )  # fmt: skip


class RunningAgent:
    """A capture agent running in a thread of the test process."""

    def __init__(self, config: ObflowConfig) -> None:
        self.config = config
        self.agent = CaptureAgent(config)
        self.agent.start()
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(30)
        self.agent.close()


def read_topic(config: ObflowConfig) -> list[ChangeEvent]:
    client = make_client(config.datahub)
    events: list[ChangeEvent] = []
    try:
        shards = [s.shard_id for s in client.list_shard(config.datahub.project, config.datahub.topic).shards]
    except ResourceNotFoundException:
        return []  # the agent has not created the topic yet
    for shard in shards:
        for batch in ShardReader(client, config.datahub.project, config.datahub.topic, shard).read_all():
            events += decode_events(batch.records)
    return events


def start_capture(
    engine: Engine, database: str, datahub: DataHubEmulator, tmp_path: Path, **capture: Any
) -> tuple[ObflowConfig, RunningAgent]:
    """Change capture installed on the sample tables and an agent streaming them (no snapshot)."""
    config = capture_config(engine, database, tmp_path / "state", datahub.endpoint, **{"snapshot": False, **capture})
    apply_ddl(config, change_log_ddl(config))
    return config, RunningAgent(config)
