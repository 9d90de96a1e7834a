"""Stage the git sha for a copy of the tree that has no .git (the GPU hosts):

    python -m b200lab.tools.provenance --out .gpu/base/GIT_SHA

writes ``SHA TREE_HASH``: HEAD and the tree hash of HEAD's own files (taken from ``git archive``,
so uncommitted edits in this checkout do not count). On the copy, results say ``SHA`` when the
copy's source hashes the same, else ``SHA+dirty.TREE`` (b200lab/measure/environment.py). Run it
after staging, as staging recreates .gpu. Without --out it prints the line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from b200lab.measure.environment import REPO_ROOT, SOURCE, tree_hash


def head_line(root: Path = REPO_ROOT) -> str:
    sha = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.Popen(
            ["git", "-C", str(root), "archive", "--format=tar", "HEAD", "--", *SOURCE], stdout=subprocess.PIPE
        )
        subprocess.run(["tar", "-x", "-C", tmp], stdin=archive.stdout, check=True)
        archive.stdout.close()
        if archive.wait():
            raise subprocess.CalledProcessError(archive.returncode, "git archive")
        return f"{sha} {tree_hash(Path(tmp))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m b200lab.tools.provenance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="file to write (e.g. .gpu/base/GIT_SHA); default: print")
    args = parser.parse_args(argv)
    line = head_line()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
