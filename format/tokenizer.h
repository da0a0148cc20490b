/* tokenizer.h - text <-> token ids for the model families layerkv serves.
 *
 * Kinds:
 *   SPM   sentencepiece-style BPE with byte fallback (<0xNN> pieces), "▁" or
 *         " " as the space piece: GGUF tokenizer.ggml.model = llama, llama2.c
 *         tokenizer.bin, HF tokenizer.json of the Llama-2 flavour.
 *   BPE   byte-level BPE (GPT-2 byte<->unicode map, regex pre-tokenizer):
 *         HF tokenizer.json of Llama-3 / Qwen2, GGUF tokenizer.ggml.model = gpt2.
 * Special tokens (added_tokens) are matched in the text as whole strings when
 * parse_special is true.
 *
 * Streaming detokenization: lkv_detok_push() returns only complete UTF-8
 * characters; a partial character is held in the state until its remaining
 * bytes arrive (or flushed as U+FFFD by lkv_detok_flush()).
 *
 * Threading: a tokenizer is immutable after creation and may be shared;
 * lkv_detok_t is per stream.
 */
#ifndef LKV_FORMAT_TOKENIZER_H
#define LKV_FORMAT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_tokenizer lkv_tokenizer_t;

typedef enum {
    LKV_TOK_SPM = 0,
    LKV_TOK_BPE = 1,
} lkv_tok_kind_t;

/* Load a llama2.c tokenizer.bin (vocab_size entries expected; ids 0/1/2
 * are unk/BOS/EOS). Errors: LKV_ERR_NOTFOUND, LKV_ERR_FORMAT (truncated or
 * corrupt), LKV_ERR_INVALID, LKV_ERR_NOMEM. */
lkv_status_t lkv_tok_load_llama2c(const char *path, int vocab_size,
                                  lkv_tokenizer_t **tok_p);
/* Load a Hugging Face tokenizer.json (+ optional tokenizer_config.json in the
 * same directory for bos/eos and add_bos). BPE models only: byte-level
 * (ByteLevel pre-tokenizer with the GPT-2, Llama-3 or Qwen2 split regex) or
 * sentencepiece-compatible (Prepend/Replace normalizers or Metaspace,
 * byte_fallback); NFC normalizer supported. Errors: LKV_ERR_NOTFOUND,
 * LKV_ERR_FORMAT (invalid JSON/structure), LKV_ERR_UNSUPPORTED (other
 * models, regexes or normalizers), LKV_ERR_NOMEM. */
lkv_status_t lkv_tok_load_hf(const char *tokenizer_json_path,
                             lkv_tokenizer_t **tok_p);
void         lkv_tok_destroy(lkv_tokenizer_t **tok_p);

lkv_tok_kind_t lkv_tok_kind(const lkv_tokenizer_t *tok);
int            lkv_tok_vocab_size(const lkv_tokenizer_t *tok);
int32_t        lkv_tok_bos(const lkv_tokenizer_t *tok); /* -1 if none */
int32_t        lkv_tok_eos(const lkv_tokenizer_t *tok); /* -1 if none */
/* Whether encode() should put BOS first by default for this model. */
bool           lkv_tok_add_bos_default(const lkv_tokenizer_t *tok);

/* Encode len bytes of text. Writes at most max_ids ids; *n_ids_p gets the
 * full count (call again with a bigger buffer if it exceeds max_ids).
 * Invalid UTF-8 is encoded byte by byte (byte fallback / byte-level).
 * Errors: LKV_ERR_INVALID (NULL arguments). */
lkv_status_t lkv_tok_encode(const lkv_tokenizer_t *tok, const char *text,
                            size_t len, bool add_bos, bool parse_special,
                            int32_t *ids, int max_ids, int *n_ids_p);

/* The raw piece for id (as stored in the vocab), NULL if out of range. */
const char *lkv_tok_piece(const lkv_tokenizer_t *tok, int32_t id);

/* Whether id is a control/special token (BOS, EOS, added special tokens):
 * such tokens produce no text when decoded. False when out of range. */
bool lkv_tok_is_special(const lkv_tokenizer_t *tok, int32_t id);

/* The most bytes one lkv_detok_push() can write (excluding the NUL): a
 * buffer of this size + 1 never truncates. */
size_t lkv_tok_max_piece_bytes(const lkv_tokenizer_t *tok);

/* Streaming decode state; zero-initialise (or lkv_detok_init) per stream. */
typedef struct {
    uint8_t pending[8]; /* bytes of an incomplete UTF-8 character */
    int     n_pending;
    int32_t prev_id;    /* previous id (-1 at start): SPM drops the leading
                           space of the first piece after BOS */
} lkv_detok_t;

void lkv_detok_init(lkv_detok_t *st);
/* Append the text of id to out (capacity cap, NUL-terminated); returns the
 * number of bytes written, only whole UTF-8 characters. Special/control
 * tokens (BOS, EOS) produce no text; ids out of range produce none either.
 * A cap of lkv_tok_max_piece_bytes() + 1 is always enough (text that does
 * not fit is cut at a character boundary and lost).
 * SPM: a leading space is dropped when prev_id is BOS (so a generated
 * continuation keeps its space: set st->prev_id to the last prompt id). */
size_t lkv_detok_push(const lkv_tokenizer_t *tok, lkv_detok_t *st, int32_t id,
                      char *out, size_t cap);
/* Emit what is pending at end of stream (U+FFFD for a broken character). */
size_t lkv_detok_flush(lkv_detok_t *st, char *out, size_t cap);

/* Decode a whole id sequence into a malloc'd NUL-terminated string (caller
 * frees). Like Hugging Face decode(): special tokens produce no text and,
 * for SPM, the leading space of the first piece is dropped. */
lkv_status_t lkv_tok_decode(const lkv_tokenizer_t *tok, const int32_t *ids,
                            int n_ids, char **text_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_FORMAT_TOKENIZER_H */
