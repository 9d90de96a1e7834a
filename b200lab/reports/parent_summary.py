"""A sweep's parent run as its summary, written when the sweep ends:

- the parent named by what the sweep varied (``seq=1k,2k model=tiny``, the preset first), each
  child by what varied and what ran, no two alike (b200lab/records/points.py);
- the description (MLflow's note, ``mlflow.note.content``): the sweep's tables with each point
  linked to its run;
- headline metrics on the parent (``tokens_per_s_max``, ``tokens_per_s_min``, ...), so the chart
  view and the runs table have the sweep's range;
- the same metrics as series over the swept value (``tokens_per_s/precision:bf16`` at step = seq.len,
  one series per value of the other axes), so the parent's Model metrics tab draws a line per
  group with no setup;
- the report (report.md, report.html, line charts) under the parent's ``report/`` artifacts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from b200lab.records.points import overrides, shared_params, short_keys, sweep_name, unique_names, varied_keys
from b200lab.reports import sweep_report

HEADLINE = (
    "tokens_per_s",
    "tflops",
    "mfu",
    "step_ms_p50",
    "peak_mem_allocated_gb",
    "tokens_per_j",
    "gemm_tflops",
    "hbm_gbps",
    "allreduce_busbw_gbps",
    "perplexity",
)
NOTE_LIMIT = 7900  # MLflow keeps tag values up to 8000 characters
NOT_IN_METRIC_NAMES = re.compile(r"[^/\w.\- :]")  # MLflow's metric names allow only these characters


def headline_metrics(records: list[dict]) -> dict[str, float]:
    """``{metric}_min`` and ``{metric}_max`` over the sweep's ok points, and how many were ok."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: dict[str, float] = {"n_points_ok": float(len(ok))}
    for metric in HEADLINE:
        values = [
            float(r["metrics"][metric]) for r in ok if isinstance((r.get("metrics") or {}).get(metric), (int, float))
        ]
        if values:
            out[f"{metric}_min"], out[f"{metric}_max"] = min(values), max(values)
    return out


def _number(value) -> float | None:
    if isinstance(value, bool):  # a switch is a group, not an axis
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def axis_values(records: list[dict], key: str) -> tuple[str, list[float]] | None:
    """The numbers a swept key stands for, one per record, and what they are: the config value at
    ``key`` (``seq.len``, ``workload.options.qps``), the first number that varies inside a swept
    group, in the group's order (``seq=1k,2k`` -> ``seq.len``, though ``seq.batch`` varies too), or
    the override itself; None when a record has none."""
    from b200lab.records.tracking import flatten

    flats = [flatten(r.get("config") or {}) for r in records]
    if all(_number(f.get(key)) is not None for f in flats):
        return key, [_number(f[key]) for f in flats]
    inside = [k for k in flats[0] if k.startswith(key + ".")]  # the group's own order: seq.len before seq.batch
    varying = [
        k for k in inside if all(_number(f.get(k)) is not None for f in flats) and len({f[k] for f in flats}) > 1
    ]
    if varying:
        return varying[0], [_number(f[varying[0]]) for f in flats]
    typed = [_number(overrides(r.get("point")).get(key)) for r in records]
    return (key, typed) if all(v is not None for v in typed) else None


def series(records: list[dict]) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    """The headline metrics of the ok points as ``{name: [(step, value), ...]}`` over the first
    swept key that is a number, one series per value of the other swept keys; and tags that say
    what the steps are. Non-integer values (``qps=0.5``) step by their rank, mapped in a tag."""
    ok = [r for r in records if r.get("status") == "ok"]
    keys = varied_keys(ok)
    found = next(((k, a) for k in keys if (a := axis_values(ok, k))), None)
    if len(ok) < 2 or found is None:
        return {}, {}
    key, (what, xs) = found
    others = [k for k in keys if k != key]
    names = {k: shown or k for k, shown in short_keys(others).items()}  # precision:bf16, qps:4
    ordered = sorted(set(xs))
    integral = all(x.is_integer() for x in xs)
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r, x in zip(ok, xs):
        group = " ".join(f"{names[k]}:{overrides(r.get('point')).get(k, '-')}" for k in others)
        for metric in HEADLINE:
            value = _number((r.get("metrics") or {}).get(metric))
            if value is not None:
                name = NOT_IN_METRIC_NAMES.sub("_", f"{metric}/{group}" if group else metric)
                out[name].append((int(x) if integral else ordered.index(x), value))
    tags = {
        "series.step": what
        if integral
        else f"rank of {what}: " + ", ".join(f"{i}={x:g}" for i, x in enumerate(ordered))
    }
    if others:
        tags["series.groups"] = " ".join(names[k] for k in others)
    return dict(out), tags


def note(records: list[dict], names: list[str], title: str, status: str) -> str:
    """The sweep's tables in Markdown, each point linked to its run; trimmed to what MLflow keeps."""

    def link(r: dict) -> str:
        m = r.get("mlflow") or {}
        return (
            # the query keeps MLflow 3 in its Model training view, which a bare link leaves for GenAI
            f"[{m['run_id'][:8]}](#/experiments/{m.get('experiment_id')}/runs/{m['run_id']}?workflowType=machine_learning)"
            if m.get("run_id")
            else "not in MLflow"
        )

    head = (
        f"**{title}**: {len(records)} points, status {status}. Full report with line charts: artifacts "
        "`report/report.html`.\n\n"
    )
    parts = sweep_report.sections(records, link, names=names)
    text = head + sweep_report.markdown(parts)
    if len(text) > NOTE_LIMIT:  # the metrics first: drop the requested-vs-effective table (it is in the report)
        text = head + sweep_report.markdown(
            [p for p in parts if p[0] != "table" or "precision (asked → ran)" not in p[1].header]
        )
    if len(text) > NOTE_LIMIT:
        text = text[: NOTE_LIMIT - 60].rsplit("\n", 1)[0] + "\n\n(cut to fit MLflow's note; see report/report.md)"
    return text


def publish(
    tracker,
    parent_run_id: str,
    records: list[dict],
    sweep_dir: Path,
    preset: str | None,
    typed: str | None,
    status: str,
) -> list[Path]:
    """Names, note and headline metrics on the runs; returns the report folder to log on the parent."""
    names = unique_names(records)
    for r, name in zip(records, names):
        run_id = (r.get("mlflow") or {}).get("run_id")
        if run_id:
            tracker.rename(run_id, name)
    title = sweep_name(records, preset, typed)
    tracker.rename(parent_run_id, title)
    have = tracker.client.get_run(parent_run_id).data  # a resumed or re-synced sweep: what it logged before
    _log_shared_params(tracker, parent_run_id, records, have.params)
    tracker.log_metrics(parent_run_id, headline_metrics(records))
    lines, about = series(records)
    lines = {k: v for k, v in lines.items() if k not in have.metrics}  # a series is logged once
    if lines:
        tracker.log_metrics(parent_run_id, {}, curves={k: [list(p) for p in v] for k, v in lines.items()})
        tracker.set_tags(parent_run_id, about)
    tracker.client.set_tag(parent_run_id, "mlflow.note.content", note(records, names, title, status))
    report_dir = Path(sweep_dir) / "report"
    sweep_report.write(records, report_dir, title, f"sweep {sweep_dir} (parent run {parent_run_id})")
    return [report_dir]


def _log_shared_params(tracker, parent_run_id: str, records: list[dict], have: dict) -> None:
    """The settings every point shares, as the parent's parameters (a resumed sweep may share fewer:
    parameters the parent has already are left as they are, MLflow does not change one)."""
    from b200lab.records.tracking import flatten

    shared = shared_params([flatten(r["config"]) for r in records if r.get("config")])
    tracker.log_params(parent_run_id, {k: v for k, v in shared.items() if k not in have})
