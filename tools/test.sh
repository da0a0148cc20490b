#!/usr/bin/env bash
# test.sh - install dependencies, build, and run every test (README's second
# command; .ci/run calls it). Options:
#   Always: Release build + every test; a portable build + the valgrind
#   memcheck test (tests/valgrind/).
#   --asan     also build with ASan+UBSan and run the unit + integration tests
#   --quick    skip the sanitizer build (default when LKV_QUICK=1)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
jobs=$(nproc)
asan=1
[ "${LKV_QUICK:-0}" = 1 ] && asan=0
for a in "$@"; do
    case "$a" in
        --asan) asan=1 ;;
        --quick) asan=0 ;;
        *) echo "test.sh: unknown option $a" >&2; exit 2 ;;
    esac
done

echo "== build (release) ==" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== tests (release) ==" >&2
(cd build && ctest --output-on-failure -j"$jobs" -LE valgrind)

# valgrind cannot run -march=native code on every CPU (AVX-512): a portable
# build of the binary for the memcheck test of the long-running paths
echo "== build (valgrind: portable, no CUDA) ==" >&2
cmake -S . -B build-vg -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLKV_NATIVE=OFF \
    -DLKV_WITH_CUDA=OFF >/dev/null
cmake --build build-vg -j"$jobs" --target layerkv
echo "== tests (valgrind memcheck) ==" >&2
(cd build-vg && ctest --output-on-failure -L valgrind)

if [ "$asan" = 1 ]; then
    echo "== build (ASan+UBSan, CPU backend) ==" >&2
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLKV_SANITIZE=ON \
        -DLKV_WITH_CUDA=OFF >/dev/null
    cmake --build build-asan -j"$jobs"
    echo "== tests (ASan+UBSan) ==" >&2
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --output-on-failure -j"$jobs" -L 'unit|integration' -LE slow)
fi
