"""MLflow's own UI, in a real browser (Debian's Chromium driven by Playwright; nothing downloaded), on a
store holding a real 4-point sweep: the runs table shows the parent with its children and a tokens/s
column, the parent's page its summary table and headline metrics, the compare view of two children
their effective precision. The screenshots are the README's ("Reading a sweep in MLflow"):
B200LAB_SCREENSHOTS=docs/images/mlflow python -m pytest tests/test_browser_mlflow.py refreshes them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_sweep import tiny_sweep

from support import parents_and_children

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, template_store):
    sweep = tiny_sweep(tmp_path_factory, template_store)
    port = _free_port()
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


@pytest.fixture(scope="module")
def page(ui):
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
