"""precision=fp8 (Transformer Engine) and fp8_auto: what each machine may run, the converter's
numerics against the unconverted model, and checkpoints in the model's own names."""

from __future__ import annotations

import json

import pytest
import torch

from b200lab.models.gpt.family import GPTFamily
from b200lab.precision.availability import TE_RECIPES, recipe_problem, te_version
from support import FAST, INLINE, results_files, run_cli, runs

H100 = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(
    "recipe,capability,cuda,needle",
    [
        ("delayed", (8, 0), 12.8, "compute capability >= 8.9"),  # an A100
        ("current", (8, 9), 12.0, "needs CUDA >= 12.1"),
        ("block", (9, 0), 12.8, "FP8 block scaling needs CUDA >= 12.9"),
        ("mxfp8", (9, 0), 13.0, "MXFP8 needs compute capability 10.x (Blackwell"),
        ("nvfp4", (9, 0), 13.0, "NVFP4 needs compute capability >= 10.0"),
        ("mxfp8", (12, 0), 13.0, "not supported by Transformer Engine on compute capability 12.x"),
    ],
)
def test_each_recipe_names_what_the_card_lacks(recipe, capability, cuda, needle):
    message = recipe_problem(recipe, capability, H100, cuda)
    assert needle in message and f"{capability[0]}.{capability[1]}" in message


@pytest.mark.parametrize(
    "recipe,capability,cuda",
    [
        ("delayed", (9, 0), 12.8),
        ("current", (8, 9), 12.4),
        ("block", (9, 0), 13.0),
        ("mxfp8", (10, 0), 12.8),
        ("nvfp4", (10, 0), 12.8),
        ("delayed", (10, 0), 13.0),
    ],
)
def test_what_a_card_has_is_allowed(recipe, capability, cuda):
    assert recipe_problem(recipe, capability, "a GPU", cuda) is None


@pytest.mark.e2e
@pytest.mark.skipif(
    torch.cuda.is_available() and te_version() is not None, reason="this machine can run Transformer Engine FP8"
)
@pytest.mark.parametrize("precision", ["fp8", "fp8_current", "fp8_block"])
def test_fp8_without_te_or_an_fp8_gpu_exits_2_with_the_reason(tmp_path, store, precision):
    proc = run_cli([f"precision={precision}", "workload=train", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert f"precision={precision} precision.recipe=" in proc.stderr
    assert ("this run's device is cpu" in proc.stderr) or ("Transformer Engine is not installed" in proc.stderr)
    assert "Traceback" not in proc.output and runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
def test_an_unknown_recipe_is_refused_naming_the_choices(tmp_path, store):
    proc = run_cli(["precision=fp8", "precision.recipe=fp6", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 2
    assert "precision.recipe='fp6': choose one of " + ", ".join(TE_RECIPES) in proc.stderr


@pytest.mark.e2e
@pytest.mark.skipif(
    torch.cuda.is_available(), reason="on a GPU fp8_auto may find a real FP8 path; this checks the CPU fallback"
)
@pytest.mark.parametrize("workload", ["train", "forward"])
def test_fp8_auto_on_cpu_falls_back_and_records_why(tmp_path, store, workload):
    proc = run_cli(["precision=fp8_auto", f"workload={workload}", *FAST, INLINE], tmp_path, store)
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    eff = res["effective"]["precision"]
    assert eff["name"] == "fp8_auto" and eff["fallback"] is True and eff["ran"] == "no fp8 (precision=auto)"
    assert "transformer_engine: Transformer Engine's FP8 runs on NVIDIA GPUs" in eff["reason"]
    assert eff["peak_key"] == "fp32" and eff["compute_dtype"] == "float32"
    [run] = runs(store["MLFLOW_TRACKING_URI"])
    assert run.data.tags["effective.precision_reason"] == eff["reason"]


# ---- on a GPU with Transformer Engine -----------------------------------------------------------


def needs_te(test):
    """A GPU test that also needs Transformer Engine and FP8 tensor cores (compute capability >= 8.9)."""
    fp8_card = not torch.cuda.is_available() or torch.cuda.get_device_capability() >= (8, 9)
    return pytest.mark.gpu(
        pytest.mark.skipif(
            te_version() is None or not fp8_card,
            reason="needs Transformer Engine (pip install 'b200lab[fp8]') on a card with compute capability >= 8.9",
        )(test)
    )


def _tiny_gpt(**fields):
    from omegaconf import OmegaConf

    from b200lab.attention.sdpa import SdpaAttention
    from b200lab.models.config.gpt import GPTConfig
    from b200lab.models.gpt.model import GPT

    shape = {"n_layers": 2, "d_model": 256, "n_heads": 4, "d_ff": 1024, "vocab_size": 512, **fields}
    cfg = OmegaConf.structured(GPTConfig(_target_="b200lab.models.gpt.family.GPTFamily", name="t", **shape))
    attention = SdpaAttention(
        OmegaConf.structured(SdpaAttention.Config(_target_="b200lab.attention.sdpa.SdpaAttention", name="sdpa")), "cuda"
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = GPT(cfg, attention).to(torch.bfloat16)
    model.prepare(128)
    return model


def _recipe(name: str, training: bool = False, model=None):
    """The TE recipe; given a GPT, with the fusions its family declares (the workload hands them over
    the same way: ``precision.patterns = family.fp8_patterns()``)."""
    from omegaconf import OmegaConf

    from b200lab.precision.te_fp8 import TEFP8Precision

    cfg = OmegaConf.structured(
        TEFP8Precision.Config(_target_="b200lab.precision.te_fp8.TEFP8Precision", name="fp8", recipe=name)
    )
    recipe = TEFP8Precision(cfg, "cuda", training)
    if model is not None:
        recipe.patterns = GPTFamily(model.cfg).fp8_patterns()
    return recipe


@needs_te
def test_converted_model_with_fp8_off_computes_the_same_function():
    import copy

    from b200lab.precision.te_support import import_te

    import_te()
    plain = _tiny_gpt()
    ref_state = {k: v.clone() for k, v in plain.state_dict().items()}
    recipe = _recipe("delayed", model=plain)
    converted = recipe.convert(copy.deepcopy(plain))
    assert recipe.effective["fp8_modules"] == {"LayerNormLinear": 2, "Linear": 3, "LayerNormMLP": 2}
    idx = torch.randint(0, 512, (2, 128), device="cuda")
    with torch.no_grad():
        want = plain(idx).double()
        got = converted.module(idx).double()  # TE modules outside te.autocast: bf16 GEMMs
    # bf16 everywhere: the fused kernels round differently, within a few bf16 steps of the logits' scale
    assert (got - want).abs().max() <= 0.02 * want.abs().max(), (got - want).abs().max()
    back = recipe.plain_state_dict(converted)
    assert set(back) == set(ref_state)
    assert all(torch.equal(back[k], ref_state[k]) for k in ref_state)


@needs_te
@pytest.mark.parametrize("name", ["delayed", "current"])
def test_fp8_loss_is_close_to_bf16_and_training_lowers_it(name):
    import copy

    plain = _tiny_gpt()
    recipe = _recipe(name, training=True, model=plain)
    model = recipe.convert(copy.deepcopy(plain))
    g = torch.Generator(device="cuda").manual_seed(1)
    idx = torch.randint(0, 512, (4, 129), device="cuda", generator=g)
    x, y = idx[:, :-1], idx[:, 1:]
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(plain(x).float().flatten(0, 1), y.flatten())
        fp8 = torch.nn.functional.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
    assert abs(float(fp8) - float(ref)) <= 0.02 * float(ref)
    master = recipe.master_weights(model)
    opt = torch.optim.AdamW(master.masters, lr=1e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        loss.backward()
        master.accumulate()
        master.step(opt.step)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


@needs_te
def test_a_tied_head_and_unaligned_layers_stay_bf16_with_the_reason():
    from b200lab.precision.te_convert import convert_model
    from b200lab.precision.te_support import import_te

    te = import_te()
    model = _tiny_gpt(tie_embeddings=True, d_ff=1000)
    conv = convert_model(model, te, torch.bfloat16, "cuda", patterns=GPTFamily(model.cfg).fp8_patterns())
    assert conv.kept["head"] == "weight tied to another module (the embedding)"
    assert "not a multiple of 16" in conv.kept["blocks.0.mlp"]


@needs_te
@pytest.mark.e2e
@pytest.mark.parametrize("compile", ["none", "default"])
def test_lab_train_in_fp8_records_modules_recipe_and_both_mfus(tmp_path, store, compile):
    proc = run_cli(
        [
            "precision=fp8",
            "workload=train",
            "model=gpt_125m",
            "model.n_layers=2",
            "seq=1k",
            "workload.steps=5",
            f"compile={compile}",
        ],
        tmp_path,
        store,
    )
    assert proc.returncode == 0, proc.output
    [res] = results_files(tmp_path / "outputs")
    eff = res["effective"]["precision"]
    assert eff["recipe"] == "delayed" and "DelayedScaling" in eff["te_recipe"]
    assert eff["fp8_modules"]["LayerNormMLP"] == 2 and res["effective"]["compiled"] is (compile != "none")
    assert res["metrics"]["mfu"] > 0 and res["metrics"]["mfu_vs_bf16_peak"] > res["metrics"]["mfu"]
    tags = runs(store["MLFLOW_TRACKING_URI"])[0].data.tags
    assert (
        tags["effective.fp8_recipe"] == "delayed" and json.loads(tags["effective.fp8_modules"])["LayerNormLinear"] == 2
    )


@needs_te
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_moe_experts_on_te_grouped_linear_match_the_bf16_grouped_path(capacity_factor):
    import copy

    from b200lab.models.moe.layer import Experts, MoELayer
    from b200lab.models.patterns import GroupedExperts
    from b200lab.precision.te_convert import convert_model, plain_state_dict
    from b200lab.precision.te_support import import_te

    te = import_te()
    torch.manual_seed(0)
    with torch.device("cuda"):
        layer = MoELayer(256, 8, 2, 512, capacity_factor=capacity_factor).to(torch.bfloat16)
        layer.reset_parameters()
    want_state = {k: v.clone() for k, v in layer.state_dict().items()}
    converted = copy.deepcopy(layer)
    conv = convert_model(converted, te, torch.bfloat16, "cuda", patterns={Experts: GroupedExperts()})
    assert conv.modules["experts"] == "GroupedLinear x2"
    x = torch.randn(4, 96, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    want = layer(x).double()
    got = converted(x).double()  # outside te.autocast: bf16 grouped GEMMs
    assert (got - want).abs().max() <= 0.02 * want.abs().max(), (got - want).abs().max()
    back = plain_state_dict(converted, conv)
    assert set(back) == set(want_state) and all(torch.equal(back[k], want_state[k]) for k in want_state)
    with te.autocast(enabled=True, recipe=_recipe("delayed").te_recipe):
        fp8 = converted(x)
    fp8.float().pow(2).mean().backward()
    assert converted.experts.up_gemm.weight0.grad is not None and x.grad.abs().sum() > 0
    rel = (fp8.double() - want).norm() / want.norm()
    assert rel < 0.1, rel  # e4m3's relative step is 2^-3; errors average down over the GEMMs' sums


class _TEStandIns:
    """Modules with Transformer Engine's parameter names and shapes (LayerNormLinear, LayerNormMLP,
    Linear, GroupedLinear), so the converter's copying and naming run on a CPU. They check the
    mapping, not TE's kernels (those run in the GPU tests above)."""

    class LayerNormLinear(torch.nn.Module):
        def __init__(self, i, o, eps, bias, normalization, params_dtype, device):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(o, i, dtype=params_dtype))
            self.layer_norm_weight = torch.nn.Parameter(torch.empty(i, dtype=params_dtype))
            self.layer_norm_bias = (
                torch.nn.Parameter(torch.empty(i, dtype=params_dtype)) if normalization == "LayerNorm" else None
            )
            self.bias = torch.nn.Parameter(torch.empty(o, dtype=params_dtype)) if bias else None

    class LayerNormMLP(torch.nn.Module):
        def __init__(self, d, f, eps, bias, normalization, activation, params_dtype, device):
            super().__init__()
            self.layer_norm_weight = torch.nn.Parameter(torch.empty(d, dtype=params_dtype))
            self.layer_norm_bias = (
                torch.nn.Parameter(torch.empty(d, dtype=params_dtype)) if normalization == "LayerNorm" else None
            )
            self.fc1_weight = torch.nn.Parameter(torch.empty(f, d, dtype=params_dtype))
            self.fc2_weight = torch.nn.Parameter(torch.empty(d, f, dtype=params_dtype))
            self.fc1_bias = torch.nn.Parameter(torch.empty(f, dtype=params_dtype)) if bias else None
            self.fc2_bias = torch.nn.Parameter(torch.empty(d, dtype=params_dtype)) if bias else None

    class Linear(torch.nn.Module):
        def __init__(self, i, o, bias, params_dtype, device):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(o, i, dtype=params_dtype))
            self.bias = torch.nn.Parameter(torch.empty(o, dtype=params_dtype)) if bias else None


@pytest.mark.parametrize("fields", [{}, {"norm": "layernorm", "bias": True}, {"norm": "layernorm", "bias": False}])
def test_the_converter_carries_every_weight_and_maps_the_names_back(fields):
    from omegaconf import OmegaConf

    from b200lab.attention.base import MathAttention
    from b200lab.models.config.gpt import GPTConfig
    from b200lab.models.gpt.model import GPT
    from b200lab.precision.te_convert import convert_model, plain_state_dict

    cfg = OmegaConf.structured(
        GPTConfig(
            _target_="b200lab.models.gpt.family.GPTFamily",
            name="t",
            n_layers=2,
            d_model=64,
            n_heads=4,
            d_ff=256,
            vocab_size=128,
            **fields,
        )
    )
    attention = MathAttention(
        OmegaConf.structured(MathAttention.Config(_target_="b200lab.attention.base.MathAttention", name="math")), "cpu"
    )
    torch.manual_seed(int(torch.randint(0, 2**31, (1,))))
    model = GPT(cfg, attention)
    for p in model.parameters():  # fresh values everywhere, biases and norm weights included
        torch.nn.init.normal_(p)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    conv = convert_model(model, _TEStandIns, torch.float32, "cpu", patterns=GPTFamily(cfg).fp8_patterns())
    assert conv.counts() == {"LayerNormLinear": 2, "LayerNormMLP": 2, "Linear": 3}
    assert isinstance(model.blocks[0].norm_attn, torch.nn.Identity)
    back = plain_state_dict(model, conv)
    assert set(back) == set(want) and all(torch.equal(back[k], want[k]) for k in want)
    if fields.get("norm") == "layernorm" and not fields.get("bias"):  # TE's bias stays zero and frozen
        ln = model.blocks[0].qkv.layer_norm_bias
        assert not ln.requires_grad and not ln.any()


def test_the_converter_fuses_what_a_family_declares_whatever_its_attributes_are_called():
    """Converters key on module types the family declares (b200lab/models/patterns.py), never on
    attribute names: a block whose norm and projection are called ``ln`` and ``proj`` fuses when
    declared, stays two modules when not; the ViT's blocks and MLPs fuse through its own patterns."""
    from omegaconf import OmegaConf

    from b200lab.models.config.vit import ViTConfig
    from b200lab.models.patterns import NormLinear, NormMLP
    from b200lab.models.vit import MLP, EncoderBlock, ViTFamily
    from b200lab.precision.te_convert import convert_model, plain_state_dict

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.proj = torch.nn.LayerNorm(32), torch.nn.Linear(32, 48)

    torch.manual_seed(int(torch.randint(0, 2**31, (1,))))
    declared, plain = Odd(), Odd()
    for m in (declared, plain):
        for p in m.parameters():
            torch.nn.init.normal_(p)
    want = {k: v.clone() for k, v in declared.state_dict().items()}
    conv = convert_model(declared, _TEStandIns, torch.float32, "cpu", patterns={Odd: NormLinear("ln", "proj")})
    assert conv.counts() == {"LayerNormLinear": 1} and isinstance(declared.ln, torch.nn.Identity)
    back = plain_state_dict(declared, conv)
    assert set(back) == set(want) and all(torch.equal(back[k], want[k]) for k in want)
    assert convert_model(plain, _TEStandIns, torch.float32, "cpu").counts() == {
        "Linear": 1
    }  # nothing declared: no fusion

    cfg = OmegaConf.structured(
        ViTConfig(
            _target_="b200lab.models.vit.ViTFamily",
            name="v",
            image_size=32,
            patch_size=8,
            n_layers=2,
            d_model=64,
            n_heads=4,
            d_ff=128,
            n_classes=16,
        )
    )
    family = ViTFamily(cfg)
    assert family.fp8_patterns() == {EncoderBlock: NormLinear("norm_attn", "qkv"), MLP: NormMLP()}
    model = family.build(None)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    conv = convert_model(model, _TEStandIns, torch.float32, "cpu", patterns=family.fp8_patterns())
    assert conv.counts() == {"LayerNormLinear": 2, "LayerNormMLP": 2, "Linear": 3}  # out x2 and the head
    back = plain_state_dict(model, conv)
    assert set(back) == set(want) and all(torch.equal(back[k], want[k]) for k in want)


def test_small_gemms_stay_bf16_with_the_reason_and_large_ones_convert():
    """precision.small_gemms=bf16 (fp8_auto's default): at ViT-L/16's width (d 1024) every block GEMM
    but the MLP's down projection is below the rule, and a fused pattern stays whole in bf16; at
    gpt_1b's width (d 2048) every GEMM converts. Without the rule both convert fully."""
    from b200lab.precision.te_convert import convert_model, small_gemm

    def block(d: int, seed: int):
        torch.manual_seed(seed)
        return _tiny_cpu_gpt(n_layers=1, d_model=d, n_heads=d // 128, d_ff=4 * d, vocab_size=64)

    seed = int(torch.randint(0, 2**31, (1,)))
    narrow = block(1024, seed)
    conv = convert_model(narrow, _TEStandIns, torch.float32, "cpu", patterns=_gpt_patterns(narrow), keep_small=True)
    assert conv.counts() == {}  # qkv 1024x3072, the MLP (up 1024x4096), out 1024x1024, head 1024x64
    assert set(conv.kept) == {"blocks.0.qkv", "blocks.0.out", "blocks.0.mlp", "head"}
    assert "1024x3072: too small for FP8 to gain" in conv.kept["blocks.0.qkv"]
    assert "precision.small_gemms=fp8 converts it" in conv.kept["blocks.0.mlp"]
    assert not isinstance(narrow.blocks[0].norm_attn, torch.nn.Identity)  # the norm stays where it was
    full = convert_model(block(1024, seed), _TEStandIns, torch.float32, "cpu", patterns=_gpt_patterns(narrow))
    assert full.counts()["LayerNormMLP"] == 1 and full.counts()["LayerNormLinear"] == 1

    wide = block(2048, seed)
    conv = convert_model(wide, _TEStandIns, torch.float32, "cpu", patterns=_gpt_patterns(wide), keep_small=True)
    assert conv.counts()["LayerNormLinear"] == 1 and conv.counts()["LayerNormMLP"] == 1
    assert small_gemm(torch.nn.Linear(1024, 4096)) and small_gemm(torch.nn.Linear(1025, 64)) is None
    assert small_gemm(torch.nn.Linear(1024, 4112)) is None


def test_fp8_auto_keeps_small_gemms_in_bf16_and_fp8_converts_them():
    from omegaconf import OmegaConf

    from b200lab.precision.config.fp8_auto import FP8AutoConfig
    from b200lab.precision.config.te_fp8 import TEFP8Config

    auto = OmegaConf.structured(FP8AutoConfig(_target_=FP8AutoConfig.target, name="fp8_auto"))
    assert FP8AutoConfig.inner_config(auto, TEFP8Config).small_gemms == "bf16"
    auto.small_gemms = "fp8"
    assert FP8AutoConfig.inner_config(auto, TEFP8Config).small_gemms == "fp8"
    assert OmegaConf.structured(TEFP8Config(_target_=TEFP8Config.target, name="fp8")).small_gemms == "fp8"


def _tiny_cpu_gpt(**shape):
    from omegaconf import OmegaConf

    from b200lab.attention.base import MathAttention
    from b200lab.models.config.gpt import GPTConfig
    from b200lab.models.gpt.model import GPT

    cfg = OmegaConf.structured(GPTConfig(_target_="b200lab.models.gpt.family.GPTFamily", name="t", **shape))
    attention = MathAttention(
        OmegaConf.structured(MathAttention.Config(_target_="b200lab.attention.base.MathAttention", name="math")), "cpu"
    )
    return GPT(cfg, attention)


def _gpt_patterns(model):
    return GPTFamily(model.cfg).fp8_patterns()


def test_every_te_capability_question_is_asked_once_before_anything_compiles():
    """TE caches each answer on first use; the warm-up asks each one eagerly (a question missing in
    this TE version is skipped), so a compiled frame only reads cached values."""
    from b200lab.precision.availability import TE_AVAILABILITY
    from b200lab.precision.te_support import warm_te_checks

    asked = []

    class TE:  # Transformer Engine's availability functions, minus the NVFP4 one (an older TE)
        pass

    for name in set(TE_AVAILABILITY.values()) - {"is_nvfp4_available"}:
        setattr(TE, name, staticmethod(lambda return_reason=False, _n=name: asked.append((_n, return_reason))))
    warm_te_checks(TE)
    assert sorted(asked) == sorted((n, True) for n in set(TE_AVAILABILITY.values()) - {"is_nvfp4_available"})


@pytest.mark.parametrize("precision", ["fp8", "fp8_block", "fp8_auto"])
@pytest.mark.parametrize("compile_mode,compiled", [("default", True), ("none", False)])
def test_the_job_tells_a_te_precision_whether_its_model_is_compiled(precision, compile_mode, compiled):
    """moe_experts=auto picks its path by it; fp8_auto hands it to the recipe it runs."""
    from omegaconf import OmegaConf

    from b200lab.core.registry import config_class
    from b200lab.precision.config.fp8_auto import FP8AutoConfig
    from b200lab.precision.config.te_fp8 import TEFP8Config
    from support import compose

    job = compose([f"precision={precision}", f"compile={compile_mode}"])
    spec = config_class("precision", job.precision._target_)
    section = OmegaConf.merge(job.precision, spec.job_overrides(job.precision, job))
    assert section.compiled_model is compiled
    if precision == "fp8_auto":
        assert FP8AutoConfig.inner_config(section, TEFP8Config).compiled_model is compiled
        # the recorded config (validate's completed one) says so too; Transformer Engine's recipes are refused on CPU
        from b200lab.core.validation import validate

        assert validate(job, "cpu").precision.compiled_model is compiled
