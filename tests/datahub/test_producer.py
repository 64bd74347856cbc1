"""The producer: routing, per-row order, the retry rule and never dropping data (R1.4, R1.5, R9.4)."""

from __future__ import annotations

import io
import itertools
import threading
from collections import defaultdict

import orjson
import pytest

from obflow.config import DataHubConfig, RetryConfig
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.consumer import ShardReader, decode_events
from obflow.datahub.producer import RECORDS_SENT, DeliveryError, Producer, shard_index
from obflow.events import ChangeEvent
from obflow.log import setup_logging
from obflow_dev.emulator import DataHubEmulator
from obflow_dev.sample import change_stream
from tests.support.datahub import datahub_config, put_log, sdk, set_faults


def producer(config: DataHubConfig, interval: float | None = None, batch_size: int = 500) -> Producer:
    retry = RetryConfig(
        attempts=config.retry.attempts, interval=config.retry.interval if interval is None else interval
    )
    return Producer(make_client(config), config.project, config.topic, retry, batch_size=batch_size)


def read_back(config: DataHubConfig) -> dict[str, list[ChangeEvent]]:
    client = make_client(config)
    shards = [s.shard_id for s in client.list_shard(config.project, config.topic).shards]
    by_shard = {}
    for shard in shards:
        reader = ShardReader(client, config.project, config.topic, shard)
        by_shard[shard] = [e for batch in reader.read_all() for e in decode_events(batch.records)]
    return by_shard


def per_row(events: list[ChangeEvent]) -> dict[tuple[str, str], list[str]]:
    rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        rows[(event.source.qualified_table, event.key_json)].append(event.source.position)
    return rows


def test_changes_are_sent_to_datahub_R1_4(change_topic: DataHubConfig) -> None:
    events = change_stream(1200, rows=300)
    before = RECORDS_SENT.labels(change_topic.topic)._value.get()
    report = producer(change_topic).send(events)
    assert report.records == 1200 and report.retries == 0
    delivered = [e for shard in read_back(change_topic).values() for e in shard]
    assert sorted(e.event_id for e in delivered) == sorted(e.event_id for e in events)
    assert {e.event_id: e for e in delivered} == {e.event_id: e for e in events}
    assert RECORDS_SENT.labels(change_topic.topic)._value.get() - before == 1200


def test_every_change_of_a_row_lands_in_one_shard_in_commit_order_R9_4(change_topic: DataHubConfig) -> None:
    events = change_stream(2000, rows=50)  # hot rows: ~40 changes each
    producer(change_topic).send(events)
    by_shard = read_back(change_topic)
    shard_of_row: dict[tuple[str, str], str] = {}
    for shard, shard_events in by_shard.items():
        for event in shard_events:
            row = (event.source.qualified_table, event.key_json)
            assert shard_of_row.setdefault(row, shard) == shard, "a row's changes span shards"
    delivered = [e for shard in by_shard.values() for e in shard]
    assert per_row(delivered) == per_row(events)


def test_shard_index_is_stable_and_spread() -> None:
    assert shard_index("T.ORDERS", '{"ID":1}', 8) == shard_index("T.ORDERS", '{"ID":1}', 8)
    counts: dict[int, int] = defaultdict(int)
    for i in range(8000):
        counts[shard_index("T.ORDERS", f'{{"ID":{i}}}', 8)] += 1
    assert len(counts) == 8 and min(counts.values()) > 800


def test_retry_schedule_is_three_tries_two_seconds_apart_R1_5(emulator: DataHubEmulator) -> None:
    config = datahub_config(emulator.endpoint)  # the default rule: 3 retries, 2 s apart
    ensure_change_topic(sdk(emulator.endpoint), config)
    # given DataHub fails the next three put requests whole
    set_faults(emulator.endpoint, fail_next_puts=3)
    events = change_stream(100, rows=100)
    # when the producer sends
    report = producer(config).send(events)
    # then it tried 4 times (1 + 3 retries), 2 s apart, and the last try delivered everything
    puts = put_log(emulator.endpoint)
    assert [p["whole_request_failed"] for p in puts] == [True, True, True, False]
    gaps = [float(str(b["time"])) - float(str(a["time"])) for a, b in itertools.pairwise(puts)]
    assert all(1.95 <= gap <= 2.6 for gap in gaps), gaps
    assert report.retries == 3 and report.records == 100


def test_only_failed_records_are_resent_R1_5(change_topic: DataHubConfig, emulator: DataHubEmulator) -> None:
    # given DataHub rejects about 30 % of the records in every put, each record at most twice
    set_faults(emulator.endpoint, put_record_failure_rate=0.3, put_record_max_failures=2, seed=11)
    events = change_stream(400, rows=400)  # one change per row: a single wave
    report = producer(change_topic, interval=0.05).send(events)
    puts = put_log(emulator.endpoint)
    # then each retry carries exactly the records the previous try had rejected
    assert len(puts) == 1 + report.retries
    for previous, retry in itertools.pairwise(puts):
        assert retry["records"] == previous["failed"]
    assert puts[-1]["failed"] == 0
    delivered = [e for shard in read_back(change_topic).values() for e in shard]
    assert sorted(e.event_id for e in delivered) == sorted(e.event_id for e in events)  # none twice


def test_exhausted_retries_raise_and_never_drop_or_skip_R1_5(
    change_topic: DataHubConfig, emulator: DataHubEmulator
) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    try:
        set_faults(emulator.endpoint, fail_next_puts=4)  # one more than the retry budget
        with pytest.raises(DeliveryError, match="did not accept 100 records after 3 retries") as failed:
            producer(change_topic, interval=0.05).send(change_stream(100, rows=100))
    finally:
        setup_logging()
    assert (failed.value.delivered, failed.value.undelivered) == (0, 100)
    assert len(put_log(emulator.endpoint)) == 4
    events = [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events.count("datahub.put_failed") == 4
    assert events.count("datahub.retries_exhausted") == 1


def test_a_failure_in_a_later_wave_reports_the_delivered_prefix(
    change_topic: DataHubConfig, emulator: DataHubEmulator
) -> None:
    # given a hot row changed 5 times: five waves, one request each
    events = change_stream(5, rows=1)
    sender = producer(change_topic, interval=0.01)
    sender.send(events[:2])
    set_faults(emulator.endpoint, fail_next_puts=4)
    with pytest.raises(DeliveryError) as failed:
        sender.send(events[2:])
    # then nothing after the failed change was sent: the row's stored history is a clean prefix
    assert failed.value.delivered == 0
    delivered = [e for shard in read_back(change_topic).values() for e in shard]
    assert [e.source.position for e in delivered] == [e.source.position for e in events[:2]]


def test_per_row_order_holds_under_concurrent_producers_and_failures_R9_4(
    change_topic: DataHubConfig, emulator: DataHubEmulator
) -> None:
    # given 4 producers, each owning its own table, and DataHub rejecting 30 % of records (each at most twice)
    set_faults(emulator.endpoint, put_record_failure_rate=0.3, put_record_max_failures=2, seed=5)
    streams = [change_stream(600, rows=40, table=f"T{i}", seed=i) for i in range(4)]
    errors: list[BaseException] = []

    def run(events: list[ChangeEvent]) -> None:
        try:
            sender = producer(change_topic, interval=0.01, batch_size=100)
            for start in range(0, len(events), 150):
                sender.send(events[start : start + 150])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    delivered = [e for shard in read_back(change_topic).values() for e in shard]
    expected = [e for s in streams for e in s]
    assert len(delivered) == len(expected)  # nothing lost, nothing twice
    assert per_row(delivered) == per_row(expected)


def test_connection_refused_is_retried_until_datahub_is_back_R1_5(
    change_topic: DataHubConfig, emulator: DataHubEmulator
) -> None:
    sender = producer(change_topic, interval=1.0)
    emulator.refuse_connections(1.5)
    report = sender.send(change_stream(50, rows=50))
    assert report.records == 50
    assert 1 <= report.retries <= 3


def test_fast_records_encode_exactly_like_validated_ones() -> None:
    from datahub.models import TupleRecord
    from datahub.models.params import PutPBRecordsRequestParams, PutRecordsRequestParams

    from obflow.datahub.client import change_topic_schema
    from obflow.datahub.producer import _tuple_record

    schema = change_topic_schema()
    values = [e.to_datahub_values() for e in change_stream(50, rows=10)]
    fast = [_tuple_record(schema, v) for v in values]
    checked = [TupleRecord(schema=schema, values=v) for v in values]
    for params in (PutPBRecordsRequestParams, PutRecordsRequestParams):
        assert params(fast).content() == params(checked).content()
