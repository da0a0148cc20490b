#!/usr/bin/env python3
"""vanish.py - clients that disappear mid-stream (issue 4, done-when item 5).

Opens N client connections (one DEALER socket, hence one identity, each),
submits a long completion on each, waits until it streams (first token), and
closes the socket abruptly (linger 0) without cancelling. Afterwards the
server must have freed everything: polls `stats` until n_running is 0 and
every tier of kv_blocks_used is 0 (docs/protocol.md §5.6), then checks the
server still completes a normal request. Written from docs/protocol.md only.

usage: vanish.py --server ENDPOINT [--clients 1000] [--batch 100]
                 [--max-tokens 256] [--settle-s 30]
exit 0 on success, 1 with the failed check on stderr.
"""
import argparse
import sys
import time

import msgpack
import zmq


def pack(obj):
    return msgpack.packb(dict(v=1, **obj), use_bin_type=True)


def unpack(frame):
    return msgpack.unpackb(frame, raw=False)


def query_stats(ctx, endpoint, timeout_s):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(pack({"type": "stats", "id": "vanish-stats"}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if s.poll(100):
                m = unpack(s.recv())
                if m.get("type") == "stats_reply":
                    return m.get("stats", {})
        raise RuntimeError("no stats_reply within %.0f s" % timeout_s)
    finally:
        s.close(0)


def blocks_held(stats):
    used = stats.get("kv_blocks_used")
    if isinstance(used, dict):
        return sum(v for v in used.values() if isinstance(v, (int, float)))
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--prompt", default="Once upon a time there was a little girl")
    ap.add_argument("--settle-s", type=float, default=30)
    ap.add_argument("--timeout-s", type=float, default=60)
    args = ap.parse_args()

    ctx = zmq.Context()
    streamed = 0
    t0 = time.monotonic()
    try:
        for start in range(0, args.clients, args.batch):
            n = min(args.batch, args.clients - start)
            socks = []
            for i in range(n):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(args.server)
                s.send(pack({"type": "submit", "id": start + i, "prompt": args.prompt,
                             "max_tokens": args.max_tokens, "temperature": 0}))
                socks.append(s)
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            waiting = set(socks)
            deadline = time.monotonic() + args.timeout_s
            while waiting and time.monotonic() < deadline:
                for s, _ in poller.poll(100):
                    if s not in waiting:
                        continue
                    m = unpack(s.recv())
                    if m.get("type") == "error":
                        raise RuntimeError("server rejected a request: %s %s"
                                           % (m.get("name"), m.get("message")))
                    if m.get("type") in ("token", "done"):
                        waiting.discard(s)
                        poller.unregister(s)
                        s.close(0)  # vanish mid-stream, no cancel
                        streamed += 1
            if waiting:
                raise RuntimeError("%d clients of batch %d saw no token within %.0f s"
                                   % (len(waiting), start // args.batch, args.timeout_s))
        print("vanish: %d clients streamed and vanished in %.1f s"
              % (streamed, time.monotonic() - t0), file=sys.stderr)

        deadline = time.monotonic() + args.settle_s
        stats = {}
        while time.monotonic() < deadline:
            stats = query_stats(ctx, args.server, 10)
            held = blocks_held(stats)
            if stats.get("n_running", 0) == 0 and stats.get("n_waiting", 0) == 0 and held in (0, None):
                break
            time.sleep(0.2)
        held = blocks_held(stats)
        if held is None:
            raise RuntimeError("stats has no kv_blocks_used map: %r" % (stats,))
        if held != 0 or stats.get("n_running", 0) != 0:
            raise RuntimeError("after %.0f s: n_running %r, kv_blocks_used %r"
                               % (args.settle_s, stats.get("n_running"), stats.get("kv_blocks_used")))
        print("vanish: server settled: n_running 0, kv_blocks_used %r"
              % (stats.get("kv_blocks_used"),), file=sys.stderr)

        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(args.server)
        s.send(pack({"type": "submit", "id": "after", "prompt": args.prompt, "max_tokens": 4,
                     "temperature": 0}))
        deadline = time.monotonic() + args.timeout_s
        done = None
        while done is None and time.monotonic() < deadline:
            if s.poll(100):
                m = unpack(s.recv())
                if m.get("type") in ("done", "error"):
                    done = m
        s.close(0)
        if done is None or done.get("type") != "done":
            raise RuntimeError("server did not serve a request afterwards: %r" % (done,))
    except RuntimeError as e:
        print("vanish: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        ctx.destroy(linger=0)  # closes any socket left open by a failure
    print("vanish: ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
