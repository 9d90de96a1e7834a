"""``workload=validate``: does the parallel layout compute what one rank computes?

Every rank builds the model twice from the same weights: a plain single-rank reference (no
parallelism applied) and the model under the job's parallelism (tensor-parallel splits, DDP,
FSDP2). The reference runs forward and backward on the *global* batch (every data shard's
samples, gathered from the ranks); the parallel model on the rank's own shard, with its real
split GEMMs and collectives. Compared, with the tolerance of the compute dtype (or
``options.*_rtol``):

- logits: max |parallel - reference| / max |reference| over this shard's rows;
- loss: |parallel - reference| / |reference| of this shard's mean cross-entropy (the family's
  ``prediction_loss``: a router's auxiliary terms are in the gradients, not in this comparison);
- gradients: per parameter ||full parallel grad - reference grad|| / ||reference grad|| (the
  parallel gradient gathered from its shards, an expert-parallel rank's experts included, and put
  in the plain layout), the worst one.

Each error is the worst over ranks (``metrics``); the job passes when all three are within
tolerance, else it ends with status error and a message naming each failure. Both verdicts
write ``artifacts/validate.json`` (every parameter's error, the tolerances, the per-rank
parameter shapes and the collectives the parallel step issued). The timed steps are the
parallel model's forward + backward.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import torch

from b200lab.parallel.expert import expert_parameters, gather_rows
from b200lab.precision.base import unwrap
from b200lab.workloads.base import Workload, build_model, model_flops_per_step
from b200lab.workloads.config.validate import ValidateConfig

# compute dtype -> relative tolerances (logits, loss, gradients). Float32 differs only in the
# summation order of the split GEMMs and reductions; 16-bit formats round every partial sum.
AUTO_RTOL = {
    "float64": (1e-10, 1e-10, 1e-9),
    "float32": (1e-4, 1e-5, 1e-4),
    "tf32": (2e-2, 5e-3, 5e-2),
    "bfloat16": (3e-2, 1e-2, 8e-2),
    "float16": (1e-2, 5e-3, 5e-2),
}
ERRORS = ("logits_max_rel_err", "loss_rel_err", "grad_max_rel_err")


class ValidationFailed(RuntimeError):
    pass


class Validate(Workload):
    Config = ValidateConfig
    metric_rules = {**{k: "max" for k in ERRORS}, "validate_pass": "min"}

    def setup(self) -> None:
        from b200lab.parallel.base import ParallelStrategy

        ctx, cfg = self.ctx, self.ctx.cfg
        self.batch, self.seq_len = int(cfg.seq.batch), int(cfg.seq.len)
        plain_ctx = dataclasses.replace(
            ctx, strategy=ParallelStrategy(cfg.parallelism, ctx.rank, ctx.world_size, ctx.device)
        )
        reference = build_model(plain_ctx, training=True, compile_model=False)
        inputs, self.targets = ctx.data.batch(self.batch, self.seq_len, ctx.generator())
        self.inputs = inputs
        shard_index, all_inputs, all_targets = self._global_batch(inputs, self.targets)
        ref_logits, ref_loss = self._forward(reference, reference.model.train(), all_inputs, all_targets)
        ref_loss.backward()
        rows = slice(shard_index * self.batch, (shard_index + 1) * self.batch)
        ref_logits = ref_logits[rows].detach()
        ref_shard_loss = reference.family.prediction_loss(ref_logits, self.targets).detach()
        ref_grads = {n: p.grad for n, p in reference.model.named_parameters() if p.grad is not None}
        state = reference.precision.plain_state_dict(reference.model)

        self.built = build_model(ctx, training=True, compile_model=False, state_dict=state)
        self.model = self.built.model.train()
        del state
        logits, loss, collectives = self._parallel_step()
        errors, per_param = self._compare(logits, loss, ref_logits, ref_shard_loss, ref_grads)
        del reference, ref_grads, ref_logits
        self.errors = _worst_over_ranks(errors, ctx.device)
        self.tolerances = self._tolerances()
        failures = [
            f"{k}={self.errors[k]:.3g} exceeds its tolerance {self.tolerances[k]:.3g}"
            for k in ERRORS
            if not self.errors[k] <= self.tolerances[k]
        ]
        self.passed = not failures
        self.report = {
            "passed": self.passed,
            "errors": self.errors,
            "tolerances": self.tolerances,
            "grad_rel_err": per_param,
            "collectives": collectives,
            "rank": ctx.rank,
            "shard": shard_index,
            "local_shapes": _shapes(self.model, local=True),
            "global_shapes": _shapes(self.model, local=False),
        }
        self.effective = {
            "validate": {k: self.report[k] for k in ("passed", "tolerances", "collectives", "local_shapes")}
        }
        self.tokens_per_step = self.batch * self.built.family.tokens_per_sample(self.seq_len)
        self.flops_per_step = model_flops_per_step(ctx, self.batch, training=True)
        if ctx.rank == 0 and ctx.job_dir is not None:
            _write(ctx.job_dir / "artifacts" / "validate.json", self.report)
        if failures:
            raise ValidationFailed(
                "parallel layout does not match the single-rank reference: "
                + "; ".join(failures)
                + " (artifacts/validate.json lists every parameter)"
            )

    def _global_batch(self, inputs: torch.Tensor, targets: torch.Tensor):
        """(this rank's shard index among the distinct shards, the inputs and targets of every
        shard in shard order), gathered from the ranks that read them."""
        if self.ctx.world_size == 1:
            return 0, inputs, targets
        import torch.distributed as dist

        n = self.ctx.world_size
        shards = [torch.zeros(1, dtype=torch.long, device=self.ctx.device) for _ in range(n)]
        dist.all_gather(shards, torch.tensor([self.ctx.data_shard], device=self.ctx.device))
        gathered_in, gathered_tg = (
            [torch.empty_like(inputs) for _ in range(n)],
            [torch.empty_like(targets) for _ in range(n)],
        )
        dist.all_gather(gathered_in, inputs.contiguous())
        dist.all_gather(gathered_tg, targets.contiguous())
        first = {}
        for rank, s in enumerate(int(t.item()) for t in shards):
            first.setdefault(s, rank)
        order = sorted(first)
        picks = [first[s] for s in order]
        return (
            order.index(self.ctx.data_shard),
            torch.cat([gathered_in[r] for r in picks]),
            torch.cat([gathered_tg[r] for r in picks]),
        )

    @staticmethod
    def _forward(built, model, inputs, targets):
        with built.precision.autocast():
            outputs = model(inputs)
        logits = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
        return logits, built.family.loss(outputs, targets)

    def _parallel_step(self):
        """One forward + backward of the parallel model on this rank's shard; the collectives
        it issued (DTensor and FSDP2 ones; DDP's reducer runs below what is counted)."""
        self.model.zero_grad(set_to_none=True)
        counter = _comm_counter() if self.ctx.world_size > 1 else None
        with counter if counter is not None else _nothing(), warnings.catch_warnings():
            # CommDebugMode's module hooks warn that the token ids need no gradient: true, harmless
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            logits, loss = self._forward(self.built, self.model, self.inputs, self.targets)
            loss.backward()
        shard_loss = self.built.family.prediction_loss(logits.detach(), self.targets)
        counts = (
            {str(k).split(".")[-1]: int(v) for k, v in counter.get_comm_counts().items()} if counter is not None else {}
        )
        return logits.detach(), shard_loss.detach(), counts

    def _compare(self, logits, loss, ref_logits, ref_loss, ref_grads) -> tuple[dict, dict]:
        tp = self.ctx.strategy.tensor_parallel
        plan = self.built.family.tensor_parallel_plan() if tp > 1 else None
        logits_err = float((logits.float() - ref_logits.float()).abs().max() / ref_logits.float().abs().max())
        loss_err = float((loss.float() - ref_loss.float()).abs() / ref_loss.float().abs())
        per_param = {}
        owned = expert_parameters(unwrap(self.model))  # expert parallel: each rank holds its experts' rows
        for name, p in unwrap(self.model).named_parameters():
            if p.grad is None or name not in ref_grads:
                raise ValidationFailed(
                    f"parameter {name}: no gradient in {'the reference' if name in ref_grads else 'the parallel model'}"
                )
            grad = (
                p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            )  # a collective: every rank, same order
            if name in owned:
                grad = gather_rows(grad, owned[name])  # a collective too
            if plan is not None:
                grad = plan.plain(name, grad, self.built.family.cfg, tp)
            ref = ref_grads[name].float()
            per_param[name] = float((grad.float() - ref).norm() / ref.norm().clamp_min(1e-30))
        return {
            "logits_max_rel_err": logits_err,
            "loss_rel_err": loss_err,
            "grad_max_rel_err": max(per_param.values()),
        }, per_param

    def _tolerances(self) -> dict:
        record = self.built.precision.record()
        dtype = record.get("compute_dtype") or str(self.built.precision.compute_dtype).removeprefix("torch.")
        fsdp = self.ctx.strategy.effective.get("fsdp") or {}
        dtype = fsdp.get("param_dtype", dtype) if dtype == "float32" else dtype  # FSDP2 may compute in 16 bits
        auto = AUTO_RTOL.get(dtype, AUTO_RTOL["bfloat16"])
        o = self.options
        return {
            "logits_max_rel_err": o.logits_rtol or auto[0],
            "loss_rel_err": o.loss_rtol or auto[1],
            "grad_max_rel_err": o.grad_rtol or auto[2],
            "dtype": dtype,
        }

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        _, loss = self._forward(self.built, self.model, self.inputs, self.targets)
        loss.backward()

    def metrics(self, stats: dict) -> dict:
        return {**self.errors, "validate_pass": 1.0 if self.passed else 0.0}


def _worst_over_ranks(errors: dict, device) -> dict:
    import torch.distributed as dist

    values = torch.tensor([errors[k] for k in ERRORS], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return dict(zip(ERRORS, values.tolist()))


def _shapes(model: torch.nn.Module, local: bool) -> dict:
    """Parameter shapes of the first block, the output head and the embedding (what a split changes)."""
    keep = ("blocks.0.", "head.", "embed.")
    owned = expert_parameters(unwrap(model))
    out = {}
    for name, p in unwrap(model).named_parameters():
        if name.startswith(keep):
            shape = list(p.to_local().shape if local and hasattr(p, "to_local") else p.shape)
            if name in owned and not local:
                shape[0] = owned[name].n_experts
            out[name] = shape
    return out


def _comm_counter():
    from torch.distributed.tensor.debug import CommDebugMode

    return CommDebugMode()


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _write(path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
