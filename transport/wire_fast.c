/* wire_fast.c - allocation-light decoder for the per-step messages
 * (step_plan, step_result) that reads the msgpack bytes directly instead of
 * building a msgpack-c object tree (about half the instructions).
 *
 * It runs only after lkv_wire_scan() accepted the frame and handles only the
 * success case: on anything unexpected it returns false and the general
 * decoder (wire.c) decodes the frame again and produces the precise error.
 * It must accept exactly what the general decoder accepts, with the same
 * result; the fuzz target checks that by re-encoding both. Reentrant.
 */
#include <math.h>
#include <string.h>

#include "transport/wire.h"
#include "transport/wire_impl.h"

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} cur_t;

/* An integer as msgpack-c normalises it: neg only for values < 0. */
typedef struct {
    bool     neg;
    uint64_t u; /* when !neg */
    int64_t  i; /* when neg */
} num_t;

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int k = 0; k < n; k++) {
        v = (v << 8) | p[k];
    }
    return v;
}

static bool need(const cur_t *c, size_t n)
{
    return (size_t)(c->end - c->p) >= n;
}

static bool c_nil(cur_t *c)
{
    if (need(c, 1) && *c->p == 0xc0) {
        c->p++;
        return true;
    }
    return false;
}

static bool c_container(cur_t *c, uint8_t fix_lo, uint8_t b16, uint8_t b32,
                        uint32_t *n)
{
    uint8_t b;

    if (!need(c, 1)) {
        return false;
    }
    b = *c->p;
    if (b >= fix_lo && b <= fix_lo + 0x0f) {
        *n = b & 0x0f;
        c->p++;
        return true;
    }
    if (b == b16 && need(c, 3)) {
        *n = (uint32_t)be(c->p + 1, 2);
        c->p += 3;
        return true;
    }
    if (b == b32 && need(c, 5)) {
        *n = (uint32_t)be(c->p + 1, 4);
        c->p += 5;
        return true;
    }
    return false;
}

static bool c_map(cur_t *c, uint32_t *n)
{
    return c_container(c, 0x80, 0xde, 0xdf, n);
}

static bool c_array(cur_t *c, uint32_t *n)
{
    return c_container(c, 0x90, 0xdc, 0xdd, n);
}

static bool c_str(cur_t *c, const char **s, uint32_t *n)
{
    uint8_t b;
    int     lb = 0;

    if (!need(c, 1)) {
        return false;
    }
    b = *c->p;
    if (b >= 0xa0 && b <= 0xbf) {
        *n = b & 0x1f;
    } else if (b == 0xd9 || b == 0xda || b == 0xdb) {
        lb = b == 0xd9 ? 1 : b == 0xda ? 2 : 4;
        if (!need(c, 1 + (size_t)lb)) {
            return false;
        }
        *n = (uint32_t)be(c->p + 1, lb);
    } else {
        return false;
    }
    if (!need(c, 1 + (size_t)lb + *n)) {
        return false;
    }
    *s = (const char *)c->p + 1 + lb;
    c->p += 1 + (size_t)lb + *n;
    return true;
}

static bool c_bool(cur_t *c, bool *v)
{
    if (need(c, 1) && (*c->p == 0xc2 || *c->p == 0xc3)) {
        *v = *c->p == 0xc3;
        c->p++;
        return true;
    }
    return false;
}

static bool c_num(cur_t *c, num_t *v)
{
    uint8_t b;
    int     n = 0;
    bool    sig;

    if (!need(c, 1)) {
        return false;
    }
    b = *c->p;
    if (b <= 0x7f) {
        v->neg = false;
        v->u   = b;
        c->p++;
        return true;
    }
    if (b >= 0xe0) {
        v->neg = true;
        v->i   = (int8_t)b;
        c->p++;
        return true;
    }
    switch (b) {
    case 0xcc: n = 1; sig = false; break;
    case 0xcd: n = 2; sig = false; break;
    case 0xce: n = 4; sig = false; break;
    case 0xcf: n = 8; sig = false; break;
    case 0xd0: n = 1; sig = true; break;
    case 0xd1: n = 2; sig = true; break;
    case 0xd2: n = 4; sig = true; break;
    case 0xd3: n = 8; sig = true; break;
    default:
        return false;
    }
    if (!need(c, 1 + (size_t)n)) {
        return false;
    }
    uint64_t raw = be(c->p + 1, n);
    c->p += 1 + n;
    if (!sig) {
        v->neg = false;
        v->u   = raw;
        return true;
    }
    int64_t s;
    switch (n) {
    case 1: s = (int8_t)raw; break;
    case 2: s = (int16_t)raw; break;
    case 4: s = (int32_t)raw; break;
    default: s = (int64_t)raw; break;
    }
    v->neg = s < 0;
    if (s < 0) {
        v->i = s;
    } else {
        v->u = (uint64_t)s;
    }
    return true;
}

static bool c_u64(cur_t *c, uint64_t *out)
{
    num_t v;

    if (!c_num(c, &v) || v.neg) {
        return false;
    }
    *out = v.u;
    return true;
}

/* Integer in [lo, hi] (the general decoder's obj_i64 + range check). */
static bool c_i64(cur_t *c, int64_t lo, int64_t hi, int64_t *out)
{
    num_t   v;
    int64_t x;

    if (!c_num(c, &v)) {
        return false;
    }
    if (v.neg) {
        x = v.i;
    } else if (v.u <= (uint64_t)INT64_MAX) {
        x = (int64_t)v.u;
    } else {
        return false;
    }
    if (x < lo || x > hi) {
        return false;
    }
    *out = x;
    return true;
}

static bool c_f64(cur_t *c, double *out)
{
    num_t v;

    if (!need(c, 1)) {
        return false;
    }
    if (*c->p == 0xca && need(c, 5)) {
        uint32_t raw = (uint32_t)be(c->p + 1, 4);
        float    f;

        memcpy(&f, &raw, 4);
        *out = f;
        c->p += 5;
        return true;
    }
    if (*c->p == 0xcb && need(c, 9)) {
        uint64_t raw = be(c->p + 1, 8);

        memcpy(out, &raw, 8);
        c->p += 9;
        return true;
    }
    if (!c_num(c, &v)) {
        return false;
    }
    *out = v.neg ? (double)v.i : (double)v.u;
    return true;
}

/* Skip one object (already proven well-formed by the scan). */
static bool c_skip(cur_t *c)
{
    uint64_t todo = 1;

    while (todo > 0) {
        uint8_t  b;
        uint64_t payload = 0, kids = 0;
        size_t   hdr     = 1;
        int      lb      = 0;

        todo--;
        if (!need(c, 1)) {
            return false;
        }
        b = *c->p;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* one byte */
        } else if (b >= 0x80 && b <= 0x8f) {
            kids = 2u * (b & 0x0f);
        } else if (b >= 0x90 && b <= 0x9f) {
            kids = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            payload = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: lb = 1; break;
            case 0xc5: case 0xda: lb = 2; break;
            case 0xc6: case 0xdb: lb = 4; break;
            case 0xc7: lb = 1; hdr = 2; break; /* + ext type byte */
            case 0xc8: lb = 2; hdr = 2; break;
            case 0xc9: lb = 4; hdr = 2; break;
            case 0xca: payload = 4; break;
            case 0xcb: payload = 8; break;
            case 0xcc: case 0xd0: payload = 1; break;
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            case 0xd4: payload = 2; break;
            case 0xd5: payload = 3; break;
            case 0xd6: payload = 5; break;
            case 0xd7: payload = 9; break;
            case 0xd8: payload = 17; break;
            case 0xdc: case 0xdd: case 0xde: case 0xdf: {
                int n = (b == 0xdc || b == 0xde) ? 2 : 4;

                if (!need(c, 1 + (size_t)n)) {
                    return false;
                }
                kids = be(c->p + 1, n);
                if (b >= 0xde) {
                    kids *= 2;
                }
                hdr = 1 + (size_t)n;
                break;
            }
            default:
                return false;
            }
            if (lb > 0) {
                if (!need(c, 1 + (size_t)lb)) {
                    return false;
                }
                payload = be(c->p + 1, lb);
                hdr += (size_t)lb;
            }
        }
        if (!need(c, hdr) || (uint64_t)(c->end - c->p - (ptrdiff_t)hdr) < payload) {
            return false;
        }
        c->p += hdr + payload;
        todo += kids;
        if (todo > (uint64_t)(c->end - c->p)) {
            return false;
        }
    }
    return true;
}

static bool i32_array(cur_t *c, void **arena, int64_t lo, int64_t hi,
                      const int32_t **out, int32_t *n_out)
{
    uint32_t n;
    int32_t *v;

    if (!c_array(c, &n) || n > (uint32_t)(c->end - c->p)) {
        return false;
    }
    v = wire_arena_alloc(arena, sizeof(int32_t) * ((size_t)n + 1));
    if (v == NULL) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        int64_t x;

        if (!c_i64(c, lo, hi, &x)) {
            return false;
        }
        v[k] = (int32_t)x;
    }
    *out   = v;
    *n_out = (int32_t)n;
    return true;
}

static bool u64_array(cur_t *c, void **arena, const uint64_t **out,
                      int32_t *n_out)
{
    uint32_t  n;
    uint64_t *v;

    if (!c_array(c, &n) || n > (uint32_t)(c->end - c->p) || n > INT32_MAX) {
        return false;
    }
    v = wire_arena_alloc(arena, sizeof(uint64_t) * ((size_t)n + 1));
    if (v == NULL) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        if (!c_u64(c, &v[k])) {
            return false;
        }
    }
    *out   = v;
    *n_out = (int32_t)n;
    return true;
}

/* Array header of n tuples of `width` elements: returns the arena array. */
static void *tuples(cur_t *c, void **arena, size_t elem, uint32_t *n)
{
    if (!c_array(c, n) || *n > (uint32_t)(c->end - c->p)) {
        return NULL;
    }
    return wire_arena_array(arena, elem, *n);
}

static bool tuple_of(cur_t *c, uint32_t width)
{
    uint32_t n;

    return c_array(c, &n) && n == width;
}

#define MAX_KEYS 64

/* A top-level key and where its value starts (NULL: nil = absent). */
typedef struct {
    const char    *key;
    uint32_t       len;
    const uint8_t *val;
    bool           done; /* decoded during the first pass */
} entry_t;

static bool key_eq(const char *k, uint32_t kl, const char *lit)
{
    size_t n = strlen(lit);

    return kl == n && memcmp(k, lit, n) == 0;
}

static bool plan_seqs(cur_t *c, void **arena, lkv_step_plan_t *p)
{
    uint32_t        n;
    lkv_plan_seq_t *v = tuples(c, arena, sizeof(*v), &n);

    if (v == NULL) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        lkv_plan_seq_t *s = &v[k];
        int64_t         i;
        double          d;

        if (!tuple_of(c, 8) || !c_u64(c, &s->seq_id) ||
            !c_i64(c, 0, INT32_MAX, &i)) {
            return false;
        }
        s->pos0 = (int32_t)i;
        if (!c_bool(c, &s->sample) ||
            !i32_array(c, arena, INT32_MIN, INT32_MAX, &s->tokens,
                       &s->n_tokens) ||
            !c_f64(c, &d) || !isfinite((float)d)) {
            return false;
        }
        s->sampling.temperature = (float)d;
        if (!c_i64(c, INT32_MIN, INT32_MAX, &i)) {
            return false;
        }
        s->sampling.top_k = (int32_t)i;
        if (!c_f64(c, &d) || !isfinite((float)d)) {
            return false;
        }
        s->sampling.top_p = (float)d;
        if (!c_u64(c, &s->sampling.seed)) {
            return false;
        }
    }
    p->seqs   = v;
    p->n_seqs = (int32_t)n;
    return true;
}

static bool plan_appends(cur_t *c, void **arena, lkv_step_plan_t *p)
{
    uint32_t           n;
    lkv_plan_append_t *v = tuples(c, arena, sizeof(*v), &n);

    if (v == NULL) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        int64_t  layer;
        uint64_t tier;

        if (!tuple_of(c, 4) || !c_u64(c, &v[k].seq_id) ||
            !c_i64(c, 0, INT32_MAX, &layer) || !c_u64(c, &tier) || tier > 2 ||
            !i32_array(c, arena, 0, INT32_MAX, &v[k].blocks,
                       &v[k].n_blocks)) {
            return false;
        }
        v[k].layer = (int32_t)layer;
        v[k].tier  = (uint8_t)tier;
    }
    p->appends   = v;
    p->n_appends = (int32_t)n;
    return true;
}

static bool plan_moves(cur_t *c, void **arena, lkv_step_plan_t *p)
{
    uint32_t         n;
    lkv_plan_move_t *v = tuples(c, arena, sizeof(*v), &n);

    if (v == NULL) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        int64_t  layer;
        uint64_t kind, st, dt;
        int32_t  n_dst;

        if (!tuple_of(c, 8) || !c_u64(c, &v[k].move_id) ||
            !c_u64(c, &v[k].seq_id) || !c_i64(c, 0, INT32_MAX, &layer) ||
            !c_u64(c, &kind) || kind > 2 || !c_u64(c, &st) || st > 2 ||
            !c_u64(c, &dt) || dt > 2 ||
            !i32_array(c, arena, 0, INT32_MAX, &v[k].src, &v[k].n_blocks) ||
            !i32_array(c, arena, 0, INT32_MAX, &v[k].dst, &n_dst) ||
            n_dst != v[k].n_blocks) {
            return false;
        }
        v[k].layer    = (int32_t)layer;
        v[k].kind     = (uint8_t)kind;
        v[k].src_tier = (uint8_t)st;
        v[k].dst_tier = (uint8_t)dt;
    }
    p->moves   = v;
    p->n_moves = (int32_t)n;
    return true;
}

/* Decode one top-level field of a step_plan at *c (advancing it).
 * 1: decoded; 0: not a step_plan field (skip it); -1: invalid. */
static int plan_field(const char *k, uint32_t kl, cur_t *c,
                      lkv_wire_msg_t *msg, bool *have_id)
{
    lkv_step_plan_t *p = &msg->u.step_plan;

    if (key_eq(k, kl, "step_id")) {
        *have_id = true;
        return c_u64(c, &p->step_id) ? 1 : -1;
    }
    if (key_eq(k, kl, "seqs")) {
        return plan_seqs(c, &msg->arena, p) ? 1 : -1;
    }
    if (key_eq(k, kl, "appends")) {
        return plan_appends(c, &msg->arena, p) ? 1 : -1;
    }
    if (key_eq(k, kl, "moves")) {
        return plan_moves(c, &msg->arena, p) ? 1 : -1;
    }
    if (key_eq(k, kl, "finished")) {
        return u64_array(c, &msg->arena, &p->finished, &p->n_finished) ? 1
                                                                       : -1;
    }
    return 0;
}

static int result_field(const char *k, uint32_t kl, cur_t *c,
                        lkv_wire_msg_t *msg, bool *have_id)
{
    lkv_step_result_t *r = &msg->u.step_result;
    int64_t            i;

    if (key_eq(k, kl, "step_id")) {
        *have_id = true;
        return c_u64(c, &r->step_id) ? 1 : -1;
    }
    if (key_eq(k, kl, "status")) {
        if (!c_i64(c, INT32_MIN, INT32_MAX, &i)) {
            return -1;
        }
        r->status = (int32_t)i;
        return 1;
    }
    if (key_eq(k, kl, "seqs")) {
        uint32_t          ns;
        lkv_result_seq_t *s = tuples(c, &msg->arena, sizeof(*s), &ns);

        if (s == NULL) {
            return -1;
        }
        for (uint32_t q = 0; q < ns; q++) {
            int64_t tok, st;

            if (!tuple_of(c, 3) || !c_u64(c, &s[q].seq_id) ||
                !c_i64(c, -1, INT32_MAX, &tok) ||
                !c_i64(c, INT32_MIN, INT32_MAX, &st)) {
                return -1;
            }
            s[q].token  = (int32_t)tok;
            s[q].status = (int32_t)st;
        }
        r->seqs   = s;
        r->n_seqs = (int32_t)ns;
        return 1;
    }
    if (key_eq(k, kl, "moves_done")) {
        return u64_array(c, &msg->arena, &r->moves_done, &r->n_moves_done)
                   ? 1
                   : -1;
    }
    if (key_eq(k, kl, "moves_failed")) {
        return u64_array(c, &msg->arena, &r->moves_failed,
                         &r->n_moves_failed)
                   ? 1
                   : -1;
    }
    int64_t *dst = key_eq(k, kl, "step_ns")      ? &r->step_ns
                   : key_eq(k, kl, "compute_ns") ? &r->compute_ns
                   : key_eq(k, kl, "bytes_d2h")  ? &r->bytes_d2h
                   : key_eq(k, kl, "bytes_h2d")  ? &r->bytes_h2d
                                                 : NULL;
    if (dst != NULL) {
        return c_i64(c, 0, INT64_MAX, dst) ? 1 : -1;
    }
    return 0;
}

static int field(int type, const char *k, uint32_t kl, cur_t *c,
                 lkv_wire_msg_t *msg, bool *have_id)
{
    return type == 1 ? plan_field(k, kl, c, msg, have_id)
                     : result_field(k, kl, c, msg, have_id);
}

static bool fast_decode(const uint8_t *buf, size_t len, lkv_wire_msg_t *msg)
{
    entry_t  e[MAX_KEYS];
    cur_t    c = {buf, buf + len};
    uint32_t n;
    int      ne      = 0;
    bool     have_v  = false;
    bool     have_id = false;
    int      type    = 0; /* 1 plan, 2 result */

    if (!c_map(&c, &n) || n > MAX_KEYS) {
        return false;
    }
    for (uint32_t k = 0; k < n; k++) {
        const char *key;
        uint32_t    kl;

        if (!need(&c, 1)) {
            return false;
        }
        if (!((*c.p >= 0xa0 && *c.p <= 0xbf) || *c.p == 0xd9 ||
              *c.p == 0xda || *c.p == 0xdb)) {
            /* non-string key: ignored, like the general decoder */
            if (!c_skip(&c) || !c_skip(&c)) {
                return false;
            }
            continue;
        }
        if (!c_str(&c, &key, &kl)) {
            return false;
        }
        for (int j = 0; j < ne; j++) {
            if (e[j].len == kl && (kl == 0 || memcmp(e[j].key, key, kl) == 0)) {
                return false; /* duplicate: the general path reports it */
            }
        }
        entry_t *en = &e[ne++];
        en->key     = key;
        en->len     = kl;
        en->done    = false;
        en->val     = c_nil(&c) ? NULL : c.p;
        if (en->val == NULL) {
            continue; /* nil = absent */
        }
        if (key_eq(key, kl, "v")) {
            uint64_t ver;

            if (!c_u64(&c, &ver) || ver != LKV_WIRE_VERSION) {
                return false;
            }
            have_v = true;
        } else if (key_eq(key, kl, "type")) {
            const char *t;
            uint32_t    tl;

            if (!c_str(&c, &t, &tl)) {
                return false;
            }
            if (key_eq(t, tl, "step_plan")) {
                type = 1;
            } else if (key_eq(t, tl, "step_result")) {
                type = 2;
            } else {
                return false;
            }
            msg->type = type == 1 ? LKV_WIRE_STEP_PLAN : LKV_WIRE_STEP_RESULT;
        } else if (type != 0) {
            /* the usual case (our encoder writes v and type first) */
            int r = field(type, key, kl, &c, msg, &have_id);

            if (r < 0 || (r == 0 && !c_skip(&c))) {
                return false;
            }
            en->done = true;
        } else if (!c_skip(&c)) {
            return false;
        }
    }
    if (!have_v || type == 0 || c.p != c.end) {
        return false;
    }
    for (int j = 0; j < ne; j++) { /* fields seen before 'type' */
        if (e[j].val != NULL && !e[j].done) {
            cur_t fc = {e[j].val, buf + len};

            if (field(type, e[j].key, e[j].len, &fc, msg, &have_id) < 0) {
                return false;
            }
        }
    }
    return have_id;
}

bool wire_fast_decode(const uint8_t *buf, size_t len, lkv_wire_msg_t *msg)
{
    memset(&msg->u, 0, sizeof(msg->u));
    if (fast_decode(buf, len, msg)) {
        return true;
    }
    wire_arena_free(msg->arena);
    msg->arena = NULL;
    memset(&msg->u, 0, sizeof(msg->u));
    msg->type = LKV_WIRE_NONE;
    return false;
}
