"""Inter-process locks on files: one for a sqlite tracking store, one for a sweep dir.

MLflow creates and migrates a new sqlite store's tables on first use, and gets-or-creates an
experiment and a dataset row in two steps each; two processes doing any of these at once collide
("table ... already exists", "experiment already exists", "UNIQUE constraint failed: datasets").
Everything that can create such state takes the store's lock first.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` (created if missing), released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).absolute()


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """The lock beside a sqlite store (``mlflow.db.lock``); nothing for other stores, whose
    servers serialise schema creation themselves."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with file_lock(path.with_name(path.name + ".lock")):
        yield
