#!/usr/bin/env bash
# run_worker_protocol.sh - `layerkv worker` as a separate process driven by a
# coordinator written in Python from docs/protocol.md §7 alone (pyzmq +
# msgpack): hello, config for stories260K, prefill + greedy decode of the
# golden prompt, a stream of the offloaded layer (offload, stage), junk that
# must not stop it, shutdown and a clean exit. Skips (77) without pyzmq.
# usage: run_worker_protocol.sh LAYERKV_BINARY SOURCE_DIR
set -u
bin=${1:?layerkv binary}
src=${2:?source dir}
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -c 'import zmq, msgpack' 2>/dev/null || { echo "skip: needs python3 zmq + msgpack"; exit 77; }

"$py" - "$bin" "$src/models/stories260K/stories260K.gguf" <<'PYEOF'
import subprocess, sys
import msgpack, zmq

binary, model = sys.argv[1], sys.argv[2]
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
port = router.bind_to_random_port("tcp://127.0.0.1")
proc = subprocess.Popen([binary, "worker", "--coordinator",
                         f"tcp://127.0.0.1:{port}", "--threads", "1",
                         "--connect-timeout-s", "20"])
poller = zmq.Poller()
poller.register(router, zmq.POLLIN)

def recv():
    if not poller.poll(20000):
        proc.kill()
        sys.exit("FAIL: no message from the worker within 20 s")
    ident, body = router.recv_multipart()
    return ident, msgpack.unpackb(body, raw=False)

def send(ident, msg):
    msg = dict(msg, v=1)
    router.send_multipart([ident, msgpack.packb(msg, use_bin_type=True)])

def check(cond, what):
    if not cond:
        proc.kill()
        sys.exit("FAIL: " + what)
    print("ok   " + what)

ident, hello = recv()
check(hello.get("type") == "hello" and hello.get("rank") == 0, "hello")
send(ident, {"type": "config", "model": model, "tp": 1, "pp": 1,
             "block_size": 16, "device_kv_blocks": 32, "host_kv_blocks": 32,
             "max_seqs": 4, "max_batch_tokens": 64})

golden = [432, 392, 412, 444, 432, 263, 415, 414]
prompt = [1, 274, 287, 269, 345, 400, 428]
# prefill: layer l in device block l; layer 3 offloaded to host block 0
plan = {"type": "step_plan", "step_id": 1,
        "seqs": [[5, 0, True, prompt, 0.0, 0, 1.0, 0]],
        "appends": [[5, l, 0, [l]] for l in range(5)],
        "moves": [[100, 5, 3, 0, 0, 1, [3], [0]]], "finished": []}
send(ident, plan)
_, res = recv()
check(res.get("type") == "step_result" and res["seqs"][0][1] == golden[0]
      and 100 in res["moves_done"] and res["bytes_d2h"] > 0,
      "prefill step: golden token, layer 3 offloaded")
toks = [golden[0]]
for i in range(1, len(golden)):
    pos = len(prompt) + i - 1
    # stream layer 3 into staging block 20 every step
    plan = {"type": "step_plan", "step_id": 1 + i,
            "seqs": [[5, pos, True, [toks[-1]], 0.0, 0, 1.0, 0]],
            "appends": [], "moves": [[100 + i, 5, 3, 2, 1, 0, [0], [20]]],
            "finished": []}
    send(ident, plan)
    _, res = recv()
    if res["seqs"][0][2] != 0 or (100 + i) not in res["moves_done"]:
        check(False, f"decode step {i}: {res}")
    toks.append(res["seqs"][0][1])
check(toks == golden, "streamed decode reproduces the golden tokens")

# junk and a malformed plan: the worker may answer with `error` or drop
# them, but must keep serving
router.send_multipart([ident, b"\xc1junk"])
send(ident, {"type": "step_plan", "step_id": 99,
             "seqs": [[5, 1]], "appends": [], "moves": [], "finished": []})
send(ident, {"type": "step_plan", "step_id": 100, "finished": [5]})
while True:
    _, res = recv()
    if res.get("type") != "error":
        break
check(res.get("type") == "step_result" and res.get("step_id") == 100
      and res.get("status") == 0, "still serving after junk; finish")
send(ident, {"type": "shutdown", "reason": "test"})
try:
    rc = proc.wait(timeout=20)
except subprocess.TimeoutExpired:
    proc.kill()
    sys.exit("FAIL: worker did not exit after shutdown")
check(rc == 0, "worker exits 0 after shutdown")
router.close()
ctx.term()
PYEOF
