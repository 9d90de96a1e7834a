"""Building a model on the meta device and materialising only what a rank holds.

A family whose model fills each parameter from its name (``model.init_parameter(name, tensor,
generator)``; its config declares ``init_by_name``) is constructed with every parameter on
``meta`` (:func:`parameters_on_meta`); buffers stay real, they are small. The parallel plan
(tensor parallel, FSDP2) then splits the meta parameters, and :func:`materialise` allocates
each rank's shards and fills them one parameter at a time: the parameter in full, in the dtype
it was built in, from a generator seeded by the run's seed and its name (or from a state dict),
laid out as the plan lays it out, and the rank's slice of it copied into the shard. So a rank
holds its shards plus one full parameter at a time, and every layout, one rank's included, starts
from the same weights for the same seed. Under expert parallel a rank's expert weights hold only
its experts' rows (b200lab/parallel/expert.py: ``expert_parameters``): the whole parameter is
filled and the rank's block copied.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import torch
import torch.nn as nn

from b200lab.parallel.expert import expert_parameters

# what a module's constructor calls to fill its parameters (torch.nn.init's functions and the
# tensor methods they end in): on a meta tensor each computes nothing
_INITIALISERS = frozenset(
    "normal_ uniform_ trunc_normal_ constant_ ones_ zeros_ zero_ fill_ eye_ dirac_ orthogonal_ sparse_ "
    "xavier_uniform_ xavier_normal_ kaiming_uniform_ kaiming_normal_".split()
)


class _MetaInitSkipped(torch.overrides.TorchFunctionMode):
    """Skips initialising meta tensors. Meta's ``normal_`` is a Python decomposition whose first
    call imports torch._dynamo (about a second) in a job that may never compile."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if getattr(func, "__name__", None) in _INITIALISERS and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def parameters_on_meta():
    """Every parameter registered inside becomes a meta tensor (its constructor's init is then
    skipped); buffers keep their values. A parameter already on meta (a tied weight) is kept."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    def to_meta(module, name, param):
        if param is None or param.is_meta:
            return None
        return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        with _MetaInitSkipped():
            yield
    finally:
        handle.remove()


def parameter_seed(seed: int, name: str) -> int:
    """A seed of its own for each parameter: independent of the order or the rank that fills it."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def initialiser(model: nn.Module, seed: int, device: torch.device) -> Callable[[str, torch.Tensor], None]:
    """fill(name, full): the model's own rule for that parameter, from its seeded generator."""

    def fill(name: str, full: torch.Tensor) -> None:
        generator = torch.Generator(device=device)
        generator.manual_seed(parameter_seed(seed, name))
        model.init_parameter(name, full, generator)

    return fill


def from_state_dict(state_dict: dict) -> Callable[[str, torch.Tensor], None]:
    """fill(name, full): the state dict's tensor (the family's plain names)."""

    def fill(name: str, full: torch.Tensor) -> None:
        full.copy_(state_dict[name])

    return fill


def check_state_dict(model: nn.Module, state_dict: dict) -> None:
    """``load_state_dict(strict=True)``'s key check and message, before anything is materialised."""
    expected, given = set(model.state_dict().keys()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    errors = [
        f"{what} key(s) in state_dict: {', '.join(repr(k) for k in keys)}."
        for what, keys in (("Unexpected", unexpected), ("Missing", missing))
        if keys
    ]
    if errors:
        raise RuntimeError(f"Error(s) in loading state_dict for {type(model).__name__}:\n\t" + "\n\t".join(errors))


@torch.no_grad()
def materialise(
    model: nn.Module,
    device: torch.device,
    fill: Callable[[str, torch.Tensor], None],
    build_dtype: torch.dtype,
    layout: Callable[[str, torch.Tensor], torch.Tensor] = lambda name, full: full,
    state_dict: dict | None = None,
) -> None:
    """Allocate the meta parameters of ``model`` (plain, tensor-parallel or FSDP2 DTensors) on
    ``device`` and fill each rank's part: ``fill(name, full)`` writes the whole parameter, in
    ``build_dtype`` (the dtype the model was built in, before FSDP2 may keep float32 shards);
    ``layout(name, full)`` puts it in the parallel model's layout (e.g. reordered qkv rows); the
    rank's slice then goes into its shard. Buffers keep their values (moved to ``device``);
    persistent ones are loaded from ``state_dict`` when given."""
    buffers = [(m, k, b) for m in model.modules() for k, b in m._buffers.items() if b is not None]
    blocks = {name: (shard.first, shard.n_experts) for name, shard in expert_parameters(model).items()}
    # swap (not replace) each parameter, so tied weights and FSDP2's references survive
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model._apply(lambda t: _empty_on(t, device))  # what to_empty does, less a Python path for plain tensors
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    for module, key, buffer in buffers:
        module._buffers[key] = buffer.to(device)
    for name, param in model.named_parameters():
        block = blocks.get(name)  # (first row, full rows) of a parameter held in part
        shape = param.shape if block is None else (block[1], *param.shape[1:])
        full = torch.empty(shape, dtype=build_dtype, device=device)
        fill(name, full)
        full = layout(name, full.to(param.dtype))
        if block is not None:
            full = full.narrow(0, block[0], param.shape[0])
        local(param).copy_(local_slice(full, param))
        del full
    if state_dict is not None:
        for name, buffer in model.named_buffers():
            if name in state_dict:
                buffer.copy_(state_dict[name])


def _empty_on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Uninitialised storage like ``t`` on ``device``. For a plain meta tensor ``empty_like`` runs a
    Python decomposition that imports sympy (about half a second); a DTensor needs ``empty_like``."""
    if type(t) in (torch.Tensor, nn.Parameter) and t.is_contiguous():
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return torch.empty_like(t, device=device)


def local(param: torch.Tensor) -> torch.Tensor:
    """What this rank stores of ``param``: a DTensor's local shard, else the tensor itself."""
    return param.to_local() if hasattr(param, "to_local") else param


def local_slice(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's part of the full tensor ``full`` under ``param``'s placements (no communication)."""
    if not hasattr(param, "placements"):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
