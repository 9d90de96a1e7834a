"""Sliding-window perplexity against a naive float64 loop that scores each token once from an
explicit context, the window plan's bookkeeping, and a tiny GPT that learns the default corpus."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention.sdpa import SdpaAttention
from b200lab.core.registry import complete
from b200lab.data.base import Windows
from b200lab.data.documents import window_plan
from b200lab.models.gpt.model import GPT
from b200lab.precision.autocast import AutocastPrecision
from b200lab.workloads.perplexity import evaluate
from support import FAST, INLINE, results_files, run_cli, runs
from tiny_models import naive_nll


def tiny_gpt(vocab: int) -> GPT:
    cfg = complete(
        "model",
        {
            "_target_": "b200lab.models.gpt.family.GPTFamily",
            "name": "t",
            "n_layers": 2,
            "d_model": 32,
            "n_heads": 4,
            "d_ff": 64,
            "vocab_size": vocab,
        },
    )
    attention = SdpaAttention(
        complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa"}), "cpu"
    )
    model = GPT(cfg, attention).double().eval()
    model.prepare(64)
    return model


def fp64() -> AutocastPrecision:
    return AutocastPrecision(
        complete(
            "precision",
            {"_target_": "b200lab.precision.autocast.AutocastPrecision", "name": "fp64", "compute_dtype": "float64"},
        ),
        "cpu",
        False,
    )


@pytest.mark.parametrize(
    "n,length,stride,batch", [(100, 16, 16, 3), (97, 16, 5, 4), (64, 16, 16, 2), (40, 40, 7, 1), (73, 12, 1, 5)]
)
def test_sliding_window_perplexity_matches_a_naive_float64_loop(n, length, stride, batch):
    vocab = 37
    model = tiny_gpt(vocab)
    stream = [random.randrange(vocab) for _ in range(n + 1)]
    plan = torch.tensor(window_plan(n, length, stride))
    windows = Windows(torch.tensor(stream, dtype=torch.int16), plan[:, 0], plan[:, 1], length, n)
    got = evaluate(model, fp64(), windows, batch)
    assert got.tokens == n
    ref = naive_nll(model, stream, length, stride)
    assert got.val_loss == pytest.approx(ref, rel=1e-10)
    assert got.perplexity == pytest.approx(math.exp(ref), rel=1e-10)


@pytest.mark.parametrize("n,length,stride", [(100, 16, 16), (97, 16, 5), (16, 16, 3), (1000, 64, 48), (65, 64, 1)])
def test_window_plan_scores_every_target_once_from_full_windows(n, length, stride):
    scored = []
    for begin, score_from in window_plan(n, length, stride):
        assert 0 <= begin <= n - length and 0 <= score_from < length
        scored += range(begin + 1 + score_from, begin + length + 1)  # stream positions of its scored targets
    assert scored == list(range(1, n + 1))


def test_window_plan_refuses_impossible_shapes():
    for args in [(10, 16, 4), (100, 16, 17), (100, 16, 0)]:
        with pytest.raises(ValueError, match="window plan needs"):
            window_plan(*args)


def test_evaluate_pads_the_last_batch_without_scoring_it_twice():
    model = tiny_gpt(11)
    stream = [random.randrange(11) for _ in range(51)]
    plan = torch.tensor(window_plan(50, 8, 8))
    windows = Windows(torch.tensor(stream, dtype=torch.int16), plan[:, 0], plan[:, 1], 8, 50)
    one_by_one = evaluate(model, fp64(), windows, 1).val_loss
    assert len(windows) == 7
    for batch in (2, 3, 4, 7, 16):  # 7 windows: every batch size but 7 pads the last batch
        assert evaluate(model, fp64(), windows, batch).val_loss == pytest.approx(one_by_one, rel=1e-12)


@pytest.mark.e2e
def test_a_tiny_gpt_learns_the_default_corpus_far_below_uniform_bytes(tmp_path, store):
    """150 steps of a 2-layer GPT on 64-byte windows of the standard-library corpus: held-out
    perplexity far below 257 (uniform over the byte tokenizer), training loss falling. In-process:
    learning is the subject here, not torchrun (100 steps already reached perplexity 18.6)."""
    proc = run_cli(
        [
            "workload=train",
            "data=text",
            "seq=short",
            "seq.len=64",
            "seq.batch=16",
            "model.vocab_size=257",
            "workload.warmup_steps=0",
            "workload.steps=150",
            "workload.options.lr=3e-3",
            "data.val_tokens=8192",
            INLINE,
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    (res,) = results_files(tmp_path / "outputs")
    m = res["metrics"]
    assert m["val_tokens"] == 8192 and m["perplexity"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["perplexity"] < 257 / 8, m
    curve = res["curves"]["train_loss"]
    assert [s for s, _ in curve] == list(range(1, 151))
    assert curve[0][1] > math.log(257) - 0.5 and curve[-1][1] < curve[0][1] - 2.0
    data = res["effective"]["data"]
    assert data["corpus"]["sha256"] and data["documents"]["val"] == 10 and data["stride"] == 64
    (run,) = runs(store["MLFLOW_TRACKING_URI"])
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=store["MLFLOW_TRACKING_URI"]).get_metric_history(run.info.run_id, "train_loss")
    assert sorted((h.step, h.value) for h in history) == [(s, pytest.approx(v)) for s, v in curve]
    assert run.data.metrics["perplexity"] == pytest.approx(m["perplexity"]) and run.data.tags["data"] == "text"
    assert run.data.tags["effective.corpus_sha256"] == data["corpus"]["sha256"]
    # the runs table's Dataset column: the corpus's two splits, digest = its sha256 (MLflow keeps 36 characters)
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation"}
    assert {d.digest for d in inputs.values()} == {data["corpus"]["sha256"][:32]}
    assert json.loads(inputs["validation"].profile)["documents"] == 10
    assert json.loads(inputs["train"].source)["sha256"] == data["corpus"]["sha256"]


@pytest.mark.e2e
def test_random_data_trains_as_before_without_validation(tmp_path, store):
    proc = run_cli(["workload=train", *FAST, INLINE], tmp_path, store)  # what it records, not torchrun
    assert proc.returncode == 0, proc.output
    (res,) = results_files(tmp_path / "outputs")
    assert "perplexity" not in res["metrics"] and res["effective"]["data"] == {"name": "random"}
    assert len(res["curves"]["train_loss"]) == 4  # one warm-up + three timed steps
    assert OmegaConf.create(res["config"]).data.name == "random"


def test_curves_combine_across_ranks_step_by_step_by_their_rule():
    from b200lab.records.aggregate import aggregate

    losses = [[random.uniform(1, 5) for _ in range(6)] for _ in range(2)]

    def rank(r):
        return {
            "rank": r,
            "world_size": 2,
            "status": "ok",
            "error": None,
            "data_shard": r,
            "metric_rules": {"train_loss": "mean"},
            "curves": {"train_loss": [[s + 1, v] for s, v in enumerate(losses[r])], "other": [[1, float(r)]]},
        }

    curves = aggregate([rank(0), rank(1)])["curves"]
    assert curves["train_loss"] == [[s + 1, pytest.approx((a + b) / 2)] for s, (a, b) in enumerate(zip(*losses))]
    assert curves["other"] == [[1, 0.5]]  # no rule: the mean


def test_a_long_curve_reaches_mlflow_thinned_to_5000_points_with_its_last(tmp_path, store):
    from mlflow import MlflowClient

    from b200lab.records.tracking import Tracker

    uri = store["MLFLOW_TRACKING_URI"]
    tracker = Tracker(uri, "b200lab", system_metrics=False)
    run_id = tracker.create_run("curve", {}, git_sha="0" * 40)
    n = random.randint(12_000, 13_000)
    tracker.log_metrics(run_id, {"loss": 1.5}, [], {"train_loss": [[s, s / 7] for s in range(1, n + 1)]})
    history = sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train_loss"))
    assert 4000 < len(history) <= 5000 and history[0][0] == 1 and history[-1][0] == n
    assert all(v == pytest.approx(s / 7) for s, v in history)
