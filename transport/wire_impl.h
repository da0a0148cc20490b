/* wire_impl.h - internals shared by the wire*.c files (not a public API). */
#ifndef LKV_TRANSPORT_WIRE_IMPL_H
#define LKV_TRANSPORT_WIRE_IMPL_H

#include <msgpack.h>

#include "transport/wire.h"

#define WIRE_HIDDEN __attribute__((visibility("hidden")))

/* Append n bytes; 0 or -1 (sets buf->oom). */
WIRE_HIDDEN int wire_buf_append(lkv_wire_buf_t *buf, const void *data, size_t n);

/* 16-byte aligned allocation in the message arena (*arena_p created on
 * first use); NULL when out of memory. Freed by lkv_wire_msg_release. */
WIRE_HIDDEN void *wire_arena_alloc(void **arena_p, size_t size);

/* n + 1 zeroed elements of elem bytes in the message arena (the spare one
 * keeps an empty array non-NULL); NULL when out of memory. */
WIRE_HIDDEN void *wire_arena_array(void **arena_p, size_t elem, size_t n);

/* Fill msg->u.stats_reply from the `stats` value (NULL = absent -> empty
 * map): arena copy of its msgpack bytes, JSON and aligned text renderings.
 * Errors: LKV_ERR_INVALID (not a map, msg->err set), LKV_ERR_NOMEM. */
WIRE_HIDDEN lkv_status_t wire_dec_stats(lkv_wire_msg_t *msg, const msgpack_object *stats);

/* Free an arena made by wire_arena_alloc (NULL-safe). */
WIRE_HIDDEN void wire_arena_free(void *arena);

/* wire_fast.c: decode a scanned step_plan/step_result frame without a
 * msgpack-c object tree. true = msg filled (arena owned); false = not
 * handled (msg->u zero, no arena): use the general decoder. */
WIRE_HIDDEN bool wire_fast_decode(const uint8_t *buf, size_t len,
                                  lkv_wire_msg_t *msg);

/* The general decoder alone (no fast path), for cross-checking in tests and
 * the fuzz target. Same contract as lkv_wire_decode. */
WIRE_HIDDEN lkv_status_t wire_decode_general(const void *buf, size_t len,
                                             const lkv_wire_limits_t *lim,
                                             lkv_wire_msg_t *msg);

#endif /* LKV_TRANSPORT_WIRE_IMPL_H */
