/* tok_bpe.c - byte-level BPE helpers: the GPT-2 byte <-> code point map and
 * the regex pre-tokenizers of GPT-2, Llama-3 and Qwen2, implemented by hand
 * (no regex engine) over the Unicode class tables in unicode_tables.c.
 *
 * The patterns, as written in the tokenizer.json files:
 *   GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
 *           \s+(?!\S)|\s+
 *   Llama-3:(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
 *           \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   Qwen2:  the Llama-3 pattern with \p{N} instead of \p{N}{1,3}
 * Each matcher below follows the alternation order and the backtracking
 * result of a leftmost-first regex engine; the text between matches (there
 * is none for these patterns: every character matches some alternative) is
 * emitted as well, as HF's Split(Isolated) does.
 *
 * Threading: pure functions over read-only tables.
 */
#include <stdlib.h>
#include <string.h>

#include "format/tok_impl.h"

/* ---- GPT-2 byte map ---- */

static bool byte_is_printable(int b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) {
        return b;
    }
    /* the n-th non-printable byte maps to 256 + n */
    uint32_t n = 0;
    for (int i = 0; i < b; i++) {
        if (!byte_is_printable(i)) {
            n++;
        }
    }
    return 256 + n;
}

int tok_cp_to_byte(uint32_t cp)
{
    if (cp < 256) {
        return byte_is_printable((int)cp) ? (int)cp : -1;
    }
    if (cp >= 256 + 68) {
        return -1; /* 68 non-printable bytes */
    }
    uint32_t n = cp - 256;
    for (int i = 0; i < 256; i++) {
        if (!byte_is_printable(i)) {
            if (n == 0) {
                return i;
            }
            n--;
        }
    }
    return -1;
}

/* ---- pre-tokenizers ---- */

typedef struct {
    uint32_t *cp;  /* (n + 1) code points, cp[n] = 0 sentinel */
    size_t   *off; /* (n + 1) byte offsets */
    size_t    n;
} cps_t;

static bool is_L(const cps_t *c, size_t i)
{
    return i < c->n && lkv_uni_is_letter(c->cp[i]);
}
static bool is_N(const cps_t *c, size_t i)
{
    return i < c->n && lkv_uni_is_number(c->cp[i]);
}
static bool is_S(const cps_t *c, size_t i)
{
    return i < c->n && lkv_uni_is_space(c->cp[i]);
}
static bool is_nl(const cps_t *c, size_t i)
{
    return i < c->n && (c->cp[i] == '\r' || c->cp[i] == '\n');
}
/* [^\s\p{L}\p{N}] */
static bool is_P(const cps_t *c, size_t i)
{
    return i < c->n && !is_S(c, i) && !is_L(c, i) && !is_N(c, i);
}

static uint32_t lower_ascii(uint32_t cp)
{
    return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
}

/* 's 't 're 've 'm 'll 'd at i; returns the length in code points or 0 */
static size_t match_contraction(const cps_t *c, size_t i, bool icase)
{
    if (i >= c->n || c->cp[i] != '\'' || i + 1 >= c->n) {
        return 0;
    }
    uint32_t a = c->cp[i + 1], b = i + 2 < c->n ? c->cp[i + 2] : 0;
    if (icase) {
        a = lower_ascii(a);
        b = lower_ascii(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
        (a == 'l' && b == 'l')) {
        return 3;
    }
    return 0;
}

/* \s+(?!\S)|\s+ at i (i is whitespace) */
static size_t match_space_tail(const cps_t *c, size_t i)
{
    size_t k = 0;
    while (is_S(c, i + k)) {
        k++;
    }
    if (i + k == c->n || k == 1) {
        return k;
    }
    return k - 1;
}

static size_t match_gpt2(const cps_t *c, size_t i)
{
    size_t k = match_contraction(c, i, false);
    if (k > 0) {
        return k;
    }
    size_t j = i + (c->cp[i] == ' ' ? 1 : 0);
    if (is_L(c, j)) {
        while (is_L(c, j)) {
            j++;
        }
        return j - i;
    }
    if (is_N(c, j)) {
        while (is_N(c, j)) {
            j++;
        }
        return j - i;
    }
    if (is_P(c, j)) {
        while (is_P(c, j)) {
            j++;
        }
        return j - i;
    }
    if (is_S(c, i)) {
        return match_space_tail(c, i);
    }
    return 1;
}

static size_t match_llama3(const cps_t *c, size_t i, size_t max_digits)
{
    size_t k = match_contraction(c, i, true);
    if (k > 0) {
        return k;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t j = i;
    if (!is_nl(c, j) && !is_L(c, j) && !is_N(c, j) && is_L(c, j + 1)) {
        j++;
    }
    if (is_L(c, j)) {
        while (is_L(c, j)) {
            j++;
        }
        return j - i;
    }
    /* \p{N}{1,max} */
    if (is_N(c, i)) {
        j = i;
        while (is_N(c, j) && j - i < max_digits) {
            j++;
        }
        return j - i;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    j = i + (c->cp[i] == ' ' ? 1 : 0);
    if (is_P(c, j)) {
        while (is_P(c, j)) {
            j++;
        }
        while (is_nl(c, j)) {
            j++;
        }
        return j - i;
    }
    if (is_S(c, i)) {
        /* \s*[\r\n]+ : up to and including the run's last newline */
        size_t run = 0, last_nl = 0;
        bool   nl  = false;
        while (is_S(c, i + run)) {
            if (is_nl(c, i + run)) {
                nl      = true;
                last_nl = run;
            }
            run++;
        }
        if (nl) {
            return last_nl + 1;
        }
        return match_space_tail(c, i);
    }
    return 1;
}

void tok_pretokenize(tok_pre_t pre, const char *text, size_t len,
                     tok_word_fn fn, void *ctx)
{
    if (len == 0) {
        return;
    }
    if (pre == TOK_PRE_NONE) {
        fn(ctx, text, len);
        return;
    }
    cps_t c;
    c.cp  = malloc((len + 1) * sizeof(*c.cp));
    c.off = malloc((len + 1) * sizeof(*c.off));
    if (c.cp == NULL || c.off == NULL) {
        free(c.cp);
        free(c.off);
        fn(ctx, text, len); /* degrade: one word */
        return;
    }
    c.n      = 0;
    size_t b = 0;
    while (b < len) {
        uint32_t cp;
        int      k   = tok_utf8_next(text + b, len - b, &cp);
        c.cp[c.n]    = cp;
        c.off[c.n++] = b;
        b += (size_t)k;
    }
    c.cp[c.n]  = 0;
    c.off[c.n] = len;
    size_t i   = 0;
    while (i < c.n) {
        size_t k;
        switch (pre) {
        case TOK_PRE_LLAMA3: k = match_llama3(&c, i, 3); break;
        case TOK_PRE_QWEN2: k = match_llama3(&c, i, 1); break;
        default: k = match_gpt2(&c, i); break;
        }
        if (k == 0) {
            k = 1;
        }
        fn(ctx, text + c.off[i], c.off[i + k] - c.off[i]);
        i += k;
    }
    free(c.cp);
    free(c.off);
}
