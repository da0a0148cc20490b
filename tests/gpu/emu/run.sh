#!/usr/bin/env bash
# tests/gpu/emu/run.sh - run the CUDA backend's kernels on CPU threads
# (emulation, see include/emu.h) against the CPU backend: the same programs
# as on the GPU machine (test_cuda_parity incl. sampling, test_cuda_offload).
# For checking kernel logic on a machine without a GPU; slow (minutes: one
# OS thread per CUDA thread), not part of ctest.
#   tests/gpu/emu/run.sh BUILD_DIR [parity|offload|all]
# BUILD_DIR: any build of this tree with the lkv_common, lkv_kernels and
# lkv_kvstore libraries built (e.g. -DLKV_WITH_CUDA=OFF).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
B=$(cd "${1:?usage: run.sh BUILD_DIR [parity|offload|all]}" && pwd)
WHAT=${2:-all}
W=$(mktemp -d /tmp/lkv-cuda-emu.XXXXXX)
trap 'rm -rf "$W"' EXIT
CXX="g++ -std=c++20 -O1 -pthread -w -I$HERE/include -I$ROOT -DLKV_HAVE_CUDA=1"
CC="gcc -std=gnu11 -O1 -w -pthread -I$ROOT -DLKV_HAVE_CUDA=1"
objs=()
for f in "$ROOT"/kernels/cuda/*.cu; do
    n=$(basename "$f" .cu)
    [ "$n" = cuda_nccl ] && continue # NCCL is not emulated
    python3 "$HERE/xform.py" "$f" "$W/$n.cpp"
    $CXX -c "$W/$n.cpp" -o "$W/$n.o"
    objs+=("$W/$n.o")
done
$CXX -c "$HERE/emu.cpp" -o "$W/emu.o"
$CC -c "$ROOT/kernels/kern_backend.c" -o "$W/kern_backend.o"
$CC -c "$ROOT/kernels/cuda/cuda_ops.c" -o "$W/cuda_ops.o"
libs=("$B/liblkv_kvstore.a" "$B/liblkv_kernels.a" "$B/liblkv_common.a")
blas=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
rc=0
for t in parity offload; do
    [ "$WHAT" = all ] || [ "$WHAT" = "$t" ] || continue
    src=$ROOT/tests/gpu/test_cuda_$t.c
    $CC -c "$src" -o "$W/$t.o"
    g++ -o "$W/$t" "$W/$t.o" "$W/kern_backend.o" "$W/cuda_ops.o" "${objs[@]}" \
        "$W/emu.o" "${libs[@]}" $blas -lm -pthread
    echo "== emulated $t"
    "$W/$t" || rc=1
done
exit $rc
