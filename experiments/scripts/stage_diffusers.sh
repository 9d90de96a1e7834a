#!/usr/bin/env bash
# Stage diffusers (not in the GPU image) for the air-gapped host: wheels for CPython 3.12 on x86_64
# into .gpu/extra/, which experiments/scripts/gpu_families.sh installs with
# `pip install --no-index --find-links .gpu/extra diffusers`. Run from the repo root (after
# ../shared/gpu/stage.sh, which recreates .gpu/), then carry .gpu/extra with .gpu/base.
# diffusers pins a recent huggingface-hub, whose own pins (click, hf-xet, anyio, idna, httpx2)
# the image may not meet, so every dependency is staged and pip takes only what the host lacks;
# numpy and pillow are left out: diffusers takes any version, the image has both, and they are
# 22 MB of the 37 (the carry holds 64 MiB with .gpu/base's 36).
set -euo pipefail
OUT=.gpu/extra
rm -rf "$OUT" && mkdir -p "$OUT"
pip download -q --only-binary=:all: --implementation cp --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$OUT" "diffusers==${DIFFUSERS_VERSION:-0.42.1}" "importlib_metadata<10"  # <10: what mlflow-skinny accepts
rm -f "$OUT"/numpy-*.whl "$OUT"/pillow-*.whl
ls "$OUT" && du -sh "$OUT"
