#!/usr/bin/env bash
# Issue 15's runs, for a host of 4 or 8 GPUs (nvidia-h100-x4/-x8, nvidia-h200-x4/-x8), by phase:
#   GPUS=8 bash experiments/scripts/gpu_scale.sh PHASE [PHASE...]
# Phases: info validate forward_40b fsdp_scaling serve_tp comms summary. GPUS (4 or 8, default: what
# nvidia-smi counts) caps every layout at the host's GPUs, so the same command records what a 4-GPU
# host allows. Run from the repo root with .gpu/base carried (and --te parts for FP8, as
# gpu_measure.sh); results land in multirun/ and mlflow.db, which $OUT receives as one tarball
# after every phase. NVLink SHARP multicast stays off (NCCL_NVLS_ENABLE=0, set by the launcher too).
# tests/test_presets.py::test_scale_script_commands_compose composes every command here on CPU.
set -uo pipefail
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 -c 'import hydra, mlflow' 2>/dev/null || { mkdir -p /root/parts && cp .gpu/p*/* /root/parts/ 2>/dev/null; bash .gpu/base/install.sh >/dev/null; }
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
lab() { python3 -m b200lab "$@" 2>&1 | grep -vE " INFO |^\s+(warm-up|timed) "; }
upto() { local out=() n; for n in "$@"; do [ "$n" -le "$GPUS" ] && out+=("$n"); done; local IFS=,; echo "${out[*]}"; }
TP=$(upto 4 8)                      # tensor-parallel widths this host allows
DP=$(upto 1 2 4 8)                  # data-parallel widths for the scaling ladder
phases=("$@"); [ "${1:-}" = all ] && phases=(info validate forward_40b fsdp_scaling serve_tp comms summary)
for phase in "${phases[@]}"; do
  echo "=== phase $phase $(date -u +%FT%TZ) (GPUS=$GPUS)"
  case $phase in
    info) nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; nvidia-smi topo -m ;;
    validate)  # logits, loss and gradients of the split against one rank, same weights. gpt_8b whole;
      # gpt_40b as a 4-layer slice at full width (one rank cannot hold 40B weights plus gradients)
      lab -m hydra.sweep.dir=multirun/p15_validate_8b model=gpt_8b workload=validate parallelism=tp parallelism.tp=4 \
        precision=bf16 seq=2k seq.batch=1
      lab -m hydra.sweep.dir=multirun/p15_validate_40b model=gpt_40b model.n_layers=4 workload=validate parallelism=tp \
        parallelism.tp=$TP precision=bf16 seq=2k seq.batch=1 ;;
    forward_40b)  # tokens/s and per-GPU memory, beside the legacy single-B200 FP16 figure (~15,900 tokens/s at B4 x 2k).
      # bf16 only: FP8 under tensor parallel is refused (the TE/torchao modules are not split by the TP plan)
      lab -m hydra.sweep.dir=multirun/p15_forward_40b model=gpt_40b workload=forward precision=bf16 parallelism=tp \
        parallelism.tp=$TP seq=2k,4k,8k,16k seq.batch=4 compile=default workload.min_time_s=10 ;;
    fsdp_scaling)  # the same per-GPU batch on 1..8 GPUs; efficiency = tokens/s on N / (N x tokens/s on 1)
      lab -m hydra.sweep.dir=multirun/p15_fsdp_1b model=gpt_1b workload=train precision=bf16 seq=2k seq.batch=8 \
        workload.options.grad_accum=4 compile=default workload.min_time_s=10 parallelism=fsdp parallelism.dp=$DP
      lab -m hydra.sweep.dir=multirun/p15_fsdp_8b model=gpt_8b workload=train precision=bf16 seq=2k seq.batch=2 \
        workload.options.grad_accum=2 model.checkpointing=full compile=default workload.min_time_s=10 parallelism=fsdp \
        parallelism.dp=$DP parallelism.sharded_dtype=param precision.master_dtype=none ;;
    serve_tp)  # gpt_8b served at tp (8 where the host has 8), three request rates
      lab -m hydra.sweep.dir=multirun/p15_serve experiment=serve_load model=gpt_8b parallelism=tp \
        parallelism.tp=$(upto 8 | grep -q 8 && echo 8 || echo 4) ;;
    comms)  # nccl-tests' busbw, 1 MiB .. 1 GiB
      lab -m hydra.sweep.dir=multirun/p15_comms workload=comms parallelism.nproc=$(upto 4 8 | tr , '\n' | tail -1) \
        workload.options.op=all_reduce,all_gather,reduce_scatter workload.options.min_bytes=1048576 workload.options.max_bytes=1073741824 ;;
    summary) python3 - <<'PY'
import glob, json, collections
by = collections.defaultdict(dict)
for f in sorted(glob.glob("multirun/p15_*/*/results.json")):
    r = json.load(open(f)); m = r["metrics"]; p = r["config"]["parallelism"]
    print(f"{f.split('/')[1]:18s} {r['config']['model']['name']:8s} {r['config']['workload']['name']:9s} {p['name']} nproc={p['nproc']} "
          f"{r['status']:5s} tok/s={m.get('tokens_per_s', 0):,.0f} mem/GPU={m.get('peak_mem_allocated_gb', 0):.1f} run={r['mlflow']['run_id']}")
    if r["status"] == "ok" and r["config"]["workload"]["name"] == "train":
        by[f.split("/")[1]][p["nproc"]] = m["tokens_per_s"]
for sweep, t in by.items():
    for n in sorted(t):
        if 1 in t and n > 1:
            print(f"scaling efficiency {sweep} at {n}: {t[n] / (n * t[1]):.3f}")
PY
      ;;
    *) echo "unknown phase $phase" ;;
  esac
  [ -n "${OUT:-}" ] && tar czf "$OUT/results.tgz" mlflow.db multirun outputs 2>/dev/null
done
