#!/usr/bin/env bash
# The one prepared GPU check (issues 13, 22): the `gpu` tests (a captured pack against an
# eager one among them), then the GPU benchmark: layouts 4 x 0.25, packs of 32/64/128,
# the captured pack of 64, two packs of 64 at 0.5 each; the pack of 64's profile by
# phase (data, forward/backward, Adam, noise update, evaluation); the paper's MNIST grid
# estimated from the best layout, evaluation included. Under 5 minutes in all.
#
#   PYTHONPATH=$PWD bash bench/gpu_check.sh                 # on a machine with a GPU, < 5 min
#   PYTHONPATH=$PWD bash bench/gpu_check.sh --cpu-dry-run   # checks the script on a CPU
#
# Needs python3 with torch, numpy, pyarrow and pytest; no install, no Ray, no Polars (the
# Ray test is skipped without Ray). Results go to $OUT (gpu_tests.txt, gpu_bench.txt,
# gpu_bench.json) when it is set. Exit status: that of the tests, else of the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"
py="${PYTHON:-python3}"
out="${OUT:-}"
dry=()
t_tests=90; t_bench=190           # seconds, on the GPU machine (under 5 min in all)
if [ "${1:-}" = "--cpu-dry-run" ]; then
    dry=(--cpu-dry-run)
    export VAESTUDY_GPU_DRY_RUN=1
    t_tests=1200; t_bench=1200    # a CPU is slower, and may be shared
fi
[ -n "$out" ] && mkdir -p "$out"

echo "== gpu tests (tests/test_gpu.py tests/test_pack_graph.py)"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
timeout "$t_tests" "$py" -m pytest tests/test_gpu.py tests/test_pack_graph.py -q -rs \
    -p no:cacheprovider 2>&1 \
    | tee "${out:-/tmp}/gpu_tests.txt"
tests=${PIPESTATUS[0]}

echo "== gpu benchmark (bench/gpu_bench.py)"
timeout "$t_bench" "$py" bench/gpu_bench.py --budget $((t_bench - 20)) ${out:+--out "$out"} "${dry[@]}"
bench=$?
[ "$tests" -ne 0 ] && exit "$tests"
exit "$bench"
