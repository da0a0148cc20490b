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
tag=interop_python
# shellcheck source=serve_common.bash
. "$(dirname "$0")/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"

ep="tcp://127.0.0.1:$(free_port)"
start_bg serve "$lkv" serve --model "$model" --listen "$ep" \
    --metrics-listen "127.0.0.1:$(free_port)"
srv_pid=$last_pid
wait_health "$ep" "$srv_pid"

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
