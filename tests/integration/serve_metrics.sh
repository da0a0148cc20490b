#!/usr/bin/env bash
# serve_metrics.sh LAYERKV SRCDIR - issue 4 "done when" item 4: /metrics of
# `layerkv serve` (layerkv policy, tight device pool, tight SLOs so they are
# violated) scraped every 50 ms under load (serve_load.py); every listed
# metric must be nonzero in some scrape, and every scrape must parse with
# Python prometheus_client's text parser; `promtool check metrics` too when
# promtool is installed (or LKV_PROMTOOL names one). A too-long prompt provokes a rejection.
set -euo pipefail
lkv=${1:?usage: serve_metrics.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_metrics
. "$src/tests/integration/serve_common.bash"
"$py" -c 'import prometheus_client.parser' 2>/dev/null || {
    echo "$tag: $py lacks prometheus_client (python3-prometheus-client); skipping" >&2; exit 77; }
model="$src/models/stories260K/stories260K.gguf"

port=$(free_port); mport=$(free_port)
ep="tcp://127.0.0.1:$port"
start_bg serve "$lkv" serve --model "$model" --listen "$ep" --metrics-listen "127.0.0.1:$mport" \
    --policy layerkv --device-kv-blocks 120 --host-kv-blocks 4096 --threads 1 \
    --ttft-slo-ms 1 --tpot-slo-ms 0.001
srv=$last_pid
wait_health "$ep" "$srv"

# one rejection: a prompt longer than the model context
"$py" - "$ep" <<'PYEOF' || fail "too-long prompt was not rejected"
import sys, msgpack, zmq
s = zmq.Context().socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0); s.connect(sys.argv[1])
s.send(msgpack.packb({"v": 1, "type": "submit", "id": "long", "tokens": [5] * 5000, "max_tokens": 4}))
assert s.poll(10000), "no reply"
m = msgpack.unpackb(s.recv(), raw=False)
assert m["type"] == "error" and m["name"] == "LKV_ERR_TOOLONG", m
print("serve_metrics: too-long prompt: %s: %s" % (m["name"], m["message"]), file=sys.stderr)
PYEOF

"$py" "$src/tests/integration/serve_load.py" --server "$ep" --n 16 --prompt-tokens 160 \
    --prompt-jitter 40 --max-tokens 24 --interval-ms 10 --seed 3 --timeout-s 240 \
    --metrics-url "http://127.0.0.1:$mport/metrics" --scrape-ms 50 \
    --out "$tmp/load.json" 2>"$tmp/load.log" || fail "load failed: $(cat "$tmp/load.log")"

curl -sf "http://127.0.0.1:$mport/metrics" >"$tmp/metrics.txt" 2>/dev/null || \
    "$py" -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$mport/metrics" >"$tmp/metrics.txt" || fail "final scrape failed"

"$py" - "$tmp/load.json" <<'PYEOF' || fail "metrics check failed"
import json, sys
d = json.load(open(sys.argv[1]))
m = d["metrics_max"]
assert d["scrapes"] >= 3, "only %d scrapes" % d["scrapes"]
def mx(prefix, **labels):
    want = ",".join("%s=%s" % kv for kv in sorted(labels.items()))
    vals = [v for k, v in m.items() if k.split("{")[0] == prefix and (not want or want in k)]
    return max(vals) if vals else None
checks = [
    ("layerkv_time_to_first_token_seconds_count", {}),
    ("layerkv_time_to_first_token_seconds_sum", {}),
    ("layerkv_time_per_output_token_seconds_count", {}),
    ("layerkv_request_queue_time_seconds_count", {}),
    ("layerkv_request_queue_time_seconds_sum", {}),
    ("layerkv_request_prefill_time_seconds_count", {}),
    ("layerkv_e2e_request_latency_seconds_count", {}),
    ("layerkv_num_requests_running", {}),
    ("layerkv_num_requests_waiting", {}),
    ("layerkv_kv_blocks_used", {"tier": "device"}),
    ("layerkv_kv_blocks_used", {"tier": "host"}),
    ("layerkv_kv_layer_blocks_used", {"tier": "device"}),
    ("layerkv_kv_layer_blocks_used", {"tier": "host"}),
    ("layerkv_kv_offload_bytes_total", {}),
    ("layerkv_kv_reload_bytes_total", {}),
    ("layerkv_slo_violations_total", {"kind": "ttft"}),
    ("layerkv_slo_violations_total", {"kind": "tpot"}),
    ("layerkv_requests_rejected_total", {}),
    ("layerkv_num_preemptions_total", {}),
    ("layerkv_prompt_tokens_total", {}),
    ("layerkv_generation_tokens_total", {}),
]
bad = []
for name, labels in checks:
    v = mx(name, **labels)
    print("serve_metrics: max %-48s %-16s %s" % (name, ",".join("%s=%s" % kv for kv in labels.items()), v),
          file=sys.stderr)
    if not v:
        bad.append(name + str(labels))
assert not bad, "zero or missing under load: %s" % bad
assert d["ok"], "some requests failed"
PYEOF

promtool=${LKV_PROMTOOL:-promtool}
if command -v "$promtool" >/dev/null 2>&1; then
    "$promtool" check metrics <"$tmp/metrics.txt" || fail "promtool check metrics rejected the exposition"
    echo "$tag: promtool check metrics: ok" >&2
else
    echo "$tag: promtool not installed (set LKV_PROMTOOL; 'apt-get download prometheus && dpkg-deb -x' gives one); prometheus_client parser only" >&2
fi
stop_bg "$srv"
[ "$stop_rc" = 0 ] || fail "serve exited $stop_rc on SIGTERM"
echo "$tag: ok"
