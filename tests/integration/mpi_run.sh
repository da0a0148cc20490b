#!/usr/bin/env bash
# mpi_run.sh - `mpirun -np N layerkv run --tp T --pp P` gives the greedy tokens
# of one process (issue 7, done-when 1): stories260K (8 query / 4 kv heads:
# TP 2 and 4, PP 2, TP2 x PP2, uneven --pp-layers) and the HF fixtures whose
# head counts allow it, with layer offload active; only rank 0 writes text;
# bad sizes fail with a message.
# usage: mpi_run.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
. "$src/tests/integration/mpi_common.bash"
. "$src/tests/integration/run_output.bash"
m=$src/models/stories260K/stories260K.gguf
golden=', Max, who lived in a big house. They liked to play with their toys and run around the house.'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

check() { # name expected got rc (several prompts: compared in prompt order)
    if [ "$4" -ne 0 ] ||
        [ "$(printf '%s\n' "$3" | sort_blocks)" != "$(printf '%s\n' "$2" | sort_blocks)" ]; then
        echo "FAIL $1: rc=$4"
        printf '%s\n' "$3" | sed 's/^/  got:      /'
        printf '%s\n' "$2" | sed 's/^/  expected: /'
        sed 's/^/  stderr: /' "$tmp/err" | tail -20
        fail=1
    else
        echo "ok   $1"
    fi
}

story=(run --model "$m" --prompt "Tom and his dog" --max-tokens 40
    --temperature 0 --threads 1 --offload-layers interleave)
for cfg in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "4 --tp 4" \
    "2 --pp 2 --pp-layers 1,4"; do
    read -r -a a <<<"$cfg"
    out=$(mpi "${a[0]}" "${story[@]}" "${a[@]:1}" 2>"$tmp/err")
    check "stories260K np ${cfg}" "$golden" "$out" $?
done
# streamed decode of offloaded layers, tight pools, several prompts
many=(run --model "$m" --prompt "Once upon a time" --prompt "Tom and his dog"
    --prompt "The cat" --max-tokens 30 --temperature 0 --threads 1
    --offload-layers all-but-one --decode-offloaded stream --block-size 4)
ref=$("$bin" "${many[@]}" 2>"$tmp/err")
check "stories260K single process (reference)" "$ref" "$ref" $?
for cfg in "2 --tp 2" "4 --tp 2 --pp 2"; do
    read -r -a a <<<"$cfg"
    out=$(mpi "${a[0]}" "${many[@]}" "${a[@]:1}" 2>"$tmp/err")
    check "stories260K stream np ${cfg}" "$ref" "$out" $?
done

# HF fixtures: 4 query heads, 4 (llama2) or 2 kv heads, 2 layers
for fx in llama2 llama3 mistral qwen2; do
    d=$src/tests/data/hf/$fx
    [ -f "$d/config.json" ] || continue
    hf=(run --model "$d" --prompt "Hello world" --prompt "The capital of"
        --max-tokens 12 --temperature 0 --threads 1 --offload-layers interleave)
    ref=$("$bin" "${hf[@]}" 2>"$tmp/err")
    rc=$?
    if [ $rc -ne 0 ] || [ -z "$ref" ]; then
        check "$fx single process" "(output)" "$ref" 1
        continue
    fi
    for cfg in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "4 --tp 4"; do
        read -r -a a <<<"$cfg"
        out=$(mpi "${a[0]}" "${hf[@]}" "${a[@]:1}" 2>"$tmp/err")
        check "$fx np ${cfg}" "$ref" "$out" $?
    done
done

# errors: a clear message, no hang
expect_err() { # name pattern np args...
    local name=$1 pat=$2 np=$3
    shift 3
    mpi "$np" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] || ! grep -q -- "$pat" "$tmp/err"; then
        echo "FAIL $name: rc=$rc, no '$pat' in:"
        sed 's/^/  stderr: /' "$tmp/err" | tail -8
        fail=1
    else
        echo "ok   $name"
    fi
}
expect_err tp3-heads "does not divide the model" 3 "${story[@]}" --tp 3
expect_err np-mismatch "needs exactly 2" 4 "${story[@]}" --tp 2
expect_err pp-layers-sum "sum to 4" 2 "${story[@]}" --pp 2 --pp-layers 2,2
"$bin" "${story[@]}" --tp 2 >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] || ! grep -q "mpirun -np 2" "$tmp/err"; then
    echo "FAIL tp2 without mpirun should ask for mpirun"
    fail=1
else
    echo "ok   tp2-without-mpirun"
fi
exit $fail
