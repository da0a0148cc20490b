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
make_refs

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
    wait_instances "$ep" 2

    run_clients "$ep" "2 instances ($par)"
    [ "$(stats_field "$ep" 's["bytes_offloaded"] > 0')" = True ] || fail "$par: no offload happened"

    stop_coordinator "$coord" "$workers"
done
echo "$tag: ok"
