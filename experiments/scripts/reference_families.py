"""The well-known implementations our ViT and DiT are compared with, timed like the lab times its own.

Deliberately outside the lab (no Hydra, no converter): timm's ``vit_large_patch16_224`` and
diffusers' ``DiTTransformer2DModel`` (DiT-XL/2: 16 heads x 72, 28 layers, 32x32x4 latents, patch 2,
1000 classes, out_channels 8), random weights, on the same synthetic data as the lab's families
(random images with labels; noisy latents at random timesteps with the noise as target), the same
loss (cross-entropy; noise-prediction MSE on the first 4 channels), the same optimizer (fused
AdamW, lr 3e-4, weight decay 0.1, gradients set to None after each step).

``--precision autocast``: float32 weights, forward under ``torch.autocast(bfloat16)`` (the lab's
``precision=bf16_autocast``); ``bf16``: bfloat16 weights stepped directly (the lab's
``precision=bf16 precision.master_dtype=none``). ``--compile`` compiles forward + loss as one
function (the lab's ``compile=default``). Timing as the lab's (b200lab/measure/timing.py): warm-up
steps, then ``--trials`` timed regions of ``--steps`` steps queued back to back with a CUDA event
pair per step; a trial's rate is batch x steps over its span (first start to last end), and
``samples_per_s`` is every timed step's samples over the trials' spans summed (the lab's
``tokens_per_s``). Prints one JSON line per run and appends it to ``--out``: samples/s, each trial's,
step-time percentiles, the card, the versions and the date.

    python3 experiments/scripts/reference_families.py --model vit_l16 --batch 64 --precision autocast --out ref.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the lab's checkout, installed or not
from b200lab.measure.environment import reference_provenance  # noqa: E402


def vit(args):
    import timm

    model = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=1000)
    images = torch.randn(args.batch, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 1000, (args.batch,), device="cuda")

    def forward_loss(m):
        return F.cross_entropy(
            m(images.to(next(m.parameters()).dtype)).float(), labels
        )  # as the lab's ViT casts its input

    from timm.layers import use_fused_attn

    return (
        model,
        forward_loss,
        {"library": f"timm {timm.__version__}", "name": "vit_large_patch16_224", "fused_attn": bool(use_fused_attn())},
    )


def dit(args):
    import diffusers
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(
        num_attention_heads=16,
        attention_head_dim=72,
        in_channels=4,
        out_channels=8,
        num_layers=28,
        sample_size=32,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    x0, noise = torch.randn(2, args.batch, 4, 32, 32, device="cuda").unbind(0)
    t = torch.randint(0, 1000, (args.batch,), device="cuda")
    y = torch.randint(0, 1000, (args.batch,), device="cuda")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64, device="cuda"), 0)[t].float()[
        :, None, None, None
    ]
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def forward_loss(m):
        out = m(x_t.to(next(m.parameters()).dtype), timestep=t, class_labels=y).sample
        return F.mse_loss(out[:, :4].float(), noise)

    return (
        model,
        forward_loss,
        {"library": f"diffusers {diffusers.__version__}", "name": "DiTTransformer2DModel (DiT-XL/2 config)"},
    )


def run(args) -> dict:
    torch.manual_seed(0)
    model, forward_loss, info = {"vit_l16": vit, "dit_xl2": dit}[args.model](args)
    model = model.cuda().train()
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    autocast = args.precision == "autocast"

    def loss_of():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return forward_loss(model)

    fn = torch.compile(loss_of) if args.compile else loss_of

    def step():
        loss = fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    step_ms, rates, spans = [], [], []
    for _ in range(args.trials):
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(args.steps)
        ]
        for start, end in events:
            start.record()
            loss = step()
            end.record()
        torch.cuda.synchronize()
        step_ms += [s.elapsed_time(e) for s, e in events]
        spans.append(events[0][0].elapsed_time(events[-1][1]) / 1e3)
        rates.append(args.batch * args.steps / spans[-1])
    if args.kernels:
        write_kernel_table(step, args.kernels)
    q = statistics.quantiles(step_ms, n=100)
    return {
        "script": "reference_families",
        "model": args.model,
        **info,
        "params": sum(p.numel() for p in model.parameters()),
        "precision": args.precision,
        "compile": bool(args.compile),
        "batch": args.batch,
        "trials": args.trials,
        "steps_per_trial": args.steps,
        "samples_per_s": args.batch * args.steps * args.trials / sum(spans),
        "samples_per_s_trials": rates,
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "step_ms_p50": statistics.median(step_ms),
        "step_ms_p10": q[9],
        "step_ms_p90": q[89],
        "step_ms_mean": statistics.fmean(step_ms),
        "final_loss": float(loss),
        "peak_mem_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_kernel_table(step, path: str, steps: int = 3) -> None:
    """Profile ``steps`` more steps (after the timed ones) and write each CUDA kernel's calls and
    device time per step, longest first: the same columns for the lab's run come from its trace."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = [
        (e.key, e.count / steps, e.device_time_total / steps) for e in prof.key_averages() if e.device_time_total > 0
    ]
    with open(path, "w") as f:
        f.write("kernel,calls_per_step,us_per_step\n")
        for name, calls, us in sorted(rows, key=lambda r: -r[2]):
            f.write(f'"{name.replace(chr(34), chr(39))}",{calls:g},{us:.1f}\n')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["vit_l16", "dit_xl2"], required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--precision", choices=["autocast", "bf16"], default="autocast")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--out", default=None, help="append the JSON line to this file")
    p.add_argument("--kernels", default=None, help="also profile 3 steps and write a per-kernel CSV here")
    args = p.parse_args()
    line = json.dumps({**run(args), **reference_provenance(sys.argv, torch.device("cuda"))})
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
