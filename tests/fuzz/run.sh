#!/usr/bin/env bash
# run.sh [SECONDS] [WORKDIR] - build the libFuzzer target for the wire decoder
# (tests/fuzz/fuzz_wire.c) with clang outside CMake and run it for SECONDS
# (default 60). Exits 0 when no crash was found, 1 on a crash (the crashing
# input is left in WORKDIR), 77 when clang/libFuzzer is not available.
set -euo pipefail
secs=${1:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${2:-$(mktemp -d /tmp/lkv-fuzz.XXXXXX)}
mkdir -p "$work/corpus"
cc=${CLANG:-}
if [ -z "$cc" ]; then
    for c in clang clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
    done
fi
if [ -z "$cc" ]; then
    echo "run.sh: clang not found (apt-get install clang libclang-rt-14-dev); skipping" >&2
    exit 77
fi
msgpack_cflags=$(pkg-config --cflags msgpack-c 2>/dev/null || pkg-config --cflags msgpack 2>/dev/null || true)
msgpack_libs=$(pkg-config --libs msgpack-c 2>/dev/null || pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc)
# libFuzzer present? (clang without libclang-rt-dev cannot link -fsanitize=fuzzer)
probe="$work/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$work/probe" >/dev/null 2>&1; then
    echo "run.sh: $cc cannot link -fsanitize=fuzzer (install libclang-rt-14-dev); skipping" >&2
    exit 77
fi
echo "run.sh: building fuzz_wire with $cc in $work" >&2
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$src" -I"$src/include" $msgpack_cflags \
    "$src/tests/fuzz/fuzz_wire.c" "$src"/transport/wire.c "$src"/transport/wire_enc.c \
    "$src"/transport/wire_scan.c "$src"/transport/wire_stats.c "$src"/transport/wire_fast.c \
    "$src"/common/status.c "$src"/common/log.c "$src"/common/clock.c \
    $msgpack_libs -lm -o "$work/fuzz_wire"
if python3 -c 'import msgpack' >/dev/null 2>&1; then
    python3 "$src/tests/fuzz/make_seeds.py" "$work/corpus"
elif /usr/bin/python3 -c 'import msgpack' >/dev/null 2>&1; then
    /usr/bin/python3 "$src/tests/fuzz/make_seeds.py" "$work/corpus"
fi
cd "$work"
echo "run.sh: fuzzing for ${secs}s" >&2
set +e
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_wire -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
    -dict="$src/tests/fuzz/wire.dict" -print_final_stats=1 -artifact_prefix="$work/" \
    corpus 2>"$work/fuzz.log"
rc=$?
set -e
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|INFO: .*corp|Done [0-9]+ runs' "$work/fuzz.log" | tail -6 >&2 || true
cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$work/fuzz.log" | tail -1 || true)
echo "run.sh: exit $rc, final $cov, corpus $(ls corpus | wc -l) inputs, log $work/fuzz.log" >&2
if [ $rc -ne 0 ]; then
    tail -40 "$work/fuzz.log" >&2
    exit 1
fi
exit 0
