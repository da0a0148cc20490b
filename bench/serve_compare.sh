#!/usr/bin/env bash
# serve_compare.sh - baseline vs layerkv on a real `layerkv serve`: for each
# policy, start the server with the same model and KV pools, run the same
# `layerkv bench` workload (same seed = same arrivals and prompts), stop it.
# Writes OUTDIR/{baseline,layerkv}.{json,csv,log} and prints one table row
# per policy (and per rate of a sweep). Regenerates docs/benchmarking.md.
#
#   bash bench/serve_compare.sh LAYERKV OUTDIR [--model M] [--device-kv-blocks N]
#        [--host-kv-blocks N] [--serve-arg ARG]... -- BENCH-ARGS...
#
# Example (docs/benchmarking.md):
#   bash bench/serve_compare.sh build-rel/layerkv /tmp/cmp --device-kv-blocks 160 -- \
#       --rate 2 --n-requests 40 --prompt-len 384 --output-len 32 --ttft-slo-ms 2000 --tpot-slo-ms 100
set -euo pipefail
lkv=${1:?usage: serve_compare.sh LAYERKV OUTDIR [serve options] -- BENCH-ARGS...}
out=${2:?usage: serve_compare.sh LAYERKV OUTDIR [serve options] -- BENCH-ARGS...}
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
model="$src/models/stories260K/stories260K.gguf"
dev=160
host=4096
serve_extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift 2 ;;
    --device-kv-blocks) dev=$2; shift 2 ;;
    --host-kv-blocks) host=$2; shift 2 ;;
    --serve-arg) serve_extra+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "serve_compare.sh: unknown option $1 (serve options, then -- and bench options)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
port=$(( 20000 + RANDOM % 20000 ))
srv=""
cleanup() { [ -z "$srv" ] || { kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; }; }
trap cleanup EXIT

for policy in baseline layerkv; do
    echo "serve_compare: $policy: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    ep="tcp://127.0.0.1:$port"
    "$lkv" serve --model "$model" --listen "$ep" --metrics-listen none --policy "$policy" \
        --device-kv-blocks "$dev" --host-kv-blocks "$host" "${serve_extra[@]}" \
        >"$out/serve-$policy.log" 2>&1 &
    srv=$!
    ok=""
    for _ in $(seq 120); do
        if "$lkv" stats --health --server "$ep" --timeout-s 0.5 2>/dev/null | grep -Eq '^status +ok$'; then
            ok=1; break
        fi
        kill -0 "$srv" 2>/dev/null || break
        sleep 0.25
    done
    [ -n "$ok" ] || { echo "serve_compare.sh: $policy server did not start; see $out/serve-$policy.log" >&2; exit 1; }
    "$lkv" bench --server "$ep" --out "$out/$policy.json" --csv "$out/$policy.csv" "$@" \
        2> >(tee "$out/bench-$policy.log" >&2) || { echo "serve_compare.sh: bench failed ($policy)" >&2; exit 1; }
    kill "$srv"; wait "$srv" 2>/dev/null || true; srv=""
    port=$((port + 1))
done

python3 - "$out" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
print("| policy | rate | n | mean TTFT s | mean queue s | mean prefill s | p99 TTFT s | mean TPOT ms | SLO viol. | req/s | out tok/s | preempt | offloaded MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for p in ("baseline", "layerkv"):
    d = json.load(open(os.path.join(out, p + ".json")))
    for r in d.get("runs", [d]):
        print("| %s | %g | %d | %.3f | %.3f | %.3f | %.3f | %.1f | %.1f%% | %.2f | %.1f | %d | %.1f |" % (
            p, r["rate"], r["n_completed"], r["mean_ttft_s"], r["mean_queue_s"], r["mean_prefill_s"],
            r["p99_ttft_s"], 1e3 * r["mean_tpot_s"], 100 * r["slo_violation_rate"], r["throughput_req_s"],
            r["throughput_tok_s"], r.get("preemptions", -1), r.get("offloaded_bytes", 0) / 1e6))
PYEOF
python3 "$src/bench/plot.py" --compare "$out/baseline.json" "$out/layerkv.json" --out "$out/compare.png" \
    2>/dev/null && echo "plot: $out/compare.png" >&2 || echo "plot skipped (python3 without matplotlib?)" >&2
