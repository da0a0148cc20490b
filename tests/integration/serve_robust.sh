#!/usr/bin/env bash
# serve_robust.sh LAYERKV SRCDIR - issue 4 robustness against a real
# `layerkv serve`: malformed msgpack, a non-map, wrong types, unknown kinds,
# missing fields, a wrong version, oversized frames (2 MiB: error reply;
# 6 MiB: connection dropped before reading) and arrays, a map32 header
# declaring 4 billion entries, multi-frame messages, prompts longer than the
# context, invalid token ids, bad sampling parameters, too many stop ids,
# duplicate ids, cancel of an unknown id. Every request that can be answered
# gets an `error` with the expected code and a message; afterwards the
# server still completes a request, holds no KV blocks and exits 0 on
# SIGTERM (under ASan: no leak).
set -euo pipefail
lkv=${1:?usage: serve_robust.sh LAYERKV SRCDIR}
src=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
tag=serve_robust
. "$src/tests/integration/serve_common.bash"
model="$src/models/stories260K/stories260K.gguf"

port=$(free_port)
ep="tcp://127.0.0.1:$port"
start_bg serve "$lkv" serve --model "$model" --listen "$ep" --metrics-listen none --threads 1
srv=$last_pid
wait_health "$ep" "$srv"

"$py" - "$ep" <<'PYEOF' || fail "robustness checks failed"
import struct, sys, time
import msgpack, zmq

ep = sys.argv[1]
ctx = zmq.Context()

def sock():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(ep)
    return s

def recv(s, timeout_ms=10000):
    assert s.poll(timeout_ms), "no reply within %d ms" % timeout_ms
    frames = s.recv_multipart()
    assert len(frames) == 1, "server sent %d frames" % len(frames)
    return msgpack.unpackb(frames[0], raw=False)

def expect(raw, name, want_id="__any__", frames=None):
    s = sock()
    if frames is not None:
        s.send_multipart(frames)
    else:
        s.send(raw if isinstance(raw, bytes) else msgpack.packb(raw, use_bin_type=True))
    m = recv(s)
    s.close(0)
    assert m.get("type") == "error", "expected an error for %r, got %r" % (raw if frames is None else frames, m)
    assert m.get("name") == name, "expected %s, got %r" % (name, m)
    assert isinstance(m.get("message"), str) and len(m["message"]) > 10, m
    if want_id != "__any__":
        assert m.get("id") == want_id, "id %r echoed as %r" % (want_id, m.get("id"))
    print("serve_robust: %-20s %s" % (name, m["message"][:100]), file=sys.stderr)

sub = lambda **kw: dict({"v": 1, "type": "submit", "id": "r", "prompt": "hi", "max_tokens": 4}, **kw)
expect(b"\xc1\x00", "LKV_ERR_PROTOCOL", None)                     # not msgpack
expect(msgpack.packb([1, 2, 3]), "LKV_ERR_PROTOCOL", None)        # not a map
expect(b"\xdf\xff\xff\xff\xff", "LKV_ERR_PROTOCOL", None)          # map32 of 4G entries
expect(b"\xdd\xff\xff\xff\xff", "LKV_ERR_PROTOCOL", None)          # array32 of 4G
expect(msgpack.packb({"v": 1, "type": "submit", "id": 1, "tokens": [1] * 70000}), "LKV_ERR_PROTOCOL")
expect(msgpack.packb(sub()) + b"\x00", "LKV_ERR_PROTOCOL")          # trailing byte
expect(b"\x80" + b"\xc0" * (2 << 20), "LKV_ERR_PROTOCOL")          # 2 MiB frame
expect({"v": 1, "type": "frobnicate", "id": 3}, "LKV_ERR_UNSUPPORTED")
expect({"v": 2, "type": "submit", "id": 3, "prompt": "x"}, "LKV_ERR_UNSUPPORTED")
expect({"type": "submit", "id": 3, "prompt": "x"}, "LKV_ERR_PROTOCOL")
expect(sub(tokens="oops", prompt=None), "LKV_ERR_INVALID", "r")
expect({"v": 1, "type": "submit", "id": "r"}, "LKV_ERR_INVALID", "r")  # neither prompt nor tokens
expect(sub(tokens=[1, 2]), "LKV_ERR_INVALID", "r")                  # both
expect({"v": 1, "type": "submit", "prompt": "x"}, "LKV_ERR_INVALID")   # no id
expect(sub(max_tokens="many"), "LKV_ERR_INVALID", "r")
expect(sub(max_tokens=0), "LKV_ERR_INVALID", "r")
expect(sub(temperature=-1.0), "LKV_ERR_INVALID", "r")
expect(sub(top_p=2.0), "LKV_ERR_INVALID", "r")
expect(sub(top_k=-3), "LKV_ERR_INVALID", "r")
expect(sub(stream="yes"), "LKV_ERR_INVALID", "r")
expect(sub(prompt=None, tokens=[1, 600, 2]), "LKV_ERR_INVALID", "r")   # id >= vocab 512
expect(sub(prompt=None, tokens=[1, -5]), "LKV_ERR_INVALID", "r")
expect(sub(prompt=None, tokens=[7] * 3000), "LKV_ERR_TOOLONG", "r")
expect(sub(prompt="once " * 5000), "LKV_ERR_TOOLONG", "r")
expect(sub(stop_ids=list(range(9))), "LKV_ERR_INVALID", "r")
expect(sub(prompt=b"\xff\xfe"), "LKV_ERR_INVALID", "r")              # bin, not str
expect({"v": 1, "type": "cancel", "id": "nope"}, "LKV_ERR_NOTFOUND", "nope")
expect(None, "LKV_ERR_PROTOCOL", frames=[msgpack.packb(sub()), b"x"])  # 2 frames

# a 6 MiB frame exceeds the socket cap: the connection is dropped, the
# server survives
s = sock()
s.send(b"\x80" * (6 << 20))
time.sleep(0.3)
s.close(0)

# duplicate id while the first is in flight
s = sock()
s.send(msgpack.packb(sub(id="dup", max_tokens=200)))
s.send(msgpack.packb(sub(id="dup", max_tokens=200)))
seen_err = False
while True:
    m = recv(s)
    if m["type"] == "error":
        assert m["name"] == "LKV_ERR_BUSY" and m["id"] == "dup", m
        seen_err = True
    if m["type"] == "done":
        break
assert seen_err, "duplicate id was not refused"
s.close(0)

# still serving
s = sock()
s.send(msgpack.packb(sub(id=42, prompt="Once upon a time", max_tokens=8, temperature=0)))
while True:
    m = recv(s)
    if m["type"] in ("done", "error"):
        break
assert m["type"] == "done" and m["n_tokens"] == 8, m
s.close(0)
ctx.term()
print("serve_robust: all malformed requests answered; server still serves", file=sys.stderr)
PYEOF

for _ in $(seq 50); do
    [ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values()) + s["n_live"]')" = 0 ] && break
    sleep 0.1
done
[ "$(stats_field "$ep" 'sum(s["kv_blocks_used"].values()) + s["n_live"]')" = 0 ] || fail "blocks or requests still held"
stop_bg "$srv"
[ "$stop_rc" = 0 ] || fail "serve exited $stop_rc on SIGTERM"
echo "$tag: ok"
