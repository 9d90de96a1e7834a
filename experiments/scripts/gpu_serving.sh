#!/usr/bin/env bash
# Issue 12 on a lent Hopper host: generation (batch-1 decode, hbm_bw_util) and serving under load.
#   bash experiments/scripts/gpu_serving.sh PHASE [PHASE...]
# Phases:
#   decode            the card's copy bandwidth (workload=hbm, 1 and 4 GB), then batch-1 bf16 decode of gpt_1b and
#                     gpt_8b, compiled + CUDA graph, prompt 128, 256 tokens out, 3 trials x 5 generations; each
#                     generate job also measures the copy bandwidth itself before building the model (hbm_bw_util)
#   decode_baselines  the same decode eager (no graph), compiled without a graph, and compile=reduce-overhead
#   decode_autotune   compile=max-autotune (Triton GEMV templates with fused epilogues; minutes of autotuning for 8b)
#   decode_profile    one profiled generation of each (profile=torch): traces/kernel_breakdown_rank0.csv says where
#                     the kernel time goes; step time minus kernel time is launch gaps
#   serve_load        experiment=serve_load (gpt_1b, qps 4/2/1: the slowest last, so a cut-short command loses it)
#   serve_tp2         the same at tp2 (needs 2 GPUs)
#   serve_compiled    the preset with compile=default, every request at t = 0 (capacity) and at 16/8/4 requests/s
#   serve_tp2_compiled  the preset at tp2 with compile=default (needs 2 GPUs)
#   serve_tp2_nccl    tp2 compiled at QPS (default 2), then the same with TORCH_NCCL_USE_COMM_NONBLOCKING=0 (needs 2 GPUs)
#   serve_kernels     the first-run test (docs/measurements/2026-11-26-serving-tp2): every request at t = 0, the short
#                     warm-up, 3 timed runs, the default SDPA choice (cuDNN for the masked decode) against
#                     attention.backends=[efficient]
#   serve_graphs      issue 28: decode steps padded to batch buckets and recorded as CUDA graphs over the in-place
#                     pool (attention=flex), against the same pool without graphs, every request at t = 0 and 4/s
#   serve_mixed       issue 28: the graphed in-place server with prompts fed beside decode rows in one forward of up
#                     to 2048 tokens (token_budget) against prefill and decode apart, every request at t = 0 and 4/s
# QPS=... replaces the rates of serve_compiled and serve_tp2_compiled (split a sweep over 10-minute commands).
# Run from the repo root; installs the staged wheels first when hydra/mlflow are missing. Results land in multirun/
# and the MLflow store mlflow.db; $OUT receives them as one tarball after every phase when OUT is set.
set -uo pipefail
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
python3 -c 'import hydra, mlflow' 2>/dev/null || { mkdir -p /root/parts && cp .gpu/p*/* /root/parts/ 2>/dev/null; bash .gpu/base/install.sh >/dev/null; }
lab() { python3 -m b200lab "$@" 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) |UserWarning|exe_args, func_types|_warn_once\(|^\[.*HYDRA\]"; }
MODELS=${MODELS:-gpt_1b,gpt_8b}
DECODE="workload=generate precision=bf16 seq.batch=1 seq.len=128 workload.options.output_len=256 workload.warmup_steps=2 workload.steps=5 workload.trials=3"
for phase in "$@"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    decode)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
      lab -m hydra.sweep.dir=multirun/serving_hbm workload=hbm workload.options.size_mb=1024,4096
      lab -m hydra.sweep.dir=multirun/decode $DECODE model=$MODELS compile=default ;;
    decode_baselines)
      lab -m hydra.sweep.dir=multirun/decode_eager $DECODE model=$MODELS compile=none workload.options.cuda_graph=false
      lab -m hydra.sweep.dir=multirun/decode_nograph $DECODE model=$MODELS compile=default workload.options.cuda_graph=false
      lab -m hydra.sweep.dir=multirun/decode_ro $DECODE model=$MODELS compile=reduce-overhead ;;
    decode_autotune) lab -m hydra.sweep.dir=multirun/decode_autotune $DECODE model=$MODELS compile=max-autotune ;;
    decode_profile)
      lab -m hydra.sweep.dir=multirun/decode_profile $DECODE model=$MODELS compile=default profile=torch workload.trials=1 workload.steps=3
      for f in multirun/decode_profile/*/traces/kernel_breakdown_rank0.csv; do echo "--- $f"; cat "$f"; done ;;
    serve_load) lab -m hydra.sweep.dir=multirun/serve_load experiment=serve_load workload.options.qps=4,2,1 ;;
    serve_tp2) lab -m hydra.sweep.dir=multirun/serve_load_tp2 experiment=serve_load parallelism=tp workload.options.qps=4,2,1 ;;
    serve_compiled) lab -m hydra.sweep.dir=multirun/serve_compiled experiment=serve_load compile=default workload.options.qps=${QPS:-inf,16,8,4} ;;
    serve_tp2_compiled) lab -m hydra.sweep.dir=multirun/serve_tp2_compiled experiment=serve_load parallelism=tp compile=default \
      workload.options.qps=${QPS:-4,2,1} ;;
    serve_tp2_nccl)  # the non-blocking-communicator hypothesis (docs/KNOWN_GAPS.md): the same tp2 point twice
      lab -m hydra.sweep.dir=multirun/serve_tp2_nccl_default experiment=serve_load parallelism=tp compile=default workload.options.qps=${QPS:-2}
      TORCH_NCCL_USE_COMM_NONBLOCKING=0 lab -m hydra.sweep.dir=multirun/serve_tp2_nccl_blocking experiment=serve_load parallelism=tp \
        compile=default workload.options.qps=${QPS:-2} ;;
    serve_in_place)  # issue 28: FlexAttention reading the block pool in place against the gathered window (eager, 4 requests/s)
      lab -m hydra.sweep.dir=multirun/serve_in_place experiment=serve_load attention=flex workload.options.qps=4 \
        workload.options.kv_read=gather,in_place ;;
    serve_graphs)
      lab -m hydra.sweep.dir=multirun/serve_graphs experiment=serve_load attention=flex workload.options.kv_read=in_place \
        workload.options.decode_graphs=false,true workload.options.qps=${QPS:-inf,4} ;;
    serve_mixed)
      lab -m hydra.sweep.dir=multirun/serve_mixed experiment=serve_load attention=flex workload.options.kv_read=in_place \
        workload.options.decode_graphs=true workload.options.token_budget=null,2048 workload.options.qps=${QPS:-inf,4} ;;
    serve_kernels)  # the short warm-up, so the first timed run meets the trace's shapes first (as recorded)
      lab -m hydra.sweep.dir=multirun/serve_kernels_default experiment=serve_load workload.options.qps=inf workload.options.warmup=short
      lab -m hydra.sweep.dir=multirun/serve_kernels_efficient experiment=serve_load workload.options.qps=inf workload.options.warmup=short \
        'attention.backends=[efficient]' ;;
    *) echo "unknown phase $phase" ;;
  esac
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" mlflow.db multirun outputs 2>/dev/null
done
