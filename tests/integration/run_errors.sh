#!/usr/bin/env bash
# run_errors.sh - `layerkv run` refuses bad input with a clear message and
# exit code 2 (usage) or 1 (runtime), never a crash; --help exits 0.
# usage: run_errors.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
m=$src/models/stories260K/stories260K.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

expect() { # name, exit code, stderr pattern, args...
    local name=$1 code=$2 pat=$3
    shift 3
    "$bin" run "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -ne "$code" ] || ! grep -qi -- "$pat" "$tmp/err"; then
        echo "FAIL $name: rc=$rc (want $code), stderr:"
        sed 's/^/  /' "$tmp/err"
        fail=1
    else
        echo "ok   $name"
    fi
}

"$bin" run --help >"$tmp/out" 2>&1 && grep -q -- '--offload-layers' "$tmp/out" &&
    grep -q -- '--decode-offloaded' "$tmp/out" && grep -q -- '--link-gbps' "$tmp/out" ||
    { echo "FAIL --help"; fail=1; }

expect unknown-builtin 1 "no such built-in model" --model builtin:nope --prompt hi
expect no-prompt 2 "no prompt" --model "$m"
expect missing-model 1 "cannot open model" --model "$tmp/nope.gguf" --prompt hi
expect bad-flag 2 "unknown or incomplete option" --model "$m" --prompt hi --bogus
expect bad-number 2 "--max-tokens expects an integer" --model "$m" --prompt hi --max-tokens 12x
expect bad-temp 2 "--temperature expects a number" --model "$m" --prompt hi --temperature -1
expect bad-offload 2 "--offload-layers expects" --model "$m" --prompt hi --offload-layers half
expect bad-random 2 "--offload-layers expects" --model "$m" --prompt hi --offload-layers random:
expect bad-decode 2 "--decode-offloaded expects" --model "$m" --prompt hi --decode-offloaded swap
expect bad-seed 2 "--seed expects a non-negative integer" --model "$m" --prompt hi --seed -3
expect bad-kv-dtype 2 "--kv-dtype expects" --model "$m" --prompt hi --kv-dtype f8
expect bad-link 2 "--link-gbps expects" --model "$m" --prompt hi --link-gbps fast
expect bad-backend 1 "cannot open backend" --model "$m" --prompt hi --backend tpu
expect missing-prompts-file 1 "cannot open prompts file" --model "$m" --prompts-file "$tmp/none.txt"

# a prompt longer than the context
long=$(for i in $(seq 1 3000); do printf 'dog and cat '; done)
expect too-long 1 "longer than the context" --model "$m" --prompt "$long" --max-tokens 4

# a device pool that cannot hold one prompt
expect tiny-pool 1 "raise --device-kv-blocks" --model "$m" --prompt "Tom and his dog" \
    --device-kv-blocks 2 --temperature 0

# truncated model file
head -c 5000 "$m" >"$tmp/trunc.gguf"
expect truncated 1 "cannot open model" --model "$tmp/trunc.gguf" --prompt hi
exit $fail
