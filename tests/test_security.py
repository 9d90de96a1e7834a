"""Overrides and presets are often someone else's: nothing they name is imported or called unless
b200lab ships it or a plugin registered it. These are the ways in through Hydra's own config and
the working directory, each tried with code that would leave a marker file if it ran."""

from __future__ import annotations

import textwrap

import pytest

from b200lab.hydra_guard import check_files, check_overrides
from conftest import run_cli, runs

EVIL = "import os, pathlib\npathlib.Path({marker!r}).write_text('ran')\nclass CB:\n    pass\n"


@pytest.mark.parametrize("override,needle", [
    ("+hydra.callbacks.x._target_=evilmod.CB", "hydra.callbacks can run arbitrary code"),
    ("+hydra.job.env_set.PYTHONPATH=/tmp/evil", "hydra.job.env_set can run arbitrary code"),
    ("hydra/job_logging=disabled", "hydra/job_logging can run arbitrary code"),
    ("+hydra.job_logging.handlers.h.filename=/tmp/x", "hydra.job_logging can run arbitrary code"),
    ("hydra.launcher._target_=nosuch.X", "hydra.launcher._target_ can run arbitrary code"),
    ("+hydra.sweeper.params.x._target_=os.system", "a _target_ or () under hydra.* imports code"),
    ("hydra.searchpath=[pkg://evilpkg]", "pkg:// search paths import a Python package"),
])
def test_overrides_that_reach_hydras_own_callables_are_refused(override, needle):
    problems, _ = check_overrides([override])
    assert len(problems) == 1 and needle in problems[0]


def test_ordinary_overrides_pass():
    problems, dirs = check_overrides(["model=gpt_1b", "seq.len=4096", "hydra/launcher=submitit_local", "hydra.run.dir=out",
                                      "hydra.searchpath=[file:///tmp/conf]", "-m" if False else "seq=1k,2k"])
    assert problems == [] and [str(d) for d in dirs] == ["/tmp/conf"]


def test_search_path_files_that_set_hydra_callables_are_refused(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "hydra" / "job_logging").mkdir(parents=True)
    (tmp_path / "experiment" / "evil.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        hydra:
          callbacks:
            x: {_target_: pathlib.Path.touch}
        """))
    (tmp_path / "experiment" / "fine.yaml").write_text("# @package _global_\nseq: {len: 64}\nhydra:\n  sweeper:\n    params: {seq.batch: '1,2'}\n")
    (tmp_path / "hydra" / "job_logging" / "evil.yaml").write_text("handlers:\n  h: {'()': logging.FileHandler, filename: /tmp/x}\n")
    problems = check_files([tmp_path])
    assert len(problems) == 2
    assert any("experiment/evil.yaml: sets hydra.callbacks, hydra.callbacks.x._target_" in p for p in problems)
    assert any("hydra/job_logging/evil.yaml: sets hydra.handlers.h.()" in p for p in problems)


@pytest.mark.e2e
@pytest.mark.parametrize("args", [
    ["+hydra.callbacks.x._target_=evilmod.CB"],
    ["+hydra.callbacks.x._target_=pathlib.Path.touch", "+hydra.callbacks.x._args_=[{marker}]"],
    ["hydra.searchpath=[pkg://evilpkg]"],
    ["+hydra.job.env_set.PYTHONPATH={cwd}/evilpath"],
    ["hydra.searchpath=[file://{cwd}/sp]", "experiment=evil"],
])
def test_the_cli_refuses_them_and_nothing_runs(args, tmp_path, store):
    marker = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "evilpkg").mkdir()
    (tmp_path / "evilpkg" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "evilpath").mkdir()
    (tmp_path / "evilpath" / "sitecustomize.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "sp" / "experiment").mkdir(parents=True)
    (tmp_path / "sp" / "experiment" / "evil.yaml").write_text(
        f"# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: pathlib.Path.touch\n      _args_: [{marker}]\n")
    proc = run_cli([a.format(marker=marker, cwd=tmp_path) for a in args] + ["seq=short", "workload.steps=2"], tmp_path, store)
    assert proc.returncode == 2, proc.output
    assert "refused before anything ran" in proc.stderr
    assert not marker.exists()
    assert runs(store["MLFLOW_TRACKING_URI"]) == []


@pytest.mark.e2e
def test_the_working_directory_registers_and_imports_nothing(tmp_path, store):
    """A *.dist-info or a hydra_plugins folder in the working directory is not a registration:
    `python -m` puts the working directory on sys.path, and the lab takes it off."""
    marker = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    dist = tmp_path / "evil-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[b200lab.model]\nx = evilmod:CB\n")
    (tmp_path / "hydra_plugins" / "evil").mkdir(parents=True)
    (tmp_path / "hydra_plugins" / "evil" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    proc = run_cli(["seq=short", "workload.steps=2", "workload.warmup_steps=1", "run.launcher=inline"], tmp_path, store)
    assert proc.returncode == 0, proc.output
    assert not marker.exists()


@pytest.mark.e2e
def test_another_primary_config_is_checked_too(tmp_path, store):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("hydra:\n  callbacks:\n    x: {_target_: pathlib.Path.touch, _args_: [pwned]}\n")
    proc = run_cli(["--config-path", str(other), "--config-name", "config"], tmp_path, store)
    assert proc.returncode == 2 and "config.yaml: sets hydra.callbacks" in proc.stderr
    assert not (tmp_path / "pwned").exists()
