/* test_unicode.c - Unicode helpers of the tokenizers: class tables (\p{L},
 * \p{N}, \s), the GPT-2 byte <-> code point map, NFC normalization and the
 * hand-written Llama-3 / Qwen2 / GPT-2 pre-tokenizer splits.
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

#include "format/tok_impl.h"
#include "format/unicode_norm.h"

static void classes_match_unicode(void **state)
{
    assert_true(lkv_uni_is_letter('a') && lkv_uni_is_letter('Z'));
    assert_true(lkv_uni_is_letter(0xE9));    /* é */
    assert_true(lkv_uni_is_letter(0x4E2D));  /* 中 */
    assert_true(lkv_uni_is_letter(0x3042));  /* あ */
    assert_true(lkv_uni_is_letter(0x02B0));  /* modifier letter (Lm) */
    assert_false(lkv_uni_is_letter('1') || lkv_uni_is_letter(' '));
    assert_false(lkv_uni_is_letter(0x1F600)); /* emoji */
    assert_false(lkv_uni_is_letter(0x0301));  /* combining mark (Mn) */
    assert_true(lkv_uni_is_number('7') && lkv_uni_is_number(0x0663));
    assert_true(lkv_uni_is_number(0xBD) && lkv_uni_is_number(0x216B));
    assert_false(lkv_uni_is_number('x'));
    const uint32_t sp[] = {' ', '\t', '\n', '\r', 0x0B, 0x0C, 0x85, 0xA0,
                           0x1680, 0x2003, 0x2028, 0x202F, 0x3000};
    for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]); i++) {
        assert_true(lkv_uni_is_space(sp[i]));
    }
    assert_false(lkv_uni_is_space(0x200B) || lkv_uni_is_space('a'));
}

static void byte_map_roundtrips(void **state)
{
    bool seen[400] = {false};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_cp((uint8_t)b);
        assert_true(cp < 400);
        assert_false(seen[cp]);
        seen[cp] = true;
        assert_int_equal(tok_cp_to_byte(cp), b);
    }
    assert_int_equal(tok_byte_to_cp(' '), 0x120); /* Ġ */
    assert_int_equal(tok_byte_to_cp('\n'), 0x10A); /* Ċ */
    assert_int_equal(tok_byte_to_cp('A'), 'A');
    assert_int_equal(tok_cp_to_byte(0x4E2D), -1);
}

static void check_nfc(const char *in, const char *want)
{
    char  *out = NULL;
    size_t len = 0;
    assert_int_equal(lkv_uni_nfc(in, strlen(in), &out, &len), LKV_OK);
    if (want == NULL) {
        assert_null(out); /* unchanged, no allocation */
        return;
    }
    const char *got = out ? out : in;
    assert_string_equal(got, want);
    if (out != NULL) {
        assert_int_equal(len, strlen(want));
    }
    free(out);
}

static void nfc_composes_and_reorders(void **state)
{
    check_nfc("plain ascii", NULL);
    check_nfc("caf\xC3\xA9", NULL);               /* é: already NFC */
    check_nfc("cafe\xCC\x81", "caf\xC3\xA9");     /* e + U+0301 -> é */
    check_nfc("\xE2\x84\xAB", "\xC3\x85");        /* U+212B Angstrom -> Å */
    /* q + dot below + dot above stays two marks (no composite) in order */
    check_nfc("q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87");
    /* d + U+0307 + U+0323 -> U+1E0D (d with dot below) + U+0307 */
    check_nfc("d\xCC\x87\xCC\xA3", "\xE1\xB8\x8D\xCC\x87");
    /* Hangul jamo L V T -> one syllable */
    check_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81");
    /* leading combining mark stays */
    check_nfc("\xCC\x81" "a", "\xCC\x81" "a");
    /* invalid UTF-8 is left alone */
    check_nfc("e\xCC\x81\xFF", NULL);
}

typedef struct {
    char words[32][32];
    int  n;
} words_t;

static void collect(void *ctx, const char *s, size_t len)
{
    words_t *w = ctx;
    assert_true(w->n < 32 && len < 32);
    memcpy(w->words[w->n], s, len);
    w->words[w->n][len] = '\0';
    w->n++;
}

static void check_split(tok_pre_t pre, const char *text, const char **want,
                        int n_want)
{
    words_t w = {.n = 0};
    tok_pretokenize(pre, text, strlen(text), collect, &w);
    assert_int_equal(w.n, n_want);
    for (int i = 0; i < n_want; i++) {
        assert_string_equal(w.words[i], want[i]);
    }
}

static void pretokenizers_split_like_the_regexes(void **state)
{
    /* expected splits from the tokenizers library (Split, Isolated) */
    const char *a[] = {"Hello", " world", "'s", " ", "123", "4", "!!\n\n",
                       "  ", " x"};
    check_split(TOK_PRE_LLAMA3, "Hello world's 1234!!\n\n   x", a, 9);
    const char *b[] = {"Hello", " world", "'s", " ", "1", "2", "3", "4"};
    check_split(TOK_PRE_QWEN2, "Hello world's 1234", b, 8);
    const char *c[] = {"I", "'M", " fine", ".\n", " \n", "\tx"};
    check_split(TOK_PRE_LLAMA3, "I'M fine.\n \n\tx", c, 6);
    const char *d[] = {"Hello", " world", "'s", " 1234", "!!", "  ", " x",
                       "'", "M"};
    check_split(TOK_PRE_GPT2, "Hello world's 1234!!   x'M", d, 9);
    const char *e[] = {"abc"};
    check_split(TOK_PRE_NONE, "abc", e, 1);
    check_split(TOK_PRE_LLAMA3, "", e, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_match_unicode),
        cmocka_unit_test(byte_map_roundtrips),
        cmocka_unit_test(nfc_composes_and_reorders),
        cmocka_unit_test(pretokenizers_split_like_the_regexes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
