/* tok_spm.c - sentencepiece-style BPE vocabularies: the llama2.c
 * tokenizer.bin loader (GGUF "llama" vocabularies are read in gguf.c and
 * built with the same helpers).
 *
 * tokenizer.bin: int32 max_token_length, then per id: float32 score, int32
 * len, len raw bytes. Ids 0/1/2 are <unk>/<s>/</s> (llama2.c convention),
 * <0xNN> pieces are byte fallback, spaces are stored as ' ' (not U+2581).
 * Encoding prepends one space to non-empty text (sentencepiece's dummy
 * prefix) and merges the highest-scoring pair first.
 *
 * Threading: loading is single-threaded; the result is immutable.
 */
#define LKV_LOG_MODULE "tokenizer"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "format/fmt_impl.h"
#include "format/tok_impl.h"

static bool rd(const uint8_t *data, size_t len, size_t *pos, void *out,
               size_t n)
{
    if (n > len - *pos) {
        return false;
    }
    memcpy(out, data + *pos, n);
    *pos += n;
    return true;
}

lkv_status_t lkv_tok_load_llama2c(const char *path, int vocab_size,
                                  lkv_tokenizer_t **tok_p)
{
    if (path == NULL || tok_p == NULL || vocab_size <= 0) {
        return LKV_ERR_INVALID;
    }
    char  *data = NULL;
    size_t len  = 0;
    LKV_CHECK(fmt_read_file(path, &data, &len));
    const uint8_t   *u   = (const uint8_t *)data;
    lkv_tokenizer_t *tok = NULL;
    lkv_status_t     st  = tok_new(LKV_TOK_SPM, vocab_size, &tok);
    size_t           pos = 0;
    int32_t          max_len;
    if (st != LKV_OK) {
        goto out;
    }
    if (!rd(u, len, &pos, &max_len, 4) || max_len <= 0 || max_len > 65536) {
        LKV_LOG_ERROR("%s: not a llama2.c tokenizer.bin (bad header)", path);
        st = LKV_ERR_FORMAT;
        goto out;
    }
    for (int id = 0; id < vocab_size; id++) {
        float   score;
        int32_t n;
        if (!rd(u, len, &pos, &score, 4) || !rd(u, len, &pos, &n, 4)) {
            LKV_LOG_ERROR("%s: truncated at token %d of %d (offset %zu)", path,
                          id, vocab_size, pos);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        if (n < 0 || n > max_len * 4 + 16 || (size_t)n > len - pos) {
            LKV_LOG_ERROR("%s: token %d has invalid length %d at offset %zu "
                          "(file is %zu bytes)",
                          path, id, n, pos, len);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        int type = id == 0 ? TOKT_UNKNOWN : (id <= 2 ? TOKT_CONTROL : TOKT_NORMAL);
        st = tok_set_piece(tok, id, data + pos, (size_t)n, score, type);
        if (st != LKV_OK) {
            goto out;
        }
        pos += (size_t)n;
    }
    if (pos != len) {
        LKV_LOG_WARN("%s: %zu trailing bytes after %d tokens", path, len - pos,
                     vocab_size);
    }
    tok->unk           = 0;
    tok->bos           = vocab_size > 1 ? 1 : -1;
    tok->eos           = vocab_size > 2 ? 2 : -1;
    tok->add_bos       = true;
    tok->meta_space    = false;
    tok->prefix        = TOK_PREFIX_ALWAYS;
    tok->byte_fallback = true;
    st                 = tok_finish(tok);
out:
    free(data);
    if (st != LKV_OK) {
        lkv_tok_destroy(&tok);
        return st;
    }
    *tok_p = tok;
    return LKV_OK;
}
