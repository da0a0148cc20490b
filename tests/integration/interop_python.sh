#!/usr/bin/env bash
# interop_python.sh LAYERKV SRCDIR - issue 4 "done when" item 2: the Python
# client in tests/interop/client.py (written only from docs/protocol.md with
# pyzmq + msgpack) streams a completion from `layerkv serve` on the bundled
# model and gets error replies for malformed requests; `layerkv generate` and
# `layerkv stats` work against the same server.
# Skips (77) when `layerkv serve` is not built or python lacks pyzmq/msgpack.
set -euo pipefail
lkv=${1:?usage: interop_python.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
model="$src/models/stories260K/stories260K.gguf"
py=""
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import zmq, msgpack' >/dev/null 2>&1; then py=$p; break; fi
done
[ -n "$py" ] || { echo "interop_python: no python3 with pyzmq+msgpack; skipping" >&2; exit 77; }
"$lkv" serve --help >/dev/null 2>&1 || { echo "interop_python: layerkv serve not built yet; skipping" >&2; exit 77; }

tmp=$(mktemp -d /tmp/lkv-interop.XXXXXX)
srv_pid=""
cleanup() {
    if [ -n "$srv_pid" ]; then
        kill "$srv_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$srv_pid" 2>/dev/null || true
        wait "$srv_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "interop_python: FAIL: $*" >&2
    echo "--- server log (tail) ---" >&2
    tail -30 "$tmp/serve.log" >&2 || true
    exit 1
}

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
mport=$(free_port)
ep="tcp://127.0.0.1:$port"
"$lkv" serve --model "$model" --listen "$ep" --metrics-listen "127.0.0.1:$mport" >"$tmp/serve.log" 2>&1 &
srv_pid=$!

ready=0
for _ in $(seq 120); do
    kill -0 "$srv_pid" 2>/dev/null || fail "layerkv serve exited early"
    if "$lkv" stats --health --server "$ep" --timeout-s 0.5 >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.25
done
[ "$ready" = 1 ] || fail "server did not answer health within 30 s"

"$py" "$src/tests/interop/client.py" --server "$ep" --prompt "Once upon a time" --max-tokens 24 \
    --timeout-s 60 --text-out "$tmp/py.text" >"$tmp/py.out" 2>"$tmp/py.err" || fail "interop client: $(cat "$tmp/py.err")"
[ -s "$tmp/py.out" ] || fail "interop client streamed no text"
echo "interop_python: python client streamed: $(head -c 120 "$tmp/py.out")" >&2

"$lkv" generate --server "$ep" --prompt "Once upon a time" --max-tokens 24 --temperature 0 \
    >"$tmp/gen.out" 2>"$tmp/gen.err" || fail "layerkv generate: $(cat "$tmp/gen.err")"
# same greedy request, same text (generate adds a final newline)
[ "$(cat "$tmp/gen.out")" = "$(cat "$tmp/py.text")" ] || \
    fail "generate '$(cat "$tmp/gen.out")' != python '$(cat "$tmp/py.text")'"
"$lkv" stats --server "$ep" --json >"$tmp/stats.json" || fail "layerkv stats --json"
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["health"]["status"] in ("ok","starting","draining")' \
    "$tmp/stats.json" || fail "stats --json did not parse: $(cat "$tmp/stats.json")"
kill -0 "$srv_pid" 2>/dev/null || fail "server died during the test"
echo "interop_python: ok"
