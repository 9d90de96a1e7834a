#!/usr/bin/env bash
# gpu_baseline.sh's tarball as a baseline folder to commit: every job's results.json under runs/
# (named PHASE_JOB) with the references' JSON lines, the GPU tier's JUnit XML, the console, and baseline.json for
# `b200lab gate`. From the repository root, on the development machine:
#
#   bash experiments/scripts/baseline_folder.sh baseline.tar.gz docs/measurements/2026-12-07-baseline
#
# Run it again with a later call's tarball to add the phases that call ran (its console is appended).
set -euo pipefail
tarball=$1 folder=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
mkdir -p "$folder/runs"
for f in "$work"/multirun/baseline/*/*/results.json; do
  [ -f "$f" ] || continue
  rel=${f#"$work"/multirun/baseline/}
  case ${rel%%/*} in *.cut-*) continue ;; esac  # a sweep cut off mid-way and run again whole: its rerun counts
  cp "$f" "$folder/runs/${rel%%/*}_$(basename "$(dirname "$f")").results.json"
done
for f in "$work"/multirun/baseline/*.jsonl; do  # the references, beside the runs (tests/test_doc_tables.py reads them there)
  [ -f "$f" ] && cp "$f" "$folder/runs/"
done
[ -f "$work"/gpu_tests.xml ] && cp "$work"/gpu_tests.xml "$folder/"
# each call's console after the last: a later call's tarball adds its own
[ -f "$work"/multirun/baseline/console.log ] && cat "$work"/multirun/baseline/console.log >> "$folder/console.log"
# the start and end of each run, as the device's MLflow store kept them, for `b200lab import`
[ -f "$work"/mlflow.db ] && python3 -m b200lab.records.run_times "sqlite:///$work/mlflow.db" "$folder"
b200lab baseline save "$folder/runs" --out "$folder/baseline.json"
ls "$folder" "$folder/runs"
