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
# The median ms/step of one reference run: ref_ms FLAGS STEPS CORETYPE (empty when
# PyTorch is missing or the run failed), and the OpenBLAS kernel it used in
# $out/ref-kernel.txt. An empty CORETYPE leaves OPENBLAS_CORETYPE unset.
ref_ms() {
    line=$(env OMP_WAIT_POLICY=passive ${3:+OPENBLAS_CORETYPE=$3} $PY tools/reference.py \
           bench $1 --steps "$2" --threads 2 2>/dev/null | grep '^reference' || true)
    echo "$line" | sed -n 's/.*blas *//p' > "$out/ref-kernel.txt"
    echo "$line" | awk 'NF { print $3 }'
}

echo "| config | game ms/step | game tokens/s | PyTorch ms/step (OpenBLAS kernel) | ratio |"
echo "|---|---|---|---|---|"
for cfg in default medium; do
    eval "flags=\$$cfg"
    eval "steps=\$steps_$cfg"
    tokens=$(echo "$flags" | awk '{ for (i = 1; i < NF; i++) { if ($i == "--context") c = $(i + 1); if ($i == "--batch") b = $(i + 1) } print b * c }')

    # the reference's fastest OpenBLAS kernel here: one run with the AVX-512 one
    # and one as the library comes (it picks a generic kernel on this processor
    # unless told)
    best=""; best_core=""; best_kernel=""
    for core in SkylakeX ""; do
        ms=$(ref_ms "$flags" "$steps" "$core")
        if [ -n "$ms" ] && { [ -z "$best" ] || awk -v a="$ms" -v b="$best" 'BEGIN { exit !(a < b) }'; }; then
            best=$ms; best_core=$core; best_kernel=$(cat "$out/ref-kernel.txt")
        fi
    done

    # then pairs of runs, game and the reference at that kernel back to back, so
    # that a drift of the machine's speed meets both alike; the ratio is the
    # median of the pairs' ratios
    : > "$out/pairs-$cfg.txt"
    for r in $(seq "$reps"); do
        g=$(train_ms $flags --steps "$steps" --threads 2)
        p=""
        [ -n "$best" ] && p=$(ref_ms "$flags" "$steps" "$best_core")
        echo "$g $p" >> "$out/pairs-$cfg.txt" # just g when the reference failed
    done
    game=$(awk '{ print $1 }' "$out/pairs-$cfg.txt" | median)
    if [ -n "$best" ] && awk 'NF == 2 { ok = 1 } END { exit !ok }' "$out/pairs-$cfg.txt"; then
        refm=$(awk 'NF == 2 { print $2 }' "$out/pairs-$cfg.txt" | median)
        ratio=$(awk 'NF == 2 { print $2 / $1 }' "$out/pairs-$cfg.txt" | median |
                awk '{ printf "%.2fx", $1 }')
        whole=$(awk 'NF == 2' "$out/pairs-$cfg.txt" | wc -l)
        [ "$whole" -lt "$reps" ] && refm="$refm, $whole of $reps runs"
        ref="$refm ($best_kernel)"
    else
        ratio="-"; ref="not available (install python3-torch)"
    fi
    printf '| %s (%s) | %.1f | %.0f | %s | %s |\n' "$cfg" "$flags" "$game" \
        "$(awk -v t="$tokens" -v m="$game" 'BEGIN { print t / m * 1000 }')" "$ref" "$ratio"
done
echo
echo "$reps pairs of runs per config, each a game run then a PyTorch run; each figure is"
echo "the median of its $reps runs, and the ratio the median of the pairs' ratios."
echo "game: \`./train FLAGS --steps N --threads 2 --log-every 1\`, median ms/step of a run"
echo "(the first 3 steps dropped). PyTorch: \`OPENBLAS_CORETYPE=K tools/reference.py bench"
echo "FLAGS --threads 2\` (median of its own timed steps), with K the faster of SkylakeX"
echo "and the library's own choice in one run of each."
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
cache16=$(run_tps 2000 "--bf16")
cache32=$(run_tps 2000 "--fp32")
nocache=$(run_tps 500 "--no-cache")
echo "| mode | tokens/s |"
echo "|---|---|"
echo "| KV cache, 8-bit integers, within the context (63 tokens) | $cache_ctx |"
echo "| KV cache, 8-bit integers, 2000 tokens (the window slides) | $cache |"
echo "| KV cache, bfloat16 weights (\`--bf16\`), 2000 tokens | $cache16 |"
echo "| KV cache, float32 weights (\`--fp32\`), 2000 tokens | $cache32 |"
echo "| no cache (\`--no-cache\`, 500 tokens) | $nocache |"
echo
echo "\`./run MODEL -n N [--bf16 | --fp32] [--no-cache]\`, median of $reps_more runs; the"
echo "cache decodes with 8-bit integers unless \`--bf16\` or \`--fp32\`."
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
