/* wire_impl.h - internals shared by the wire*.c files (not a public API). */
#ifndef LKV_TRANSPORT_WIRE_IMPL_H
#define LKV_TRANSPORT_WIRE_IMPL_H

#include <msgpack.h>

#include "transport/wire.h"

/* Append n bytes; 0 or -1 (sets buf->oom). */
int wire_buf_append(lkv_wire_buf_t *buf, const void *data, size_t n);

/* 16-byte aligned allocation in the message arena (*arena_p created on
 * first use); NULL when out of memory. Freed by lkv_wire_msg_release. */
void *wire_arena_alloc(void **arena_p, size_t size);

/* Fill msg->u.stats_reply from the `stats` value (NULL = absent -> empty
 * map): arena copy of its msgpack bytes, JSON and aligned text renderings.
 * Errors: LKV_ERR_INVALID (not a map, msg->err set), LKV_ERR_NOMEM. */
lkv_status_t wire_dec_stats(lkv_wire_msg_t *msg, const msgpack_object *stats);

#endif /* LKV_TRANSPORT_WIRE_IMPL_H */
