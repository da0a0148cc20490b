#!/usr/bin/env python3
"""make_hf_fixtures.py - build the Hugging Face parity fixtures under
tests/data/hf/ (see tests/data/hf/README.md for what each holds).

Tiny seeded random-weight models (Llama-2 MHA, Llama-3 GQA + llama3 rope
scaling, Mistral, Qwen2 with q/k/v biases) saved by transformers as
safetensors directories, tokenizers trained here with the `tokenizers`
library (no hub access), and HF's float32 logits for fixed prompts plus HF
token ids for the tokenizer test strings in expected.json.

Usage (once, by hand; the outputs are committed, CI only reads them):
    pip install transformers torch tokenizers safetensors
    python3 tools/make_hf_fixtures.py [--out tests/data/hf]
Also writes tests/data/gguf/qwen2-tiny.gguf (the qwen2 fixture as GGUF;
needs `pip install gguf`).
"""
import argparse
import json
import os
import shutil

import torch
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
              r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
             r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# A few KB of varied training text (written for this script).
CORPUS = """
Once upon a time, there was a little girl named Lily. She loved to play
outside in the park with her dog, Max. One day they found a big red ball.
"Can we keep it?" she asked her mom. Her mom smiled and said, "Yes, you can."
The quick brown fox jumps over the lazy dog. Pack my box with five dozen
liquor jugs! How vexingly quick daft zebras jump. Sphinx of black quartz,
judge my vow. I'm sure they'll say we've done what we'd planned; it's fine.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 123 2024 3.14159 1,000,000 -17 +8 50%.
Code: def f(x): return x * 2  # comment
    if (a == b && c != d) { printf("%d\\n", a); }
    for i in range(10): print(i)
Email me at someone@example.com or visit https://example.org/path?q=1&r=2.
Français: le café est très bon, à bientôt ! Ça va ? Où est la gare ?
Deutsch: Größe, Straße, Äpfel und Öl; über alles. Schön!
Español: mañana, niño, ¿qué tal? ¡Hola!
Русский: Привет, как дела? Москва — столица России.
Ελληνικά: Γειά σου κόσμε.
中文：你好，世界。我们今天去公园玩吧。天气很好。
日本語：こんにちは、世界。今日はいい天気ですね。カタカナもあります。
한국어: 안녕하세요 세계. 오늘 날씨가 좋네요.
العربية: مرحبا بالعالم
हिन्दी: नमस्ते दुनिया
Emoji: 😀 😃 🎉 👍🏽 ❤️ 🚀 🐶 🇺🇸
Tabs	and	spaces    and
newlines

and more   text   with   runs of spaces.
THE END. The end. the end! THE END?
Lily and Max lived in a big house. They liked to play with their toys and
run around the house. They were happy and they played all day long.
"""

TEST_STRINGS = [
    "", " ", "  ", "a", "Hello", "Hello world", "hello world", " Hello world",
    "Hello  world", "Hello   world  ", "Hello\nworld", "Hello\n\nworld",
    "line1\r\nline2", "\ttab\tseparated\t", "  leading spaces",
    "trailing spaces   ", "\n\n\n", " \n \n ", "Once upon a time",
    "Tom and his dog", "I'm sure they'll say we've done what we'd planned",
    "DON'T SHOUT, IT'S LOUD", "The year 2024 had 366 days.", "1234567890",
    "3.14159 and 1,000,000", "x = a+b*c; // comment", "def f(x):\n    return x",
    "https://example.org/path?q=1&r=2", "someone@example.com",
    "café", "naïve résumé", "Größe Straße", "¿Qué tal? ¡Hola!",
    "Привет, мир", "Γειά σου", "你好，世界", "今日はいい天気ですね",
    "안녕하세요", "مرحبا", "नमस्ते", "😀", "🎉🎉🎉", "👍🏽 ok", "I ❤️ NY",
    "🇺🇸 flag", "mixed 中文 and English 😀!", "unknown char: ☃ ⌘ ∑",
    "zebra quartz vow", "!!!???...", "((()))", "a\u00a0b (nbsp)",
    "word\u2003em space", "    indented\n\tcode", "THE END.",
    # not NFC: only tokenizers with an NFC normalizer (qwen2) compose these
    "cafe\u0301 (NFD)", "\u1100\u1161\u11a8 jamo", "q\u0307\u0323 marks",
    "A\u030a\u0323", "\u212b angstrom",
    # more whitespace / case / contraction shapes
    "\r\n\r\nx", "  \t  x", "WE'RE HERE", "it's 'quoted'", "a  \n  b",
]


def random_strings(n, seed):
    """seeded adversarial strings: scripts, emoji, whitespace runs,
    contractions, combining marks, special-token and byte-piece text"""
    import random
    rnd = random.Random(seed)
    alpha = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
             + [" "] * 10 + ["\n", "\r", "\t", "\r\n", "  ", "   ", "'", "'s",
                             "'S", "'ll", "'RE", "'d", ".", ",", "!", "?", "-", "(",
                             ")", "\"", "\u00e9", "\u00df", "\u00f1", "\u0416",
                             "\u03bb", "\u4e2d", "\u6587", "\u65e5\u672c",
                             "\ud55c", "\U0001F600", "\U0001F389",
                             "\U0001F44D\U0001F3FD", "\u00a0", "\u2003",
                             "\u3000", "\u00bd", "\u00b2", "\u0663", "\u216b",
                             "\u0301", "<s>", "</s>", "<|im_start|>", "<|eot_id|>",
                             "<|begin_of_text|>", "\u2581", "\u0120", "<0x41>",
                             "<unk>"])
    return ["".join(rnd.choice(alpha) for _ in range(rnd.randint(0, 25)))
            for _ in range(n)]


def special_strings(specials):
    out = []
    for s in specials[:3]:
        out.append(s + "Hello")
        out.append("Hello " + s + " world")
    out.append(specials[0] + specials[1])
    return out


def train_bpe(pre, vocab_size, specials, byte_level):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    kw = {}
    if byte_level:
        kw["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  show_progress=False, **kw)
    tok.train_from_iterator([CORPUS] * 3, trainer)
    return json.loads(tok.to_str())["model"]


def spm_tokenizer(kind, vocab_size):
    """sentencepiece-compatible BPE: byte_fallback, <0xNN> pieces."""
    specials = ["<unk>", "<s>", "</s>"]
    trained = train_bpe(pre_tokenizers.Metaspace(replacement="\u2581",
                                                 prepend_scheme="always",
                                                 split=True),
                        vocab_size - 256, specials, False)
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in trained["merges"]]
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                       byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.add_special_tokens(specials)
    if kind == "llama2":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "),
                                         decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    else:  # mistral: Metaspace pre-tokenizer, prefix only at the start
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="first",
                                                     split=True)
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581",
                                                            prepend_scheme="first"),
                                         decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
           "eos_token": "</s>", "unk_token": "<unk>",
           "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, cfg, specials


def bytelevel_tokenizer(kind, vocab_size):
    if kind == "llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                    "<|start_header_id|>", "<|end_header_id|>"]
        pat = LLAMA3_PAT
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        pat = QWEN2_PAT
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                 use_regex=False)])
    trained = train_bpe(pre, vocab_size, specials, True)
    vocab = trained["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in trained["merges"]]
    model = models.BPE(vocab=vocab, merges=merges,
                       ignore_merges=(kind == "llama3"))
    tok = Tokenizer(model)
    tok.add_special_tokens(specials)
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    if kind == "llama3":
        bos = specials[0]
        tok.post_processor = processors.TemplateProcessing(
            single=bos + " $A", pair=bos + " $A " + bos + " $B",
            special_tokens=[(bos, vocab[bos])])
        cfg = {"add_bos_token": True, "bos_token": bos,
               "eos_token": specials[1],
               "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        tok.normalizer = normalizers.NFC()
        cfg = {"add_bos_token": False, "bos_token": None,
               "eos_token": specials[0],
               "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, cfg, specials


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


FIXTURES = [
    # name, config class, model class, tokenizer kind, extra config, save
    ("llama2", LlamaConfig, LlamaForCausalLM, "llama2",
     dict(num_key_value_heads=4, rope_theta=10000.0), {}),
    ("llama3", LlamaConfig, LlamaForCausalLM, "llama3",
     dict(num_key_value_heads=2, rope_theta=500000.0,
          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64}),
     {"max_shard_size": "150KB"}),
    ("mistral", MistralConfig, MistralForCausalLM, "mistral",
     dict(num_key_value_heads=2, rope_theta=1000000.0, sliding_window=None),
     {"dtype": torch.bfloat16}),
    ("qwen2", Qwen2Config, Qwen2ForCausalLM, "qwen2",
     dict(num_key_value_heads=2, rope_theta=1000000.0,
          tie_word_embeddings=True, use_sliding_window=False), {}),
]

PROMPTS = ["Once upon a time, there was a little girl named Lily.",
           "The quick brown fox 123",
           "你好, 世界! 😀"]


def make(out_root, name, cfg_cls, model_cls, tok_kind, extra, save, seed):
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if tok_kind in ("llama2", "mistral"):
        tok, tok_cfg, specials = spm_tokenizer(tok_kind, 600)
    else:
        tok, tok_cfg, specials = bytelevel_tokenizer(tok_kind, 600)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    bos = tok.token_to_id(tok_cfg["bos_token"]) if tok_cfg["bos_token"] else None
    eos = tok.token_to_id(tok_cfg["eos_token"])
    cfg = cfg_cls(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, vocab_size=vocab_size,
                  max_position_embeddings=256, rms_norm_eps=1e-5,
                  bos_token_id=bos, eos_token_id=eos,
                  tie_word_embeddings=extra.pop("tie_word_embeddings", False),
                  **extra)
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    init_weights(model, seed)
    dtype = save.get("dtype", torch.float32)
    if dtype != torch.float32:
        model = model.to(dtype)
    kw = {}
    if "max_shard_size" in save:
        kw["max_shard_size"] = save["max_shard_size"]
    model.save_pretrained(out, safe_serialization=True, **kw)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
    # reference: the on-disk values reloaded in float32 (not model.float():
    # that would keep RoPE inv_freq buffers rounded to the save dtype)
    ref = model_cls.from_pretrained(out, dtype=torch.float32,
                                    attn_implementation="eager").eval()
    prompts = []
    for text in PROMPTS:
        ids = tok.encode(text, add_special_tokens=True).ids
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0].float()
        prompts.append({"text": text, "ids": ids,
                        "logits": [[round(float(v), 6) for v in row]
                                   for row in logits]})
    cases = []
    for text in (TEST_STRINGS + special_strings(specials) +
                 random_strings(150, 99)):
        cases.append({"text": text,
                      "ids": tok.encode(text, add_special_tokens=False).ids})
    expected = {"name": name,
                "weights_dtype": str(dtype).replace("torch.", ""),
                "vocab_size": vocab_size,
                "bos_id": bos if bos is not None else -1,
                "eos_id": eos,
                "add_bos": bool(tok_cfg["add_bos_token"]),
                "prompts": prompts, "tokenizer_cases": cases}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
    for x in os.listdir(out):
        os.chmod(os.path.join(out, x), 0o644)
    size = sum(os.path.getsize(os.path.join(out, x)) for x in os.listdir(out))
    print("%s: vocab %d, %d files, %.0f KB" % (name, vocab_size,
                                              len(os.listdir(out)), size / 1024))


def make_gguf(out_root):
    """tests/data/gguf/qwen2-tiny.gguf: the qwen2 fixture converted to GGUF
    (token_embd BF16, matrices F16, norms and biases F32, gpt2 tokenizer
    with the qwen2 pre-tokenizer), to test the F16/BF16 and BPE paths of
    the GGUF reader against the safetensors directory."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file
    src = os.path.join(out_root, "qwen2")
    cfg = json.load(open(os.path.join(src, "config.json")))
    tj = json.load(open(os.path.join(src, "tokenizer.json")))
    w = load_file(os.path.join(src, "model.safetensors"))
    out_dir = os.path.join(out_root, "..", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "qwen2-tiny.gguf")
    gw = gguf.GGUFWriter(path, "qwen2")
    gw.add_context_length(cfg["max_position_embeddings"])
    gw.add_embedding_length(cfg["hidden_size"])
    gw.add_feed_forward_length(cfg["intermediate_size"])
    gw.add_block_count(cfg["num_hidden_layers"])
    gw.add_head_count(cfg["num_attention_heads"])
    gw.add_head_count_kv(cfg["num_key_value_heads"])
    gw.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    gw.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"]
                          if "rope_parameters" in cfg else cfg["rope_theta"])
    vocab = tj["model"]["vocab"]
    n = max(max(vocab.values()), max(t["id"] for t in tj["added_tokens"])) + 1
    tokens, types = [""] * n, [1] * n
    for piece, i in vocab.items():
        tokens[i] = piece
    for t in tj["added_tokens"]:
        tokens[t["id"]] = t["content"]
        types[t["id"]] = 3 if t["special"] else 4
    gw.add_tokenizer_model("gpt2")
    gw.add_tokenizer_pre("qwen2")
    gw.add_token_list(tokens)
    gw.add_token_types(types)
    gw.add_token_merges([" ".join(m) if isinstance(m, list) else m
                         for m in tj["model"]["merges"]])
    gw.add_eos_token_id(vocab.get("<|endoftext|>", 0))
    gw.add_add_bos_token(False)
    gw.add_chat_template("{{ messages }}")

    def bf16(a):
        u = a.astype(np.float32).view(np.uint32)
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

    e = w["model.embed_tokens.weight"]
    gw.add_tensor("token_embd.weight", bf16(e), raw_shape=e.shape,
                  raw_dtype=gguf.GGMLQuantizationType.BF16)
    gw.add_tensor("output_norm.weight", w["model.norm.weight"])
    names = {"input_layernorm.weight": "attn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight",
             "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.q_proj.bias": "attn_q.bias",
             "self_attn.k_proj.bias": "attn_k.bias",
             "self_attn.v_proj.bias": "attn_v.bias",
             "self_attn.o_proj.weight": "attn_output.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight",
             "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            a = w["model.layers.%d.%s" % (l, hf)]
            if a.ndim == 2:
                a = a.astype(np.float16)
            gw.add_tensor("blk.%d.%s" % (l, gg), a)
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()
    os.chmod(path, 0o644)
    print("gguf: %s, %.0f KB" % (path, os.path.getsize(path) / 1024))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "hf"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for i, (name, cfg_cls, model_cls, tk, extra, save) in enumerate(FIXTURES):
        make(args.out, name, cfg_cls, model_cls, tk, dict(extra), save, 1234 + i)
    make_gguf(args.out)


if __name__ == "__main__":
    main()
