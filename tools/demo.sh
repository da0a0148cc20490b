#!/usr/bin/env bash
# demo.sh - README's first command: install dependencies, build, and run the
# main job on the bundled model: `layerkv serve` in its embedded default
# (coordinator + one worker in one process, CPU backend, the stories260K
# model built into the binary), a completion streamed by `layerkv generate`,
# the server's state from `layerkv stats`, then a clean shutdown (SIGTERM).
# usage: tools/demo.sh [PROMPT [MAX_TOKENS]]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${1:-Tom and his dog}
n=${2:-40}
bash tools/install-deps.sh
echo "== build (Release, build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
lkv=./build/layerkv

run=$(mktemp -d /tmp/layerkv-demo.XXXXXX)
ep="ipc://$run/clients.sock" # a private endpoint: no port to collide with
srv=""
cleanup() {
    if [ -n "$srv" ]; then kill "$srv" 2>/dev/null || true; wait "$srv" 2>/dev/null || true; fi
    rm -rf "$run"
}
trap cleanup EXIT

echo "== layerkv serve --listen $ep"
"$lkv" serve --listen "$ep" --metrics-listen none 2>"$run/server.log" &
srv=$!
for _ in $(seq 200); do
    "$lkv" stats --health --server "$ep" --timeout-s 0.2 >/dev/null 2>&1 && break
    if ! kill -0 "$srv" 2>/dev/null; then
        cat "$run/server.log" >&2
        echo "demo: layerkv serve exited before it answered (its messages are above)" >&2
        exit 1
    fi
    sleep 0.1
done
sed 's/^/   /' "$run/server.log"

echo "== layerkv generate --prompt \"$prompt\" --max-tokens $n --temperature 0"
"$lkv" generate --server "$ep" --prompt "$prompt" --max-tokens "$n" --temperature 0
echo

echo "== layerkv stats (excerpt)"
"$lkv" stats --server "$ep" |
    grep -E '^(policy|n_finished|n_steps|kv_blocks_total\.(device|host)|slo_violations\.(ttft|tpot))\b' |
    sed 's/^/   /' || true

kill -TERM "$srv"
wait "$srv"
srv=""
echo "== stopped: $(tail -1 "$run/server.log")"
