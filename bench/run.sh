#!/bin/sh
# bench/run.sh: the figures of docs/BENCHMARKS.md, in one run (`make bench`).
#
# Training speed at the default and a medium configuration against the PyTorch
# reference of the same model (tools/reference.py), sampling speed with and
# without the KV cache, peak memory, the speedup from 1 to 2 threads, and the
# matrix products against OpenBLAS sgemm. Every figure is a median over
# repeated measurements; the commands are printed with them.
#
# usage: bench/run.sh [-q]   (-q: fewer repetitions, for a quick look)
set -eu
cd "$(dirname "$0")/.."

reps=5        # runs per training figure
reps_more=9   # runs per thread pair and per sampling figure: these are quick, and
              # the machine's drift shows in them the most
steps_default=60
steps_medium=12
if [ "${1:-}" = "-q" ]; then reps=2; reps_more=3; steps_default=30; steps_medium=6; fi
PY=/usr/bin/python3
out=bench/out
mkdir -p "$out"

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : "nan") }'; }

# The median ms/step of a train run's log lines (one line per step), without
# the first few steps, which warm the caches up.
train_ms() {
    ./train "$@" --eval-every 100000 --eval-batches 1 --log-every 1 --save-every 0 \
        -o "$out/bench.bin" > "$out/train.log" 2>&1
    awk '/ms\/step \|/ { n++; if (n > 3) print $10 }' "$out/train.log" | median
}

echo "# game benchmarks"
echo
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores," \
     "$(free -g | awk '/^Mem:/ { print $2 }') GiB;" \
     "L2 $(lscpu | sed -n 's/^L2 cache: *//p'), L3 $(lscpu | sed -n 's/^L3 cache: *//p')"
echo "compiler: $(gcc --version | head -1)"
echo "reference: PyTorch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing)"
echo

# ---------------------------------------------------------------------------
echo "## Training step, game against PyTorch (2 threads)"
echo
default="--layers 4 --heads 4 --channels 128 --context 64 --batch 12"
medium="--layers 6 --heads 6 --channels 384 --context 256 --batch 8"
echo "| config | game ms/step | game tokens/s | PyTorch ms/step (OpenBLAS kernel) | ratio |"
echo "|---|---|---|---|---|"
for cfg in default medium; do
    eval "flags=\$$cfg"
    eval "steps=\$steps_$cfg"
    tokens=$(echo "$flags" | awk '{ for (i = 1; i < NF; i++) { if ($i == "--context") c = $(i + 1); if ($i == "--batch") b = $(i + 1) } print b * c }')
    game=$(for r in $(seq "$reps"); do train_ms $flags --steps "$steps" --threads 2; done | median)

    # the reference with Debian's OpenBLAS at its fastest kernel here, and as it
    # comes (it picks a generic kernel on this processor unless told)
    best=""
    for core in SkylakeX ""; do
        line=$(OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE=$core $PY tools/reference.py bench \
               $flags --steps "$steps" --threads 2 2>/dev/null | grep '^reference' || true)
        ms=$(echo "$line" | awk '{ print $3 }')
        kernel=$(echo "$line" | sed -n 's/.*blas *//p')
        [ -n "$ms" ] && echo "$ms $kernel" >> "$out/ref-$cfg.txt"
        if [ -n "$ms" ] && { [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; }; then
            best=$ms; best_kernel=$kernel
        fi
    done
    if [ -n "$best" ]; then
        ratio=$(awk -v a="$best" -v b="$game" 'BEGIN { printf "%.1fx", a / b }')
        ref="$best ($best_kernel)"
    else
        ratio="-"; ref="not available (install python3-torch)"
    fi
    printf '| %s (%s) | %.1f | %.0f | %s | %s |\n' "$cfg" "$flags" "$game" \
        "$(awk -v t="$tokens" -v m="$game" 'BEGIN { print t / m * 1000 }')" "$ref" "$ratio"
done
echo
echo "game: \`./train FLAGS --steps N --threads 2 --log-every 1\`, median ms/step of $reps runs"
echo "(the first 3 steps of each dropped). PyTorch: \`OPENBLAS_CORETYPE=K tools/reference.py"
echo "bench FLAGS --threads 2\` (median of its own timed steps), the faster kernel shown."
echo

# ---------------------------------------------------------------------------
echo "## Threads (default config)"
echo
# one run on 1 thread, then one on 2, repeated, so that a drift of the machine's
# speed meets both alike; the speedup is the median of the pairs' ratios
: > "$out/threads.txt"
for r in $(seq "$reps_more"); do
    a=$(train_ms $default --steps "$steps_default" --threads 1)
    b=$(train_ms $default --steps "$steps_default" --threads 2)
    echo "$a $b" >> "$out/threads.txt"
done
t1=$(awk '{ print $1 }' "$out/threads.txt" | median)
t2=$(awk '{ print $2 }' "$out/threads.txt" | median)
speedup=$(awk '{ print $1 / $2 }' "$out/threads.txt" | median)
echo "| threads | ms/step | speedup |"
echo "|---|---|---|"
echo "| 1 | $t1 | 1.00 |"
echo "| 2 | $t2 | $(awk -v s="$speedup" 'BEGIN { printf "%.2f", s }') |"
echo
echo "$reps_more pairs of runs, each a 1-thread run then a 2-thread run; the speedup is the"
echo "median of the pairs' ratios."
echo

# ---------------------------------------------------------------------------
echo "## Sampling (default model, one thread)"
echo
./train $default --steps 20 --eval-every 20 --eval-batches 1 --save-every 0 -q \
    -o "$out/sample.bin" > /dev/null 2>&1
run_tps() {
    for r in $(seq "$reps_more"); do
        ./run "$out/sample.bin" -n "$1" -s "$r" $2 2>&1 >/dev/null | awk '{ print $(NF - 1) }'
    done | median
}
cache_ctx=$(run_tps 63 "")
cache=$(run_tps 2000 "")
cache32=$(run_tps 2000 "--fp32")
nocache=$(run_tps 500 "--no-cache")
echo "| mode | tokens/s |"
echo "|---|---|"
echo "| KV cache, within the context (63 tokens) | $cache_ctx |"
echo "| KV cache, 2000 tokens (the window slides) | $cache |"
echo "| KV cache, float32 weights (\`--fp32\`), 2000 tokens | $cache32 |"
echo "| no cache (\`--no-cache\`, 500 tokens) | $nocache |"
echo
echo "\`./run MODEL -n N [--fp32] [--no-cache]\`, median of $reps_more runs; the cache"
echo "decodes with bfloat16 weights unless \`--fp32\`."
echo

# ---------------------------------------------------------------------------
echo "## Peak memory"
echo
peak() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk '/Maximum resident/ { printf "%.0f MiB", $6 / 1024 }'; }
echo "| command | peak resident memory |"
echo "|---|---|"
echo "| train, default config | $(peak ./train $default --steps 10 --eval-every 10 --eval-batches 1 --save-every 0 -q -o $out/m.bin) |"
echo "| train, medium config | $(peak ./train $medium --steps 2 --eval-every 2 --eval-batches 1 --save-every 0 -q -o $out/m.bin) |"
echo "| PyTorch reference, default config | $(peak $PY tools/reference.py bench $default --steps 5 --threads 2) |"
echo "| run, default model, 2000 tokens | $(peak ./run $out/sample.bin -n 2000) |"
echo

# ---------------------------------------------------------------------------
echo "## Matrix products of the default config (one thread)"
echo
echo "GFLOP/s of this runtime's kernels beside OpenBLAS sgemm on the same shapes"
echo "(N = batch x context rows, IC inputs, OC outputs; dinp and dweight are the"
echo "backward products), median of 41 calls each:"
echo
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=SkylakeX ./bench/matmul
rm -f "$out/bench.bin" "$out/bench.bin.last" "$out/m.bin" "$out/m.bin.last" \
      "$out/sample.bin" "$out/sample.bin.last"
