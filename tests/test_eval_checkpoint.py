"""Checkpoints and workload=eval: train saves one into MLflow, eval finds it by path or run id and
scores the held-out split exactly as a naive float64 loop does; GPT-2 folders load; a source that
cannot work is refused with the key named (exit 2 through the CLI)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.core.validation import validate
from b200lab.models.gpt.model import GPT
from b200lab.runner import staging
from b200lab.workloads import checkpoint
from b200lab.workloads.base import RankContext, build_model
from b200lab.workloads.config.eval import EvalConfig
from support import INLINE, compose, results_files, run_cli, runs
from tiny_models import naive_nll, write_corpus

SDPA = {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}


def float64_model(model_fields: dict, state: dict, seq_len: int) -> GPT:
    """Our GPT in float64 with the checkpoint's weights: the reference scorer."""
    model = GPT(complete("model", model_fields), SdpaAttention(complete("attention", SDPA), "cpu"))
    model.load_state_dict(state, strict=True)
    model = model.double().eval()
    model.prepare(seq_len)
    return model


def val_stream(texts: dict[str, str], val_fraction: float, max_tokens: int) -> list[int]:
    """The held-out documents (names hashing lowest), in name order, as EOD doc EOD ... EOD."""
    n_val = max(1, round(val_fraction * len(texts)))
    held_out = sorted(sorted(texts, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:n_val])
    stream = [256]
    for name in held_out:
        stream += list(texts[name].encode()) + [256]
    return stream[: max_tokens + 1]


MODEL = ["model.vocab_size=257", "model.d_model=32", "model.n_heads=2", "model.d_ff=64"]
SEQ = ["seq=short", "seq.len=32", "seq.batch=4"]


@pytest.mark.e2e
def test_train_saves_a_checkpoint_that_eval_scores_by_path_and_by_run_id(tmp_path, store):
    texts = write_corpus(tmp_path / "corpus", n_docs=12, size=(300, 600))
    data = [
        "data=text",
        f"data.path={tmp_path / 'corpus'}",
        "data.val_fraction=0.25",
        "data.val_tokens=400",
        "data.stride=12",
    ]
    train = run_cli(
        [
            "workload=train",
            *MODEL,
            *SEQ,
            *data,
            "workload.warmup_steps=1",
            "workload.steps=20",
            "workload.options.lr=3e-3",
            "workload.options.save_checkpoint=true",
            INLINE,  # what is saved and scored is the subject here, not torchrun
        ],
        tmp_path,
        store,
    )
    assert train.returncode == 0, train.output
    (trained,) = results_files(tmp_path / "outputs")
    run_id = trained["mlflow"]["run_id"]
    folder = next((tmp_path / "outputs").rglob("artifacts/checkpoint"))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"])
    assert sorted(f.path for f in client.list_artifacts(run_id, "artifacts/checkpoint")) == [
        "artifacts/checkpoint/checkpoint.json",
        "artifacts/checkpoint/model.pt",
    ]
    sources = (str(folder), f"run:{run_id}")
    # both sources in one sweep: one CLI start for the two evals
    proc = run_cli(
        [
            "-m",
            "workload=eval",
            *MODEL,
            *SEQ,
            *data,
            "workload.warmup_steps=1",
            "workload.steps=2",
            f"workload.options.checkpoint={','.join(sources)}",
            INLINE,
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    evals = {
        source: next(
            r
            for r in results_files(tmp_path / "multirun")
            if r["config"]["workload"]["name"] == "eval" and r["config"]["workload"]["options"]["checkpoint"] == source
        )
        for source in sources
    }

    meta = json.loads((folder / "checkpoint.json").read_text())
    model = float64_model(meta["model"], torch.load(folder / "model.pt", weights_only=True), 32)
    reference = naive_nll(model, val_stream(texts, 0.25, 400), 32, 12)
    # eval runs in float32 (CPU's auto precision) against a float64 reference: per-token errors of
    # ~1e-6 relative (2^-24 roundoff through two layers of 32-64-term sums); a token scored twice or
    # missed moves the mean of 400 by ~1/400 = 2.5e-3, so 1e-4 separates the two by 25x
    for source, res in evals.items():
        m = res["metrics"]
        assert m["val_tokens"] == 400 and m["val_loss"] == pytest.approx(reference, rel=1e-4), source
        assert m["perplexity"] == pytest.approx(math.exp(reference), rel=1e-4) and m["tokens_per_s"] > 0
        assert m["val_loss"] == pytest.approx(
            trained["metrics"]["val_loss"], rel=1e-6
        )  # the same weights and math as train's
        ck = res["effective"]["checkpoint"]
        assert ck["source"] == source and ck["steps"] == 21 and ck["same_corpus_and_split"] is True
    assert evals[f"run:{run_id}"]["effective"]["checkpoint"]["run_id"] == run_id
    assert evals[str(folder)]["effective"]["checkpoint"]["run_id"] is None
    eval_run = evals[f"run:{run_id}"]["mlflow"]["run_id"]
    assert client.get_run(eval_run).data.tags["checkpoint.run_id"] == run_id

    before = len(runs(store["MLFLOW_TRACKING_URI"]))
    no_checkpoint = run_cli(
        ["workload=eval", *MODEL, *SEQ, *data, f"workload.options.checkpoint={eval_run}"], tmp_path, store
    )
    assert no_checkpoint.returncode == 2, no_checkpoint.output
    assert f"workload.options.checkpoint={eval_run}: run {eval_run} has no checkpoint artifact" in no_checkpoint.stderr
    assert len(runs(store["MLFLOW_TRACKING_URI"])) == before


def _log_checkpoint(client, run_id: str, tmp_path: Path) -> None:
    folder = tmp_path / f"upload_{run_id}" / "checkpoint"
    checkpoint.save(folder, {"w": torch.randn(3, 2)}, {"model": {"d_model": 8}})
    client.log_artifacts(run_id, str(folder.parent), artifact_path="artifacts")


def test_locate_finds_a_runs_checkpoint_and_names_the_key_when_it_cannot(tmp_path, store):
    from mlflow import MlflowClient

    uri = store["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("b200lab").experiment_id
    with_ckpt, without = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    _log_checkpoint(client, with_ckpt, tmp_path)
    for source in (f"run:{with_ckpt}", with_ckpt):
        info = staging.locate(source, uri, tmp_path / "inputs")
        assert info["run_id"] == with_ckpt and (Path(info["path"]) / "model.pt").is_file()
        assert checkpoint.model_fields(Path(info["path"])) == {"d_model": 8}
    key = "workload.options.checkpoint"
    missing = "0123456789abcdef" * 2
    cases = [
        (f"run:{missing}", f"{key}=run:{missing}: no run {missing} in the tracking store"),
        (without, f"{key}={without}: run {without} has no checkpoint artifact (artifacts/checkpoint/model.pt)"),
        (None, f"{key} is not set"),
        (str(tmp_path / "nowhere"), f"{key}={tmp_path / 'nowhere'}: no such file or folder"),
        (str(tmp_path), f"{key}={tmp_path}: the folder holds neither model.pt"),
    ]
    for source, message in cases:
        with pytest.raises(checkpoint.CheckpointError) as err:
            staging.locate(source, uri, tmp_path / "inputs")
        assert message in str(err.value)


def test_check_model_names_every_differing_key():
    cfg = OmegaConf.create({"name": "tiny", "d_model": 128, "n_layers": 2, "norm_eps": 1e-5})
    assert checkpoint.check_model({"name": "other", "d_model": 128, "n_layers": 2, "norm_eps": 1e-5}, cfg, "x") == []
    (msg,) = checkpoint.check_model({"d_model": 64, "n_layers": 2, "n_heads": 4, "norm_eps": 1e-5}, cfg, "src")
    assert (
        msg.startswith("workload.options.checkpoint=src holds another model")
        and "model.d_model=128 (checkpoint: 64)" in msg
    )
    assert "model.n_heads=None (checkpoint: 4)" in msg and "n_layers" not in msg


def test_build_model_loads_a_state_dict_strictly_before_the_precision_converts(tmp_path):
    from b200lab.parallel.data_parallel import DataParallel

    cfg = compose(
        ["model.vocab_size=300", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "precision=fp64", "seq=short"]
    )
    cfg = validate(cfg, "cpu")
    cpu = torch.device("cpu")
    ctx = RankContext(cfg, cpu, DataParallel(cfg.parallelism, 0, 1, cpu))
    source = GPT(cfg.model, SdpaAttention(complete("attention", SDPA), "cpu"))  # float32 weights, fresh init
    built = build_model(ctx, training=False, state_dict=source.state_dict())
    assert all(p.dtype == torch.float64 for p in built.model.parameters())  # loaded, then converted
    for name, p in built.model.state_dict().items():
        assert torch.equal(p, source.state_dict()[name].double()), name
    partial = {k: v for k, v in source.state_dict().items() if k != "head.weight"}
    with pytest.raises(RuntimeError, match="Missing key"):
        build_model(ctx, training=False, state_dict=partial)


def write_gpt2_dir(path: Path, layers=2, d=32, heads=2, vocab=300, positions=64) -> None:
    """A random GPT-2 checkpoint in Hugging Face's names and Conv1D (in, out) layouts."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(torch.seed() % 2**31)

    def r(*shape, scale=0.05, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).contiguous()

    t = {"wte.weight": r(vocab, d), "wpe.weight": r(positions, d), "ln_f.weight": r(d, shift=1.0), "ln_f.bias": r(d)}
    for i in range(layers):
        t.update(
            {
                f"h.{i}.ln_1.weight": r(d, shift=1.0),
                f"h.{i}.ln_1.bias": r(d),
                f"h.{i}.attn.c_attn.weight": r(d, 3 * d),
                f"h.{i}.attn.c_attn.bias": r(3 * d),
                f"h.{i}.attn.c_proj.weight": r(d, d),
                f"h.{i}.attn.c_proj.bias": r(d),
                f"h.{i}.ln_2.weight": r(d, shift=1.0),
                f"h.{i}.ln_2.bias": r(d),
                f"h.{i}.mlp.c_fc.weight": r(d, 4 * d),
                f"h.{i}.mlp.c_fc.bias": r(4 * d),
                f"h.{i}.mlp.c_proj.weight": r(4 * d, d),
                f"h.{i}.mlp.c_proj.bias": r(d),
            }
        )
    path.mkdir(parents=True)
    save_file(t, str(path / "model.safetensors"))
    (path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gpt2",
                "n_embd": d,
                "n_layer": layers,
                "n_head": heads,
                "n_positions": positions,
                "vocab_size": vocab,
                "layer_norm_epsilon": 1e-5,
                "activation_function": "gelu_new",
            }
        )
    )


GPT2_MODEL = [
    "model=gpt2",
    "model.n_layers=2",
    "model.d_model=32",
    "model.n_heads=2",
    "model.d_ff=128",
    "model.vocab_size=300",
    "model.max_seq_len=64",
]


def _have_safetensors() -> bool:
    try:
        import safetensors  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _have_safetensors(), reason="writing a GPT-2 folder needs the safetensors package")
def test_eval_scores_a_gpt2_folder_like_a_naive_float64_loop(tmp_path, store):
    from b200lab.models.gpt.gpt2_weights import load_gpt2_dir
    from b200lab.parallel.data_parallel import DataParallel
    from b200lab.workloads.eval import Eval

    write_gpt2_dir(tmp_path / "gpt2")
    texts = write_corpus(tmp_path / "corpus", n_docs=6, size=(100, 200))
    cfg = compose(
        [
            *GPT2_MODEL,
            "workload=eval",
            "seq=short",
            "seq.len=24",
            "seq.batch=3",
            f"data.path={tmp_path / 'corpus'}",
            "data.val_fraction=0.34",
            "data.val_tokens=150",
            f"workload.options.checkpoint={tmp_path / 'gpt2'}",
            f"tracking.uri={store['MLFLOW_TRACKING_URI']}",
        ]
    )
    cfg = validate(cfg, "cpu")
    assert staging.stage_inputs(cfg, EvalConfig, tmp_path / "job") == []
    cpu = torch.device("cpu")
    work = Eval(cfg.workload, RankContext(cfg, cpu, DataParallel(cfg.parallelism, 0, 1, cpu), job_dir=tmp_path / "job"))
    work.setup()
    work.step()
    work.after_timing()
    got = work.metrics({})
    fields, state = load_gpt2_dir(tmp_path / "gpt2")
    reference = naive_nll(
        float64_model({"_target_": "b200lab.models.gpt.family.GPTFamily", "name": "ref", **fields}, state, 24),
        val_stream(texts, 0.34, 150),
        24,
        24,
    )
    assert got["val_tokens"] == 150 and got["val_loss"] == pytest.approx(
        reference, rel=1e-4
    )  # float32 vs float64, as above
    assert work.effective["checkpoint"]["format"] == "gpt2-safetensors"

    mismatched = compose(
        [
            *GPT2_MODEL,
            "model.n_layers=3",
            "model.tie_embeddings=false",
            "workload=eval",
            "seq=short",
            "seq.len=24",
            f"data.path={tmp_path / 'corpus'}",
            "data.val_fraction=0.34",
            f"workload.options.checkpoint={tmp_path / 'gpt2'}",
        ]
    )
    (msg,) = staging.stage_inputs(validate(mismatched, "cpu"), EvalConfig, tmp_path / "job2")
    assert "model.n_layers=3 (checkpoint: 2)" in msg and "model.tie_embeddings=False (checkpoint: True)" in msg


@pytest.mark.e2e
def test_eval_without_a_usable_checkpoint_exits_2_naming_the_key(tmp_path, store):
    missing = "fedcba9876543210" * 2
    proc = run_cli(["workload=eval", *SEQ, f"workload.options.checkpoint=run:{missing}"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert f"workload.options.checkpoint=run:{missing}: no run {missing} in the tracking store" in proc.stderr
    assert runs(store["MLFLOW_TRACKING_URI"]) == [] and not list(tmp_path.rglob("ranks"))
    proc = run_cli(["workload=eval", "data=random", *SEQ, "workload.options.checkpoint=x"], tmp_path, store)
    assert (
        proc.returncode == 2
        and "workload=eval scores held-out text; data=random has none (use data=text)" in proc.stderr
    )
