#!/usr/bin/env bash
# run_golden.sh - `layerkv run` prints the stories260K greedy golden from the
# GGUF and the llama2.c files and from the built-in default model, with
# layer offload (stream and reload, tight device pool, emulated link), and
# with several prompts at once.
# usage: run_golden.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
m=$src/models/stories260K
golden=', Max, who lived in a big house. They liked to play with their toys and run around the house.'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

expect_golden() { # name, args...
    local name=$1
    shift
    local out rc
    out=$("$bin" run "$@" --prompt "Tom and his dog" --max-tokens 40 \
        --temperature 0 --threads 1 2>"$tmp/err")
    rc=$?
    if [ $rc -ne 0 ] || [ "$out" != "$golden" ]; then
        echo "FAIL $name: rc=$rc"
        echo "  got:      '$out'"
        echo "  expected: '$golden'"
        sed 's/^/  stderr: /' "$tmp/err"
        fail=1
    else
        echo "ok   $name"
    fi
}

expect_golden gguf --model "$m/stories260K.gguf"
expect_golden builtin-default   # no --model: the bundled GGUF, built in
expect_golden llama2c --model "$m/stories260K.bin" --tokenizer "$m/tok512.bin"
expect_golden interleave-stream --model "$m/stories260K.gguf" \
    --offload-layers interleave --decode-offloaded stream
# 46 positions x 5 layers in blocks of 4 = 60 layer-blocks: the device pool
# holds the sequence only once its offloaded layers are back
expect_golden all-but-one-reload-tight --model "$m/stories260K.gguf" \
    --offload-layers all-but-one --decode-offloaded reload \
    --device-kv-blocks 64 --host-kv-blocks 64 --block-size 4
expect_golden random3-stream-link --model "$m/stories260K.bin" \
    --tokenizer "$m/tok512.bin" --offload-layers random:3 \
    --decode-offloaded stream --link-gbps 2

# timing lines say the link was emulated
if ! grep -q 'decode .*tok/s.*(link emulated at 2 GB/s)' "$tmp/err" ||
    ! grep -q 'kv moves: .*(link emulated at 2 GB/s)' "$tmp/err"; then
    echo "FAIL link note missing from timing lines:"
    cat "$tmp/err"
    fail=1
else
    echo "ok   link-note"
fi

# short runs with the default (exact-fit) kv pools: a prefix of the golden
for n in 1 4 9 17; do
    out=$("$bin" run --model "$m/stories260K.gguf" --prompt "Tom and his dog" \
        --max-tokens $n --temperature 0 --threads 1 2>"$tmp/err")
    rc=$?
    case "$golden" in
    "$out"*) [ $rc -eq 0 ] && [ -n "$out" ] && echo "ok   prefix-$n" && continue ;;
    esac
    echo "FAIL prefix-$n: rc=$rc got '$out'"
    sed 's/^/  stderr: /' "$tmp/err"
    fail=1
done

# several prompts: each completion printed with its index when done
out=$("$bin" run --model "$m/stories260K.gguf" --prompt "Once upon a time" \
    --prompt "Tom and his dog" --prompt "The cat" --max-tokens 40 \
    --temperature 0 --threads 1 2>"$tmp/err")
rc=$?
if [ $rc -ne 0 ] || ! printf '%s\n' "$out" | grep -qxF "[1] $golden" ||
    [ "$(printf '%s\n' "$out" | grep -c '^\[[0-2]\] ')" -ne 3 ]; then
    echo "FAIL multi-prompt: rc=$rc"
    printf '%s\n' "$out" | sed 's/^/  got: /'
    fail=1
else
    echo "ok   multi-prompt"
fi

# prompts file, same result as --prompt
printf 'Once upon a time\n\nTom and his dog\nThe cat\n' >"$tmp/prompts.txt"
out2=$("$bin" run --model "$m/stories260K.gguf" --prompts-file \
    "$tmp/prompts.txt" --max-tokens 40 --temperature 0 --threads 1 \
    2>"$tmp/err")
if [ "$out2" != "$out" ]; then
    echo "FAIL prompts-file differs from --prompt:"
    printf '%s\n' "$out2" | sed 's/^/  got: /'
    fail=1
else
    echo "ok   prompts-file"
fi
exit $fail
