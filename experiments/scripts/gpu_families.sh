#!/usr/bin/env bash
# Issue 14 on one GPU: the vision, diffusion and recommender families beside well-known
# implementations of the same models, on the same card, in the same call:
#   bash experiments/scripts/gpu_families.sh PHASE [PHASE...]
# Run from the repo root with .gpu/base (../shared/gpu/stage.sh) and .gpu/extra
# (experiments/scripts/stage_diffusers.sh) carried; `fp8` also needs Transformer Engine (stage.sh --te).
# Every lab point is an ordinary b200lab command (multirun/fam_*, mlflow.db); the references are
# timed by experiments/scripts/reference_families.py (multirun/reference_families.jsonl) with the
# same method: 5 warm-up steps, then 3 trials of 20 steps queued back to back, a CUDA event pair
# per step, rate = every timed sample / the trials' spans summed (the trial range beside it).
# Both sides eager in vit/dit, both compiled (torch.compile, default mode) in vit_compiled/dit_compiled
# (vit_compiled_bf16: bf16 weights); vit_profile writes both sides' per-kernel times (trace_kernels.py).
# $OUT receives results.tgz (mlflow.db, multirun, outputs) after every phase.
set -uo pipefail
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
python3 -c 'import hydra, mlflow' 2>/dev/null || { mkdir -p /root/parts && cp .gpu/p*/* /root/parts/ 2>/dev/null; bash .gpu/base/install.sh >/dev/null; }
lab() { python3 -m b200lab "$@" 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) |UserWarning|exe_args, func_types|_warn_once\(|^\[.*HYDRA\]"; }
ref() { python3 experiments/scripts/reference_families.py --out multirun/reference_families.jsonl "$@" 2>&1 | grep -vE "UserWarning|warnings.warn"; }
need_diffusers() { python3 -c 'import diffusers' 2>/dev/null || python3 -m pip install -q --no-index --find-links .gpu/extra diffusers; }
TIMING="workload.warmup_steps=5 workload.steps=20 workload.trials=3 workload.min_time_s=0"
VIT="model=vit_l16 seq=img224 seq.batch=64 workload=train $TIMING"
DIT="model=dit_xl2 seq=latent32 seq.batch=32 workload=train $TIMING"
DLRM="model=dlrm_large seq.batch=16384 precision=bf16 workload.min_time_s=2"
mkdir -p multirun
for phase in "$@"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    info) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
          python3 -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__)' ;;
    tests) python3 -m pytest -q -p no:cacheprovider --tb=short -m "not e2e" tests/test_families.py 2>&1 | grep -E "^E |passed|failed|FAILED" | head -20 ;;
    # ViT-L/16 train, B64, eager: float32 weights under bf16 autocast, then bf16 weights without masters
    vit)
      lab -m hydra.sweep.dir=multirun/fam_vit_autocast $VIT precision=bf16_autocast
      ref --model vit_l16 --batch 64 --precision autocast
      lab -m hydra.sweep.dir=multirun/fam_vit_bf16 $VIT precision=bf16 precision.master_dtype=none
      ref --model vit_l16 --batch 64 --precision bf16 ;;
    dit)  # DiT-XL/2 train, B32, eager, against diffusers' DiTTransformer2DModel with the same config
      need_diffusers
      lab -m hydra.sweep.dir=multirun/fam_dit_autocast $DIT precision=bf16_autocast
      ref --model dit_xl2 --batch 32 --precision autocast
      lab -m hydra.sweep.dir=multirun/fam_dit_bf16 $DIT precision=bf16 precision.master_dtype=none
      ref --model dit_xl2 --batch 32 --precision bf16 ;;
    vit_compiled)
      lab -m hydra.sweep.dir=multirun/fam_vit_compiled $VIT precision=bf16_autocast compile=default
      ref --model vit_l16 --batch 64 --precision autocast --compile ;;
    vit_compiled_bf16)
      lab -m hydra.sweep.dir=multirun/fam_vit_compiled_bf16 $VIT precision=bf16 precision.master_dtype=none compile=default
      ref --model vit_l16 --batch 64 --precision bf16 --compile ;;
    vit_profile)  # the eager bf16 pair kernel by kernel: the lab's trace and timm's profile, same columns
      lab -m hydra.sweep.dir=multirun/fam_vit_profile $VIT precision=bf16 precision.master_dtype=none profile=torch workload.trials=1
      python3 experiments/scripts/trace_kernels.py multirun/fam_vit_profile/0/traces/trace_rank0.json.gz multirun/fam_vit_profile/lab_kernels.csv
      python3 experiments/scripts/reference_families.py --model vit_l16 --batch 64 --precision bf16 --trials 1 \
        --out multirun/reference_families.jsonl --kernels multirun/fam_vit_profile/timm_kernels.csv 2>&1 | grep -vE "UserWarning|warnings.warn"
      head -25 multirun/fam_vit_profile/lab_kernels.csv multirun/fam_vit_profile/timm_kernels.csv ;;
    dit_compiled)
      need_diffusers
      lab -m hydra.sweep.dir=multirun/fam_dit_compiled $DIT precision=bf16_autocast compile=default
      ref --model dit_xl2 --batch 32 --precision autocast --compile ;;
    dlrm)  # embedding bandwidth against the card's copy bandwidth (read + write), same call
      lab -m hydra.sweep.dir=multirun/fam_hbm workload=hbm workload.options.size_mb=4096
      lab -m hydra.sweep.dir=multirun/fam_dlrm $DLRM workload=forward,train seq=multihot,onehot ;;
    mfu) lab -m hydra.sweep.dir=multirun/fam_preset experiment=families ;;  # every preset, forward and train, bf16, eager
    fp8)  # bf16 vs Transformer Engine FP8 (delayed scaling), ViT-L/16 and DiT-XL/2, forward and train
      lab -m hydra.sweep.dir=multirun/fam_fp8_vit model=vit_l16 seq=img224 seq.batch=64 workload=forward,train precision=bf16,fp8 workload.min_time_s=3
      lab -m hydra.sweep.dir=multirun/fam_fp8_dit model=dit_xl2 seq=latent32 seq.batch=32 workload=forward,train precision=bf16,fp8 workload.min_time_s=3 ;;
    summary) python3 experiments/scripts/families_summary.py multirun ;;
    *) echo "unknown phase $phase" ;;
  esac
  # after every phase, so a command cut off at its time limit still returns what was measured
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" mlflow.db multirun outputs 2>/dev/null
done
