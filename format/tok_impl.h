/* tok_impl.h - format/ private: the tokenizer object and the helpers the
 * vocabulary loaders (tok_spm.c, tok_hf.c, gguf.c, dummy.c) use to build it.
 *
 * A tokenizer is built in three steps: tok_new(), tok_set_piece() for every
 * id (plus tok_add_merge() for merge-ranked BPE), then tok_finish(), which
 * builds the lookup tables and the decoded text of each id.
 *
 * Threading: building is single-threaded; a finished tokenizer is immutable.
 */
#ifndef LKV_FORMAT_TOK_IMPL_H
#define LKV_FORMAT_TOK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/tokenizer.h"

/* token types, numbered as GGUF tokenizer.ggml.token_type */
enum {
    TOKT_NORMAL  = 1,
    TOKT_UNKNOWN = 2,
    TOKT_CONTROL = 3, /* special: bos/eos/added special tokens; no text */
    TOKT_USER    = 4, /* added non-special token: matched in text always */
    TOKT_UNUSED  = 5,
    TOKT_BYTE    = 6, /* <0xNN> byte-fallback piece */
};

/* regex pre-tokenizers of byte-level BPE */
typedef enum {
    TOK_PRE_NONE   = 0, /* whole text is one word */
    TOK_PRE_GPT2   = 1,
    TOK_PRE_LLAMA3 = 2,
    TOK_PRE_QWEN2  = 3,
} tok_pre_t;

/* SPM dummy-prefix rule */
typedef enum {
    TOK_PREFIX_NEVER  = 0,
    TOK_PREFIX_ALWAYS = 1, /* every text segment between special tokens */
    TOK_PREFIX_FIRST  = 2, /* only a segment at the start of the text */
} tok_prefix_t;

typedef struct {
    int32_t a, b;   /* left and right ids */
    int32_t result; /* id of a+b */
    int32_t rank;
} tok_merge_t;

struct lkv_tokenizer {
    lkv_tok_kind_t kind;
    int            n_vocab;
    char         **piece;     /* (n_vocab) NUL-terminated; may hold NULs */
    uint32_t      *piece_len; /* (n_vocab) */
    float         *score;     /* (n_vocab) */
    uint8_t       *type;      /* (n_vocab) TOKT_* */
    char         **dec;       /* (n_vocab) decoded bytes (text) of each id */
    uint32_t      *dec_len;

    int32_t *hash; /* open addressing piece -> id, -1 empty */
    uint32_t hash_mask;

    tok_merge_t *merges; /* open addressing on (a, b); a == -1 empty */
    uint32_t     merge_mask;
    int          n_merges, cap_merges;
    bool         use_merges; /* rank by merges (HF) instead of score (SPM) */

    int32_t bos, eos, unk;
    bool    add_bos;

    /* SPM options */
    bool         meta_space;  /* pieces use U+2581 for space */
    tok_prefix_t prefix;      /* dummy-prefix space */
    bool         prefix_unless_space; /* HF Metaspace: no prefix when the
                                         segment already starts with one */
    bool         split_words; /* Metaspace split: words start at each space */
    bool         byte_fallback;
    bool         fuse_unk;
    bool         ignore_merges; /* HF: a word that is a piece is kept whole */
    int32_t      byte_id[256];  /* SPM byte-fallback id of each byte, -1 */

    /* BPE options */
    tok_pre_t pre;

    bool nfc; /* HF NFC normalizer: normalize each text segment */

    /* added tokens matched as whole strings, longest first */
    int32_t *added;
    int      n_added;
    bool     added_first[256]; /* first bytes of added tokens */
    size_t   max_dec;          /* longest decoded text */
};

lkv_status_t tok_new(lkv_tok_kind_t kind, int n_vocab, lkv_tokenizer_t **tok_p);
/* Copy len bytes of piece for id. */
lkv_status_t tok_set_piece(lkv_tokenizer_t *tok, int32_t id, const char *piece,
                           size_t len, float score, int type);
/* Record merge (a b) with rank (lower merges first); ignored (LKV_OK) when a
 * piece is unknown or a+b is not in the vocabulary. Call after all pieces
 * are set and tok_build_index() ran. */
lkv_status_t tok_add_merge(lkv_tokenizer_t *tok, const char *a, size_t a_len,
                           const char *b, size_t b_len, int32_t rank);
/* Build the piece -> id hash (needed before tok_add_merge / tok_lookup). */
lkv_status_t tok_build_index(lkv_tokenizer_t *tok);
/* id of the piece, -1 when none. */
int32_t      tok_lookup(const lkv_tokenizer_t *tok, const char *s, size_t len);
/* Finish: byte ids, decoded texts, added-token list. Builds the index if
 * not yet built. */
lkv_status_t tok_finish(lkv_tokenizer_t *tok);

/* byte-level BPE helpers (tok_bpe.c) */
/* The GPT-2 byte -> code point map. */
uint32_t tok_byte_to_cp(uint8_t b);
/* Inverse; -1 when cp is not a mapped byte. */
int      tok_cp_to_byte(uint32_t cp);
/* Split text[0..len) into pre-tokens; calls fn for each. */
typedef void (*tok_word_fn)(void *ctx, const char *s, size_t len);
void tok_pretokenize(tok_pre_t pre, const char *text, size_t len,
                     tok_word_fn fn, void *ctx);

/* UTF-8 helpers (tokenizer.c) */
/* Length of the UTF-8 sequence starting at s (1..4); invalid -> 1 and
 * *cp_p = 0xFFFD... when cp_p != NULL the code point is stored. */
int  tok_utf8_next(const char *s, size_t len, uint32_t *cp_p);
int  tok_utf8_encode(uint32_t cp, char out[4]);

/* Unicode classes (unicode_tables.c) */
bool lkv_uni_is_letter(uint32_t cp);
bool lkv_uni_is_number(uint32_t cp);
bool lkv_uni_is_space(uint32_t cp);

#endif /* LKV_FORMAT_TOK_IMPL_H */
