"""git sha of what ran: a checkout says HEAD (+dirty.TREE); a copy without .git says the staged
sha only when its source hashes the same as the staged tree."""

from __future__ import annotations

import subprocess

from b200lab.measure.environment import SOURCE, git_sha, tree_hash
from b200lab.tools.provenance import head_line
from support import REPO


def _copy_of_head(dest):
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD", "--", *SOURCE], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def test_a_copy_says_clean_only_when_its_tree_matches_the_staged_one(tmp_path, monkeypatch):
    monkeypatch.delenv("B200LAB_GIT_SHA", raising=False)
    copy = _copy_of_head(tmp_path)
    sha, staged_tree = head_line().split()
    assert (
        sha
        == subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    )
    assert git_sha(copy) == f"unknown+tree.{staged_tree}"  # nothing staged: the tree hash still tells copies apart

    (copy / ".gpu" / "base").mkdir(parents=True)
    (copy / ".gpu" / "base" / "GIT_SHA").write_text(f"{sha} {staged_tree}\n")
    assert git_sha(copy) == sha
    monkeypatch.setenv("B200LAB_GIT_SHA", sha)  # the sha alone (the old staging): not verifiable
    assert git_sha(copy) == f"{sha}+tree.{staged_tree}"
    monkeypatch.delenv("B200LAB_GIT_SHA")

    (copy / "b200lab" / "runner" / "job.py").write_text(
        (copy / "b200lab" / "runner" / "job.py").read_text() + "\n# edited on the host\n"
    )
    edited = tree_hash(copy)
    assert edited != staged_tree and git_sha(copy) == f"{sha}+dirty.{edited}"


def test_the_tree_hash_ignores_bytecode_and_follows_the_experiment_link(tmp_path):
    copy = _copy_of_head(tmp_path)
    before = tree_hash(copy)
    (copy / "b200lab" / "__pycache__").mkdir(exist_ok=True)
    (copy / "b200lab" / "__pycache__" / "job.cpython-311.pyc").write_bytes(b"\0")
    assert tree_hash(copy) == before
    (copy / "experiments" / "smoke.yaml").write_text("changed: true\n")
    assert tree_hash(copy) != before


def test_a_matching_staged_pair_wins_over_a_stale_git_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("B200LAB_GIT_SHA", raising=False)
    copy = _copy_of_head(tmp_path)
    git = ["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "stale"], check=True)
    stale = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_sha(copy).startswith(f"{stale}+dirty.")  # the source is untracked in that .git
    sha, tree = head_line().split()
    monkeypatch.setenv("B200LAB_GIT_SHA", f"{sha} {tree}")
    assert git_sha(copy) == sha


def test_an_installed_copy_inside_someone_elses_repository_is_not_that_repository(tmp_path, monkeypatch):
    """b200lab installed into a venv that sits inside another git checkout: that checkout's HEAD
    says nothing about b200lab's source."""
    monkeypatch.delenv("B200LAB_GIT_SHA", raising=False)
    outer = tmp_path / "their_repo"
    git = ["git", "-C", str(outer), "-c", "user.name=t", "-c", "user.email=t@t"]
    outer.mkdir()
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "theirs"], check=True)
    theirs = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    site = outer / ".venv" / "site"
    site.mkdir(parents=True)
    copy = _copy_of_head(site)
    assert not git_sha(copy).startswith(theirs)
    assert git_sha(copy) == f"unknown+tree.{tree_hash(copy)}"
