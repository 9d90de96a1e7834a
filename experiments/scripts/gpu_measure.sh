#!/usr/bin/env bash
# Recorded GPU measurements on a lent Hopper host, by phase:
#   bash experiments/scripts/gpu_measure.sh PHASE [PHASE...]
# Run from the repo root; installs the staged wheels first when hydra/mlflow are missing. Every phase is an ordinary b200lab command;
# results land in multirun/ and outputs/ and the MLflow store mlflow.db, which $OUT receives as
# one tarball (plus the console log) when OUT is set.
set -uo pipefail
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
python3 -c 'import hydra, mlflow' 2>/dev/null || { mkdir -p /root/parts && cp .gpu/p*/* /root/parts/ 2>/dev/null; bash .gpu/base/install.sh >/dev/null; }
lab() { python3 -m b200lab "$@" 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) |UserWarning|exe_args, func_types|_warn_once\(|^\[.*HYDRA\]"; }
GPT1B="model=gpt_1b workload=train precision=bf16 seq=2k"
TRAIN1B="model=gpt_1b workload=train seq=2k compile=default workload.min_time_s=15"
for phase in "$@"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    info) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv ;;
    gemm) lab -m hydra.sweep.dir=multirun/gemm2 workload=gemm workload.options.dtype=bf16,fp8 ;;
    burst) lab -m hydra.sweep.dir=multirun/gemm_burst workload=gemm workload.options.dtype=bf16,fp8 workload.warmup_steps=3 workload.steps=10 workload.min_time_s=0 ;;
    mfu4) lab -m hydra.sweep.dir=multirun/gpt1b_train4 $GPT1B compile=default workload.options.grad_accum=8 workload.min_time_s=15 ;;
    sanity)
      lab hydra.run.dir=outputs/sanity_train model=gpt_125m workload=train precision=bf16 seq=2k workload.min_time_s=2
      lab hydra.run.dir=outputs/sanity_gemm workload=gemm workload.steps=10 workload.min_time_s=0
      lab -m hydra.sweep.dir=multirun/sanity_smoke experiment=smoke ;;
    multi)
      lab -m hydra.sweep.dir=multirun/allreduce workload=allreduce parallelism.nproc=2 workload.options.size_mb=1,16,256,1024
      lab -m hydra.sweep.dir=multirun/ddp model=gpt_125m workload=train precision=bf16 seq=2k parallelism.nproc=1,2 workload.min_time_s=3 ;;
    ceilings)
      lab -m hydra.sweep.dir=multirun/gemm workload=gemm workload.options.dtype=bf16,fp8
      lab -m hydra.sweep.dir=multirun/gemm_llm workload=gemm workload.options.dtype=bf16 \
        workload.options.shape=8192x6144x2048,8192x2048x8192,8192x50304x2048
      lab -m hydra.sweep.dir=multirun/hbm workload=hbm workload.options.size_mb=1024,4096 ;;
    mfu) lab -m hydra.sweep.dir=multirun/gpt1b_train $GPT1B compile=none,default workload.min_time_s=15 ;;
    mfu2) lab -m hydra.sweep.dir=multirun/gpt1b_train2 $GPT1B compile=default workload.options.grad_accum=1,4 workload.min_time_s=15 ;;
    trace) lab hydra.run.dir=outputs/gpt1b_trace $GPT1B compile=default profile=torch profile.memory=true workload.steps=5 ;;
    mfu3) lab -m hydra.sweep.dir=multirun/gpt1b_train3 $GPT1B compile=default workload.options.grad_accum=4 precision.param_dtype=bfloat16 workload.min_time_s=15 ;;
    ncu) timeout -s INT -k 30 270 python3 -m b200lab hydra.run.dir=outputs/gpt1b_ncu $GPT1B profile=ncu profile.options.launch_count=400 workload.warmup_steps=2 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) " ;;
    ncu_compiled) timeout -s INT -k 30 560 python3 -m b200lab hydra.run.dir=outputs/gpt1b_ncu_compiled $GPT1B compile=default profile=ncu profile.options.launch_count=500 workload.warmup_steps=2 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) " ;;
    compile_*) lab -m hydra.sweep.dir=multirun/compile_study_${phase#compile_} experiment=compile_study model=${phase#compile_} ;;
    # precision recipes (since the master-weights commit: precision=bf16 is bf16 weights + float32 masters)
    recipes) lab -m hydra.sweep.dir=multirun/recipes $TRAIN1B precision=bf16,bf16_autocast workload.options.grad_accum=8 ;;
    recipes_accum) lab -m hydra.sweep.dir=multirun/recipes_accum $TRAIN1B precision=bf16 workload.options.grad_accum=1,4 ;;
    recipes_variants)
      lab -m hydra.sweep.dir=multirun/recipes_bf16accum $TRAIN1B precision=bf16 workload.options.grad_accum=8 precision.grad_accum_dtype=bfloat16
      lab -m hydra.sweep.dir=multirun/recipes_nomaster $TRAIN1B precision=bf16 workload.options.grad_accum=8 precision.master_dtype=none
      lab -m hydra.sweep.dir=multirun/recipes_b8 $TRAIN1B precision=bf16 workload.options.grad_accum=4 seq.batch=8 ;;
    mfu_preset) lab -m hydra.sweep.dir=multirun/mfu_gpt1b experiment=mfu_gpt1b ;;
    rope) lab -m hydra.sweep.dir=multirun/rope $TRAIN1B precision=bf16 workload.options.grad_accum=8 model.rope_pairs=interleaved,half ;;
    rope_b8) lab -m hydra.sweep.dir=multirun/rope_b8 $TRAIN1B precision=bf16 workload.options.grad_accum=8 seq.batch=8 model.rope_pairs=half ;;
    trace_half) lab hydra.run.dir=outputs/gpt1b_trace_half $GPT1B compile=default profile=torch workload.steps=4 workload.options.grad_accum=2 model.rope_pairs=half ;;
    trace_master) lab hydra.run.dir=outputs/gpt1b_trace_master $GPT1B compile=default profile=torch workload.steps=5 ;;
    # issue 7's re-verification after the seams refactor: the ceilings and the MFU point
    reverify)
      lab -m hydra.sweep.dir=multirun/reverify_gemm workload=gemm workload.options.dtype=bf16,fp8
      lab -m hydra.sweep.dir=multirun/reverify_hbm workload=hbm workload.options.size_mb=4096
      lab -m hydra.sweep.dir=multirun/reverify_mfu experiment=mfu_gpt1b precision=bf16 ;;
    reverify_multi)  # on 2 GPUs: NCCL through the DataParallel strategy's DeviceMesh
      lab -m hydra.sweep.dir=multirun/reverify_allreduce workload=allreduce parallelism.nproc=2 workload.options.size_mb=16,1024
      lab -m hydra.sweep.dir=multirun/reverify_ddp model=gpt_125m workload=train precision=bf16 seq=2k parallelism.nproc=1,2 workload.min_time_s=3 ;;
    # issue 8: FP8 through Transformer Engine
    gpu_tests)  # the GPU-only tests of FP8 and MoE (they skip on CI's CPU)
      python3 -m pytest -q -p no:cacheprovider --tb=short -m "not e2e" tests/test_fp8_te.py tests/test_fp8_weight_only.py tests/test_moe.py 2>&1 | grep -E "^E |passed|failed|FAILED|^tests/" | head -40
      python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_fp8_te.py -k lab_train 2>&1 | grep -E "^E |passed|failed|FAILED" | head -20 ;;
    torchao)  # torchao's float8 training beside TE (the wheel staged in .gpu/tao)
      python3 -m pip install -q --no-index --no-deps .gpu/tao/torchao-*.whl
      python3 -m pytest -q -p no:cacheprovider --tb=short -m "not e2e" tests/test_fp8_torchao.py 2>&1 | grep -E "^E |passed|failed|FAILED" | head -20
      lab -m hydra.sweep.dir=multirun/torchao experiment=fp8_vs_bf16 precision=fp8_torchao precision.recipe=tensorwise,rowwise
      lab -m hydra.sweep.dir=multirun/torchao_bf16 experiment=fp8_vs_bf16 precision=bf16 ;;
    moe_fp8)  # MoE experts on TE GroupedLinear: the GPU test, then the mission's form
      python3 -m pytest -q -p no:cacheprovider --tb=short -m "not e2e" tests/test_fp8_te.py 2>&1 | grep -E "^E |passed|failed|FAILED" | head -20
      lab -m hydra.sweep.dir=multirun/moe_long_te model=moe precision=fp8 seq=12k,16k ;;
    moe_fp8_train) lab -m hydra.sweep.dir=multirun/moe_train_fp8 model=moe model.n_layers=8 workload=train seq=2k precision=bf16,fp8 precision.master_dtype=none ;;
    guard) lab -m hydra.sweep.dir=multirun/accuracy_guard experiment=accuracy_guard ;;
    mfu_bf16) lab -m hydra.sweep.dir=multirun/mfu_gpt1b_bf16 experiment=mfu_gpt1b precision=bf16 ;;
    fp8_ref)  # the plain TE model the lab's fp8 must match, same shape, same card, same call
      python3 experiments/scripts/te_reference.py --layers 8 --hidden 4096 --recipes none,delayed,current,block --out multirun/te_reference.jsonl 2>&1 | grep '^{' ;;
    fp8_8b) lab -m hydra.sweep.dir=multirun/fp8_8b experiment=fp8_vs_bf16 ${FP8_8B_PRECISIONS:+precision=$FP8_8B_PRECISIONS} ;;
    fp8_8b_master) lab -m hydra.sweep.dir=multirun/fp8_8b_master experiment=fp8_vs_bf16 precision=bf16,fp8 precision.master_dtype=auto ;;
    fp8_1b) lab -m hydra.sweep.dir=multirun/fp8_mfu_gpt1b experiment=mfu_gpt1b precision=fp8 precision.master_dtype=auto,none workload.min_time_s=10 ;;
    fp8_long) lab -m hydra.sweep.dir=multirun/fp8_long model=gpt_1b precision=fp8 seq=12k,16k ;;
    fp8_profile)  # where the fp8 step's kernel time goes, next to bf16 (profile=torch writes traces/kernel_breakdown_rank0.csv)
      lab -m hydra.sweep.dir=multirun/fp8_profile model=gpt_8b model.n_layers=8 workload=train seq=2k seq.batch=4 compile=default \
        precision=bf16,fp8 precision.master_dtype=none profile=torch workload.steps=5 ;;
    wo)  # FP8 weight-only inference forward vs bf16, gpt_1b, compiled
      lab -m hydra.sweep.dir=multirun/weight_only model=gpt_1b workload=forward seq=2k seq.batch=8 compile=default precision=bf16,fp8_weight_only workload.min_time_s=3 ;;
    # issue 9: mixture of experts
    moe_layer)
      lab -m hydra.sweep.dir=multirun/moe_layer workload=moe_layer workload.options.compile=false,true
      lab -m hydra.sweep.dir=multirun/moe_layer_fine workload=moe_layer workload.options.n_experts=64 workload.options.top_k=8 \
        workload.options.d_ff_expert=2048 workload.options.compile=false,true ;;
    moe_experts) lab -m hydra.sweep.dir=multirun/moe_experts experiment=moe_experts ;;
    moe_long) lab -m hydra.sweep.dir=multirun/moe_long model=moe precision=${MOE_PRECISION:-fp8} seq=12k,16k ;;
    # issue 10: attention backends and long context (B1 x 16 heads x head_dim 128, bf16)
    attn_tests)  # the GPU-only attention tests (they skip on CI's CPU)
      python3 -m pytest -q -p no:cacheprovider --tb=short -m gpu tests/test_attention_backends.py 2>&1 | grep -E "^E |passed|failed|FAILED" | head -30 ;;
    attn_micro) lab -m hydra.sweep.dir=multirun/attn_micro workload=attention seq=4k,16k,32k seq.batch=1 attention=sdpa,flex workload.options.backward=false,true ;;
    attn_kernels) lab -m hydra.sweep.dir=multirun/attn_kernels workload=attention seq=4k,16k seq.batch=1 attention=sdpa_cudnn,te workload.options.backward=false,true
      lab -m hydra.sweep.dir=multirun/attn_triton workload=attention seq=4k,16k seq.batch=1 attention=flex attention.flex_backend=triton workload.options.backward=false,true ;;
    attn_small)  # the 4K gap: launch overhead (CUDA graphs) and tile sizes
      lab -m hydra.sweep.dir=multirun/attn_graph workload=attention seq=4k seq.batch=1 attention=sdpa,flex workload.options.cuda_graph=true workload.options.backward=false,true
      lab -m hydra.sweep.dir=multirun/attn_tiles workload=attention seq=4k seq.batch=1 attention=flex attention.flex_backend=triton \
        +attention.kernel_options.BLOCK_M=64,128 +attention.kernel_options.BLOCK_N=64,128 ;;
    attn_sliding) lab -m hydra.sweep.dir=multirun/attn_sliding workload=attention seq=16k seq.batch=1 attention=flex_sliding attention.window=4096 workload.options.backward=false,true ;;
    long_ctx) lab -m hydra.sweep.dir=multirun/long_context experiment=long_context attention=sdpa,flex workload=train seq=4k,16k,32k ;;
    long_ctx_more)
      lab -m hydra.sweep.dir=multirun/long_context_te experiment=long_context attention=te workload=train seq=32k
      lab -m hydra.sweep.dir=multirun/long_context_fwd experiment=long_context attention=sdpa,flex workload=forward seq=32k ;;
    *) echo "unknown phase $phase" ;;
  esac
  # after every phase, so a command cut off at its time limit still returns what was measured
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" mlflow.db multirun outputs 2>/dev/null
done
