#!/bin/sh
# tools/ablate.sh: the GAME experiment. Trains the default model once per arm,
# initial learning rate and seed, at a fixed step budget, and writes a markdown
# table of the final validation losses to stdout (progress goes to stderr).
#
# usage: tools/ablate.sh [-s STEPS] [-n SEEDS] [-l "LR LR ..."] [-a "ARM ARM ..."]
#                        [-o DIR] [-j JOBS]
#   -s  training steps per run (default 1000)
#   -n  seeds per cell, 1..N (default 2)
#   -l  initial learning rates (default "1e-4 3e-4 1e-3 3e-3 1e-2"); the final
#       rate of the cosine is a tenth of each
#   -a  arms, as --game modes (default: off; C1; then C2, C4, C3 and C5 added
#       one at a time; and full without each of C1 to C4)
#   -o  folder for the runs' logs and checkpoints (default ablate-out)
#   -j  runs at a time, each on one thread (default 1, with all threads); the
#       losses do not depend on it, since results are the same for any thread
#       count
# Every arm of a cell shares the seed, so initialisation and data order are the
# same across arms. Extra flags for train can be given in TRAIN_FLAGS, and
# another train binary in TRAIN (default ./train, built first).
set -eu

steps=1000
seeds=2
lrs="1e-4 3e-4 1e-3 3e-3 1e-2"
arms="off c1 c1,c2 c1,c2,c4 c1,c2,c3,c4 full full,-c1 full,-c2 full,-c3 full,-c4"
out=ablate-out
jobs=1
while getopts s:n:l:a:o:j: flag; do
    case $flag in
    s) steps=$OPTARG ;;
    n) seeds=$OPTARG ;;
    l) lrs=$OPTARG ;;
    a) arms=$OPTARG ;;
    o) out=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '4,18p' "$0" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
if [ -z "${TRAIN:-}" ]; then make -s train >&2; TRAIN=./train; fi
mkdir -p "$out"
results="$out/results.tsv"
: > "$results"

# every run, as a line of arm, rate, seed and name; then run them, JOBS at a time
threads=0
if [ "$jobs" -gt 1 ]; then threads=1; fi
list="$out/runs.txt"
: > "$list"
for arm in $arms; do
    for lr in $lrs; do
        seed=1
        while [ "$seed" -le "$seeds" ]; do
            echo "$arm $lr $seed $(echo "$arm-$lr-$seed" | tr ',' '_')" >> "$list"
            seed=$((seed + 1))
        done
    done
done
export steps out threads TRAIN
xargs -P "$jobs" -L 1 sh -c '
    arm=$0 lr=$1 seed=$2 name=$3
    min_lr=$(awk -v l="$lr" "BEGIN { printf \"%g\", l / 10 }")
    echo "run $name" >&2
    status=0
    "$TRAIN" --game "$arm" --lr "$lr" --min-lr "$min_lr" --steps "$steps" \
        --seed "$seed" --eval-every "$steps" --log-every 50 --save-every 0 \
        --threads "$threads" -o "$out/$name.bin" ${TRAIN_FLAGS:-} \
        > "$out/$name.log" 2>&1 || status=$?
    echo "$status" > "$out/$name.status"
    rm -f "$out/$name.bin" "$out/$name.bin.last"
' < "$list"

# each run: its last validation loss (or "diverged") and median ms/step
while read -r arm lr seed name; do
    val=$(awk '/^eval step/ { v = $7 } END { print v }' "$out/$name.log")
    ms=$(awk '/ms\/step \|/ { print $10 }' "$out/$name.log" | sort -n |
         awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : "nan") }')
    status=$(cat "$out/$name.status")
    if [ "$status" -ne 0 ] || [ -z "$val" ]; then val=diverged; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$arm" "$lr" "$seed" "$val" "$ms" >> "$results"
done < "$list"

# the table: mean and half-range per arm and rate, worst case, divergences, cost
awk -F'\t' -v lrs="$lrs" -v steps="$steps" -v seeds="$seeds" '
{
    key = $1 SUBSEP $2
    if ($4 == "diverged") { div[$1]++; bad[key] = 1; anybad = 1 }
    else {
        n[key]++; s[key] += $4
        if (!(key in lo) || $4 < lo[key]) lo[key] = $4
        if (!(key in hi) || $4 > hi[key]) hi[key] = $4
    }
    ms[$1] = ms[$1] " " $5
    if (!($1 in seen)) { seen[$1] = 1; order[++narms] = $1 }
}
function median(list,   a, k, i, j, t) {
    k = split(list, a, " ")
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
        if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return k ? a[int((k + 1) / 2)] : 0
}
END {
    nl = split(lrs, L, " ")
    printf "Validation loss after %d steps, mean +- half-range over %d seeds.\n\n", steps, seeds
    printf "| arm |"
    for (i = 1; i <= nl; i++) printf " lr %s |", L[i]
    printf " worst | diverged | ms/step | overhead |\n|---|"
    for (i = 1; i <= nl + 4; i++) printf "---|"
    printf "\n"
    base = median(ms["off"])
    for (a = 1; a <= narms; a++) {
        arm = order[a]; worst = 0
        printf "| %s |", arm
        for (i = 1; i <= nl; i++) {
            key = arm SUBSEP L[i]
            if (n[key] == 0) { printf " diverged |"; worst = "inf"; continue }
            m = s[key] / n[key]
            printf " %.4f +- %.4f%s |", m, (hi[key] - lo[key]) / 2, (key in bad) ? "*" : ""
            if (worst != "inf" && m > worst) worst = m
        }
        med = median(ms[arm])
        w = (worst == "inf") ? "diverged" : sprintf("%.4f", worst)
        cost = (base > 0) ? sprintf("%+.0f%%", 100 * (med / base - 1)) : "-"
        printf " %s | %d | %.1f | %s |\n", w, div[arm], med, cost
    }
    if (anybad) printf "\n* some seeds of this cell diverged; the mean is over the others.\n"
}' "$results"
