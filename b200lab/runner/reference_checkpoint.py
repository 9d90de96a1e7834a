"""``workload.options.checkpoint=train``: the checkpoint an eval needs, trained once and reused.

The accuracy guard evaluates one trained model in many precisions. Rather than asking the user
to train first and paste a run id, an eval whose checkpoint is ``train`` finds, in its own
tracking store, a finished run tagged with this training's key (a hash of the model, data,
sequence and training settings and the source's git sha) and loads that run's checkpoint; when
there is none, the parent trains it first with an ordinary ``b200lab`` job (its own MLflow run,
results.json and folder outputs/reference_checkpoints/KEY, the eval's preset), then tags it.
Every eval point of a sweep therefore shares one training, and names its run id in
``effective.checkpoint.run_id``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

TAG = "b200lab.checkpoint_key"


def training_overrides(cfg) -> list[str]:
    """The command-line overrides of the training job: this eval's model, data and sequence, every
    field spelled out, and the eval's train_* options."""
    from omegaconf import OmegaConf

    opts = cfg.workload.options
    out = [
        "workload=train",
        f"model={cfg.model.name}",
        f"data={cfg.data.name}",
        f"seq={cfg.seq.name}",
        f"precision={opts.train_precision}",
        "workload.options.save_checkpoint=true",
        f"workload.steps={int(opts.train_steps)}",
        "workload.warmup_steps=0",
        "workload.min_time_s=0",
        f"workload.options.lr={float(opts.train_lr)}",
        f"seq.batch={int(opts.train_batch or cfg.seq.batch)}",
        f"seq.len={int(cfg.seq.len)}",
        f"run.device={cfg.run.device}",
        f"run.launcher={cfg.run.launcher}",
        f"run.seed={int(cfg.run.seed)}",
        f"compile={cfg.compile.name}",
        f"preset={cfg.preset}",
    ]
    for group in ("model", "data"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if key not in ("_target_", "name"):
                out.append(f"{group}.{key}={json.dumps(value) if not isinstance(value, str) else value}")
    if cfg.tracking.uri:
        out.append(f"tracking.uri={cfg.tracking.uri}")
    out.append(f"tracking.experiment={cfg.tracking.experiment}")
    return out


def key_of(overrides: list[str]) -> str:
    from b200lab.measure.environment import git_sha

    text = json.dumps(
        {
            "overrides": sorted(o for o in overrides if not o.startswith(("tracking.", "run.launcher", "preset="))),
            "git_sha": git_sha(),
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find(tracking_uri: str, experiment: str, key: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def ensure(cfg, tracking_uri: str, job_dir: Path) -> str:
    """The run id holding this eval's reference checkpoint, training it first when needed.
    Raises RuntimeError naming the training command when the training fails."""
    overrides = training_overrides(cfg)
    key = key_of(overrides)
    run_id = find(tracking_uri, cfg.tracking.experiment, key)
    if run_id:
        print(f"b200lab: checkpoint=train: reusing run {run_id} (training key {key})", flush=True)
        return run_id
    out_dir = Path("outputs") / "reference_checkpoints" / key  # beside single runs, not a point of the sweep
    command = [sys.executable, "-m", "b200lab", *overrides, f"hydra.run.dir={out_dir}", f"tracking.uri={tracking_uri}"]
    print(f"b200lab: checkpoint=train: training the reference checkpoint first ({out_dir})", flush=True)
    proc = subprocess.run(command)
    results = out_dir / "results.json"
    record = json.loads(results.read_text()) if results.is_file() else {}
    run_id = (record.get("mlflow") or {}).get("run_id")
    if proc.returncode != 0 or record.get("status") != "ok" or not run_id:
        raise RuntimeError(
            f"the reference training failed (exit {proc.returncode}, {record.get('error') or 'no results'}): "
            f"python -m b200lab {' '.join(overrides)}"
        )
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_tag(run_id, TAG, key)
    return run_id
