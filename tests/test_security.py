"""Overrides and presets are often someone else's: nothing they name is imported, called or
executed unless b200lab ships it or a plugin registered it. These are the ways in through Hydra's
own config and the working directory, each tried with code that would leave a marker file if it
ran (b200lab/core/config_guard.py, b200lab/runner/app.py, b200lab/runner/launch.py)."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from b200lab.core.config_guard import (
    check_command_line,
    check_composed,
    check_overrides,
)
from support import compose, run_cli, runs

# a model option that puts another file's node under hydra.callbacks (the payload names the callable)
EVIL5 = "# @package _global_\ndefaults:\n  - /model/payload@hydra.callbacks.x\n  - /model/tiny@model\n"
EVIL = "import os, pathlib\npathlib.Path({marker!r}).write_text('ran')\nclass CB:\n    pass\n"


@pytest.mark.parametrize(
    "override,needle",
    [
        ("+hydra.callbacks.x._target_=evilmod.CB", "hydra.callbacks can run arbitrary code"),
        ("+hydra.job.env_set.PYTHONPATH=/tmp/evil", "hydra.job.env_set can run arbitrary code"),
        ("hydra/job_logging=disabled", "hydra/job_logging can run arbitrary code"),
        ("+hydra.job_logging.handlers.h.filename=/tmp/x", "hydra.job_logging can run arbitrary code"),
        ("hydra.launcher._target_=nosuch.X", "hydra.launcher._target_ can run arbitrary code"),
        ("+hydra.launcher.setup=[touch /tmp/x]", "hydra.launcher.setup can run arbitrary code"),
        ("+hydra.sweeper.params.x._target_=os.system", "a _target_ or () under hydra.* imports code"),
        ("hydra.searchpath=[pkg://evilpkg]", "pkg:// imports a Python package"),
        ("hydra.searchpath=[structured://evilmod]", "structured:// imports a Python module"),
        ("hydra.searchpath=[http://host/conf]", "http:// is not a folder"),
    ],
)
def test_overrides_that_reach_hydras_own_callables_are_refused(override, needle):
    problems = check_overrides([override])
    assert len(problems) == 1 and needle in problems[0], problems


def test_ordinary_overrides_pass():
    assert (
        check_overrides(
            [
                "model=gpt_1b",
                "seq.len=4096",
                "hydra/launcher=submitit_local",
                "hydra.run.dir=out",
                "hydra.searchpath=[file:///tmp/conf,/tmp/other]",
                "seq=1k,2k",
            ]
        )
        == []
    )


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--experimental-rerun", "x.pickle"], "--experimental-rerun unpickles a file"),
        (["--config-path", "/tmp/x", "--config-name", "config"], "--config-path selects another primary config"),
        (["--config-dir", "/tmp/x"], "use hydra.searchpath=[file:///DIR]"),
    ],
)
def test_flags_that_unpickle_or_replace_the_primary_config_are_refused(flags, needle):
    from hydra._internal.utils import get_args_parser

    problems = check_command_line(get_args_parser().parse_args(flags))
    assert any(needle in p for p in problems), problems


def _hydra_node(*overrides: str) -> dict:
    return OmegaConf.to_container(compose(list(overrides), return_hydra_config=True).hydra, resolve=False)


def test_the_lab_default_config_passes_the_composed_check():
    assert check_composed(_hydra_node()) == []
    assert check_composed(_hydra_node("experiment=smoke")) == []


def test_callables_any_config_file_puts_under_hydra_are_found_in_the_composed_config(tmp_path):
    """The file names nothing on the command line: a model option's defaults pull a node into
    hydra.callbacks, and a logging file names a factory, a handler class and an ext:// module."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "evil5.yaml").write_text(EVIL5)
    (tmp_path / "model" / "payload.yaml").write_text("_target_: pathlib.Path.touch\n_args_: [pwned]\n")
    (tmp_path / "model" / "logs.yaml").write_text(
        textwrap.dedent("""\
        # @package _global_
        defaults: [/model/tiny@model]
        hydra:
          job_logging:
            filters: {f: {'()': evilmod.Filter}}
            handlers:
              h: {class: evilmod.Handler}
              s: {class: logging.StreamHandler, stream: 'ext://evilmod.stream'}
        """)
    )
    search = f"hydra.searchpath=[file://{tmp_path}]"
    problems = check_composed(_hydra_node(search, "model=evil5"))
    assert len(problems) == 1 and problems[0].startswith("hydra.callbacks (x): callbacks run arbitrary code"), problems
    problems = check_composed(_hydra_node(search, "model=logs"))
    assert any("hydra.job_logging.filters.f.(): a logging factory imports code" in p for p in problems), problems
    assert any("hydra.job_logging.handlers.h.class='evilmod.Handler'" in p for p in problems), problems
    assert any("ext:// imports the module it names" in p for p in problems), problems


def _plant(tmp_path: Path, marker: Path) -> None:
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "evilpkg").mkdir()
    (tmp_path / "evilpkg" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "evilpath").mkdir()
    (tmp_path / "evilpath" / "sitecustomize.py").write_text(EVIL.format(marker=str(marker)))
    (tmp_path / "sp" / "experiment").mkdir(parents=True)
    (tmp_path / "sp" / "experiment" / "evil.yaml").write_text(
        "# @package _global_\nhydra:\n  callbacks:\n    x:\n      _target_: pathlib.Path.touch\n      _args_: "
        f"[{marker}]\n"
    )
    (tmp_path / "sp" / "model").mkdir()
    (tmp_path / "sp" / "model" / "evil5.yaml").write_text(EVIL5)
    (tmp_path / "sp" / "model" / "payload.yaml").write_text(f"_target_: pathlib.Path.touch\n_args_: ['{marker}']\n")
    (tmp_path / "sp" / "model" / "evil6.yaml").write_text(
        f"# @package _global_\ndefaults: [/model/tiny@model]\nhydra:\n  callbacks:\n"
        f"    x: {{_target_: pathlib.Path.touch, _args_: ['{marker}']}}\n"
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args",
    [
        ["+hydra.callbacks.x._target_=evilmod.CB"],
        ["+hydra.callbacks.x._target_=pathlib.Path.touch", "+hydra.callbacks.x._args_=[{marker}]"],
        ["hydra.searchpath=[pkg://evilpkg]"],
        ["hydra.searchpath=[structured://evilmod]"],
        ["+hydra.job.env_set.PYTHONPATH={cwd}/evilpath"],
        ["hydra.searchpath=[file://{cwd}/sp]", "experiment=evil"],
        ["hydra.searchpath=[file://{cwd}/sp]", "model=evil5"],
        ["hydra.searchpath=[{cwd}/sp]", "model=evil6"],
        ["-m", "hydra.searchpath=[file://{cwd}/sp]", "model=tiny,evil5"],
    ],
)
def test_the_cli_refuses_them_and_nothing_runs(args, tmp_path, store):
    marker = tmp_path / "pwned"
    _plant(tmp_path, marker)
    proc = run_cli(
        [a.format(marker=marker, cwd=tmp_path) for a in args] + ["seq=short", "workload.steps=2"], tmp_path, store
    )
    assert proc.returncode == 2, proc.output
    assert "refused before anything ran" in proc.stderr
    assert not marker.exists()
    assert runs(store["MLFLOW_TRACKING_URI"]) == []
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


class _Touch:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.e2e
def test_experimental_rerun_never_unpickles(tmp_path, store):
    marker = tmp_path / "pwned"
    (tmp_path / "config.pickle").write_bytes(pickle.dumps(_Touch(marker)))
    proc = run_cli(["--experimental-rerun", str(tmp_path / "config.pickle")], tmp_path, store)
    assert proc.returncode == 2 and "--experimental-rerun unpickles a file" in proc.stderr, proc.output
    assert not marker.exists()


@pytest.mark.e2e
def test_the_working_directory_registers_and_imports_nothing(tmp_path, store):
    """A *.dist-info or a hydra_plugins folder in the working directory is not a registration,
    and a module there that shadows one the ranks import (omegaconf, numpy) is never imported:
    neither the parent nor torchrun nor the ranks search the working directory."""
    marker = tmp_path / "pwned"
    (tmp_path / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    for shadow in ("omegaconf.py", "numpy.py", "yaml.py"):
        (tmp_path / shadow).write_text(EVIL.format(marker=str(marker)))
    dist = tmp_path / "evil-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[b200lab.model]\nx = evilmod:CB\n")
    (tmp_path / "hydra_plugins" / "evil").mkdir(parents=True)
    (tmp_path / "hydra_plugins" / "evil" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
    proc = run_cli(["seq=short", "workload.steps=2", "workload.warmup_steps=1"], tmp_path, store)
    assert proc.returncode == 0, proc.output
    assert not marker.exists()
