#!/usr/bin/env bash
# Does a refactor change what runs? Run one point at an older commit and at this tree, on CPU with
# TORCH_COMPILE_DEBUG, and compare every graph Inductor compiled (the ATen graph, fx_graph_readable.py)
# and the code it generated (output_code.py), comments and temporary paths left out. "0 differing
# lines" for every graph means both commits hand the compiler the same computation: a GPU figure
# that moved between them moved with the machine, not the code. From the repository root:
#
#   bash experiments/scripts/compare_compiled_graphs.sh b3775c9 mfu -- experiment=mfu_gpt1b precision=bf16 \
#       run.device=cpu model.n_layers=2 model.d_model=128 model.n_heads=4 model.d_ff=512 seq.len=128 seq.batch=2 \
#       workload.options.grad_accum=2 workload.min_time_s=0 workload.steps=2 workload.warmup_steps=1
#
# The older commit is checked out into a temporary worktree and put first on PYTHONPATH (the CLI and
# its ranks then import it); Inductor's caches are off so both sides compile.
set -euo pipefail
old=$1 name=$2
shift 2
[[ ${1:-} == -- ]] && shift
root=$(pwd)
work=$(mktemp -d /tmp/b200lab_graphs_XXXX)
trap 'git -C "$root" worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/tree" "$old"
export TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
for side in old new; do
  mkdir -p "$work/$side/run"
  pp=""
  [[ $side == old ]] && pp=$work/tree
  (cd "$work/$side/run" && PYTHONPATH=$pp TORCH_COMPILE_DEBUG=1 TORCH_COMPILE_DEBUG_DIR=$work/$side/debug \
    python -m b200lab "$@" tracking.uri=sqlite:///$work/$side/mlflow.db >"$work/$side/console.log" 2>&1) || {
    echo "$name: the $side run failed:"; tail -20 "$work/$side/console.log"; exit 1; }
done
norm() { grep -v '^\s*#' "$1" | grep -v '^\s*$' | sed -E 's/kernel_cpp_[0-9a-z]+/KERNEL/g; s#/tmp/[^ ]*##g'; }
o=$(ls -d "$work"/old/debug/torch_compile_debug/*/torchinductor)
n=$(ls -d "$work"/new/debug/torch_compile_debug/*/torchinductor)
old_graphs=$(ls "$o" | grep -c '^model__' || true)
new_graphs=$(ls "$n" | grep -c '^model__' || true)
echo "$name: $old graphs $old_graphs, this tree $new_graphs; args: $*"
differ=0
for g in $(ls "$n" | grep '^model__'); do
  for f in fx_graph_readable.py output_code.py; do
    if [[ -f $o/$g/$f ]]; then
      c=$(diff <(norm "$o/$g/$f") <(norm "$n/$g/$f") | grep -c '^[<>]' || true)
    else
      c=missing
    fi
    [[ $c == 0 ]] || differ=1
    echo "  $g/$f: $c differing lines of $(norm "$n/$g/$f" | wc -l)"
  done
done
[[ $old_graphs == "$new_graphs" && $differ == 0 ]] && echo "$name: identical" || { echo "$name: DIFFERENT"; exit 1; }
