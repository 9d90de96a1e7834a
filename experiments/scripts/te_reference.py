"""A plain Transformer Engine GPT, timed by hand: the yardstick the lab's precision=fp8 must match.

Deliberately outside the lab (no Hydra, no converter): N ``te.TransformerLayer``s (RMSNorm,
fused QKV, causal flash attention, tanh-GELU MLP, no biases, rotary positions), an embedding and
a ``te.Linear`` head, bf16 parameters, fused AdamW on them (no master weights), batch B of
random tokens, the forward under ``te.autocast`` with the chosen recipe (``none`` = bf16).
Times steps with CUDA events after warm-up and prints one JSON line per recipe:

    python3 experiments/scripts/te_reference.py --layers 8 --hidden 4096 --recipes none,delayed,current,block
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

# PyTorch's own cuDNN before anything of TE's: TE's wheel loads an older cuDNN, and torch then
# refuses it ("cuDNN version incompatibility ... found runtime version (9, 14, 0)"); the lab's runs
# never met this because the rank initialises torch's cuDNN before it imports TE
torch.backends.cudnn.version()

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the lab's checkout, installed or not
from b200lab.measure.environment import reference_provenance  # noqa: E402


def build(args, te):
    heads, ffn = args.hidden // args.head_dim, 4 * args.hidden

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(args.vocab, args.hidden, dtype=torch.bfloat16)
            self.layers = torch.nn.ModuleList(
                te.TransformerLayer(
                    args.hidden,
                    ffn,
                    heads,
                    layernorm_epsilon=1e-5,
                    hidden_dropout=0.0,
                    attention_dropout=0.0,
                    self_attn_mask_type="causal",
                    normalization="RMSNorm",
                    bias=False,
                    activation="gelu",
                    fuse_qkv_params=True,
                    params_dtype=torch.bfloat16,
                    attn_input_format="bshd",
                    layer_number=i + 1,
                )
                for i in range(args.layers)
            )
            self.norm = te.RMSNorm(args.hidden, eps=1e-5).to(torch.bfloat16)
            self.head = te.Linear(args.hidden, args.vocab, bias=False, params_dtype=torch.bfloat16)
            self.rope = te.RotaryPositionEmbedding(args.head_dim)

        def forward(self, idx):
            x = self.embed(idx)
            freqs = self.rope(idx.shape[1])
            for layer in self.layers:
                x = layer(x, rotary_pos_emb=freqs)
            return self.head(self.norm(x))

    return Model().cuda()  # bf16 parameters; the rotary frequencies stay float32


def recipe_of(name: str):
    from transformer_engine.common import recipe

    return {
        "none": None,
        "delayed": recipe.DelayedScaling(),
        "current": recipe.Float8CurrentScaling(),
        "block": recipe.Float8BlockScaling(),
    }[name]


def run(args, name: str) -> dict:
    import transformer_engine.pytorch as te

    torch.manual_seed(0)
    model = build(args, te)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    data = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device="cuda")
    inputs, targets = data[:, :-1], data[:, 1:]
    rec = recipe_of(name)

    def step():
        with te.autocast(enabled=rec is not None, recipe=rec):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    tokens = args.batch * args.seq
    model = opt = None  # freed before the next recipe's model is built
    torch.cuda.empty_cache()
    return {
        "script": "te_reference",
        "recipe": name,
        "layers": args.layers,
        "hidden": args.hidden,
        "batch": args.batch,
        "seq": args.seq,
        "steps": len(times),
        "step_ms_p50": statistics.median(times),
        "step_ms_mean": statistics.fmean(times),
        "step_ms_std": statistics.pstdev(times),
        "tokens_per_s": tokens / (statistics.median(times) / 1e3),
        "final_loss": float(loss),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--recipes", default="none,delayed")
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = p.parse_args()
    for name in args.recipes.split(","):
        line = json.dumps({**run(args, name), **reference_provenance(sys.argv, torch.device("cuda"))})
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
