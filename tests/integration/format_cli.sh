#!/usr/bin/env bash
# format_cli.sh - `layerkv tokenize` and `layerkv inspect` on the bundled
# stories260K model (GGUF and llama2.c) and an HF fixture: goldens, --help,
# and clean failures on bad input.
# usage: bash tests/integration/format_cli.sh LAYERKV_BINARY SOURCE_DIR
set -u
BIN=${1:?layerkv binary}
SRC=${2:?source dir}
M=$SRC/models/stories260K
fail=0
check() { # name want got
    if [ "$2" != "$3" ]; then
        echo "FAIL $1: want [$2] got [$3]"
        fail=1
    else
        echo "ok   $1"
    fi
}

check "gguf ids" "1 274 287 269 345 400 428" \
    "$("$BIN" tokenize --model "$M/stories260K.gguf" --text "Tom and his dog")"
check "llama2c ids" "1 274 287 269 345 400 428" \
    "$("$BIN" tokenize --model "$M/stories260K.bin" --tokenizer "$M/tok512.bin" --text "Tom and his dog")"
check "no bos" "274 287 269 345 400 428" \
    "$("$BIN" tokenize --model "$M/stories260K.gguf" --no-bos --text "Tom and his dog")"
check "decode" ", Max, who" \
    "$("$BIN" tokenize --model "$M/stories260K.gguf" --decode "432 392 412 444 432 263 415 414")"
check "hf llama3 ids" "$(python3 -c 'import json;print(" ".join(map(str,json.load(open("'"$SRC"'/tests/data/hf/llama3/expected.json"))["prompts"][1]["ids"])))' 2>/dev/null || echo skip)" \
    "$("$BIN" tokenize --model "$SRC/tests/data/hf/llama3" --text "The quick brown fox 123" 2>/dev/null || echo error)"
out=$("$BIN" inspect --model "$M/stories260K.gguf")
check "inspect dim" "dim           64" "$(echo "$out" | grep '^dim ')"
check "inspect kv heads" "n_kv_heads    4" "$(echo "$out" | grep '^n_kv_heads')"
check "inspect stops" "stop_ids      2 1" "$(echo "$out" | grep '^stop_ids')"
check "inspect tensors" "45" "$(echo "$out" | grep -c '^  layers\.')"
check "inspect dummy" "dim           768" \
    "$("$BIN" inspect --model dummy:110m --no-tensors | grep '^dim ')"

"$BIN" tokenize --help > /dev/null; check "tokenize --help" 0 $?
"$BIN" inspect --help > /dev/null; check "inspect --help" 0 $?
"$BIN" tokenize --bogus > /dev/null 2>&1; check "bad option" 2 $?
"$BIN" tokenize --model /nonexistent.gguf --text x > /dev/null 2>&1; check "missing model" 1 $?
err=$("$BIN" inspect --model /nonexistent.gguf 2>&1 >/dev/null)
case "$err" in *"/nonexistent.gguf"*) echo "ok   error names the file" ;;
    *) echo "FAIL error does not name the file: $err"; fail=1 ;; esac
tmp=$(mktemp -d)
head -c 5000 "$M/stories260K.gguf" > "$tmp/t.gguf"
err=$("$BIN" inspect --model "$tmp/t.gguf" 2>&1 >/dev/null); rc=$?
check "truncated gguf rc" 1 $rc
case "$err" in *"t.gguf"*truncated*) echo "ok   truncation reported" ;;
    *) echo "FAIL truncation message: $err"; fail=1 ;; esac
rm -rf "$tmp"
exit $fail
