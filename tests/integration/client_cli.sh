#!/usr/bin/env bash
# client_cli.sh LAYERKV SRCDIR - `layerkv generate` / `layerkv stats` and the
# Python interop client against tests/interop/fake_server.py (a protocol-only
# server written from docs/protocol.md): streaming output, stats in text and
# JSON, Ctrl-C cancel, unreachable server -> timeout error, bad usage.
# Skips (77) when no python3 with pyzmq + msgpack is available.
set -euo pipefail
lkv=${1:?usage: client_cli.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=client_cli
. "$src/tests/integration/serve_common.bash"

ep="tcp://127.0.0.1:$(free_port)"
start_bg srv "$py" "$src/tests/interop/fake_server.py" --listen "$ep" --token-delay-ms 2
for _ in $(seq 400); do grep -q ready "$tmp/srv.log" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$tmp/srv.log" || fail "fake server did not start: $(cat "$tmp/srv.log")"

# 1. streaming completion: exact text on stdout, stats on stderr
"$lkv" generate --server "$ep" --prompt "Once upon a time" --max-tokens 5 --temperature 0 \
    >"$tmp/gen.out" 2>"$tmp/gen.err" || fail "generate exited $?: $(cat "$tmp/gen.err")"
[ "$(cat "$tmp/gen.out")" = "w0 w1 w2 w3 w4 " ] || fail "generate printed '$(cat "$tmp/gen.out")'"
grep -q "finish length, 17 prompt + 5 generated tokens" "$tmp/gen.err" || fail "stats line: $(cat "$tmp/gen.err")"

# 2. token-id prompt, --quiet, LKV_SERVER
LKV_SERVER="$ep" "$lkv" generate --tokens 1,2,3 -n 2 -q >"$tmp/gen2.out" 2>"$tmp/gen2.err" || fail "generate --tokens"
[ "$(cat "$tmp/gen2.out")" = "w0 w1 " ] || fail "generate --tokens printed '$(cat "$tmp/gen2.out")'"
[ ! -s "$tmp/gen2.err" ] || fail "--quiet printed: $(cat "$tmp/gen2.err")"

# 3. stats: text and JSON
"$lkv" stats --server "$ep" >"$tmp/stats.txt" || fail "stats exited $?"
grep -Eq '^status +ok$' "$tmp/stats.txt" || fail "stats text: $(cat "$tmp/stats.txt")"
grep -Eq '^kv_blocks_used.device +0$' "$tmp/stats.txt" || fail "stats text lacks kv_blocks_used.device"
"$lkv" stats --server "$ep" --json >"$tmp/stats.json" || fail "stats --json exited $?"
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["health"]["status"]=="ok"; assert d["stats"]["n_finished"]>=2, d' \
    "$tmp/stats.json" || fail "stats --json: $(cat "$tmp/stats.json")"

# 4. Ctrl-C cancels on the server: exit 1, finish cancelled
"$lkv" generate --server "$ep" --prompt x --max-tokens 5000 >"$tmp/gen3.out" 2>"$tmp/gen3.err" &
gen_pid=$!
for _ in $(seq 200); do [ -s "$tmp/gen3.out" ] && break; sleep 0.05; done  # streaming
kill -INT "$gen_pid"
set +e; wait "$gen_pid"; rc=$?; set -e
[ "$rc" = 1 ] || fail "cancelled generate exited $rc"
grep -q "finish cancelled" "$tmp/gen3.err" || fail "cancel: $(cat "$tmp/gen3.err")"

# 5. the interop client against the same server
"$py" "$src/tests/interop/client.py" --server "$ep" --timeout-s 10 >"$tmp/py.out" 2>"$tmp/py.err" \
    || fail "interop client: $(cat "$tmp/py.err")"

# 6. nobody listening: a clear timeout error, quickly
dead=$(free_port)
start=$(date +%s%N)
set +e; "$lkv" generate --server "tcp://127.0.0.1:$dead" --prompt x --timeout-s 0.5 >"$tmp/gen4.out" 2>"$tmp/gen4.err"; rc=$?; set -e
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$rc" = 1 ] || fail "dead server: exit $rc"
grep -q "LKV_ERR_TIMEOUT" "$tmp/gen4.err" || fail "dead server: $(cat "$tmp/gen4.err")"
[ "$ms" -lt 5000 ] || fail "dead server took $ms ms"
set +e; "$lkv" stats --server "tcp://127.0.0.1:$dead" --timeout-s 0.3 >/dev/null 2>"$tmp/st4.err"; rc=$?; set -e
[ "$rc" = 1 ] || fail "stats on dead server: exit $rc"

# 7. liblayerkv.so is self-contained: an application built against it alone
so="${LKV_BUILD_DIR:-}/liblayerkv.so"
if [ -f "$so" ] && command -v cc >/dev/null 2>&1; then
    san=""
    if ldd "$so" 2>/dev/null | grep -q libasan ||
        grep -q '^LKV_SANITIZE:BOOL=ON' "$(dirname "$so")/CMakeCache.txt" 2>/dev/null; then
        san="-fsanitize=address,undefined"
    fi
    cc -std=gnu11 $san -I"$src" -I"$src/include" "$src/tests/interop/app_generate.c" \
        -L"$(dirname "$so")" -llayerkv -Wl,-rpath,"$(dirname "$so")" -o "$tmp/app" \
        || fail "cannot link an application against $so"
    [ "$("$tmp/app" "$ep" hi 3)" = "w0 w1 w2 " ] || fail "app_generate output"
else
    echo "client_cli: no liblayerkv.so in \$LKV_BUILD_DIR; shared-library check skipped" >&2
fi

# 8. usage errors exit 2
set +e
"$lkv" generate --server "$ep" >/dev/null 2>&1; r1=$?
"$lkv" generate --server "$ep" --prompt x --top-p 2 >/dev/null 2>&1; r2=$?
"$lkv" stats --bogus >/dev/null 2>&1; r3=$?
set -e
[ "$r1$r2$r3" = "222" ] || fail "usage errors exited $r1 $r2 $r3"
echo "client_cli: ok"
