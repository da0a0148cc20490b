/* unicode_norm.h - format/ private: Unicode NFC normalization (for HF
 * tokenizers whose normalizer is NFC, e.g. Qwen2) and its generated tables
 * (format/unicode_tables.c, tools/gen_unicode_tables.py).
 *
 * Threading: pure functions over read-only tables.
 */
#ifndef LKV_FORMAT_UNICODE_NORM_H
#define LKV_FORMAT_UNICODE_NORM_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct {
    uint32_t lo, hi;
    uint32_t ccc;
} lkv_uni_ccc_t;

typedef struct {
    uint32_t x, y, z;
} lkv_uni_pair_t;

extern const lkv_uni_ccc_t  lkv_uni_ccc[];
extern const size_t         lkv_uni_ccc_n;
extern const lkv_uni_pair_t lkv_uni_decomp[]; /* {cp, a, b}, sorted by cp */
extern const size_t         lkv_uni_decomp_n;
extern const lkv_uni_pair_t lkv_uni_comp[]; /* {a, b, cp}, sorted by a, b */
extern const size_t         lkv_uni_comp_n;
extern const uint32_t       lkv_uni_comp_second[]; /* sorted */
extern const size_t         lkv_uni_comp_second_n;

/* NFC of text[0..len). *out_p gets a malloc'd normalized copy (caller
 * frees; *out_len_p its length), or NULL when the text is already NFC (the
 * common case, checked without allocating) or is not valid UTF-8 (left
 * as is). Errors: LKV_ERR_NOMEM. */
lkv_status_t lkv_uni_nfc(const char *text, size_t len, char **out_p,
                         size_t *out_len_p);

#endif /* LKV_FORMAT_UNICODE_NORM_H */
