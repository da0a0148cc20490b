#!/usr/bin/env python3
"""client.py - a layerkv client written only from docs/protocol.md, with
nothing but pyzmq and msgpack (Debian: python3-zmq, python3-msgpack).

It checks, against a running server:
  1. health -> health_reply
  2. submit (prompt, streaming) -> accepted, token* (indices 0..n-1, UTF-8
     text), done; the streamed text is printed to stdout
  3. submit (tokens, stream=false) -> accepted, done carrying text + tokens
  4. malformed requests -> error replies: a frame that is not msgpack
     (LKV_ERR_PROTOCOL, id nil), a submit whose 'tokens' is a string
     (LKV_ERR_INVALID naming the field, our id echoed), an unknown type
     (LKV_ERR_UNSUPPORTED), a wrong protocol version
  5. cancel of a long request -> done with finish_reason 'cancelled' (or the
     request had already finished), cancel of an unknown id -> error
  6. stats -> stats_reply with a map
  and that the server still serves afterwards.

usage: client.py --server tcp://127.0.0.1:PORT [--prompt TEXT] [--max-tokens N]
exit 0 when every check passed, 1 otherwise (the failed check on stderr).
"""
import argparse
import sys
import time

import msgpack
import zmq

VERSION = 1
FINISH = {"stop", "length", "cancelled", "error"}


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Client:
    def __init__(self, endpoint, timeout_s):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.timeout_s = timeout_s
        self.backlog = []  # messages read while waiting for something else

    def close(self):
        self.sock.close(0)
        self.ctx.term()

    def send(self, obj):
        self.sock.send(msgpack.packb(obj, use_bin_type=True))

    def send_raw(self, data):
        self.sock.send(data)

    def recv(self):
        if self.backlog:
            return self.backlog.pop(0)
        if not self.sock.poll(int(self.timeout_s * 1000)):
            raise Fail("no message from the server within %.0f s" % self.timeout_s)
        frames = self.sock.recv_multipart()
        check(len(frames) == 1, "server sent %d frames; protocol says one" % len(frames))
        msg = msgpack.unpackb(frames[0], raw=False)
        check(isinstance(msg, dict), "server message is not a map: %r" % (msg,))
        check(msg.get("v") == VERSION, "server message has v=%r" % (msg.get("v"),))
        check(isinstance(msg.get("type"), str), "server message without type: %r" % msg)
        return msg

    def recv_where(self, pred, what):
        """Next message matching pred; others are kept for later."""
        kept = []
        deadline = time.monotonic() + self.timeout_s
        try:
            while time.monotonic() < deadline:
                m = self.recv()
                if pred(m):
                    return m
                kept.append(m)
            raise Fail("timed out waiting for " + what)
        finally:
            self.backlog = kept + self.backlog

    def request_stream(self, rid):
        """All messages of request rid up to and including its terminal one."""
        out = []
        while True:
            m = self.recv_where(lambda x: x.get("id") == rid, "messages of request %r" % (rid,))
            out.append(m)
            if m["type"] in ("done", "error"):
                return out


def check_completion(msgs, rid, max_tokens, stream=True):
    types = [m["type"] for m in msgs]
    if types[-1] == "error":
        e = msgs[-1]
        raise Fail("request %r failed: %s %s" % (rid, e.get("name"), e.get("message")))
    check(types[0] == "accepted", "first message of %r is %s, not accepted" % (rid, types[0]))
    check(isinstance(msgs[0].get("n_prompt_tokens"), int) and msgs[0]["n_prompt_tokens"] >= 0,
          "accepted.n_prompt_tokens missing")
    done = msgs[-1]
    check(done["type"] == "done", "last message is not done")
    check(done.get("finish_reason") in FINISH, "bad finish_reason %r" % done.get("finish_reason"))
    tokens = [m for m in msgs if m["type"] == "token"]
    check(types.count("accepted") == 1, "accepted sent %d times" % types.count("accepted"))
    text = ""
    for i, t in enumerate(tokens):
        check(t.get("index") == i, "token index %r at position %d" % (t.get("index"), i))
        check(isinstance(t.get("token"), int) and t["token"] >= 0, "token id %r" % t.get("token"))
        check(isinstance(t.get("text"), str), "token text is not a str: %r" % t.get("text"))
        text += t["text"]
    if stream:
        check(done.get("n_tokens") == len(tokens),
              "done.n_tokens %r but %d token messages" % (done.get("n_tokens"), len(tokens)))
    else:
        check(not tokens, "stream=false but %d token messages" % len(tokens))
        check(isinstance(done.get("text"), str), "stream=false: done.text missing")
        check(isinstance(done.get("tokens"), list), "stream=false: done.tokens missing")
        check(done.get("n_tokens") == len(done["tokens"]), "done.n_tokens != len(done.tokens)")
        text = done["text"]
    check(0 < done["n_tokens"] <= max_tokens or done["finish_reason"] == "stop",
          "n_tokens %r outside 1..%d" % (done["n_tokens"], max_tokens))
    if done["finish_reason"] == "length":
        check(done["n_tokens"] == max_tokens, "finish 'length' after %d of %d tokens"
              % (done["n_tokens"], max_tokens))
    for k in ("ttft_ms", "tpot_ms", "queue_ms"):
        check(isinstance(done.get(k), (int, float)) and done[k] >= 0, "done.%s = %r" % (k, done.get(k)))
    return text, done


def expect_error(c, rid, code, name, field=None):
    m = c.recv_where(lambda x: x["type"] == "error" and x.get("id") == rid,
                     "an error reply with id %r" % (rid,))
    check(m.get("code") == code, "error code %r, expected %d (%s): %r" % (m.get("code"), code, name, m))
    check(m.get("name") == name, "error name %r, expected %s" % (m.get("name"), name))
    check(isinstance(m.get("message"), str) and m["message"], "error without a message")
    if field:
        check(field in m["message"], "error message %r does not name %r" % (m["message"], field))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--timeout-s", type=float, default=30)
    ap.add_argument("--skip-cancel", action="store_true")
    ap.add_argument("--text-out", help="also write the streamed completion (exact bytes) here")
    args = ap.parse_args()

    c = Client(args.server, args.timeout_s)
    step = "health"
    try:
        c.send({"v": 1, "type": "health", "id": "py-h"})
        h = c.recv_where(lambda x: x["type"] == "health_reply", "health_reply")
        check(h.get("id") == "py-h", "health_reply did not echo the id")
        check(h.get("status") in ("ok", "starting", "draining"), "health status %r" % h.get("status"))

        step = "streaming submit"
        c.send({"v": 1, "type": "submit", "id": "py-1", "prompt": args.prompt,
                "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                "some_future_field": {"ignored": [1, 2]}})
        text, done = check_completion(c.request_stream("py-1"), "py-1", args.max_tokens)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        if args.text_out:
            with open(args.text_out, "w", encoding="utf-8") as f:
                f.write(text)

        step = "non-streaming submit with token ids"
        c.send({"v": 1, "type": "submit", "id": 4242, "tokens": [1], "max_tokens": 4,
                "temperature": 0, "stream": False})
        check_completion(c.request_stream(4242), 4242, 4, stream=False)

        step = "malformed requests"
        c.send_raw(b"\xc1\x00garbage")
        expect_error(c, None, -22, "LKV_ERR_PROTOCOL")
        c.send({"v": 1, "type": "submit", "id": "py-bad", "tokens": "oops"})
        expect_error(c, "py-bad", -1, "LKV_ERR_INVALID", "tokens")
        c.send({"v": 1, "type": "submit", "id": "py-bad2", "prompt": "x", "max_tokens": 0})
        expect_error(c, "py-bad2", -1, "LKV_ERR_INVALID", "max_tokens")
        c.send({"v": 1, "type": "teleport", "id": "py-bad3"})
        expect_error(c, "py-bad3", -4, "LKV_ERR_UNSUPPORTED", "teleport")
        c.send({"v": 99, "type": "health", "id": "py-bad4"})
        expect_error(c, "py-bad4", -4, "LKV_ERR_UNSUPPORTED")
        c.send_raw(b"\xdd\xff\xff\xff\xff")  # array32 of 4 billion elements
        expect_error(c, None, -22, "LKV_ERR_PROTOCOL")

        if not args.skip_cancel:
            step = "cancel"
            c.send({"v": 1, "type": "submit", "id": "py-long", "prompt": args.prompt,
                    "max_tokens": 200, "temperature": 0})
            c.recv_where(lambda x: x.get("id") == "py-long" and x["type"] in ("token", "done", "error"),
                         "first token of py-long")
            c.send({"v": 1, "type": "cancel", "id": "py-long"})
            msgs = c.request_stream("py-long")
            end = msgs[-1]
            check(end["type"] == "done", "cancelled request ended with %r" % end)
            if end["finish_reason"] != "cancelled":
                check(end["finish_reason"] in ("length", "stop"), "finish %r" % end["finish_reason"])
                # it finished before the cancel arrived: the cancel gets NOTFOUND
                expect_error(c, "py-long", -6, "LKV_ERR_NOTFOUND")
            c.send({"v": 1, "type": "cancel", "id": "never-submitted"})
            expect_error(c, "never-submitted", -6, "LKV_ERR_NOTFOUND")

        step = "stats"
        c.send({"v": 1, "type": "stats", "id": 7})
        s = c.recv_where(lambda x: x["type"] == "stats_reply", "stats_reply")
        check(s.get("id") == 7, "stats_reply did not echo the id")
        check(isinstance(s.get("stats"), dict), "stats_reply.stats is not a map")

        step = "still serving"
        c.send({"v": 1, "type": "submit", "id": "py-2", "prompt": args.prompt,
                "max_tokens": 4, "temperature": 0})
        text2, _ = check_completion(c.request_stream("py-2"), "py-2", 4)
        check(text.startswith(text2) or done["finish_reason"] == "stop",
              "greedy completions disagree: %r vs %r" % (text2, text))
    except Fail as e:
        print("interop client: FAILED at %s: %s" % (step, e), file=sys.stderr)
        return 1
    finally:
        c.close()
    print("interop client: all checks passed (%d tokens, finish %s)"
          % (done["n_tokens"], done["finish_reason"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
