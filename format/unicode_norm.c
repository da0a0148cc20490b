/* unicode_norm.c - Unicode NFC (canonical decomposition, canonical
 * ordering, canonical composition; Hangul algorithmically) as UAX #15
 * describes it, over the tables generated into unicode_tables.c.
 *
 * Fast path (quick check): text is already NFC when every code point is
 * either below U+0300 or "stable" (not decomposable, combining class 0,
 * never the second half of a composition; a Hangul LV syllable is not
 * stable since a trailing jamo T composes with it), so ASCII, CJK and
 * emoji text costs one scan and no allocation.
 *
 * Threading: pure functions over read-only tables.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "format/tok_impl.h"
#include "format/unicode_norm.h"

enum {
    SBASE  = 0xAC00,
    LBASE  = 0x1100,
    VBASE  = 0x1161,
    TBASE  = 0x11A7,
    LCOUNT = 19,
    VCOUNT = 21,
    TCOUNT = 28,
    NCOUNT = VCOUNT * TCOUNT,
    SCOUNT = LCOUNT * NCOUNT,
};

static uint32_t ccc_of(uint32_t cp)
{
    if (cp < 0x300) {
        return 0;
    }
    size_t lo = 0, hi = lkv_uni_ccc_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < lkv_uni_ccc[mid].lo) {
            hi = mid;
        } else if (cp > lkv_uni_ccc[mid].hi) {
            lo = mid + 1;
        } else {
            return lkv_uni_ccc[mid].ccc;
        }
    }
    return 0;
}

static const lkv_uni_pair_t *decomp_of(uint32_t cp)
{
    size_t lo = 0, hi = lkv_uni_decomp_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < lkv_uni_decomp[mid].x) {
            hi = mid;
        } else if (cp > lkv_uni_decomp[mid].x) {
            lo = mid + 1;
        } else {
            return &lkv_uni_decomp[mid];
        }
    }
    return NULL;
}

/* composite of (a, b), 0 when none */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT) {
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    }
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 &&
        b > TBASE && b < TBASE + TCOUNT) {
        return a + (b - TBASE);
    }
    size_t lo = 0, hi = lkv_uni_comp_n;
    while (lo < hi) {
        size_t                mid = (lo + hi) / 2;
        const lkv_uni_pair_t *p   = &lkv_uni_comp[mid];
        if (a < p->x || (a == p->x && b < p->y)) {
            hi = mid;
        } else if (a > p->x || b > p->y) {
            lo = mid + 1;
        } else {
            return p->z;
        }
    }
    return 0;
}

/* append the full canonical decomposition of cp; out has room (a code
 * point decomposes into at most 4 here, callers reserve 4 per input) */
static size_t decompose(uint32_t cp, uint32_t *out)
{
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        size_t   n = 0;
        out[n++]   = LBASE + s / NCOUNT;
        out[n++]   = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT != 0) {
            out[n++] = TBASE + s % TCOUNT;
        }
        return n;
    }
    const lkv_uni_pair_t *d = cp >= 0xC0 ? decomp_of(cp) : NULL;
    if (d == NULL) {
        out[0] = cp;
        return 1;
    }
    size_t n = decompose(d->y, out);
    if (d->z != 0) {
        n += decompose(d->z, out + n);
    }
    return n;
}

static bool is_comp_second(uint32_t cp)
{
    if ((cp >= VBASE && cp < VBASE + VCOUNT) ||
        (cp > TBASE && cp < TBASE + TCOUNT)) {
        return true;
    }
    size_t lo = 0, hi = lkv_uni_comp_second_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < lkv_uni_comp_second[mid]) {
            hi = mid;
        } else if (cp > lkv_uni_comp_second[mid]) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

/* a code point that cannot change under NFC whatever surrounds it: not
 * decomposable, combining class 0, never second in a composition */
static bool nfc_stable(uint32_t cp)
{
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        return (cp - SBASE) % TCOUNT != 0; /* LV may take a trailing T */
    }
    return ccc_of(cp) == 0 && decomp_of(cp) == NULL && !is_comp_second(cp);
}

lkv_status_t lkv_uni_nfc(const char *text, size_t len, char **out_p,
                         size_t *out_len_p)
{
    *out_p = NULL;
    bool   need = false;
    size_t n_cp = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int      k = tok_utf8_next(text + i, len - i, &cp);
        if (cp == 0xFFFD && k != 3) {
            return LKV_OK; /* invalid UTF-8: leave it alone */
        }
        need = need || (cp >= 0x300 && !nfc_stable(cp));
        i += (size_t)k;
        n_cp++;
    }
    if (!need) {
        return LKV_OK;
    }
    /* the longest canonical decomposition of one code point is 4 */
    uint32_t *cps = malloc(n_cp * 4 * sizeof(*cps));
    if (cps == NULL) {
        return LKV_ERR_NOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)tok_utf8_next(text + i, len - i, &cp);
        n += decompose(cp, cps + n);
    }
    /* canonical ordering: stable sort of each run of non-starters */
    for (size_t i = 1; i < n; i++) {
        uint32_t c = ccc_of(cps[i]);
        if (c == 0) {
            continue;
        }
        size_t j = i;
        while (j > 0) {
            uint32_t p = ccc_of(cps[j - 1]);
            if (p <= c) {
                break;
            }
            uint32_t t = cps[j - 1];
            cps[j - 1] = cps[j];
            cps[j]     = t;
            j--;
        }
    }
    /* canonical composition */
    size_t   starter = 0, w = 1;
    uint32_t last    = ccc_of(cps[0]) != 0 ? 256 : 0;
    bool     have_st = ccc_of(cps[0]) == 0;
    for (size_t i = 1; i < n; i++) {
        uint32_t ch = cps[i], c = ccc_of(ch);
        uint32_t comp = have_st ? compose(cps[starter], ch) : 0;
        if (comp != 0 && (last < c || last == 0)) {
            cps[starter] = comp;
            continue;
        }
        if (c == 0) {
            starter = w;
            have_st = true;
        }
        last     = c;
        cps[w++] = ch;
    }
    char *out = malloc(w * 4 + 1);
    if (out == NULL) {
        free(cps);
        return LKV_ERR_NOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < w; i++) {
        o += (size_t)tok_utf8_encode(cps[i], out + o);
    }
    out[o] = '\0';
    free(cps);
    *out_p     = out;
    *out_len_p = o;
    return LKV_OK;
}
