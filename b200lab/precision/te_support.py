"""Transformer Engine inside a rank: importing it beside torch's cuDNN, and TE's own answer on
whether a recipe runs on this device (b200lab/precision/availability.py decides first, without CUDA)."""

from __future__ import annotations

import os

from b200lab.precision.availability import TE_AVAILABILITY


def import_te():
    """``transformer_engine.pytorch``, made to use the cuDNN torch already loaded. TE's core
    library links cuDNN's sub-libraries by name, and the loader may find a system copy older than
    torch's; two cuDNNs in one process fail ("cuDNN version incompatibility", or undefined
    symbols between its sub-libraries). Loading all of torch's first makes the names resolve to
    them."""
    import ctypes
    import glob

    import torch

    torch.backends.cudnn.version()  # loads torch's cuDNN
    loaded = _loaded_library("libcudnn.so")
    if loaded:
        os.environ.setdefault("CUDNN_HOME", os.path.dirname(loaded))
        pending = sorted(
            glob.glob(os.path.join(os.path.dirname(loaded), "libcudnn*.so*")), key=lambda p: "graph" not in p
        )
        while pending:  # a library whose dependencies are not loaded yet is retried after the others
            failed = []
            for path in pending:
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    failed.append(path)
            if len(failed) == len(pending):
                break
            pending = failed
    import transformer_engine.pytorch as te

    return te


def _loaded_library(name: str) -> str | None:
    """The path of a shared library this process has mapped whose file name starts with ``name``."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if os.path.basename(path).startswith(name):
                    return path
    except OSError:
        return None
    return None


def te_says(recipe: str) -> tuple[bool, str]:
    """Transformer Engine's own answer for ``recipe`` on the current CUDA device (worker side)."""
    te = import_te()

    ok, reason = getattr(te, TE_AVAILABILITY[recipe])(return_reason=True)
    warm_te_checks(te)
    return bool(ok), reason or ""


def warm_te_checks(te) -> None:
    """Ask Transformer Engine every capability question once, here, eagerly. TE computes each
    answer on first use and keeps it in a module global; a question first asked inside a
    torch.compile'd frame makes dynamo trace the computation, which fails (run 350a109d:
    Float8BlockScaling's forward asked the generic FP8 check for the first time inside the
    compiled graph, and dynamo raised on TE's compute-capability comparison). Asked here, dynamo
    later reads only the cached values. A check this TE version lacks is skipped."""
    for name in sorted(set(TE_AVAILABILITY.values())):
        check = getattr(te, name, None)
        if check is not None:
            check(return_reason=True)
