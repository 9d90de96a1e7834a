#!/usr/bin/env bash
# Issue 11's recorded runs on one host of 2 GPUs (nvidia-h100-x2 / nvidia-h200-x2), by phase:
#   bash experiments/scripts/gpu_parallel.sh PHASE [PHASE...]
# Phases: info validate forward fsdp_1b fsdp_1b_keep ddp_1b fsdp_8b comms summary (all: every one in that order), and ep (issue 29).
# Run from the repo root, as gpu_measure.sh: installs the staged wheels first when hydra/mlflow
# are missing; results land in multirun/ and the MLflow store mlflow.db, which $OUT receives as
# one tarball after every phase when OUT is set. NVLink SHARP multicast stays off: b200lab's
# launcher sets NCCL_NVLS_ENABLE=0 for the ranks (recorded as effective.nccl_nvls_enable by comms).
# Each phase fits one 10-minute command on H100s; code is written for any GPU count (dp, tp).
set -uo pipefail
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0
python3 -c 'import hydra, mlflow' 2>/dev/null || { mkdir -p /root/parts && cp .gpu/p*/* /root/parts/ 2>/dev/null; bash .gpu/base/install.sh >/dev/null; }
lab() { python3 -m b200lab "$@" 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) "; }
# the scaling points: the same per-GPU batch (8 x 2048 tokens per micro-batch, 4 micro-batches per
# optimizer step) on 1 and 2 GPUs; scaling efficiency = tokens/s on 2 / (2 x tokens/s on 1)
TRAIN1B="model=gpt_1b workload=train precision=bf16 seq=2k seq.batch=8 workload.options.grad_accum=4 compile=default workload.min_time_s=${MIN_TIME_S:-15}"
# gpt_8b: float32 shards + Adam are 110 GB, so 1 GPU is expected to record oom; full activation checkpointing
TRAIN8B="model=gpt_8b workload=train precision=bf16 seq=2k seq.batch=2 workload.options.grad_accum=2 model.checkpointing=full workload.min_time_s=${MIN_TIME_S:-15}"
phases=("$@"); [ "${1:-}" = all ] && phases=(info validate forward fsdp_1b fsdp_1b_keep ddp_1b fsdp_8b comms summary)
for phase in "${phases[@]}"; do
  echo "=== phase $phase $(date -u +%FT%TZ)"
  case $phase in
    info) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; nvidia-smi topo -m ;;
    validate)  # the split against one rank, same weights: bf16 at full gpt_8b, fp32 (tight tolerances) at 8 layers of its width
      lab -m hydra.sweep.dir=multirun/p11_validate_8b model=gpt_8b workload=validate parallelism=tp precision=bf16 seq=2k seq.batch=1 \
        parallelism.sequence_parallel=false,true
      lab -m hydra.sweep.dir=multirun/p11_validate_8b_fp32 model=gpt_8b model.n_layers=8 workload=validate parallelism=tp,fsdp,ddp \
        precision=fp32 seq=1k seq.batch=1 ;;
    forward)  # tokens/s and per-GPU memory of gpt_8b at tp1 and tp2 (one replica either way)
      lab -m hydra.sweep.dir=multirun/p11_forward_8b model=gpt_8b workload=forward precision=bf16 seq=2k seq.batch=8 \
        parallelism=single,tp compile=none,default workload.min_time_s=10 ;;
    fsdp_1b) lab -m hydra.sweep.dir=multirun/p11_fsdp_1b $TRAIN1B parallelism=fsdp parallelism.dp=1,2 ;;
    fsdp_1b_keep)  # gathered weights kept across the micro-batches: one all-gather per optimizer step
      lab -m hydra.sweep.dir=multirun/p11_fsdp_1b_keep $TRAIN1B parallelism=fsdp parallelism.dp=1,2 \
        parallelism.reshard_after_forward=false parallelism.reshard_after_backward=false ;;
    ddp_1b)  # DDP with one float32 gradient all-reduce per optimizer step (ddp.yaml: grad_sync=optimizer_step) vs today's per micro-batch
      lab -m hydra.sweep.dir=multirun/p11_ddp_1b $TRAIN1B parallelism=ddp parallelism.nproc=1,2
      lab -m hydra.sweep.dir=multirun/p11_ddp_1b_per_micro_batch $TRAIN1B parallelism=ddp parallelism.nproc=2 parallelism.grad_sync=micro_batch ;;
    ddp_1b_buckets)  # DDP's bucket size under torch.compile (each bucket is a graph break): 1 GPU, then 2 at 25 and 200 MiB
      lab -m hydra.sweep.dir=multirun/p11_ddp_1b_buckets $TRAIN1B parallelism=ddp parallelism.nproc=1
      lab -m hydra.sweep.dir=multirun/p11_ddp_1b_buckets_2gpu $TRAIN1B parallelism=ddp parallelism.nproc=2 parallelism.bucket_cap_mb=25,200 ;;
    fsdp_8b)
      lab -m hydra.sweep.dir=multirun/p11_fsdp_8b $TRAIN8B parallelism=fsdp parallelism.dp=1,2
      # 16-bit shards, no master copy: what fits on one GPU, for the 1 -> 2 comparison
      lab -m hydra.sweep.dir=multirun/p11_fsdp_8b_bf16 $TRAIN8B parallelism=fsdp parallelism.dp=1,2 parallelism.sharded_dtype=param \
        precision.master_dtype=none ;;
    ep)  # issue 29: model=moe (8 layers) on 2 GPUs, data parallel with and without expert parallel (each rank 4 of
         # the 8 experts), eager, bf16 weights, 3 trials; then expert parallel validated against one rank
      lab -m hydra.sweep.dir=multirun/p29_ep model=moe model.n_layers=8 workload=train precision=bf16 precision.master_dtype=none \
        seq=2k parallelism=ddp parallelism.nproc=2 parallelism.expert_parallel=1,2 workload.trials=3
      lab -m hydra.sweep.dir=multirun/p29_ep_validate model=moe model.n_layers=2 workload=validate precision=fp32 seq=1k seq.batch=2 \
        parallelism=ddp parallelism.nproc=2 parallelism.expert_parallel=2 ;;
    comms)  # nccl-tests' busbw, 1 MiB .. 1 GiB, float32; charts in each job's artifacts/comms_<op>.png
      lab -m hydra.sweep.dir=multirun/p11_comms workload=comms parallelism.nproc=2 workload.options.op=all_reduce,all_gather,reduce_scatter \
        workload.options.min_bytes=1048576 workload.options.max_bytes=1073741824 ;;
    summary)  # every p11 point: status, tokens/s, per-GPU peak memory, validation errors, busbw; scaling efficiency pairs
      python3 - <<'PY'
import json, glob, collections
rows = collections.defaultdict(dict)
for f in sorted(glob.glob("multirun/p11_*/*/results.json")):
    r = json.load(open(f)); m = r["metrics"]; p = r["config"]["parallelism"]
    print(f"{f.split('/')[1]:28s} {r['config']['model'].get('name', '-') + ' ' + r['config']['workload']['name'] + ' ' + p['name'] + ' nproc=' + str(p['nproc']):40s} {r['status']:6s} ranks={m.get('world_size')} tok/s={m.get('tokens_per_s', 0):,.0f} "
          f"mem/GPU={m.get('peak_mem_allocated_gb', 0):.1f}GB mfu={m.get('mfu', 0):.3f} "
          + " ".join(f"{k}={v:.3g}" for k, v in m.items() if k.endswith(("rel_err", "busbw_gbps"))) + f" run={r['mlflow']['run_id']}")
    if r["status"] == "ok" and r["config"]["workload"]["name"] == "train":
        rows[f.split("/")[1]][m["world_size"]] = m["tokens_per_s"]
rows["p11_ddp_1b_per_micro_batch"].setdefault(1, rows["p11_ddp_1b"].get(1))  # the same 1-GPU baseline
for sweep, by in rows.items():
    if by.get(1) and by.get(2):
        print(f"scaling efficiency {sweep}: {by[2] / (2 * by[1]):.3f}")
PY
      ;;
    *) echo "unknown phase $phase" ;;
  esac
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" mlflow.db multirun outputs 2>/dev/null
done
