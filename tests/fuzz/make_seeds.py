#!/usr/bin/env python3
"""make_seeds.py OUTDIR - write one seed frame per message type of
docs/protocol.md (plus a few malformed ones) for the fuzz_wire corpus.
Needs the msgpack module (Debian python3-msgpack)."""
import os
import sys

import msgpack


def frames():
    v = {"v": 1}
    yield "submit_prompt", {**v, "type": "submit", "id": "req-1", "prompt": "Once upon a time",
                            "max_tokens": 32, "temperature": 0.0, "top_k": 40, "top_p": 0.9,
                            "seed": 7, "stop_ids": [2], "ttft_slo_ms": 200.0,
                            "tpot_slo_ms": 50.0, "stream": True}
    yield "submit_tokens", {**v, "type": "submit", "id": 5, "tokens": [1, 2, 3, 400]}
    yield "cancel", {**v, "type": "cancel", "id": 5}
    yield "health", {**v, "type": "health", "id": 1}
    yield "stats", {**v, "type": "stats"}
    yield "accepted", {**v, "type": "accepted", "id": 5, "n_prompt_tokens": 4}
    yield "token", {**v, "type": "token", "id": 5, "index": 0, "token": 9, "text": " th\u00e9"}
    yield "done", {**v, "type": "done", "id": 5, "finish_reason": "length", "n_prompt_tokens": 4,
                   "n_tokens": 2, "ttft_ms": 1.5, "tpot_ms": 0.5, "queue_ms": 0.1,
                   "text": "ab", "tokens": [1, 2]}
    yield "done_error", {**v, "type": "done", "id": "x", "finish_reason": "error",
                         "error_code": -40, "error_name": "LKV_ERR_DEVICE", "error_message": "m"}
    yield "error", {**v, "type": "error", "id": None, "code": -1, "name": "LKV_ERR_INVALID",
                    "message": "bad", "retry_after_ms": 100}
    yield "health_reply", {**v, "type": "health_reply", "id": 1, "status": "ok", "model": "m",
                           "version": "layerkv 0.1.0", "uptime_s": 1.0, "n_running": 1,
                           "n_waiting": 0}
    yield "stats_reply", {**v, "type": "stats_reply", "stats": {
        "policy": "layerkv", "kv_blocks_used": {"device": 3, "host": 1},
        "per_layer": [1, 2, 3], "slo": {"ttft": 0.5, "ok": True, "none": None}}}
    yield "hello", {**v, "type": "hello", "rank": 0, "world_size": 1, "instance": 0, "pid": 1,
                    "backend": "cpu", "device_kv_blocks": 64, "host_kv_blocks": 256,
                    "kv_block_bytes": 4096, "link_gbps": 10.0, "version": "layerkv 0.1.0"}
    yield "config", {**v, "type": "config", "model": "m.gguf", "instance": 0, "tp": 1, "pp": 1,
                     "block_size": 16, "device_kv_blocks": 64, "host_kv_blocks": 256,
                     "max_seqs": 8, "max_batch_tokens": 512}
    yield "step_plan", {**v, "type": "step_plan", "step_id": 3,
                        "seqs": [[1, 0, True, [1, 2, 3], 0.0, 0, 1.0, 7], [2, 5, False, [4], 1.0, 40, 0.9, 0]],
                        "appends": [[1, 0, 0, [0, 1]], [1, 1, 1, [2]]],
                        "moves": [[10, 1, 1, 0, 0, 1, [3], [4]], [11, 2, 0, 2, 1, 0, [], []]],
                        "finished": [9]}
    yield "step_result", {**v, "type": "step_result", "step_id": 3, "status": 0,
                          "seqs": [[1, 42, 0], [2, -1, -8]], "moves_done": [10],
                          "moves_failed": [], "step_ns": 1000, "compute_ns": 900,
                          "bytes_d2h": 4096, "bytes_h2d": 0}
    yield "shutdown", {**v, "type": "shutdown", "reason": "bye"}
    yield "unknown_type", {**v, "type": "teleport", "id": 1}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, obj in frames():
        with open(os.path.join(out, name), "wb") as f:
            f.write(msgpack.packb(obj, use_bin_type=True))
    for name, raw in {"bad_c1": b"\xc1", "huge_array": b"\xdd\xff\xff\xff\xff",
                      "huge_map": b"\x81\xa1x\xdf\xff\xff\xff\xff"}.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(raw)


if __name__ == "__main__":
    main()
