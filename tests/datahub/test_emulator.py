"""The DataHub emulator, driven by the unmodified pydatahub SDK in both protocols."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from datahub.exceptions import (
    AuthorizationFailedException,
    DatahubException,
    InvalidCursorException,
    InvalidOperationException,
    InvalidParameterException,
    ResourceExistException,
    ResourceNotFoundException,
    SeekOutOfRangeException,
)
from datahub.models import BlobRecord, CursorType, FieldType, RecordSchema, TupleRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obflow_dev.emulator import DataHubEmulator, Faults
from obflow_dev.emulator.connection import Handler
from obflow_dev.emulator.faults import FAULT_BOUNDS
from obflow_dev.emulator.request import pb_frame
from tests.support.datahub import ACCESS_ID, ACCESS_KEY, EmulatorProcess, sdk, set_faults
from tests.support.hostile import any_value, mutated

SCHEMA = RecordSchema.from_lists(
    ["name", "qty", "price", "ok", "at", "note"],
    [
        FieldType.STRING,
        FieldType.BIGINT,
        FieldType.DOUBLE,
        FieldType.BOOLEAN,
        FieldType.TIMESTAMP,
        FieldType.STRING,
    ],
)


def tuple_record(i: int, shard: str = "0") -> TupleRecord:
    record = TupleRecord(schema=SCHEMA, values=[f"item-{i}", i, i + 0.5, i % 2 == 0, 1_700_000_000_000_000 + i, None])
    record.shard_id = shard
    record.attributes = {"trace": f"t{i}"}
    return record


@pytest.mark.parametrize("lz4", [True, False], ids=["lz4", "plain"])
def test_full_round_trip_through_the_sdk_R1_4(emulator: DataHubEmulator, protocol: str, lz4: bool) -> None:
    client = sdk(emulator.endpoint, protocol, lz4=lz4)
    # given a project and a TUPLE topic
    client.create_project("shop", "test project")
    client.create_tuple_topic("shop", "orders", 3, 7, SCHEMA, "orders")
    client.wait_shards_ready("shop", "orders")
    assert client.list_project().project_names == ["shop"]
    assert client.list_topic("shop").topic_names == ["orders"]
    topic = client.get_topic("shop", "orders")
    assert topic.shard_count == 3
    assert [f.name for f in topic.record_schema.field_list] == [f.name for f in SCHEMA.field_list]
    assert [s.shard_id for s in client.list_shard("shop", "orders").shards] == ["0", "1", "2"]
    # when records are put and read back
    result = client.put_records("shop", "orders", [tuple_record(i) for i in range(50)])
    assert result.failed_record_count == 0
    cursor = client.get_cursor("shop", "orders", "0", CursorType.OLDEST).cursor
    got = client.get_tuple_records("shop", "orders", "0", SCHEMA, cursor, 20)
    # then values, NULLs, attributes and sequences come back as written
    assert got.record_count == 20
    # NULL travels as an empty FieldData in PB; the SDK's PB decoder turns it into '' (its proto default).
    null = None if protocol == "json" else ""
    assert got.records[3].values == ("item-3", 3, 3.5, False, 1_700_000_000_000_003, null)
    assert got.records[3].attributes == {"trace": "t3"}
    assert [r.sequence for r in got.records] == list(range(20))
    rest = client.get_tuple_records("shop", "orders", "0", SCHEMA, got.next_cursor, 1000)
    assert [r.sequence for r in rest.records] == list(range(20, 50))
    empty = client.get_tuple_records("shop", "orders", "0", SCHEMA, rest.next_cursor, 10)
    assert empty.record_count == 0


def test_cursor_types(emulator: DataHubEmulator, protocol: str) -> None:
    client = sdk(emulator.endpoint, protocol)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 1, 7, SCHEMA, "")
    client.put_records("shop", "orders", [tuple_record(i) for i in range(5)])
    time.sleep(0.01)
    middle = int(time.time() * 1000)
    time.sleep(0.01)
    client.put_records("shop", "orders", [tuple_record(i) for i in range(5, 10)])
    assert client.get_cursor("shop", "orders", "0", CursorType.OLDEST).sequence == 0
    assert client.get_cursor("shop", "orders", "0", CursorType.LATEST).sequence == 9
    assert client.get_cursor("shop", "orders", "0", CursorType.SEQUENCE, 7).sequence == 7
    assert client.get_cursor("shop", "orders", "0", CursorType.SYSTEM_TIME, middle).sequence == 5
    with pytest.raises(SeekOutOfRangeException):
        client.get_cursor("shop", "orders", "0", CursorType.SEQUENCE, 11)
    with pytest.raises(SeekOutOfRangeException):
        client.get_cursor("shop", "orders", "0", CursorType.SYSTEM_TIME, int(time.time() * 1000) + 3_600_000)


def test_expired_records_are_gone_and_the_oldest_cursor_moves_past_them(
    emulator: DataHubEmulator, protocol: str
) -> None:
    client = sdk(emulator.endpoint, protocol)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 1, 7, SCHEMA, "")
    client.put_records("shop", "orders", [tuple_record(i) for i in range(10)])
    first = client.get_cursor("shop", "orders", "0", CursorType.OLDEST).cursor
    shard = emulator.store.topic("shop", "orders").shard("0")
    emulator.store.expire(shard, 6)
    assert shard.lines[5] == shard.json_records[5] == b""  # memory freed
    oldest = client.get_cursor("shop", "orders", "0", CursorType.OLDEST)
    assert oldest.sequence == 6
    got = client.get_tuple_records("shop", "orders", "0", SCHEMA, oldest.cursor, 10)
    assert [r.sequence for r in got.records] == [6, 7, 8, 9] and got.records[0].values[0] == "item-6"
    with pytest.raises(SeekOutOfRangeException):
        client.get_cursor("shop", "orders", "0", CursorType.SEQUENCE, 3)
    with pytest.raises(InvalidCursorException):
        client.get_tuple_records("shop", "orders", "0", SCHEMA, first, 10)


def test_blob_topics(emulator: DataHubEmulator, protocol: str) -> None:
    client = sdk(emulator.endpoint, protocol)
    client.create_project("raw", "")
    client.create_blob_topic("raw", "bytes", 2, 7, "")
    payloads = [bytes([i]) * (i + 1) + b"\x00\xff" for i in range(10)]
    records = []
    for payload in payloads:
        record = BlobRecord(blob_data=payload)
        record.shard_id = "1"
        records.append(record)
    assert client.put_records("raw", "bytes", records).failed_record_count == 0
    cursor = client.get_cursor("raw", "bytes", "1", CursorType.OLDEST).cursor
    got = client.get_blob_records("raw", "bytes", "1", cursor, 100)
    assert [r.blob_data for r in got.records] == payloads


def test_put_reports_failures_per_record(emulator: DataHubEmulator, protocol: str) -> None:
    client = sdk(emulator.endpoint, protocol)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 2, 7, SCHEMA, "")
    records = [tuple_record(0), tuple_record(1, shard="7"), tuple_record(2, shard="1")]
    result = client.put_records("shop", "orders", records)
    assert result.failed_record_count == 1
    (failed,) = result.failed_records
    assert (failed.index, failed.error_code) == (1, "NoSuchShard")


def test_routing_by_hash_and_partition_key(emulator: DataHubEmulator) -> None:
    client = sdk(emulator.endpoint)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 4, 7, SCHEMA, "")
    by_hash = TupleRecord(schema=SCHEMA, values=["h", 1, 1.0, True, 1, None])
    by_hash.hash_key = "C" + "0" * 31  # three quarters into the hash space: shard 3
    by_key = [TupleRecord(schema=SCHEMA, values=["p", i, 1.0, True, 1, None]) for i in range(20)]
    for record in by_key:
        record.partition_key = "same-row"
    assert client.put_records("shop", "orders", [by_hash, *by_key]).failed_record_count == 0
    counts = {}
    for shard in "0123":
        cursor = client.get_cursor("shop", "orders", shard, CursorType.OLDEST).cursor
        counts[shard] = client.get_tuple_records("shop", "orders", shard, SCHEMA, cursor, 100).record_count
    assert counts["3"] >= 1
    assert sorted(counts.values())[-1] >= 20  # one partition key, one shard


def test_subscription_offsets_with_sessions_and_reset(emulator: DataHubEmulator, protocol: str) -> None:
    client = sdk(emulator.endpoint, protocol)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 2, 7, SCHEMA, "")
    sub_id = client.create_subscription("shop", "orders", "flink").sub_id
    # (the SDK's get_subscription parses no answer in 2.29: GetSubscriptionResult lacks an argument)
    listed = client.list_subscription("shop", "orders", "", 1, 10)
    assert listed.total_count == 1
    assert (listed.subscriptions[0].sub_id, listed.subscriptions[0].comment) == (sub_id, "flink")
    # open a session, commit
    offsets = client.init_and_get_subscription_offset("shop", "orders", sub_id, ["0", "1"]).offsets
    assert offsets["0"].sequence == -1
    offsets["0"].sequence, offsets["0"].timestamp = 41, 1000
    client.update_subscription_offset("shop", "orders", sub_id, {"0": offsets["0"]})
    assert client.get_subscription_offset("shop", "orders", sub_id, ["0"]).offsets["0"].sequence == 41
    # a second consumer opens the offsets: the first one's session is stale
    client.init_and_get_subscription_offset("shop", "orders", sub_id, ["0"])
    offsets["0"].sequence = 50
    with pytest.raises(InvalidOperationException, match="session"):
        client.update_subscription_offset("shop", "orders", sub_id, {"0": offsets["0"]})
    # a reset bumps the version: commits from before it are refused
    fresh = client.init_and_get_subscription_offset("shop", "orders", sub_id, ["0"]).offsets["0"]
    client.reset_subscription_offset("shop", "orders", sub_id, {"0": {"Sequence": 5, "Timestamp": 0}})
    fresh.sequence = 60
    with pytest.raises(InvalidOperationException):
        client.update_subscription_offset("shop", "orders", sub_id, {"0": fresh})
    after_reset = client.init_and_get_subscription_offset("shop", "orders", sub_id, ["0"]).offsets["0"]
    assert (after_reset.sequence, after_reset.version) == (5, 1)
    client.delete_subscription("shop", "orders", sub_id)
    assert client.list_subscription("shop", "orders", "", 1, 10).total_count == 0
    with pytest.raises(DatahubException) as gone:
        client.get_subscription_offset("shop", "orders", sub_id, ["0"])
    assert gone.value.error_code == "NoSuchSubscription"


@pytest.mark.parametrize(("access_id", "key"), [(ACCESS_ID, "wrong-key"), ("nobody", ACCESS_KEY)])
def test_wrong_credentials_are_rejected(emulator: DataHubEmulator, protocol: str, access_id: str, key: str) -> None:
    client = sdk(emulator.endpoint, protocol, key=key, access_id=access_id)
    with pytest.raises(AuthorizationFailedException):
        client.list_project()


def test_unknown_resources_get_datahub_errors(emulator: DataHubEmulator, protocol: str) -> None:
    client = sdk(emulator.endpoint, protocol)
    with pytest.raises(ResourceNotFoundException, match="project 'nope'"):
        client.get_project("nope")
    client.create_project("shop", "")
    with pytest.raises(ResourceExistException):
        client.create_project("shop", "")
    with pytest.raises(ResourceNotFoundException, match="topic"):
        client.list_shard("shop", "nope")
    client.create_tuple_topic("shop", "orders", 1, 7, SCHEMA, "")
    with pytest.raises(ResourceNotFoundException, match="shard"):
        client.get_cursor("shop", "orders", "5", CursorType.OLDEST)
    with pytest.raises(DatahubException, match="cursor"):
        client.get_tuple_records("shop", "orders", "0", SCHEMA, "0" * 32, 10)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "code"),
    [
        ("POST", "/projects/proj", b"{not json", {}, "InvalidParameter"),
        (
            "POST",
            "/projects/proj/topics/tpc/shards",
            b"\x00\x01",
            {"Content-Type": "application/x-protobuf"},
            None,
        ),
        ("GET", "/elsewhere", b"", {}, "InvalidUriSpec"),
        (
            "POST",
            "/projects/proj",
            b"garbage",
            {"Content-Encoding": "lz4", "x-datahub-content-raw-size": "99"},
            None,
        ),
    ],
)
def test_malformed_requests_get_clean_errors(
    emulator: DataHubEmulator, method: str, path: str, body: bytes, headers: dict[str, str], code: str | None
) -> None:
    client = sdk(emulator.endpoint)
    client.create_project("proj", "")
    client.create_tuple_topic("proj", "tpc", 1, 7, SCHEMA, "")
    # a raw request signed the way the SDK signs, so only the body is wrong
    response = client._datahub_impl._rest_client._session.request(
        method, emulator.endpoint + path, data=body, headers=headers, timeout=5
    )
    assert 400 <= response.status_code < 500
    error = response.json()
    assert set(error) == {"ErrorCode", "ErrorMessage"}
    assert code is None or error["ErrorCode"] in (code, "Unauthorized")


def test_signed_malformed_bodies_are_invalid_parameters(emulator: DataHubEmulator) -> None:
    client = sdk(emulator.endpoint, "json")
    rest = client._datahub_impl._rest_client
    with pytest.raises(InvalidParameterException, match="not valid JSON"):
        rest.post("/projects/proj", data="{oops")
    client.create_project("proj", "")
    client.create_tuple_topic("proj", "tpc", 1, 7, SCHEMA, "")
    with pytest.raises(InvalidParameterException, match="Records must be a list"):
        rest.post("/projects/proj/topics/tpc/shards", data='{"Action": "pub", "Records": 5}')
    pb = sdk(emulator.endpoint, "pb")._datahub_impl._rest_client
    with pytest.raises(InvalidParameterException, match="DHUB frame"):
        pb.post(
            "/projects/proj/topics/tpc/shards",
            data=b"not a frame",
            headers={"x-datahub-request-action": "pub", "Content-Type": "application/x-protobuf"},
        )


def test_records_and_offsets_survive_a_killed_emulator(emulator_process: EmulatorProcess, protocol: str) -> None:
    emulator_process.start()
    client = sdk(emulator_process.endpoint, protocol)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 2, 7, SCHEMA, "")
    client.put_records("shop", "orders", [tuple_record(i) for i in range(100)])
    sub_id = client.create_subscription("shop", "orders", "s").sub_id
    offset = client.init_and_get_subscription_offset("shop", "orders", sub_id, ["0"]).offsets["0"]
    offset.sequence = 42
    client.update_subscription_offset("shop", "orders", sub_id, {"0": offset})
    # when the process is killed without warning and started again on the same data
    emulator_process.kill()
    emulator_process.start()
    client = sdk(emulator_process.endpoint, protocol)
    # then every acknowledged record and offset is there, and writing continues after them
    cursor = client.get_cursor("shop", "orders", "0", CursorType.OLDEST).cursor
    got = client.get_tuple_records("shop", "orders", "0", SCHEMA, cursor, 1000)
    assert [r.values[1] for r in got.records] == list(range(100))
    assert client.get_subscription_offset("shop", "orders", sub_id, ["0"]).offsets["0"].sequence == 42
    client.put_records("shop", "orders", [tuple_record(100)])
    assert client.get_cursor("shop", "orders", "0", CursorType.LATEST).sequence == 100
    assert emulator_process.terminate() == 0


def test_a_torn_last_line_is_cut_off_at_start(tmp_path: Path) -> None:
    emu = DataHubEmulator(str(tmp_path), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    client = sdk(emu.endpoint)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 1, 7, SCHEMA, "")
    client.put_records("shop", "orders", [tuple_record(i) for i in range(3)])
    emu.stop()
    with (tmp_path / "shop" / "orders" / "0.log").open("ab") as log:
        log.write(b'[1700000000000,["half')  # a crash in the middle of a write
    emu = DataHubEmulator(str(tmp_path), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    client = sdk(emu.endpoint)
    client.put_records("shop", "orders", [tuple_record(3)])
    cursor = client.get_cursor("shop", "orders", "0", CursorType.OLDEST).cursor
    got = client.get_tuple_records("shop", "orders", "0", SCHEMA, cursor, 10)
    emu.stop()
    assert [r.values[1] for r in got.records] == [0, 1, 2, 3]


def test_faults_switch_at_run_time(emulator: DataHubEmulator) -> None:
    client = sdk(emulator.endpoint)
    client.create_project("shop", "")
    client.create_tuple_topic("shop", "orders", 1, 7, SCHEMA, "")
    # whole-request failures
    set_faults(emulator.endpoint, fail_next_puts=1)
    with pytest.raises(DatahubException):
        client.put_records("shop", "orders", [tuple_record(0)])
    assert client.put_records("shop", "orders", [tuple_record(0)]).failed_record_count == 0
    # a share of records fails
    set_faults(emulator.endpoint, put_record_failure_rate=0.5, seed=3)
    result = client.put_records("shop", "orders", [tuple_record(i) for i in range(200)])
    assert 60 < result.failed_record_count < 140
    assert {f.error_code for f in result.failed_records} == {"LimitExceeded"}
    # added latency
    set_faults(emulator.endpoint, put_record_failure_rate=0.0, latency_ms=300)
    started = time.monotonic()
    client.list_project()
    assert time.monotonic() - started >= 0.3
    set_faults(emulator.endpoint, latency_ms=0)
    with pytest.raises(httpx.HTTPStatusError):
        set_faults(emulator.endpoint, no_such_fault=1)


def test_outage_refuses_connections_then_recovers(emulator: DataHubEmulator) -> None:
    client = sdk(emulator.endpoint)
    client.create_project("shop", "")
    httpx.post(f"{emulator.endpoint}/_admin/outage", json={"seconds": 2.0}, timeout=5)
    time.sleep(0.5)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", emulator.port), timeout=1),
    ):
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert client.list_project().project_names == ["shop"]
            break
        except Exception:
            time.sleep(0.1)
    else:
        pytest.fail("the emulator did not come back after the outage")


BAD_NAMES = ["..%2F..%2Fescaped", "..%2Fescaped", "a%2Fescaped", "%2Ftmp%2Fescaped", "1escaped", "na%C3%AFve", "x%00y"]


@pytest.mark.parametrize("name", [*BAD_NAMES, "ab", "x" * 33], ids=lambda n: n[:20])
def test_a_project_name_that_is_not_datahubs_is_refused_and_touches_no_path(
    emulator: DataHubEmulator, tmp_path: Path, name: str
) -> None:
    """Signed by the SDK's own client past its name check (anything that reaches the port can send it):
    DataHub's InvalidParameter naming the rule, and no folder made anywhere."""
    rest = sdk(emulator.endpoint, "json")._datahub_impl._rest_client
    before = set(tmp_path.parent.rglob("*"))
    with pytest.raises(InvalidParameterException, match=r"project name .* must start with a letter"):
        rest.post(f"/projects/{name}", data='{"Comment": ""}')
    assert set(tmp_path.parent.rglob("*")) == before


@pytest.mark.parametrize("name", [*BAD_NAMES, "x" * 129], ids=lambda n: n[:20])
def test_a_topic_name_that_is_not_datahubs_is_refused_and_touches_no_path(
    emulator: DataHubEmulator, tmp_path: Path, name: str
) -> None:
    client = sdk(emulator.endpoint, "json")
    client.create_project("shop", "")
    before = set(tmp_path.parent.rglob("*"))
    body = '{"ShardCount": 1, "Lifecycle": 1, "RecordType": "BLOB", "Comment": ""}'
    with pytest.raises(InvalidParameterException, match=r"topic name .* must start with a letter"):
        client._datahub_impl._rest_client.post(f"/projects/shop/topics/{name}", data=body)
    assert set(tmp_path.parent.rglob("*")) == before


BAD_FAULTS = [
    b'{"latency_ms": "x"}',
    b'{"latency_ms": 1e309}',
    b'{"latency_ms": -1}',
    b'{"put_request_failure_rate": 2}',
    b'{"put_record_failure_rate": true}',
    b'{"fail_next_puts": 1.5}',
    b'{"fail_next_puts": null}',
    b'{"seed": "1"}',
    b'{"latency_ms": 0, "seed": []}',
    b"[1, 2]",
    b'"faults"',
    b"{not json",
]


@pytest.mark.parametrize("body", BAD_FAULTS, ids=lambda b: b.decode()[:30])
def test_a_fault_setting_of_the_wrong_type_is_refused_and_changes_nothing(
    emulator: DataHubEmulator, body: bytes
) -> None:
    """A wrong setting is InvalidParameter naming the fault and what it takes; none of the request is
    applied, so DataHub requests keep working (a string latency made every one of them fail with 500)."""
    answer = httpx.post(f"{emulator.endpoint}/_admin/faults", content=body, timeout=5)
    assert answer.status_code == 400 and answer.json()["ErrorCode"] == "InvalidParameter", answer.text
    assert "Traceback" not in answer.text
    assert httpx.get(f"{emulator.endpoint}/_admin/faults", timeout=5).json()["latency_ms"] == 0
    sdk(emulator.endpoint).create_project("shop", "")


@pytest.mark.parametrize("body", [b'{"seconds": "2"}', b'{"seconds": 0}', b'{"seconds": 1e9}', b"[]", b"{x"])
def test_an_outage_of_the_wrong_length_is_refused(emulator: DataHubEmulator, body: bytes) -> None:
    answer = httpx.post(f"{emulator.endpoint}/_admin/outage", content=body, timeout=5)
    assert answer.status_code == 400 and answer.json()["ErrorCode"] == "InvalidParameter", answer.text
    sdk(emulator.endpoint).create_project("shop", "")


def test_every_fault_has_its_bounds() -> None:
    assert set(FAULT_BOUNDS) == set(Faults.__dataclass_fields__)


def test_the_admin_endpoint_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Anything on the host can reach the port, and /_admin/ is unauthenticated: without ``admin`` (the
    CLI's --admin) it answers 404 naming the flag, and changes nothing; /healthz stays."""
    emu = DataHubEmulator(str(tmp_path), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    try:
        for method, path in (("POST", "/_admin/faults"), ("GET", "/_admin/faults"), ("POST", "/_admin/outage")):
            answer = httpx.request(method, f"{emu.endpoint}{path}", json={"latency_ms": 5000}, timeout=5)
            assert answer.status_code == 404 and "--admin" in answer.json()["ErrorMessage"], answer.text
        assert emu.faults.latency_ms == 0
        assert httpx.get(f"{emu.endpoint}/healthz", timeout=5).json() == {"status": "ok"}
        sdk(emu.endpoint).create_project("shop", "")
    finally:
        emu.stop()


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send ``head`` (request line and headers, no blank line) and ``body`` as they are, and nothing
    more (the sending side is shut); the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(head + b"\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)
        return conn.makefile("rb").readline()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    length=st.one_of(
        st.integers(-(10**12), 10**12).map(str), st.text(max_size=12), st.sampled_from(["1e3", " 5", "0x10", "²"])
    ),
    raw_size=st.one_of(st.integers(-(10**12), 10**12).map(str), st.text(max_size=12)),
)
def test_any_length_header_is_answered_at_once_with_a_4xx_or_a_success(
    emulator: DataHubEmulator, length: str, raw_size: str
) -> None:
    """Content-Length and the LZ4 raw size, whatever their text: an answer within 5 s that is not a
    5xx (a non-numeric length was a 500 with a traceback; a huge one was read as far as the client
    sent, then tried as a body)."""
    head = (
        "POST /projects/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: lz4\r\n"
        f"x-datahub-content-raw-size: {raw_size}\r\nContent-Length: {length}"
    ).encode("utf-8", errors="replace")
    status = raw_request(emulator.port, head, b"\x00" * 8)
    assert status.startswith(b"HTTP/1."), status
    assert status.split()[1][:1] == b"4", status


def test_a_body_that_stops_arriving_is_a_408_or_400_and_one_log_line(
    emulator: DataHubEmulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that sends 3 of the 100 body bytes it announced: after the handler's idle timeout
    (shortened here) it gets RequestTimeout; one that shuts its side instead gets InvalidParameter. They
    were a 500 with a TimeoutError and a traceback in the log, and a truncated body tried as JSON."""
    monkeypatch.setattr(Handler, "timeout", 1.0)
    caplog.set_level(logging.INFO, "obflow.datahub.emulator")
    head = b"POST /projects/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100"
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as conn:
        conn.sendall(head + b"\r\n\r\n" + b'{"C')
        status = conn.makefile("rb").readline()
    assert status.split()[1] == b"408", status
    assert raw_request(emulator.port, head, b'{"C').split()[1] == b"400"
    ended = [r for r in caplog.records if getattr(r, "event", None) == "emulator.connection"]
    assert [r.getMessage().split(": ", 1)[1] for r in ended] == [
        "no more of the body within 1s",
        "the body ended after 3 of the 100 bytes Content-Length gives",
    ]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert httpx.get(f"{emulator.endpoint}/healthz", timeout=5).json() == {"status": "ok"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"G\xc3\xa9T", b""]),
    path=st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8")),
    header=st.binary(max_size=40),
)
def test_any_request_line_and_header_bytes_are_answered_with_a_4xx(
    emulator: DataHubEmulator, caplog: pytest.LogCaptureFixture, method: bytes, path: bytes, header: bytes
) -> None:
    """Raw bytes in the path (non-ASCII, NUL, percent signs, CR or LF), the method and a header value,
    unsigned: a 4xx status line within 5 s (a malformed line is http.server's own 400, a method DataHub
    does not have its 501), no traceback."""
    caplog.clear()
    head = method + b" /projects/" + path + b" HTTP/1.1\r\nHost: x\r\nX-Anything: " + header
    status = raw_request(emulator.port, head)
    assert status.startswith(b"HTTP/1."), status
    code = status.split()[1]
    assert code[:1] == b"4" or (code == b"501" and method not in (b"GET", b"POST", b"PUT", b"DELETE")), status
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(
    ("head", "status", "error"),
    [
        (b"PATCH /projects HTTP/1.1\r\nHost: x", 501, "InvalidOperation"),
        (b"GET /projects", 400, "InvalidParameter"),  # HTTP/0.9
        (b"GET /projects HTTP/9.9\r\nHost: x", 505, "InvalidParameter"),
        (b"GET /projects HTTP/1.1\r\nX-Long: " + b"x" * 70_000, 431, "InvalidParameter"),
        (b"GET /" + b"x" * 70_000 + b" HTTP/1.1", 414, "InvalidParameter"),
    ],
)
def test_what_http_server_refuses_is_answered_in_datahubs_error_form(
    emulator: DataHubEmulator, head: bytes, status: int, error: str
) -> None:
    """A method DataHub does not have, a request line or header block http.server cannot parse: the status
    with DataHub's JSON error body (ErrorCode, ErrorMessage), which clients parse, not an HTML page."""
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=5) as conn:
        conn.sendall(head + b"\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        answer = conn.makefile("rb").read()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert int(status_line.split()[1]) == status, answer
    assert b"Content-Type: application/json" in headers, answer
    payload = json.loads(body)
    assert payload["ErrorCode"] == error and payload["ErrorMessage"], payload


TUPLE_SCHEMA_JSON = '{"fields": [{"name": "name", "type": "STRING"}, {"name": "qty", "type": "BIGINT"}]}'
SIGNED_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/projects/fuzz2", {"Comment": "c"}),
    ("PUT", "/projects/fuzz", {"Comment": "c"}),
    ("POST", "/projects/fuzz/topics/new", {"ShardCount": 1, "Lifecycle": 7, "RecordType": "TUPLE",
                                          "RecordSchema": TUPLE_SCHEMA_JSON, "Comment": "c"}),
    ("POST", "/projects/fuzz/topics/tup", {"Action": "AppendField", "FieldName": "extra", "FieldType": "STRING"}),
    ("PUT", "/projects/fuzz/topics/tup", {"Lifecycle": 7, "Comment": "c"}),
    ("POST", "/projects/fuzz/topics/tup/shards", {"Action": "pub", "Records": [
        {"ShardId": "0", "Data": ["a", "1", "1.5", "true", "1700000000000000", None], "Attributes": {"k": "v"}},
        {"HashKey": "0" * 32, "Data": ["b", "2", "2.5", "false", "1", "n"]},
        {"PartitionKey": "p", "Data": ["c", "3", "3.5", "true", "2", "n"]}]}),
    ("POST", "/projects/fuzz/topics/blob/shards/0", {"Action": "pub", "Records": [{"Data": "aGVsbG8="}]}),
    ("POST", "/projects/fuzz/topics/tup/shards/0", {"Action": "cursor", "Type": "SEQUENCE", "Sequence": 0}),
    ("POST", "/projects/fuzz/topics/tup/shards/0", {"Action": "cursor", "Type": "SYSTEM_TIME", "SystemTime": 0}),
    ("POST", "/projects/fuzz/topics/tup/shards/0", {"Action": "sub", "Cursor": "{cursor}", "Limit": 10}),
    ("POST", "/projects/fuzz/topics/blob/shards/0", {"Action": "sub", "Cursor": "{blob_cursor}", "Limit": 10}),
    ("POST", "/projects/fuzz/topics/tup/subscriptions", {"Action": "create", "Comment": "c"}),
    ("POST", "/projects/fuzz/topics/tup/subscriptions", {"Action": "list", "PageIndex": 1, "PageSize": 10,
                                                        "Search": "c"}),
    ("PUT", "/projects/fuzz/topics/tup/subscriptions/{sub}", {"State": 1, "Comment": "c"}),
    ("POST", "/projects/fuzz/topics/tup/subscriptions/{sub}/offsets", {"Action": "open", "ShardIds": ["0", "1"]}),
    ("PUT", "/projects/fuzz/topics/tup/subscriptions/{sub}/offsets", {"Action": "commit", "Offsets": {
        "0": {"Sequence": 1, "Timestamp": 1, "Version": 0, "SessionId": "{session}"}}}),
    ("PUT", "/projects/fuzz/topics/tup/subscriptions/{sub}/offsets", {"Action": "reset", "Offsets": {
        "0": {"Sequence": 0, "Timestamp": 0}}}),
]  # fmt: skip


def _filled(value: Any, names: dict[str, str]) -> Any:
    """``value`` with the ``{name}`` placeholders of its texts filled in."""
    if isinstance(value, str):
        return names.get(value.strip("{}"), value) if value.startswith("{") and value.endswith("}") else value
    if isinstance(value, list):
        return [_filled(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, names) for k, v in value.items()}
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), index=st.integers(0, len(SIGNED_REQUESTS) - 1), whole=st.integers(0, 9))
def test_any_json_body_signed_and_sent_to_any_resource_is_a_4xx_or_a_success(
    emulator: DataHubEmulator, caplog: pytest.LogCaptureFixture, data: st.DataObject, index: int, whole: int
) -> None:
    """The body each resource expects with a few values replaced by any JSON value (or, one time in
    ten, any JSON value at all), signed as the SDK signs: answered within 5 s, never a 5xx, never a
    traceback in the log (wrong JSON types and values were a 500 with one)."""
    client = sdk(emulator.endpoint, "json")
    if "fuzz" not in emulator.store.projects:
        client.create_project("fuzz", "")
        client.create_tuple_topic("fuzz", "tup", 2, 7, SCHEMA, "")
        client.create_blob_topic("fuzz", "blob", 1, 7, "")
        client.put_records("fuzz", "tup", [tuple_record(0)])
        client.put_records("fuzz", "blob", [BlobRecord(blob_data=b"x")])
        client.create_subscription("fuzz", "tup", "c")
    sub = emulator.store.project("fuzz").subscriptions
    sub_id = next(iter(sub))
    session = client.init_and_get_subscription_offset("fuzz", "tup", sub_id, ["0"]).offsets["0"].session_id
    names = {
        "sub": sub_id,
        "session": str(session),
        "cursor": client.get_cursor("fuzz", "tup", "0", CursorType.OLDEST).cursor,
        "blob_cursor": client.get_cursor("fuzz", "blob", "0", CursorType.OLDEST).cursor,
    }
    method, path, valid = SIGNED_REQUESTS[index]
    body = data.draw(any_value if whole == 0 else mutated(_filled(valid, names)))
    rest = client._datahub_impl._rest_client
    caplog.clear()
    started = time.monotonic()
    try:
        getattr(rest, method.lower())(_filled(path, names).format(**names), data=json.dumps(body))
    except DatahubException as exc:
        assert 400 <= exc.status_code < 500, exc
    assert time.monotonic() - started < 5
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


RECORDED_PB_PAYLOADS: dict[str, dict[str, bytes]] = {}  # by emulator endpoint


def recorded_pb_payloads(emulator: DataHubEmulator) -> dict[str, bytes]:
    """The protobuf payloads (frame stripped) the SDK sends to put and to get records, recorded on the wire."""
    client = sdk(emulator.endpoint, "pb", lz4=False)
    client.create_project("pbfuzz", "")
    client.create_tuple_topic("pbfuzz", "tup", 1, 7, SCHEMA, "")
    session = client._datahub_impl._rest_client._session
    sent: list[bytes] = []
    send = session.send

    def recording(request: Any, **kwargs: Any) -> Any:
        sent.append(request.body)
        return send(request, **kwargs)

    session.send = recording
    client.put_records("pbfuzz", "tup", [tuple_record(i) for i in range(3)])
    cursor = client.get_cursor("pbfuzz", "tup", "0", CursorType.OLDEST).cursor
    client.get_tuple_records("pbfuzz", "tup", "0", SCHEMA, cursor, 10)
    session.send = send
    framed = [body for body in sent if body and body[:4] == b"DHUB"]
    return {"pub": framed[0][12:], "sub": framed[-1][12:]}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), action=st.sampled_from(["pub", "sub"]), edits=st.integers(1, 4))
def test_any_protobuf_payload_in_a_valid_frame_is_a_4xx_or_a_success(
    emulator: DataHubEmulator, caplog: pytest.LogCaptureFixture, data: st.DataObject, action: str, edits: int
) -> None:
    """What the SDK sends to put and to get records, with bytes replaced, inserted or cut, framed with
    the right length and checksum so the protobuf decoder and what follows it see them: never a 5xx,
    never a traceback."""
    if emulator.endpoint not in RECORDED_PB_PAYLOADS:
        RECORDED_PB_PAYLOADS[emulator.endpoint] = recorded_pb_payloads(emulator)
    payload = bytearray(RECORDED_PB_PAYLOADS[emulator.endpoint][action])
    for _ in range(edits):
        at = data.draw(st.integers(0, len(payload)))
        cut = data.draw(st.integers(0, 8))
        payload[at : at + cut] = data.draw(st.binary(max_size=8))
    rest = sdk(emulator.endpoint, "pb", lz4=False)._datahub_impl._rest_client
    headers = {"x-datahub-request-action": action, "Content-Type": "application/x-protobuf"}
    caplog.clear()
    try:
        rest.post("/projects/pbfuzz/topics/tup/shards/0", data=pb_frame(bytes(payload)), headers=headers)
    except DatahubException as exc:
        assert 400 <= exc.status_code < 500, exc
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("lifecycle", ['"seven"', "-1", "0", "1e9", "true", "[7]", "99999999"])
def test_a_lifecycle_that_is_not_a_day_count_is_refused(emulator: DataHubEmulator, lifecycle: str) -> None:
    """A non-numeric lifecycle was a 500 with a traceback in the log; it is InvalidParameter naming it."""
    client = sdk(emulator.endpoint, "json")
    client.create_project("shop", "")
    body = f'{{"ShardCount": 1, "Lifecycle": {lifecycle}, "RecordType": "BLOB", "Comment": ""}}'
    with pytest.raises(InvalidParameterException, match="Lifecycle must be a whole number"):
        client._datahub_impl._rest_client.post("/projects/shop/topics/blobs", data=body)
    client.create_blob_topic("shop", "blobs", 1, 7, "")
    assert client.get_topic("shop", "blobs").life_cycle == 7
