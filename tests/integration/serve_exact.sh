#!/usr/bin/env bash
# serve_exact.sh LAYERKV SRCDIR - issue 4 "done when" item 1: 64 concurrent
# `layerkv generate --temperature 0` requests against `layerkv serve` on the
# bundled model each print exactly what `layerkv run` prints for the same
# prompt and length, under both policies, with a device KV pool small enough
# that the layerkv policy offloads layers and the baseline preempts (checked
# through `layerkv stats`); then the same with `layerkv coordinator` and
# `layerkv worker` as separate processes over tcp:// (2 instances, routed)
# and ipc:// (32 clients each).
# LKV_EXACT_CLIENTS overrides the number of concurrent clients (64).
set -euo pipefail
lkv=${1:?usage: serve_exact.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_exact
. "$src/tests/integration/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"
n_clients=${LKV_EXACT_CLIENTS:-64}
# separate-process runs repeat the check over tcp:// and ipc:// with fewer
# clients to keep the test short (the 64-client check is the embedded one)
split_clients=${LKV_EXACT_SPLIT_CLIENTS:-32}
max_tokens=40
dev_blocks=60

prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park"
         "One day, a big bird" "Tom had a red ball. He" "The sun was hot and"
         "Mom said" "There was a tree")
n_prompts=${#prompts[@]}

make_refs

for policy in layerkv baseline; do
    port=$(free_port); mport=$(free_port)
    ep="tcp://127.0.0.1:$port"
    start_bg "serve-$policy" "$lkv" serve --model "$model" --listen "$ep" \
        --metrics-listen "127.0.0.1:$mport" --policy $policy --device-kv-blocks $dev_blocks \
        --host-kv-blocks 4096 --threads 1
    srv=$last_pid
    wait_health "$ep" "$srv"
    run_clients "$ep" "serve --policy $policy"
    summary=$(stats_field "$ep" '"preempted %d swap %d offloaded %d reloaded %d staged %d used %d" % (s["n_preempted"], s["n_swap_preempted"], s["bytes_offloaded"], s["bytes_reloaded"], s["bytes_staged"], sum(s["kv_blocks_used"].values()))')
    echo "$tag: serve --policy $policy: $summary" >&2
    if [ $policy = layerkv ]; then
        [ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "layerkv policy never offloaded ($summary)"
    else
        [ "$(stats_field "$ep" 's["n_preempted"] > 0')" = True ] || fail "baseline policy never preempted ($summary)"
    fi
    [ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values())')" = 0 ] || fail "blocks still held after all clients finished ($summary)"
    stop_bg "$srv"
    [ "$stop_rc" = 0 ] || fail "serve exited $stop_rc on SIGTERM"
done

# separate processes: coordinator + workers, over tcp:// (two instances,
# two worker processes: the router spreads requests) and ipc:// (one; no
# --model: the built-in default, which must match the bundled file's refs)
for wt in tcp ipc; do
    port=$(free_port); mport=$(free_port)
    ep="tcp://127.0.0.1:$port"
    if [ $wt = tcp ]; then
        wep="tcp://127.0.0.1:$(free_port)"; n_inst=2; model_args=(--model "$model")
    else
        wep="ipc://$tmp/workers.ipc"; n_inst=1; model_args=()
    fi
    start_bg "coord-$wt" "$lkv" coordinator "${model_args[@]}" --listen "$ep" --workers-listen "$wep" \
        --metrics-listen "127.0.0.1:$mport" --policy layerkv --device-kv-blocks $dev_blocks \
        --n-instances $n_inst
    coord=$last_pid
    workers=()
    for k in $(seq 1 $n_inst); do
        start_bg "worker-$wt-$k" "$lkv" worker --coordinator "$wep" --threads 1
        workers+=($last_pid)
    done
    wait_health "$ep" "$coord"
    wait_instances "$ep" $n_inst
    n_clients=$split_clients run_clients "$ep" "coordinator + $n_inst worker(s) over $wt"
    [ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "$wt: no offload happened"
    [ "$(stats_field "$ep" 'all(i["n_steps"] > 0 for i in s["instances"])')" = True ] || \
        fail "$wt: the router left an instance idle: $(stats_field "$ep" 's["instances"]')"
    stop_coordinator "$coord" "${workers[@]}"
done
echo "$tag: ok"
