#!/bin/bash
# run_experiments.sh - regenerate every simulator experiment of
# docs/results.md: JSON per run in docs/results/data/, then PNG plots and the
# tables inside docs/results.md (tools/plot_results.py).
#
# usage: tools/run_experiments.sh [LAYERKV_BINARY] [a|aw|b|c|d|scale|plots|all]...
#   (aw: only the staging-window sweep that `a` also runs)
#   LAYERKV_BINARY defaults to build/layerkv (any build dir works).
# Each run is one `layerkv sim ...` command; the exact command is stored in
# the JSON's sibling .cmd file so every number can be reproduced alone.
# Runtime: about 5-10 minutes on 2 cores (scale: add ~the time it reports).
set -euo pipefail
ROOT="${LKV_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
BIN="${1:-$ROOT/build/layerkv}"
shift || true
WHAT=("$@")
[ ${#WHAT[@]} -eq 0 ] && WHAT=(all)
OUT="$ROOT/docs/results/data"
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "run_experiments: no layerkv binary at $BIN (build it, or pass its path)" >&2; exit 2; }
cd "$ROOT"

want() { for w in "${WHAT[@]}"; do [ "$w" = all ] || [ "$w" = "$1" ] && return 0; done; return 1; }

# run NAME ARGS... : one simulation, JSON to $OUT/NAME.json
run() {
    local name="$1"; shift
    echo "layerkv sim $*" > "$OUT/$name.cmd"
    "$BIN" sim "$@" --quiet --out "$OUT/$name.json" 2> "$OUT/$name.log" || {
        echo "run_experiments: $name failed (see $OUT/$name.log)" >&2; return 1; }
    [ -s "$OUT/$name.log" ] || rm -f "$OUT/$name.log"
    printf '%-40s %s\n' "$name" "$(python3 - "$OUT/$name.json" <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
print('ttft %.2fs queue %.2fs tpot %.1fms viol %.3f thr %.0f tok/s'%(d['mean_ttft_s'],d['mean_queue_s'],d['mean_tpot_s']*1e3,d['slo_violation_rate'],d['throughput_tok_s']))
PY
)"
}

SLO=(--ttft-slo-ms 10000 --tpot-slo-ms 200)

# (a) mean TTFT vs context length at a fixed rate
if want a; then
    for L in 1024 2048 4096 8192 16384 32768; do
        for pol in baseline layerkv; do
            run "a_7b_${pol}_${L}" --model llama2-7b --gpu a100 --tp 1 --policy $pol \
                --prompt-len $L --output-len 512 --rate 0.06 --n-requests 200 --seed 1 "${SLO[@]}"
            run "a_70b_${pol}_${L}" --model llama2-70b --gpu a100 --tp 4 --policy $pol \
                --prompt-len $L --output-len 512 --rate 0.04 --n-requests 150 --seed 1 "${SLO[@]}"
        done
        # upper bound for ANY KV-memory technique: baseline with 10x the KV
        # memory (queueing left is compute queueing)
        run "a_7b_infmem_${L}" --model llama2-7b --gpu a100 --tp 1 --policy baseline \
            --prompt-len $L --output-len 512 --rate 0.06 --n-requests 200 --seed 1 \
            --num-blocks 74000 "${SLO[@]}"
        run "a_70b_infmem_${L}" --model llama2-70b --gpu a100 --tp 4 --policy baseline \
            --prompt-len $L --output-len 512 --rate 0.04 --n-requests 150 --seed 1 \
            --num-blocks 320000 "${SLO[@]}"
        # the same at a higher rate, where the baseline queue is KV-memory bound
        for pol in baseline layerkv; do
            run "a_7bhi_${pol}_${L}" --model llama2-7b --gpu a100 --tp 1 --policy $pol \
                --prompt-len $L --output-len 512 --rate 0.08 --n-requests 200 --seed 1 "${SLO[@]}"
        done
        run "a_7bhi_infmem_${L}" --model llama2-7b --gpu a100 --tp 1 --policy baseline \
            --prompt-len $L --output-len 512 --rate 0.08 --n-requests 200 --seed 1 \
            --num-blocks 74000 "${SLO[@]}"
        # the same with chunked prefill (what lets layerkv admit with only a
        # chunk on the device, see the note in docs/results.md)
        for pol in baseline layerkv; do
            run "a_7b_chunk_${pol}_${L}" --model llama2-7b --gpu a100 --tp 1 --policy $pol \
                --prompt-len $L --output-len 512 --rate 0.06 --n-requests 200 --seed 1 \
                --chunked-prefill 4096 --offload-rule max "${SLO[@]}"
        done
    done
fi

# (a') 32K prompts on 7B: the prefill staging window W (0 = offloaded layers
# computed on the device, then offloaded)
if want a || want aw; then
    for r in 0.06 0.08; do
        for w in 0 1 2 4 8; do
            run "aw_7b_${r}_w${w}" --model llama2-7b --gpu a100 --tp 1 --policy layerkv \
                --prompt-len 32768 --output-len 512 --rate $r --n-requests 200 --seed 1 \
                --staging-window $w "${SLO[@]}"
        done
    done
fi

# (b) SLO violation rate vs request rate, ShareGPT and arXiv, Llama-2-7B/A100
BSLO=(--ttft-slo-ms 5000 --tpot-slo-ms 100)
if want b; then
    for r in 0.5 1 1.25 1.5 1.75 2 2.5 3 4; do
        for pol in baseline layerkv; do
            run "b_sharegpt_${pol}_${r}" --model llama2-7b --gpu a100 --policy $pol \
                --trace sharegpt --max-total 8192 --rate $r --n-requests 600 --seed 2 "${BSLO[@]}"
        done
    done
    for r in 0.5 1 1.5 2 2.25 2.5 3 4; do
        for pol in baseline layerkv; do
            run "b_arxiv_${pol}_${r}" --model llama2-7b --gpu a100 --policy $pol \
                --trace arxiv --max-total 4096 --rate $r --n-requests 600 --seed 3 "${BSLO[@]}"
        done
    done
fi

# (b') bound for any KV-memory technique near the knee: 10x the KV memory
if want b; then
    for r in 1.25 1.5 1.75 2; do
        run "b_sharegpt_infmem_${r}" --model llama2-7b --gpu a100 --policy baseline \
            --trace sharegpt --max-total 8192 --rate $r --n-requests 600 --seed 2 \
            --num-blocks 74000 "${BSLO[@]}"
    done
    for r in 2 2.25 2.5 3; do
        run "b_arxiv_infmem_${r}" --model llama2-7b --gpu a100 --policy baseline \
            --trace arxiv --max-total 4096 --rate $r --n-requests 600 --seed 3 \
            --num-blocks 74000 "${BSLO[@]}"
    done
fi

# (c) throughput and TPOT cost at saturation (offered load above capacity)
if want c; then
    for pol in baseline layerkv; do
        run "c_sharegpt_sat_${pol}" --model llama2-7b --gpu a100 --policy $pol \
            --trace sharegpt --max-total 8192 --rate 6 --n-requests 1000 --seed 4 "${BSLO[@]}"
        run "c_arxiv_sat_${pol}" --model llama2-7b --gpu a100 --policy $pol \
            --trace arxiv --max-total 4096 --rate 6 --n-requests 1000 --seed 4 "${BSLO[@]}"
        run "c_70b_sharegpt_sat_${pol}" --model llama2-70b --gpu a100 --tp 4 --policy $pol \
            --trace sharegpt --max-total 8192 --rate 6 --n-requests 1000 --seed 4 "${BSLO[@]}"
    done
fi

# (d) ablations, where offload is active (32K prompts with the SLOs of (a);
# ShareGPT at its knee with the SLOs of (b))
if want d; then
    for setting in "d_7b_32k:--prompt-len 32768 --output-len 512 --rate 0.08 --n-requests 200 --seed 1 --ttft-slo-ms 10000 --tpot-slo-ms 200" \
                   "d_sharegpt:--trace sharegpt --max-total 8192 --rate 1.5 --n-requests 600 --seed 2 --ttft-slo-ms 5000 --tpot-slo-ms 100"; do
        name="${setting%%:*}"; args="${setting#*:}"
        # shellcheck disable=SC2086
        run "${name}_baseline" --model llama2-7b --policy baseline $args
        # shellcheck disable=SC2086
        run "${name}_layerkv" --model llama2-7b --policy layerkv $args
        # shellcheck disable=SC2086
        run "${name}_noslo" --model llama2-7b --policy layerkv --no-slo-scheduler $args
        # shellcheck disable=SC2086
        run "${name}_sync" --model llama2-7b --policy layerkv --sync-offload $args
        # shellcheck disable=SC2086
        run "${name}_offmax" --model llama2-7b --policy layerkv --offload-rule max $args
        if "$BIN" sim --contiguous-layers --prompt-len 16 --output-len 2 --rate 1 --n-requests 1 \
               --quiet --out /dev/null 2>/dev/null; then
            # shellcheck disable=SC2086
            run "${name}_contig" --model llama2-7b --policy layerkv --contiguous-layers $args
        fi
    done
fi

# scale: 1,000,000 requests over 64 instances
if want scale; then
    /usr/bin/time -v "$BIN" sim --model llama2-7b --policy layerkv --instances 64 \
        --prompt-len 512 --output-len 32 --rate 640 --n-requests 1000000 --seed 5 \
        --quiet --out "$OUT/scale_1m.json" 2> "$OUT/scale_1m.log" || true
    echo "layerkv sim --model llama2-7b --policy layerkv --instances 64 --prompt-len 512 --output-len 32 --rate 640 --n-requests 1000000 --seed 5" > "$OUT/scale_1m.cmd"
    grep -E "Elapsed|Maximum resident" "$OUT/scale_1m.log" || true
fi

if want plots || want all; then
    PY=/usr/bin/python3
    "$PY" -c "import matplotlib" 2>/dev/null || PY=python3
    "$PY" "$ROOT/tools/plot_results.py" "$ROOT/docs/results"
fi
