"""One output directory, one run at a time: a claim file names the process that writes there.

Two runs started in one directory at once (the same ``hydra.run.dir`` or ``hydra.sweep.dir``)
would otherwise overwrite each other's config.yaml and results and mix their measurements
without a word. A claim held by a live process on this host is refused; one left by a process
that is gone (a killed run), or one that names no owner (an empty file), is taken over with a notice.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

CLAIM = ".b200lab_claim"


class DirBusy(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(directory: Path, key: str, node: int = 0) -> None:
    """``node``: a multi-node job's machines share one job dir, each node holding its own claim."""
    path = Path(directory) / claim_name(node)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                owner = {}
            pid = owner.get("pid") if isinstance(owner, dict) else None
            if not isinstance(pid, int) or not owner.get("host"):  # empty or garbled: a claim nobody holds
                print(f"b200lab: {path} names no owner (empty or unreadable); taking it over", file=sys.stderr)
                path.unlink(missing_ok=True)
                continue
            if owner.get("host") != me["host"] or (pid != me["pid"] and _alive(pid)):
                raise DirBusy(
                    f"{key}={directory} is in use by another b200lab run (pid {pid} on {owner.get('host')}); "
                    f"choose another with {key}=PATH"
                ) from None
            path.unlink(missing_ok=True)  # left by a process that is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return


def claim_name(node: int) -> str:
    return CLAIM if not node else f"{CLAIM}.node{node}"


def release(directory: Path, node: int = 0) -> None:
    path = Path(directory) / claim_name(node)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
