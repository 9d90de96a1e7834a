"""`b200lab freshness`: the commits since each record ran, by area of the code, counted in a real git
repository built here; bad input says why and exits 2."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from b200lab.reports.freshness import AREAS, main


def git(root: Path, *args: str) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", "-C", str(root), *env_args, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit_change(root: Path, rel: str, message: str) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{random.random()}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def record(path: Path, sha: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "ok", "env": {"git_sha": sha}, "metrics": {"mfu": random.random()}}))


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the generated table by their 'ran at' cell (folder | records | ran at | ...)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| folder") and not line.startswith("| ---"):
            rows[f"{cells[0]} {cells[2]}"] = cells
    return rows


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    return root


def test_counts_the_commits_since_each_record_by_the_area_they_touched(repo, capsys):
    old = commit_change(repo, "b200lab/models/gpt.py", "model")
    mid = commit_change(repo, "b200lab/worker.py", "the flat runner module, before the packages")  # timing
    n_model, n_config = random.randint(1, 3), random.randint(1, 3)
    for i in range(n_model):
        commit_change(repo, f"b200lab/models/m{i}.py", "model again")
    for i in range(n_config):
        commit_change(repo, f"conf/model/c{i}.yaml", "config")
    commit_change(repo, "docs/notes.md", "docs only: no area")
    last = commit_change(repo, "README.md", "docs only again")
    records = repo / "docs" / "measurements"
    record(records / "old" / "runs" / "a.results.json", old)
    record(records / "old" / "runs" / "b.results.json", old)
    record(records / "old" / "runs" / "c.results.json", f"{mid}+dirty.abc123def456")
    record(records / "old" / "runs" / "d.results.json", f"{mid}+dirty.0123456789ab")
    record(records / "new" / "x" / "results.json", last)
    (records / "new" / "refs.jsonl").write_text(json.dumps({"env": {"git_sha": last}}) + "\n")
    record(records / "lost" / "results.json", "f" * 40)  # a commit of another clone
    out = repo / "FRESHNESS.md"

    assert main([str(records), "--out", str(out)]) == 0
    rows = table_rows(out.read_text())
    since_old = 1 + n_model + n_config + 2
    header = ["folder", "records", "ran at", "commits since", *AREAS, "current"]
    area = {name: header.index(name) for name in header}

    r = rows[f"old {old[:8]}"]
    assert r[area["records"]] == "2" and r[area["commits since"]] == str(since_old)
    assert r[area["model"]] == str(n_model) and r[area["config"]] == str(n_config)
    assert r[area["timing"]] == "1"  # b200lab/worker.py: the old layout's name is counted
    assert r[area["precision"]] == "-" and r[area["current"]] == "no"

    d = rows[f"old {mid[:8]} +dirty (2 trees)"]  # two dirty trees of one commit: one row, said
    assert d[area["records"]] == "2" and d[area["commits since"]] == str(since_old - 1)
    assert d[area["timing"]] == "-" and d[area["model"]] == str(n_model)

    n = rows[f"new {last[:8]}"]  # a results.json and a reference line, docs-only commits since: none
    assert n[area["records"]] == "2" and n[area["commits since"]] == "0" and n[area["current"]] == "yes"

    lost = rows[f"lost {'f' * 8}"]
    assert lost[area["current"]] == "unknown: not an ancestor of HEAD"
    assert last[:12] in out.read_text()  # the table names the HEAD it was counted at


def test_bad_input_says_why_and_exits_2(repo, tmp_path, capsys):
    commit_change(repo, "b200lab/models/gpt.py", "model")
    empty = repo / "docs"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no results.json or .jsonl record with env.git_sha under" in capsys.readouterr().err

    assert main([str(repo / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err

    outside = tmp_path / "not_a_checkout"
    record(outside / "r" / "results.json", "a" * 40)
    assert main([str(outside)]) == 2
    assert "is not inside a git checkout" in capsys.readouterr().err
