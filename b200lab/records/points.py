"""What a sweep varied and what each point ran: the words its runs, tables and charts are named by.

A point is the Hydra overrides that made its job (``results.json``'s ``point``, e.g.
``seq=1k model=tiny``). The keys whose values differ between the points of a set are what the
set *varied*; a point is named by its values of those keys plus what actually ran (effective
precision, attention kernel, compile mode), so ``precision=auto`` shows as ``float32``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# keys that select a preset, not a value of the experiment: the preset is named on its own
NOT_VARIED = ("experiment",)
SWEEP_SYNTAX = re.compile(r"^(range|choice|glob|interval|tag)\(|,")
OPTIONS_PATH = re.compile(r"^([\w]+\.)*\w*options\.")  # workload.options.qps, attention.kernel_options.BLOCK_M
BY_VALUE = ("model", "precision", "attention", "workload", "parallelism", "compile", "data")  # "bf16" says precision
ALIASES = {"seq.len": "seq", "seq.batch": "batch"}


def overrides(point: str | None) -> dict[str, str]:
    """``"seq=1k model=tiny"`` -> ``{"seq": "1k", "model": "tiny"}`` (Hydra's ``+``/``~`` prefixes dropped)."""
    out: dict[str, str] = {}
    for token in (point or "").split():
        key, sep, value = token.partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def varied_keys(records: Iterable[dict]) -> list[str]:
    """Override keys whose values differ between the records (a key some points lack counts), in
    the order they first appear."""
    points = [overrides(r.get("point")) for r in records]
    keys: list[str] = []
    for p in points:
        keys += [k for k in p if k not in keys and k not in NOT_VARIED]
    return [k for k in keys if len({p.get(k) for p in points}) > 1]


def swept_keys(point: str | None, typed: str | None) -> list[str]:
    """One job's guess of what its sweep varies, before the other jobs exist: the keys of its
    point that the command line swept (``a,b``, ``range(...)``) or never typed (a preset's
    ``hydra.sweeper.params``)."""
    fixed = {k: v for k, v in overrides(typed).items() if not SWEEP_SYNTAX.search(v)}
    return [k for k in overrides(point) if k not in fixed and k not in NOT_VARIED]


def precision_ran(record: dict) -> str | None:
    eff = (record.get("effective") or {}).get("precision") or {}
    return eff.get("compute_dtype") or eff.get("name")


def attention_ran(record: dict) -> str | None:
    eff = (record.get("effective") or {}).get("attention") or {}
    return eff.get("kernel") or eff.get("name")


def compile_ran(record: dict) -> str | None:
    """The compile mode of a compiled run, ``eager`` otherwise (requested mode when nothing ran)."""
    eff = record.get("effective") or {}
    mode = ((record.get("config") or {}).get("compile") or {}).get("name") or (record.get("requested") or {}).get(
        "compile"
    )
    if "compiled" in eff:
        return (mode or "compiled") if eff["compiled"] else "eager"
    return None if mode in (None, "none") else mode


def what_ran(record: dict, brief: bool = False) -> str:
    """``float32 sdpa-math eager``: effective precision, attention kernel, compile mode. ``brief``
    drops a kernel's explanation (``sdpa-auto (flash|efficient|cudnn, chosen per call ...)``, the
    kernel names after ``te:``; the tag ``effective.attention_kernel`` keeps them), for names that
    must fit a column."""
    kernel = attention_ran(record)
    if brief and kernel:
        kernel = kernel.split(" (", 1)[0].split(": ", 1)[0]  # "te: cudnn_generated_fort_native_sdpa_..." -> "te"
    return " ".join(p for p in (precision_ran(record), kernel, compile_ran(record)) if p)


def card(record: dict) -> str:
    """The hardware a number came from: ``H100 80GB HBM3``, ``2x H200``, ``cpu``."""
    env = record.get("env") or {}
    gpu = (env.get("gpu") or env.get("device") or "cpu").replace("NVIDIA ", "")
    count = env.get("gpu_count") or 1
    return f"{count}x {gpu}" if env.get("gpu") and int(count) > 1 else gpu


def short_sha(record: dict) -> str:
    """The git sha in 12 characters, ``+dirty`` kept: enough to find the commit."""
    sha = str((record.get("env") or {}).get("git_sha") or "?")
    head, _, rest = sha.partition("+")
    return head[:12] + ("+" + rest.split(".")[0] if rest else "")


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """How each key is shown in a run name, which MLflow's runs table cuts at about 17 characters:
    ``""`` for a group whose option names say what they are (``bf16``, not ``precision=bf16``), an
    alias (``seq.len`` -> ``seq``) or the key without its ``options.`` path (``qps``); the keys
    themselves where two would read the same (``seq.len`` and ``seq``)."""
    keys = list(keys)
    short = {k: "" if k in BY_VALUE else ALIASES.get(k, OPTIONS_PATH.sub("", k)) for k in keys}
    taken = [v for v in short.values() if v]
    return {k: v if not v or taken.count(v) == 1 else k for k, v in short.items()}


def _value(shown: str, value: str) -> str:
    if shown == "seq" and value.isdigit() and int(value) >= 1024 and int(value) % 1024 == 0:
        return f"{int(value) // 1024}k"  # seq=16k, as the seq group names it
    return value


def _word(shown: str, value: str) -> str:
    return f"{shown}={_value(shown, value)}" if shown else value


def label(record: dict, keys: list[str], short: bool = False) -> str:
    """The point's values of ``keys`` as ``k=v`` words (the whole point when ``keys`` is empty);
    ``short`` words them as :func:`short_keys` says (``seq=16k bf16``)."""
    values = overrides(record.get("point"))
    pairs = (
        [(k, values.get(k, "-")) for k in keys] if keys else [(k, v) for k, v in values.items() if k not in NOT_VARIED]
    )
    if not short:
        return " ".join(f"{k}={v}" for k, v in pairs) or "(defaults)"
    shown = short_keys(k for k, _ in pairs)
    return " ".join(_word(shown[k], v) for k, v in pairs) or "(defaults)"


def point_name(record: dict, keys: list[str]) -> str:
    """A run's name: what the point varied (short keys), then what ran (no kernel explanation)."""
    ran = what_ran(record, brief=True)
    return f"{label(record, keys, short=True)} | {ran}" if ran else label(record, keys, short=True)


def unique_names(records: list[dict], keys: list[str] | None = None) -> list[str]:
    """One name per record, no two alike: a repeated name gets its job number (``#3``)."""
    keys = varied_keys(records) if keys is None else keys
    names = [point_name(r, keys) for r in records]
    one_sweep = len({r.get("sweep_id") for r in records}) == 1

    def tag(i: int, r: dict) -> str:
        return (
            f"#{r.get('job_num', i)}" if one_sweep else f"#{(r.get('sweep_id') or 'single')[:6]}.{r.get('job_num', i)}"
        )

    return [f"{n} {tag(i, r)}" if names.count(n) > 1 else n for i, (n, r) in enumerate(zip(names, records))]


def sweep_name(records: list[dict], preset: str | None = None, typed: str | None = None) -> str:
    """The parent run's name: the preset when there is one, then what varied with its values
    (``seq=1k,2k model=tiny``), from the records or, before any ran, from the command line; a key
    the command line swept whose points did not all run (Ctrl-C) keeps its typed values."""
    if records:
        keys = varied_keys(records)
        values = {k: [] for k in keys}
        for r in records:
            for k in keys:
                value = overrides(r.get("point")).get(k, "-")
                if value not in values[k]:
                    values[k].append(value)
        rest = {k: v for k, v in overrides(typed).items() if k not in keys and k not in NOT_VARIED}
        # swept on the command line, but fewer than two of its values ran (a sweep cut short): as typed
        unfinished = {k: v for k, v in rest.items() if SWEEP_SYNTAX.search(v)}
        shared = {k: v for k, v in rest.items() if k not in unfinished}
        shown = short_keys([*values, *unfinished, *shared])
        words = (
            [_word(shown[k], ",".join(_value(shown[k], x) for x in v)) for k, v in values.items()]
            + [_word(shown[k], v) for k, v in unfinished.items()]
            + [_word(shown[k], v) for k, v in shared.items()]
        )
    else:
        words = [t for t in (typed or "").split() if not t.startswith("experiment=")]
    text = " ".join(words)
    if preset and str(preset).lower() not in ("none", "null"):
        return f"{preset}: {text}" if text else str(preset)
    return text or "(defaults)"


def shared_params(param_sets: list[dict]) -> dict:
    """The parameters every point of a sweep has with the same value: what a parent run logs, so a
    sweep can be found by the settings its points share."""
    if not param_sets:
        return {}
    first, rest = param_sets[0], param_sets[1:]
    return {k: v for k, v in first.items() if all(k in other and str(other[k]) == str(v) for other in rest)}
