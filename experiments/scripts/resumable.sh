# Helpers for the resumable GPU scripts (gpu_baseline.sh, gpu_fp8_moe.sh), sourced after the caller sets
# B (its results folder) and TARBALL (the file $OUT receives). Each phase of such a script fits a
# 10-minute device command; a sweep that finished leaves .done and is skipped next time, and one cut off
# mid-way is moved aside and run again whole, so a cut-off command resumes where it stopped.
export B200LAB_GIT_SHA=${B200LAB_GIT_SHA:-$(cat .gpu/base/GIT_SHA 2>/dev/null || echo unknown)} PYTHONUNBUFFERED=1
python3 -c "import hydra, mlflow" 2>/dev/null || bash .gpu/base/install.sh > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
mkdir -p "$B"
exec > >(tee -a "$B"/console.log) 2>&1  # the console travels in the tarball: a cut-off call still says what failed
quiet() { grep -vE " INFO |^\s+(warm-up|timed) |UserWarning|exe_args, func_types|_warn_once\(|^\[.*HYDRA\]|warnings.warn"; }
lab() { python3 -m b200lab "$@" 2>&1 | quiet; }
pack() { [ -n "${OUT:-}" ] && tar czf "$OUT/$TARBALL" --exclude='.b200lab_path' --exclude='*.pt' "$B" mlflow.db $(ls gpu_tests*.xml 2>/dev/null); }
sweep() {
  local name=$1; shift
  [ -e "$B/$name/.done" ] && return
  [ -d "$B/$name" ] && mv "$B/$name" "$B/$name.cut-$(date +%s)"
  lab -m hydra.sweep.dir="$B/$name" "$@"; mkdir -p "$B/$name" && touch "$B/$name/.done"
  pack  # a call cut off later still brings this sweep back
}
# the GPU-only tests of the named files, once, with their JUnit XML (CLI subprocesses run from temporary
# folders: PYTHONPATH lets them import this checkout)
gpu_tests() {
  local xml=$1; shift
  [ -f "$xml" ] || PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} timeout 540 python3 -m pytest -q -n 0 -m gpu \
    -p no:cacheprovider --junitxml="$xml" -rs "$@" 2>&1 | tail -25
}
# a reference script run until OUT holds 3 JSON lines (3 jobs): three OUT CMD...
three() { local out=$1; shift; local have; have=$(cat "$out" 2>/dev/null | grep -c '^{'); for _ in $(seq $((have + 1)) 3); do "$@" --out "$out" 2>&1 | quiet | tail -5; done; }
# the folder of the cuDNN PyTorch loads: put first on LD_LIBRARY_PATH, TE's library loads it rather than the host's older one
torch_cudnn() { python3 -c "import torch; torch.backends.cudnn.version(); print(next(l.split()[-1].rsplit('/', 1)[0] for l in open('/proc/self/maps') if 'libcudnn' in l))"; }
