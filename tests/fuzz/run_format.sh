#!/usr/bin/env bash
# run_format.sh [SECONDS] [WORKDIR] - build the libFuzzer target for the
# model-file readers and tokenizers (tests/fuzz/fuzz_format.c) with clang
# outside CMake and run it for SECONDS (default 60). Seeds: the small files
# in tests/fuzz/format_seeds/, the HF tokenizer.json fixtures, tok512.bin
# and a few texts. Exits 0 when no crash was found, 1 on a crash (the
# crashing input is left in WORKDIR), 77 when clang/libFuzzer is missing.
set -euo pipefail
secs=${1:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
work=${2:-$(mktemp -d /tmp/lkv-fuzz-format.XXXXXX)}
mkdir -p "$work/corpus"
cc=${CLANG:-}
if [ -z "$cc" ]; then
    for c in clang clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
    done
fi
if [ -z "$cc" ]; then
    echo "run_format.sh: clang not found (apt-get install clang libclang-rt-14-dev); skipping" >&2
    exit 77
fi
probe="$work/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$work/probe" >/dev/null 2>&1; then
    echo "run_format.sh: $cc cannot link -fsanitize=fuzzer (install libclang-rt-14-dev); skipping" >&2
    exit 77
fi
echo "run_format.sh: building fuzz_format with $cc in $work" >&2
cjson_cflags=$(pkg-config --cflags libcjson)
cjson_libs=$(pkg-config --libs libcjson)
# the dtype helpers live in kernels/kern_backend.c; an empty CPU ops table
# stands in for the backend so the whole CPU kernel library is not needed
cat >"$work/ops_stub.c" <<'STUB'
#include "kernels/kernels.h"
const lkv_kern_ops_t lkv_kern_cpu_ops = {.name = "cpu-stub"};
STUB
srcs=$(ls "$src"/format/*.c | grep -v '/cmd_')
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$src" $cjson_cflags "$src/tests/fuzz/fuzz_format.c" $srcs \
    "$src"/common/status.c "$src"/common/log.c "$src"/kernels/kern_backend.c \
    "$work/ops_stub.c" \
    $cjson_libs -lpthread -lm -o "$work/fuzz_format"
# seeds: a type byte followed by the file
s="$src/tests/fuzz/format_seeds"
{ printf G; cat "$s/tiny.gguf"; } >"$work/corpus/gguf"
{ printf S; cat "$s/tiny.safetensors"; } >"$work/corpus/safetensors"
{ printf B; head -c 300 "$src/models/stories260K/tok512.bin"; } >"$work/corpus/tokbin"
for m in llama2 llama3; do
    { printf J; cat "$src/tests/data/hf/$m/tokenizer.json"; } >"$work/corpus/json_$m"
done
printf 'tHello world, it'"'"'s 1234 <s> <|im_start|> caf\xc3\xa9 \xf0\x9f\x98\x80\n\n  x' >"$work/corpus/text1"
printf 'x\xe4\xb8\xad\xe6\x96\x87 e\xcc\x81 \xff\xfe \r\n\t' >"$work/corpus/text2"
cd "$work"
echo "run_format.sh: fuzzing for ${secs}s" >&2
set +e
LKV_SOURCE_DIR="$src" ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_format -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$work/" corpus >"$work/fuzz.log" 2>&1
rc=$?
set -e
cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$work/fuzz.log" | tail -1 || true)
runs=$(grep -Eo '^stat::number_of_executed_units: [0-9]+' "$work/fuzz.log" | tail -1 || true)
echo "run_format.sh: exit $rc, final $cov, $runs, corpus $(ls corpus | wc -l) inputs, log $work/fuzz.log" >&2
if [ $rc -ne 0 ]; then
    tail -40 "$work/fuzz.log" >&2
    exit 1
fi
exit 0
