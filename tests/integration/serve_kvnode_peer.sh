#!/usr/bin/env bash
# serve_kvnode_peer.sh LAYERKV SRCDIR - issue 8 peer mode: instance A
# (`layerkv serve --lend-gib N --lend-listen EP`) lends part of its host
# memory; instance B, a separate process with --host-kv-blocks 0, offloads
# into it with --kvnode EP. Concurrent clients of B (and of A, which keeps
# serving its own) print exactly what `layerkv run` prints; B's layers did go
# to the remote tier. Over UCX TCP and shared memory.
set -euo pipefail
lkv=${1:?usage: serve_kvnode_peer.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_kvnode_peer
. "$src/tests/integration/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"
n_clients=16
max_tokens=40
export UCX_WARN_UNUSED_ENV_VARS=n UCX_HANDLE_ERRORS=none

prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park"
         "One day, a big bird")
make_refs

# clients EP LABEL N : N concurrent generates in the background (pids in cpids)
clients() {
    local ep=$1 label=$2 n=$3
    cpids=()
    for c in $(seq 0 $((n - 1))); do
        "$lkv" generate --server "$ep" --prompt "${prompts[$((c % n_prompts))]}" \
            --max-tokens $max_tokens --temperature 0 --timeout-s 180 \
            >"$tmp/$label$c.out" 2>"$tmp/$label$c.err" &
        cpids+=($!)
    done
}
check() {
    local label=$1 n=$2
    for c in $(seq 0 $((n - 1))); do
        wait "${cpids[$c]}" || fail "$label client $c failed: $(cat "$tmp/$label$c.err")"
        cmp -s "$tmp/$label$c.out" "$tmp/ref$((c % n_prompts)).out" || \
            fail "$label client $c got '$(cat "$tmp/$label$c.out")'"
    done
}

for tls in tcp sm,self; do
    export UCX_TLS=$tls
    epa="tcp://127.0.0.1:$(free_port)"
    start_bg "a-$tls" "$lkv" serve --model "$model" --listen "$epa" --metrics-listen none \
        --threads 1 --lend-gib 0.02 --lend-listen 'tcp://127.0.0.1:*'
    a=$last_pid
    lend_ep=$(log_endpoint "$tmp/a-$tls.log" "$a" 's/.*kvnode on \(tcp:[^ ]*\)$/\1/p')
    [ -n "$lend_ep" ] || fail "instance A did not report its lent endpoint"
    wait_health "$epa" "$a"
    epb="tcp://127.0.0.1:$(free_port)"
    start_bg "b-$tls" "$lkv" serve --model "$model" --listen "$epb" --metrics-listen none \
        --threads 1 --device-kv-blocks 60 --host-kv-blocks 0 \
        --decode-offloaded stream --kvnode "$lend_ep"
    b=$last_pid
    wait_health "$epb" "$b"
    clients "$epb" "b-$tls-" $n_clients
    bpids=("${cpids[@]}")
    clients "$epa" "a-$tls-" 4
    apids=("${cpids[@]}")
    cpids=("${bpids[@]}"); check "b-$tls-" $n_clients
    cpids=("${apids[@]}"); check "a-$tls-" 4
    summary=$(stats_field "$epb" '"remote blocks %d, offloaded %d, staged %d" % (s["kv_blocks_total"]["remote"], s["bytes_offloaded"], s["bytes_staged"])')
    echo "$tag: UCX_TLS=$tls: B ($n_clients clients) and A (4) match layerkv run; B: $summary" >&2
    [ "$(stats_field "$epb" 's["kv_blocks_total"]["remote"] > 0 and s["bytes_offloaded"] > 0')" = True ] \
        || fail "B did not offload into A's memory ($summary)"
    stop_bg "$b"
    [ "$stop_rc" = 0 ] || fail "B exited $stop_rc on SIGTERM"
    stop_bg "$a"
    [ "$stop_rc" = 0 ] || fail "A exited $stop_rc on SIGTERM"
done
echo "$tag: ok"
