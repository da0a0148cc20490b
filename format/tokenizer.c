/* tokenizer.c - the tokenizer object: vocabulary tables, BPE merging (by
 * piece score for sentencepiece vocabularies, by merge rank for Hugging
 * Face ones), special-token splitting, encoding for both kinds and
 * streaming UTF-8-safe detokenization.
 *
 * Threading: a finished tokenizer is immutable; encode/decode allocate
 * per call and may run concurrently. lkv_detok_t is per stream.
 */
#define LKV_LOG_MODULE "tokenizer"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "format/tok_impl.h"
#include "format/unicode_norm.h"

/* ---- UTF-8 ---- */

int tok_utf8_next(const char *s, size_t len, uint32_t *cp_p)
{
    const uint8_t *u = (const uint8_t *)s;
    uint32_t       cp;
    int            n;
    if (len == 0) {
        if (cp_p) {
            *cp_p = 0xFFFD;
        }
        return 0;
    }
    uint8_t c = u[0];
    if (c < 0x80) {
        cp = c;
        n  = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        n  = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        n  = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        n  = 4;
    } else {
        goto bad;
    }
    if ((size_t)n > len) {
        goto bad;
    }
    for (int i = 1; i < n; i++) {
        if ((u[i] & 0xC0) != 0x80) {
            goto bad;
        }
        cp = (cp << 6) | (u[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        goto bad;
    }
    if (cp_p) {
        *cp_p = cp;
    }
    return n;
bad:
    if (cp_p) {
        *cp_p = 0xFFFD;
    }
    return 1;
}

int tok_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- construction ---- */

static uint32_t hash_bytes(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    }
    return h;
}

static uint32_t hash_pair(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

lkv_status_t tok_new(lkv_tok_kind_t kind, int n_vocab, lkv_tokenizer_t **tok_p)
{
    if (n_vocab <= 0 || n_vocab > (1 << 24)) {
        LKV_LOG_ERROR("vocabulary size %d is out of range", n_vocab);
        return LKV_ERR_FORMAT;
    }
    lkv_tokenizer_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return LKV_ERR_NOMEM;
    }
    t->kind      = kind;
    t->n_vocab   = n_vocab;
    t->piece     = calloc((size_t)n_vocab, sizeof(*t->piece));
    t->piece_len = calloc((size_t)n_vocab, sizeof(*t->piece_len));
    t->score     = calloc((size_t)n_vocab, sizeof(*t->score));
    t->type      = calloc((size_t)n_vocab, sizeof(*t->type));
    t->dec       = calloc((size_t)n_vocab, sizeof(*t->dec));
    t->dec_len   = calloc((size_t)n_vocab, sizeof(*t->dec_len));
    if (!t->piece || !t->piece_len || !t->score || !t->type || !t->dec ||
        !t->dec_len) {
        lkv_tok_destroy(&t);
        return LKV_ERR_NOMEM;
    }
    t->bos = t->eos = t->unk = -1;
    for (int i = 0; i < 256; i++) {
        t->byte_id[i] = -1;
    }
    *tok_p = t;
    return LKV_OK;
}

lkv_status_t tok_set_piece(lkv_tokenizer_t *tok, int32_t id, const char *piece,
                           size_t len, float score, int type)
{
    if (id < 0 || id >= tok->n_vocab) {
        LKV_LOG_ERROR("token id %d is outside the vocabulary (%d)", id,
                      tok->n_vocab);
        return LKV_ERR_FORMAT;
    }
    char *p = malloc(len + 1);
    if (p == NULL) {
        return LKV_ERR_NOMEM;
    }
    memcpy(p, piece, len);
    p[len] = '\0';
    free(tok->piece[id]);
    tok->piece[id]     = p;
    tok->piece_len[id] = (uint32_t)len;
    tok->score[id]     = score;
    tok->type[id]      = (uint8_t)type;
    return LKV_OK;
}

lkv_status_t tok_build_index(lkv_tokenizer_t *tok)
{
    if (tok->hash != NULL) {
        return LKV_OK;
    }
    uint32_t cap = 16;
    while (cap < (uint32_t)tok->n_vocab * 2u) {
        cap <<= 1;
    }
    tok->hash = malloc(cap * sizeof(*tok->hash));
    if (tok->hash == NULL) {
        return LKV_ERR_NOMEM;
    }
    memset(tok->hash, 0xFF, cap * sizeof(*tok->hash));
    tok->hash_mask = cap - 1;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        if (tok->piece[id] == NULL) {
            /* a hole in the vocabulary: give it an empty unused piece */
            LKV_CHECK(tok_set_piece(tok, id, "", 0, 0.0f, TOKT_UNUSED));
            continue;
        }
        uint32_t h = hash_bytes(tok->piece[id], tok->piece_len[id]) &
                     tok->hash_mask;
        bool dup = false;
        while (tok->hash[h] >= 0) {
            int32_t o = tok->hash[h];
            if (tok->piece_len[o] == tok->piece_len[id] &&
                memcmp(tok->piece[o], tok->piece[id], tok->piece_len[id]) ==
                    0) {
                dup = true; /* first id wins, like sentencepiece */
                break;
            }
            h = (h + 1) & tok->hash_mask;
        }
        if (!dup) {
            tok->hash[h] = id;
        }
    }
    return LKV_OK;
}

int32_t tok_lookup(const lkv_tokenizer_t *tok, const char *s, size_t len)
{
    uint32_t h = hash_bytes(s, len) & tok->hash_mask;
    while (tok->hash[h] >= 0) {
        int32_t id = tok->hash[h];
        if (tok->piece_len[id] == len && memcmp(tok->piece[id], s, len) == 0) {
            return id;
        }
        h = (h + 1) & tok->hash_mask;
    }
    return -1;
}

static const tok_merge_t *merge_find(const lkv_tokenizer_t *tok, int32_t a,
                                     int32_t b)
{
    if (tok->merges == NULL) {
        return NULL;
    }
    uint32_t h = hash_pair(a, b) & tok->merge_mask;
    while (tok->merges[h].a >= 0) {
        if (tok->merges[h].a == a && tok->merges[h].b == b) {
            return &tok->merges[h];
        }
        h = (h + 1) & tok->merge_mask;
    }
    return NULL;
}

static lkv_status_t merge_grow(lkv_tokenizer_t *tok)
{
    uint32_t     cap = tok->merges ? (tok->merge_mask + 1) * 2 : 1024;
    tok_merge_t *m   = malloc(cap * sizeof(*m));
    if (m == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < cap; i++) {
        m[i].a = -1;
    }
    if (tok->merges != NULL) {
        for (uint32_t i = 0; i <= tok->merge_mask; i++) {
            tok_merge_t *o = &tok->merges[i];
            if (o->a < 0) {
                continue;
            }
            uint32_t h = hash_pair(o->a, o->b) & (cap - 1);
            while (m[h].a >= 0) {
                h = (h + 1) & (cap - 1);
            }
            m[h] = *o;
        }
        free(tok->merges);
    }
    tok->merges     = m;
    tok->merge_mask = cap - 1;
    return LKV_OK;
}

lkv_status_t tok_add_merge(lkv_tokenizer_t *tok, const char *a, size_t a_len,
                           const char *b, size_t b_len, int32_t rank)
{
    LKV_CHECK(tok_build_index(tok));
    int32_t ia = tok_lookup(tok, a, a_len);
    int32_t ib = tok_lookup(tok, b, b_len);
    if (ia < 0 || ib < 0) {
        return LKV_OK;
    }
    char  stack[256];
    char *buf = a_len + b_len <= sizeof(stack) ? stack : malloc(a_len + b_len);
    if (buf == NULL) {
        return LKV_ERR_NOMEM;
    }
    memcpy(buf, a, a_len);
    memcpy(buf + a_len, b, b_len);
    int32_t r = tok_lookup(tok, buf, a_len + b_len);
    if (buf != stack) {
        free(buf);
    }
    if (r < 0) {
        return LKV_OK;
    }
    if (merge_find(tok, ia, ib) != NULL) {
        return LKV_OK; /* first (lowest) rank wins */
    }
    if (tok->merges == NULL ||
        (uint32_t)(tok->n_merges + 1) * 2 > tok->merge_mask + 1) {
        LKV_CHECK(merge_grow(tok));
    }
    uint32_t h = hash_pair(ia, ib) & tok->merge_mask;
    while (tok->merges[h].a >= 0) {
        h = (h + 1) & tok->merge_mask;
    }
    tok->merges[h] = (tok_merge_t){.a = ia, .b = ib, .result = r, .rank = rank};
    tok->n_merges++;
    tok->use_merges = true;
    return LKV_OK;
}

static int parse_byte_piece(const char *p, size_t len)
{
    if (len != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') {
        return -1;
    }
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int  d = (c >= '0' && c <= '9')   ? c - '0'
                 : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                 : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                          : -1;
        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* added tokens: longest first, then lowest id (insertion sort: few) */
static void sort_added(lkv_tokenizer_t *t)
{
    for (int i = 1; i < t->n_added; i++) {
        int32_t x = t->added[i];
        int     j = i - 1;
        while (j >= 0 && t->piece_len[t->added[j]] < t->piece_len[x]) {
            t->added[j + 1] = t->added[j];
            j--;
        }
        t->added[j + 1] = x;
    }
}

/* decoded text of one id */
static lkv_status_t build_dec(lkv_tokenizer_t *tok, int32_t id)
{
    const char *p   = tok->piece[id];
    size_t      len = tok->piece_len[id];
    int         ty  = tok->type[id];
    char       *out = malloc(len * 4 + 4);
    size_t      n   = 0;
    if (out == NULL) {
        return LKV_ERR_NOMEM;
    }
    if (ty == TOKT_CONTROL || ty == TOKT_UNUSED) {
        /* no text */
    } else if (ty == TOKT_BYTE && parse_byte_piece(p, len) >= 0) {
        out[n++] = (char)parse_byte_piece(p, len);
    } else if (tok->kind == LKV_TOK_BPE && ty == TOKT_NORMAL) {
        size_t i = 0;
        while (i < len) {
            uint32_t cp;
            int      k = tok_utf8_next(p + i, len - i, &cp);
            int      b = tok_cp_to_byte(cp);
            if (b >= 0 && k > 0 && (cp != 0xFFFD || k == 3)) {
                out[n++] = (char)b;
            } else {
                memcpy(out + n, p + i, (size_t)k);
                n += (size_t)k;
            }
            i += (size_t)(k > 0 ? k : 1);
        }
    } else if (tok->kind == LKV_TOK_SPM && tok->meta_space) {
        /* U+2581 (e2 96 81) -> space */
        size_t i = 0;
        while (i < len) {
            if (i + 3 <= len && (uint8_t)p[i] == 0xE2 &&
                (uint8_t)p[i + 1] == 0x96 && (uint8_t)p[i + 2] == 0x81) {
                out[n++] = ' ';
                i += 3;
            } else {
                out[n++] = p[i++];
            }
        }
    } else {
        memcpy(out, p, len);
        n = len;
    }
    out[n]            = '\0';
    tok->dec[id]      = out;
    tok->dec_len[id]  = (uint32_t)n;
    if (n > tok->max_dec) {
        tok->max_dec = n;
    }
    return LKV_OK;
}

lkv_status_t tok_finish(lkv_tokenizer_t *tok)
{
    LKV_CHECK(tok_build_index(tok));
    int n_added = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        int b = parse_byte_piece(tok->piece[id], tok->piece_len[id]);
        if (tok->kind == LKV_TOK_SPM && b >= 0 &&
            (tok->type[id] == TOKT_BYTE || tok->type[id] == TOKT_NORMAL)) {
            tok->type[id] = TOKT_BYTE;
            if (tok->byte_id[b] < 0) {
                tok->byte_id[b] = id;
            }
        }
        if ((tok->type[id] == TOKT_CONTROL || tok->type[id] == TOKT_USER) &&
            tok->piece_len[id] > 0) {
            n_added++;
        }
        LKV_CHECK(build_dec(tok, id));
    }
    if (n_added > 0) {
        tok->added = malloc((size_t)n_added * sizeof(*tok->added));
        if (tok->added == NULL) {
            return LKV_ERR_NOMEM;
        }
        for (int32_t id = 0; id < tok->n_vocab; id++) {
            if ((tok->type[id] == TOKT_CONTROL || tok->type[id] == TOKT_USER) &&
                tok->piece_len[id] > 0) {
                tok->added[tok->n_added++]               = id;
                tok->added_first[(uint8_t)tok->piece[id][0]] = true;
            }
        }
        sort_added(tok);
    }
    return LKV_OK;
}

void lkv_tok_destroy(lkv_tokenizer_t **tok_p)
{
    if (tok_p == NULL || *tok_p == NULL) {
        return;
    }
    lkv_tokenizer_t *t = *tok_p;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->piece) {
            free(t->piece[i]);
        }
        if (t->dec) {
            free(t->dec[i]);
        }
    }
    free(t->piece);
    free(t->piece_len);
    free(t->score);
    free(t->type);
    free(t->dec);
    free(t->dec_len);
    free(t->hash);
    free(t->merges);
    free(t->added);
    free(t);
    *tok_p = NULL;
}

/* ---- accessors ---- */

lkv_tok_kind_t lkv_tok_kind(const lkv_tokenizer_t *tok) { return tok->kind; }
int     lkv_tok_vocab_size(const lkv_tokenizer_t *tok) { return tok->n_vocab; }
int32_t lkv_tok_bos(const lkv_tokenizer_t *tok) { return tok->bos; }
int32_t lkv_tok_eos(const lkv_tokenizer_t *tok) { return tok->eos; }
bool    lkv_tok_add_bos_default(const lkv_tokenizer_t *tok)
{
    return tok->add_bos && tok->bos >= 0;
}

const char *lkv_tok_piece(const lkv_tokenizer_t *tok, int32_t id)
{
    if (tok == NULL || id < 0 || id >= tok->n_vocab) {
        return NULL;
    }
    return tok->piece[id];
}

bool lkv_tok_is_special(const lkv_tokenizer_t *tok, int32_t id)
{
    if (tok == NULL || id < 0 || id >= tok->n_vocab) {
        return false;
    }
    return tok->type[id] == TOKT_CONTROL;
}

size_t lkv_tok_max_piece_bytes(const lkv_tokenizer_t *tok)
{
    return tok->max_dec + 8; /* + a held partial character / U+FFFD */
}

/* ---- encoding ---- */

typedef struct {
    int32_t *v;
    int      n, cap;
    bool     oom;
} ivec_t;

static void iv_push(ivec_t *iv, int32_t id)
{
    if (iv->oom) {
        return;
    }
    if (iv->n == iv->cap) {
        int      cap = iv->cap ? iv->cap * 2 : 64;
        int32_t *nv  = realloc(iv->v, (size_t)cap * sizeof(*nv));
        if (nv == NULL) {
            iv->oom = true;
            return;
        }
        iv->v   = nv;
        iv->cap = cap;
    }
    iv->v[iv->n++] = id;
}

typedef struct {
    int     start, len;
    int     prev, next;
    int32_t id;
} sym_t;

typedef struct {
    double  rank;
    int     left, pos;
    int     left_len, right_len;
    int32_t result;
} cand_t;

typedef struct {
    cand_t *v;
    int     n, cap;
    bool    oom;
} heap_t;

static bool cand_less(const cand_t *a, const cand_t *b)
{
    if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->pos < b->pos;
}

static void heap_push(heap_t *h, cand_t c)
{
    if (h->n == h->cap) {
        int     cap = h->cap ? h->cap * 2 : 64;
        cand_t *nv  = realloc(h->v, (size_t)cap * sizeof(*nv));
        if (nv == NULL) {
            h->oom = true;
            return;
        }
        h->v   = nv;
        h->cap = cap;
    }
    int i    = h->n++;
    h->v[i]  = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&h->v[i], &h->v[p])) {
            break;
        }
        cand_t t = h->v[i];
        h->v[i]  = h->v[p];
        h->v[p]  = t;
        i        = p;
    }
}

static cand_t heap_pop(heap_t *h)
{
    cand_t top = h->v[0];
    h->v[0]    = h->v[--h->n];
    int i      = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && cand_less(&h->v[l], &h->v[m])) {
            m = l;
        }
        if (r < h->n && cand_less(&h->v[r], &h->v[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        cand_t t = h->v[i];
        h->v[i]  = h->v[m];
        h->v[m]  = t;
        i        = m;
    }
    return top;
}

static bool mergeable_type(int type)
{
    return type == TOKT_NORMAL || type == TOKT_USER || type == TOKT_UNKNOWN;
}

static void try_pair(const lkv_tokenizer_t *tok, const char *text, sym_t *sy,
                     int left, heap_t *h)
{
    int right = sy[left].next;
    if (right < 0) {
        return;
    }
    cand_t c = {.left      = left,
                .pos       = sy[left].start,
                .left_len  = sy[left].len,
                .right_len = sy[right].len};
    if (tok->use_merges) {
        if (sy[left].id < 0 || sy[right].id < 0) {
            return;
        }
        const tok_merge_t *m = merge_find(tok, sy[left].id, sy[right].id);
        if (m == NULL) {
            return;
        }
        c.rank   = m->rank;
        c.result = m->result;
    } else {
        int32_t id = tok_lookup(tok, text + sy[left].start,
                                (size_t)(sy[left].len + sy[right].len));
        if (id < 0 || !mergeable_type(tok->type[id])) {
            return;
        }
        c.rank   = -(double)tok->score[id];
        c.result = id;
    }
    heap_push(h, c);
}

/* BPE-merge text[0..len) starting from one symbol per UTF-8 character and
 * append the ids (with byte fallback / unk) to out. */
static void bpe_word(const lkv_tokenizer_t *tok, const char *text, size_t len,
                     ivec_t *out)
{
    if (len == 0) {
        return;
    }
    if (tok->ignore_merges) {
        int32_t id = tok_lookup(tok, text, len);
        if (id >= 0) {
            iv_push(out, id);
            return;
        }
    }
    sym_t *sy = malloc(len * sizeof(*sy));
    if (sy == NULL) {
        out->oom = true;
        return;
    }
    int    n = 0;
    size_t i = 0;
    while (i < len) {
        int k     = tok_utf8_next(text + i, len - i, NULL);
        sy[n]     = (sym_t){.start = (int)i, .len = k, .prev = n - 1,
                            .next = n + 1};
        sy[n].id  = tok_lookup(tok, text + i, (size_t)k);
        if (sy[n].id >= 0 && !mergeable_type(tok->type[sy[n].id]) &&
            tok->type[sy[n].id] != TOKT_BYTE) {
            sy[n].id = -1;
        }
        i += (size_t)k;
        n++;
    }
    sy[n - 1].next = -1;
    heap_t h       = {0};
    for (int s = 0; s + 1 < n; s++) {
        try_pair(tok, text, sy, s, &h);
    }
    while (h.n > 0 && !h.oom) {
        cand_t c = heap_pop(&h);
        sym_t *L = &sy[c.left];
        if (L->len != c.left_len || L->len == 0 || L->next < 0) {
            continue;
        }
        sym_t *R = &sy[L->next];
        if (R->len != c.right_len || R->len == 0) {
            continue;
        }
        L->len += R->len;
        L->id   = c.result;
        L->next = R->next;
        if (R->next >= 0) {
            sy[R->next].prev = c.left;
        }
        R->len = 0;
        if (L->prev >= 0) {
            try_pair(tok, text, sy, L->prev, &h);
        }
        try_pair(tok, text, sy, c.left, &h);
    }
    if (h.oom) {
        out->oom = true;
    }
    free(h.v);
    bool last_unk = false;
    for (int s = 0; s >= 0 && s < n; s = sy[s].next) {
        if (sy[s].id >= 0) {
            iv_push(out, sy[s].id);
            last_unk = false;
            continue;
        }
        const uint8_t *b      = (const uint8_t *)text + sy[s].start;
        bool           all_ok = tok->byte_fallback;
        for (int j = 0; all_ok && j < sy[s].len; j++) {
            all_ok = tok->byte_id[b[j]] >= 0;
        }
        if (all_ok) {
            for (int j = 0; j < sy[s].len; j++) {
                iv_push(out, tok->byte_id[b[j]]);
            }
            last_unk = false;
        } else if (tok->unk >= 0) {
            if (!(tok->fuse_unk && last_unk)) {
                iv_push(out, tok->unk);
            }
            last_unk = true;
        }
    }
    free(sy);
}

typedef struct {
    const lkv_tokenizer_t *tok;
    ivec_t                *out;
    char                  *buf;
    size_t                 cap;
    bool                   oom;
} bpe_ctx_t;

/* byte-level BPE: map the word's bytes to the GPT-2 code points, merge */
static void bpe_bytelevel_word(void *vctx, const char *s, size_t len)
{
    bpe_ctx_t *ctx = vctx;
    if (len * 2 > ctx->cap) {
        size_t cap = len * 2 + 64;
        char  *nb  = realloc(ctx->buf, cap);
        if (nb == NULL) {
            ctx->out->oom = true;
            return;
        }
        ctx->buf = nb;
        ctx->cap = cap;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n += (size_t)tok_utf8_encode(tok_byte_to_cp((uint8_t)s[i]),
                                     ctx->buf + n);
    }
    bpe_word(ctx->tok, ctx->buf, n, ctx->out);
}

static void spm_segment(const lkv_tokenizer_t *tok, const char *text,
                        size_t len, bool at_start, ivec_t *out)
{
    if (len == 0) {
        return;
    }
    bool prefix = tok->prefix == TOK_PREFIX_ALWAYS ||
                  (tok->prefix == TOK_PREFIX_FIRST && at_start);
    if (prefix && tok->prefix_unless_space &&
        (text[0] == ' ' ||
         (tok->meta_space && len >= 3 && memcmp(text, "\xE2\x96\x81", 3) == 0))) {
        prefix = false; /* already starts with the space piece */
    }
    size_t sp_len = tok->meta_space ? 3 : 1;
    size_t cap    = (len + 1) * sp_len;
    char  *buf    = malloc(cap);
    if (buf == NULL) {
        out->oom = true;
        return;
    }
    size_t n = 0;
    if (prefix) {
        if (tok->meta_space) {
            memcpy(buf, "\xE2\x96\x81", 3);
        } else {
            buf[0] = ' ';
        }
        n = sp_len;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ' && tok->meta_space) {
            memcpy(buf + n, "\xE2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    if (!tok->split_words) {
        bpe_word(tok, buf, n, out);
    } else {
        /* words start at each space piece (merged with the next word) */
        const char *sp    = tok->meta_space ? "\xE2\x96\x81" : " ";
        size_t      start = 0;
        for (size_t i = sp_len; i + sp_len <= n; i++) {
            if (memcmp(buf + i, sp, sp_len) == 0) {
                bpe_word(tok, buf + start, i - start, out);
                start = i;
                i += sp_len - 1;
            }
        }
        bpe_word(tok, buf + start, n - start, out);
    }
    free(buf);
}

static void encode_segment(const lkv_tokenizer_t *tok, const char *text,
                           size_t len, bool at_start, ivec_t *out,
                           bpe_ctx_t *bctx)
{
    char  *norm = NULL;
    size_t nlen = 0;
    if (tok->nfc && len > 0) {
        if (lkv_uni_nfc(text, len, &norm, &nlen) != LKV_OK) {
            out->oom = true;
            return;
        }
        if (norm != NULL) {
            text = norm;
            len  = nlen;
        }
    }
    if (tok->kind == LKV_TOK_SPM) {
        spm_segment(tok, text, len, at_start, out);
    } else {
        tok_pretokenize(tok->pre, text, len, bpe_bytelevel_word, bctx);
    }
    free(norm);
}

lkv_status_t lkv_tok_encode(const lkv_tokenizer_t *tok, const char *text,
                            size_t len, bool add_bos, bool parse_special,
                            int32_t *ids, int max_ids, int *n_ids_p)
{
    if (tok == NULL || (text == NULL && len > 0) || n_ids_p == NULL ||
        (ids == NULL && max_ids > 0) || max_ids < 0) {
        return LKV_ERR_INVALID;
    }
    ivec_t    out  = {0};
    bpe_ctx_t bctx = {.tok = tok, .out = &out};
    if (add_bos && tok->bos >= 0) {
        iv_push(&out, tok->bos);
    }
    size_t seg = 0, i = 0;
    while (i < len) {
        int32_t hit = -1;
        if (tok->n_added > 0 && tok->added_first[(uint8_t)text[i]]) {
            for (int a = 0; a < tok->n_added; a++) {
                int32_t id = tok->added[a];
                if (tok->type[id] == TOKT_CONTROL && !parse_special) {
                    continue;
                }
                size_t pl = tok->piece_len[id];
                if (pl <= len - i && memcmp(text + i, tok->piece[id], pl) == 0) {
                    hit = id;
                    break;
                }
            }
        }
        if (hit < 0) {
            i++;
            continue;
        }
        encode_segment(tok, text + seg, i - seg, seg == 0, &out, &bctx);
        iv_push(&out, hit);
        i += tok->piece_len[hit];
        seg = i;
    }
    encode_segment(tok, text + seg, len - seg, seg == 0, &out, &bctx);
    free(bctx.buf);
    if (out.oom) {
        free(out.v);
        LKV_LOG_ERROR("out of memory encoding %zu bytes of text", len);
        return LKV_ERR_NOMEM;
    }
    int n = out.n < max_ids ? out.n : max_ids;
    if (n > 0) {
        memcpy(ids, out.v, (size_t)n * sizeof(*ids));
    }
    *n_ids_p = out.n;
    free(out.v);
    return LKV_OK;
}

/* ---- streaming decode ---- */

void lkv_detok_init(lkv_detok_t *st)
{
    memset(st, 0, sizeof(*st));
    st->prev_id = -1;
}

static int utf8_need(uint8_t lead)
{
    if (lead >= 0xC2 && lead <= 0xDF) {
        return 2;
    }
    if (lead >= 0xE0 && lead <= 0xEF) {
        return 3;
    }
    if (lead >= 0xF0 && lead <= 0xF4) {
        return 4;
    }
    return 0;
}

/* whether byte b may follow pending[0..n) in a valid sequence */
static bool utf8_cont_ok(const uint8_t *pending, int n, uint8_t b)
{
    if ((b & 0xC0) != 0x80) {
        return false;
    }
    if (n == 1) {
        uint8_t l = pending[0];
        if (l == 0xE0 && b < 0xA0) {
            return false; /* overlong */
        }
        if (l == 0xED && b > 0x9F) {
            return false; /* surrogate */
        }
        if (l == 0xF0 && b < 0x90) {
            return false;
        }
        if (l == 0xF4 && b > 0x8F) {
            return false;
        }
    }
    return true;
}

typedef struct {
    char  *out;
    size_t cap, n;
} sink_t;

static void sink_put(sink_t *s, const void *p, size_t len)
{
    if (s->cap == 0 || s->n + len + 1 > s->cap) {
        return; /* does not fit: dropped (whole characters only) */
    }
    memcpy(s->out + s->n, p, len);
    s->n += len;
}

static void detok_bytes(lkv_detok_t *st, const uint8_t *b, size_t len,
                        sink_t *s)
{
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t            i       = 0;
    while (i < len) {
        uint8_t c = b[i];
        if (st->n_pending == 0) {
            if (c < 0x80) {
                /* copy the whole ASCII run at once */
                size_t j = i;
                while (j < len && b[j] < 0x80) {
                    j++;
                }
                sink_put(s, b + i, j - i);
                i = j;
                continue;
            }
            if (utf8_need(c) == 0) {
                sink_put(s, repl, 3);
            } else {
                st->pending[0] = c;
                st->n_pending  = 1;
            }
            i++;
            continue;
        }
        if (!utf8_cont_ok(st->pending, st->n_pending, c)) {
            sink_put(s, repl, 3); /* broken character; reprocess c */
            st->n_pending = 0;
            continue;
        }
        st->pending[st->n_pending++] = c;
        if (st->n_pending == utf8_need(st->pending[0])) {
            sink_put(s, st->pending, (size_t)st->n_pending);
            st->n_pending = 0;
        }
        i++;
    }
}

static void detok_id(const lkv_tokenizer_t *tok, lkv_detok_t *st, int32_t id,
                     sink_t *s)
{
    if (id < 0 || id >= tok->n_vocab) {
        st->prev_id = id;
        return;
    }
    const uint8_t *d   = (const uint8_t *)tok->dec[id];
    size_t         len = tok->dec_len[id];
    if (tok->kind == LKV_TOK_SPM && tok->prefix != TOK_PREFIX_NEVER &&
        tok->bos >= 0 && st->prev_id == tok->bos && len > 0 && d[0] == ' ') {
        d++;
        len--;
    }
    detok_bytes(st, d, len, s);
    st->prev_id = id;
}

size_t lkv_detok_push(const lkv_tokenizer_t *tok, lkv_detok_t *st, int32_t id,
                      char *out, size_t cap)
{
    sink_t s = {.out = out, .cap = cap};
    if (tok == NULL || st == NULL || out == NULL || cap == 0) {
        return 0;
    }
    detok_id(tok, st, id, &s);
    out[s.n] = '\0';
    return s.n;
}

size_t lkv_detok_flush(lkv_detok_t *st, char *out, size_t cap)
{
    if (st == NULL || out == NULL || cap == 0) {
        return 0;
    }
    sink_t s = {.out = out, .cap = cap};
    if (st->n_pending > 0) {
        sink_put(&s, "\xEF\xBF\xBD", 3);
        st->n_pending = 0;
    }
    out[s.n] = '\0';
    return s.n;
}

lkv_status_t lkv_tok_decode(const lkv_tokenizer_t *tok, const int32_t *ids,
                            int n_ids, char **text_p)
{
    if (tok == NULL || text_p == NULL || n_ids < 0 ||
        (ids == NULL && n_ids > 0)) {
        return LKV_ERR_INVALID;
    }
    size_t cap = 16;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] >= 0 && ids[i] < tok->n_vocab) {
            cap += tok->dec_len[ids[i]] * 3 + 3; /* worst case: all U+FFFD */
        }
    }
    char *buf = malloc(cap);
    if (buf == NULL) {
        return LKV_ERR_NOMEM;
    }
    lkv_detok_t st;
    lkv_detok_init(&st);
    st.prev_id = tok->bos; /* the start of text behaves like after BOS */
    sink_t s   = {.out = buf, .cap = cap};
    for (int i = 0; i < n_ids; i++) {
        detok_id(tok, &st, ids[i], &s);
    }
    if (st.n_pending > 0) {
        sink_put(&s, "\xEF\xBF\xBD", 3);
    }
    buf[s.n] = '\0';
    *text_p  = buf;
    return LKV_OK;
}
