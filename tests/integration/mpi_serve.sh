#!/usr/bin/env bash
# mpi_serve.sh LAYERKV SRCDIR - serving with tensor parallelism (issue 7,
# done-when 1): one `layerkv coordinator` with two instances, and
# `mpirun -np 4 layerkv worker --tp 2` (two TP2 instances: each leader talks
# to the coordinator and sends every plan to its peer), then the same with
# two PP2 instances. 32 concurrent
# `layerkv generate --temperature 0` requests print exactly what a single
# `layerkv run` prints, with a device pool small enough that layers are
# offloaded; everything exits cleanly on SIGTERM.
set -euo pipefail
lkv=${1:?usage: mpi_serve.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=mpi_serve
bin=$lkv
. "$src/tests/integration/mpi_common.bash"
. "$src/tests/integration/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"
n_clients=32
max_tokens=30
prompts=("Once upon a time" "The little dog" "Lily and Ben went to the park"
         "One day, a big bird" "Tom had a red ball. He" "Mom said")
n_prompts=${#prompts[@]}
for i in $(seq 0 $((n_prompts - 1))); do
    "$lkv" run --model "$model" --prompt "${prompts[$i]}" --max-tokens $max_tokens \
        --temperature 0 --threads 1 >"$tmp/ref$i.out" 2>"$tmp/ref$i.err" \
        || fail "layerkv run: $(cat "$tmp/ref$i.err")"
done

for par in "--tp 2" "--pp 2"; do
    ep="tcp://127.0.0.1:$(free_port)"
    wep="tcp://127.0.0.1:$(free_port)"
    start_bg coord "$lkv" coordinator --model "$model" --listen "$ep" \
        --workers-listen "$wep" --metrics-listen "127.0.0.1:$(free_port)" \
        --policy layerkv --device-kv-blocks 60 --n-instances 2
    coord=$last_pid
    start_bg workers timeout 300 mpirun -np 4 "$lkv" worker --coordinator "$wep" \
        --threads 1 $par
    workers=$last_pid
    wait_health "$ep" "$coord"
    for _ in $(seq 100); do
        [ "$(stats_field "$ep" 's["n_instances_up"]')" = 2 ] && break
        sleep 0.2
    done
    [ "$(stats_field "$ep" 's["n_instances_up"]')" = 2 ] || fail "$par: not both instances joined"

    pids=()
    for c in $(seq 0 $((n_clients - 1))); do
        i=$((c % n_prompts))
        "$lkv" generate --server "$ep" --prompt "${prompts[$i]}" --max-tokens $max_tokens \
            --temperature 0 --timeout-s 120 >"$tmp/gen$c.out" 2>"$tmp/gen$c.err" &
        pids+=($!)
    done
    bad=0
    for c in $(seq 0 $((n_clients - 1))); do
        wait "${pids[$c]}" || { echo "$tag: client $c failed: $(cat "$tmp/gen$c.err")" >&2; bad=1; }
    done
    [ $bad = 0 ] || fail "$par: some clients failed"
    for c in $(seq 0 $((n_clients - 1))); do
        i=$((c % n_prompts))
        cmp -s "$tmp/gen$c.out" "$tmp/ref$i.out" ||
            fail "$par: client $c (prompt '${prompts[$i]}') got '$(cat "$tmp/gen$c.out")', layerkv run printed '$(cat "$tmp/ref$i.out")'"
    done
    echo "$tag: $n_clients clients over 2 instances ($par) match layerkv run" >&2
    [ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "$par: no offload happened"

    stop_bg "$coord"
    [ "$stop_rc" = 0 ] || fail "coordinator exited $stop_rc on SIGTERM"
    for _ in $(seq 100); do kill -0 "$workers" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$workers" 2>/dev/null && fail "mpirun workers did not exit after the coordinator's shutdown"
    set +e; wait "$workers"; wrc=$?; set -e
    [ "$wrc" = 0 ] || fail "$par: mpirun workers exited $wrc"
done
echo "$tag: ok"
