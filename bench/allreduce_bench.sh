#!/usr/bin/env bash
# allreduce_bench.sh - per-layer TP2 all-reduce time on the CPU: layerkv's
# all-reduce (worker/comm.c) next to MPI_Allreduce of the same activation
# size in the same run (docs/performance.md "TP all-reduce (CPU)").
# usage: bench/allreduce_bench.sh [BUILD_DIR] [ITERS]
# BUILD_DIR holds liblkv_worker.a etc. (default: build); ITERS default 50.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
iters=${2:-50}
for lib in lkv_worker lkv_kernels lkv_common; do
    [ -f "$build/lib$lib.a" ] || {
        echo "allreduce_bench: $build/lib$lib.a missing: build first" \
            "(cmake --build $build --target lkv_worker)" >&2
        exit 2
    }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mpicc -O2 -std=gnu11 -I"$src" -I"$src/include" \
    "$src/bench/allreduce/allreduce_bench.c" -o "$out/allreduce_bench" \
    "$build/liblkv_worker.a" "$build/liblkv_kernels.a" "$build/liblkv_common.a" \
    $(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lpthread -lm
. "$src/deploy/mpirun/env.sh"
echo "TP2 all-reduce, 2 ranks on $(hostname) ($(nproc) CPUs), median of" \
    "$iters, slowest rank; $(date -u +%F)"
timeout 300 mpirun -np 2 "$out/allreduce_bench" "$iters"
