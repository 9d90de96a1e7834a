#!/usr/bin/env bash
# Re-run, after a restructuring, the records it could move: the gpt_1b bf16 MFU point, the gpt_8b
# batch-1 decode point and the MoE layer pair, each with three timed trials, and the GPU test tier
# with its JUnit XML. On a lent GPU host (docs/measurements/README: staging), from the project
# root; each phase fits a 10-minute command and skips itself when its results are already there:
#
#   bash experiments/scripts/gpu_reverify.sh tests mfu      # phase names; `all` runs every phase
#   bash experiments/scripts/gpu_reverify.sh decode moe
#
# Results go under multirun/reverify/PHASE (and mlflow.db); with $OUT set (the device tool), each
# phase's folder, the store and the JUnit file are packed into $OUT/reverify.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import hydra, mlflow" 2>/dev/null || bash .gpu/base/install.sh > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
export PYTHONUNBUFFERED=1
lab() { python3 -m b200lab "$@"; }
done_() { ls multirun/reverify/"$1"/*/results.json >/dev/null 2>&1; }
phases=("$@")
[ "${phases[*]}" = all ] && phases=(tests mfu decode moe)
for phase in "${phases[@]}"; do
  case $phase in
    tests)
      [ -f gpu_tests.xml ] && continue
      PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} timeout 540 python3 -m pytest -q -n 0 -m gpu -p no:cacheprovider --junitxml=gpu_tests.xml -rs ;;
    mfu)
      done_ mfu && continue
      lab -m hydra.sweep.dir=multirun/reverify/mfu experiment=mfu_gpt1b precision=bf16 workload.trials=3 ;;
    decode)
      done_ decode && continue
      lab -m hydra.sweep.dir=multirun/reverify/decode workload=generate model=gpt_8b precision=bf16 compile=default \
        seq.batch=1 seq.len=128 workload.options.output_len=256 workload.steps=10 workload.trials=3 run.device=cuda ;;
    moe)  # the layer pair: 8 experts top-2 of 8192, and 64 experts top-8 of 2048 (the same active width)
      done_ moe8 || lab -m hydra.sweep.dir=multirun/reverify/moe8 workload=moe_layer workload.options.compile=true \
        workload.trials=3 run.device=cuda
      done_ moe64 || lab -m hydra.sweep.dir=multirun/reverify/moe64 workload=moe_layer workload.options.compile=true \
        workload.options.n_experts=64 workload.options.top_k=8 workload.options.d_ff_expert=2048 workload.trials=3 run.device=cuda ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/reverify.tar.gz" --exclude='.b200lab_path' multirun/reverify mlflow.db $(ls gpu_tests.xml 2>/dev/null)
fi
