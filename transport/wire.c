/* wire.c - msgpack encode/decode of layerkv messages (docs/protocol.md).
 *
 * Decoding = lkv_wire_scan() (bounds, no allocation) -> msgpack_unpack_next
 * -> per-type field extraction into an arena owned by the message. Encoding
 * uses msgpack_packer over a reusable lkv_wire_buf_t; top-level maps are
 * written as map32 with the count patched at the end.
 * Reentrant; see wire.h.
 */
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/wire.h"
#include "transport/wire_impl.h"

static const char *const type_names[LKV_WIRE_TYPE_COUNT] = {
    [LKV_WIRE_NONE]         = "none",
    [LKV_WIRE_SUBMIT]       = "submit",
    [LKV_WIRE_CANCEL]       = "cancel",
    [LKV_WIRE_HEALTH]       = "health",
    [LKV_WIRE_STATS]        = "stats",
    [LKV_WIRE_ACCEPTED]     = "accepted",
    [LKV_WIRE_TOKEN]        = "token",
    [LKV_WIRE_DONE]         = "done",
    [LKV_WIRE_ERROR]        = "error",
    [LKV_WIRE_HEALTH_REPLY] = "health_reply",
    [LKV_WIRE_STATS_REPLY]  = "stats_reply",
    [LKV_WIRE_HELLO]        = "hello",
    [LKV_WIRE_CONFIG]       = "config",
    [LKV_WIRE_STEP_PLAN]    = "step_plan",
    [LKV_WIRE_STEP_RESULT]  = "step_result",
    [LKV_WIRE_SHUTDOWN]     = "shutdown",
};

static const char *const finish_names[LKV_WIRE_FINISH_COUNT] = {
    "stop", "length", "cancelled", "error"};

const char *lkv_wire_type_name(lkv_wire_type_t type)
{
    if ((int)type < 0 || type >= LKV_WIRE_TYPE_COUNT) {
        return "unknown";
    }
    return type_names[type];
}

const char *lkv_wire_finish_name(lkv_wire_finish_t reason)
{
    if ((int)reason < 0 || reason >= LKV_WIRE_FINISH_COUNT) {
        return "unknown";
    }
    return finish_names[reason];
}

/* ---- ids ---- */

void lkv_wire_id_set_uint(lkv_wire_id_t *id, uint64_t u)
{
    memset(id, 0, sizeof(*id));
    id->kind = LKV_WIRE_ID_UINT;
    id->u    = u;
}

lkv_status_t lkv_wire_id_set_str(lkv_wire_id_t *id, const char *s, size_t len)
{
    if (id == NULL || s == NULL || len == 0 || len > LKV_WIRE_ID_MAX ||
        memchr(s, '\0', len) != NULL) {
        return LKV_ERR_INVALID;
    }
    memset(id, 0, sizeof(*id));
    id->kind = LKV_WIRE_ID_STR;
    id->len  = (uint8_t)len;
    memcpy(id->str, s, len);
    id->str[len] = '\0';
    return LKV_OK;
}

bool lkv_wire_id_equal(const lkv_wire_id_t *a, const lkv_wire_id_t *b)
{
    if (a->kind != b->kind) {
        return false;
    }
    switch (a->kind) {
    case LKV_WIRE_ID_UINT:
        return a->u == b->u;
    case LKV_WIRE_ID_STR:
        return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    default:
        return true;
    }
}

const char *lkv_wire_id_format(const lkv_wire_id_t *id, char *out, size_t cap)
{
    if (cap == 0) {
        return out;
    }
    switch (id->kind) {
    case LKV_WIRE_ID_UINT:
        snprintf(out, cap, "%llu", (unsigned long long)id->u);
        break;
    case LKV_WIRE_ID_STR:
        snprintf(out, cap, "%s", id->str);
        break;
    default:
        snprintf(out, cap, "-");
        break;
    }
    return out;
}

/* ---- buffer ---- */

void lkv_wire_buf_init(lkv_wire_buf_t *buf)
{
    memset(buf, 0, sizeof(*buf));
}

void lkv_wire_buf_reset(lkv_wire_buf_t *buf)
{
    buf->len = 0;
    buf->oom = false;
}

void lkv_wire_buf_free(lkv_wire_buf_t *buf)
{
    if (buf != NULL) {
        free(buf->data);
        memset(buf, 0, sizeof(*buf));
    }
}

int wire_buf_append(lkv_wire_buf_t *buf, const void *data, size_t n)
{
    if (buf->oom) {
        return -1;
    }
    if (n > buf->cap - buf->len) {
        size_t cap = buf->cap != 0 ? buf->cap : 256;

        while (cap - buf->len < n) {
            if (cap > ((size_t)1 << 40)) {
                buf->oom = true;
                return -1;
            }
            cap *= 2;
        }
        uint8_t *d = realloc(buf->data, cap);
        if (d == NULL) {
            buf->oom = true;
            return -1;
        }
        buf->data = d;
        buf->cap  = cap;
    }
    if (n > 0) {
        memcpy(buf->data + buf->len, data, n);
    }
    buf->len += n;
    return 0;
}

/* ---- arena ---- */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t              used;
    size_t              cap;
    max_align_t         data[];
} arena_chunk_t;

typedef struct {
    arena_chunk_t *head;
} arena_t;

void *wire_arena_alloc(void **arena_p, size_t size)
{
    arena_t *a = *arena_p;

    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        if (a == NULL) {
            return NULL;
        }
        *arena_p = a;
    }
    size = (size + 15) & ~(size_t)15;
    if (size == 0) {
        size = 16;
    }
    if (a->head == NULL || a->head->cap - a->head->used < size) {
        size_t         cap = size > 4096 ? size : 4096;
        arena_chunk_t *c   = malloc(sizeof(*c) + cap);

        if (c == NULL) {
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap  = cap;
        a->head = c;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += size;
    return p;
}

void *wire_arena_array(void **arena_p, size_t elem, size_t n)
{
    void *v;

    if (elem != 0 && n >= SIZE_MAX / elem) {
        return NULL;
    }
    v = wire_arena_alloc(arena_p, elem * (n + 1));
    if (v != NULL) {
        memset(v, 0, elem * (n + 1));
    }
    return v;
}

void wire_arena_free(void *arena)
{
    arena_t *a = arena;

    if (a == NULL) {
        return;
    }
    while (a->head != NULL) {
        arena_chunk_t *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    free(a);
}

void lkv_wire_msg_init(lkv_wire_msg_t *msg, lkv_wire_type_t type)
{
    memset(msg, 0, sizeof(*msg));
    msg->type = type;
    if (type == LKV_WIRE_SUBMIT) {
        msg->u.submit.max_tokens  = 64;
        msg->u.submit.temperature = 1.0f;
        msg->u.submit.top_p       = 1.0f;
        msg->u.submit.stream      = true;
    }
}

void lkv_wire_msg_release(lkv_wire_msg_t *msg)
{
    if (msg == NULL) {
        return;
    }
    wire_arena_free(msg->arena);
    msg->arena = NULL;
    memset(&msg->u, 0, sizeof(msg->u));
    msg->type = LKV_WIRE_NONE;
}

/* ---- decoding helpers ---- */

typedef struct {
    lkv_wire_msg_t *msg;
    const char     *what; /* type name for messages */
} dctx_t;

static lkv_status_t fail(dctx_t *c, lkv_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static lkv_status_t fail(dctx_t *c, lkv_status_t st, const char *fmt, ...)
{
    va_list ap;
    int     n;

    n = snprintf(c->msg->err, sizeof(c->msg->err), "%s: ", c->what);
    if (n < 0 || (size_t)n >= sizeof(c->msg->err)) {
        n = 0;
    }
    va_start(ap, fmt);
    vsnprintf(c->msg->err + n, sizeof(c->msg->err) - (size_t)n, fmt, ap);
    va_end(ap);
    return st;
}

static bool key_is(const msgpack_object *k, const char *key)
{
    size_t n = strlen(key);

    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, key, n) == 0;
}

/* The value of key in map, NULL when absent or nil. */
static const msgpack_object *field(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];

        if (key_is(&kv->key, key)) {
            return kv->val.type == MSGPACK_OBJECT_NIL ? NULL : &kv->val;
        }
    }
    return NULL;
}

/* Optional array member `key` of map m: *arr_p = the array (NULL when the
 * key is absent, and nothing else is set), *v_p = n + 1 zeroed elements of
 * elem bytes from the message arena, *n_p = n. */
static lkv_status_t get_array(dctx_t *c, const msgpack_object *m,
                              const char *key, size_t elem,
                              const msgpack_object **arr_p, void **v_p,
                              uint32_t *n_p)
{
    const msgpack_object *a = field(m, key);
    void                 *v;
    uint32_t              n;

    *arr_p = NULL;
    if (a == NULL) {
        return LKV_OK;
    }
    if (a->type != MSGPACK_OBJECT_ARRAY) {
        return fail(c, LKV_ERR_INVALID, "'%s': expected an array", key);
    }
    n = a->via.array.size;
    v = wire_arena_array(&c->msg->arena, elem, n);
    if (v == NULL) {
        return fail(c, LKV_ERR_NOMEM, "out of memory for '%s'", key);
    }
    *arr_p = a;
    *v_p   = v;
    *n_p   = n;
    return LKV_OK;
}

static bool obj_u64(const msgpack_object *o, uint64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *v = o->via.u64;
        return true;
    }
    return false;
}

static bool obj_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        o->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return true;
    }
    return false;
}

static bool obj_f64(const msgpack_object *o, double *v)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *v = o->via.f64;
        return true;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *v = (double)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *v = (double)o->via.i64;
        return true;
    default:
        return false;
    }
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        uint8_t  b = s[i];
        int      k;
        uint32_t cp;

        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            k  = 1;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            k  = 2;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            k  = 3;
            cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i <= (size_t)k) {
            return false;
        }
        for (int j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) ||
            (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += (size_t)k + 1;
    }
    return true;
}

/* map[key] into *o_p; NULL when absent, which is an error when required. */
static lkv_status_t lookup(dctx_t *c, const msgpack_object *map,
                           const char *key, bool required,
                           const msgpack_object **o_p)
{
    *o_p = field(map, key);
    if (*o_p == NULL && required) {
        return fail(c, LKV_ERR_INVALID, "missing required field '%s'", key);
    }
    return LKV_OK;
}

/* Integer field in [lo, hi]; absent -> def (or error when required). */
static lkv_status_t get_int(dctx_t *c, const msgpack_object *map,
                            const char *key, bool required, int64_t lo,
                            int64_t hi, int64_t def, int64_t *out)
{
    const msgpack_object *o;
    int64_t               v;

    LKV_CHECK(lookup(c, map, key, required, &o));
    if (o == NULL) {
        *out = def;
        return LKV_OK;
    }
    if (!obj_i64(o, &v)) {
        return fail(c, LKV_ERR_INVALID, "field '%s' must be an integer", key);
    }
    if (v < lo || v > hi) {
        return fail(c, LKV_ERR_INVALID,
                    "field '%s' = %lld is out of range [%lld, %lld]", key,
                    (long long)v, (long long)lo, (long long)hi);
    }
    *out = v;
    return LKV_OK;
}

static lkv_status_t get_uint(dctx_t *c, const msgpack_object *map,
                             const char *key, bool required, uint64_t hi,
                             uint64_t def, uint64_t *out)
{
    const msgpack_object *o;
    uint64_t              v;

    LKV_CHECK(lookup(c, map, key, required, &o));
    if (o == NULL) {
        *out = def;
        return LKV_OK;
    }
    if (!obj_u64(o, &v)) {
        return fail(c, LKV_ERR_INVALID,
                    "field '%s' must be a non-negative integer", key);
    }
    if (v > hi) {
        return fail(c, LKV_ERR_INVALID, "field '%s' = %llu exceeds %llu", key,
                    (unsigned long long)v, (unsigned long long)hi);
    }
    *out = v;
    return LKV_OK;
}

#define GET_U32(c_, m_, k_, req_, out_)                                        \
    do {                                                                       \
        uint64_t v_;                                                           \
        LKV_CHECK(get_uint((c_), (m_), (k_), (req_), UINT32_MAX, 0, &v_));     \
        (out_) = (uint32_t)v_;                                                 \
    } while (0)

/* Float field in [lo, hi] (NaN rejected); lo_open makes lo exclusive. */
static lkv_status_t get_f64(dctx_t *c, const msgpack_object *map,
                            const char *key, bool required, double lo,
                            bool lo_open, double hi, double def, double *out)
{
    const msgpack_object *o;
    double                v;

    LKV_CHECK(lookup(c, map, key, required, &o));
    if (o == NULL) {
        *out = def;
        return LKV_OK;
    }
    if (!obj_f64(o, &v)) {
        return fail(c, LKV_ERR_INVALID, "field '%s' must be a number", key);
    }
    if (!(v >= lo && v <= hi) || (lo_open && v == lo)) {
        return fail(c, LKV_ERR_INVALID, "field '%s' = %g is out of range %c%g, %g]",
                    key, v, lo_open ? '(' : '[', lo, hi);
    }
    *out = v;
    return LKV_OK;
}

static lkv_status_t get_bool(dctx_t *c, const msgpack_object *map,
                             const char *key, bool def, bool *out)
{
    const msgpack_object *o = field(map, key);

    if (o == NULL) {
        *out = def;
        return LKV_OK;
    }
    if (o->type != MSGPACK_OBJECT_BOOLEAN) {
        return fail(c, LKV_ERR_INVALID, "field '%s' must be true or false",
                    key);
    }
    *out = o->via.boolean;
    return LKV_OK;
}

/* Copy a str object into the arena, NUL-terminated, UTF-8 checked. */
static lkv_status_t copy_str(dctx_t *c, const msgpack_object *o,
                             const char *key, uint32_t max_len,
                             const char **out, uint32_t *len_out)
{
    if (o->type != MSGPACK_OBJECT_STR) {
        return fail(c, LKV_ERR_INVALID, "field '%s' must be a string", key);
    }
    if (o->via.str.size > max_len) {
        return fail(c, LKV_ERR_INVALID,
                    "field '%s' is %u bytes, longer than the limit of %u",
                    key, o->via.str.size, max_len);
    }
    if (!utf8_valid((const uint8_t *)o->via.str.ptr, o->via.str.size)) {
        return fail(c, LKV_ERR_FORMAT,
                    "field '%s' is not valid UTF-8: send UTF-8 text", key);
    }
    char *s = wire_arena_alloc(&c->msg->arena, (size_t)o->via.str.size + 1);
    if (s == NULL) {
        return fail(c, LKV_ERR_NOMEM, "out of memory copying '%s'", key);
    }
    if (o->via.str.size > 0) {
        memcpy(s, o->via.str.ptr, o->via.str.size);
    }
    s[o->via.str.size] = '\0';
    *out               = s;
    if (len_out != NULL) {
        *len_out = o->via.str.size;
    }
    return LKV_OK;
}

static lkv_status_t get_str(dctx_t *c, const msgpack_object *map,
                            const char *key, bool required, uint32_t max_len,
                            const char **out, uint32_t *len_out)
{
    const msgpack_object *o;

    LKV_CHECK(lookup(c, map, key, required, &o));
    if (o == NULL) {
        *out = NULL;
        if (len_out != NULL) {
            *len_out = 0;
        }
        return LKV_OK;
    }
    return copy_str(c, o, key, max_len, out, len_out);
}

/* "name", "name[i]" or "name[i][j]" (i, j < 0: absent), for messages. */
static const char *fmt_path(char *buf, size_t cap, const char *name, int i,
                            int j)
{
    if (i < 0) {
        snprintf(buf, cap, "%s", name);
    } else if (j < 0) {
        snprintf(buf, cap, "%s[%d]", name, i);
    } else {
        snprintf(buf, cap, "%s[%d][%d]", name, i, j);
    }
    return buf;
}

/* Array of ints in [lo, hi] into an arena int32 array (n + 1 entries);
 * messages name it name[pi][pj]. */
static lkv_status_t conv_i32_array_at(dctx_t *c, const msgpack_object *o,
                                      const char *name, int pi, int pj,
                                      uint32_t max_n, int64_t lo, int64_t hi,
                                      const int32_t **out, int32_t *n_out)
{
    char        pbuf[64];
#define path fmt_path(pbuf, sizeof(pbuf), name, pi, pj)
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return fail(c, LKV_ERR_INVALID, "'%s': expected an array of int",
                    path);
    }
    uint32_t n = o->via.array.size;
    if (n > max_n) {
        return fail(c, LKV_ERR_INVALID,
                    "'%s' has %u elements, more than the limit of %u", path, n,
                    max_n);
    }
    int32_t *v = wire_arena_alloc(&c->msg->arena, sizeof(int32_t) * (n + 1));
    if (v == NULL) {
        return fail(c, LKV_ERR_NOMEM, "out of memory for '%s'", path);
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t x;

        if (!obj_i64(&o->via.array.ptr[i], &x)) {
            return fail(c, LKV_ERR_INVALID, "'%s'[%u]: expected an integer",
                        path, i);
        }
        if (x < lo || x > hi) {
            return fail(c, LKV_ERR_INVALID,
                        "'%s'[%u] = %lld is out of range [%lld, %lld]", path,
                        i, (long long)x, (long long)lo, (long long)hi);
        }
        v[i] = (int32_t)x;
    }
    *out   = v;
    *n_out = (int32_t)n;
    return LKV_OK;
#undef path
}

static lkv_status_t conv_i32_array(dctx_t *c, const msgpack_object *o,
                                   const char *name, uint32_t max_n,
                                   int64_t lo, int64_t hi,
                                   const int32_t **out, int32_t *n_out)
{
    return conv_i32_array_at(c, o, name, -1, -1, max_n, lo, hi, out, n_out);
}

static lkv_status_t conv_u64_array(dctx_t *c, const msgpack_object *o,
                                   const char *path, const uint64_t **out,
                                   int32_t *n_out)
{
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return fail(c, LKV_ERR_INVALID, "'%s': expected an array of uint",
                    path);
    }
    uint32_t n = o->via.array.size;
    if (n > INT32_MAX) {
        return fail(c, LKV_ERR_INVALID, "'%s' is too long", path);
    }
    uint64_t *v = wire_arena_alloc(&c->msg->arena, sizeof(uint64_t) * (n + 1));
    if (v == NULL) {
        return fail(c, LKV_ERR_NOMEM, "out of memory for '%s'", path);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!obj_u64(&o->via.array.ptr[i], &v[i])) {
            return fail(c, LKV_ERR_INVALID,
                        "'%s'[%u]: expected a non-negative integer", path, i);
        }
    }
    *out   = v;
    *n_out = (int32_t)n;
    return LKV_OK;
}

static lkv_status_t get_id(dctx_t *c, const msgpack_object *map,
                           bool required, lkv_wire_id_t *id)
{
    const msgpack_object *o = field(map, "id");

    memset(id, 0, sizeof(*id));
    if (o == NULL) {
        if (required) {
            return fail(c, LKV_ERR_INVALID,
                        "missing required field 'id' (a string of 1..%d "
                        "bytes or an unsigned integer)",
                        LKV_WIRE_ID_MAX);
        }
        return LKV_OK;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        lkv_wire_id_set_uint(id, o->via.u64);
        return LKV_OK;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        if (!utf8_valid((const uint8_t *)o->via.str.ptr, o->via.str.size) ||
            lkv_wire_id_set_str(id, o->via.str.ptr, o->via.str.size) !=
                LKV_OK) {
            return fail(c, LKV_ERR_INVALID,
                        "field 'id' must be a UTF-8 string of 1..%d bytes "
                        "without NUL, or an unsigned integer",
                        LKV_WIRE_ID_MAX);
        }
        return LKV_OK;
    }
    return fail(c, LKV_ERR_INVALID,
                "field 'id' must be a string or an unsigned integer");
}

static bool tuple_ok(const msgpack_object *o, uint32_t n)
{
    return o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == n;
}

/* ---- per-type decoders ---- */

static lkv_status_t dec_submit(dctx_t *c, const msgpack_object *m)
{
    lkv_wire_submit_t    *s = &c->msg->u.submit;
    const msgpack_object *prompt, *tokens, *stop;
    int64_t               i;
    uint64_t              u;
    double                d;

    LKV_CHECK(get_id(c, m, true, &c->msg->id));
    prompt = field(m, "prompt");
    tokens = field(m, "tokens");
    if ((prompt == NULL) == (tokens == NULL)) {
        return fail(c, LKV_ERR_INVALID,
                    "exactly one of 'prompt' (text) and 'tokens' (array of "
                    "token ids) must be given");
    }
    if (prompt != NULL) {
        LKV_CHECK(copy_str(c, prompt, "prompt", LKV_WIRE_MAX_PROMPT,
                           &s->prompt, &s->prompt_len));
    } else {
        LKV_CHECK(conv_i32_array(c, tokens, "tokens", LKV_WIRE_MAX_TOKENS, 0,
                                 INT32_MAX, &s->tokens, &s->n_tokens));
        if (s->n_tokens == 0) {
            return fail(c, LKV_ERR_INVALID,
                        "'tokens' is empty: give at least one token id");
        }
    }
    LKV_CHECK(get_int(c, m, "max_tokens", false, 1, LKV_WIRE_MAX_TOKENS, 64,
                      &i));
    s->max_tokens = (int32_t)i;
    LKV_CHECK(get_f64(c, m, "temperature", false, 0.0, false, 100.0, 1.0, &d));
    s->temperature = (float)d;
    LKV_CHECK(get_int(c, m, "top_k", false, 0, 1 << 20, 0, &i));
    s->top_k = (int32_t)i;
    LKV_CHECK(get_f64(c, m, "top_p", false, 0.0, true, 1.0, 1.0, &d));
    s->top_p    = (float)d;
    if (!(s->top_p > 0.0f)) {
        return fail(c, LKV_ERR_INVALID,
                    "field 'top_p' = %g rounds to 0 as float32: use a value "
                    "in (0, 1]",
                    d);
    }
    s->has_seed = field(m, "seed") != NULL;
    LKV_CHECK(get_uint(c, m, "seed", false, UINT64_MAX, 0, &u));
    s->seed = u;
    stop    = field(m, "stop_ids");
    if (stop != NULL) {
        LKV_CHECK(conv_i32_array(c, stop, "stop_ids", LKV_WIRE_MAX_STOP, 0,
                                 INT32_MAX, &s->stop_ids, &s->n_stop_ids));
    }
    LKV_CHECK(get_f64(c, m, "ttft_slo_ms", false, 0.0, false, 1e9, 0.0,
                      &s->ttft_slo_ms));
    LKV_CHECK(get_f64(c, m, "tpot_slo_ms", false, 0.0, false, 1e9, 0.0,
                      &s->tpot_slo_ms));
    LKV_CHECK(get_bool(c, m, "stream", true, &s->stream));
    return LKV_OK;
}

static lkv_status_t dec_done(dctx_t *c, const msgpack_object *m)
{
    lkv_wire_done_t      *d = &c->msg->u.done;
    const char           *reason;
    const msgpack_object *tokens;
    int64_t               i;

    LKV_CHECK(get_id(c, m, true, &c->msg->id));
    LKV_CHECK(get_str(c, m, "finish_reason", true, 32, &reason, NULL));
    d->finish_reason = LKV_WIRE_FINISH_COUNT;
    for (int k = 0; k < LKV_WIRE_FINISH_COUNT; k++) {
        if (strcmp(reason, finish_names[k]) == 0) {
            d->finish_reason = (uint8_t)k;
        }
    }
    if (d->finish_reason == LKV_WIRE_FINISH_COUNT) {
        return fail(c, LKV_ERR_INVALID,
                    "field 'finish_reason' = '%s' is not one of stop, "
                    "length, cancelled, error",
                    reason);
    }
    GET_U32(c, m, "n_prompt_tokens", false, d->n_prompt_tokens);
    GET_U32(c, m, "n_tokens", false, d->n_tokens);
    LKV_CHECK(get_f64(c, m, "ttft_ms", false, 0, false, 1e12, 0, &d->ttft_ms));
    LKV_CHECK(get_f64(c, m, "tpot_ms", false, 0, false, 1e12, 0, &d->tpot_ms));
    LKV_CHECK(
        get_f64(c, m, "queue_ms", false, 0, false, 1e12, 0, &d->queue_ms));
    LKV_CHECK(get_str(c, m, "text", false, UINT32_MAX, &d->text,
                      &d->text_len));
    tokens = field(m, "tokens");
    if (tokens != NULL) {
        LKV_CHECK(conv_i32_array(c, tokens, "tokens", UINT32_MAX, 0,
                                 INT32_MAX, &d->tokens, &d->n_out_tokens));
    }
    if (d->finish_reason == LKV_WIRE_FINISH_ERROR) {
        LKV_CHECK(get_int(c, m, "error_code", false, INT32_MIN, 0,
                          LKV_ERR_INTERNAL, &i));
        d->error_code = (int32_t)i;
        LKV_CHECK(get_str(c, m, "error_message", false, 65536,
                          &d->error_message, NULL));
    }
    return LKV_OK;
}

static lkv_status_t dec_error(dctx_t *c, const msgpack_object *m)
{
    lkv_wire_error_t *e = &c->msg->u.error;
    int64_t           i;
    uint64_t          u;

    LKV_CHECK(get_id(c, m, false, &c->msg->id));
    LKV_CHECK(get_int(c, m, "code", true, INT32_MIN, -1, 0, &i));
    e->code = (int32_t)i;
    LKV_CHECK(get_str(c, m, "message", false, 65536, &e->message, NULL));
    if (e->message == NULL) {
        e->message = "";
    }
    e->has_retry_after = field(m, "retry_after_ms") != NULL;
    LKV_CHECK(get_uint(c, m, "retry_after_ms", false, UINT32_MAX, 0, &u));
    e->retry_after_ms = (uint32_t)u;
    return LKV_OK;
}

static lkv_status_t dec_seq_tuple(dctx_t *c, const msgpack_object *t,
                                  uint32_t idx, lkv_plan_seq_t *s)
{
    char     pbuf[48];
    int64_t  i;
    uint64_t u;
    double   d;
#define path fmt_path(pbuf, sizeof(pbuf), "seqs", (int)idx, -1)

    if (!tuple_ok(t, 8)) {
        return fail(c, LKV_ERR_INVALID,
                    "'%s': expected [seq_id, pos0, sample, tokens, "
                    "temperature, top_k, top_p, seed]",
                    path);
    }
    const msgpack_object *e = t->via.array.ptr;
    if (!obj_u64(&e[0], &s->seq_id)) {
        return fail(c, LKV_ERR_INVALID, "'%s[0]' (seq_id): expected uint",
                    path);
    }
    if (!obj_i64(&e[1], &i) || i < 0 || i > INT32_MAX) {
        return fail(c, LKV_ERR_INVALID, "'%s[1]' (pos0): expected int >= 0",
                    path);
    }
    s->pos0 = (int32_t)i;
    if (e[2].type != MSGPACK_OBJECT_BOOLEAN) {
        return fail(c, LKV_ERR_INVALID, "'%s[2]' (sample): expected bool",
                    path);
    }
    s->sample = e[2].via.boolean;
    LKV_CHECK(conv_i32_array_at(c, &e[3], "seqs", (int)idx, 3, UINT32_MAX,
                                INT32_MIN, INT32_MAX, &s->tokens,
                                &s->n_tokens));
    if (!obj_f64(&e[4], &d) || !isfinite((float)d)) {
        return fail(c, LKV_ERR_INVALID,
                    "'%s[4]' (temperature): expected a float32-range number",
                    path);
    }
    s->sampling.temperature = (float)d;
    if (!obj_i64(&e[5], &i) || i < INT32_MIN || i > INT32_MAX) {
        return fail(c, LKV_ERR_INVALID, "'%s[5]' (top_k): expected int",
                    path);
    }
    s->sampling.top_k = (int32_t)i;
    if (!obj_f64(&e[6], &d) || !isfinite((float)d)) {
        return fail(c, LKV_ERR_INVALID, "'%s[6]' (top_p): expected a number",
                    path);
    }
    s->sampling.top_p = (float)d;
    if (!obj_u64(&e[7], &u)) {
        return fail(c, LKV_ERR_INVALID, "'%s[7]' (seed): expected uint",
                    path);
    }
    s->sampling.seed = u;
    return LKV_OK;
#undef path
}

static lkv_status_t dec_step_plan(dctx_t *c, const msgpack_object *m)
{
    lkv_step_plan_t      *p = &c->msg->u.step_plan;
    const msgpack_object *a;
    uint64_t              u;
    void                 *vv = NULL;
    uint32_t              n  = 0;

    LKV_CHECK(get_uint(c, m, "step_id", true, UINT64_MAX, 0, &u));
    p->step_id = u;

    LKV_CHECK(get_array(c, m, "seqs", sizeof(lkv_plan_seq_t), &a, &vv,
                        &n));
    if (a != NULL) {
        lkv_plan_seq_t *v = vv;
        for (uint32_t i = 0; i < n; i++) {
            LKV_CHECK(dec_seq_tuple(c, &a->via.array.ptr[i], i, &v[i]));
        }
        p->seqs   = v;
        p->n_seqs = (int32_t)n;
    }

    LKV_CHECK(get_array(c, m, "appends", sizeof(lkv_plan_append_t), &a, &vv,
                        &n));
    if (a != NULL) {
        lkv_plan_append_t *v = vv;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *t = &a->via.array.ptr[i];
            int64_t               x;
            uint64_t              tier;

            if (!tuple_ok(t, 4)) {
                return fail(c, LKV_ERR_INVALID,
                            "'appends[%u]': expected [seq_id, layer, tier, "
                            "blocks]",
                            i);
            }
            const msgpack_object *e = t->via.array.ptr;
            if (!obj_u64(&e[0], &v[i].seq_id) || !obj_i64(&e[1], &x) ||
                x < 0 || x > INT32_MAX || !obj_u64(&e[2], &tier) ||
                tier > 2) {
                return fail(c, LKV_ERR_INVALID,
                            "'appends[%u]': seq_id must be uint, layer int "
                            ">= 0, tier 0..2",
                            i);
            }
            v[i].layer = (int32_t)x;
            v[i].tier  = (uint8_t)tier;
            LKV_CHECK(conv_i32_array_at(c, &e[3], "appends", (int)i, 3,
                                        UINT32_MAX, 0, INT32_MAX,
                                     &v[i].blocks, &v[i].n_blocks));
        }
        p->appends   = v;
        p->n_appends = (int32_t)n;
    }

    LKV_CHECK(get_array(c, m, "moves", sizeof(lkv_plan_move_t), &a, &vv,
                        &n));
    if (a != NULL) {
        lkv_plan_move_t *v = vv;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *t = &a->via.array.ptr[i];
            int64_t               x;
            uint64_t              kind, st, dt;
            int32_t               n_dst = 0;

            if (!tuple_ok(t, 8)) {
                return fail(c, LKV_ERR_INVALID,
                            "'moves[%u]': expected [move_id, seq_id, layer, "
                            "kind, src_tier, dst_tier, src, dst]",
                            i);
            }
            const msgpack_object *e = t->via.array.ptr;
            if (!obj_u64(&e[0], &v[i].move_id) ||
                !obj_u64(&e[1], &v[i].seq_id) || !obj_i64(&e[2], &x) ||
                x < 0 || x > INT32_MAX || !obj_u64(&e[3], &kind) ||
                kind > 2 || !obj_u64(&e[4], &st) || st > 2 ||
                !obj_u64(&e[5], &dt) || dt > 2) {
                return fail(c, LKV_ERR_INVALID,
                            "'moves[%u]': move_id/seq_id must be uint, layer "
                            "int >= 0, kind 0..2, tiers 0..2",
                            i);
            }
            v[i].layer    = (int32_t)x;
            v[i].kind     = (uint8_t)kind;
            v[i].src_tier = (uint8_t)st;
            v[i].dst_tier = (uint8_t)dt;
            LKV_CHECK(conv_i32_array_at(c, &e[6], "moves", (int)i, 6,
                                        UINT32_MAX, 0, INT32_MAX,
                                     &v[i].src, &v[i].n_blocks));
            LKV_CHECK(conv_i32_array_at(c, &e[7], "moves", (int)i, 7,
                                        UINT32_MAX, 0, INT32_MAX,
                                     &v[i].dst, &n_dst));
            if (n_dst != v[i].n_blocks) {
                return fail(c, LKV_ERR_INVALID,
                            "'moves[%u]': src has %d blocks but dst has %d", i,
                            v[i].n_blocks, n_dst);
            }
        }
        p->moves   = v;
        p->n_moves = (int32_t)n;
    }

    a = field(m, "finished");
    if (a != NULL) {
        LKV_CHECK(conv_u64_array(c, a, "finished", &p->finished,
                                 &p->n_finished));
    }
    return LKV_OK;
}

static lkv_status_t dec_step_result(dctx_t *c, const msgpack_object *m)
{
    lkv_step_result_t    *r = &c->msg->u.step_result;
    const msgpack_object *a;
    uint64_t              u;
    int64_t               i;
    void                 *vv = NULL;
    uint32_t              n  = 0;

    LKV_CHECK(get_uint(c, m, "step_id", true, UINT64_MAX, 0, &u));
    r->step_id = u;
    LKV_CHECK(get_int(c, m, "status", false, INT32_MIN, INT32_MAX, 0, &i));
    r->status = (int32_t)i;
    LKV_CHECK(get_array(c, m, "seqs", sizeof(lkv_result_seq_t), &a, &vv,
                        &n));
    if (a != NULL) {
        lkv_result_seq_t *v = vv;
        for (uint32_t k = 0; k < n; k++) {
            const msgpack_object *t = &a->via.array.ptr[k];
            int64_t               tok, st;

            if (!tuple_ok(t, 3) || !obj_u64(&t->via.array.ptr[0], &v[k].seq_id) ||
                !obj_i64(&t->via.array.ptr[1], &tok) || tok < -1 ||
                tok > INT32_MAX || !obj_i64(&t->via.array.ptr[2], &st) ||
                st < INT32_MIN || st > INT32_MAX) {
                return fail(c, LKV_ERR_INVALID,
                            "'seqs[%u]': expected [seq_id (uint), token (int "
                            ">= -1), status (int)]",
                            k);
            }
            v[k].token  = (int32_t)tok;
            v[k].status = (int32_t)st;
        }
        r->seqs   = v;
        r->n_seqs = (int32_t)n;
    }
    a = field(m, "moves_done");
    if (a != NULL) {
        LKV_CHECK(conv_u64_array(c, a, "moves_done", &r->moves_done,
                                 &r->n_moves_done));
    }
    a = field(m, "moves_failed");
    if (a != NULL) {
        LKV_CHECK(conv_u64_array(c, a, "moves_failed", &r->moves_failed,
                                 &r->n_moves_failed));
    }
    LKV_CHECK(get_int(c, m, "step_ns", false, 0, INT64_MAX, 0, &r->step_ns));
    LKV_CHECK(
        get_int(c, m, "compute_ns", false, 0, INT64_MAX, 0, &r->compute_ns));
    LKV_CHECK(get_int(c, m, "bytes_d2h", false, 0, INT64_MAX, 0, &r->bytes_d2h));
    LKV_CHECK(get_int(c, m, "bytes_h2d", false, 0, INT64_MAX, 0, &r->bytes_h2d));
    return LKV_OK;
}

static lkv_status_t dec_body(dctx_t *c, const msgpack_object *m)
{
    lkv_wire_msg_t *msg = c->msg;
    uint64_t        u;
    int64_t         i;

    switch (msg->type) {
    case LKV_WIRE_SUBMIT:
        return dec_submit(c, m);
    case LKV_WIRE_CANCEL:
        return get_id(c, m, true, &msg->id);
    case LKV_WIRE_HEALTH:
    case LKV_WIRE_STATS:
        return get_id(c, m, false, &msg->id);
    case LKV_WIRE_ACCEPTED:
        LKV_CHECK(get_id(c, m, true, &msg->id));
        GET_U32(c, m, "n_prompt_tokens", false,
                msg->u.accepted.n_prompt_tokens);
        return LKV_OK;
    case LKV_WIRE_TOKEN:
        LKV_CHECK(get_id(c, m, true, &msg->id));
        GET_U32(c, m, "index", true, msg->u.token.index);
        LKV_CHECK(get_int(c, m, "token", true, 0, INT32_MAX, 0, &i));
        msg->u.token.token = (int32_t)i;
        LKV_CHECK(get_str(c, m, "text", false, UINT32_MAX, &msg->u.token.text,
                          &msg->u.token.text_len));
        if (msg->u.token.text == NULL) {
            msg->u.token.text = "";
        }
        return LKV_OK;
    case LKV_WIRE_DONE:
        return dec_done(c, m);
    case LKV_WIRE_ERROR:
        return dec_error(c, m);
    case LKV_WIRE_HEALTH_REPLY: {
        lkv_wire_health_reply_t *h = &msg->u.health_reply;

        LKV_CHECK(get_id(c, m, false, &msg->id));
        LKV_CHECK(get_str(c, m, "status", true, 64, &h->status, NULL));
        LKV_CHECK(get_str(c, m, "model", false, 4096, &h->model, NULL));
        LKV_CHECK(get_str(c, m, "version", false, 256, &h->version, NULL));
        LKV_CHECK(
            get_f64(c, m, "uptime_s", false, 0, false, 1e12, 0, &h->uptime_s));
        GET_U32(c, m, "n_running", false, h->n_running);
        GET_U32(c, m, "n_waiting", false, h->n_waiting);
        return LKV_OK;
    }
    case LKV_WIRE_STATS_REPLY:
        LKV_CHECK(get_id(c, m, false, &msg->id));
        return wire_dec_stats(c->msg, field(m, "stats"));
    case LKV_WIRE_HELLO: {
        lkv_wire_hello_t *h = &msg->u.hello;

        GET_U32(c, m, "rank", true, h->rank);
        GET_U32(c, m, "world_size", false, h->world_size);
        GET_U32(c, m, "instance", false, h->instance);
        GET_U32(c, m, "pid", false, h->pid);
        LKV_CHECK(get_str(c, m, "backend", false, 64, &h->backend, NULL));
        LKV_CHECK(get_uint(c, m, "device_kv_blocks", false, UINT64_MAX, 0,
                           &h->device_kv_blocks));
        LKV_CHECK(get_uint(c, m, "host_kv_blocks", false, UINT64_MAX, 0,
                           &h->host_kv_blocks));
        LKV_CHECK(get_uint(c, m, "kv_block_bytes", false, UINT64_MAX, 0,
                           &h->kv_block_bytes));
        LKV_CHECK(get_f64(c, m, "link_gbps", false, 0, false, 1e9, 0,
                          &h->link_gbps));
        LKV_CHECK(get_str(c, m, "version", false, 256, &h->version, NULL));
        GET_U32(c, m, "remote_kv_nodes", false, h->remote_kv_nodes);
        LKV_CHECK(get_uint(c, m, "remote_kv_bytes", false, UINT64_MAX, 0,
                           &h->remote_kv_bytes));
        LKV_CHECK(get_f64(c, m, "remote_put_gbps", false, 0, false, 1e9, 0,
                          &h->remote_put_gbps));
        LKV_CHECK(get_f64(c, m, "remote_get_gbps", false, 0, false, 1e9, 0,
                          &h->remote_get_gbps));
        return LKV_OK;
    }
    case LKV_WIRE_CONFIG: {
        lkv_wire_config_t *k = &msg->u.config;

        LKV_CHECK(get_str(c, m, "model", true, 4096, &k->model, NULL));
        GET_U32(c, m, "instance", false, k->instance);
        GET_U32(c, m, "tp", false, k->tp);
        GET_U32(c, m, "pp", false, k->pp);
        GET_U32(c, m, "block_size", false, k->block_size);
        LKV_CHECK(get_uint(c, m, "device_kv_blocks", false, UINT64_MAX, 0,
                           &k->device_kv_blocks));
        LKV_CHECK(get_uint(c, m, "host_kv_blocks", false, UINT64_MAX, 0,
                           &k->host_kv_blocks));
        GET_U32(c, m, "max_seqs", false, k->max_seqs);
        GET_U32(c, m, "max_batch_tokens", false, k->max_batch_tokens);
        LKV_CHECK(get_uint(c, m, "remote_kv_blocks", false, INT32_MAX, 0,
                           &k->remote_kv_blocks));
        return LKV_OK;
    }
    case LKV_WIRE_STEP_PLAN:
        return dec_step_plan(c, m);
    case LKV_WIRE_STEP_RESULT:
        return dec_step_result(c, m);
    case LKV_WIRE_SHUTDOWN:
        return get_str(c, m, "reason", false, 4096, &msg->u.shutdown.reason,
                       NULL);
    default:
        break;
    }
    (void)u;
    return fail(c, LKV_ERR_INTERNAL, "no decoder for this type");
}

static lkv_status_t decode_scanned(const void *buf, size_t len,
                                   lkv_wire_msg_t *msg);

lkv_status_t lkv_wire_decode(const void *buf, size_t len,
                             const lkv_wire_limits_t *lim,
                             lkv_wire_msg_t *msg)
{
    lkv_status_t st;

    memset(msg, 0, sizeof(*msg));
    st = lkv_wire_scan(buf, len, lim, msg->err, sizeof(msg->err));
    if (st != LKV_OK) {
        return st;
    }
    if (wire_fast_decode(buf, len, msg)) {
        return LKV_OK; /* step_plan / step_result */
    }
    return decode_scanned(buf, len, msg);
}

lkv_status_t wire_decode_general(const void *buf, size_t len,
                                 const lkv_wire_limits_t *lim,
                                 lkv_wire_msg_t *msg)
{
    lkv_status_t st;

    memset(msg, 0, sizeof(*msg));
    st = lkv_wire_scan(buf, len, lim, msg->err, sizeof(msg->err));
    if (st != LKV_OK) {
        return st;
    }
    return decode_scanned(buf, len, msg);
}

/* The general decoder: msgpack-c object tree, precise error messages. */
static lkv_status_t decode_scanned(const void *buf, size_t len,
                                   lkv_wire_msg_t *msg)
{
    msgpack_unpacked      up;
    size_t                off = 0;
    lkv_status_t          st;
    const msgpack_object *m, *v, *t;
    dctx_t                c = {.msg = msg, .what = "message"};

    memset(msg, 0, sizeof(*msg));
    msgpack_unpacked_init(&up);
    msgpack_unpack_return ur =
        msgpack_unpack_next(&up, (const char *)buf, len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        st = ur == MSGPACK_UNPACK_NOMEM_ERROR
                 ? fail(&c, LKV_ERR_NOMEM, "out of memory unpacking %zu bytes",
                        len)
                 : fail(&c, LKV_ERR_PROTOCOL,
                        "frame is not one valid msgpack object (unpack "
                        "returned %d)",
                        (int)ur);
        goto out;
    }
    m = &up.data;
    if (m->type != MSGPACK_OBJECT_MAP) {
        st = fail(&c, LKV_ERR_PROTOCOL,
                  "a message must be a msgpack map with 'v' and 'type'");
        goto out;
    }
    /* duplicate keys (the envelope is small: <= max_map_len entries) */
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *ki = &m->via.map.ptr[i].key;

        if (ki->type != MSGPACK_OBJECT_STR) {
            continue;
        }
        for (uint32_t j = i + 1; j < m->via.map.size; j++) {
            const msgpack_object *kj = &m->via.map.ptr[j].key;

            if (kj->type == MSGPACK_OBJECT_STR &&
                kj->via.str.size == ki->via.str.size &&
                (ki->via.str.size == 0 ||
                 memcmp(kj->via.str.ptr, ki->via.str.ptr, ki->via.str.size) ==
                     0)) {
                st = fail(&c, LKV_ERR_PROTOCOL, "duplicate key '%.*s'",
                          (int)(ki->via.str.size > 32 ? 32 : ki->via.str.size),
                          ki->via.str.ptr);
                goto out;
            }
        }
    }
    t = field(m, "type");
    if (t == NULL || t->type != MSGPACK_OBJECT_STR) {
        st = fail(&c, LKV_ERR_INVALID,
                  "missing field 'type' (a string such as \"submit\")");
        goto out;
    }
    for (int k = 1; k < LKV_WIRE_TYPE_COUNT; k++) {
        size_t n = strlen(type_names[k]);

        if (t->via.str.size == n && memcmp(t->via.str.ptr, type_names[k], n) == 0) {
            msg->type = (lkv_wire_type_t)k;
        }
    }
    if (msg->type == LKV_WIRE_NONE) {
        /* still report the id so the server can address its error */
        (void)get_id(&c, m, false, &msg->id);
        st = fail(&c, LKV_ERR_UNSUPPORTED,
                  "unknown message type '%.*s' (see docs/protocol.md)",
                  (int)(t->via.str.size > 32 ? 32 : t->via.str.size),
                  t->via.str.ptr);
        goto out;
    }
    c.what = type_names[msg->type];
    if (msg->type == LKV_WIRE_SUBMIT) {
        lkv_wire_msg_init(msg, LKV_WIRE_SUBMIT); /* defaults */
        msg->type = LKV_WIRE_SUBMIT;
    }
    /* the id first, so that every later error can be addressed */
    if (get_id(&c, m, false, &msg->id) != LKV_OK) {
        memset(&msg->id, 0, sizeof(msg->id));
    }
    v = field(m, "v");
    uint64_t ver;
    if (v == NULL || !obj_u64(v, &ver)) {
        st = fail(&c, LKV_ERR_PROTOCOL,
                  "missing field 'v' (protocol version, %d)",
                  LKV_WIRE_VERSION);
        goto out;
    }
    if (ver != LKV_WIRE_VERSION) {
        st = fail(&c, LKV_ERR_UNSUPPORTED,
                  "protocol version %llu is not supported: this peer speaks "
                  "version %d",
                  (unsigned long long)ver, LKV_WIRE_VERSION);
        goto out;
    }
    msg->err[0] = '\0';
    st          = dec_body(&c, m);
    if (st == LKV_OK && msg->type >= LKV_WIRE_HELLO) {
        memset(&msg->id, 0, sizeof(msg->id)); /* internal: no request ids */
    }
out:
    msgpack_unpacked_destroy(&up);
    if (st != LKV_OK) {
        lkv_wire_type_t type = msg->type;
        lkv_wire_id_t   id   = msg->id;

        wire_arena_free(msg->arena);
        msg->arena = NULL;
        memset(&msg->u, 0, sizeof(msg->u));
        msg->type = type;
        msg->id   = id;
    }
    return st;
}
