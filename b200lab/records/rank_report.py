"""The rank report (``ranks/rankN.json``): what one rank hands the parent, typed and versioned.

The worker writes it through :meth:`RankReport.to_json_dict`; the aggregator reads it back
with :meth:`RankReport.from_dict`, which names the file and the field that is wrong instead of
failing later on a missing key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 2
STATUSES = ("ok", "oom", "error", "interrupted")


class RankReportError(ValueError):
    pass


@dataclass
class RankReport:
    rank: int
    world_size: int
    status: str
    error: str | None
    data_shard: int  # ranks with the same shard processed the same samples
    tokens_per_step: int = 0
    flops_per_step: float = 0  # this rank's share of the model FLOPs per step
    warmup_ms: list = field(default_factory=list)
    step_ms: list = field(default_factory=list)
    span_s: float = 0.0  # first timed step's start to last timed step's end, all trials
    trial_steps: list = field(default_factory=list)
    trial_spans: list = field(default_factory=list)
    effective: dict = field(default_factory=dict)
    metric_rules: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)  # name -> [[step, value], ...] (Workload.curves)
    energy: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # rank 0 only
    profile: dict = field(default_factory=dict)
    traceback: str | None = None
    partial: bool = False  # a checkpoint written while timing (the rank did not finish)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Any, source: str = "rank report") -> RankReport:
        if not isinstance(data, dict):
            raise RankReportError(f"{source}: not a JSON object")
        names = {f.name: f for f in dataclasses.fields(cls)}
        missing = [
            n
            for n, f in names.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in data
        ]
        if missing:
            raise RankReportError(f"{source}: missing {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        report = cls(**kwargs)
        checks = {
            "rank": int,
            "world_size": int,
            "data_shard": int,
            "tokens_per_step": int,
            "flops_per_step": (int, float),
            "span_s": (int, float),
            "step_ms": list,
            "warmup_ms": list,
            "metrics": dict,
            "effective": dict,
        }
        for key, types in checks.items():
            value = getattr(report, key)
            if isinstance(value, bool) or not isinstance(value, types):
                raise RankReportError(f"{source}: {key}={value!r} is not {getattr(types, '__name__', 'a number')}")
        if report.status not in STATUSES:
            raise RankReportError(f"{source}: status={report.status!r} is not one of {', '.join(STATUSES)}")
        if report.schema_version > SCHEMA_VERSION:
            raise RankReportError(
                f"{source}: schema_version {report.schema_version} is newer than this b200lab reads ({SCHEMA_VERSION})"
            )
        return report

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)
