/* wire_stats.c - decode a stats_reply's free-form `stats` map and render it
 * as JSON and as aligned "key.sub  value" text (for `layerkv stats`).
 * Input has already passed lkv_wire_scan (depth <= 16, bounded sizes).
 * Reentrant.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "transport/wire.h"
#include "transport/wire_impl.h"

static void put(lkv_wire_buf_t *b, const char *s)
{
    wire_buf_append(b, s, strlen(s));
}

static void json_str(lkv_wire_buf_t *b, const char *s, size_t n)
{
    char esc[8];

    put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            wire_buf_append(b, esc, 2);
        } else if (ch < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            put(b, esc);
        } else {
            wire_buf_append(b, &s[i], 1);
        }
    }
    put(b, "\"");
}

static void scalar(lkv_wire_buf_t *b, const msgpack_object *o, bool json)
{
    char num[40];

    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        put(b, "null");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        put(b, o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof(num), "%llu", (unsigned long long)o->via.u64);
        put(b, num);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)o->via.i64);
        put(b, num);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (isfinite(o->via.f64)) {
            snprintf(num, sizeof(num), "%.10g", o->via.f64);
            put(b, num);
        } else {
            put(b, "null");
        }
        break;
    case MSGPACK_OBJECT_STR:
        if (json) {
            json_str(b, o->via.str.ptr, o->via.str.size);
        } else {
            wire_buf_append(b, o->via.str.ptr, o->via.str.size);
        }
        break;
    default: /* bin, ext: not representable */
        put(b, "null");
        break;
    }
}

static void json_value(lkv_wire_buf_t *b, const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        put(b, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0) {
                put(b, ", ");
            }
            json_value(b, &o->via.array.ptr[i]);
        }
        put(b, "]");
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        put(b, "{");
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;

            if (i > 0) {
                put(b, ", ");
            }
            if (k->type == MSGPACK_OBJECT_STR) {
                json_str(b, k->via.str.ptr, k->via.str.size);
            } else {
                lkv_wire_buf_t tmp;

                lkv_wire_buf_init(&tmp);
                scalar(&tmp, k, false);
                json_str(b, (const char *)tmp.data, tmp.len);
                lkv_wire_buf_free(&tmp);
            }
            put(b, ": ");
            json_value(b, &o->via.map.ptr[i].val);
        }
        put(b, "}");
    } else {
        scalar(b, o, true);
    }
}

static bool is_flat_array(const msgpack_object *o)
{
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        msgpack_object_type t = o->via.array.ptr[i].type;

        if (t == MSGPACK_OBJECT_ARRAY || t == MSGPACK_OBJECT_MAP) {
            return false;
        }
    }
    return true;
}

/* Walk leaves with their dotted key path. pass 0 measures the widest key
 * into *width, pass 1 writes "key<pad>  value\n" lines. */
static void text_walk(lkv_wire_buf_t *b, lkv_wire_buf_t *path,
                      const msgpack_object *o, int pass, size_t *width)
{
    size_t base = path->len;

    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (base > 0) {
                put(path, ".");
            }
            scalar(path, &o->via.map.ptr[i].key, false);
            text_walk(b, path, &o->via.map.ptr[i].val, pass, width);
            path->len = base;
        }
        return;
    }
    if (o->type == MSGPACK_OBJECT_ARRAY && !is_flat_array(o)) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            char idx[16];

            snprintf(idx, sizeof(idx), "[%u]", i);
            put(path, idx);
            text_walk(b, path, &o->via.array.ptr[i], pass, width);
            path->len = base;
        }
        return;
    }
    if (pass == 0) {
        if (path->len > *width) {
            *width = path->len;
        }
        return;
    }
    wire_buf_append(b, path->data, path->len);
    for (size_t i = path->len; i < *width + 2; i++) {
        put(b, " ");
    }
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        put(b, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i > 0) {
                put(b, " ");
            }
            scalar(b, &o->via.array.ptr[i], false);
        }
        put(b, "]");
    } else {
        scalar(b, o, false);
    }
    put(b, "\n");
}

static const char *arena_copy(lkv_wire_msg_t *msg, const lkv_wire_buf_t *b)
{
    char *s = wire_arena_alloc(&msg->arena, b->len + 1);

    if (s != NULL) {
        if (b->len > 0) {
            memcpy(s, b->data, b->len);
        }
        s[b->len] = '\0';
    }
    return s;
}

static int buf_write(void *data, const char *bytes, size_t n)
{
    return wire_buf_append(data, bytes, n);
}

lkv_status_t wire_dec_stats(lkv_wire_msg_t *msg, const msgpack_object *stats)
{
    static const msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
    lkv_wire_stats_reply_t     *s     = &msg->u.stats_reply;
    lkv_wire_buf_t              mp, json, text, path;
    msgpack_packer              pk;
    size_t                      width = 0;
    lkv_status_t                st    = LKV_OK;

    if (stats == NULL) {
        stats = &empty;
    }
    if (stats->type != MSGPACK_OBJECT_MAP) {
        snprintf(msg->err, sizeof(msg->err),
                 "stats_reply: field 'stats' must be a map");
        return LKV_ERR_INVALID;
    }
    lkv_wire_buf_init(&mp);
    lkv_wire_buf_init(&json);
    lkv_wire_buf_init(&text);
    lkv_wire_buf_init(&path);
    msgpack_packer_init(&pk, &mp, buf_write);
    msgpack_pack_object(&pk, *stats);
    json_value(&json, stats);
    text_walk(&text, &path, stats, 0, &width);
    text_walk(&text, &path, stats, 1, &width);
    if (mp.oom || json.oom || text.oom || path.oom) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    uint8_t *bytes = wire_arena_alloc(&msg->arena, mp.len);
    s->json        = arena_copy(msg, &json);
    s->text        = arena_copy(msg, &text);
    if (bytes == NULL || s->json == NULL || s->text == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    memcpy(bytes, mp.data, mp.len);
    s->stats_mp     = bytes;
    s->stats_mp_len = mp.len;
out:
    if (st == LKV_ERR_NOMEM) {
        snprintf(msg->err, sizeof(msg->err),
                 "stats_reply: out of memory rendering stats");
    }
    lkv_wire_buf_free(&mp);
    lkv_wire_buf_free(&json);
    lkv_wire_buf_free(&text);
    lkv_wire_buf_free(&path);
    return st;
}
