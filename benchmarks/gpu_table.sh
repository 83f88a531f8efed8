#!/usr/bin/env bash
# The whole table of the DTP paper on one machine at once: every method of every experiment as a process of its
# own, all started together, each with 10 seeds as replicas, then one table per experiment.
#
#   TARGETPROP_DATA=../shared/data bash benchmarks/gpu_table.sh OUT [SECONDS]
#
# A run at batch 100 leaves a GPU nearly idle (launch-bound: REPRODUCTION.md, "On one GPU"), so the methods share
# it: the table takes about as long as its longest method (the stochastic net's 1000 epochs), not their sum. Each
# process uses one CPU thread, compiles its step into CUDA graphs with Philox noise (COMPILE, RNG), writes its
# checkpoint at most once a minute and stops after SECONDS (default 540); a stopped method is tabled at the last
# epoch all its seeds finished (the table says so), and continues with `targetprop reproduce --resume DIR`.
#
# Settings (environment): EXPERIMENTS (default: every experiment with data here: mnist-tanh mnist-relu discrete
# stochastic autoencoder rules-mnist), SEEDS (0-9), DEVICE (cuda), SCALE (full), COMPILE (reduce-overhead), RNG
# (philox), EPOCHS (the experiments' own when unset).
# Writes OUT/log.txt (every table, the wall time), OUT/tables.tgz (table.md, table.csv and errors.png per
# experiment) and OUT/runs.tgz (every run directory without checkpoints).
set -u
out=${1:?usage: gpu_table.sh OUT [SECONDS]}
limit=${2:-540}
experiments=${EXPERIMENTS:-mnist-tanh mnist-relu discrete stochastic autoencoder rules-mnist}
mkdir -p "$out/runs" "$out/tables"
exec > >(tee -a "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1
echo "== $(date +%T) start: $experiments; seeds ${SEEDS:-0-9}, ${DEVICE:-cuda}, compile=${COMPILE:-reduce-overhead}, rng=${RNG:-philox}, limit ${limit} s"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')" || exit 1

# "EXPERIMENT METHOD" per line, every method of every experiment asked for (one Python start for all)
pairs=$(python3 -c "import sys; from targetprop.experiments import get_experiment
print('\n'.join(f'{e} {m.name}' for e in sys.argv[1:] for m in get_experiment(e).methods))" $experiments) || exit 1

declare -A folders
pids=()
while read -r exp method; do
    name="$exp--$method"
    folders[$exp]="${folders[$exp]:-} $out/runs/$name"
    timeout "$limit" python3 -m targetprop reproduce "$exp" --methods "$method" --seeds "${SEEDS:-0-9}" \
        --scale "${SCALE:-full}" ${EPOCHS:+--epochs "$EPOCHS"} --device "${DEVICE:-cuda}" --threads 1 \
        --set compile="${COMPILE:-reduce-overhead}" --set rng="${RNG:-philox}" --set checkpoint_seconds=60 \
        --out "$out/runs" --name "$name" --quiet < /dev/null > "$out/runs/$name.log" 2>&1 &
    pids+=($!)
    echo "$(date +%T) started $name (process $!)"
done <<< "$pairs"
for pid in "${pids[@]}"; do wait "$pid"; done
echo "== $(date +%T) every process ended: ${SECONDS} s of wall time"

for exp in $experiments; do
    reports=()
    for folder in ${folders[$exp]}; do
        [ -d "$folder" ] && reports+=(--report "$folder")
        tail -n 2 "$folder.log" | sed "s|^|  $(basename "$folder"): |"
    done
    [ ${#reports[@]} -gt 0 ] || continue
    echo "== $exp"
    python3 -m targetprop reproduce "${reports[@]}" --out "$out/tables" --name "$exp" --quiet
done

(cd "$out/tables" && find . -type f \( -name 'table.*' -o -name 'errors.png' -o -name 'filters.png' \) | tar czf "$out/tables.tgz" -T -)
(cd "$out/runs" && find . -type f ! -name 'checkpoint*' ! -name '.lock' ! -name '*.tmp' | tar czf "$out/runs.tgz" -T -)
echo "== $(date +%T) done"
