"""The in-process server: a queue, admission limits and continuous batching over a block KV cache.

Each iteration of :meth:`Engine.run`:

1. requests whose arrival time has come are sent (at most ``max_concurrency`` outstanding, as
   vLLM's client limits them) and queued; a request that cannot ever fit (prompt + output over
   ``max_model_len`` or over the whole pool) or that finds the queue full (``max_queue``) is
   rejected;
2. queued requests are admitted in arrival order while fewer than ``max_running`` run and the
   pool has blocks for their prompt and whole output (a request holds its blocks until it ends,
   so it is never preempted); each admitted request is prefilled alone, or with ``prefill_chunk``
   a chunk per step, requests whose chunks are as long in one forward (a burst prefills
   together); a request gets its first token when its whole prompt is cached;
3. one decode step runs every other running request together, one token each: requests join the
   batch the iteration after their prefill and leave it when their output is complete. With
   ``decode_buckets`` the batch is padded up to the next bucket size with rows that read and write
   only a scratch block and whose tokens are dropped before sampling, so each bucket is one static
   shape (one compiled graph, one CUDA graph; b200lab/serving/compiled.py).

With ``token_budget`` (a pool read in place) steps 2 and 3 are one forward: every running
request's next token and, in admission order, prefill chunks of the admitted requests (each at
most ``prefill_chunk``) up to the budget's tokens, packed into one row (``BlockPool.packed_view``),
as vLLM schedules; an iteration with no prompt tokens to feed is a plain decode step.

A token's time is the clock's reading after the step that produced it: the step ends with the
tokens copied to the host (a server must see them to stream them). Nothing in the schedule
depends on token values (outputs have fixed lengths, no end-of-sequence token), so ranks that
read the same clock (``SyncedClock``) take identical steps. The clock is injectable: ``WallClock``
measures; ``ScriptedClock`` charges a fixed cost per prefill and decode step, so a scripted trace
gives latencies that can be computed by hand.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from b200lab.serving.latency import RequestRecord
from b200lab.serving.loadgen import RequestSpec
from b200lab.serving.paged import BlockPool, Row


class WallClock:
    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        delay = t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def work(self, kind: str, rows: int, tokens: int) -> None:
        """Told after every prefill and decode step (the wall clock has already moved)."""


class ScriptedClock:
    """Time moves only when the engine works or waits: ``prefill_s`` + ``prefill_token_s`` per
    prompt token for a prefill, ``decode_s`` for a decode step, ``decode_s`` + ``prefill_token_s``
    per prompt token for a mixed step (``token_budget``)."""

    def __init__(self, prefill_s: float = 0.0, prefill_token_s: float = 0.0, decode_s: float = 0.0):
        self.t = 0.0
        self.prefill_s, self.prefill_token_s, self.decode_s = prefill_s, prefill_token_s, decode_s

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)

    def work(self, kind: str, rows: int, tokens: int) -> None:
        """``tokens``: the prompt tokens fed (a mixed step costs ``decode_s`` plus theirs)."""
        if kind == "prefill":
            self.t += self.prefill_s + self.prefill_token_s * tokens
        elif kind == "mixed":
            self.t += self.decode_s + self.prefill_token_s * tokens
        else:
            self.t += self.decode_s


@dataclass
class Limits:
    max_running: int = 64  # requests in the running batch
    max_queue: int = 1024  # waiting requests; an arrival beyond it is rejected
    max_concurrency: int | None = None  # outstanding requests the client allows (None: no limit)
    max_model_len: int = 4096  # prompt + output tokens of one request
    # prompt tokens a request feeds per step; requests whose chunks are as long share one forward,
    # so a burst of arrivals prefills together (None: each prompt whole, one request per forward)
    prefill_chunk: int | None = None
    # tokens of one mixed step: the running requests' next tokens, then prefill chunks up to it
    # (None: prefill and decode apart); needs a pool read in place
    token_budget: int | None = None


@dataclass
class _Running:
    spec: RequestSpec
    record: RequestRecord
    blocks: list[int]
    prefilled: int = 0  # prompt tokens in the cache


def last_logits(decoder, idx: torch.Tensor, step) -> torch.Tensor:
    """The logits (B, V) of each row's last token, the cache view ``step`` extended in place
    (``decoder``: the model family's decode contract, b200lab/models/decoding.py)."""
    return decoder.logits(idx, cache=step, last_only=True)[:, -1]


class Engine:
    """``decoder``: the model family's decode contract (b200lab/models/decoding.py); ``pick(logits
    (B, V)) -> ids (B,)``; ``on_complete(record)`` after each request ends. ``forward(decoder, idx,
    view)``: :func:`last_logits`, or a compiled copy of it (b200lab/serving/compiled.py).
    ``decode_buckets`` (ascending batch sizes, the last at least ``limits.max_running``): decode
    steps are padded to the smallest bucket that holds them and run by ``decode_forward`` (default
    ``forward``); one block of the pool is then reserved as the padding rows' scratch.
    ``mixed_buckets`` (ascending token counts, the last at least ``limits.token_budget``; with
    ``decode_buckets``): mixed steps are padded to the smallest that holds their tokens, and to
    ``max_running`` rows, and run by ``decode_forward`` too."""

    def __init__(
        self,
        decoder,
        pool: BlockPool,
        limits: Limits,
        clock,
        pick: Callable[[torch.Tensor], torch.Tensor],
        autocast=contextlib.nullcontext,
        on_complete: Callable[[RequestRecord], None] | None = None,
        forward: Callable = last_logits,
        decode_buckets: list[int] | None = None,
        decode_forward: Callable | None = None,
        mixed_buckets: list[int] | None = None,
    ):
        self.decoder, self.pool, self.limits, self.clock, self.pick = decoder, pool, limits, clock, pick
        self.autocast, self.on_complete, self.forward = autocast, on_complete, forward
        self.decode_forward = decode_forward
        self.buckets = sorted(decode_buckets) if decode_buckets else None
        if self.buckets and self.buckets[-1] < limits.max_running:
            raise ValueError(f"decode buckets {self.buckets} do not hold max_running={limits.max_running} rows")
        if limits.token_budget is not None and not pool.in_place:
            raise ValueError("a token budget packs requests into one row, which needs a pool read in place")
        if limits.token_budget is not None and limits.token_budget <= limits.max_running:
            raise ValueError(
                f"token_budget={limits.token_budget} leaves no prompt token beside {limits.max_running} decode rows"
            )
        self.mixed_buckets = sorted(mixed_buckets) if mixed_buckets else None
        if self.mixed_buckets and not (
            self.buckets and limits.token_budget and self.mixed_buckets[-1] >= limits.token_budget
        ):
            raise ValueError(
                f"mixed buckets {self.mixed_buckets} need decode buckets and a token budget they hold "
                f"(token_budget={limits.token_budget})"
            )
        self.scratch = pool.reserve(1) if self.buckets else None
        self.reset_counters()

    def reset_counters(self) -> None:
        """Start counting anew (the serve workload does so when its timed runs begin)."""
        self.hook_s = 0.0  # time spent in on_complete (it runs inline, so it delays the requests still running)
        self.max_batch = 0
        self.max_prefill_rows = 0  # the most requests one prefill forward fed
        self.mixed_steps = 0  # packed forwards that fed prompt tokens (token_budget), with or without decode rows
        self.max_step_tokens = 0  # the most tokens one mixed step fed
        self.decode_log: list[tuple[int, tuple[int, ...], float]] = []  # (rows, their positions, seconds) per step
        self.max_queue_depth = 0

    def _forward(self, idx: torch.Tensor, rows: list[Row], step: Callable | None = None, real: int | None = None):
        """The next token of each of the first ``real`` rows (all by default) after ``step``
        (``forward`` by default) over ``rows``; other rows' logits never reach the sampler (with
        ``real=0`` it draws nothing: a warm-up call leaves a sampler's generator where it was)."""
        with torch.inference_mode(), self.autocast():
            logits = (step or self.forward)(self.decoder, idx, self.pool.view(rows))
            return self.pick(logits[:real]).tolist() if real != 0 else []

    def padded_decode_rows(self, tokens: list[int], rows: list[Row]) -> tuple[list[int], list[Row]]:
        """The step's last tokens and rows padded to the smallest bucket that holds them."""
        size = next(b for b in self.buckets if b >= len(rows))
        pad = size - len(rows)
        return tokens + [0] * pad, rows + [Row(self.scratch, 0, 1)] * pad

    def _decode(self, tokens: list[int], rows: list[Row]) -> list[int]:
        """One decode step's next tokens, one per real row."""
        real = len(rows)
        if self.buckets:
            tokens, rows = self.padded_decode_rows(tokens, rows)
        idx = torch.tensor([[t] for t in tokens], dtype=torch.long, device=self.pool.device)
        return self._forward(idx, rows, self.decode_forward, real)

    def warm_decode_buckets(self, runs: int = 3) -> None:
        """Every bucket's step ``runs`` times on padding rows alone (what compiles, or records a
        CUDA graph, before anything is timed); the scratch block is all they touch."""
        for size in self.buckets or ():
            idx = torch.zeros(size, 1, dtype=torch.long, device=self.pool.device)
            for _ in range(runs):
                self._forward(idx, [Row(self.scratch, 0, 1)] * size, self.decode_forward, real=0)

    def warm_mixed_buckets(self, runs: int = 3) -> None:
        """Every mixed bucket's step ``runs`` times on padding tokens alone (the scratch block)."""
        for size in self.mixed_buckets or ():
            idx = torch.zeros(1, size, dtype=torch.long, device=self.pool.device)
            for _ in range(runs):  # the view made as a served step makes it (inference tensors: the same guards)
                with torch.inference_mode(), self.autocast():
                    view = self.pool.packed_view([], (size, self.limits.max_running, self.scratch))
                    (self.decode_forward or self.forward)(self.decoder, idx, view)

    def run(self, trace: list[RequestSpec]) -> list[RequestRecord]:
        lim, clock = self.limits, self.clock
        records = {s.id: RequestRecord(s.id, s.arrival_s, s.prompt_len, s.output_len) for s in trace}
        pending = deque(sorted(trace, key=lambda s: (s.arrival_s, s.id)))
        queue: deque[RequestSpec] = deque()
        running: list[_Running] = []  # prefilled: one token per decode step
        prefilling: list[_Running] = []  # admitted, prompt not all in the cache yet
        t0 = clock.now()
        while pending or queue or running or prefilling:
            now = clock.now() - t0
            # an arrival is due by the sum sleep_until waited for (now - t0 may round below it, forever)
            while (
                pending
                and t0 + pending[0].arrival_s <= clock.now()
                and (lim.max_concurrency is None or len(queue) + len(running) < lim.max_concurrency)
            ):
                spec = pending.popleft()
                rec = records[spec.id]
                rec.arrival_s = max(spec.arrival_s, now) if lim.max_concurrency is not None else spec.arrival_s
                need = spec.prompt_len + spec.output_len
                if need > lim.max_model_len or self.pool.blocks_for(need) > self.pool.usable_blocks:
                    rec.status, rec.reason = (
                        "rejected",
                        f"{need} tokens exceed the cache (max_model_len {lim.max_model_len}, pool "
                        f"{self.pool.usable_blocks * self.pool.block_size})",
                    )
                elif len(queue) >= lim.max_queue:
                    rec.status, rec.reason = "rejected", f"queue full ({lim.max_queue})"
                else:
                    rec.status = "queued"
                    queue.append(spec)
            self.max_queue_depth = max(self.max_queue_depth, len(queue))
            if not queue and not running and not prefilling:
                if pending:
                    clock.sleep_until(t0 + pending[0].arrival_s)
                continue
            decoding = list(running)
            while (
                queue
                and len(running) + len(prefilling) < lim.max_running
                and self.pool.can_hold(queue[0].prompt_len + queue[0].output_len)
            ):
                spec = queue.popleft()
                rec = records[spec.id]
                rec.status, rec.admitted_s = "running", clock.now() - t0
                prefilling.append(_Running(spec, rec, self.pool.allocate(spec.prompt_len + spec.output_len)))
            for spec in queue:
                records[spec.id].waited = True
            if lim.token_budget is not None:
                self._step_within_budget(decoding, prefilling, running, t0)
            else:
                self._prefill(prefilling, running, t0)
                if decoding:
                    self._decode_step(decoding, t0)
            for job in [j for j in running if len(j.record.tokens) >= j.spec.output_len]:
                running.remove(job)
                self.pool.release(job.blocks)
                job.record.status = "done"
                if self.on_complete is not None:
                    begin = time.perf_counter()
                    self.on_complete(job.record)
                    self.hook_s += time.perf_counter() - begin
        return [records[s.id] for s in trace]

    @staticmethod
    def _decode_row(job: _Running) -> Row:
        return Row(job.blocks, job.spec.prompt_len + len(job.record.tokens) - 1, 1)

    def _decode_step(self, decoding: list[_Running], t0: float) -> None:
        """One token for every running request (logged for the bandwidth bound)."""
        self.max_batch = max(self.max_batch, len(decoding))
        begin = self.clock.now()
        rows = [self._decode_row(j) for j in decoding]
        tokens = self._decode([j.record.tokens[-1] for j in decoding], rows)
        self.clock.work("decode", len(decoding), len(decoding))
        t = self.clock.now() - t0
        self.decode_log.append((len(rows), tuple(r.start for r in rows), t + t0 - begin))
        for job, token in zip(decoding, tokens):
            self._emit(job, token, t)

    def _step_within_budget(
        self, decoding: list[_Running], prefilling: list[_Running], running: list[_Running], t0: float
    ) -> None:
        """One forward: every running request's next token, then prefill chunks of the admitted
        requests in admission order (each at most ``prefill_chunk``) while the budget has tokens.
        Only rows that end with a token to emit are sampled: decode rows, and chunks that complete
        their prompt (a request's first token). Without prompt tokens to feed, a decode step."""
        room = self.limits.token_budget - len(decoding)
        chunks: list[tuple[_Running, int]] = []
        for job in prefilling:
            n = min(job.spec.prompt_len - job.prefilled, room, self.limits.prefill_chunk or room)
            if n <= 0:
                break
            chunks.append((job, n))
            room -= n
        if not chunks:
            if decoding:
                self._decode_step(decoding, t0)
            return
        rows = [self._decode_row(j) for j in decoding] + [Row(job.blocks, job.prefilled, n) for job, n in chunks]
        fed = [j.record.tokens[-1] for j in decoding]
        for job, n in chunks:
            fed += job.spec.prompt[job.prefilled : job.prefilled + n]
        complete = [job.prefilled + n == job.spec.prompt_len for job, n in chunks]
        emitting = list(range(len(decoding))) + [len(decoding) + i for i, c in enumerate(complete) if c]
        step, padded, width = self.forward, None, len(fed)
        if self.mixed_buckets:
            width = next(b for b in self.mixed_buckets if b >= len(fed))
            step, padded = self.decode_forward or self.forward, (width, self.limits.max_running, self.scratch)
        idx = torch.tensor([fed + [0] * (width - len(fed))], dtype=torch.long, device=self.pool.device)
        with torch.inference_mode(), self.autocast():
            logits = step(self.decoder, idx, self.pool.packed_view(rows, padded))
            tokens = iter(self.pick(logits[emitting]).tolist() if emitting else [])
        self.clock.work("mixed", len(rows), len(fed) - len(decoding))
        self.mixed_steps += 1
        self.max_batch = max(self.max_batch, len(decoding))
        self.max_prefill_rows = max(self.max_prefill_rows, len(chunks))
        self.max_step_tokens = max(self.max_step_tokens, len(fed))
        t = self.clock.now() - t0
        for job in decoding:
            self._emit(job, next(tokens), t)
        for (job, n), done in zip(chunks, complete):
            job.prefilled += n
            if done:
                self._emit(job, next(tokens), t)
                prefilling.remove(job)
                running.append(job)

    def _prefill(self, prefilling: list[_Running], running: list[_Running], t0: float) -> None:
        """One step of every admitted request's prompt: whole, one request per forward, or (with
        ``prefill_chunk``) a chunk each, the requests whose chunks are as long in one forward. A
        request whose prompt is then all cached gets its first token and joins the decode batch
        the next iteration."""
        chunk = self.limits.prefill_chunk
        if chunk is None:
            batches = [[job] for job in prefilling]
        else:
            groups: dict[int, list[_Running]] = {}
            for job in prefilling:
                groups.setdefault(min(chunk, job.spec.prompt_len - job.prefilled), []).append(job)
            batches = list(groups.values())
        for group in batches:
            n = min(chunk or group[0].spec.prompt_len, group[0].spec.prompt_len - group[0].prefilled)
            idx = torch.tensor(
                [job.spec.prompt[job.prefilled : job.prefilled + n] for job in group],
                dtype=torch.long,
                device=self.pool.device,
            )
            tokens = self._forward(idx, [Row(job.blocks, job.prefilled, n) for job in group])
            self.clock.work("prefill", len(group), n * len(group))
            self.max_prefill_rows = max(self.max_prefill_rows, len(group))
            t = self.clock.now() - t0
            for job, token in zip(group, tokens):
                job.prefilled += n
                if job.prefilled == job.spec.prompt_len:
                    self._emit(job, token, t)
                    prefilling.remove(job)
                    running.append(job)

    @staticmethod
    def _emit(job: _Running, token: int, t: float) -> None:
        job.record.tokens.append(int(token))
        job.record.token_s.append(t)
