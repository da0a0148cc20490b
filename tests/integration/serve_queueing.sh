#!/usr/bin/env bash
# serve_queueing.sh LAYERKV SRCDIR - issue 4 "done when" item 3: one arrival
# sequence of long prompts (serve_load.py: N requests of P random token ids,
# one every I ms, greedy, max_tokens M) against `layerkv serve` with a tight
# device KV pool, once per policy. Checks: every request finishes (none
# lost), each gets exactly M tokens or stops, both policies produce the same
# tokens for every request (greedy decoding: no corruption from offload /
# reload / preemption), and the layerkv policy's mean queueing time (arrival
# -> first prefill step) is lower than the baseline's. Prints both means.
# Queueing times are wall-clock on a shared machine: when only the timing
# comparison fails, the pair is run once more (the integrity checks are
# never retried).
# Overrides: LKV_QUEUE_N, LKV_QUEUE_PROMPT, LKV_QUEUE_MAX_TOKENS,
# LKV_QUEUE_INTERVAL_MS, LKV_QUEUE_DEVICE_BLOCKS, LKV_QUEUE_SERVE_ARGS.
set -euo pipefail
lkv=${1:?usage: serve_queueing.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_queueing
. "$src/tests/integration/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"
n_default=16
# sanitizer builds are several times slower: a shorter sequence
if [ "$(ldd "$lkv" 2>/dev/null | grep -c libasan || true)" != 0 ]; then n_default=10; fi
n=${LKV_QUEUE_N:-$n_default}
plen=${LKV_QUEUE_PROMPT:-300}
max_tokens=${LKV_QUEUE_MAX_TOKENS:-64}
interval=${LKV_QUEUE_INTERVAL_MS:-1}
dev=${LKV_QUEUE_DEVICE_BLOCKS:-200}

run_policy() {
    local policy=$1 attempt=$2 port ep srv
    port=$(free_port)
    ep="tcp://127.0.0.1:$port"
    start_bg "serve-$policy-$attempt" "$lkv" serve --model "$model" --listen "$ep" --metrics-listen none \
        --policy $policy --device-kv-blocks $dev --host-kv-blocks 4096 --threads 1 \
        ${LKV_QUEUE_SERVE_ARGS:-}
    srv=$last_pid
    wait_health "$ep" "$srv"
    "$py" "$src/tests/integration/serve_load.py" --server "$ep" --n $n --prompt-tokens $plen \
        --max-tokens $max_tokens --interval-ms $interval --seed 7 --timeout-s 240 \
        --out "$tmp/$policy.json" 2>"$tmp/load-$policy.log" || fail "$policy: load failed: $(cat "$tmp/load-$policy.log")"
    [ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values())')" = 0 ] || fail "$policy: blocks still held"
    echo "$tag: $policy: $(stats_field "$ep" '"preempted %d, swapped out %d, offloaded %d B, reloaded %d B" % (s["n_preempted"], s["n_swap_preempted"], s["bytes_offloaded"], s["bytes_reloaded"])')" >&2
    stop_bg "$srv"
    [ "$stop_rc" = 0 ] || fail "$policy: serve exited $stop_rc on SIGTERM"
}

for attempt in 1 2; do
    run_policy baseline $attempt
    run_policy layerkv $attempt
    set +e
    "$py" - "$tmp/baseline.json" "$tmp/layerkv.json" "$max_tokens" "$plen" "$interval" <<'PYEOF'
import json, sys
b, l = (json.load(open(p)) for p in sys.argv[1:3])
max_tokens = int(sys.argv[3])
try:
    for name, d in (("baseline", b), ("layerkv", l)):
        assert d["ok"] and d["finished"] == d["n"], "%s lost requests: %d of %d" % (name, d["finished"], d["n"])
        for i, r in enumerate(d["requests"]):
            assert r["finish_reason"] in ("length", "stop"), "%s request %d: %r" % (name, i, r)
            assert r["finish_reason"] == "stop" or r["n_tokens"] == max_tokens, "%s request %d: %d tokens" % (name, i, r["n_tokens"])
            assert len(r["tokens"]) == r["n_tokens"], "%s request %d: token count mismatch" % (name, i)
    for i, (rb, rl) in enumerate(zip(b["requests"], l["requests"])):
        assert rb["tokens"] == rl["tokens"], "request %d differs between policies:\n%r\n%r" % (i, rb["tokens"], rl["tokens"])
except AssertionError as e:
    print("serve_queueing: %s" % e, file=sys.stderr)
    sys.exit(2)
print("serve_queueing: %d requests of %s prompt tokens, one every %s ms, %d output tokens: "
      "mean queue baseline %.1f ms, layerkv %.1f ms (mean TTFT %.1f / %.1f ms; wall %.2f / %.2f s)"
      % (b["n"], sys.argv[4], sys.argv[5], max_tokens, b["mean_queue_ms"], l["mean_queue_ms"],
         b["mean_ttft_ms"], l["mean_ttft_ms"], b["wall_s"], l["wall_s"]), file=sys.stderr)
if not l["mean_queue_ms"] < b["mean_queue_ms"]:
    print("serve_queueing: layerkv mean queueing time %.1f ms is not below baseline's %.1f ms"
          % (l["mean_queue_ms"], b["mean_queue_ms"]), file=sys.stderr)
    sys.exit(3)
PYEOF
    rc=$?
    set -e
    [ $rc = 0 ] && { echo "$tag: ok"; exit 0; }
    [ $rc = 3 ] || fail "lost or corrupted requests (see above)"
    echo "$tag: attempt $attempt: timing comparison failed; retrying once" >&2
done
fail "layerkv did not queue less than baseline in two attempts"
