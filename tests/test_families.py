"""The vision, diffusion and recommender families (issue 14): FLOPs against hand counts and against
the matmuls the model actually runs, attention backends against math, falling loss on CPU through
the real CLI (the families preset's CPU points, one sweep), and wrong combinations refused."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from b200lab.core.machine import ConfigError
from b200lab.core.registry import instantiate
from b200lab.core.validation import validate
from support import compose, copy_store, results_files, run_cli


def _cfg(*overrides: str, device: str = "cpu"):
    return validate(compose(list(overrides)), device)


def _problems(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        _cfg(*overrides)
    return str(info.value)


def _family(model: str, seq: str):
    cfg = _cfg(f"model={model}", f"seq={seq}")
    return cfg, instantiate("model", cfg.model)


# --- FLOPs: hand counts, written out here independently of the modules' formulas -----------------


def test_vit_flops_by_hand():
    """ViT-B/16 at 224 px: 196 patches + the class token, d 768, MLP 3072, 12 layers, 1000 classes.
    Forward 35.1 GFLOPs (the published 17.6 GMACs)."""
    cfg, fam = _family("vit_b16", "img224")
    T, n, d, f, L = 197, 196, 768, 3072, 12
    patch = 2 * n * (3 * 16 * 16) * d
    layer = 2 * T * d * 3 * d + 2 * T * d * d + 2 * 2 * T * d * f + 2 * 2 * T * T * d  # qkv, out, up+down, QK^T+PV
    head = 2 * d * 1000
    forward = patch + L * layer + head
    assert fam.flops_per_sample(224, training=False) == forward
    assert fam.flops_per_sample(224, training=True) == 3 * forward
    assert round(forward / 1e9, 1) == 35.1


def test_dit_flops_by_hand():
    """DiT-XL/2 on 32x32x4 latents: 256 tokens, d 1152, 28 layers; the paper's 118.6 GFLOPs are MACs."""
    cfg, fam = _family("dit_xl2", "latent32")
    T, d, f, L = 256, 1152, 4608, 28
    patch = 2 * T * (4 * 2 * 2) * d
    timestep = 2 * 256 * d + 2 * d * d  # once per sample
    layer = (
        2 * d * 6 * d + 2 * T * d * 3 * d + 2 * T * d * d + 2 * 2 * T * d * f + 2 * 2 * T * T * d
    )  # adaLN, qkv, out, MLP, attention
    final = 2 * d * 2 * d + 2 * T * d * (2 * 2 * 8)  # final adaLN, projection to p*p*8
    forward = patch + timestep + L * layer + final
    assert fam.flops_per_sample(32, training=False) == forward
    assert fam.flops_per_sample(32, training=True) == 3 * forward
    assert round(forward / 2 / 1e9, 1) == 118.6


def test_dlrm_flops_and_bytes_by_hand():
    cfg, fam = _family("dlrm_large", "multihot")
    F, d = 27, 128
    bottom = 2 * (13 * 512 + 512 * 256 + 256 * 128)
    top = 2 * ((128 + F * (F - 1) // 2) * 1024 + 1024 * 1024 + 1024 * 512 + 512 * 256 + 256 * 1)
    interaction = 2 * F * F * d
    assert fam.flops_per_sample(32, training=False) == bottom + top + interaction
    assert fam.flops_per_sample(32, training=True) == 3 * (bottom + top + interaction)
    row = 128 * 2  # bf16
    lookups = 26 * 32
    forward = lookups * row + lookups * 8 + 26 * row  # rows and indices read, pooled vectors written
    assert fam.embedding_bytes_per_sample(32, row, training=False) == forward
    assert fam.embedding_bytes_per_sample(32, row, training=True) == forward + 26 * row + 2 * lookups * row


@pytest.mark.parametrize("model,seq", [("vit_mini", "img32"), ("dit_mini", "latent8"), ("dlrm_small", "multihot")])
def test_forward_flops_match_the_matmuls_the_model_runs(model, seq):
    """torch's FlopCounterMode counts every conv, matmul and bmm of a real forward (attention through
    the math backend, so its two matmuls are counted too): the family's formula must equal it."""
    cfg, fam = _family(model, seq)
    math_ = _cfg("attention=math").attention  # (a DLRM refuses attention=math: it has no attention to run)
    net = fam.build(instantiate("attention", math_, "cpu")).eval()
    inputs, _ = fam.synthetic_batch(3, int(cfg.seq.len), torch.Generator().manual_seed(0), "cpu")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(**inputs) if isinstance(inputs, dict) else net(inputs)
    assert counter.get_total_flops() == 3 * fam.flops_per_sample(int(cfg.seq.len), training=False)


def test_dit_residual_stream_takes_the_weights_dtype():
    """The DiT's float32 position buffer joins the residual stream in the dtype the weights set:
    float32 under autocast (float32 weights), bf16 with bf16 weights."""
    cfg, fam = _family("dit_mini", "latent8")
    net = fam.build(instantiate("attention", _cfg("attention=math").attention, "cpu")).eval()
    inputs, _ = fam.synthetic_batch(2, int(cfg.seq.len), torch.Generator().manual_seed(1), "cpu")
    seen = []
    net.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(**inputs)
    net.to(torch.bfloat16)
    with torch.no_grad():
        net(**inputs)
    assert seen == [torch.float32, torch.bfloat16]


# --- attention: the configured backend against the explicit reference ------------------------------


@pytest.mark.parametrize("model,seq", [("vit_mini", "img32"), ("dit_mini", "latent8")])
def test_sdpa_matches_math_non_causal(model, seq):
    """Same weights, float64: the model through attention=sdpa equals it through attention=math,
    and a causal mask would change the answer (the model really attends non-causally)."""
    cfg, fam = _family(model, seq)
    torch.manual_seed(0)
    sdpa = instantiate("attention", cfg.attention, "cpu")
    math_ = instantiate("attention", _cfg(f"model={model}", f"seq={seq}", "attention=math").attention, "cpu")
    with torch.device("cpu"):
        net = fam.build(sdpa).double().eval()
    for p in net.parameters():  # adaLN-Zero starts at zero: give every weight a value so attention matters
        torch.nn.init.normal_(p, std=0.1)
    inputs, _ = fam.synthetic_batch(2, int(cfg.seq.len), torch.Generator().manual_seed(1), "cpu")
    run = (lambda: net(**inputs)) if isinstance(inputs, dict) else (lambda: net(inputs))
    with torch.no_grad():
        ours = run()
        for block in net.blocks:
            block.attention = math_
        reference = run()
        from b200lab.attention.base import AttnMask

        causal = lambda q, k, v, mask: math_(q, k, v, AttnMask(causal=True))  # noqa: E731
        for block in net.blocks:
            block.attention = causal
        wrong = run()
    assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(ours, wrong, rtol=1e-3, atol=1e-6)


# --- the synthetic tasks are learnable: loss on batches the model never trained on falls --------


@pytest.mark.parametrize("model,seq", [("vit_mini", "img32"), ("dlrm_small", "onehot")])
def test_the_synthetic_task_generalises_to_fresh_batches(model, seq):
    """The workloads train on one fixed batch (a speed measurement), so a falling training loss
    alone would also come from memorising noise. Here every step draws a fresh batch and the loss
    is scored on a held-out batch from another seed: it falls only if the labels are a function of
    the inputs the model can learn. (DiT's target is the noise itself: nothing to memorise.)"""
    cfg, fam = _family(model, seq)
    torch.manual_seed(0)
    with torch.device("cpu"):
        net = fam.build(instantiate("attention", cfg.attention, "cpu"))
    fam.prepare(net, int(cfg.seq.len))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    call = lambda x: net(**x) if isinstance(x, dict) else net(x)  # noqa: E731
    held_in, held_out = fam.synthetic_batch(256, int(cfg.seq.len), torch.Generator().manual_seed(12345), "cpu")

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(fam.loss(call(held_in), held_out))

    before = held_out_loss()
    for step in range(60):
        inputs, targets = fam.synthetic_batch(64, int(cfg.seq.len), torch.Generator().manual_seed(step), "cpu")
        opt.zero_grad()
        fam.loss(call(inputs), targets).backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.9 * before, (model, before, after)  # vit_mini: 2.30 (chance, 10 classes) -> 1.92


# --- composition: what each family refuses, each message naming its keys --------------------------


def test_presets_compose_with_their_shapes():
    for model, seq, unit in [
        ("vit_l16", "img224", "image"),
        ("dit_xl2", "latent32", "sample"),
        ("dlrm_large", "onehot", "sample"),
    ]:
        cfg, fam = _family(model, seq)
        assert fam.tokens_per_sample(int(cfg.seq.len)) == 1 and fam.effective["unit"] == unit


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["model=vit_b16", "seq=4k"],
            "seq=4k (seq.len=4096) with model=vit_b16: a ViT reads seq.len as the image side in pixels, and "
            "model.image_size=224",
        ),
        (["model=dit_xl2"], "seq=1k (seq.len=1024) with model=dit_xl2: a DiT reads seq.len as the latent side"),
        (
            ["model=vit_mini", "seq=img32", "attention=flex_sliding"],
            "attention=flex_sliding attention.window=4096 with model=vit_mini",
        ),
        (
            ["model=dit_mini", "seq=latent8", "attention=flex_document"],
            "attention=flex_document (attention.documents=true) with model=dit_mini",
        ),
        (
            ["model=vit_mini", "seq=img32", "attention=te"],
            "attention=te with model=vit_mini: Transformer Engine's attention is wired causal-only",
        ),
        (
            ["model=dlrm_small", "seq=onehot", "attention=flex_document"],
            "attention=flex_document with model=dlrm_small: a DLRM has no attention",
        ),
        (
            ["model=dlrm_small", "seq=onehot", "precision=fp8_auto"],
            "precision=fp8_auto with model=dlrm_small: FP8 recipes convert Linear layers",
        ),
        (
            ["model=dlrm_small", "seq=onehot", "precision=fp8_weight_only"],
            "precision=fp8_weight_only with model=dlrm_small",
        ),
        (
            ["model=vit_mini", "seq=img32", "precision=fp8_auto", "seq.batch=12"],
            "precision=fp8_auto with model=vit_mini: seq.batch=12 must be a multiple of 16",
        ),
        (
            ["model=vit_mini", "seq=img32", "parallelism=tp", "parallelism.nproc=2"],
            "model family 'vit' (model=vit_mini) has no tensor-parallel plan",
        ),
        (["model=dit_mini", "seq=latent8", "data=text"], "model=dit_mini has no model.vocab_size"),
    ],
)
def test_wrong_combinations_are_refused(overrides, expected):
    assert expected in _problems(*overrides)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["model=vit_b16", "seq=4k", "attention=te"],
            ["seq=4k (seq.len=4096) with model=vit_b16", "attention=te with model=vit_b16"],
        ),
        (
            ["model=dlrm_small", "seq=onehot", "attention=flex_document", "precision=fp8"],
            ["attention=flex_document with model=dlrm_small", "precision=fp8 with model=dlrm_small"],
        ),
    ],
)
def test_cli_refuses_with_exit_2(overrides, expected, tmp_path, store):
    proc = run_cli(overrides, tmp_path, store)
    assert proc.returncode == 2, proc.output
    for text in expected:
        assert text in proc.output
    assert not results_files(tmp_path / "outputs")


# --- training on CPU through the CLI: the families preset's CPU points ----------------------------

CPU_POINTS = "vit_mini_train,dit_mini_train,dlrm_small_train,dlrm_small_forward"


@pytest.fixture(scope="module")
def cpu_sweep(tmp_path_factory, template_store):
    tmp = tmp_path_factory.mktemp("families")
    store = {"MLFLOW_TRACKING_URI": copy_store(template_store, tmp)}
    proc = run_cli(
        [
            "-m",
            "experiment=families",
            f"experiment/families@_global_={CPU_POINTS}",
            "run.device=cpu",
            "run.launcher=inline",
            "precision=fp32",
            "workload.warmup_steps=1",
            "workload.steps=12",
            "workload.min_time_s=0",
            "seq.batch=16",
        ],
        tmp,
        store,
        timeout=600,
    )
    assert proc.returncode == 0, proc.output
    return {
        r["config"]["model"]["name"] + "_" + r["config"]["workload"]["name"]: r for r in results_files(tmp / "multirun")
    }


@pytest.mark.e2e
def test_each_family_learns_its_synthetic_task_on_cpu(cpu_sweep):
    assert set(cpu_sweep) == set(CPU_POINTS.split(","))
    for name in ("vit_mini_train", "dit_mini_train", "dlrm_small_train"):
        r = cpu_sweep[name]
        assert r["status"] == "ok", r["error"]
        losses = [v for _, v in r["curves"]["train_loss"]]
        assert len(losses) >= 12 and losses[-1] < 0.95 * losses[0], (name, losses)
        assert r["metrics"]["tokens_per_s"] > 0 and r["metrics"]["tokens_per_step"] == 16  # samples, not tokens
        assert r["effective"]["model"]["unit"] == ("image" if name.startswith("vit") else "sample")


@pytest.mark.e2e
def test_recorded_runs_say_what_ran(cpu_sweep):
    vit = cpu_sweep["vit_mini_train"]
    assert vit["effective"]["model"]["transformer_tokens"] == 17
    assert vit["effective"]["attention"]["kernels"]["full"].startswith("sdpa")
    assert vit["metrics"]["tflops"] > 0
    for name in ("dlrm_small_forward", "dlrm_small_train"):
        m = cpu_sweep[name]["metrics"]
        assert m["embedding_gbps"] > 0 and m["embedding_bytes_per_step"] > 0
        assert "embedding_gbps" not in cpu_sweep[name].get("unaggregated_metrics", [])
    train, forward = cpu_sweep["dlrm_small_train"]["metrics"], cpu_sweep["dlrm_small_forward"]["metrics"]
    assert train["embedding_bytes_per_step"] > forward["embedding_bytes_per_step"]
    assert json.dumps(cpu_sweep["dlrm_small_train"]["config"]["model"]["table_rows"]) == json.dumps([1000] * 8)


@pytest.mark.e2e
def test_every_family_trains_under_fsdp2_in_bf16(tmp_path, store):
    """FSDP2 over 2 gloo ranks with bf16 compute and float32 shards: the shards, and the buffers with
    them, are float32, so a family must add its float32 buffers in the compute dtype itself (the
    blocks' inputs are not cast by FSDP2: b200lab/parallel/mesh.py). Two steps each, finite loss."""
    points = "vit_mini_train,dit_mini_train,dlrm_small_train"
    proc = run_cli(
        [
            "-m",
            "experiment=families",
            f"experiment/families@_global_={points}",
            "run.device=cpu",
            "parallelism=fsdp",
            "precision=bf16",
            "workload.warmup_steps=1",
            "workload.steps=2",
            "workload.min_time_s=0",
            "seq.batch=4",
        ],
        tmp_path,
        store,
        timeout=600,
    )
    assert proc.returncode == 0, proc.output
    results = {r["config"]["model"]["name"]: r for r in results_files(tmp_path / "multirun")}
    assert sorted(results) == ["dit_mini", "dlrm_small", "vit_mini"]
    for name, r in results.items():
        assert r["status"] == "ok", (name, r["error"])
        assert r["metrics"]["world_size"] == 2 and r["effective"]["parallelism"]["wrapper"] == "FSDP2 fully_shard"
        assert r["effective"]["parallelism"]["fsdp"]["sharded_param_dtype"] == "float32"
        assert 0 < r["metrics"]["loss"] < 100, name
