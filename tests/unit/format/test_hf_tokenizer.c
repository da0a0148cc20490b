/* test_hf_tokenizer.c - HF tokenizer.json parity: for every fixture under
 * tests/data/hf/ (Llama-2 and Mistral sentencepiece-compatible BPE, Llama-3
 * and Qwen2 byte-level BPE) our ids equal the `tokenizers` library's ids on
 * every recorded string, the prompts' ids (BOS included) match, and
 * decode(encode(text)) gives the text back.
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

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "format/model_file.h"
#include "format/tokenizer.h"
#include "format/unicode_norm.h"

static cJSON *load_expected(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/data/hf/%s/expected.json", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    free(text);
    assert_non_null(root);
    return root;
}

static int check_ids(const lkv_tokenizer_t *tok, const char *text, bool bos,
                     const cJSON *want, const char *name)
{
    int n = 0;
    assert_int_equal(lkv_tok_encode(tok, text, strlen(text), bos, true, NULL,
                                    0, &n),
                     LKV_OK);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    assert_int_equal(lkv_tok_encode(tok, text, strlen(text), bos, true, ids,
                                    n, &n),
                     LKV_OK);
    int  nw = cJSON_GetArraySize(want);
    bool ok = nw == n;
    for (int i = 0; ok && i < n; i++) {
        ok = ids[i] == (int32_t)cJSON_GetArrayItem(want, i)->valuedouble;
    }
    if (!ok) {
        fprintf(stderr, "%s: text \"%s\"\n  want:", name, text);
        for (int i = 0; i < nw; i++) {
            fprintf(stderr, " %d", (int)cJSON_GetArrayItem(want, i)->valuedouble);
        }
        fprintf(stderr, "\n  got: ");
        for (int i = 0; i < n; i++) {
            fprintf(stderr, " %d", ids[i]);
        }
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok ? 0 : 1;
}

static void run_fixture(const char *name, lkv_tok_kind_t kind)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/data/hf/%s/tokenizer.json", name);
    lkv_tokenizer_t *tok = NULL;
    assert_int_equal(lkv_tok_load_hf(path, &tok), LKV_OK);
    assert_int_equal(lkv_tok_kind(tok), kind);
    cJSON *exp = load_expected(name);
    assert_int_equal(lkv_tok_vocab_size(tok),
                     cJSON_GetObjectItem(exp, "vocab_size")->valueint);
    assert_int_equal(lkv_tok_bos(tok),
                     cJSON_GetObjectItem(exp, "bos_id")->valueint);
    assert_int_equal(lkv_tok_eos(tok),
                     cJSON_GetObjectItem(exp, "eos_id")->valueint);
    assert_int_equal(lkv_tok_add_bos_default(tok),
                     cJSON_IsTrue(cJSON_GetObjectItem(exp, "add_bos")));
    int          failures = 0, n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "tokenizer_cases"))
    {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        failures += check_ids(tok, text, false, cJSON_GetObjectItem(c, "ids"),
                              name);
        n_cases++;
        /* byte-level round trip (special-token text decodes to nothing:
         * skip those; SPM drops the dummy-prefix space, as HF does) */
        if (strstr(text, "<s>") == NULL && strstr(text, "<|") == NULL &&
            strstr(text, "</s>") == NULL && strstr(text, "<unk>") == NULL) {
            int     n;
            int32_t ids[512];
            assert_int_equal(lkv_tok_encode(tok, text, strlen(text), false,
                                            true, ids, 512, &n),
                             LKV_OK);
            char *back = NULL;
            assert_int_equal(lkv_tok_decode(tok, ids, n, &back), LKV_OK);
            if (kind == LKV_TOK_BPE) {
                char  *nfc = NULL;
                size_t nlen;
                assert_int_equal(lkv_uni_nfc(text, strlen(text), &nfc, &nlen),
                                 LKV_OK);
                /* qwen2 normalizes to NFC; llama3 keeps the text as is */
                assert_string_equal(back, nfc != NULL && strcmp(name, "qwen2") == 0
                                              ? nfc
                                              : text);
                free(nfc);
            }
            free(back);
        }
    }
    assert_true(n_cases >= 50);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "prompts"))
    {
        failures += check_ids(tok, cJSON_GetObjectItem(c, "text")->valuestring,
                              lkv_tok_add_bos_default(tok),
                              cJSON_GetObjectItem(c, "ids"), name);
    }
    assert_int_equal(failures, 0);
    cJSON_Delete(exp);
    lkv_tok_destroy(&tok);
}

static void hf_llama2_spm_matches_hf_ids(void **state)
{
    run_fixture("llama2", LKV_TOK_SPM);
}
static void hf_mistral_metaspace_matches_hf_ids(void **state)
{
    run_fixture("mistral", LKV_TOK_SPM);
}
static void hf_llama3_bytelevel_matches_hf_ids(void **state)
{
    run_fixture("llama3", LKV_TOK_BPE);
}
static void hf_qwen2_bytelevel_matches_hf_ids(void **state)
{
    run_fixture("qwen2", LKV_TOK_BPE);
}

static void hf_bytelevel_stream_never_splits_utf8(void **state)
{
    lkv_tokenizer_t *tok = NULL;
    assert_int_equal(lkv_tok_load_hf("tests/data/hf/llama3/tokenizer.json",
                                     &tok),
                     LKV_OK);
    const char *text = "emoji 😀🎉 and 中文 text";
    int32_t     ids[128];
    int         n;
    assert_int_equal(lkv_tok_encode(tok, text, strlen(text), false, true, ids,
                                    128, &n),
                     LKV_OK);
    lkv_detok_t st;
    lkv_detok_init(&st);
    char acc[256] = "", out[64];
    for (int i = 0; i < n; i++) {
        size_t k = lkv_detok_push(tok, &st, ids[i], out, sizeof(out));
        assert_int_equal(k, strlen(out));
        /* every chunk is valid UTF-8 on its own: no dangling lead byte */
        for (size_t j = 0; j < k;) {
            unsigned char ch = (unsigned char)out[j];
            size_t len = ch < 0x80 ? 1 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
            assert_true(j + len <= k);
            j += len;
        }
        strcat(acc, out);
    }
    assert_int_equal(lkv_detok_flush(&st, out, sizeof(out)), 0);
    assert_string_equal(acc, text);
    /* special tokens produce no text */
    int32_t eot = lkv_tok_eos(tok);
    assert_true(lkv_tok_is_special(tok, eot));
    assert_int_equal(lkv_detok_push(tok, &st, eot, out, sizeof(out)), 0);
    lkv_tok_destroy(&tok);
}

static void hf_bad_tokenizer_files_fail_cleanly(void **state)
{
    const char *bad[] = {
        "{",
        "[]",
        "{\"model\": 3}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": "
        "[\"ab\"]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": "
        "[[1, 2]]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, "
        "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": "
        "\"x+\"}, \"behavior\": \"Isolated\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, "
        "\"added_tokens\": [{\"id\": \"x\"}]}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16000000}}}",
    };
    const lkv_status_t want[] = {LKV_ERR_FORMAT, LKV_ERR_FORMAT,
                                 LKV_ERR_FORMAT, LKV_ERR_UNSUPPORTED,
                                 LKV_ERR_FORMAT, LKV_ERR_FORMAT,
                                 LKV_ERR_FORMAT, LKV_ERR_FORMAT,
                                 LKV_ERR_UNSUPPORTED, LKV_ERR_FORMAT,
                                 LKV_ERR_FORMAT};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[] = "/tmp/lkv_tokjson_XXXXXX";
        int  fd     = mkstemp(path);
        FILE *f     = fdopen(fd, "w");
        fputs(bad[i], f);
        fclose(f);
        lkv_tokenizer_t *tok = NULL;
        assert_int_equal(lkv_tok_load_hf(path, &tok), want[i]);
        assert_null(tok);
        remove(path);
    }
    lkv_tokenizer_t *tok = NULL;
    assert_int_equal(lkv_tok_load_hf("/nonexistent/tokenizer.json", &tok),
                     LKV_ERR_NOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hf_llama2_spm_matches_hf_ids),
        cmocka_unit_test(hf_mistral_metaspace_matches_hf_ids),
        cmocka_unit_test(hf_llama3_bytelevel_matches_hf_ids),
        cmocka_unit_test(hf_qwen2_bytelevel_matches_hf_ids),
        cmocka_unit_test(hf_bytelevel_stream_never_splits_utf8),
        cmocka_unit_test(hf_bad_tokenizer_files_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
