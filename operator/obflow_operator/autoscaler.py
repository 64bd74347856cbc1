"""The autoscaler's decision: a pure function of recorded metric samples (FLIP-271's idea).

The job's true processing rate per subtask is what one subtask processes per *busy* second:
``records in per second / (busy ratio * parallelism)``. The parallelism that carries the incoming rate,
plus working off the current lag within ``catchUpDuration``, at ``targetUtilization`` busy is

    ceil((incoming rate + backlog / catch-up duration) / (true rate per subtask * target utilization))

bounded by ``minParallelism``/``maxParallelism``, the job's ``maxParallelism`` and the number of DataHub
shards (a shard is read by one subtask; more subtasks than shards would idle). Scale-up happens as soon
as the metrics window after the last rescale is full; scale-down only when a lower parallelism has
been wanted for ``scaleDownDelay``, and then to the highest parallelism wanted during that time, so a
short lull never shrinks the job. Every decision carries its numbers and the reason in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from obflow_operator.spec import AutoscalerSpec, DataPipelineSpec, with_parallelism
from obflow_operator.status import DataPipelineStatus

MIN_BUSY_RATIO = 0.02  # below this the true rate is too noisy to extrapolate from


@dataclass(frozen=True)
class Sample:
    """One observation of the job's reading stage (summed or averaged over its subtasks)."""

    time: float  # seconds (monotonic or epoch, consistently)
    parallelism: int
    records_in_per_second: float  # sum over subtasks
    busy_ratio: float  # mean busy time per second, 0..1
    backpressured_ratio: float  # mean back-pressured time per second, 0..1
    lag_seconds: float  # how far the newest record read is behind the newest record written


@dataclass(frozen=True)
class AutoscalerState:
    """What must survive between decisions (kept in the pipeline's status)."""

    last_rescale_time: float | None = None
    scale_down_wanted_since: float | None = None
    highest_wanted_since: int | None = None  # the highest parallelism wanted while scale-down waits


@dataclass(frozen=True)
class Decision:
    action: Literal["none", "up", "down"]
    target: int
    reason: str
    state: AutoscalerState
    high_load: bool = False
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Bounds that come from elsewhere in the spec."""

    job_max_parallelism: int
    shards: int
    capacity: int = 2**15  # TaskManager maxReplicas x slots
    load_alert: float = 0.8


def limits_for(spec: DataPipelineSpec) -> Limits:
    tm = spec.flink.task_manager
    return Limits(spec.flink.max_parallelism, spec.datahub.shards, tm.max_replicas * tm.slots, spec.alerts.load)


class SampleHistory:
    """The samples of every pipeline, oldest first, as long as a decision needs them. Kept in memory:
    after an operator restart the window fills again before the next decision (a restart only delays)."""

    def __init__(self) -> None:
        self._samples: dict[str, list[Sample]] = {}

    def add(self, key: str, sample: Sample, keep_seconds: float) -> list[Sample]:
        kept = [s for s in self._samples.get(key, []) if s.time >= sample.time - keep_seconds]
        self._samples[key] = [*kept, sample]
        return self._samples[key]

    def keep_only(self, keys: set[str]) -> None:
        """Forget the samples of pipelines that are gone."""
        for key in set(self._samples) - keys:
            del self._samples[key]


def decide(samples: list[Sample], spec: AutoscalerSpec, limits: Limits, state: AutoscalerState, now: float) -> Decision:
    """The parallelism the job should run at, given ``samples`` (oldest first)."""
    current = samples[-1].parallelism if samples else 0
    window = spec.seconds("stabilization_window")
    since = max(now - window, state.last_rescale_time or -math.inf)
    recent = [s for s in samples if s.time >= since and s.parallelism == current]

    def hold(reason: str, numbers: dict[str, float] | None = None, high_load: bool = False) -> Decision:
        return Decision("none", current, reason, state, high_load, numbers or {})

    if not samples:
        return hold("no metrics yet")
    if state.last_rescale_time is not None and now - state.last_rescale_time < window:
        return hold(f"rescaled {now - state.last_rescale_time:.0f}s ago; waiting for a full {window:.0f}s window")
    if not recent or recent[-1].time - recent[0].time < window * 0.8:
        return hold(f"collecting metrics: {len(recent)} samples, need {window:.0f}s of them")

    busy = sum(s.busy_ratio for s in recent) / len(recent)
    processed = sum(s.records_in_per_second for s in recent) / len(recent)
    lag_growth = (recent[-1].lag_seconds - recent[0].lag_seconds) / (recent[-1].time - recent[0].time)
    # lag growing by g seconds per second means input arrives (1 + g) times faster than it is processed
    incoming = processed * max(0.0, 1.0 + lag_growth)
    backlog = recent[-1].lag_seconds * incoming
    catch_up = backlog / spec.seconds("catch_up_duration")
    high_load = busy > limits.load_alert
    numbers = {
        "parallelism": float(current),
        "busy_ratio": round(busy, 4),
        "backpressured_ratio": round(sum(s.backpressured_ratio for s in recent) / len(recent), 4),
        "records_in_per_second": round(processed, 2),
        "incoming_per_second": round(incoming, 2),
        "lag_seconds": round(recent[-1].lag_seconds, 2),
    }
    if busy < MIN_BUSY_RATIO:
        wanted = spec.min_parallelism
        numbers["true_rate_per_subtask"] = math.inf
        why = f"busy {busy:.1%}: next to idle"
    else:
        true_rate = processed / (busy * current)
        needed = (incoming + catch_up) / (true_rate * spec.target_utilization)
        wanted = max(1, math.ceil(needed - 1e-9))
        numbers |= {"true_rate_per_subtask": round(true_rate, 2), "needed_parallelism": round(needed, 3)}
        why = (
            f"{incoming:.0f} rec/s incoming + {catch_up:.0f} rec/s to work off {recent[-1].lag_seconds:.0f}s of lag, "
            f"{true_rate:.0f} rec/s per busy subtask, aiming at {spec.target_utilization:.0%} busy"
        )
    bounded, bound = _bounded(wanted, spec, limits)
    numbers["target_parallelism"] = float(bounded)
    why += f" -> {bounded}{bound}"

    lagging = lag_growth > 0.05 and recent[-1].lag_seconds > 1.0
    within = abs(busy - spec.target_utilization) <= spec.utilization_boundary and not lagging
    if bounded > current and not within:
        return Decision("up", bounded, f"scale up: {why}", AutoscalerState(now), high_load, numbers)
    if bounded < current and not within and not lagging:
        return _scale_down_when_due(current, bounded, why, spec, state, now, high_load, numbers)
    if within:
        why = f"busy {busy:.0%} within {spec.target_utilization:.0%} ± {spec.utilization_boundary:.0%}"
    state = AutoscalerState(state.last_rescale_time)  # any wait for a scale-down starts over
    return Decision("none", current, f"no change: {why}", state, high_load, numbers)


def _scale_down_when_due(
    current: int,
    wanted: int,
    why: str,
    spec: AutoscalerSpec,
    state: AutoscalerState,
    now: float,
    high_load: bool,
    numbers: dict[str, float],
) -> Decision:
    since = state.scale_down_wanted_since if state.scale_down_wanted_since is not None else now
    highest = max(wanted, state.highest_wanted_since or wanted)
    waited, delay = now - since, spec.seconds("scale_down_delay")
    if waited >= delay:
        reason = f"scale down: {why} (lower wanted for {waited:.0f}s, the most of it {highest})"
        return Decision("down", highest, reason, AutoscalerState(now), high_load, numbers)
    reason = f"would scale down to {highest}; waiting {delay - waited:.0f}s more: {why}"
    return Decision(
        "none", current, reason, AutoscalerState(state.last_rescale_time, since, highest), high_load, numbers
    )


def _bounded(wanted: int, spec: AutoscalerSpec, limits: Limits) -> tuple[int, str]:
    ceilings = [
        (spec.max_parallelism, "autoscaler.maxParallelism"),
        (limits.capacity, "flink.taskManager.maxReplicas x slots"),
        (limits.job_max_parallelism, "flink.maxParallelism"),
        (limits.shards, "datahub.shards (one subtask reads a shard)"),
    ]
    ceiling, name = min(ceilings)
    if wanted > ceiling:
        return ceiling, f" (capped by {name} = {ceiling})"
    if wanted < spec.min_parallelism:
        return spec.min_parallelism, f" (raised to autoscaler.minParallelism = {spec.min_parallelism})"
    return wanted, ""


def desired_spec(spec: DataPipelineSpec, status: DataPipelineStatus) -> DataPipelineSpec:
    """``spec`` at the autoscaler's parallelism while it has one for the spec's parallelism (a parallelism
    the user sets afterwards wins)."""
    chosen = status.autoscaler
    if not spec.autoscaler.enabled or chosen.parallelism is None or chosen.spec_parallelism != spec.flink.parallelism:
        return spec
    return with_parallelism(spec, chosen.parallelism)
