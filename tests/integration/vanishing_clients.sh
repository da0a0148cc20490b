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
tag=vanishing_clients
# shellcheck source=serve_common.bash
. "$(dirname "$0")/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"

ep="tcp://127.0.0.1:$(free_port)"
start_bg serve "$lkv" serve --model "$model" --listen "$ep" \
    --metrics-listen "127.0.0.1:$(free_port)"
srv_pid=$last_pid
wait_health "$ep" "$srv_pid"
"$py" "$src/tests/interop/vanish.py" --server "$ep" --clients "${LKV_VANISH_CLIENTS:-1000}" \
    --batch 100 --max-tokens 128 --settle-s 60 --timeout-s 120 || fail "vanish.py"
kill -0 "$srv_pid" 2>/dev/null || fail "server died"
"$lkv" stats --server "$ep" >&2 || true
echo "$tag: ok"
