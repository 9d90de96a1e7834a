"""Which runs a report, baseline or gate reads: results.json folders, or MLflow (an experiment,
a sweep's parent run, tags). Either way each run becomes a record shaped like results.json; from
MLflow its numbers are the run's logged metrics (``step_ms`` from the metric's history), its
config the logged params, requested/effective/env the tags (b200lab/records/tracking.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from b200lab.records import results as results_io


class SelectionError(ValueError):
    """Nothing to read, or a selection that names what does not exist (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, help="results.json files or folders holding them")
    parser.add_argument(
        "--experiment", help="read MLflow runs of this experiment (default with --parent/--tag: b200lab)"
    )
    parser.add_argument("--parent", help="a sweep's parent run id, or 'latest' (the newest sweep of the experiment)")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag (repeatable)"
    )
    parser.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def select(args: argparse.Namespace) -> tuple[list[dict], str, list[str]]:
    """(records, a sentence naming the source, problems with files that were skipped)."""
    if args.paths and (args.experiment or args.parent or args.tag):
        raise SelectionError("give results.json folders or an MLflow selection (--experiment/--parent/--tag), not both")
    if args.paths:
        files = results_io.find(args.paths)
        if not files:
            raise SelectionError(f"no results.json under {' '.join(map(str, args.paths))}")
        good, bad = results_io.read_all(files)
        return (
            [r for _, r in good],
            f"{len(good)} results.json under {', '.join(map(str, args.paths))}",
            [str(b) for b in bad],
        )
    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SelectionError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    from b200lab.records.tracking import resolve_uri

    records, source = from_mlflow(
        resolve_uri(args.uri), args.experiment or "b200lab", args.parent or ("latest" if not tags else None), tags
    )
    return records, source, []


def from_mlflow(uri: str, experiment: str, parent: str | None, tags: dict[str, str]) -> tuple[list[dict], str]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SelectionError(f"no experiment {experiment!r} in {uri}")
    filters = [f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items()]
    words = [f"experiment {experiment!r}"] + [f"{k}={v}" for k, v in tags.items()]
    if parent == "latest":
        sweeps = client.search_runs(
            [exp.experiment_id], "tags.sweep = 'true'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not sweeps:
            raise SelectionError(f"experiment {experiment!r} in {uri} holds no sweep (a parent run tagged sweep=true)")
        parent = sweeps[0].info.run_id
    if parent:
        try:
            parent_run = client.get_run(parent)
        except MlflowException as exc:
            raise SelectionError(f"no run {parent!r} in {uri} ({str(exc).splitlines()[0]})") from exc
        filters.append(f"tags.mlflow.parentRunId = '{_quote(parent)}'")
        words.append(f"sweep {parent_run.info.run_name!r} (parent run {parent})")
    found = [
        r for r in _search_all(client, exp.experiment_id, " and ".join(filters)) if r.data.tags.get("sweep") != "true"
    ]
    if not found:
        raise SelectionError(f"no run matches {', '.join(words)} in {uri}")
    records = sorted(
        (record_from_run(client, r) for r in found), key=lambda r: (r.get("sweep_id") or "", r.get("job_num", 0))
    )
    return records, f"{len(records)} MLflow runs of {', '.join(words)} in {uri}"


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _typed(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def unflatten(params: dict[str, str]) -> dict:
    tree: dict = {}
    for key, value in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = _typed(value)
    return tree


def _prefixed(tags: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tags.items() if k.startswith(prefix)}


def record_from_run(client, run) -> dict:
    tags = run.data.tags
    eff = _prefixed(tags, "effective.")
    history = (
        sorted(client.get_metric_history(run.info.run_id, "step_ms"), key=lambda m: m.step)
        if "step_ms" in run.data.metrics
        else []
    )
    metrics = {k: v for k, v in run.data.metrics.items() if not k.startswith("system/") and k != "step_ms"}
    env_keys = (
        "device",
        "gpu",
        "gpu_count",
        "driver",
        "cuda",
        "torch",
        "python",
        "transformer_engine",
        "hostname",
        "git_sha",
    )
    return {
        "status": tags.get("status", "?"),
        "error": tags.get("error"),
        "point": tags.get("point") or run.info.run_name,
        "job_num": int(tags.get("job_num", 0) or 0),
        "sweep_id": tags.get("mlflow.parentRunId"),
        "requested": _prefixed(tags, "requested."),
        "effective": {
            "precision": {
                "compute_dtype": eff.get("precision"),
                "reason": eff.get("precision_reason"),
                "recipe": eff.get("fp8_recipe"),
            },
            "attention": {
                "name": eff.get("attention"),
                "kernel": eff.get("attention_kernel"),
                "reason": eff.get("attention_reason"),
            },
            **({"compiled": eff["compiled"] == "True"} if "compiled" in eff else {}),
        },
        "config": unflatten(run.data.params),
        "env": {k: _typed(tags[k]) if k == "gpu_count" else tags[k] for k in env_keys if k in tags},
        "metrics": metrics,
        "step_ms": [m.value for m in history],
        "mlflow": {
            "tracking_uri": client.tracking_uri if hasattr(client, "tracking_uri") else None,
            "experiment_id": run.info.experiment_id,
            "run_id": run.info.run_id,
            "parent_run_id": tags.get("mlflow.parentRunId"),
            "run_name": run.info.run_name,
            "synced": True,
        },
    }
