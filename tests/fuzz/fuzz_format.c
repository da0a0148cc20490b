/* fuzz_format.c - libFuzzer target for the model-file readers and the
 * tokenizers (format/). The first input byte picks what the rest is:
 *   'G' a GGUF file        -> lkv_model_file_open (+ encode with its vocab)
 *   'S' a model.safetensors -> lkv_model_file_open on a directory holding it
 *                              and tests/fuzz/format_seeds/tiny_config.json
 *   'J' a tokenizer.json   -> lkv_tok_load_hf (+ encode/decode)
 *   'B' a tokenizer.bin    -> lkv_tok_load_llama2c(vocab 16)
 *   anything else: text    -> encode/decode/stream with every bundled
 *                              tokenizer (stories260K, four HF fixtures)
 * Built and run by tests/fuzz/run_format.sh (not part of CMake).
 * Threading: single-threaded (libFuzzer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/model_file.h"
#include "format/tokenizer.h"

static char             dir[256];
static lkv_tokenizer_t *toks[5];
static int              n_toks;

static void write_file(const char *path, const uint8_t *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        abort();
    }
    if (n > 0 && fwrite(d, 1, n, f) != n) {
        abort();
    }
    fclose(f);
}

static void exercise(const lkv_tokenizer_t *tok, const char *text, size_t len)
{
    int32_t ids[4096];
    int     n = 0;
    for (int special = 0; special < 2; special++) {
        if (lkv_tok_encode(tok, text, len, true, special, ids, 4096, &n) !=
            LKV_OK) {
            abort();
        }
        if (n > 4096) {
            n = 4096;
        }
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= lkv_tok_vocab_size(tok)) {
                abort();
            }
        }
        char *out = NULL;
        if (lkv_tok_decode(tok, ids, n, &out) != LKV_OK) {
            abort();
        }
        free(out);
        lkv_detok_t st;
        lkv_detok_init(&st);
        char buf[512];
        for (int i = 0; i < n; i++) {
            size_t k = lkv_detok_push(tok, &st, ids[i], buf, sizeof(buf));
            if (k >= sizeof(buf) || buf[k] != '\0') {
                abort(); /* (the text itself may contain NUL bytes) */
            }
        }
        lkv_detok_flush(&st, buf, sizeof(buf));
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *src = getenv("LKV_SOURCE_DIR") ? getenv("LKV_SOURCE_DIR") : ".";
    snprintf(dir, sizeof(dir), "/tmp/lkv_fuzz_format_%d", (int)getpid());
    mkdir(dir, 0700);
    char path[512];
    snprintf(path, sizeof(path), "%s/models/stories260K/tok512.bin", src);
    if (lkv_tok_load_llama2c(path, 512, &toks[n_toks]) == LKV_OK) {
        n_toks++;
    }
    const char *hf[] = {"llama2", "mistral", "llama3", "qwen2"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/tests/data/hf/%s/tokenizer.json", src,
                 hf[i]);
        if (lkv_tok_load_hf(path, &toks[n_toks]) == LKV_OK) {
            n_toks++;
        }
    }
    /* the fixed config for 'S' inputs */
    snprintf(path, sizeof(path), "%s/tests/fuzz/format_seeds/tiny_config.json",
             src);
    FILE *f = fopen(path, "rb");
    char  cfg[4096];
    size_t n = f ? fread(cfg, 1, sizeof(cfg), f) : 0;
    if (f) {
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/config.json", dir);
    write_file(path, (const uint8_t *)cfg, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t         n = size - 1;
    char           path[512];
    switch (data[0]) {
    case 'G':
    case 'S': {
        if (data[0] == 'G') {
            snprintf(path, sizeof(path), "%s/m.gguf", dir);
        } else {
            snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        }
        write_file(path, d, n);
        lkv_model_file_t *mf = NULL;
        if (lkv_model_file_open(data[0] == 'G' ? path : dir, NULL, &mf) ==
            LKV_OK) {
            if (lkv_model_file_tokenizer(mf) != NULL) {
                exercise(lkv_model_file_tokenizer(mf), "ab a\xF0\x9F\x98\x80", 9);
            }
            lkv_model_file_close(&mf);
        } else if (mf != NULL) {
            abort(); /* out pointer touched on failure */
        }
        break;
    }
    case 'J':
    case 'B': {
        snprintf(path, sizeof(path), "%s/tokenizer.%s", dir,
                 data[0] == 'J' ? "json" : "bin");
        write_file(path, d, n);
        lkv_tokenizer_t *tok = NULL;
        lkv_status_t     st  = data[0] == 'J' ? lkv_tok_load_hf(path, &tok)
                                              : lkv_tok_load_llama2c(path, 16, &tok);
        if (st == LKV_OK) {
            exercise(tok, "Hello world 123 <s> \xE4\xB8\xAD!", 22);
            lkv_tok_destroy(&tok);
        } else if (tok != NULL) {
            abort();
        }
        break;
    }
    default:
        /* long texts only slow the search down (encode is O(n log n)) */
        for (int i = 0; i < n_toks; i++) {
            exercise(toks[i], (const char *)data, size < 2048 ? size : 2048);
        }
        break;
    }
    return 0;
}
