#!/usr/bin/env bash
# The one-call GPU check: everything the first (15-minute) GPU hour should measure, each part
# capped, all of it within TOTAL_S (default 450 s), results as JSON files in the output dir.
#
#   experiments/benchmarks/gpu_check.sh [--out DIR] [--wheels DIR] [--cpu_smoke] [--peak_tflops X]
#
# 1. installs the wheels the GPU image lacks from DIR (default .wheels, made here by
#    gpu_wheels.sh), offline (pip --no-index --find-links), if the imports need them;
# 2. checks that the project imports, and runs its GPU-relevant tests (GPU_TESTS);
# 3. runs the parts of gpu_check.py (env, train, memory, optimizer, partitioned), each in
#    its own process under `timeout`, each writing $OUT/gpu_check_<part>.json;
# 4. writes $OUT/gpu_check_summary.json: every stage's exit status and seconds.
# --cpu_smoke: tiny sizes on the CPU, one quick test (tests/test_gpu_check.py runs this).
# --peak_tflops: the bf16 peak MFU is taken against (default: the card's, gpu_check.BF16_PEAKS).
# The output dir is $OUT when set (the device tool's), else gpu_check_out/.
set -u
cd "$(dirname "$0")/../.."
OUT_DIR=${OUT:-gpu_check_out}
WHEELS=.wheels
SMOKE=0
PART_ARGS=()  # gpu_check.py's options
TOTAL_S=${TOTAL_S:-450}
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT_DIR=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --cpu_smoke) SMOKE=1; PART_ARGS+=(--cpu_smoke); shift ;;
    --peak_tflops) PART_ARGS+=(--peak_tflops="$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ "$SMOKE" = 1 ]; then
  export JAX_PLATFORMS=cpu
  GPU_TESTS=${GPU_TESTS:-tests/test_hlo_stats.py::test_kernel_times_subtracts_nested_kernels}
else
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda,cpu}  # the tests' conftest would pick the CPU
  GPU_TESTS=${GPU_TESTS:-tests/test_lmo.py tests/test_ns_variants.py tests/test_optimizer.py}
fi
# One persistent compilation cache: the memory part reuses the train part's compiled step.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/gpu_check_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
START=$(date +%s)
SUMMARY="$OUT_DIR/gpu_check_summary.txt"
: > "$SUMMARY"

# stage NAME CAP_S COMMAND...: runs COMMAND under `timeout`, capped by CAP_S and by what is
# left of TOTAL_S; its output goes to $OUT_DIR/NAME.log, its status to the summary.
stage() {
  local name=$1 cap=$2 left rc t0
  shift 2
  left=$((TOTAL_S - ($(date +%s) - START)))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 5 ]; then
    echo "$name skipped 0" >> "$SUMMARY"; echo "== $name: skipped, out of time"; return
  fi
  t0=$(date +%s)
  timeout -k 10 "$cap" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(($(date +%s) - t0))" >> "$SUMMARY"
  echo "== $name: exit $rc in $(($(date +%s) - t0)) s (cap $cap s)"
  tail -n 3 "$OUT_DIR/$name.log"
}

IMPORTS="import grain, ml_collections, tensorboardX, tqdm, matplotlib, pytest"
# (`timeout` runs programs, not shell functions: the install step is a bash -c script.)
stage install 90 bash -c '
  "$0" -c "$1" 2>/dev/null && { echo "nothing to install"; exit 0; }
  [ -d "$2" ] || { echo "no wheels dir $2 (make it with gpu_wheels.sh)"; exit 1; }
  "$0" -m pip install --no-index --find-links "$2" \
      grain ml_collections tensorboardX tqdm matplotlib pytest \
    || "$0" -m pip install --no-index --no-deps "$2"/*.whl  # a dependency missing
  "$0" -c "$1"' "$PY" "$IMPORTS" "$WHEELS"
stage imports 60 "$PY" -c "
import jax, scion_jax, scion_jax.train, scion_jax.data, scion_jax.analysis
print('jax', jax.__version__, jax.devices())"
# shellcheck disable=SC2086  # GPU_TESTS: a list of test paths
stage tests 75 "$PY" -m pytest -q -p no:cacheprovider -o addopts= $GPU_TESTS
stage env 30 "$PY" experiments/benchmarks/gpu_check.py --part=env --out="$OUT_DIR" \
  "${PART_ARGS[@]}"
stage train 150 "$PY" experiments/benchmarks/gpu_check.py --part=train --budget_s=90 \
  --out="$OUT_DIR" "${PART_ARGS[@]}"
stage memory 70 "$PY" experiments/benchmarks/gpu_check.py --part=memory --out="$OUT_DIR" \
  "${PART_ARGS[@]}"
stage optimizer 80 "$PY" experiments/benchmarks/gpu_check.py --part=optimizer \
  --out="$OUT_DIR" "${PART_ARGS[@]}"
stage partitioned 40 "$PY" experiments/benchmarks/gpu_check.py --part=partitioned \
  --out="$OUT_DIR" "${PART_ARGS[@]}"

"$PY" - "$SUMMARY" "$OUT_DIR/gpu_check_summary.json" "$(($(date +%s) - START))" <<'EOF'
import json, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
stages = {n: {"exit": None if rc == "skipped" else int(rc), "s": int(s)} for n, rc, s in rows}
json.dump({"stages": stages, "total_s": int(sys.argv[3])}, open(sys.argv[2], "w"), indent=1)
print(json.dumps(stages))
EOF
for name in install imports tests env train memory optimizer partitioned; do
  grep -q "^$name 0 " "$SUMMARY" || exit 1
done
