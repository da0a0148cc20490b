#!/usr/bin/env bash
# long_running.sh LAYERKV SRCDIR - the long-running paths under valgrind
# memcheck: `layerkv run` with layer offload, `layerkv serve` with offload,
# preemption and clients that vanish mid-stream, and `layerkv coordinator` +
# `layerkv worker --kvnode` + `layerkv kvnode` (remote KV tier over UCX
# TCP). Every process must end with no memcheck error and no definitely or
# indirectly lost block, and every client must get exactly what `layerkv
# run` prints.
# Needs a binary valgrind can execute: build with -DLKV_NATIVE=OFF (AVX-512
# from -march=native stops valgrind with SIGILL; the test then skips with a
# message). tools/test.sh builds build-vg for it.
set -euo pipefail
lkv=${1:?usage: long_running.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=valgrind
. "$src/tests/integration/serve_common.bash"
command -v valgrind >/dev/null || { echo "$tag: valgrind not installed; skipping" >&2; exit 77; }
model="$src/models/stories260K/stories260K.gguf"
export UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none UCX_TLS=tcp

# vg NAME CMD... : exec CMD under memcheck (report in $tmp/vg-NAME.txt);
# call it in a subshell or through start_bg
vg() {
    local name=$1; shift
    exec valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 \
        --log-file="$tmp/vg-$name.txt" "$@"
}
# check_vg NAME RC : the process NAME exited with RC; its valgrind report
# must be clean
check_vg() {
    local name=$1 rc=$2 f
    f=$tmp/vg-$name.txt
    if [ "$rc" != 0 ] || ! grep -q 'ERROR SUMMARY: 0 errors' "$f"; then
        echo "$tag: $name: exit $rc; valgrind report:" >&2
        grep -E '^==[0-9]+== ' "$f" | head -60 >&2
        fail "$name is not clean under valgrind"
    fi
    echo "$tag: $name: $(grep -E 'ERROR SUMMARY' "$f" | sed 's/^==[0-9]*== //'); $(grep -E 'definitely lost|All heap blocks' "$f" | sed 's/^==[0-9]*== //' | head -1)" >&2
}

# can valgrind run this binary at all?
set +e
valgrind -q "$lkv" run --model "$model" --prompt Tom --max-tokens 2 --threads 1 \
    >/dev/null 2>"$tmp/probe.err"; rc=$?
set -e
if [ $rc -ge 128 ]; then
    echo "$tag: valgrind cannot execute $lkv (signal $((rc - 128)); built with -march=native?); build with -DLKV_NATIVE=OFF; skipping" >&2
    exit 77
fi

max_tokens=24
prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park"
         "One day, a big bird")
make_refs

# 1. run: 4 prompts in one batch, interleaved layers streamed from the host
set +e
(vg run "$lkv" run --model "$model" --max-tokens $max_tokens --temperature 0 \
    --threads 1 --offload-layers interleave --decode-offloaded stream \
    --device-kv-blocks 40 --prompt "${prompts[0]}" --prompt "${prompts[1]}" \
    --prompt "${prompts[2]}" --prompt "${prompts[3]}") >"$tmp/run.out" 2>"$tmp/run.err"
rc=$?
set -e
check_vg run $rc
# a batched run prints "[i] " before each text (its leading space dropped),
# in the order the requests finish
for i in 0 1 2 3; do printf '[%d] ' $i; sed '1s/^ //' "$tmp/ref$i.out"; done | sort >"$tmp/run.want"
sort "$tmp/run.out" | cmp -s - "$tmp/run.want" || fail "run: got '$(cat "$tmp/run.out")', want '$(cat "$tmp/run.want")'"

# 2. serve: a small device pool (offload and preemption), 12 clients that
# finish and 4 that vanish mid-stream, then SIGTERM
n_clients=12
ep="tcp://127.0.0.1:$(free_port)"
start_bg serve vg serve "$lkv" serve --model "$model" --listen "$ep" \
    --metrics-listen none --threads 1 --device-kv-blocks 40 --host-kv-blocks 400
srv=$last_pid
wait_health "$ep" "$srv"
vpids=()
for c in 0 1 2 3; do
    "$lkv" generate --server "$ep" --prompt "Tell me a long story $c" --max-tokens 100 \
        --temperature 0 --timeout-s 60 >/dev/null 2>&1 &
    vpids+=($!)
done
client_timeout_s=300 run_clients "$ep" "serve under valgrind"
for p in "${vpids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
sleep 1
[ "$(stats_field "$ep" 's["n_live"]')" = 0 ] || sleep 3
stop_bg "$srv"
check_vg serve "$stop_rc"

# 3. coordinator + worker --kvnode + kvnode, all under valgrind
start_kvnode 0.02 vg kvnode
kvn=$kvnode_pid
ep="tcp://127.0.0.1:$(free_port)"
wep="tcp://127.0.0.1:$(free_port)"
start_bg coord vg coordinator "$lkv" coordinator --model "$model" --listen "$ep" \
    --workers-listen "$wep" --metrics-listen none --device-kv-blocks 40 --host-kv-blocks 0
coord=$last_pid
start_bg worker vg worker "$lkv" worker --coordinator "$wep" --threads 1 --kvnode "$kvnode_ep"
worker=$last_pid
wait_health "$ep" "$coord"
wait_instances "$ep" 1
n_clients=8
client_timeout_s=300 run_clients "$ep" "coordinator + worker --kvnode under valgrind"
[ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "nothing went to the kvnode"
stop_bg "$coord"
check_vg coordinator "$stop_rc"
for _ in $(seq 300); do kill -0 "$worker" 2>/dev/null || break; sleep 0.1; done
set +e; wait "$worker"; wrc=$?; set -e
check_vg worker "$wrc"
stop_bg "$kvn"
check_vg kvnode "$stop_rc"
echo "$tag: ok"
