"""Routing statistics on the host, after timing: metrics from the experts' loads and the per-expert
load histogram a run logs as artifacts.

The input is the family's ``forward_stats`` of the last recorded steps: ``routed`` and ``kept``
(layers x experts, assignments per expert), ``aux_loss`` and ``z_loss``. Loads are summed over
those steps before any ratio is taken.

    moe_load_max_over_mean        busiest expert / mean expert, averaged over layers (1 = balanced)
    moe_load_max_over_mean_worst  the same, worst layer
    moe_load_entropy              entropy of each layer's load shares / ln(E), averaged (1 = balanced)
    moe_dropped_frac              assignments dropped by the capacity / assignments routed
    moe_idle_experts              (layer, expert) pairs that received no token
    moe_aux_loss, moe_z_loss      the router losses per layer, mean over steps (aux: 1 = balanced)

Each rank's metrics are of its own tokens (ranks/rankN.json keeps them per rank; the job's are
combined by ``METRIC_RULES``). Under expert parallel the stats also hold the group's loads
(``group_routed``, ``group_kept``: every rank's assignments, from the counts the ranks exchange
anyway), which give

    moe_group_load_max_over_mean         the load ratio of the whole group's tokens, mean over layers
    moe_group_load_max_over_mean_worst   the same, worst layer
    moe_ep_rank_load_max_over_mean       rows computed by the busiest rank's experts / the mean
                                         rank's, mean over layers (1 = every rank equally busy)
    moe_ep_rank_load_max_over_mean_worst the same, worst layer

and the artifacts then chart the group's loads.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# across ranks: the mean of ratios, the worst of the worst
METRIC_RULES = {
    "moe_load_max_over_mean": "mean",
    "moe_load_max_over_mean_worst": "max",
    "moe_load_entropy": "mean",
    "moe_dropped_frac": "mean",
    "moe_idle_experts": "max",
    "moe_aux_loss": "mean",
    "moe_z_loss": "mean",
    # expert parallel: the same value on every rank (the group's loads)
    "moe_group_load_max_over_mean": "mean",
    "moe_group_load_max_over_mean_worst": "max",
    "moe_ep_rank_load_max_over_mean": "mean",
    "moe_ep_rank_load_max_over_mean_worst": "max",
}


def loads(stats: list[dict], prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(routed, kept): assignments per (layer, expert), summed over the recorded steps; prefix
    ``group_``: the expert-parallel group's."""
    routed = sum(s[f"{prefix}routed"].detach().double().cpu() for s in stats).numpy()
    kept = sum(s[f"{prefix}kept"].detach().double().cpu() for s in stats).numpy()
    return routed, kept


def expert_parallel_metrics(stats: list[dict], ranks: int) -> dict[str, float]:
    """The group's load ratio and how evenly the ranks' experts were busy (``ranks`` owning
    consecutive blocks of the experts)."""
    routed, kept = loads(stats, "group_")
    ratio = routed.max(1) / routed.mean(1)
    per_rank = kept.reshape(len(kept), ranks, -1).sum(2)  # rows each rank's experts computed
    rank_ratio = per_rank.max(1) / per_rank.mean(1)
    return {
        "moe_group_load_max_over_mean": float(ratio.mean()),
        "moe_group_load_max_over_mean_worst": float(ratio.max()),
        "moe_ep_rank_load_max_over_mean": float(rank_ratio.mean()),
        "moe_ep_rank_load_max_over_mean_worst": float(rank_ratio.max()),
    }


def load_metrics(routed: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    """Balance and dropping of (layers x experts) loads."""
    n_experts = routed.shape[1]
    ratio = routed.max(1) / routed.mean(1)
    share = routed / routed.sum(1, keepdims=True)
    plogp = np.where(share > 0, share * np.log(np.where(share > 0, share, 1.0)), 0.0)
    entropy = -plogp.sum(1) / np.log(n_experts) if n_experts > 1 else np.ones(len(routed))
    return {
        "moe_load_max_over_mean": float(ratio.mean()),
        "moe_load_max_over_mean_worst": float(ratio.max()),
        "moe_load_entropy": float(entropy.mean()),
        "moe_dropped_frac": float(1.0 - kept.sum() / routed.sum()),
        "moe_idle_experts": float((routed == 0).sum()),
    }


def summarize(stats: list[dict], expert_parallel: int = 1) -> dict[str, float]:
    if not stats:
        return {}
    routed, kept = loads(stats)
    out = load_metrics(routed, kept)
    for key in ("aux_loss", "z_loss"):  # the model sums them over layers
        out[f"moe_{key}"] = float(np.mean([float(s[key]) for s in stats])) / len(routed)
    if "group_routed" in stats[0]:
        out.update(expert_parallel_metrics(stats, expert_parallel))
    return out


def write_artifacts(stats: list[dict], out_dir, effective: dict, expert_parallel: int = 1) -> list[Path]:
    """``moe_expert_load.csv`` (per layer and expert), ``moe_expert_load.png`` (tokens per expert
    over all layers, and each layer's load / mean as a heatmap) and ``moe_routing.json`` (what
    ran and the metrics). Under expert parallel the loads are the group's (every rank's tokens)."""
    if not stats:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    group = "group_routed" in stats[0]
    routed, kept = loads(stats, "group_" if group else "")
    csv_path = out_dir / "moe_expert_load.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "expert", "routed", "kept", "share_of_layer", "load_over_mean"])
        for layer, (r_row, k_row) in enumerate(zip(routed, kept)):
            for expert, (r, k) in enumerate(zip(r_row, k_row)):
                writer.writerow([layer, expert, int(r), int(k), f"{r / r_row.sum():.6f}", f"{r / r_row.mean():.6f}"])
    json_path = out_dir / "moe_routing.json"
    json_path.write_text(
        json.dumps(
            {
                "effective": effective,
                "steps": len(stats),
                "loads": "the expert-parallel group's (every rank's tokens)" if group else "this rank's tokens",
                **summarize(stats, expert_parallel),
            },
            indent=2,
            default=str,
        )
    )
    png_path = out_dir / "moe_expert_load.png"
    _plot(routed, kept, png_path, len(stats))
    return [csv_path, png_path, json_path]


def _plot(routed: np.ndarray, kept: np.ndarray, path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n_layers, n_experts = routed.shape
    fig, (bars, heat) = plt.subplots(
        2,
        1,
        figsize=(max(6.0, 0.25 * n_experts + 3), 3.0 + 0.25 * n_layers + 2.5),
        gridspec_kw={"height_ratios": [1.0, max(1.0, 0.12 * n_layers)]},
    )
    experts = np.arange(n_experts)
    bars.bar(experts, routed.sum(0), color="lightsteelblue", label="routed")
    bars.bar(experts, kept.sum(0), color="steelblue", label="kept")
    bars.axhline(routed.sum() / n_experts, color="black", linestyle="--", linewidth=1, label="balanced")
    bars.set_xlabel("expert")
    bars.set_ylabel(f"token assignments\n({n_layers} layers, {steps} steps)")
    bars.legend(fontsize=8)
    ratio = routed / routed.mean(1, keepdims=True)
    centred = matplotlib.colors.TwoSlopeNorm(
        vmin=0.0, vcenter=1.0, vmax=max(2.0, float(ratio.max()))
    )  # white = balanced
    image = heat.imshow(ratio, aspect="auto", cmap="RdBu_r", norm=centred)
    heat.set_xlabel("expert")
    heat.set_ylabel("layer")
    for axis in (bars.xaxis, heat.xaxis, heat.yaxis):
        axis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.colorbar(image, ax=heat, label="load / mean load")
    fig.suptitle("expert load per layer", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
