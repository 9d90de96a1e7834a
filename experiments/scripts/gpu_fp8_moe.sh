#!/usr/bin/env bash
# Issue 26's pairs on one lent Hopper GPU. The block phase: fp8_block compiled. The MoE phases: the routed experts in
# FP8 on PyTorch's rowwise grouped GEMM (precision.moe_experts=rowwise) and on Transformer Engine's GroupedLinear (te),
# each beside bf16, same card, same call, 3 timed trials per point. From the project root, with .gpu/base and
# the Transformer Engine parts (stage.sh --te) staged:
#
#   bash experiments/scripts/gpu_fp8_moe.sh tests train mission train_te mission_te train_auto guard block    # any order
#
# Resumable as gpu_baseline.sh is (experiments/scripts/resumable.sh): one sweep per point. Results:
# multirun/fp8_moe/SWEEP/... and mlflow.db, packed into $OUT/fp8_moe.tar.gz after every sweep.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B200LAB_FP8_MOE_DIR:-multirun/fp8_moe} TARBALL=fp8_moe.tar.gz
source experiments/scripts/resumable.sh
T3="workload.trials=3"
TRAIN="model=moe model.n_layers=8 workload=train seq=2k precision.master_dtype=none $T3"  # B4 x 2k, AdamW on bf16 weights
for phase in "$@"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    tests) gpu_tests gpu_tests_fp8_moe.xml tests/test_fp8_grouped.py ;;
    tests_more) gpu_tests gpu_tests_fp8_te_moe.xml tests/test_fp8_te.py tests/test_moe.py ;;
    train)  # 8 layers of model=moe, compiled: bf16 and FP8 with rowwise experts
      sweep train_bf16 $TRAIN precision=bf16 compile=default
      sweep train_fp8 $TRAIN precision=fp8 precision.moe_experts=rowwise compile=default ;;
    train_auto)  # as typed: precision=fp8's default experts (auto: rowwise when compiled on Hopper), beside bf16
      sweep train_auto_bf16 $TRAIN precision=bf16 compile=default
      sweep train_auto_fp8 $TRAIN precision=fp8 compile=default ;;
    train_te) sweep train_fp8_te $TRAIN precision=fp8 precision.moe_experts=te compile=default ;;  # TE GroupedLinear experts
    train_eager)  # the same, eager (the 2026-11-26 pair e9e96f1f / b492e746 was eager)
      sweep train_eager_bf16 $TRAIN precision=bf16
      sweep train_eager_fp8 $TRAIN precision=fp8 precision.moe_experts=rowwise ;;
    mission)  # the mission's command as typed (forward, eager), in bf16 and FP8
      sweep mission_bf16 model=moe precision=bf16 seq=12k,16k $T3
      sweep mission_fp8 model=moe precision=fp8 precision.moe_experts=rowwise seq=12k,16k $T3 ;;
    mission_te) sweep mission_fp8_te model=moe precision=fp8 precision.moe_experts=te seq=12k,16k $T3 ;;
    guard)  # the accuracy guard on a byte-level MoE of byte_gpt's shape: held-out perplexity, fp8 vs fp32. fp8's experts
            # take their default path (the key exists only under FP8 recipes, so a sweep over precisions cannot set
            # it): auto, te on the eager eval; compiled (guard_moe_compiled), rowwise
      sweep guard_moe_compiled experiment=accuracy_guard model=moe model.name=byte_moe model.n_layers=6 model.d_model=384 \
        model.n_heads=6 model.d_ff=1536 model.vocab_size=272 compile=default hydra.sweeper.params.precision=fp32,fp8
      sweep guard_moe experiment=accuracy_guard model=moe model.name=byte_moe model.n_layers=6 model.d_model=384 \
        model.n_heads=6 model.d_ff=1536 model.vocab_size=272 hydra.sweeper.params.precision=fp32,bf16,fp8 ;;
    block)  # fp8_block (compiled since the 2026-12-07 record: 1.32x the plain TE model) at hidden 4096, beside bf16 and
            # the plain TE block-scaling model (3 jobs): issue 26's fp8_block >= 1.0x the plain TE model
      sweep block_fp8 experiment=fp8_vs_bf16 precision=fp8_block $T3
      sweep block_bf16 experiment=fp8_vs_bf16 precision=bf16 $T3
      LD_LIBRARY_PATH=$(torch_cudnn)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} three "$B/te_reference_block.jsonl" timeout 200 \
        python3 experiments/scripts/te_reference.py --layers 8 --hidden 4096 --recipes block ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
  pack
done
