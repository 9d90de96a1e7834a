"""The wheel carries conf/ (and the presets behind conf/experiment), and an installed b200lab
composes from it, from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from support import REPO, cli_env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [path] = out.glob("b200lab-*.whl")
    return path


def test_the_wheel_ships_conf_and_the_presets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "b200lab/conf/config.yaml",
        "b200lab/conf/model/tiny.yaml",
        "b200lab/conf/experiment/smoke.yaml",
        "b200lab/cli.py",
    } <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "b200lab = b200lab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.e2e
def test_an_installed_b200lab_runs_from_an_empty_directory(wheel, tmp_path, store):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    env = cli_env({**store, "PYTHONPATH": str(site)})  # ahead of the editable checkout
    where = subprocess.run(
        [sys.executable, "-c", "import b200lab.core.schema as c; print(c.conf_dir())"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(site / "b200lab" / "conf")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "b200lab",
            "experiment=smoke",
            "seq=short",
            "workload.steps=2",
            "workload.warmup_steps=1",
            "run.launcher=inline",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "status=ok" in proc.stdout
