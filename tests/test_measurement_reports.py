"""The reports under docs/measurements/ are what `b200lab report` makes of the recorded results.json
files today: each committed report.md is regenerated from its report.args (written by
experiments/scripts/regenerate_reports.sh) and must match byte for byte, so a hand edit, a changed
results.json or a report tool change that was not followed by a rerun of the script fails here."""

from __future__ import annotations

import pytest

from b200lab.reports.report import main as report_main
from support import MEASUREMENTS, REPO

REPORTS = sorted(p.parent for p in MEASUREMENTS.glob("*/report/*/report.md"))
RERUN = "rerun `bash experiments/scripts/regenerate_reports.sh` and commit the result"


def test_every_measurement_folder_with_results_has_reports():
    folders = {p.relative_to(MEASUREMENTS).parts[0] for p in MEASUREMENTS.rglob("*results.json")}
    assert folders and folders == {p.relative_to(MEASUREMENTS).parts[0] for p in REPORTS}
    for folder in folders:  # the README points at its reports
        assert "](report/" in (MEASUREMENTS / folder / "README.md").read_text().splitlines()[2], folder


def test_every_report_has_the_arguments_that_made_it():
    assert REPORTS, "no generated reports under docs/measurements"
    for path in MEASUREMENTS.rglob("report.md"):
        assert (path.parent / "report.args").is_file(), f"{path.relative_to(REPO)} has no report.args: {RERUN}"


@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_report_regenerates_identically(folder, tmp_path, monkeypatch):
    args = (folder / "report.args").read_text().splitlines()
    out = args.index("--out")
    assert args[out + 1] == str(folder.relative_to(REPO)), "report.args names another folder"
    args[out + 1] = str(tmp_path / "report")
    monkeypatch.chdir(REPO)  # the arguments' paths are relative to the repository root
    assert report_main(args) == 0
    fresh = (tmp_path / "report" / "report.md").read_text()
    assert fresh == (folder / "report.md").read_text(), (
        f"{folder.relative_to(REPO)}/report.md is not what the data gives: {RERUN}"
    )
    assert sorted(p.name for p in (tmp_path / "report" / "charts").glob("*.png")) == sorted(
        p.name for p in (folder / "charts").glob("*.png")
    )
