#!/bin/bash
# sim_small.sh - a small `layerkv sim` run of both policies (a few seconds):
# JSON has bench's schema, every request completes, the run is deterministic,
# layerkv offloads under memory pressure, bad options fail with exit 2.
# usage: bash sim_small.sh <layerkv-binary> <source-dir>
set -u
BIN="$1"; SRC="$2"
cd "$SRC" || exit 1
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "sim_small: FAIL: $*" >&2; exit 1; }

common=(--model llama2-7b --gpu a100 --prompt-len 16384 --output-len 128 --rate 0.25
        --n-requests 40 --seed 3 --ttft-slo-ms 10000 --tpot-slo-ms 200 --quiet)
"$BIN" sim "${common[@]}" --policy baseline --out "$T/b.json" --csv "$T/b.csv" || fail "baseline run"
"$BIN" sim "${common[@]}" --policy layerkv --out "$T/l.json" || fail "layerkv run"
"$BIN" sim "${common[@]}" --policy layerkv --out "$T/l2.json" || fail "layerkv rerun"
"$BIN" sim --model llama2-70b --tp 4 --trace sharegpt --max-total 8192 --rate 2 \
    --n-requests 60 --instances 2 --policy layerkv --quiet --out "$T/t.json" || fail "trace run"

python3 - "$T" <<'PY' || exit 1
import json, sys, csv
T = sys.argv[1]
keys = ['mean_ttft_s', 'p99_ttft_s', 'mean_queue_s', 'mean_tpot_s',
        'slo_violation_rate', 'throughput_tok_s', 'n_requests']
b, l, l2, t = (json.load(open('%s/%s.json' % (T, n))) for n in ('b', 'l', 'l2', 't'))
for d in (b, l, t):
    for k in keys:
        assert k in d and isinstance(d[k], (int, float)), 'missing key %s' % k
    assert d['n_requests'] == d['n_completed'], 'requests lost: %r' % d
    assert d['mean_ttft_s'] > 0 and d['throughput_tok_s'] > 0
    assert 0 <= d['slo_violation_rate'] <= 1
assert b['n_requests'] == 40 and t['n_requests'] == 60
assert b['offloaded_bytes'] == 0, 'baseline must not offload'
assert l['offload_moves'] > 0, 'layerkv never offloaded under memory pressure'
del l['sim_wall_s'], l2['sim_wall_s']
assert l == l2, 'same seed, different results'
rows = list(csv.DictReader(open('%s/b.csv' % T)))
assert len(rows) == 40 and all(r['status'] == 'ok' for r in rows)
assert all(int(r['n_generated']) == 128 for r in rows)
print('sim_small: baseline TTFT %.2f s, layerkv TTFT %.2f s (%d offloads)' % (
    b['mean_ttft_s'], l['mean_ttft_s'], l['offload_moves']))
PY

# bad input: clear error, exit 2, no crash
for bad in "--model nope" "--tp 3" "--rate -1" "--policy fifo" "--n-requests 0" "--bogus"; do
    # shellcheck disable=SC2086
    "$BIN" sim $bad --prompt-len 16 --output-len 2 --rate 1 --n-requests 2 --quiet \
        --out "$T/x.json" 2> "$T/err" >/dev/null
    rc=$?
    [ $rc -ne 0 ] || fail "'$bad' accepted"
    [ $rc -lt 128 ] || fail "'$bad' crashed (rc $rc)"
done
"$BIN" sim --trace /nonexistent.csv --rate 1 --quiet --out "$T/x.json" 2> "$T/err" && fail "missing trace accepted"
grep -q "cannot open" "$T/err" || fail "missing trace: no clear error"
"$BIN" sim --help | grep -q -- "--policy" || fail "--help"
echo "sim_small: ok"
