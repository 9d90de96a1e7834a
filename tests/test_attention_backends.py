"""Attention backends against independent references: every CPU-capable backend against the
explicit float64 math (forward, and backward where PyTorch has one on a CPU); the sliding-window
and document masks against a mask written out with loops; FLOP counts against a brute-force pair
count; rotary positions at 32K against float64 rotations; activation checkpointing against the
same step without it. GPU-only kernels (sdpa_cudnn, sdpa_efficient, flex on CUDA, te) are in the
``gpu`` tests at the end, which skip on a machine without CUDA."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from b200lab.attention.base import (
    AttentionUnsupported,
    AttnMask,
    MathAttention,
    reference_attention,
)
from b200lab.attention.flex import FlexAttention, flash_importable, mask_mod_for
from b200lab.attention.sdpa import SdpaAttention
from b200lab.attention.te import TEAttention
from b200lab.core.component import CheckContext
from b200lab.core.registry import complete
from b200lab.data.text import documents_at
from b200lab.measure.flops import causal_pairs
from b200lab.models.config.gpt import GPTConfig
from b200lab.models.gpt.model import GPT, apply_rotary, rotary_tables
from b200lab.precision.availability import te_version


def backend(cls, name: str, device: str = "cpu", **fields):
    cfg = complete("attention", {"_target_": f"{cls.__module__}.{cls.__name__}", "name": name, **fields})
    return cls(cfg, device)


def qkv(batch=2, heads=4, kv_heads=4, t=150, d=16, dtype=torch.float64, device="cpu", grad=False):
    g = torch.Generator(device=device).manual_seed(torch.seed() % 2**31)
    make = lambda h: torch.randn(batch, h, t, d, generator=g, dtype=dtype, device=device).requires_grad_(grad)  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


def loop_mask(t: int, window=None, doc_ids=None) -> torch.Tensor:
    """The allowed (query, key) pairs written out one by one: (B or 1, 1, T, T)."""
    batch = 1 if doc_ids is None else doc_ids.shape[0]
    out = torch.zeros(batch, 1, t, t, dtype=torch.bool)
    for b in range(batch):
        for i in range(t):
            for j in range(i + 1):
                if window is not None and i - j >= window:
                    continue
                if doc_ids is not None and doc_ids[b, i] != doc_ids[b, j]:
                    continue
                out[b, 0, i, j] = True
    return out


def random_documents(batch: int, t: int) -> torch.Tensor:
    starts = torch.rand(batch, t) < 0.04
    starts[:, 0] = False
    return starts.long().cumsum(1)


# --- masks ---------------------------------------------------------------------------------------


def test_sliding_window_and_document_masks_match_loops():
    t = 40
    docs = random_documents(3, t)
    assert int(docs.max()) >= 1, "the test needs more than one document"
    assert torch.equal(AttnMask(window=7).dense(t, t, "cpu"), loop_mask(t, window=7))
    assert torch.equal(AttnMask(doc_ids=docs).dense(t, t, "cpu"), loop_mask(t, doc_ids=docs))
    assert torch.equal(AttnMask(window=5, doc_ids=docs).dense(t, t, "cpu"), loop_mask(t, window=5, doc_ids=docs))


def test_flex_mask_function_is_the_dense_mask():
    from torch.nn.attention.flex_attention import create_mask

    t, docs = 70, random_documents(2, 70)
    for mask in (AttnMask(), AttnMask(window=9), AttnMask(doc_ids=docs), AttnMask(window=4, doc_ids=docs)):
        batch = 2 if mask.doc_ids is not None else 1
        flex = create_mask(mask_mod_for(mask, t, t), batch, 1, t, t, device="cpu")
        assert torch.equal(flex, mask.dense(t, t, "cpu").expand(batch, 1, t, t))


def test_document_ids_follow_end_of_document_tokens():
    eod = 256
    tokens = torch.randint(0, 256, (3, 60))
    tokens[tokens < 20] = eod  # about 8% ends of documents
    docs = documents_at(tokens, eod)
    for b in range(3):
        current = 0
        for i in range(60):
            assert docs[b, i] == current  # an EOD belongs to the document it ends
            if tokens[b, i] == eod:
                current += 1


@pytest.mark.parametrize("window", [None, 1, 5, 64, 200])
def test_causal_pair_count_is_the_mask_count(window):
    t = 97
    assert causal_pairs(t, window) == int(AttnMask(window=window).dense(t, t, "cpu").sum())


# --- backends against the math reference -----------------------------------------------------------

CPU_BACKENDS = [
    (SdpaAttention, "sdpa", {}),
    (SdpaAttention, "sdpa_flash", {"backends": ["flash"]}),  # PyTorch's CPU flash kernel
    (FlexAttention, "flex", {}),
    (FlexAttention, "flex_sliding", {"window": 33}),
]


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("cls,name,fields", CPU_BACKENDS, ids=[b[1] for b in CPU_BACKENDS])
def test_backend_forward_matches_float64_math(cls, name, fields, kv_heads):
    attn = backend(cls, name, **fields)
    q, k, v = qkv(kv_heads=kv_heads, dtype=torch.float32)
    out = attn(q, k, v)
    ref = reference_attention(q.double(), k.double(), v.double(), AttnMask(window=fields.get("window")))
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert (out.double() - ref).abs().max() < 2e-5


@pytest.mark.parametrize("cls,name,fields", CPU_BACKENDS[:2], ids=["sdpa", "sdpa_flash"])
def test_backend_gradients_match_float64_math(cls, name, fields):
    attn = backend(cls, name, **fields)
    q, k, v = qkv(t=90, dtype=torch.float32, grad=True)
    grad_out = torch.randn_like(q)
    grads = torch.autograd.grad(attn(q, k, v), (q, k, v), grad_out)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = torch.autograd.grad(reference_attention(q64, k64, v64, AttnMask()), (q64, k64, v64), grad_out.double())
    for got, want in zip(grads, ref):
        assert (got.double() - want).abs().max() < 1e-4


def test_flex_document_mask_matches_math_in_a_packed_batch():
    flex = backend(FlexAttention, "flex_document", documents=True)
    q, k, v = qkv(batch=3, t=140, dtype=torch.float32)
    docs = random_documents(3, 140)
    out = flex(q, k, v, AttnMask(doc_ids=docs))
    ref = reference_attention(q.double(), k.double(), v.double(), AttnMask(doc_ids=docs))
    assert (out.double() - ref).abs().max() < 2e-5
    plain = flex(q, k, v)  # without documents the same call attends across them
    assert (plain.double() - ref).abs().max() > 1e-2


def test_gpt_with_flex_documents_gives_the_math_backends_logits():
    cfg = OmegaConf.structured(GPTConfig(n_layers=2, d_model=32, n_heads=4, d_ff=64, vocab_size=97))
    torch.manual_seed(torch.seed() % 2**31)
    model = GPT(cfg, backend(FlexAttention, "flex_document", documents=True)).eval()
    reference = GPT(cfg, backend(MathAttention, "math"))
    reference.load_state_dict(model.state_dict())
    idx, docs = torch.randint(0, 97, (2, 100)), random_documents(2, 100)
    with torch.no_grad():
        got, want = model(idx, doc_ids=docs), reference.eval()(idx, doc_ids=docs)
        across = reference(idx)
    assert (got - want).abs().max() < 1e-4
    assert (across - want).abs().max() > 1e-3  # the documents changed something


# --- what a backend cannot do --------------------------------------------------------------------


def check(cls, name, device="cpu", training=False, **fields):
    cfg = complete("attention", {"_target_": f"{cls.__module__}.{cls.__name__}", "name": name, **fields})
    job = OmegaConf.create({"attention": cfg, "workload": {"name": "forward"}, "model": {"d_model": 64, "n_heads": 4}})
    return cls.Config.validate(cfg, CheckContext(cfg=job, device=device, training=training))


def test_backends_refuse_what_they_cannot_run_with_the_reason():
    assert check(SdpaAttention, "sdpa_cudnn", backends=["cudnn"]) == [
        "attention=sdpa_cudnn: cuDNN attention needs a CUDA GPU and this job runs on cpu; use attention=sdpa to let "
        "PyTorch choose a kernel"
    ]
    assert (
        "memory-efficient attention needs a CUDA GPU"
        in check(SdpaAttention, "sdpa_efficient", backends=["efficient"])[0]
    )
    assert "has no backward pass there" in check(FlexAttention, "flex", training=True)[0]
    assert "flex_backend=flash needs a CUDA GPU" in check(FlexAttention, "flex", flex_backend="flash")[0]
    assert "choose auto, triton, flash" in check(FlexAttention, "flex", flex_backend="cuda")[0]
    assert "attention=te needs a CUDA GPU" in check(TEAttention, "te")[0]
    assert "cannot keep attention inside packed documents" in check(TEAttention, "te", device="cuda", documents=True)[0]
    assert check(SdpaAttention, "sdpa_flash", backends=["flash"]) == []  # PyTorch's CPU build has a flash kernel
    assert "must be a positive number of tokens" in check(FlexAttention, "flex_sliding", window=0)[0]


def test_on_a_cpu_a_compiled_model_with_flex_gives_the_eager_logits():
    """Inductor's CPU FlexAttention reads strided inputs wrongly inside a compiled model (torch
    2.13: the rotary-rotated q and k of this tiny GPT gave logits far from eager's);
    FlexAttention hands it contiguous copies on a CPU, so the compiled model equals eager. Without
    the copies this test fails."""
    from b200lab.core.validation import validate
    from support import compose
    from tiny_models import tiny_gpt

    x = torch.randint(0, 97, (2, 16))
    model = tiny_gpt("flex", dtype=torch.float32, std=0.5)
    with torch.no_grad():
        eager = model(x)
        torch._dynamo.reset()
        assert (torch.compile(model)(x) - eager).abs().max() < 1e-4
    validate(compose(["attention=flex", "compile=default", "seq=short"]), "cpu")  # nothing to refuse


@pytest.mark.gpu
def test_on_a_gpu_a_compiled_model_with_flex_gives_the_eager_logits():
    """What the CPU refusal above does not cover: inductor's CUDA FlexAttention inside a model."""
    from tiny_models import tiny_gpt

    x = torch.randint(0, 97, (2, 256), device="cuda")
    model = tiny_gpt("flex", dtype=torch.float32, std=0.5).cuda()
    with torch.no_grad():
        eager = model(x)
        torch._dynamo.reset()
        assert (torch.compile(model)(x) - eager).abs().max() < 1e-3


def test_a_strict_kernel_that_cannot_take_the_call_says_why_instead_of_running_another():
    flash = backend(SdpaAttention, "sdpa_flash", backends=["flash"])
    q, k, v = (x[..., ::2] for x in qkv(t=32, d=16, dtype=torch.float32))  # head dim strided: flash needs it contiguous
    with pytest.raises(AttentionUnsupported, match=r"attention=sdpa_flash cannot run this call .*Use attention=sdpa"):
        flash(q, k, v)
    free = backend(SdpaAttention, "sdpa")  # free to choose: falls back, and says which kernel ran
    out = free(q, k, v)
    assert torch.allclose(out.double(), reference_attention(q.double(), k.double(), v.double(), AttnMask()), atol=2e-5)
    assert free.effective["kernels"]["causal"] == "sdpa-math"


# --- long sequences ------------------------------------------------------------------------------


def test_rotary_positions_stay_exact_at_32k():
    """The float32 tables at positions near 32K rotate like float64 math, and the scores of a
    rotated pair depend only on the distance between positions, as rotary embeddings must."""
    head_dim, t = 128, 32768
    cos, sin = rotary_tables(t, head_dim, 10000.0, "cpu")
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))

    def rotate64(x, pos):
        x = x.double().flatten()
        a = pos * inv
        x0, x1 = x[: head_dim // 2], x[head_dim // 2 :]
        return torch.cat((x0 * a.cos() - x1 * a.sin(), x0 * a.sin() + x1 * a.cos()))

    for pos in (0, 1, 20000, 32767):
        got = apply_rotary(q, cos[pos : pos + 1], sin[pos : pos + 1]).flatten().double()
        assert (got - rotate64(q, pos)).abs().max() < 1e-5
    score = lambda m, n: float(
        apply_rotary(q, cos[m : m + 1], sin[m : m + 1]).flatten()
        @ apply_rotary(k, cos[n : n + 1], sin[n : n + 1]).flatten()
    )  # noqa: E731
    assert abs(score(32760, 32700) - score(60, 0)) < 1e-3 * max(1.0, abs(score(60, 0)))


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointing_recomputes_blocks_and_changes_no_number(mode):
    cfg = OmegaConf.structured(GPTConfig(n_layers=3, d_model=32, n_heads=4, d_ff=64, vocab_size=97))
    torch.manual_seed(torch.seed() % 2**31)
    plain = GPT(cfg, backend(SdpaAttention, "sdpa")).double().train()
    ckpt_cfg = OmegaConf.merge(cfg, {"checkpointing": mode})
    ckpt = GPT(ckpt_cfg, backend(SdpaAttention, "sdpa")).double().train()
    ckpt.load_state_dict(plain.state_dict())
    calls = {"n": 0}
    ckpt.blocks[1].mlp.register_forward_pre_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1)
    )  # recompute may stop early: count starts
    idx, targets = torch.randint(0, 97, (2, 50)), torch.randint(0, 97, (2, 50))
    losses = []
    for model in (plain, ckpt):
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten())
        loss.backward()
        losses.append(loss.detach())
    assert calls["n"] == 2, "checkpointing must run the block again in backward"
    assert torch.allclose(losses[0], losses[1], rtol=0, atol=1e-12)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-10, atol=1e-12), name


def backward_matmuls(mode: str) -> int:
    """Matrix multiplies run during backward (recomputed forward ones included) under ``mode``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMatmuls(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
                CountMatmuls.n += 1
            return func(*args, **(kwargs or {}))

    cfg = OmegaConf.structured(GPTConfig(n_layers=3, d_model=32, n_heads=4, d_ff=64, vocab_size=97, checkpointing=mode))
    model = GPT(cfg, backend(SdpaAttention, "sdpa")).double().train()
    loss = model(torch.randint(0, 97, (2, 40))).logsumexp(-1).mean()
    with CountMatmuls():
        loss.backward()
    return CountMatmuls.n


def test_selective_checkpointing_keeps_the_matmuls_full_recomputes():
    counts = {mode: backward_matmuls(mode) for mode in ("none", "selective", "full")}
    # full reruns each block's forward matmuls in backward (qkv, out, up; recomputation stops early
    # once what backward needs is back, so the last one, down, may be skipped): 3 blocks x 3 or 4
    assert counts["none"] + 3 * 3 <= counts["full"] <= counts["none"] + 3 * 4, counts
    assert counts["selective"] == counts["none"], counts  # matmul outputs saved: none recomputed


# --- GPU kernels (skipped without CUDA) ------------------------------------------------------------

GPU_BACKENDS = [
    (SdpaAttention, "sdpa_flash", {"backends": ["flash"]}),
    (SdpaAttention, "sdpa_cudnn", {"backends": ["cudnn"]}),
    (SdpaAttention, "sdpa_efficient", {"backends": ["efficient"]}),
    (FlexAttention, "flex", {"flex_backend": "triton"}),
    (FlexAttention, "flex", {"flex_backend": "auto"}),
    (FlexAttention, "flex_sliding", {"window": 300}),
    (TEAttention, "te", {}),
]


@pytest.mark.gpu  # the CUDA kernels (and FlexAttention's backward) have no CPU path
@pytest.mark.parametrize("cls,name,fields", GPU_BACKENDS, ids=[f"{b[1]}-{b[2]}" for b in GPU_BACKENDS])
def test_gpu_backend_forward_and_backward_match_math(cls, name, fields):
    if cls is TEAttention and te_version() is None:  # not importorskip: TE must be imported through import_te
        pytest.skip("attention=te needs Transformer Engine, which is not installed")
    attn = backend(cls, name, device="cuda", **fields)
    attn.training = True
    q, k, v = qkv(batch=2, heads=8, kv_heads=8, t=1024, d=128, dtype=torch.bfloat16, device="cuda", grad=True)
    attn.probe(q, k, v)
    grad_out = torch.randn_like(q)
    out = attn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = reference_attention(q32, k32, v32, AttnMask(window=fields.get("window")))
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out.float())
    assert (out.float() - ref).abs().max() < 3e-2, attn.effective
    if fields.get("flex_backend") == "auto" and flash_importable() and torch.cuda.get_device_capability() >= (9, 0):
        assert attn.effective["kernel"] == "flex-flash", attn.effective  # auto must not fall back silently
    for got, want in zip(grads, ref_grads):
        scale = want.abs().max()
        assert (got.float() - want).abs().max() < 3e-2 * max(1.0, float(scale)), attn.effective


@pytest.mark.gpu  # FlexAttention's document mask trains only there
def test_gpu_flex_document_mask_matches_math():
    flex = backend(FlexAttention, "flex_document", device="cuda", documents=True)
    q, k, v = qkv(batch=2, heads=4, kv_heads=4, t=2048, d=64, dtype=torch.bfloat16, device="cuda", grad=True)
    docs = random_documents(2, 2048).cuda()
    mask = AttnMask(doc_ids=docs)
    grad_out = torch.randn_like(q)
    grads = torch.autograd.grad(flex(q, k, v, mask), (q, k, v), grad_out)
    q32, k32, v32 = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref_grads = torch.autograd.grad(reference_attention(q32, k32, v32, mask), (q32, k32, v32), grad_out.float())
    for got, want in zip(grads, ref_grads):
        assert (got.float() - want).abs().max() < 3e-2 * max(1.0, float(want.abs().max()))


@pytest.mark.gpu  # peak memory of checkpointing is read from the CUDA allocator
def test_gpu_checkpointing_lowers_peak_memory():
    peaks = {}
    for mode in ("none", "selective", "full"):
        cfg = OmegaConf.structured(
            GPTConfig(n_layers=4, d_model=512, n_heads=8, d_ff=2048, vocab_size=1024, checkpointing=mode)
        )
        with torch.device("cuda"):
            model = GPT(cfg, backend(SdpaAttention, "sdpa", device="cuda")).bfloat16().train()
        idx = torch.randint(0, 1024, (2, 4096), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        model(idx).float().logsumexp(-1).mean().backward()
        peaks[mode] = torch.cuda.max_memory_allocated()
        del model
    assert peaks["full"] < peaks["selective"] < peaks["none"], peaks


# --- the attention microbenchmark ----------------------------------------------------------------


def test_the_microbenchmark_check_passes_a_right_backend_and_stops_a_wrong_one():
    from b200lab.workloads.attention_bench import check_against_math

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    q, k, v = qkv(batch=1, heads=2, kv_heads=2, t=300, d=16, dtype=torch.float32)
    grad_out = torch.randn_like(q)
    found = check_against_math(backend(SdpaAttention, "sdpa", window=40), q, k, v, grad_out, 32, g)
    assert len(found["rows"]) == 3 and found["rows"][0] == [0, 32] and found["rows"][-1] == [268, 300]
    assert found["out_rel_err"] < 1e-5 and found["dq_rel_err"] < 1e-4
    q16, k16, v16 = (x.bfloat16() for x in (q, k, v))  # bf16 within its own tolerance
    assert (
        check_against_math(backend(SdpaAttention, "sdpa", window=40), q16, k16, v16, None, 32, g)["out_rel_err"] < 2e-2
    )

    class DropsTheWindow(SdpaAttention):  # a wrong kernel: says it has a window, attends causally
        def configured(self, mask):
            return mask

    wrong = DropsTheWindow(
        complete("attention", {"_target_": "b200lab.attention.sdpa.SdpaAttention", "name": "sdpa", "window": 40}), "cpu"
    )
    with pytest.raises(
        RuntimeError, match=r"attention=sdpa differs from the math reference \(.*output rows 268\.\.300"
    ):
        check_against_math(wrong, q, k, v, None, 32, g)  # the first rows cannot see the window: later blocks can


@pytest.mark.e2e
def test_attention_workload_counts_the_pairs_its_mask_keeps(tmp_path, store):
    from support import INLINE, results_files, run_cli

    t, window, heads, d = 256, 64, 2, 16
    proc = run_cli(
        [
            "-m",
            "workload=attention",
            f"seq.len={t}",
            "seq.batch=1",
            f"workload.options.heads={heads}",
            f"workload.options.head_dim={d}",
            "workload.warmup_steps=1",
            "workload.steps=3",
            "workload.min_time_s=0",
            "attention=sdpa,flex_sliding",
            f"attention.window={window}",
            INLINE,
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    runs = {r["config"]["attention"]["name"]: r for r in results_files(tmp_path)}
    assert set(runs) == {"sdpa", "flex_sliding"}
    pairs = sum(min(i + 1, window) for i in range(t))  # counted one query at a time
    for r in runs.values():
        m = r["metrics"]
        assert r["status"] == "ok" and r["effective"]["pairs"] == pairs
        flops = m["attn_tflops"] * 1e12 * m["step_ms_p50"] / 1e3
        assert abs(flops - 4 * heads * d * pairs) < 1e-6 * flops
        assert m["out_rel_err_vs_math"] < 1e-4
    assert runs["flex_sliding"]["effective"]["attention"]["kernel"] == "flex-cpu"
    assert runs["sdpa"]["effective"]["attention"]["kernel"].startswith("sdpa-")


@pytest.mark.e2e
def test_attention_workload_refuses_what_a_cpu_cannot_time(tmp_path, store):
    from support import run_cli

    proc = run_cli(
        ["workload=attention", "workload.options.cuda_graph=true", "attention=flex", "workload.options.backward=true"],
        tmp_path,
        store,
    )
    assert proc.returncode == 2, proc.output
    assert "workload.options.cuda_graph=true needs a CUDA GPU and this job runs on cpu" in proc.stderr
    assert (
        "workload.options.backward=true with attention=flex on cpu: PyTorch's FlexAttention has no backward pass there"
        in proc.stderr
    )
