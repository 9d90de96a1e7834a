"""One output directory, one run: a live owner is refused, a dead one's claim is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from b200lab.runner.dir_claim import CLAIM, DirBusy, claim, release


def test_a_live_owner_is_refused_and_a_dead_ones_claim_is_taken_over(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / CLAIM).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        with pytest.raises(
            DirBusy, match=f"hydra.run.dir={tmp_path} is in use by another b200lab run \\(pid {other.pid}"
        ):
            claim(tmp_path, "hydra.run.dir")
    finally:
        other.kill()
        other.wait()
    claim(tmp_path, "hydra.run.dir")  # its owner is gone now
    assert json.loads((tmp_path / CLAIM).read_text())["pid"] != other.pid
    release(tmp_path)
    assert not (tmp_path / CLAIM).exists()


def test_a_claim_from_another_host_is_refused(tmp_path):
    (tmp_path / CLAIM).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(DirBusy, match="on elsewhere"):
        claim(tmp_path, "hydra.sweep.dir")
