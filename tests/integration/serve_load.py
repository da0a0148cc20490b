#!/usr/bin/env python3
"""serve_load.py - a fixed arrival sequence against a layerkv server
(docs/protocol.md only: pyzmq + msgpack), used by serve_queueing.sh and
serve_metrics.sh.

Request i arrives at i * interval_ms; its prompt is prompt_tokens token ids
drawn from a seeded RNG (the same sequence for the same --seed), greedy,
stream=false. Every request gets its own DEALER (one client each). Prints
one JSON object: per-request finish_reason, n_tokens, tokens, queue_ms,
ttft_ms, plus the means. Optionally scrapes a Prometheus endpoint every
--scrape-ms while the load runs and reports, per sample name+labels, the
maximum value seen (parsed with prometheus_client's text parser).

exit 0 when every request finished (any reason but "error"), 1 otherwise.
"""
import argparse
import json
import random
import sys
import time
import urllib.request

import msgpack
import zmq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--prompt-tokens", type=int, default=300)
    ap.add_argument("--prompt-jitter", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--interval-ms", type=float, default=20)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout-s", type=float, default=120)
    ap.add_argument("--ttft-slo-ms", type=float, default=0)
    ap.add_argument("--metrics-url", default="")
    ap.add_argument("--scrape-ms", type=float, default=50)
    ap.add_argument("--out", default="-")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    prompts = []
    for _ in range(args.n):
        n = args.prompt_tokens + (rng.randint(0, args.prompt_jitter) if args.prompt_jitter else 0)
        prompts.append([1] + [rng.randrange(3, args.vocab) for _ in range(n - 1)])

    ctx = zmq.Context()
    socks = []
    poller = zmq.Poller()
    res = [None] * args.n
    t0 = time.monotonic()
    next_i = 0
    done = 0
    scrape_max = {}
    parse = None
    if args.metrics_url:
        from prometheus_client.parser import text_string_to_metric_families as parse
    last_scrape = 0.0
    deadline = t0 + args.timeout_s
    n_scrapes = 0

    def scrape():
        nonlocal n_scrapes
        body = urllib.request.urlopen(args.metrics_url, timeout=5).read().decode()
        for fam in parse(body):
            for s in fam.samples:
                key = s.name + "{" + ",".join("%s=%s" % kv for kv in sorted(s.labels.items())
                                              if kv[0] != "model_name") + "}"
                scrape_max[key] = max(scrape_max.get(key, 0.0), s.value)
        n_scrapes += 1

    while done < args.n:
        now = time.monotonic()
        if now > deadline:
            print("serve_load: timeout: %d of %d requests finished" % (done, args.n), file=sys.stderr)
            break
        while next_i < args.n and now - t0 >= next_i * args.interval_ms / 1000.0:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(args.server)
            req = {"v": 1, "type": "submit", "id": next_i, "tokens": prompts[next_i],
                   "max_tokens": args.max_tokens, "temperature": 0, "stream": False}
            if args.ttft_slo_ms > 0:
                req["ttft_slo_ms"] = args.ttft_slo_ms
            s.send(msgpack.packb(req, use_bin_type=True))
            poller.register(s, zmq.POLLIN)
            socks.append(s)
            next_i += 1
        if parse is not None and (now - last_scrape) * 1000 >= args.scrape_ms:
            last_scrape = now
            scrape()
        for s, _ in poller.poll(5):
            m = msgpack.unpackb(s.recv(), raw=False)
            i = m.get("id")
            if m.get("type") == "done":
                res[i] = m
                done += 1
                poller.unregister(s)
            elif m.get("type") == "error":
                res[i] = {"finish_reason": "error", "error": m}
                done += 1
                poller.unregister(s)
    if parse is not None:
        scrape()
    for s in socks:
        s.close(0)
    ctx.term()

    ok = all(r is not None and r.get("finish_reason") != "error" for r in res)
    fin = [r for r in res if r is not None and "queue_ms" in r]
    out = {
        "n": args.n,
        "finished": sum(1 for r in res if r is not None),
        "ok": ok,
        "mean_queue_ms": sum(r["queue_ms"] for r in fin) / max(1, len(fin)),
        "mean_ttft_ms": sum(r["ttft_ms"] for r in fin) / max(1, len(fin)),
        "wall_s": time.monotonic() - t0,
        "requests": [None if r is None else {
            "finish_reason": r.get("finish_reason"), "n_tokens": r.get("n_tokens"),
            "tokens": r.get("tokens"), "queue_ms": r.get("queue_ms"), "ttft_ms": r.get("ttft_ms"),
            "error": r.get("error", {}).get("message") if "error" in r else r.get("error_message")}
            for r in res],
        "scrapes": n_scrapes,
        "metrics_max": scrape_max,
    }
    text = json.dumps(out)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
    if not ok:
        bad = [(i, r) for i, r in enumerate(res) if r is None or r.get("finish_reason") == "error"]
        print("serve_load: %d request(s) failed, first: %r" % (len(bad), bad[0]), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
