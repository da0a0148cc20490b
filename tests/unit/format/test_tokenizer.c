/* test_tokenizer.c - sentencepiece-style tokenizer (llama2.c tokenizer.bin
 * and the GGUF "llama" vocabulary of stories260K): encoding goldens,
 * decoding, streaming detokenization that never splits a UTF-8 character,
 * special tokens, argument errors.
 *
 * Threading: single-threaded cmocka tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "format/tokenizer.h"

#define TOK512 "models/stories260K/tok512.bin"
#define GGUF   "models/stories260K/stories260K.gguf"

static int setup_bin(void **state)
{
    lkv_tokenizer_t *tok = NULL;
    assert_int_equal(lkv_tok_load_llama2c(TOK512, 512, &tok), LKV_OK);
    *state = tok;
    return 0;
}

static int teardown_bin(void **state)
{
    lkv_tokenizer_t *tok = *state;
    lkv_tok_destroy(&tok);
    assert_null(tok);
    return 0;
}

static int encode(const lkv_tokenizer_t *tok, const char *text, bool bos,
                  int32_t *ids, int max)
{
    int n = -1;
    assert_int_equal(lkv_tok_encode(tok, text, strlen(text), bos, true, ids,
                                    max, &n),
                     LKV_OK);
    return n;
}

static void tok512_tom_and_his_dog_matches_golden(void **state)
{
    const lkv_tokenizer_t *tok       = *state;
    const int32_t          golden[]  = {1, 274, 287, 269, 345, 400, 428};
    int32_t                ids[32];
    int                    n = encode(tok, "Tom and his dog", true, ids, 32);
    assert_int_equal(n, 7);
    assert_memory_equal(ids, golden, sizeof(golden));
    assert_int_equal(lkv_tok_kind(tok), LKV_TOK_SPM);
    assert_int_equal(lkv_tok_bos(tok), 1);
    assert_int_equal(lkv_tok_eos(tok), 2);
    assert_true(lkv_tok_add_bos_default(tok));
    assert_string_equal(lkv_tok_piece(tok, 274), " T"); /* " T" "om" */
    assert_null(lkv_tok_piece(tok, 512));
    assert_null(lkv_tok_piece(tok, -1));
}

static void tok512_golden_continuation_decodes(void **state)
{
    const lkv_tokenizer_t *tok   = *state;
    const int32_t          ids[] = {
        432, 392, 412, 444, 432, 263, 415, 414, 397, 396, 322, 261, 370, 270,
        277, 372, 426, 342, 397, 355, 267, 337, 335, 265, 315, 267, 422, 419,
        269, 352, 379, 261, 420, 277, 264, 265, 270, 277, 372, 426};
    char *text = NULL;
    assert_int_equal(lkv_tok_decode(tok, ids, 40, &text), LKV_OK);
    assert_string_equal(text, ", Max, who lived in a big house. They liked to "
                              "play with their toys and run around the house.");
    free(text);
    /* streamed after the prompt (prev = last prompt id): same text */
    lkv_detok_t st;
    lkv_detok_init(&st);
    st.prev_id = 428;
    char   acc[512] = "", out[64];
    for (int i = 0; i < 40; i++) {
        size_t k = lkv_detok_push(tok, &st, ids[i], out, sizeof(out));
        assert_int_equal(k, strlen(out));
        strcat(acc, out);
    }
    assert_int_equal(lkv_detok_flush(&st, out, sizeof(out)), 0);
    assert_string_equal(acc, ", Max, who lived in a big house. They liked to "
                             "play with their toys and run around the house.");
}

static void tok512_from_bos_drops_leading_space(void **state)
{
    const lkv_tokenizer_t *tok   = *state;
    const int32_t          ids[] = {1, 403, 407, 261, 378, 432, 383, 286, 261,
                                    376, 298, 315, 421, 395, 317, 426};
    char                  *text  = NULL;
    assert_int_equal(lkv_tok_decode(tok, ids, 16, &text), LKV_OK);
    assert_string_equal(text, "Once upon a time, there was a little girl "
                              "named Lily.");
    free(text);
    /* streaming: BOS produces nothing, the next piece loses its space */
    lkv_detok_t st;
    lkv_detok_init(&st);
    char out[64];
    assert_int_equal(lkv_detok_push(tok, &st, 1, out, sizeof(out)), 0);
    lkv_detok_push(tok, &st, 403, out, sizeof(out));
    assert_string_equal(out, "Once");
    lkv_detok_push(tok, &st, 407, out, sizeof(out));
    assert_string_equal(out, " upon");
    /* EOS is a control token: no text */
    assert_int_equal(lkv_detok_push(tok, &st, 2, out, sizeof(out)), 0);
    assert_true(lkv_tok_is_special(tok, 2));
    assert_false(lkv_tok_is_special(tok, 403));
}

static void tok512_byte_fallback_roundtrips_unicode(void **state)
{
    const lkv_tokenizer_t *tok     = *state;
    const char            *texts[] = {"Héllo 😀 wörld  x", "日本語のテキスト",
                                      "tab\tand\nnewline", "  two spaces",
                                      "🎉🎉", "a"};
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        int32_t ids[256];
        int     n = encode(tok, texts[t], true, ids, 256);
        assert_true(n > 1 && n < 256);
        for (int i = 0; i < n; i++) {
            assert_true(ids[i] >= 0 && ids[i] < 512);
        }
        char *text = NULL;
        assert_int_equal(lkv_tok_decode(tok, ids, n, &text), LKV_OK);
        assert_string_equal(text, texts[t]);
        free(text);
    }
    /* "😀" is 4 byte-fallback pieces: <0xF0> <0x9F> <0x98> <0x80> = +3 */
    int32_t ids[16];
    int     n = encode(tok, "😀", false, ids, 16);
    assert_int_equal(n, 5); /* the dummy-prefix space, then 4 bytes */
    assert_int_equal(ids[1], 0xF0 + 3);
    assert_int_equal(ids[4], 0x80 + 3);
}

static void detok_never_splits_utf8_character(void **state)
{
    const lkv_tokenizer_t *tok = *state;
    /* emoji and CJK as byte-fallback pieces, pushed one at a time */
    const char *s   = "😀日";
    int32_t     ids[16];
    int         n   = 0;
    for (const uint8_t *p = (const uint8_t *)s; *p; p++) {
        ids[n++] = *p + 3;
    }
    lkv_detok_t st;
    lkv_detok_init(&st);
    char   out[32];
    size_t lens[16];
    for (int i = 0; i < n; i++) {
        lens[i] = lkv_detok_push(tok, &st, ids[i], out, sizeof(out));
        if (i == 3) {
            assert_string_equal(out, "😀");
        } else if (i == 6) {
            assert_string_equal(out, "日");
        } else {
            assert_int_equal(lens[i], 0);
            assert_string_equal(out, "");
        }
    }
    /* a broken character: lead byte then ASCII, then a dangling lead */
    lkv_detok_init(&st);
    assert_int_equal(lkv_detok_push(tok, &st, 0xE6 + 3, out, sizeof(out)), 0);
    lkv_detok_push(tok, &st, 'a' + 3, out, sizeof(out));
    assert_string_equal(out, "\xEF\xBF\xBD" "a");
    assert_int_equal(lkv_detok_push(tok, &st, 0xF0 + 3, out, sizeof(out)), 0);
    assert_int_equal(lkv_detok_flush(&st, out, sizeof(out)), 3);
    assert_string_equal(out, "\xEF\xBF\xBD");
    /* a lone continuation byte */
    lkv_detok_push(tok, &st, 0x80 + 3, out, sizeof(out));
    assert_string_equal(out, "\xEF\xBF\xBD");
    /* ids out of range produce nothing and do not crash */
    assert_int_equal(lkv_detok_push(tok, &st, 99999, out, sizeof(out)), 0);
    assert_int_equal(lkv_detok_push(tok, &st, -5, out, sizeof(out)), 0);
    /* tiny buffer: nothing partial is written */
    lkv_detok_init(&st);
    assert_int_equal(lkv_detok_push(tok, &st, 274, out, 2), 0);
    assert_true(lkv_tok_max_piece_bytes(tok) >= 7);
}

static void encode_reports_full_count_and_rejects_bad_args(void **state)
{
    const lkv_tokenizer_t *tok = *state;
    int32_t                ids[3];
    int                    n   = 0;
    assert_int_equal(lkv_tok_encode(tok, "Tom and his dog", 15, true, true,
                                    ids, 3, &n),
                     LKV_OK);
    assert_int_equal(n, 7);
    assert_int_equal(ids[2], 287);
    assert_int_equal(lkv_tok_encode(tok, "x", 1, true, true, NULL, 0, &n),
                     LKV_OK);
    assert_int_equal(n, 3); /* BOS, " ", "x" or the merged " x" */
    assert_int_equal(lkv_tok_encode(tok, "", 0, true, true, ids, 3, &n), LKV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(lkv_tok_encode(NULL, "x", 1, true, true, ids, 3, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_tok_encode(tok, NULL, 1, true, true, ids, 3, &n),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_tok_encode(tok, "x", 1, true, true, ids, 3, NULL),
                     LKV_ERR_INVALID);
    char *text = NULL;
    assert_int_equal(lkv_tok_decode(tok, NULL, 1, &text), LKV_ERR_INVALID);
    /* invalid UTF-8 input is encoded byte by byte and survives decode */
    const char bad[] = "a\xFF\xC3z";
    n                = encode(tok, bad, false, ids, 0);
    int32_t *buf     = malloc(sizeof(int32_t) * (size_t)n);
    assert_int_equal(encode(tok, bad, false, buf, n), n);
    assert_int_equal(lkv_tok_decode(tok, buf, n, &text), LKV_OK);
    assert_string_equal(text, "a\xEF\xBF\xBD\xEF\xBF\xBDz");
    free(text);
    free(buf);
}

static void gguf_vocab_encodes_like_tokenizer_bin(void **state)
{
    const lkv_tokenizer_t *bin = *state;
    lkv_model_file_t      *mf  = NULL;
    assert_int_equal(lkv_model_file_open(GGUF, NULL, &mf), LKV_OK);
    const lkv_tokenizer_t *gg = lkv_model_file_tokenizer(mf);
    assert_non_null(gg);
    const char *texts[] = {"Tom and his dog", "Once upon a time, there was",
                           "Héllo 😀  wörld\n\tend", "", "   ", "Lily's mom"};
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        int32_t a[128], b[128];
        int     na = encode(bin, texts[t], true, a, 128);
        int     nb = encode(gg, texts[t], true, b, 128);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);
        char *x = NULL, *y = NULL;
        assert_int_equal(lkv_tok_decode(bin, a, na, &x), LKV_OK);
        assert_int_equal(lkv_tok_decode(gg, b, nb, &y), LKV_OK);
        assert_string_equal(x, y);
        assert_string_equal(x, texts[t]);
        free(x);
        free(y);
    }
    /* GGUF pieces use U+2581 for space; the decoded text does not */
    assert_string_equal(lkv_tok_piece(gg, 274), "\xE2\x96\x81T");
    /* special text: "<s>" is BOS only with parse_special */
    int32_t ids[16];
    int     n;
    assert_int_equal(lkv_tok_encode(gg, "<s>", 3, false, true, ids, 16, &n),
                     LKV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(lkv_tok_encode(gg, "<s>", 3, false, false, ids, 16, &n),
                     LKV_OK);
    assert_true(n > 1);
    lkv_model_file_close(&mf);
}

static void load_llama2c_rejects_bad_files(void **state)
{
    lkv_tokenizer_t *tok = NULL;
    assert_int_equal(lkv_tok_load_llama2c("/nonexistent/tok.bin", 512, &tok),
                     LKV_ERR_NOTFOUND);
    assert_int_equal(lkv_tok_load_llama2c(TOK512, 0, &tok), LKV_ERR_INVALID);
    /* asking for more tokens than the file has: truncated */
    assert_int_equal(lkv_tok_load_llama2c(TOK512, 600, &tok), LKV_ERR_FORMAT);
    /* truncated copies */
    FILE *f = fopen(TOK512, "rb");
    assert_non_null(f);
    static uint8_t buf[8192];
    size_t         len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    const size_t cuts[] = {0, 2, 4, 9, 100, len / 2, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        char path[] = "/tmp/lkv_tok_trunc_XXXXXX";
        int  fd     = mkstemp(path);
        assert_true(fd >= 0);
        FILE *o = fdopen(fd, "wb");
        fwrite(buf, 1, cuts[i], o);
        fclose(o);
        assert_int_equal(lkv_tok_load_llama2c(path, 512, &tok), LKV_ERR_FORMAT);
        assert_null(tok);
        remove(path);
    }
    /* corrupt length field of token 5 */
    char path[] = "/tmp/lkv_tok_bad_XXXXXX";
    int  fd     = mkstemp(path);
    FILE *o     = fdopen(fd, "wb");
    uint8_t copy[8192];
    memcpy(copy, buf, len);
    size_t pos = 4;
    for (int id = 0; id < 5; id++) {
        int32_t l;
        memcpy(&l, copy + pos + 4, 4);
        pos += 8 + (size_t)l;
    }
    int32_t huge = 0x7FFFFFF0;
    memcpy(copy + pos + 4, &huge, 4);
    fwrite(copy, 1, len, o);
    fclose(o);
    assert_int_equal(lkv_tok_load_llama2c(path, 512, &tok), LKV_ERR_FORMAT);
    remove(path);
}

/* seeded random byte strings (valid and invalid UTF-8, special-token
 * fragments) through every tokenizer kind: no crash, ids in range, the
 * full-count contract holds and decode never fails */
static void random_text_never_crashes_any_tokenizer(void **state)
{
    const char *hf[] = {"tests/data/hf/llama2/tokenizer.json",
                        "tests/data/hf/mistral/tokenizer.json",
                        "tests/data/hf/llama3/tokenizer.json",
                        "tests/data/hf/qwen2/tokenizer.json"};
    lkv_tokenizer_t *toks[6] = {NULL};
    int              n_tok   = 0;
    assert_int_equal(lkv_tok_load_llama2c(TOK512, 512, &toks[n_tok++]), LKV_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(lkv_tok_load_hf(hf[i], &toks[n_tok++]), LKV_OK);
    }
    static const char *frags[] = {"<s>", "</s>", "<|im_start|>", "<|eot_id|>",
                                  " ", "  ", "\n", "'s", "\xF0\x9F\x98", "\xE4\xB8\xAD",
                                  "a", "1234", "\t", "\xC3"};
    uint64_t rng = 7;
    char     text[256];
    int32_t  ids[1024];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = 0;
        while (len < 200) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(rng >> 33);
            if (r % 3 == 0) {
                const char *f = frags[(r / 3) % (sizeof(frags) / sizeof(frags[0]))];
                size_t      k = strlen(f);
                if (len + k > 200) {
                    break;
                }
                memcpy(text + len, f, k);
                len += k;
            } else {
                text[len++] = (char)(r >> 8);
            }
            if ((r >> 24) % 17 == 0) {
                break;
            }
        }
        for (int t = 0; t < n_tok; t++) {
            int n = -1, n2 = -1;
            assert_int_equal(lkv_tok_encode(toks[t], text, len, true,
                                            (iter & 1) != 0, ids, 1024, &n),
                             LKV_OK);
            assert_true(n >= 0 && n <= 1024);
            for (int i = 0; i < n; i++) {
                assert_true(ids[i] >= 0 && ids[i] < lkv_tok_vocab_size(toks[t]));
            }
            assert_int_equal(lkv_tok_encode(toks[t], text, len, true,
                                            (iter & 1) != 0, ids, 2, &n2),
                             LKV_OK);
            assert_int_equal(n, n2);
            char *out = NULL;
            assert_int_equal(lkv_tok_decode(toks[t], ids, n, &out),
                             LKV_OK);
            free(out);
        }
    }
    for (int t = 0; t < n_tok; t++) {
        lkv_tok_destroy(&toks[t]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tok512_tom_and_his_dog_matches_golden),
        cmocka_unit_test(tok512_golden_continuation_decodes),
        cmocka_unit_test(tok512_from_bos_drops_leading_space),
        cmocka_unit_test(tok512_byte_fallback_roundtrips_unicode),
        cmocka_unit_test(detok_never_splits_utf8_character),
        cmocka_unit_test(encode_reports_full_count_and_rejects_bad_args),
        cmocka_unit_test(gguf_vocab_encodes_like_tokenizer_bin),
        cmocka_unit_test(load_llama2c_rejects_bad_files),
        cmocka_unit_test(random_text_never_crashes_any_tokenizer),
    };
    return cmocka_run_group_tests(tests, setup_bin, teardown_bin);
}
