"""MLflow's own UI, in a real browser (Debian's Chromium driven by Playwright; nothing downloaded), on a
store holding a real 4-point sweep: from MLflow's home page, as a new user (a fresh browser profile),
the parent's chart of tokens/s against the swept length, one chart per precision, in 4 clicks, and
every child's distinguishing name whole in the default runs table; the runs table shows the parent
with its children and a tokens/s column, the parent's page its summary table and headline metrics,
the compare view of two children their effective precision. The screenshots are the README's
("Reading a sweep in MLflow") and docs/mlflow.md's:
B200LAB_SCREENSHOTS=docs/images/mlflow python -m pytest tests/test_browser_mlflow.py refreshes them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tiny_sweep import tiny_sweep

from support import free_port, parents_and_children

CHROMIUM = "/usr/bin/chromium"
# what works as root in a sandboxed machine with no network (.library/env/machines/python.md)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (.ci/install_chromium.sh installs Debian's)"
    ),
]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, template_store):
    sweep = tiny_sweep(tmp_path_factory, template_store)
    port = free_port()
    log = open(Path(sweep["dir"]) / "mlflow_ui.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            sweep["uri"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=sweep["dir"],
        # no job runner: its huey consumers (4 processes) only take CPU from the test here
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"mlflow ui exited {server.returncode}: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not answer /health within 120 s")
        yield sweep, base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def _browser_page():
    """A page of Chromium in a profile of its own (new to MLflow: nothing remembered)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-"),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1500, "height": 900},
        )
        context.set_default_timeout(60_000)
        yield context.new_page()
        context.close()


@pytest.fixture(scope="module")
def page(ui):
    with _browser_page() as page:
        yield page


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _save(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / name))
    target = os.environ.get("B200LAB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / name, Path(target) / name)


def _close_assistant(page) -> None:
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def _columns(page, names: list[str], off: list[str]) -> None:
    """Tick ``names`` and untick ``off`` in the runs table's Columns dialog."""
    page.get_by_role("button", name="Columns").click()
    dialog = page.get_by_role("dialog")
    for name in [*names, *off]:
        page.get_by_placeholder("Search columns").fill(name)
        try:
            dialog.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(name)}$")).click(
                timeout=20_000
            )
        except Exception:
            page.screenshot(
                path=str(Path(tempfile.gettempdir()) / "b200lab_columns_failure.png")
            )  # what the dialog showed
            raise
    page.keyboard.press("Escape")


@pytest.fixture
def new_user(ui):
    """A browser profile that has never seen MLflow: MLflow 3 keeps the GenAI / Model training choice
    in the browser, so every new user starts where this one does."""
    with _browser_page() as page:
        yield page


class Clicks:
    """Counts what the user clicks; every step of the path goes through it."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, locator) -> None:
        locator.click()
        self.n += 1


def test_from_the_home_page_to_tokens_per_s_against_the_swept_length_in_four_clicks(ui, new_user, shots):
    sweep, base = ui
    [parent], children = parents_and_children(sweep["uri"])
    page, click = new_user, Clicks()
    page.goto(base + "/")
    page.get_by_text("Recent Experiments").wait_for()
    click(page.get_by_text("Model training", exact=True))  # MLflow 3 opens on GenAI; training runs live here
    click(page.get_by_role("link", name="b200lab", exact=True))
    page.get_by_text("matching runs").wait_for()
    _save(page, shots, "landing.png")
    click(page.locator(f'a[href$="/runs/{parent.info.run_id}"]').first)  # the sweep's row
    click(page.get_by_text("Model metrics", exact=True))
    assert click.n == 4
    section = page.get_by_text("tokens_per_s", exact=True).first  # a section of charts, drawn when in view
    section.wait_for()
    section.scroll_into_view_if_needed()
    for precision in ("fp32", "bf16"):  # one chart per value of the other swept key
        page.get_by_text(re.compile(rf"\(tokens_per_s/precision:{precision}\)$")).first.wait_for()
    lens = sorted(int(c.data.params["seq.len"]) for c in children)
    line = MlflowClient(tracking_uri=sweep["uri"]).get_metric_history(parent.info.run_id, "tokens_per_s/precision:bf16")
    assert sorted(m.step for m in line) == sorted({n for n in lens})  # the chart's x axis is seq.len
    _save(page, shots, "parent_chart.png")


def test_the_default_runs_table_shows_each_childs_distinguishing_name_whole(ui, new_user, shots):
    sweep, base = ui
    [parent], children = parents_and_children(sweep["uri"])
    page = new_user
    page.goto(base + "/")
    page.get_by_text("Model training", exact=True).click()
    page.get_by_role("link", name="b200lab", exact=True).click()
    page.get_by_text("matching runs").wait_for()
    page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]').first.click()  # the parent's ⊞
    for child in children:
        link = page.locator(f'a[href$="/runs/{child.info.run_id}"]').first
        link.wait_for()
        distinguishing = child.info.run_name.split(" | ")[0]  # what varied: "seq=32 fp32"
        assert link.inner_text().startswith(distinguishing)
        fits = link.evaluate(
            """(a, prefix) => {
                const ctx = document.createElement("canvas").getContext("2d");
                ctx.font = getComputedStyle(a).font;
                const cell = a.closest('[role="gridcell"]') || a.parentElement;
                const room = cell.getBoundingClientRect().right - a.getBoundingClientRect().left;
                return [ctx.measureText(prefix).width, room];
            }""",
            distinguishing,
        )
        assert fits[0] <= fits[1], f"{distinguishing!r} needs {fits[0]:.0f} px, the column shows {fits[1]:.0f}"
    _save(page, shots, "runs_table_default.png")


def test_runs_table_shows_the_parent_with_its_children_and_a_tokens_per_s_column(ui, page, shots):
    sweep, base = ui
    [parent], children = parents_and_children(sweep["uri"])
    page.goto(f"{base}/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning")
    page.get_by_text("matching runs").wait_for()
    page.locator(
        f'a[href$="/runs/{parent.info.run_id}"]'
    ).wait_for()  # the runs (and so their metric names) have loaded
    _close_assistant(page)
    _columns(page, ["tokens_per_s", "effective.precision", "effective.attention_kernel"], ["Dataset", "Models"])
    page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]').first.click()  # the parent's expander
    grid = page.locator(".ag-root")
    for run in children:
        page.locator(f'a[href$="/runs/{run.info.run_id}"]').wait_for()
    page.locator(f'a[href$="/runs/{parent.info.run_id}"]').wait_for()
    text = grid.inner_text()
    assert "tokens_per_s" in text and "effective.precision" in text
    for child in children:
        assert (
            f"{child.data.metrics['tokens_per_s']:.1f}"[:4] in text and child.data.tags["effective.precision"] in text
        )
    _save(page, shots, "runs_table.png")


def test_parent_page_shows_the_sweeps_table_and_headline_metrics(ui, page, shots):
    sweep, base = ui
    [parent], children = parents_and_children(sweep["uri"])
    page.goto(
        f"{base}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    )
    page.get_by_text("Key metrics").first.wait_for()
    _close_assistant(page)
    text = page.inner_text("body")
    assert parent.info.run_name in text and "Requested vs effective" in text and "fp32 → float32" in text
    for child in children:
        assert child.info.run_name in text and child.info.run_id[:8] in text
    assert "tokens_per_s_max" in text and "tokens_per_s_min" in text
    _save(page, shots, "parent_run.png")


def test_compare_view_of_two_children_shows_their_effective_precision(ui, page, shots):
    sweep, base = ui
    _, children = parents_and_children(sweep["uri"])
    pair = [
        next(c for c in children if c.data.params["precision.name"] == p and c.data.params["seq.len"] == "64")
        for p in ("fp32", "bf16")
    ]
    runs = json.dumps([c.info.run_id for c in pair])
    page.goto(f"{base}/#/compare-runs?runs={runs}&experiments={json.dumps([pair[0].info.experiment_id])}")
    row = page.locator("tr", has=page.get_by_text("effective.precision", exact=True))
    row.first.wait_for()
    _close_assistant(page)
    assert "float32" in row.first.inner_text() and "bfloat16" in row.first.inner_text()
    row.first.scroll_into_view_if_needed()
    _save(page, shots, "compare_runs.png")
