#!/usr/bin/env bash
# The reports of the recorded GPU runs under docs/measurements/, regenerated from their results.json
# files by `b200lab report` (Markdown, HTML, line charts): one report per sweep or per question, in
# docs/measurements/FOLDER/report/NAME/. Each report keeps the exact arguments that made it in
# report.args, one a line; tests/test_measurement_reports.py regenerates every report.md from them
# and fails when a committed one differs (a hand edit, or a report left stale by a change in the
# report tool: rerun this script and commit the result).
#
# The date a report states is its folder's date (the day the runs were recorded), not the day this
# script ran, so a rerun changes nothing unless the data or the tool changed. Paths are relative to
# the repository root, which is where this script runs.
#
# Then the tables embedded in the READMEs (<!-- b200lab:table ... --> blocks) are regenerated from the
# same files by `b200lab tables` (tests/test_doc_tables.py checks them): every README, or with a
# FOLDER argument only those of the matching folders.
#
#   bash experiments/scripts/regenerate_reports.sh          # every report
#   bash experiments/scripts/regenerate_reports.sh attention # the reports of folders matching *attention*
set -euo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C  # the file order of a glob, hence the row order of a report
M=docs/measurements
only=${1:-}

report() {  # FOLDER NAME TITLE [b200lab report options] -- RESULTS_FILES...
    local folder=$1 name=$2 title=$3
    shift 3
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    [[ -z $only || $folder == *$only* ]] || return 0
    local out=$M/$folder/report/$name
    rm -rf "$out"
    mkdir -p "$out"
    local args=("$@" --out "$out" --title "$title" --date "${folder:0:10}" --link-images "${opts[@]}")
    printf '%s\n' "${args[@]}" >"$out/report.args"
    b200lab report "${args[@]}"
}

A=2026-11-26-attention
report $A long_context "long_context: gpt_1b bf16 training against length, one H100" --x seq.len --reference attention=sdpa -- \
    $M/$A/runs/long_context_[0-9].results.json $M/$A/runs/long_context_ckpt_1.results.json $M/$A/runs/long_context_te_0.results.json
report $A long_context_checkpointing "long_context: gpt_1b train at 32K without and with selective checkpointing, one H100" -- \
    $M/$A/runs/long_context_ckpt_*.results.json
report $A long_context_forward "long_context: gpt_1b forward at 32K, sdpa vs flex, one H100" -- $M/$A/runs/long_context_fwd_*.results.json
report $A microbench "Attention alone: causal, B1 x 16 heads x head_dim 128, bf16, one H100" --x seq.len -- \
    $M/$A/runs/attn_micro_*.results.json $M/$A/runs/attn_te_*.results.json $M/$A/runs/attn_triton_*.results.json
report $A kernels "Attention alone: the kernel each backend launched, one H100" --x seq.len -- $M/$A/runs/attn_kernels_*.results.json
report $A cuda_graph "Attention alone under a CUDA graph, one H100" -- $M/$A/runs/attn_graph_*.results.json
report $A flex_tiles "FlexAttention's Triton tile sizes, one H100" -- $M/$A/runs/attn_tiles_*.results.json
report $A sliding_window "Sliding-window FlexAttention, one H100" -- $M/$A/runs/attn_sliding_*.results.json

F=2026-11-26-fp8-moe
report $F moe_experts "moe_experts: experts x top_k at the same active parameters, train B8 x 2k, one H100" --reference model=moe_experts/dense -- \
    $M/$F/runs/moe_experts-*.results.json
report $F accuracy_guard "accuracy_guard: held-out perplexity per precision against fp32" --reference precision=fp32 -- \
    $M/$F/runs/accuracy_guard-[0-9].results.json
report $F fp8_vs_bf16 "fp8_vs_bf16: gpt_8b width, 8 layers, train B4 x 2k, compiled" --reference precision=bf16 -- $M/$F/runs/fp8_8b_call1-*.results.json
report $F fp8_vs_bf16_eager_and_compiled "gpt_8b width, 8 layers: FP8 recipes eager and compiled" -- $M/$F/runs/fp8_8b_eager-*.results.json
report $F fp8_vs_bf16_master_weights "fp8_vs_bf16 with float32 master weights" --reference precision=bf16 -- $M/$F/runs/fp8_8b_master-*.results.json
report $F fp8_torchao_and_block "torchao float8 and Transformer Engine block scaling beside bf16" -- \
    $M/$F/runs/torchao_bf16-*.results.json $M/$F/runs/torchao-*.results.json $M/$F/runs/fp8_8b_block_eager-*.results.json
report $F fp8_mfu_gpt1b "mfu_gpt1b in FP8 beside bf16" -- $M/$F/runs/mfu_gpt1b_bf16-*.results.json $M/$F/runs/fp8_mfu_gpt1b-*.results.json
report $F fp8_profile "gpt_8b width FP8 training under the profiler" -- $M/$F/runs/fp8_profile-*.results.json
report $F weight_only "FP8 weight-only GEMMs, gpt_1b forward" --reference precision=bf16 -- $M/$F/runs/weight_only-*.results.json
report $F long_fp8 "FP8 at 12K and 16K tokens: gpt_1b and MoE" --x seq.len -- \
    $M/$F/runs/fp8_long-*.results.json $M/$F/runs/moe_long-*.results.json $M/$F/runs/moe_long_te-*.results.json
report $F moe_layer "One MoE layer: eager and compiled, coarse and fine experts" -- \
    $M/$F/runs/moe_layer-*.results.json $M/$F/runs/moe_layer_fine-*.results.json
report $F moe_train_fp8 "MoE training, bf16 vs FP8" --reference precision=bf16 -- $M/$F/runs/moe_train_fp8-*.results.json

G=2026-11-26-gpt1b-mfu
report $G mfu_gpt1b "mfu_gpt1b: bf16 vs bf16_autocast at B4 and B8, H200 and H100" -- \
    $M/$G/runs/multirun-mfu_gpt1b_b*.results.json $M/$G/runs/h100-multirun-mfu_gpt1b_b*.results.json
report $G recipes "gpt_1b training: precision recipes, gradient accumulation, rotary layout" -- \
    $M/$G/runs/multirun-recipes*.results.json $M/$G/runs/multirun-rope*.results.json $M/$G/runs/h100-multirun-rope_b8-*.results.json
report $G profiled "gpt_1b training under the profilers" -- $M/$G/runs/outputs-gpt1b_*.results.json
report $G sanity "Sanity: smoke, GEMM and gpt_125m train" -- \
    $M/$G/runs/multirun-sanity_smoke-*.results.json $M/$G/runs/outputs-sanity_*.results.json

H=2026-11-26-h200-measure
report $H ceilings "Ceilings: GEMM and HBM copy, one H200" -- $M/$H/ceilings/*.results.json
report $H compile_study "compile_study: eager vs torch.compile, one H200" --reference compile=none -- $M/$H/compile_study/*.results.json
report $H gpt1b_train "gpt_1b training, one H200" -- $M/$H/gpt1b_train/*.results.json

report 2026-11-26-h200-model_sizes model_sizes "model_sizes: forward and train per model size, bf16 B4 x 2k, one H200" -- \
    $M/2026-11-26-h200-model_sizes/job*.results.json
report 2026-11-26-h200-sanity sanity "Sanity: smoke, GEMM and gpt_125m train, one H200" -- $M/2026-11-26-h200-sanity/*.results.json

N=2026-11-26-h200x2-nccl
report $N allreduce "NCCL all-reduce bus bandwidth, 2 x H200" --x workload.options.size_mb -- $M/$N/allreduce-*.results.json
report $N ddp "gpt_125m DDP training, 1 vs 2 x H200" -- $M/$N/ddp-*.results.json

P=2026-11-26-parallel-partial
report $P comms "Collectives on 2 GPUs" -- $M/$P/runs/p11_comms_*.results.json
report $P training "Data, fully-sharded and tensor parallel points on 2 GPUs" -- \
    $M/$P/runs/p11_ddp_*.results.json $M/$P/runs/p11_fsdp_*.results.json $M/$P/runs/p11_forward_*.results.json $M/$P/runs/p11_validate_*.results.json

S=2026-11-26-seams-reverify
report $S gemm "Re-verify: GEMM bf16 and FP8 on three calls" -- $M/$S/call*-reverify_gemm-*.results.json
report $S hbm "Re-verify: HBM copy on three calls" -- $M/$S/call*-reverify_hbm-*.results.json
report $S mfu_gpt1b "Re-verify: mfu_gpt1b bf16 on three calls" -- $M/$S/call*-reverify_mfu-*.results.json
report $S two_gpus "Re-verify: all-reduce and DDP on 2 GPUs" -- $M/$S/call2-reverify_allreduce-*.results.json $M/$S/call2-reverify_ddp-*.results.json

G=2026-11-26-serving
report $G decode "Batch-1 decode, gpt_1b and gpt_8b, bf16, two H100s" -- $M/$G/runs/decode*.results.json
report $G serve_load "serve_load: gpt_1b under Poisson load, one H100" --x workload.options.qps -- $M/$G/runs/serve_load_*.results.json

F=2026-11-26-families
report $F lab_vs_reference "ViT-L/16 and DiT-XL/2 training (the lab's side of the timm / diffusers pairs), one H100" -- \
    $M/$F/runs/fam_vit_*.results.json $M/$F/runs/fam_dit_*.results.json
report $F fp8 "ViT-L/16 and DiT-XL/2, bf16 vs Transformer Engine FP8, one H100" --reference precision=bf16 -- $M/$F/runs/fam_fp8_*.results.json
report $F dlrm "DLRM-style recommender, dlrm_large, one H100" -- $M/$F/runs/fam_dlrm_*.results.json

F=2026-11-26-families-compiled
report $F lab_side "ViT-L/16 training, the lab's side of the compiled and profiled timm pairs, one H100" --x compile -- $M/$F/runs/fam_vit_*.results.json

G=2026-11-26-serving-load
report $G decode "Batch-1 decode, gpt_8b, bf16, compile=default, one H100" -- $M/$G/runs/decode8b_*.results.json
report $G serve_load "serve_load: gpt_1b at 4 and 2 requests/s, one H100 beside a compiling neighbour" --x workload.options.qps -- \
    $M/$G/runs/serve_load_*.results.json

G=2026-11-26-serving-preset
report $G serve_load "serve_load as written: gpt_1b at 4, 2 and 1 requests/s, one H200 beside the tp2 sweep" --x workload.options.qps -- \
    $M/$G/runs/serve_single_*.results.json

G=2026-11-26-serving-compiled
report $G eager_vs_compiled "serve_load, gpt_1b: the eager step (all requests at t = 0) and the compiled step (16 requests/s), one H100" \
    --x compile -- $M/$G/runs/*.results.json

G=2026-11-26-serving-tp2
report $G tp2 "serve_load at tp2, compiled: gpt_1b at 4, 2 and 1 requests/s, two H200 hosts" --x workload.options.qps -- \
    $M/$G/runs/tp2_q1.results.json $M/$G/runs/tp2_q2.results.json $M/$G/runs/tp2_q4.results.json
report $G one_gpu "serve_load on one H200, compiled: gpt_1b at 4, 2 and 1 requests/s" --x workload.options.qps -- \
    $M/$G/runs/single_*.results.json
report $G kernels "serve_load, every request at t = 0: eager cuDNN vs memory-efficient attention on one H200" \
    --x effective.attention.kernel -- $M/$G/runs/kernels_*.results.json

G=2026-11-27-serving-warmup
report $G warmup "serve_load, every request at t = 0, after a replay warm-up: compiled and eager on one H100" -- $M/$G/runs/*.results.json

D=2026-11-26-parallel-scaling
report $D scaling "gpt_1b FSDP2 and DDP training on 1 and 2 H100s" --x parallelism.nproc -- $M/$D/runs/p11_*.results.json

P=2026-11-26-parallel-overlap
report $P fsdp_keep "gpt_1b FSDP2 keeping gathered weights across micro-batches, 1 and 2 H100s" --x parallelism.nproc -- \
    $M/$P/runs/p11_fsdp_1b_keep_*.results.json
report $P ddp_buckets "gpt_1b DDP, one float32 reduction per step, 25 vs 200 MiB buckets, 1 and 2 H100s" --x parallelism.nproc -- \
    $M/$P/runs/p11_ddp_1b_buckets*.results.json
report $P fsdp_8b "gpt_8b FSDP2 training on 1 and 2 H100s" --x parallelism.nproc -- $M/$P/runs/p11_fsdp_8b*.results.json

C=2026-11-26-scale-4gpu
report $C fsdp_scaling "gpt_1b and gpt_8b FSDP2 training on 1, 2 and 4 H200s, the same per-GPU batch" --x parallelism.dp \
    --reference parallelism.dp=1 -- $M/$C/runs/p15_fsdp_*.results.json
report $C forward_40b "gpt_40b forward at tp4, bf16, B4 x 2k to 16k tokens, 4 x H200" --x seq.len -- $M/$C/runs/p15_forward_40b_*.results.json

R=2026-12-07-reverify
report $R reverify "After the restructuring (issue 24): gpt_1b MFU, gpt_8b decode, the MoE layer pair, 3 trials each, one H100" -- \
    $M/$R/runs/*.results.json

BL=2026-12-07-baseline
report $BL training "The baseline: gpt_1b MFU, hidden-4096 bf16 and FP8, ViT-L/16 training, 3 trials each, one H100" -- \
    $M/$BL/runs/mfu_*.results.json $M/$BL/runs/fp8_*.results.json $M/$BL/runs/vit_*.results.json
report $BL decode "The baseline: batch-1 decode of gpt_1b and gpt_8b, 3 trials each, one H100" -- $M/$BL/runs/decode_*.results.json
report $BL moe "The baseline: the MoE layer pair against dense, 3 trials each, one H100" -- $M/$BL/runs/moe*.results.json
report $BL ceilings "The baseline: GEMM 8192 cubed (bf16, FP8) and the copy bandwidth, 3 trials each, one H100" -- \
    $M/$BL/runs/gemm_*.results.json $M/$BL/runs/hbm_*.results.json
report $BL attention "The baseline: sdpa against flex (FLASH and Triton backends), causal forward + backward, 3 trials each, one H100" \
    --x seq.len -- $M/$BL/runs/attention_*.results.json
report $BL serving "The baseline: gpt_1b served compiled at 1, 2 and 4 requests/s, 3 replays each, one H100" \
    --x workload.options.qps -- $M/$BL/runs/serve_*.results.json

FM=2026-12-07-fp8-moe-rowwise
report $FM moe_train "MoE training, 8 layers, compiled: bf16 against FP8 with rowwise and TE experts, 3 trials each, two H100s" -- \
    $M/$FM/runs/*_train_*.results.json
report $FM mission "model=moe forward at 12k and 16k, eager: bf16 against FP8 with rowwise and TE experts, 3 trials each, one H100" \
    --x seq.len -- $M/$FM/runs/*_mission_*.results.json
report $FM fp8_block "fp8_block compiled against bf16 at hidden 4096, 3 trials each, two H100s" -- $M/$FM/runs/*_block_*.results.json

if [[ -n $only ]]; then  # only the READMEs of the folders asked for: other people's may be mid-edit
    b200lab tables $M/*$only*/README.md
else
    b200lab tables README.md $M/*/README.md
fi
