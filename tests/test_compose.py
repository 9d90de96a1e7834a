"""Every option of every group, and every experiment preset, composes with Hydra and validates."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml
from omegaconf import OmegaConf

from b200lab.core.machine import ConfigError
from b200lab.core.validation import validate
from support import CONF, REPO, compose

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "debug"))
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
PRESETS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def test_every_group_has_options():
    assert set(GROUPS) >= {"model", "precision", "attention", "parallelism", "seq", "workload", "compile"}
    assert len(OPTIONS) >= 25


NEEDS_FP8_GPU = {
    **{o: "this run's device is cpu" for o in ("fp8", "fp8_current", "fp8_block", "fp8_mxfp8", "fp8_nvfp4")},
    "fp8_torchao": "precision=fp8_torchao",
}


NEEDS_CUDA_ATTENTION = {
    "sdpa_cudnn": "cuDNN attention needs a CUDA GPU",
    "sdpa_efficient": "memory-efficient attention needs a CUDA GPU",
    "te": "attention=te needs a CUDA GPU",
}


def _own_seq(group: str, option: str) -> list[str]:
    """The image and latent families fix their sample's size in the model (docs/families.md): such
    a model option composes with the seq option of that size."""
    if group != "model":
        return []
    spec = yaml.safe_load((CONF / "model" / f"{option}.yaml").read_text())
    return next(
        (
            [f"seq={prefix}{spec[key]}"]
            for key, prefix in (("image_size", "img"), ("latent_size", "latent"))
            if key in spec
        ),
        [],
    )


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_composes_and_validates(group, option):
    cfg = compose([f"{group}={option}", *_own_seq(group, option)])
    assert cfg[group].name == option
    device = "cpu"
    if (group == "parallelism" and "tp" not in cfg.parallelism) or (
        group == "workload" and option in ("allreduce", "comms")
    ):
        cfg.parallelism.nproc = (
            2 if option in ("allreduce", "comms") else 1
        )  # CI's CPU has 2 cores; tp/fsdp derive tp x dp
    if group == "precision" and option in NEEDS_FP8_GPU:  # refused on a CPU, each with its reason
        with pytest.raises(ConfigError, match=NEEDS_FP8_GPU[option]):
            validate(cfg, device)
        return
    if group == "attention" and option in NEEDS_CUDA_ATTENTION:
        with pytest.raises(ConfigError, match=NEEDS_CUDA_ATTENTION[option]):
            validate(cfg, device)
        return
    if group == "profile" and option in ("nsys", "ncu") and shutil.which(option) is None:
        with pytest.raises(ConfigError, match=f"`{option}` is not on PATH"):
            validate(cfg, device)
        return
    validate(cfg, device)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes(preset):
    cfg = compose([f"experiment={preset}"], return_hydra_config=True)
    assert cfg.preset == preset
    sweep = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert sweep, f"preset {preset} defines no sweep"
    for key, values in sweep.items():  # every swept value composes too
        for value in str(values).split(","):
            compose([f"experiment={preset}", f"{key}={value}"])


def test_seq_ladder_matches_the_legacy_suite():
    ladder = {
        name: (compose([f"seq={name}"]).seq.len, compose([f"seq={name}"]).seq.batch)
        for name in ["1k", "2k", "4k", "8k", "12k", "16k", "32k"]
    }
    assert ladder == {
        "1k": (1024, 8),
        "2k": (2048, 4),
        "4k": (4096, 2),
        "8k": (8192, 2),
        "12k": (12288, 1),
        "16k": (16384, 1),
        "32k": (32768, 1),
    }


@pytest.mark.parametrize(
    "overrides,training,expected",
    [
        (["precision=bf16"], True, ("bfloat16", "bfloat16", "float32", "float32", False)),
        (["precision=bf16"], False, ("bfloat16", "bfloat16", None, "bfloat16", False)),
        (["precision=bf16_autocast"], True, ("bfloat16", "float32", None, "float32", True)),
        (["precision=bf16", "precision.master_dtype=none"], True, ("bfloat16", "bfloat16", None, "bfloat16", False)),
        (
            ["precision=bf16", "precision.grad_accum_dtype=bfloat16"],
            True,
            ("bfloat16", "bfloat16", "float32", "bfloat16", False),
        ),
        (["precision=fp16"], True, ("float16", "float16", "float32", "float32", False)),
        (["precision=fp32"], True, ("float32", "float32", None, "float32", False)),
    ],
)
def test_precision_recipes_resolve_as_documented(overrides, training, expected):
    from b200lab.precision.recipe import resolve

    r = resolve(compose(overrides).precision, "cuda", training)
    assert (r.compute, r.param, r.master, r.grad_accum, r.autocast) == expected


def test_gpt_40b_is_the_legacy_config():
    m = compose(["model=gpt_40b"]).model
    assert (m.n_layers, m.d_model, m.n_heads, m.d_ff, m.vocab_size) == (48, 8192, 64, 32768, 50304)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["seq.batch=0"], "seq.batch=0: must be a positive integer"),
        (["model.d_model=-8"], "model.d_model=-8: must be a positive integer"),
        (["model.n_heads=5"], "model.n_heads=5 does not divide model.d_model=128"),
        (["model.pos=learned", "model.max_seq_len=512", "seq=1k"], "seq.len=1024 exceeds model.max_seq_len=512"),
        (["parallelism.nproc=100000"], "parallelism.nproc=100000 exceeds"),
        (["workload.steps=0"], "workload.steps=0"),
        (["compile.mode=fastest"], "compile.mode='fastest'"),
        (["precision.compute_dtype=int4"], "precision.compute_dtype='int4': choose one of"),
        (
            ["precision=fp32", "precision.param_dtype=bfloat16"],
            "precision.param_dtype=bfloat16 is narrower than precision.compute_dtype=float32",
        ),
        (
            ["workload=train", "precision=bf16", "precision.master_dtype=none", "precision.grad_accum_dtype=float32"],
            "precision.grad_accum_dtype=float32 needs the parameters or their master copy in float32",
        ),
        (["precision.master_dtype=float16"], "precision.master_dtype='float16': choose one of"),
        (["precision.compute_dtype=fp8"], "the autocast recipe runs float dtypes only; FP8 needs an FP8 recipe class"),
        (["+seq.bach=4"], "seq.bach: not a field of SeqConfig"),
        (["+model.n_experts=8", "+model.top_k=2"], "model.n_experts: not a field of GPTConfig"),
        (
            ["+workload.options.grad_acum=2", "workload=train"],
            "workload.options.grad_acum: not a field of TrainOptions",
        ),
        (["+lr=1"], "lr: not a config group or field"),
        (["model.n_kv_heads=3"], "model.n_kv_heads=3 does not divide model.n_heads=4"),
        (["attention.backends=[flash,turbo]"], "attention.backends=['flash', 'turbo']: unknown ['turbo']"),
        (["workload=gemm", "workload.options.shape=8x8"], "workload.options.shape='8x8': expected MxNxK"),
        (["workload=gemm", "workload.options.dtype=fp8"], "workload.options.dtype=fp8 needs a CUDA GPU"),
        (["workload=gemm", "compile=default"], "workload=gemm builds no model to compile"),
        (["workload=allreduce"], "workload=allreduce needs parallelism.nproc >= 2 (it is 1)"),
        (["workload=train", "workload.options.grad_accum=0"], "workload.options.grad_accum=0: must be >= 1"),
        (["+workload.options.bogus=1"], "workload.options.bogus: not a field of NoOptions"),
        (["+profile.options.tpo=5"], "profile.options.tpo: not a field of ProfileOptions"),
    ],
)
def test_validation_names_the_keys(overrides, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides), "cpu")
    assert needle in str(err.value)


def test_moe_fields_on_the_dense_gpt_are_refused_with_a_hint():
    with pytest.raises(ConfigError) as err:
        validate(compose(["+model.n_experts=8"]), "cpu")
    assert "mixture-of-experts is its own model family" in str(err.value)


def test_unknown_field_without_plus_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="n_experts"):
        compose(["model.n_experts=8"])


def test_validate_fills_each_components_schema_defaults():
    cfg = validate(compose(["model=gpt_1b", "workload=train"]), "cpu")
    assert cfg.model._target_ == "b200lab.models.gpt.family.GPTFamily"
    assert (cfg.model.pos, cfg.model.rope_pairs, cfg.model.n_kv_heads) == ("rope", "half", None)
    assert cfg.workload.options.grad_accum == 1 and cfg.workload.trials == 1
    assert cfg.precision.master_dtype == "auto"


@pytest.mark.parametrize(
    "group,name",
    [(g, n) for g, names in __import__("b200lab.core.registry", fromlist=["SHIPPED"]).SHIPPED.items() for n in names],
)
def test_every_shipped_option_names_an_implementation_of_its_group_that_carries_its_config_class(group, name):
    from b200lab.core.registry import BASE_CLASSES, implementation, load, options

    option = options(group)[name]
    cls = implementation(group, option.target)
    assert issubclass(cls, load(BASE_CLASSES[group]))
    assert cls.Config is option.config and dataclasses.is_dataclass(option.config) and callable(option.config.validate)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.run", "planted.Workload"])
def test_unregistered_targets_are_refused_before_any_import(target, tmp_path, monkeypatch):
    """A module in the working directory named as a target must not even be imported: its top-level
    code would run in the parent during validation."""
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Workload: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(compose([f"workload._target_={target}"]), "cpu")
    assert f"workload._target_={target!r} is not a registered workload component, so it is not imported" in str(
        err.value
    )
    assert not marker.exists()


def test_a_registered_target_that_cannot_import_is_a_configuration_error(monkeypatch):
    from b200lab.core import registry

    monkeypatch.setattr(
        registry,
        "plugin_entries",
        lambda group: {"ghost": ("ghost_pkg.Ghost", "ghost-dist")} if group == "workload" else {},
    )
    registry._options.cache_clear()
    try:
        with pytest.raises(ConfigError, match="ghost_pkg.Ghost cannot be imported: ModuleNotFoundError"):
            validate(compose(["workload._target_=ghost_pkg.Ghost"]), "cpu")
    finally:
        registry._options.cache_clear()


def test_a_target_of_the_wrong_kind_is_refused():
    with pytest.raises(ConfigError, match="is not a registered workload component"):
        validate(compose(["workload._target_=b200lab.models.gpt.family.GPTFamily"]), "cpu")


def _refusals(overrides: list[str], device: str) -> list[str]:
    """What validation refuses for ``overrides`` composed on this machine as ``device`` ([]: nothing)."""
    try:
        validate(compose(overrides), device)
    except ConfigError as exc:
        return [p for p in str(exc).splitlines()[1:] if p.strip()]
    return []


def _scale_script_points(gpus: int = 8, script: str = "gpu_scale.sh", only: str = "") -> list[list[str]]:
    """Every b200lab command of experiments/scripts/``script`` (by default gpu_scale.sh, issue
    15's 4/8-GPU runs) whose line holds ``only``, as override lists, its shell variables filled in
    for a host of ``gpus`` GPUs, one list per value of each swept key."""
    import itertools
    import re

    text = (REPO / "experiments" / "scripts" / script).read_text().replace("\\\n", " ")
    widths = lambda *ns: ",".join(str(n) for n in ns if n <= gpus)  # noqa: E731 (the script's upto)
    env = {
        "$TP": widths(4, 8),
        "$DP": widths(1, 2, 4, 8),
        "$(upto 8 | grep -q 8 && echo 8 || echo 4)": "8" if gpus >= 8 else "4",
        "$(upto 4 8 | tr , '\\n' | tail -1)": str(max([n for n in (4, 8) if n <= gpus], default=gpus)),
        # the script's own override sets (gpu_fp8_moe.sh: TRAIN holds $T3, so it is filled in first)
        **{f"${name}": value for name, value in re.findall(r'^(TRAIN|T3)="([^"]*)"', text, flags=re.M)},
    }
    points = []
    # `lab -m ARGS` (gpu_scale.sh, gpu_serving.sh, gpu_parallel.sh) or `sweep NAME ARGS` (the resumable scripts)
    for line in re.findall(r"^\s*(?:\w+\) )?(?:lab -m|sweep \w+) (.+)$", text, flags=re.M):
        if only not in line:
            continue
        for var, value in env.items():
            line = line.replace(var, value)
        line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)  # ${QPS:-4,2,1}: the default
        line = re.sub(r"\s#.*$", "", line)  # a comment after the command
        args = [a.strip("'") for a in line.split() if "=" in a and not a.startswith("hydra.sweep.dir=")]
        choices = [a.split("=", 1)[1].split(",") if "," in a.split("=", 1)[-1] else [a.split("=", 1)[1]] for a in args]
        keys = [a.split("=", 1)[0] for a in args]
        points += [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*choices)]
    return points


@pytest.mark.parametrize("gpus", [4, 8])
def test_scale_script_commands_compose(gpus):
    """Issue 15's commands are ready to run: each point composes, and on this CPU the only thing
    validation refuses is the rank count (no other key is wrong)."""
    points = _scale_script_points(gpus)
    assert len(points) >= 10
    for overrides in points:
        others = [p for p in _refusals(overrides, "cpu") if "gloo ranks" not in p and "exceeds the" not in p]
        assert not others, (overrides, others)


def test_serving_script_commands_compose():
    """The serve phases of experiments/scripts/gpu_serving.sh are ready to run: on a machine
    taken for a GPU host, validation refuses only the GPU count (0 here)."""
    points = _scale_script_points(2, "gpu_serving.sh", only="experiment=serve_load")
    assert (
        len(points) >= 14
        and any("compile=default" in p for p in points)
        and any("attention.backends=[efficient]" in p for p in points)
        and any("workload.options.decode_graphs=true" in p for p in points)
        and any("workload.options.token_budget=2048" in p for p in points)
    )
    for overrides in points:
        problems = _refusals(overrides, "cuda")
        assert len(problems) == 1 and "GPUs visible on this machine" in problems[0], (overrides, problems)


def test_expert_parallel_script_commands_compose():
    """gpu_parallel.sh's ep phase (issue 29) is ready: on this CPU only the rank count is refused."""
    points = _scale_script_points(2, "gpu_parallel.sh", only="expert_parallel")
    assert len(points) == 3
    for overrides in points:
        problems = _refusals(overrides, "cpu")
        assert all("gloo ranks" in p or "exceeds the" in p for p in problems), (overrides, problems)


def test_fp8_moe_script_commands_compose():
    """Every sweep of experiments/scripts/gpu_fp8_moe.sh composes, and on a machine taken for a GPU
    host validation refuses only what this one lacks: the GPU and Transformer Engine."""
    points = _scale_script_points(1, "gpu_fp8_moe.sh")
    assert len(points) >= 14 and any("precision.moe_experts=te" in " ".join(p) for p in points)
    for overrides in points:
        problems = _refusals(overrides, "cuda")
        assert all("GPU" in p or "Transformer Engine" in p for p in problems), (overrides, problems)


def test_debug_fast_is_the_one_short_run_every_test_uses():
    cfg = compose(["debug=fast", "model=gpt_1b", "workload=train"])
    assert (cfg.seq.name, cfg.workload.warmup_steps, cfg.workload.steps, cfg.workload.min_time_s) == ("short", 1, 3, 0)
    assert compose(["debug=fast", "seq=2k"]).seq.name == "2k"  # the command line still wins
    validate(cfg, "cpu")
