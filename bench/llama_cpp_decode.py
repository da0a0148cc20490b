#!/usr/bin/env python3
"""llama_cpp_decode.py - greedy single-stream decode speed of llama.cpp
(through llama-cpp-python) on a GGUF model, for bench/decode_bench.sh.

Evaluates the prompt (BOS + tokens), then decodes exactly --tokens tokens one
at a time with greedy argmax (no stop tokens, so the count is exact), and
prints one machine-readable line:

  llama.cpp: prompt_tokens=P decode_tokens=N decode_s=S tok_s=R clock=perf|wall

decode_s is llama.cpp's own eval time for the decode steps (llama_perf
context counters) when the binding exposes them, else the wall time of the
eval calls. Needs: pip install llama-cpp-python numpy
"""
import argparse
import sys
import time

try:
    import llama_cpp
    import numpy as np
except ImportError as e:
    sys.exit(f"llama_cpp_decode.py: {e}; run 'pip install llama-cpp-python'")


def perf_counters(llm):
    try:
        d = llama_cpp.llama_perf_context(llm._ctx.ctx)
        return float(d.t_eval_ms), int(d.n_eval)
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=1024)
    a = ap.parse_args()

    llm = llama_cpp.Llama(model_path=a.model, n_threads=a.threads,
                          n_threads_batch=a.threads, n_ctx=a.ctx,
                          n_batch=512, verbose=False)
    toks = llm.tokenize(a.prompt.encode("utf-8"), add_bos=True)
    if len(toks) + a.tokens + 1 > a.ctx:
        sys.exit("llama_cpp_decode.py: prompt + tokens exceed --ctx")
    llm.eval(toks)
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    before = perf_counters(llm)
    wall = 0.0
    for _ in range(a.tokens):
        t0 = time.perf_counter()
        llm.eval([tok])
        wall += time.perf_counter() - t0
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    after = perf_counters(llm)
    clock = "wall"
    dec_s = wall
    if before is not None and after is not None and after[1] > before[1]:
        n_eval = after[1] - before[1]
        if n_eval == a.tokens:
            dec_s = (after[0] - before[0]) / 1e3
            clock = "perf"
    print(f"llama.cpp: prompt_tokens={len(toks)} decode_tokens={a.tokens} "
          f"decode_s={dec_s:.4f} tok_s={a.tokens / dec_s:.2f} clock={clock} "
          f"wall_s={wall:.4f}")


if __name__ == "__main__":
    main()
