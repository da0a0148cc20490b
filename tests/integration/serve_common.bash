# serve_common.bash - helpers sourced by tests/integration/serve_*.sh (not a
# test itself: the .bash suffix keeps it out of ctest's *.sh glob).
# Provides: $py (python3 with pyzmq + msgpack), free_port, start_bg NAME CMD...
# (background process, killed on exit), stop_bg PID, wait_health ENDPOINT PID,
# wait_instances ENDPOINT N, stats_field ENDPOINT EXPR, fail MSG, $tmp
# (removed on exit); with prompts=(...), $model and $max_tokens set:
# make_refs (what `layerkv run` prints for each prompt alone) and
# run_clients ENDPOINT LABEL (n_clients concurrent greedy generates that
# must print exactly that); start_kvnode GIB [WRAPPER...] (a `layerkv
# kvnode` on an ephemeral port: kvnode_pid, kvnode_ep); stop_coordinator
# COORD WORKER... (SIGTERM the coordinator; it and its workers must exit 0).
# Callers set $lkv, $src and $tag first.

. "$src/tests/integration/endpoint_log.bash"

py=""
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import zmq, msgpack' >/dev/null 2>&1; then py=$p; break; fi
done
[ -n "$py" ] || { echo "$tag: no python3 with pyzmq+msgpack; skipping" >&2; exit 77; }
"$lkv" serve --help >/dev/null 2>&1 || { echo "$tag: layerkv serve not built; skipping" >&2; exit 77; }

tmp=$(mktemp -d "/tmp/lkv-$tag.XXXXXX")
bg_pids=()
cleanup() {
    for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${bg_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
    echo "$tag: FAIL: $*" >&2
    for f in "$tmp"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f (tail) ---" >&2
        tail -20 "$f" >&2
    done
    exit 1
}

# free_port : a port that is free now, picked at random BELOW the kernel's
# ephemeral range (port 0 would hand out an ephemeral port, which any
# outgoing connection of a parallel test may take before the server binds it)
free_port() {
    "$py" -c '
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
'
}

# start_bg NAME CMD... : run CMD in the background, output in $tmp/NAME.log
start_bg() {
    local name=$1; shift
    "$@" >"$tmp/$name.log" 2>&1 &
    bg_pids+=($!)
    last_pid=$!
}

# stop_bg PID : SIGTERM, wait up to 10 s, report the exit status in $stop_rc
stop_bg() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    stop_rc=124
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            set +e; wait "$pid"; stop_rc=$?; set -e
            return 0
        fi
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# wait_health ENDPOINT PID : until the server reports status ok (60 s: a
# server under valgrind on a loaded CI machine starts slowly)
wait_health() {
    local ep=$1 pid=$2
    for _ in $(seq 240); do
        kill -0 "$pid" 2>/dev/null || fail "server exited early"
        if "$lkv" stats --health --server "$ep" --timeout-s 0.5 2>/dev/null | grep -Eq '^status +ok$'; then
            return 0
        fi
        sleep 0.25
    done
    fail "server at $ep did not report status ok within 60 s"
}

# stats_field ENDPOINT EXPR : evaluate a python expression over the stats map s
stats_field() {
    "$lkv" stats --server "$1" --json >"$tmp/stats.json" || fail "stats query failed"
    "$py" -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(eval(sys.argv[2]))' \
        "$tmp/stats.json" "$2"
}

# wait_instances ENDPOINT N : until N instances report up (60 s)
wait_instances() {
    local ep=$1 n=$2
    for _ in $(seq 300); do
        [ "$(stats_field "$ep" 's["n_instances_up"]')" = "$n" ] && return 0
        sleep 0.2
    done
    fail "$ep: $(stats_field "$ep" 's["n_instances_up"]') of $n instances up after 60 s (a worker did not attach)"
}

# make_refs : $tmp/refI.out = `layerkv run` of prompts[I] alone (all KV on
# the device); sets n_prompts
make_refs() {
    n_prompts=${#prompts[@]}
    for i in $(seq 0 $((n_prompts - 1))); do
        "$lkv" run --model "$model" --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
            --temperature 0 --threads 1 >"$tmp/ref$i.out" 2>"$tmp/ref$i.err" \
            || fail "layerkv run: $(cat "$tmp/ref$i.err")"
    done
}

# run_clients ENDPOINT LABEL : n_clients concurrent greedy generates (client
# c asks prompts[c % n_prompts]); each must print exactly its reference.
# $client_timeout_s (default 120) bounds a silent server.
run_clients() {
    local ep=$1 label=$2 pids=() bad=0 c i
    for c in $(seq 0 $((n_clients - 1))); do
        i=$((c % n_prompts))
        "$lkv" generate --server "$ep" --prompt "${prompts[$i]}" --max-tokens "$max_tokens" \
            --temperature 0 --timeout-s "${client_timeout_s:-120}" \
            >"$tmp/gen$c.out" 2>"$tmp/gen$c.err" &
        pids+=($!)
    done
    for c in $(seq 0 $((n_clients - 1))); do
        if ! wait "${pids[$c]}"; then
            echo "$tag: $label: client $c failed: $(cat "$tmp/gen$c.err")" >&2
            bad=1
        fi
    done
    [ "$bad" = 0 ] || fail "$label: some clients failed"
    for c in $(seq 0 $((n_clients - 1))); do
        i=$((c % n_prompts))
        cmp -s "$tmp/gen$c.out" "$tmp/ref$i.out" || \
            fail "$label: client $c (prompt '${prompts[$i]}') got '$(cat "$tmp/gen$c.out")', layerkv run printed '$(cat "$tmp/ref$i.out")'"
    done
    echo "$tag: $label: $n_clients clients match layerkv run" >&2
}

# start_kvnode GIB [WRAPPER...] : a `layerkv kvnode` of GIB GiB on an
# ephemeral port (log $tmp/kvnode.log), started through WRAPPER if given
# (e.g. a valgrind function); sets kvnode_pid and kvnode_ep (30 s)
start_kvnode() {
    local gib=$1; shift
    start_bg kvnode "$@" "$lkv" kvnode --listen 'tcp://127.0.0.1:*' --capacity-gib "$gib"
    kvnode_pid=$last_pid
    kvnode_ep=$(log_endpoint "$tmp/kvnode.log" "$kvnode_pid" 's/.* on \(tcp:[^ ]*\) (pid.*/\1/p')
    [ -n "$kvnode_ep" ] || fail "kvnode did not start"
}

# stop_coordinator COORD_PID WORKER_PID... : SIGTERM the coordinator, which
# shuts its workers down; all must exit 0 within 10 s each
stop_coordinator() {
    local coord=$1 w wrc; shift
    stop_bg "$coord"
    [ "$stop_rc" = 0 ] || fail "coordinator exited $stop_rc on SIGTERM"
    for w in "$@"; do
        for _ in $(seq 100); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$w" 2>/dev/null && fail "worker $w did not exit after the coordinator's shutdown"
        set +e; wait "$w"; wrc=$?; set -e
        [ "$wrc" = 0 ] || fail "worker $w exited $wrc"
    done
    return 0
}
