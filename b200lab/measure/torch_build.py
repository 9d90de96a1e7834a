"""The installed torch's version and CUDA build, read from torch/version.py rather than imported:
deciding the device or recording the host must not cost a torch import (seconds)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path


def _torch_version_file(key: str) -> str | None:
    """A string assigned in the installed torch's torch/version.py, read, not imported (None when
    torch or the key is missing)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, flags=re.M)
    return found.group(1) if found else None


def torch_cuda_version() -> str | None:
    """The CUDA version the installed torch was built with, or None for a CPU build."""
    return _torch_version_file("cuda")


def torch_version() -> str | None:
    """``torch.__version__`` of the installed torch, without importing it."""
    return _torch_version_file("__version__")
