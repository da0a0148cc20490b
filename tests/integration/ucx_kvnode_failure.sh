#!/usr/bin/env bash
# ucx_kvnode_failure.sh - issue 8, Done-when 3: the kvnode is killed (SIGKILL)
# while `layerkv run` streams offloaded layers from it. Every request either
# completes with exactly the all-device tokens or fails with a clear error
# whose partial output is a prefix of the all-device output (never a wrong
# token); the run ends within a bounded time (LKV_UCX_TIMEOUT_MS); requests
# admitted after the failure still complete (their offloads fail, the layers
# stay on the device). Also: a kvnode that dies before a run starts is a
# clear error.
# usage: ucx_kvnode_failure.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
. "$src/tests/integration/endpoint_log.bash"
m=$src/models/stories260K
tmp=$(mktemp -d)
kp=""
cleanup() {
    [ -n "$kp" ] && kill -9 "$kp" 2>/dev/null && wait "$kp" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
export UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none
export LKV_UCX_TIMEOUT_MS=2000

# 8 prompts; after the kill their KV is recomputed on the device, where
# 400 blocks hold only part of 8 x 13 x 5 = 520: preemption by recompute
args=(--model "$m/stories260K.gguf" --max-tokens 200 --temperature 0
    --threads 1)
for i in $(seq 1 8); do args+=(--prompt "Story $i: Once upon a time"); done
timeout 120 "$bin" run "${args[@]}" >"$tmp/ref.out" 2>"$tmp/ref.err" || {
    echo "FAIL reference run"; cat "$tmp/ref.err"; exit 1; }

# per-prompt comparison: "[i] text" blocks (texts may span lines)
cat >"$tmp/check.py" <<'EOF'
import re, sys
def parse(path):
    out, cur = {}, None
    for line in open(path, encoding="utf-8", errors="replace").read().split("\n"):
        mm = re.match(r"^\[(\d+)\] (.*)$", line)
        if mm and int(mm.group(1)) not in out:
            cur = int(mm.group(1)); out[cur] = mm.group(2)
        elif cur is not None:
            out[cur] += "\n" + line
    return {k: v.rstrip("\n") for k, v in out.items()}
ref, got = parse(sys.argv[1]), parse(sys.argv[2])
err = open(sys.argv[3]).read()
failed = {int(x) for x in re.findall(r"prompt (\d+) failed", err)}
bad = 0
for i, want in ref.items():
    g = got.get(i)
    if g is None:
        print(f"FAIL prompt {i}: no output"); bad = 1
    elif i in failed:
        if not want.startswith(g):
            print(f"FAIL prompt {i}: failed request printed wrong tokens"); bad = 1
    elif g != want:
        print(f"FAIL prompt {i}: completed with wrong tokens"); bad = 1
n_ok = len(ref) - len(failed)
print(f"prompts: {len(ref)}, completed exactly: {n_ok}, failed with an error: {len(failed)}")
if not failed and "is down" not in err:
    if sys.argv[4] == "tcp":
        print("FAIL the kvnode was killed but no request noticed (run too short?)"); bad = 1
    else:
        # shared memory: the region stays mapped in this process after the
        # kvnode dies, so transfers keep working and tokens stay exact
        print("note: the kill went unnoticed over shared memory (region still mapped)")
if n_ok == 0:
    print("FAIL no request completed after the kvnode failure"); bad = 1
if failed and not re.search(r"prompt \d+ failed: (peer|.*lost|.*timed)", err, re.I):
    print("FAIL failure status is not a peer-lost/timeout error"); bad = 1
sys.exit(bad)
EOF

# when: "start" kills the kvnode as soon as it has handed its region to the
# run (the start-up link probe or the first offloads fail; every later
# offload must stay on the device instead of being retried forever), "mid"
# once the run is using it. A "start" kill can also land before the run's
# UCX endpoint exists: then the run ends at once with the dead-at-start
# error (checked below); that attempt is repeated so that the window after
# start-up is tested.
for tls in ${LKV_TEST_UCX_TLS:-tcp sm,self}; do
  for when in start mid; do
   for attempt in 1 2 3 4 5; do
    export UCX_TLS=$tls
    echo "== UCX_TLS=$tls, kill: $when (attempt $attempt)"
    LKV_LOG_LEVEL=info "$bin" kvnode --listen 'tcp://127.0.0.1:*' \
        --capacity-gib 0.05 2>"$tmp/kvnode.err" &
    kp=$!
    ep=$(log_endpoint "$tmp/kvnode.err" "$kp" 's/.* on \(tcp:[^ ]*\) (pid.*/\1/p')
    [ -n "$ep" ] || { echo "FAIL kvnode did not start"; cat "$tmp/kvnode.err"; exit 1; }

    t0=$(date +%s.%N)
    timeout 120 "$bin" run "${args[@]}" --host-kv-blocks 0 --kvnode "$ep" \
        --offload-layers interleave --decode-offloaded stream \
        --device-kv-blocks 400 >"$tmp/got.out" 2>"$tmp/got.err" &
    rp=$!
    if [ "$when" = start ]; then
        pat='handed the region'; log=$tmp/kvnode.err; pause=0
    else
        # start-up under load can take longer than the whole generation
        # on an idle machine
        pat='remote kv tier'; log=$tmp/got.err; pause=0.05
    fi
    for _ in $(seq 1 1200); do
        grep -q "$pat" "$log" 2>/dev/null && break
        kill -0 "$rp" 2>/dev/null || break
        sleep 0.01
    done
    sleep $pause
    { kill -9 "$kp"; wait "$kp"; } 2>/dev/null
    kp=""
    wait "$rp"
    rc=$?
    t1=$(date +%s.%N)
    el=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
    echo "run after kill: rc=$rc, ${el}s"
    if [ $rc -eq 124 ] || awk "BEGIN { exit !($el > 60) }"; then
        echo "FAIL the run did not end within the bound"
        tail -5 "$tmp/got.err" | sed 's/^/  /'
        fail=1
    fi
    if [ "$when" = start ] && [ $rc -eq 1 ] && [ ! -s "$tmp/got.out" ] &&
        grep -q 'cannot reach the kvnode' "$tmp/got.err"; then
        echo "note: killed before the run reached the kvnode: $(grep -m1 'cannot reach' "$tmp/got.err")"
        continue
    fi

    python3 "$tmp/check.py" "$tmp/ref.out" "$tmp/got.out" "$tmp/got.err" \
        "$UCX_TLS" || fail=1
    grep -m1 'is down' "$tmp/got.err" | sed 's/^/  /'
    grep -m2 'failed:' "$tmp/got.err" | sed 's/^/  /'
    break
   done
  done
done

# a dead kvnode before start: clear error within the bound
out=$(timeout 30 "$bin" run --model "$m/stories260K.gguf" --prompt "Tom" \
    --max-tokens 4 --host-kv-blocks 0 --kvnode "$ep" 2>&1)
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! printf '%s' "$out" | grep -q 'kvnode'; then
    echo "FAIL dead kvnode at start: rc=$rc"
    printf '%s\n' "$out" | sed 's/^/  /'
    fail=1
else
    echo "ok   dead-kvnode-at-start-is-an-error"
fi
[ $fail -eq 0 ] && echo "ok   kvnode-killed-mid-run"
exit $fail
