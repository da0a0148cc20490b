#!/usr/bin/env python3
"""fake_server.py - a minimal layerkv protocol server written from
docs/protocol.md (pyzmq + msgpack only). It has no model: the completion of
any prompt is the tokens 100, 101, ... with texts "w0 ", "w1 ", ...; the
prompt tokens are its UTF-8 bytes. Used by tests/integration/client_cli.sh to
test `layerkv generate`/`layerkv stats` and tests/interop/client.py without a
real server, and as an executable reading of the protocol.

usage: fake_server.py --listen tcp://127.0.0.1:PORT [--token-delay-ms MS]
Runs until SIGTERM/SIGINT. Prints 'ready' to stdout once bound.
"""
import argparse
import signal
import sys
import time

import msgpack
import zmq

STATUS = {-1: "LKV_ERR_INVALID", -4: "LKV_ERR_UNSUPPORTED", -6: "LKV_ERR_NOTFOUND",
          -9: "LKV_ERR_BUSY", -22: "LKV_ERR_PROTOCOL"}
MAX_FRAME = 1 << 20


class ProtoError(Exception):
    def __init__(self, code, message, rid=None):
        super().__init__(message)
        self.code, self.message, self.rid = code, message, rid


def pack(obj):
    return msgpack.packb(dict(v=1, **obj), use_bin_type=True)


def parse(frame):
    if len(frame) > MAX_FRAME:
        raise ProtoError(-22, "frame of %d bytes exceeds 1 MiB" % len(frame))
    try:
        # the limits keep msgpack from allocating on declared counts
        msg = msgpack.unpackb(frame, raw=False, max_array_len=65536, max_map_len=64,
                              max_str_len=262144, max_bin_len=262144, max_ext_len=262144)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a protocol error
        raise ProtoError(-22, "frame is not valid msgpack: %s" % e)
    if not isinstance(msg, dict):
        raise ProtoError(-22, "a message must be a msgpack map with 'v' and 'type'")
    rid = msg.get("id")
    if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0)
            or (isinstance(rid, str) and 0 < len(rid.encode()) <= 64)):
        rid = None
    if msg.get("v") != 1:
        raise ProtoError(-4 if isinstance(msg.get("v"), int) else -22,
                         "protocol version %r is not supported: this peer speaks 1" % msg.get("v"), rid)
    if not isinstance(msg.get("type"), str):
        raise ProtoError(-1, "missing field 'type'", rid)
    return msg, rid


def int_field(msg, key, lo, hi, default):
    v = msg.get(key)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtoError(-1, "submit: field '%s' = %r must be an integer in [%d, %d]" % (key, v, lo, hi),
                         msg.get("id"))
    return v


class Server:
    def __init__(self, endpoint, delay_ms):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.bind(endpoint)
        self.delay = delay_ms / 1000.0
        self.live = {}  # (identity, id) -> request state
        self.n_finished = 0
        self.started = time.monotonic()
        self.running = True

    def send(self, ident, env, obj):
        try:
            self.sock.send_multipart([ident] + env + [pack(obj)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            # client gone (ROUTER_MANDATORY: EHOSTUNREACH): drop its requests
            for key in [k for k in self.live if k[0] == ident]:
                del self.live[key]

    def error(self, ident, env, rid, code, message):
        self.send(ident, env, {"type": "error", "id": rid, "code": code,
                               "name": STATUS.get(code, "LKV_ERR_INTERNAL"), "message": message})

    def submit(self, ident, env, msg, rid):
        if rid is None:
            raise ProtoError(-1, "submit: missing required field 'id'")
        if (ident, rid) in self.live:
            raise ProtoError(-9, "submit: request id %r already in flight" % (rid,), rid)
        prompt, tokens = msg.get("prompt"), msg.get("tokens")
        if (prompt is None) == (tokens is None):
            raise ProtoError(-1, "submit: exactly one of 'prompt' and 'tokens' must be given", rid)
        if prompt is not None and not isinstance(prompt, str):
            raise ProtoError(-1, "submit: field 'prompt' must be a string", rid)
        if tokens is not None and (not isinstance(tokens, list) or not tokens or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens)):
            raise ProtoError(-1, "submit: field 'tokens' must be a non-empty array of int >= 0", rid)
        max_tokens = int_field(msg, "max_tokens", 1, 65536, 64)
        n_prompt = len(prompt.encode()) + 1 if prompt is not None else len(tokens)
        self.send(ident, env, {"type": "accepted", "id": rid, "n_prompt_tokens": n_prompt})
        self.live[(ident, rid)] = {"env": env, "n": 0, "max": max_tokens, "np": n_prompt,
                                   "stream": msg.get("stream", True) is not False,
                                   "t0": time.monotonic(), "next": time.monotonic()}

    def finish(self, key, reason):
        st = self.live.pop(key)
        ident, rid = key
        out = {"type": "done", "id": rid, "finish_reason": reason, "n_prompt_tokens": st["np"],
               "n_tokens": st["n"], "ttft_ms": 1.0, "tpot_ms": 0.5, "queue_ms": 0.1}
        if not st["stream"]:
            out["text"] = "".join("w%d " % i for i in range(st["n"]))
            out["tokens"] = [100 + i for i in range(st["n"])]
        self.send(ident, st["env"], out)
        self.n_finished += 1

    def handle(self, frames):
        ident, rest = frames[0], frames[1:]
        env = []
        if len(rest) == 2 and rest[0] == b"":
            env, rest = [b""], rest[1:]
        if len(rest) != 1:
            self.error(ident, env, None, -22, "expected exactly one frame per message")
            return
        try:
            msg, rid = parse(rest[0])
            kind = msg["type"]
            if kind == "submit":
                self.submit(ident, env, msg, rid)
            elif kind == "cancel":
                if rid is None:
                    raise ProtoError(-1, "cancel: missing required field 'id'")
                if (ident, rid) not in self.live:
                    raise ProtoError(-6, "cancel: no request %r in flight" % (rid,), rid)
                self.finish((ident, rid), "cancelled")
            elif kind == "health":
                reply = {"type": "health_reply", "status": "ok", "model": "fake",
                         "version": "fake_server.py", "uptime_s": time.monotonic() - self.started,
                         "n_running": len(self.live), "n_waiting": 0}
                if rid is not None:
                    reply["id"] = rid
                self.send(ident, env, reply)
            elif kind == "stats":
                reply = {"type": "stats_reply", "stats": {
                    "policy": "fake", "n_running": len(self.live), "n_finished": self.n_finished,
                    "n_waiting": 0,
                    "kv_blocks_used": {"device": len(self.live), "host": 0}}}
                if rid is not None:
                    reply["id"] = rid
                self.send(ident, env, reply)
            else:
                raise ProtoError(-4, "unknown message type '%s' (see docs/protocol.md)" % kind[:32], rid)
        except ProtoError as e:
            self.error(ident, env, e.rid, e.code, e.message)

    def tick(self):
        now = time.monotonic()
        for key in list(self.live):
            st = self.live.get(key)
            if st is None or now < st["next"]:
                continue
            if st["n"] >= st["max"]:
                self.finish(key, "length")
                continue
            if st["stream"]:
                self.send(key[0], st["env"], {"type": "token", "id": key[1], "index": st["n"],
                                              "token": 100 + st["n"], "text": "w%d " % st["n"]})
            st["n"] += 1
            st["next"] = now + self.delay

    def run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while self.running:
            if dict(poller.poll(1 if self.live else 50)).get(self.sock):
                while True:
                    try:
                        frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frames)
            self.tick()
        self.sock.close(0)
        self.ctx.term()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--token-delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    srv = Server(args.listen, args.token_delay_ms)

    def stop(*_):
        srv.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    srv.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
