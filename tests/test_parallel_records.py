"""The scaling efficiencies and step-time gaps docs/measurements/2026-11-26-parallel-overlap states
in prose, recomputed from its results.json files (efficiency = tokens/s on 2 GPUs / (2 x tokens/s
on 1 GPU), three decimals)."""

from __future__ import annotations

import pytest

from support import MEASUREMENTS, metric_of

README = MEASUREMENTS / "2026-11-26-parallel-overlap" / "README.md"
EFFICIENCIES = [  # (the README's words, 2-GPU run, 1-GPU run, stated efficiency)
    ("**FSDP2 scales 0.990** (584e8d74 over 56dc9da4)", "584e8d74", "56dc9da4", "0.990"),
    ("**0.953** on host A (e260b7e2 over d40d6043)", "e260b7e2", "d40d6043", "0.953"),
    ("**0.965** on host C with\n  the same 25 MiB buckets (96049121 over 6823aa5b)", "96049121", "6823aa5b", "0.965"),
    ("DDP scales **0.975** (140ca446 over 6823aa5b, host C)", "140ca446", "6823aa5b", "0.975"),
    ("scales\n  **0.924**", "087afee5", "d40d6043", "0.924"),
    ("16,122 on two (c129e925): **0.981**", "c129e925", "1bf1e6c6", "0.981"),
]
GAPS_MS = [("12 ms", "584e8d74", "56dc9da4"), ("32 ms longer on 2 GPUs", "140ca446", "6823aa5b")]


@pytest.mark.parametrize("claim", EFFICIENCIES, ids=lambda c: c[3])
def test_scaling_efficiency_stated_in_prose(claim):
    text, two, one, stated = claim
    assert text in README.read_text(), f"the README no longer says {text!r}"
    assert f"{metric_of(two, 'tokens_per_s') / (2 * metric_of(one, 'tokens_per_s')):.3f}" == stated


@pytest.mark.parametrize("claim", GAPS_MS, ids=lambda c: c[0])
def test_step_time_gap_stated_in_prose(claim):
    text, two, one = claim
    assert text in README.read_text()
    assert f"{metric_of(two, 'step_ms_p50') - metric_of(one, 'step_ms_p50'):.0f} ms" == text.split()[0] + " ms"
