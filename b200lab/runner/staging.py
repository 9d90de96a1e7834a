"""Parent side, after validation and before launch: what the ranks need from places they may not
reach, fetched into the job dir. A workload whose config class declares ``reads_checkpoint``
(``workload=eval``) gets ``workload.options.checkpoint`` resolved here: an MLflow run's
checkpoint artifact (downloaded from a remote store), a folder or file, a GPT-2 folder, or
``train`` (the reference training run, b200lab/runner/reference_checkpoint.py); the model it
holds is compared with ``model.*``, and the resolution is written for the ranks
(b200lab/workloads/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

from b200lab.records.tracking import resolve_uri
from b200lab.workloads import checkpoint
from b200lab.workloads.checkpoint import (
    ARTIFACT_PATH,
    KEY,
    RUN_ID,
    WEIGHTS,
    CheckpointError,
    is_gpt2,
)


def stage_inputs(cfg, spec: type, job_dir: Path) -> list[str]:
    """Problems with what the workload (config class ``spec``) reads from outside the job, as
    configuration errors (empty when everything is staged)."""
    if not spec.reads_checkpoint:
        return []
    source = cfg.workload.options.checkpoint
    uri = resolve_uri(cfg.tracking.uri)
    if source == "train":
        from b200lab.runner import reference_checkpoint

        try:
            source = f"run:{reference_checkpoint.ensure(cfg, uri, job_dir)}"
        except RuntimeError as exc:
            return [f"{KEY}=train: {exc}"]
    try:
        info = locate(source, uri, job_dir / "inputs")
        problems = checkpoint.check_model(checkpoint.model_fields(Path(info["path"])), cfg.model, info["source"])
    except CheckpointError as exc:
        return [str(exc)]
    except (ValueError, OSError) as exc:  # an unreadable checkpoint.json or GPT-2 config
        return [f"{KEY}={source}: {exc}"]
    if not problems:
        checkpoint.write_staged(job_dir, info)
    return problems


def locate(source: str | None, tracking_uri: str, download_dir: Path) -> dict:
    """Parent side: {source, path, run_id} for a source, or CheckpointError naming the key."""
    if not source:
        raise CheckpointError(
            f"{KEY} is not set: name a checkpoint folder or file, a GPT-2 folder, or an MLflow run "
            "(run:<id>) whose training saved one (workload.options.save_checkpoint=true)"
        )
    source = str(source)
    path = Path(source).expanduser()
    match = RUN_ID.fullmatch(source)
    if match and (match.group(1) or not path.exists()):
        run_id = match.group(2)
        return {
            "source": source,
            "path": str(_run_checkpoint(source, run_id, tracking_uri, download_dir)),
            "run_id": run_id,
        }
    if not path.exists():
        raise CheckpointError(f"{KEY}={source}: no such file or folder (an MLflow run is run:<32-hex id>)")
    if path.is_dir() and not (is_gpt2(path) or (path / WEIGHTS).is_file()):
        raise CheckpointError(
            f"{KEY}={source}: the folder holds neither {WEIGHTS} (a b200lab checkpoint) nor "
            "config.json with *.safetensors (GPT-2 weights)"
        )
    return {"source": source, "path": str(path.absolute()), "run_id": None}


def _run_checkpoint(source: str, run_id: str, tracking_uri: str, download_dir: Path) -> Path:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
        listed = [f.path for f in client.list_artifacts(run_id, ARTIFACT_PATH)]
    except MlflowException as exc:
        raise CheckpointError(
            f"{KEY}={source}: no run {run_id} in the tracking store {tracking_uri} ({str(exc).splitlines()[0]})"
        ) from None
    if f"{ARTIFACT_PATH}/{WEIGHTS}" not in listed:
        raise CheckpointError(
            f"{KEY}={source}: run {run_id} has no checkpoint artifact ({ARTIFACT_PATH}/{WEIGHTS}); "
            "train with workload.options.save_checkpoint=true"
        )
    repo = get_artifact_repository(run.info.artifact_uri)
    if isinstance(repo, LocalArtifactRepository):  # already a local folder: read in place
        return Path(repo.download_artifacts(ARTIFACT_PATH))
    download_dir.mkdir(parents=True, exist_ok=True)
    return Path(repo.download_artifacts(ARTIFACT_PATH, dst_path=str(download_dir)))
