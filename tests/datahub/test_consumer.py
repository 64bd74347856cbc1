"""Consumer helpers the Flink source uses: resume from a stored sequence, bounded batches (R2.1)."""

from __future__ import annotations

from obflow.config import DataHubConfig
from obflow.datahub.client import make_client
from obflow.datahub.consumer import ShardReader, decode_events, decode_payloads
from obflow.datahub.producer import Producer
from obflow_dev.sample import change_stream


def test_reader_resumes_from_a_stored_sequence_without_skip_or_repeat(change_topic: DataHubConfig) -> None:
    client = make_client(change_topic)
    Producer(client, change_topic.project, change_topic.topic, change_topic.retry).send(change_stream(900, rows=900))
    for shard in ("0", "1", "2", "3"):
        whole = [
            r.event_id
            for b in ShardReader(client, change_topic.project, change_topic.topic, shard).read_all()
            for r in b.records
        ]
        # read a first part, keep next_sequence (as a checkpoint would), then resume with a new reader
        first = ShardReader(client, change_topic.project, change_topic.topic, shard)
        part = first.fetch(limit=37)
        resumed = ShardReader(client, change_topic.project, change_topic.topic, shard, next_sequence=part.next_sequence)
        rest = [r.event_id for b in resumed.read_all(limit=50) for r in b.records]
        assert [r.event_id for r in part.records] + rest == whole
        assert part.next_sequence == 37 and len(whole) > 100


def test_fetch_is_bounded_and_reports_the_resume_point(change_topic: DataHubConfig) -> None:
    client = make_client(change_topic)
    Producer(client, change_topic.project, change_topic.topic, change_topic.retry).send(change_stream(400, rows=400))
    reader = ShardReader(client, change_topic.project, change_topic.topic, "0")
    batch = reader.fetch(limit=10)
    assert len(batch.records) == 10
    assert [r.sequence for r in batch.records] == list(range(10))
    assert batch.next_sequence == 10
    assert reader.fetch(limit=10).records[0].sequence == 10


def test_decoded_events_equal_what_was_sent(change_topic: DataHubConfig) -> None:
    client = make_client(change_topic)
    events = change_stream(300, rows=30)
    Producer(client, change_topic.project, change_topic.topic, change_topic.retry).send(events)
    decoded = []
    fast = []
    for shard in ("0", "1", "2", "3"):
        for batch in ShardReader(client, change_topic.project, change_topic.topic, shard).read_all():
            decoded += decode_events(batch.records)
            fast += decode_payloads(batch.records)
    assert sorted(decoded, key=lambda e: int(e.source.position)) == events
    assert sorted(e["event_id"] for e in fast) == sorted(e.event_id for e in events)


def test_an_empty_shard_yields_empty_batches_then_new_records(change_topic: DataHubConfig) -> None:
    client = make_client(change_topic)
    reader = ShardReader(client, change_topic.project, change_topic.topic, "2")
    assert reader.fetch().records == []
    Producer(client, change_topic.project, change_topic.topic, change_topic.retry).send(change_stream(200, rows=200))
    assert len(reader.fetch().records) > 0
