#!/usr/bin/env bash
# The GPU baseline (issue 25): every headline point with 3 timed trials (3 jobs for the plain TE
# reference), the GPU test tier with its JUnit XML, at one commit, on one lent GPU. From the project
# root, with .gpu/base (and .gpu/p* for Transformer Engine and FlashAttention-4) staged:
#
#   bash experiments/scripts/gpu_baseline.sh tests ceilings mfu     # phase names, in any order
#   bash experiments/scripts/gpu_baseline.sh all                    # every phase, in the order below
#
# Each phase fits a 10-minute command and skips itself when it finished before, so a cut-off command
# resumes where it stopped (a sweep cut off mid-way runs again whole; the cut one is kept aside).
# B200LAB_BASELINE_DIR=multirun/rerun writes a re-run elsewhere, for `b200lab gate` against the baseline. Results: multirun/baseline/PHASE/... (results.json per
# job), mlflow.db, multirun/baseline/*.jsonl (references), gpu_tests.xml; with $OUT set (the device
# tool) they are packed into $OUT/baseline.tar.gz after every phase, with the console (console.log).
# Then, on the development machine, experiments/scripts/baseline_folder.sh makes the folder to
# commit and its baseline.json (docs/mlflow.md, "The GPU baseline").
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B200LAB_BASELINE_DIR:-multirun/baseline} TARBALL=baseline.tar.gz  # another folder for a re-run to gate against the baseline
source experiments/scripts/resumable.sh
T3="workload.trials=3"
phases=("$@")
[ "${phases[*]}" = all ] && phases=(tests ceilings mfu moe decode fp8 te_ref attention vit serve serve_load)
for phase in "${phases[@]}"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    tests)  # the GPU tier; the TE end-to-end test needs Transformer Engine staged (stage.sh --te). The CLI
            # subprocesses the tests start run from temporary folders: PYTHONPATH lets them import this checkout
      gpu_tests gpu_tests.xml ;;
    ceilings)  # GEMM 8192^3 bf16 / fp8 and the copy bandwidth the decode points divide by
      sweep gemm workload=gemm workload.options.dtype=bf16,fp8 $T3 run.device=cuda
      sweep hbm workload=hbm workload.options.size_mb=4096 $T3 run.device=cuda ;;
    mfu) sweep mfu experiment=mfu_gpt1b precision=bf16 $T3 ;;
    moe)  # the layer pair: 8 experts top-2 of 8192, and 64 experts top-8 of 2048 (the same active width)
      sweep moe8 workload=moe_layer workload.options.compile=true $T3 run.device=cuda
      sweep moe64 workload=moe_layer workload.options.compile=true workload.options.n_experts=64 workload.options.top_k=8 \
        workload.options.d_ff_expert=2048 $T3 run.device=cuda ;;
    decode)  # batch-1 bf16 decode, compiled + CUDA graph, prompt 128, 256 tokens out
      sweep decode workload=generate model=gpt_1b,gpt_8b precision=bf16 compile=default seq.batch=1 seq.len=128 \
        workload.options.output_len=256 workload.warmup_steps=2 workload.steps=5 $T3 run.device=cuda ;;
    fp8)  # hidden 4096, 8 layers, train, compiled: bf16 vs delayed-scaling FP8, beside the plain TE model (3 jobs)
      sweep fp8 experiment=fp8_vs_bf16 precision=bf16,fp8 $T3 ;;
    te_ref)  # the plain TE model at the fp8 phase's shape, bf16 and delayed scaling, 3 jobs. TE's library would
             # otherwise load the host's older cuDNN beside PyTorch's: point the loader at the one PyTorch bundles
      LD_LIBRARY_PATH=$(torch_cudnn)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} three $B/te_reference.jsonl timeout 200 \
        python3 experiments/scripts/te_reference.py --layers 8 --hidden 4096 --recipes none,delayed ;;
    attention)  # causal B1 x 16 heads x 128, forward + backward: sdpa, flex (FLASH backend where FA4 is staged), flex
                # Triton; one sweep per point, so a cut-off call keeps the points it finished
      for s in 4k 16k; do
        for a in sdpa flex; do
          sweep attention_${a}_$s workload=attention seq=$s seq.batch=1 attention=$a workload.options.backward=true $T3 run.device=cuda
        done
        sweep attention_triton_$s workload=attention seq=$s seq.batch=1 attention=flex attention.flex_backend=triton \
          workload.options.backward=true $T3 run.device=cuda
      done ;;
    vit)  # ViT-L/16 train, B64, eager, bf16 weights, beside timm's model timed the same way
      sweep vit model=vit_l16 seq=img224 seq.batch=64 workload=train precision=bf16 precision.master_dtype=none \
        workload.warmup_steps=5 workload.steps=20 workload.min_time_s=0 $T3 run.device=cuda
      [ -s $B/reference_families.jsonl ] || python3 experiments/scripts/reference_families.py --model vit_l16 --batch 64 \
        --precision bf16 --trials 3 --out $B/reference_families.jsonl 2>&1 | quiet ;;
    serve)  # one compiled serving rate: gpt_1b at 4 requests/s
      sweep serve experiment=serve_load compile=default workload.options.qps=4 ;;
    serve_load)  # the rest of the serve_load sweep, compiled, one sweep per rate (1 request/s takes about 7 minutes)
      for q in ${SERVE_RATES:-2 1}; do sweep serve_q$q experiment=serve_load compile=default workload.options.qps=$q; done ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
  pack
done
