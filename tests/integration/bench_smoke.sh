#!/usr/bin/env bash
# bench_smoke.sh LAYERKV SRCDIR - `layerkv bench` against `layerkv serve` on
# the bundled stories260K model (tight device KV pool, layerkv policy), a few
# seconds in all: a Poisson run with CSV (+ plot when matplotlib exists), a
# two-rate sweep replaying lengths from the ShareGPT trace, and the error
# paths (no --server: exit 2; nobody listening: exit 1 with a hint).
# Validates the JSON: the simulator's required top-level keys (checked
# against a real `layerkv sim` run), counts, TTFT = queueing + prefill,
# ranges; and the CSV: the simulator's columns first, one row per request.
# Exit 77 when serve is not built.
set -euo pipefail
lkv=${1:?usage: bench_smoke.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=bench_smoke
. "$src/tests/integration/serve_common.bash"
"$lkv" bench --help >/dev/null 2>&1 || { echo "$tag: layerkv bench not built; skipping" >&2; exit 77; }
model="$src/models/stories260K/stories260K.gguf"
export LKV_SOURCE_DIR="$src"

# error paths first (no server needed)
set +e
"$lkv" bench --rate 1 >/dev/null 2>"$tmp/e1.log"; rc=$?
set -e
[ $rc = 2 ] || fail "bench without --server: exit $rc, want 2"
grep -q -- "--server" "$tmp/e1.log" || fail "missing --server: message does not name the option"
set +e
"$lkv" bench --server tcp://127.0.0.1:1 --rate 1 --n-requests 1 --timeout-s 1 --quiet >/dev/null 2>"$tmp/e2.log"; rc=$?
set -e
[ $rc = 1 ] || fail "bench against nothing: exit $rc, want 1"
grep -q "layerkv serve" "$tmp/e2.log" || fail "unreachable server: no hint: $(cat "$tmp/e2.log")"

port=$(free_port)
ep="tcp://127.0.0.1:$port"
start_bg serve "$lkv" serve --model "$model" --listen "$ep" --metrics-listen none \
    --policy layerkv --device-kv-blocks 96 --host-kv-blocks 4096 --threads 1
srv=$last_pid
wait_health "$ep" "$srv"

"$lkv" bench --server "$ep" --rate 8 --n-requests 12 --prompt-len 96 --output-len 8 --seed 3 \
    --ttft-slo-ms 5000 --tpot-slo-ms 500 --out "$tmp/run.json" --csv "$tmp/run.csv" \
    --plot "$tmp/run.png" --timeout-s 30 2>"$tmp/bench-run.log" \
    || fail "bench run failed: $(tail -5 "$tmp/bench-run.log")"
grep -q "sent 12/12" "$tmp/bench-run.log" || fail "no progress line on stderr"
"$lkv" bench --server "$ep" --rate-sweep 4,16 --n-requests 6 --trace sharegpt \
    --data-dir "$src/data/vidur" --max-total 160 --quiet --out "$tmp/sweep.json" \
    --csv "$tmp/sweep.csv" --timeout-s 30 2>"$tmp/bench-sweep.log" \
    || fail "bench sweep failed: $(tail -5 "$tmp/bench-sweep.log")"
[ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values())')" = 0 ] || fail "blocks still held after bench"
stop_bg "$srv"

"$lkv" sim --n-requests 10 --rate 1 --prompt-len 256 --output-len 8 --quiet --out "$tmp/sim.json" \
    --data-dir "$src/data/vidur" || fail "layerkv sim failed (needed for the key comparison)"

"$py" - "$tmp" <<'PYEOF' || fail "validation failed"
import csv, json, os, sys
tmp = sys.argv[1]
required = ["mean_ttft_s", "p99_ttft_s", "mean_queue_s", "mean_tpot_s", "slo_violation_rate",
            "throughput_tok_s", "n_requests"]
sim = json.load(open(os.path.join(tmp, "sim.json")))
for k in required:
    assert k in sim, "sim JSON lacks %s" % k

def check_run(r, n, rate):
    for k in required:
        assert k in r, "bench JSON lacks %s" % k
    for k in sim:  # every metric the protocol lets us measure is named as sim names it
        if k in ("n_completed", "n_failed", "n_rejected", "p50_ttft_s", "p90_ttft_s", "p99_queue_s",
                 "mean_prefill_s", "p50_tpot_s", "p99_tpot_s", "mean_e2e_s", "ttft_attainment",
                 "tpot_attainment", "throughput_req_s", "makespan_s", "output_tokens", "preemptions",
                 "offloaded_bytes", "reloaded_bytes", "policy", "rate", "seed", "source"):
            assert k in r, "bench JSON lacks sim key %s" % k
            assert type(r[k]) in (type(sim[k]), int, float) or k == "policy", k
    assert r["source"] == "bench" and r["policy"] == "layerkv", (r["source"], r["policy"])
    assert r["n_requests"] == n, (r["n_requests"], n)
    assert r["n_completed"] == n and r["n_failed"] == 0 and r["n_rejected"] == 0, r
    assert abs(r["rate"] - rate) < 1e-9
    assert 0 < r["mean_queue_s"] <= r["mean_ttft_s"] or r["mean_queue_s"] == 0
    assert abs(r["mean_ttft_s"] - (r["mean_queue_s"] + r["mean_prefill_s"])) < 1e-6
    assert r["p99_ttft_s"] >= r["p50_ttft_s"] > 0
    assert r["mean_client_ttft_s"] >= r["mean_ttft_s"] * 0.5
    assert 0 <= r["slo_violation_rate"] <= 1 and 0 <= r["ttft_attainment"] <= 1
    assert r["throughput_tok_s"] > 0 and r["throughput_req_s"] > 0 and r["output_tokens"] > 0
    assert r["mean_tpot_s"] > 0

run = json.load(open(os.path.join(tmp, "run.json")))
check_run(run, 12, 8)
assert run["prompt_len"] == 96 and run["prompt_tokens"] == 12 * 96, run["prompt_tokens"]
assert run["offloaded_bytes"] >= 0 and run["device_blocks"] == 96, run["device_blocks"]
sweep = json.load(open(os.path.join(tmp, "sweep.json")))
assert sweep["rate_sweep"] == [4, 16] and len(sweep["runs"]) == 2
for r, rate in zip(sweep["runs"], (4, 16)):
    check_run(r, 6, rate)
    assert r["trace"] == "sharegpt"

sim_cols = ["id", "arrival_s", "prompt_len", "output_len", "instance", "status", "ttft_s", "queue_s",
            "tpot_s", "e2e_s", "n_generated", "preemptions", "offloaded_layers", "slo_violated"]
rows = list(csv.DictReader(open(os.path.join(tmp, "run.csv"))))
assert len(rows) == 12, len(rows)
assert list(rows[0].keys())[:len(sim_cols)] == sim_cols, list(rows[0].keys())
assert all(r["status"] == "ok" and int(r["prompt_len"]) == 96 for r in rows)
assert [float(r["arrival_s"]) for r in rows] == sorted(float(r["arrival_s"]) for r in rows)
assert sum(int(r["n_generated"]) for r in rows) == run["output_tokens"]
srows = list(csv.DictReader(open(os.path.join(tmp, "sweep.csv"))))
assert len(srows) == 12 and {r["rate"] for r in srows} == {"4", "16"}, [r["rate"] for r in srows]
assert all(int(r["prompt_len"]) + int(r["output_len"]) <= 160 for r in srows)
print("bench_smoke: run mean TTFT %.3f s (queue %.3f + prefill %.3f), TPOT %.1f ms, %.1f tok/s" % (
    run["mean_ttft_s"], run["mean_queue_s"], run["mean_prefill_s"], run["mean_tpot_s"] * 1e3,
    run["throughput_tok_s"]), file=sys.stderr)
PYEOF
if grep -q "plots written" "$tmp/bench-run.log"; then
    [ -s "$tmp/run.png" ] || fail "bench said plots were written but $tmp/run.png is empty"
else
    grep -q "plot skipped" "$tmp/bench-run.log" || fail "--plot neither wrote a plot nor said why: $(tail -3 "$tmp/bench-run.log")"
fi
echo "$tag: ok"
