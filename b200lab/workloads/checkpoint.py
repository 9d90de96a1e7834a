"""Checkpoints: what ``train`` saves and ``eval`` loads (the parent finds one by path or MLflow run:
b200lab/runner/staging.py).

A checkpoint is a folder: ``model.pt`` (the plain state dict, in the dtype forward ran with, read
back with ``weights_only``) and ``checkpoint.json`` (the model config it was built from, the data
it was trained on, the precision, the steps). ``train`` writes it under
``<job_dir>/artifacts/checkpoint/``, so the run's MLflow artifacts hold it at
``artifacts/checkpoint``. A source is one of:

- ``run:<id>`` or a bare 32-hex MLflow run id: resolved in the parent, through the job's own
  tracking store, to that run's ``artifacts/checkpoint`` (a local store's folder is read where it
  is; a remote store's is downloaded into ``<job_dir>/inputs/``);
- a checkpoint folder, or a ``.pt`` state-dict file (a ``checkpoint.json`` beside it is read);
- a Hugging Face GPT-2 folder (``config.json`` + ``*.safetensors``), read by
  b200lab/models/gpt/gpt2_weights.py.

The model a checkpoint holds must be the configured one: every field it records is compared
with ``model.*`` and a difference is refused, naming the keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FOLDER = "checkpoint"
WEIGHTS = "model.pt"
META = "checkpoint.json"
ARTIFACT_PATH = f"artifacts/{FOLDER}"
KEY = "workload.options.checkpoint"
RUN_ID = re.compile(r"(run:)?([0-9a-f]{32})")
STAGED = "inputs/checkpoint.json"  # under the job dir: the parent's resolution, read by the ranks
IGNORED_FIELDS = ("name",)  # a preset's label, not the architecture


class CheckpointError(ValueError):
    """A checkpoint source that cannot be used; the message names the key."""


def save(folder: Path, state_dict: dict, meta: dict) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, folder / WEIGHTS)
    (folder / META).write_text(
        json.dumps({"format": "b200lab-checkpoint", "version": 1, **meta}, indent=2, default=str)
    )
    return folder


def is_gpt2(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def model_fields(path: Path) -> dict:
    """The model config a checkpoint records (GPT-2: the fields its config.json implies)."""
    if is_gpt2(path):
        from b200lab.models.gpt.gpt2_weights import model_fields as gpt2_fields

        return gpt2_fields(json.loads((path / "config.json").read_text()), path)
    meta = _meta(path)
    return dict(meta.get("model") or {})


def _meta(path: Path) -> dict:
    file = (path if path.is_dir() else path.parent) / META
    return json.loads(file.read_text()) if file.is_file() else {}


def check_model(fields: dict, model_cfg, source: str) -> list[str]:
    """Messages for each field the checkpoint's model and ``model.*`` disagree on."""
    diffs = [
        f"model.{k}={model_cfg.get(k)!r} (checkpoint: {v!r})"
        for k, v in sorted(fields.items())
        if k not in IGNORED_FIELDS and model_cfg.get(k) != v
    ]
    if not diffs:
        return []
    return [
        f"{KEY}={source} holds another model than the configured one: {', '.join(diffs)}; "
        "choose the matching model option or set those keys"
    ]


def load(path: Path) -> tuple[dict, dict, dict]:
    """(model fields, state dict on the CPU, the checkpoint's record) of a located checkpoint."""
    if is_gpt2(path):
        from b200lab.models.gpt.gpt2_weights import load_gpt2_dir

        fields, state = load_gpt2_dir(path)
        return fields, state, {"format": "gpt2-safetensors"}
    import torch

    meta = _meta(path)
    weights = path / WEIGHTS if path.is_dir() else path
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return dict(meta.get("model") or {}), state, meta


def write_staged(job_dir: Path, info: dict) -> None:
    path = Path(job_dir) / STAGED
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))


def read_staged(job_dir: Path | None) -> dict:
    path = Path(job_dir or ".") / STAGED
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the parent resolves {KEY} before launching the ranks (run through b200lab)"
        )
    return json.loads(path.read_text())
