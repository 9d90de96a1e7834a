"""Issue 14's GPU figures from the recorded files: ours vs the reference per pair, MFU per point,
and the DLRM's embedding bandwidth as a fraction of the same card's copy bandwidth.

    python3 experiments/scripts/families_summary.py multirun     # after gpu_families.sh's phases
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAIRS = {  # lab sweep dir -> (reference model, precision, compiled)
    "fam_vit_autocast": ("vit_l16", "autocast", False),
    "fam_vit_bf16": ("vit_l16", "bf16", False),
    "fam_dit_autocast": ("dit_xl2", "autocast", False),
    "fam_dit_bf16": ("dit_xl2", "bf16", False),
    "fam_vit_compiled": ("vit_l16", "autocast", True),
    "fam_dit_compiled": ("dit_xl2", "autocast", True),
}


def results(root: Path, sweep: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / sweep).glob("*/results.json"))]


def short(run: dict) -> str:
    return ((run.get("mlflow") or {}).get("run_id") or "?")[:8]


def main(root: Path) -> None:
    refs = (
        [json.loads(line) for line in (root / "reference_families.jsonl").read_text().splitlines()]
        if (root / "reference_families.jsonl").exists()
        else []
    )
    print("| pair | ours samples/s (trial range) | reference samples/s (trial range) | ratio | our MFU | run | card |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sweep, (model, precision, compiled) in PAIRS.items():
        ours = [r for r in results(root, sweep) if r["status"] == "ok"]
        ref = [r for r in refs if r["model"] == model and r["precision"] == precision and r["compile"] == compiled]
        if not ours or not ref:
            continue
        o, r = ours[-1]["metrics"], ref[-1]
        trials = (
            f"{o['trial_tokens_per_s_min']:,.0f}-{o['trial_tokens_per_s_max']:,.0f}"
            if "trial_tokens_per_s_min" in o
            else "-"
        )
        print(
            f"| {sweep} ({precision}, {'compiled' if compiled else 'eager'}) | {o['tokens_per_s']:,.1f} ({trials}) | "
            f"{r['samples_per_s']:,.1f} ({r['samples_per_s_min']:,.0f}-{r['samples_per_s_max']:,.0f}) | "
            f"{o['tokens_per_s'] / r['samples_per_s']:.3f} | {o.get('mfu', float('nan')):.3f} | {short(ours[-1])} | "
            f"{r['gpu']} {r['date']} |"
        )
    hbm = [r["metrics"]["hbm_gbps"] for r in results(root, "fam_hbm") if r["status"] == "ok"]
    print("\n| point | status | samples/s | step p50 ms | MFU | embedding GB/s | of copy bandwidth | run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sweep in sorted(p.name for p in root.glob("fam_*")):
        if sweep in PAIRS or sweep == "fam_hbm":
            continue
        for r in results(root, sweep):
            c, m = r["config"], r["metrics"]
            name = (
                f"{c['model']['name']} {c['workload']['name']} {c['seq']['name']} B{c['seq']['batch']} "
                f"{c['precision']['name']}"
            )
            emb = m.get("embedding_gbps")
            frac = f"{emb / hbm[-1]:.2f} of {hbm[-1]:,.0f}" if emb and hbm else "-"
            print(
                f"| {name} | {r['status']} | {m.get('tokens_per_s', 0):,.1f} | {m.get('step_ms_p50', 0):.2f} | "
                f"{m.get('mfu', 0):.3f} | "
                f"{'-' if emb is None else f'{emb:,.0f}'} | {frac} | {short(r)} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "multirun"))
