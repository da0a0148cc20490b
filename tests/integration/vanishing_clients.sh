#!/usr/bin/env bash
# vanishing_clients.sh LAYERKV SRCDIR - issue 4 "done when" item 5: 1,000
# clients (tests/interop/vanish.py) each start a streaming completion on
# `layerkv serve` and disconnect mid-stream; afterwards stats must show no
# running request and zero KV blocks held, and the server must still serve.
# Skips (77) when `layerkv serve` is not built or python lacks pyzmq/msgpack.
# LKV_VANISH_CLIENTS overrides the client count.
set -euo pipefail
lkv=${1:?usage: vanishing_clients.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
model="$src/models/stories260K/stories260K.gguf"
py=""
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import zmq, msgpack' >/dev/null 2>&1; then py=$p; break; fi
done
[ -n "$py" ] || { echo "vanishing_clients: no python3 with pyzmq+msgpack; skipping" >&2; exit 77; }
"$lkv" serve --help >/dev/null 2>&1 || { echo "vanishing_clients: layerkv serve not built yet; skipping" >&2; exit 77; }

tmp=$(mktemp -d /tmp/lkv-vanish.XXXXXX)
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
    echo "vanishing_clients: FAIL: $*" >&2
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
"$py" "$src/tests/interop/vanish.py" --server "$ep" --clients "${LKV_VANISH_CLIENTS:-1000}" \
    --batch 100 --max-tokens 128 --settle-s 60 --timeout-s 120 || fail "vanish.py"
kill -0 "$srv_pid" 2>/dev/null || fail "server died"
"$lkv" stats --server "$ep" >&2 || true
echo "vanishing_clients: ok"
