#!/usr/bin/env python3
"""make_dummy_gguf.py - write a seeded random-weight Llama model as GGUF (f32)
for decode benchmarks, so layerkv and llama.cpp run the identical model.

Default shape is the llama2.c "110M" Llama: dim 768, 12 layers, 12 heads,
vocab 32000, FFN hidden 2048, tied input/output embedding (~110M params,
~440 MB in f32). The tokenizer is the bundled stories260K sentencepiece vocab
(512 pieces) padded with unused pieces to the requested vocab size, so real
text tokenizes the same way in both engines. The embedding rows of <s> and
</s> are zero, so their logits are exactly 0 and greedy decoding of the
random model never stops early on EOS/BOS.

Usage: python3 bench/make_dummy_gguf.py OUT.gguf [--dim 768] [--layers 12]
       [--heads 12] [--kv-heads 12] [--hidden 2048] [--vocab 32000]
       [--untied] [--dtype f32|f16] [--seed 1]
Needs: pip install gguf numpy
"""
import argparse
import itertools
import os
import string
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_dummy_gguf.py: the gguf package is missing; run "
             "'pip install gguf'")

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_VOCAB = os.path.join(HERE, "..", "models", "stories260K",
                          "stories260K.gguf")


def base_vocab():
    r = gguf.GGUFReader(BASE_VOCAB)

    def arr(name):
        f = r.fields[name]
        return [f.parts[i] for i in f.data]

    toks = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in arr("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in arr("tokenizer.ggml.token_type")]
    return toks, scores, types


def padded_vocab(n):
    toks, scores, types = base_vocab()
    if n < len(toks):
        sys.exit(f"make_dummy_gguf.py: --vocab must be >= {len(toks)}")
    seen = set(toks)
    low = min(scores) - 1.0
    gen = ("\u2581" + "".join(p)
           for L in itertools.count(3)
           for p in itertools.product(string.ascii_lowercase, repeat=L))
    while len(toks) < n:
        t = next(gen)
        if t in seen:
            continue
        seen.add(t)
        toks.append(t)
        scores.append(low - len(toks))
        types.append(int(gguf.TokenType.NORMAL))
    return toks, scores, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--untied", action="store_true",
                    help="write a separate output.weight")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                    help="dtype of the 2-D weights (norms stay f32)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    kvh = a.kv_heads or a.heads
    if a.dim % a.heads or a.heads % kvh:
        sys.exit("make_dummy_gguf.py: dim must divide by heads and heads by "
                 "kv-heads")
    hd = a.dim // a.heads
    wdt = np.float32 if a.dtype == "f32" else np.float16
    rng = np.random.default_rng(a.seed)

    def mat(rows, cols, std=0.02):
        return (rng.standard_normal((rows, cols), dtype=np.float32)
                * std).astype(wdt)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("layerkv-dummy")
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.dim)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.hidden)
    w.add_head_count(a.heads)
    w.add_head_count_kv(kvh)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0 if a.dtype == "f32" else 1)
    toks, scores, types = padded_vocab(a.vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    emb = mat(a.vocab, a.dim, 1.0 if not a.untied else 0.02)
    emb[1:3, :] = 0  # <s>, </s>: logit exactly 0 (see docstring)
    w.add_tensor("token_embd.weight", emb)
    ones = np.ones(a.dim, dtype=np.float32)
    for l in range(a.layers):
        p = f"blk.{l}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "attn_q.weight", mat(a.dim, a.dim))
        w.add_tensor(p + "attn_k.weight", mat(kvh * hd, a.dim))
        w.add_tensor(p + "attn_v.weight", mat(kvh * hd, a.dim))
        w.add_tensor(p + "attn_output.weight", mat(a.dim, a.dim))
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", mat(a.hidden, a.dim))
        w.add_tensor(p + "ffn_up.weight", mat(a.hidden, a.dim))
        w.add_tensor(p + "ffn_down.weight", mat(a.dim, a.hidden))
    w.add_tensor("output_norm.weight", ones)
    if a.untied:
        out = mat(a.vocab, a.dim)
        out[1:3, :] = 0
        w.add_tensor("output.weight", out)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    n_params = (a.vocab * a.dim * (2 if a.untied else 1) +
                a.layers * (2 * a.dim * a.dim + 2 * kvh * hd * a.dim +
                            3 * a.hidden * a.dim + 2 * a.dim) + a.dim)
    print(f"wrote {a.out}: {n_params / 1e6:.1f}M params, "
          f"{os.path.getsize(a.out) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
