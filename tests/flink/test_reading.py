"""The job's read path (flink_job.reading) against the SDK's own reads: the same topic on the DataHub
emulator, written by the real SDK in both protocols, read through ``get_tuple_records`` and through the
Arrow path in both protocols, gives identical records — sequences, system times, every value, NULLs
and empty strings included (in the TUPLE fields and inside the payloads)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from datahub.models import CursorType, TupleRecord

from flink_job.reading import COLUMNS, FIELDS, MalformedResponseError, ShardFetcher, decode_json
from obflow.datahub.client import change_topic_schema, ensure_change_topic
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.datahub import ACCESS_ID, ACCESS_KEY, datahub_config, sdk


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[DataHubEmulator]:
    emu = DataHubEmulator(str(tmp_path / "datahub"), access_id=ACCESS_ID, access_key=ACCESS_KEY).start()
    yield emu
    emu.stop()


def odd_values() -> list[list[Any]]:
    """Change-topic records with what trips readers: NULL and empty TUPLE fields, NULLs, empty strings,
    quotes, newlines and non-ASCII text inside payloads, a long payload."""
    events = change_stream(300, rows=60)
    records = [e.to_datahub_values() for e in events]
    records[0][3] = None  # pk NULL
    records[1][4] = ""  # position empty
    records[2][7] = '{"a": null, "b": "", "c": "line\\nbreak \\"quoted\\" 汉字 ☃"}'
    records[3][7] = '{"x": "' + "y" * 200_000 + '"}'
    records[4][1] = ""
    return records


def put_all(endpoint: str, records: list[list[Any]]) -> None:
    config = datahub_config(endpoint, "json", shards=2)
    ensure_change_topic(sdk(endpoint, "json"), config)
    half = len(records) // 2
    for protocol, part in (("json", records[:half]), ("pb", records[half:])):
        batch = []
        for index, values in enumerate(part):
            record = TupleRecord(schema=change_topic_schema(), values=values)
            record.shard_id = str(index % 2)
            batch.append(record)
        assert sdk(endpoint, protocol).put_records(config.project, config.topic, batch).failed_record_count == 0


def sdk_read(endpoint: str, protocol: str, shard: str) -> list[dict[str, Any]]:
    config = datahub_config(endpoint, protocol)
    client = sdk(endpoint, protocol)
    cursor = client.get_cursor(config.project, config.topic, shard, CursorType.OLDEST).cursor
    rows: list[dict[str, Any]] = []
    while True:
        result = client.get_tuple_records(config.project, config.topic, shard, change_topic_schema(), cursor, 100)
        for record in result.records:
            rows.append({"sequence": record.sequence, "system_time": record.system_time,
                         **dict(zip(FIELDS, record.values, strict=True))})  # fmt: skip
        if not result.records:
            return rows
        cursor = result.next_cursor


def fast_read(
    endpoint: str, protocol: str, shard: str, limit: int = 100, read_ahead: Executor | None = None
) -> list[dict[str, Any]]:
    config = datahub_config(endpoint, protocol)
    fetcher = ShardFetcher(sdk(endpoint, protocol), config.project, config.topic, shard, read_ahead=read_ahead)
    rows: list[dict[str, Any]] = []
    while True:
        fetch = fetcher.fetch(limit)
        assert fetch.records.schema == COLUMNS
        rows += fetch.records.to_pylist()
        if fetch.records.num_rows == 0:
            return rows


@pytest.mark.parametrize("protocol", ["json", "pb"])
def test_the_arrow_read_path_reads_what_the_sdk_reads_in_both_protocols_R2_1(
    emulator: DataHubEmulator, protocol: str
) -> None:
    put_all(emulator.endpoint, odd_values())
    for shard in ("0", "1"):
        through_sdk = sdk_read(emulator.endpoint, "json", shard)
        fast = fast_read(emulator.endpoint, protocol, shard)
        assert len(fast) == len(through_sdk) == 150
        assert fast == through_sdk
    # the SDK's own protobuf read turns a NULL into "" (cprotobuf's default); the Arrow path keeps it
    pb_sdk = sdk_read(emulator.endpoint, "pb", "0")
    nulls = [row for row in fast_read(emulator.endpoint, "pb", "0") if row["pk"] is None]
    assert nulls and all(pb_sdk[row["sequence"]]["pk"] == "" for row in nulls)


def test_a_fetch_never_repeats_or_skips_a_record_at_any_batch_size(emulator: DataHubEmulator) -> None:
    put_all(emulator.endpoint, odd_values())
    whole = fast_read(emulator.endpoint, "json", "1", limit=1000)
    with ThreadPoolExecutor(2) as read_ahead:
        for limit in (1, 7, 150):
            assert fast_read(emulator.endpoint, "json", "1", limit=limit) == whole
            assert fast_read(emulator.endpoint, "json", "1", limit=limit, read_ahead=read_ahead) == whole


def test_reading_ahead_overlaps_the_next_request_and_a_seek_forgets_it(emulator: DataHubEmulator) -> None:
    put_all(emulator.endpoint, odd_values())
    config = datahub_config(emulator.endpoint, "json")
    with ThreadPoolExecutor(1) as read_ahead:
        fetcher = ShardFetcher(sdk(emulator.endpoint, "json"), config.project, config.topic, "0", read_ahead=read_ahead)
        first = fetcher.fetch(10)
        assert fetcher._ahead is not None  # full: the next ten are on their way
        second = fetcher.fetch(10)
        assert first.records.column("sequence").to_pylist() == list(range(10))
        assert second.records.column("sequence").to_pylist() == list(range(10, 20))
        fetcher.seek(3)  # what was read ahead (20..29) is not what comes next
        assert fetcher.fetch(10).records.column("sequence").to_pylist() == list(range(3, 13))
        fetcher.fetch(1000)  # the rest: not full, so nothing is read ahead of the end
        assert fetcher._ahead is None


def test_a_response_that_is_not_datahubs_is_refused_naming_what_is_wrong() -> None:
    with pytest.raises(MalformedResponseError, match="not DataHub's JSON"):
        decode_json(b"<html>gateway timeout</html>")
    with pytest.raises(MalformedResponseError, match="change topic's 8 fields"):
        decode_json(b'{"NextCursor": "c", "Records": [{"Sequence": 0, "SystemTime": 1, "Data": ["a"]}]}')
    records, cursor = decode_json(b'{"NextCursor": "c", "RecordCount": 0, "Records": []}')
    assert records.num_rows == 0 and cursor == "c"


def test_the_read_path_sends_the_sdks_own_request_signed_by_its_account(emulator: DataHubEmulator) -> None:
    """The read path's transport is lighter than the SDK's (no requests session), not different: the
    request it builds has the SDK's method, path, headers (its session's defaults included), body and
    signature, byte for byte; and the emulator, which checks DataHub's signature, accepts it."""
    from datahub.models.params import GetRecordsRequestParams

    from flink_job.reading import Wire

    put_all(emulator.endpoint, odd_values())
    config = datahub_config(emulator.endpoint, "json")
    client = sdk(emulator.endpoint, "json")
    rest = client._datahub_impl._rest_client
    cursor = client.get_cursor(config.project, config.topic, "0", CursorType.OLDEST).cursor
    url = f"/projects/{config.project}/topics/{config.topic}/shards/0"
    data = GetRecordsRequestParams(cursor, 10).content()
    compress = client._datahub_impl._compress_format
    for _ in range(3):  # both within one second: the Date header is part of what is signed
        ours = Wire(client).build(url, data, {}, compress)
        headers = rest._RestClient__common_headers()
        body, compress_headers = rest._RestClient__compress_content(data, compress)
        headers.update(compress_headers)
        headers["Content-Length"] = str(len(body))
        theirs = rest._session.prepare_request(
            requests.Request("POST", f"{rest.endpoint}{url}", headers=headers, data=body)
        )
        rest._account.sign_request(theirs)
        if ours.headers["Date"] == theirs.headers["Date"]:
            break
    assert (ours.method, ours.path_url, ours.body) == (theirs.method, theirs.path_url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)
    assert decode_json(Wire(client).post(url, data, {}, compress))[0].num_rows == 10
