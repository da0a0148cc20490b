#!/usr/bin/env bash
# serve_kvnode.sh LAYERKV SRCDIR - issue 8 on the serving path: `layerkv
# serve --host-kv-blocks 0 --kvnode EP` with a `layerkv kvnode` in another
# process; concurrent `layerkv generate --temperature 0` clients each print
# exactly what `layerkv run` (all KV on the device) prints, over UCX TCP and
# UCX shared memory, and layers did go to the remote tier (stats). Then the
# same with `layerkv coordinator` + `layerkv worker --kvnode` as separate
# processes (UCX TCP).
# Offloaded layers come back the default way (auto: reload or stream);
# the coordinator + worker part runs once per --decode-offloaded mode.
# Remote reloads finish steps later, which once let a reload take the
# blocks a decode waited for while the swap preemption offloaded another
# request, every step, forever (two requests ping-ponging; the clients
# time out): this test catches that.
# LKV_KVNODE_CLIENTS overrides the number of concurrent clients (24).
set -euo pipefail
lkv=${1:?usage: serve_kvnode.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_kvnode
. "$src/tests/integration/serve_common.bash"
"$lkv" kvnode --help >/dev/null 2>&1 || { echo "$tag: layerkv kvnode not built; skipping" >&2; exit 77; }
model="$src/models/stories260K/stories260K.gguf"
n_clients=${LKV_KVNODE_CLIENTS:-24}
max_tokens=40
dev_blocks=60
export UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none

prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park"
         "One day, a big bird" "Tom had a red ball. He" "The sun was hot and")
make_refs
client_timeout_s=60

# check_remote ENDPOINT LABEL : the remote tier was sized and used, and is
# empty at the end
check_remote() {
    local ep=$1 label=$2 summary
    summary=$(stats_field "$ep" '"remote blocks %d, offloaded %d, reloaded %d, staged %d, used %s" % (s["kv_blocks_total"]["remote"], s["bytes_offloaded"], s["bytes_reloaded"], s["bytes_staged"], s["kv_blocks_used"])')
    echo "$tag: $label: $summary" >&2
    [ "$(stats_field "$ep" 's["kv_blocks_total"]["remote"] > 0')" = True ] || fail "$label: no remote tier ($summary)"
    [ "$(stats_field "$ep" 's["kv_blocks_total"]["host"]')" = 0 ] || fail "$label: host tier not empty ($summary)"
    [ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "$label: nothing was offloaded ($summary)"
    [ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values())')" = 0 ] || fail "$label: blocks still held ($summary)"
}

for tls in tcp sm,self; do
    export UCX_TLS=$tls
    start_kvnode 0.02
    port=$(free_port)
    ep="tcp://127.0.0.1:$port"
    start_bg "serve-$tls" "$lkv" serve --model "$model" --listen "$ep" \
        --metrics-listen none --device-kv-blocks $dev_blocks --host-kv-blocks 0 \
        --threads 1 --kvnode "$kvnode_ep"
    srv=$last_pid
    wait_health "$ep" "$srv"
    run_clients "$ep" "serve --kvnode (UCX_TLS=$tls)"
    check_remote "$ep" "serve --kvnode (UCX_TLS=$tls)"
    stop_bg "$srv"
    [ "$stop_rc" = 0 ] || fail "serve exited $stop_rc on SIGTERM"
    stop_bg "$kvnode_pid"
done

# separate processes: the worker owns the remote tier
export UCX_TLS=tcp
for mode in auto reload stream; do
    start_kvnode 0.02
    port=$(free_port)
    ep="tcp://127.0.0.1:$port"
    wep="tcp://127.0.0.1:$(free_port)"
    start_bg "coord-$mode" "$lkv" coordinator --model "$model" --listen "$ep" \
        --workers-listen "$wep" --metrics-listen none --device-kv-blocks $dev_blocks \
        --host-kv-blocks 0 --decode-offloaded $mode
    coord=$last_pid
    start_bg "worker-$mode" "$lkv" worker --coordinator "$wep" --threads 1 \
        --kvnode "$kvnode_ep"
    worker=$last_pid
    wait_health "$ep" "$coord"
    wait_instances "$ep" 1
    run_clients "$ep" "coordinator + worker --kvnode, decode $mode"
    check_remote "$ep" "coordinator + worker --kvnode, decode $mode"
    stop_coordinator "$coord" "$worker"
    stop_bg "$kvnode_pid"
done

# `layerkv coordinator --kvnode` is a usage error that says where it goes
set +e
out=$("$lkv" coordinator --model "$model" --kvnode "$kvnode_ep" 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && printf '%s' "$out" | grep -q 'layerkv worker' || fail "coordinator --kvnode: rc=$rc '$out'"
# an unreachable kvnode stops serve with a clear error, not a hang
set +e
out=$(timeout 60 "$lkv" serve --model "$model" --listen "tcp://127.0.0.1:$(free_port)" \
    --metrics-listen none --kvnode tcp://127.0.0.1:1 2>&1); rc=$?
set -e
[ "$rc" != 0 ] && [ "$rc" != 124 ] && printf '%s' "$out" | grep -q 'layerkv kvnode' \
    || fail "serve with an unreachable kvnode: rc=$rc '$out'"
echo "$tag: ok"
