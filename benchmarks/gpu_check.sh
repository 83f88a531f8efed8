#!/usr/bin/env bash
# The checks and timings of a GPU session, one step after another, each under its own time limit so that a slow
# step cannot take the others' time:
#
#   TARGETPROP_DATA=../shared/data bash benchmarks/gpu_check.sh OUT [DEVICE] [SCALE]    # DEVICE cuda, SCALE full
#
# 1. TESTS (default tests/test_devices.py): every rule trains, checkpoints and resumes on the device and keeps its
#    tensors there; BP, FA and DFA on the GPU follow the CPU to float32 rounding; steps compiled into CUDA graphs
#    give the eager numbers;
# 2. EXPERIMENTS (default: mnist-tanh discrete stochastic autoencoder rules-mnist): `targetprop reproduce` of each
#    with 10 seeds as replicas for EPOCHS epochs (default 2), every method, eager: the seconds per epoch of the
#    full table;
# 3. the benchmark suite on NETWORKS (default mnist): throughput against a plain PyTorch loop, 10 replicas
#    against 10 runs (BENCH_ARGS=--compile adds bp and dtp compiled, and as CUDA graphs);
# 4. COMPILED (default mnist-tanh:dtp,bp): the same as 2 for those methods with compile=reduce-overhead (CUDA
#    graphs);
# 5. FULL (default: none), e.g. mnist-tanh:dtp,bp: that experiment with its full epochs and 10 seeds, compiled if
#    step 4 ran, else eager, for at most FULL_SECONDS, or, with DEADLINE set, until DEADLINE seconds after the
#    script started (less 30 s to pack the results).
# Compiled steps draw their noise from Philox streams (RNG, default philox: a step that draws from torch.Generator s
# is graphed only in pieces); eager ones from generators (RNG default torch, the CPU runs' streams).
# A step is skipped by setting its variable to "none". Runs write their checkpoint at most every
# CHECKPOINT_SECONDS (default 60; 0: every epoch): 10 replicas of the discrete net checkpoint 144 MB, as long as a
# GPU epoch.
#
# Writes OUT/log.txt (everything printed) and OUT/runs.tgz (every run directory without its checkpoints; a run
# stopped by its time limit can be tabled with `targetprop reproduce --report DIR`).
set -u
out=${1:?usage: gpu_check.sh OUT [DEVICE] [SCALE]}
device=${2:-cuda}
scale=${3:-full}
epochs=${EPOCHS:-2}
mkdir -p "$out/runs"
exec > >(tee -a "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
step() { echo; echo "== $(date +%T) $*"; }
want() { [ "$1" != none ]; }

# the seconds of each epoch of replica 0 (the first includes CUDA's start and, compiled, the compilation)
epoch_seconds() {
    for m in "$1"/*/metrics.jsonl; do
        [ -f "$m" ] && python3 -c "import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
secs = [round(r['seconds'], 2) for r in rows if r.get('replica') == 0 and 'seconds' in r]
last = [r['test_error'] for r in rows if r['epoch'] == rows[-1]['epoch']]
print(sys.argv[1].split('/')[-2], 'epochs', len(secs), 'seconds per epoch', secs if len(secs) < 6 else
      f'first {secs[0]}, median {sorted(secs)[len(secs) // 2]}, all {round(sum(secs), 1)}',
      'test error at the last epoch, mean', round(sum(last) / len(last), 2))" "$m"
    done
}

reproduce() {  # NAME EXPERIMENT COMPILE-MODE METHODS SECONDS [EPOCHS]
    step "reproduce $2, 10 seeds, ${6:-full} epochs, compile=$3, methods $4"
    local start=$SECONDS
    timeout "$5" python3 -m targetprop reproduce "$2" --seeds 0-9 ${6:+--epochs "$6"} --scale "$scale" \
        --device "$device" --set compile="$3" --set checkpoint_seconds="${CHECKPOINT_SECONDS:-60}" \
        --set rng="${RNG:-$([ "$3" = reduce-overhead ] && echo philox || echo torch)}" \
        ${4:+--methods "$4"} --out "$out/runs" --name "$1" --quiet
    local code=$?
    echo "exit $code, wall $((SECONDS - start)) s"
    epoch_seconds "$out/runs/$1"
    return $code
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import sys, torch, targetprop; print(sys.version.split()[0], torch.__version__, targetprop.__file__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" || exit 1

tests=${TESTS:-tests/test_devices.py}
if want "$tests"; then
    step "tests: $tests"
    # in one process (the device's image may lack pytest-xdist, which the project's addopts ask for)
    timeout "${TEST_SECONDS:-150}" python3 -m pytest -q -p no:cacheprovider -o addopts="--strict-markers" -rs $tests
    echo "tests exit $?"
fi

experiments=${EXPERIMENTS:-mnist-tanh discrete stochastic autoencoder rules-mnist}
if want "$experiments"; then
    for exp in $experiments; do
        reproduce "$exp-eager" "$exp" off "" "${EXP_SECONDS:-50}" "$epochs"
    done
fi

networks=${NETWORKS:-mnist}
if want "$networks"; then
    step "benchmark suite: $networks"
    timeout "${BENCH_SECONDS:-90}" python3 benchmarks/suite.py --devices "$device" --networks "$networks" \
        --repeats 3 --no-peers ${BENCH_ARGS:-} --json "$out/bench.json" --markdown "$out/bench.md"
    echo "bench exit $?"
fi

graphs=off
compiled=${COMPILED:-mnist-tanh:dtp,bp}
if want "$compiled"; then
    graphs=reduce-overhead
    for item in $compiled; do
        reproduce "${item%%:*}-graphs" "${item%%:*}" reduce-overhead "${item#*:}" "${EXP_SECONDS:-50}" "$epochs" ||
            graphs=off
    done
fi

full=${FULL:-none}
if want "$full"; then
    seconds=${FULL_SECONDS:-300}
    [ -n "${DEADLINE:-}" ] && seconds=$((DEADLINE - SECONDS - 30))
    reproduce "${full%%:*}-full-$graphs" "${full%%:*}" "$graphs" "${full#*:}" "$seconds"
fi

(cd "$out/runs" && find . -type f ! -name 'checkpoint*' ! -name '.lock' ! -name '*.tmp' | tar czf "$out/runs.tgz" -T -)
step "done"
