"""The autoscaler's pure decision function on recorded metric series (R5.4, R5.6, R6.2, R6.4, R6.7)."""

from __future__ import annotations

from obflow_operator.autoscaler import AutoscalerState, Limits, Sample, SampleHistory, decide
from obflow_operator.spec import AutoscalerSpec

SPEC = AutoscalerSpec(
    enabled=True,
    target_utilization=0.7,
    utilization_boundary=0.1,
    min_parallelism=2,
    max_parallelism=32,
    stabilization_window="5m",
    scale_down_delay="15m",
    catch_up_duration="5m",
)
LIMITS = Limits(job_max_parallelism=128, shards=16)


def series(
    start: float,
    seconds: float,
    parallelism: int,
    rate: float,
    busy: float,
    lag: float = 0.0,
    lag_growth: float = 0.0,
    step: float = 10.0,
) -> list[Sample]:
    """Samples every ``step`` seconds as the observer records them from Flink's REST metrics."""
    count = int(seconds / step) + 1
    return [
        Sample(start + i * step, parallelism, rate, busy, max(0.0, busy - 0.5), lag + lag_growth * i * step)
        for i in range(count)
    ]


def test_steady_load_at_the_target_changes_nothing() -> None:
    decision = decide(series(0, 300, 4, 4000, 0.72), SPEC, LIMITS, AutoscalerState(), now=300)
    assert decision.action == "none" and decision.target == 4
    assert "within 70% ± 10%" in decision.reason


def test_rising_load_scales_up_at_once_to_what_the_true_rate_needs_R5_4_R6_2_R6_4() -> None:
    # 4 subtasks 95 % busy processing 4,000 rec/s: 1,053 rec/s per busy subtask; at 70 % that is 5.4
    decision = decide(series(0, 300, 4, 4000, 0.95), SPEC, LIMITS, AutoscalerState(), now=300)
    assert decision.action == "up" and decision.target == 6
    assert decision.numbers["true_rate_per_subtask"] == 1052.63
    assert decision.high_load  # above 80 %: the condition and metric alerting uses (R5.6)
    assert "scale up: 4000 rec/s incoming" in decision.reason
    assert decision.state.last_rescale_time == 300


def test_a_growing_lag_adds_what_working_it_off_takes() -> None:
    # processed 4,000 rec/s while lag grows 0.25 s per second: input is 5,000 rec/s
    samples = series(0, 300, 4, 4000, 0.75, lag=10, lag_growth=0.25)
    decision = decide(samples, SPEC, LIMITS, AutoscalerState(), now=300)
    assert decision.action == "up"
    assert decision.numbers["incoming_per_second"] == 5000.0
    # backlog 85 s x 5,000 rec/s worked off in 300 s adds 1,417 rec/s: (5,000 + 1,417) / (1,333 x 0.7) = 6.9
    assert decision.target == 7


def test_no_decision_until_a_full_window_after_a_rescale() -> None:
    state = AutoscalerState(last_rescale_time=200)
    decision = decide(series(0, 300, 4, 4000, 0.95), SPEC, LIMITS, state, now=300)
    assert decision.action == "none" and "rescaled 100s ago" in decision.reason
    only_new = decide(series(0, 600, 4, 4000, 0.95)[-10:], SPEC, LIMITS, AutoscalerState(), now=600)
    assert only_new.action == "none" and "collecting metrics" in only_new.reason


def test_scale_down_waits_for_the_delay_and_keeps_the_highest_wanted_R6_7() -> None:
    state = AutoscalerState()
    lull = series(0, 300, 8, 2000, 0.25)
    first = decide(lull, SPEC, LIMITS, state, now=300)
    assert first.action == "none" and "would scale down to 3; waiting 900s more" in first.reason
    # ten minutes later a little more load: 4 subtasks would be wanted
    busier = series(300, 600, 8, 2600, 0.3)
    second = decide(lull + busier, SPEC, LIMITS, first.state, now=900)
    assert second.action == "none" and second.state.highest_wanted_since == 4
    third = decide(lull + busier + series(900, 300, 8, 2000, 0.25), SPEC, LIMITS, second.state, now=1200)
    assert third.action == "down" and third.target == 4  # the highest wanted during the wait
    assert "lower wanted for 900s, the most of it 4" in third.reason


def test_a_lull_shorter_than_the_delay_never_scales_down() -> None:
    first = decide(series(0, 300, 8, 2000, 0.25), SPEC, LIMITS, AutoscalerState(), now=300)
    back = decide(series(300, 300, 8, 5600, 0.7), SPEC, LIMITS, first.state, now=600)
    assert back.action == "none" and back.state.scale_down_wanted_since is None
    later = decide(series(600, 600, 8, 2000, 0.25), SPEC, LIMITS, back.state, now=1200)
    assert later.action == "none"  # the wait starts over


def test_targets_stay_within_the_bounds_and_the_shard_count() -> None:
    flood = series(0, 300, 8, 80_000, 0.99)  # wants 12
    few_shards = decide(flood, SPEC, Limits(job_max_parallelism=128, shards=10), AutoscalerState(), now=300)
    assert few_shards.target == 10 and "capped by datahub.shards" in few_shards.reason
    narrow = SPEC.model_copy(update={"max_parallelism": 9})
    capped = decide(flood, narrow, LIMITS, AutoscalerState(), now=300)
    assert capped.target == 9 and "capped by autoscaler.maxParallelism = 9" in capped.reason
    idle = decide(series(0, 300, 4, 0, 0.0), SPEC, LIMITS, AutoscalerState(), now=300)
    assert idle.state.highest_wanted_since == 2  # never below minParallelism


def test_without_metrics_nothing_happens() -> None:
    decision = decide([], SPEC, LIMITS, AutoscalerState(), now=0)
    assert decision.action == "none" and decision.reason == "no metrics yet"


def test_the_taskmanager_ceiling_bounds_the_target() -> None:
    limits = Limits(job_max_parallelism=128, shards=64, capacity=6)  # 3 TaskManagers x 2 slots at most
    samples = series(0, 300, 4, 4000, 0.99, lag=10, lag_growth=1.0)  # input twice what is processed: wants 12+
    decision = decide(samples, SPEC, limits, AutoscalerState(), now=300)
    assert decision.action == "up" and decision.target == 6
    assert "capped by flink.taskManager.maxReplicas x slots = 6" in decision.reason


def test_the_sample_history_keeps_what_a_decision_needs_and_forgets_gone_pipelines() -> None:
    history = SampleHistory()
    for second in range(0, 100, 10):
        kept = history.add("a", Sample(second, 2, 100, 0.5, 0.0, 0.0), keep_seconds=30)
    assert [s.time for s in kept] == [60, 70, 80, 90]
    history.add("b", Sample(0, 2, 100, 0.5, 0.0, 0.0), keep_seconds=30)
    history.keep_only({"b"})
    assert history.add("a", Sample(100, 2, 1, 0.5, 0.0, 0.0), keep_seconds=30) == [Sample(100, 2, 1, 0.5, 0.0, 0.0)]
