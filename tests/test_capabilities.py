"""Checks ask classes what they can do, never an option's or a family's name: a plugin that ships
a Transformer Engine recipe, Transformer Engine's attention and the mixture-of-experts family
under other names (tests/plugins/lab_renamed.py, registered by entry point) gets exactly the
refusals of the shipped options, and runs the same paths."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from b200lab.core import registry
from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from support import INLINE, REPO, compose, results_files, run_cli

PLUGINS = REPO / "tests" / "plugins"
SEARCH = f"hydra.searchpath=[file://{PLUGINS / 'conf'}]"
# shipped option -> the plugin's copy of it, and the words each puts in messages
RENAMED = {
    "precision=fp8": "precision=eight_bit",
    "attention=te": "attention=fused",
    "model=moe_tiny": "model=mixture_tiny",
}
WORDS = {
    "eight_bit": "fp8",
    "fused": "te",
    "mixture_tiny": "moe_tiny",
    "'mixture'": "'moe'",
    "lab_renamed.RenamedMixture": "b200lab.models.moe.family.MoEFamily",
}


@pytest.fixture
def plugins(monkeypatch):
    """The plugin package importable and its entry points visible, as after `pip install`."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    for cache in (registry._entry_points, registry._options):
        cache.cache_clear()
    yield
    sys.path.remove(str(PLUGINS)) if str(PLUGINS) in sys.path else None
    for cache in (registry._entry_points, registry._options):
        cache.cache_clear()


def problems(overrides: list[str], device: str) -> str:
    try:
        validate(compose([SEARCH, "seq=short", *overrides]), device)
    except ConfigError as exc:
        return str(exc)
    return ""


def as_shipped(text: str) -> str:
    for renamed, shipped in WORDS.items():
        text = text.replace(renamed, shipped)
    return text


CASES = [
    (["precision=fp8", "parallelism=tp", "parallelism.tp=2"], "cuda", "which the tensor-parallel plan"),
    (
        ["precision=fp8", "workload=train", "model.checkpointing=full"],
        "cuda",
        "recomputing a Transformer Engine FP8 block",
    ),
    (["precision=fp8", "workload=generate", "seq.batch=3"], "cuda", "FP8 GEMMs need a multiple of 8 rows"),
    (["precision=fp8", "workload=serve"], "cuda", "as many rows as requests running"),
    (["precision=fp8", "model=dlrm_small", "seq=onehot"], "cuda", "embedding-bag gathers"),
    (["precision=fp8", "model=vit_mini", "seq=img32", "seq.batch=12"], "cuda", "must be a multiple of 16"),
    (["attention=te", "model=vit_mini", "seq=img32"], "cuda", "wired causal-only"),
    (["attention=te", "workload=generate"], "cuda", "has no decode path"),
    (["attention=te", "attention.documents=true"], "cuda", "cannot keep attention inside packed documents"),
    (["attention=te", "model=dlrm_small", "seq=onehot"], "cpu", "has no attention"),
    (["model=moe_tiny", "parallelism=tp", "parallelism.tp=2"], "cpu", "has no tensor-parallel plan"),
    (["model=moe_tiny", "workload=train", "model.checkpointing=full"], "cpu", "not built for the MoE family"),
]


@pytest.mark.parametrize("overrides,device,needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_renamed_plugin_gets_the_shipped_refusals(plugins, overrides, device, needle):
    shipped = problems(overrides, device)
    renamed = problems([RENAMED.get(o, o) for o in overrides], device)
    assert needle in shipped, shipped
    assert as_shipped(renamed) == shipped


@pytest.mark.parametrize("overrides", [["model=moe_tiny", "workload=generate"], ["model=moe_tiny", "workload=serve"]])
def test_what_the_shipped_option_may_do_the_renamed_one_may_too(plugins, overrides):
    assert problems(overrides, "cpu") == "" and problems([RENAMED.get(o, o) for o in overrides], "cpu") == ""


def test_the_renamed_options_are_registered_as_plugins(plugins):
    options = {g: registry.options(g) for g in ("model", "precision", "attention")}
    assert (
        options["model"]["mixture"].source == "lab-plugins"
        and options["model"]["mixture"].target == "lab_renamed.RenamedMixture"
    )
    assert (
        options["precision"]["renamed_te"].config.may_use_te
        and options["attention"]["renamed_te_attention"].config.no_decode
    )
    assert OmegaConf.select(compose([SEARCH, "model=mixture_tiny"]), "model._target_") == "lab_renamed.RenamedMixture"


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["moe_tiny", "mixture_tiny"])
def test_a_renamed_family_decodes_through_the_same_path(model, tmp_path, store):
    """The decode contract and what it declares (a mixture reads only its routed experts, so the
    bandwidth bound is not claimed) come from the class, whatever the family is called."""
    proc = run_cli(
        [
            SEARCH,
            f"model={model}",
            "workload=generate",
            "seq=short",
            "workload.options.output_len=4",
            "workload.options.copy_gbps=100",
            "workload.warmup_steps=1",
            "workload.steps=2",
            INLINE,
        ],
        tmp_path,
        {**store, "PYTHONPATH": str(PLUGINS)},
    )
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    assert "not computed" in res["effective"]["copy_bandwidth"]["hbm_bw_util"]
    assert "hbm_bw_util" not in res["metrics"] and res["metrics"]["decode_gbps"] > 0
