/* wire.h - msgpack codec for every layerkv message (docs/protocol.md).
 *
 * Encoding: fill an lkv_wire_msg_t (pointers borrowed from the caller) and
 * call lkv_wire_encode() into an lkv_wire_buf_t (growable, reusable, so the
 * per-step path does not allocate once the buffer has grown).
 *
 * Decoding of UNTRUSTED bytes: lkv_wire_decode() first runs a bounds-checking
 * scan over the raw bytes (every declared str/bin/array/map length must fit
 * the remaining bytes and the limits; nesting depth, total object count and
 * frame size are capped; exactly one object, no trailing bytes, no duplicate
 * map keys) and only then lets msgpack-c build objects, so a 5-byte header
 * declaring 4 billion elements never reaches an allocator. The decoded
 * message owns its strings and arrays in an arena that lkv_wire_msg_release()
 * frees; it never points into the input frame.
 *
 * Errors from decode: LKV_ERR_PROTOCOL (not msgpack, not a map, limits,
 * trailing bytes, duplicate keys), LKV_ERR_UNSUPPORTED (unknown type or
 * version), LKV_ERR_INVALID (missing field, wrong type, out of range),
 * LKV_ERR_FORMAT (invalid UTF-8), LKV_ERR_NOMEM. msg->err then names the field
 * and what to do; msg->type and msg->id hold what could be read (type NONE,
 * id kind NONE otherwise) so a server can answer with the request's id.
 *
 * Server loop sketch (see transport/zmq_util.h for the socket side):
 *
 *     lkv_zmq_router_recv(router, &peer, &frame, false);
 *     st = lkv_wire_decode(lkv_zmq_frame_data(&frame),
 *                          lkv_zmq_frame_size(&frame), NULL, &msg);
 *     lkv_zmq_frame_close(&frame);
 *     if (st != LKV_OK) {          // msg.id is nil when it could not be read
 *         lkv_wire_encode_error(&msg.id, st, msg.err, -1, &buf);
 *         lkv_zmq_router_send(router, &peer, buf.data, buf.len, true);
 *     } else { ... handle msg ...; lkv_wire_msg_release(&msg); }
 *
 * Threading: all functions are reentrant; a message or buffer is used by one
 * thread at a time.
 */
#ifndef LKV_TRANSPORT_WIRE_H
#define LKV_TRANSPORT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_WIRE_VERSION    1
#define LKV_WIRE_ID_MAX     64     /* bytes of a string request id */
#define LKV_WIRE_MAX_TOKENS 65536  /* max_tokens and prompt token ids */
#define LKV_WIRE_MAX_STOP   64     /* stop_ids */
#define LKV_WIRE_MAX_PROMPT 262144 /* prompt bytes */
#define LKV_WIRE_ERR_MAX    256    /* bytes of msg->err */

typedef enum {
    LKV_WIRE_NONE = 0,
    /* client -> server */
    LKV_WIRE_SUBMIT,
    LKV_WIRE_CANCEL,
    LKV_WIRE_HEALTH,
    LKV_WIRE_STATS,
    /* server -> client */
    LKV_WIRE_ACCEPTED,
    LKV_WIRE_TOKEN,
    LKV_WIRE_DONE,
    LKV_WIRE_ERROR,
    LKV_WIRE_HEALTH_REPLY,
    LKV_WIRE_STATS_REPLY,
    /* coordinator <-> worker */
    LKV_WIRE_HELLO,
    LKV_WIRE_CONFIG,
    LKV_WIRE_STEP_PLAN,
    LKV_WIRE_STEP_RESULT,
    LKV_WIRE_SHUTDOWN,
    LKV_WIRE_TYPE_COUNT
} lkv_wire_type_t;

/* "submit", "token", ...; "none" for NONE, "unknown" out of range. */
const char *lkv_wire_type_name(lkv_wire_type_t type);

/* Request id: client-chosen string (1..64 bytes) or unsigned integer. */
typedef enum {
    LKV_WIRE_ID_NONE = 0, /* absent / nil */
    LKV_WIRE_ID_UINT = 1,
    LKV_WIRE_ID_STR  = 2,
} lkv_wire_id_kind_t;

typedef struct {
    uint8_t  kind; /* lkv_wire_id_kind_t */
    uint8_t  len;  /* bytes of str (STR) */
    uint64_t u;    /* value (UINT) */
    char     str[LKV_WIRE_ID_MAX + 1]; /* NUL-terminated (STR) */
} lkv_wire_id_t;

void lkv_wire_id_set_uint(lkv_wire_id_t *id, uint64_t u);
/* Errors: LKV_ERR_INVALID (NULL, empty, or longer than LKV_WIRE_ID_MAX). */
lkv_status_t lkv_wire_id_set_str(lkv_wire_id_t *id, const char *s, size_t len);
bool lkv_wire_id_equal(const lkv_wire_id_t *a, const lkv_wire_id_t *b);
/* Printable form ("42" or the string, "-" when none) into out (cap bytes). */
const char *lkv_wire_id_format(const lkv_wire_id_t *id, char *out, size_t cap);

typedef enum {
    LKV_WIRE_FINISH_STOP = 0,
    LKV_WIRE_FINISH_LENGTH,
    LKV_WIRE_FINISH_CANCELLED,
    LKV_WIRE_FINISH_ERROR,
    LKV_WIRE_FINISH_COUNT
} lkv_wire_finish_t;

const char *lkv_wire_finish_name(lkv_wire_finish_t reason); /* "stop", ... */

/* submit. prompt XOR tokens. Optional numeric fields use 0 / has_ flags as
 * documented; the decoder fills the protocol defaults. */
typedef struct {
    const char    *prompt; /* UTF-8, NUL-terminated; NULL when tokens used */
    uint32_t       prompt_len;
    const int32_t *tokens; /* (n_tokens) NULL when prompt used */
    int32_t        n_tokens;
    int32_t        max_tokens;  /* 1..65536, default 64 */
    float          temperature; /* 0..100, default 1 */
    int32_t        top_k;       /* 0 = off */
    float          top_p;       /* (0,1], default 1 */
    bool           has_seed;
    uint64_t       seed;
    const int32_t *stop_ids; /* (n_stop_ids) */
    int32_t        n_stop_ids;
    double         ttft_slo_ms; /* 0 = server default */
    double         tpot_slo_ms; /* 0 = server default */
    bool           stream;      /* default true */
} lkv_wire_submit_t;

typedef struct {
    uint32_t n_prompt_tokens;
} lkv_wire_accepted_t;

typedef struct {
    uint32_t    index;
    int32_t     token;
    const char *text; /* NUL-terminated UTF-8, "" allowed */
    uint32_t    text_len;
} lkv_wire_token_t;

typedef struct {
    uint8_t        finish_reason; /* lkv_wire_finish_t */
    uint32_t       n_prompt_tokens;
    uint32_t       n_tokens;
    double         ttft_ms;
    double         tpot_ms;
    double         queue_ms;
    const char    *text; /* stream == false only, else NULL */
    uint32_t       text_len;
    const int32_t *tokens; /* stream == false only, else NULL */
    int32_t        n_out_tokens;
    int32_t        error_code;    /* finish_reason ERROR only, else 0 */
    const char    *error_message; /* finish_reason ERROR only, else NULL */
} lkv_wire_done_t;

typedef struct {
    int32_t     code;    /* lkv_status_t, negative */
    const char *message; /* what was wrong and what to do */
    bool        has_retry_after;
    uint32_t    retry_after_ms;
} lkv_wire_error_t;

typedef struct {
    const char *status; /* "ok", "starting", "draining" */
    const char *model;
    const char *version;
    double      uptime_s;
    uint32_t    n_running;
    uint32_t    n_waiting;
} lkv_wire_health_reply_t;

/* stats_reply. Encoding: stats_mp holds the msgpack bytes of one map, built
 * with the lkv_wire_w_* writer below. Decoding: the same bytes (arena copy)
 * plus two renderings made by the decoder: JSON text and aligned
 * "key.sub  value" lines. */
typedef struct {
    const uint8_t *stats_mp;
    size_t         stats_mp_len;
    const char    *json; /* decode only */
    const char    *text; /* decode only */
} lkv_wire_stats_reply_t;

typedef struct {
    uint32_t    rank;
    uint32_t    world_size;
    uint32_t    instance;
    uint32_t    pid;
    const char *backend; /* "cpu" | "cuda" */
    uint64_t    device_kv_blocks;
    uint64_t    host_kv_blocks;
    uint64_t    kv_block_bytes;
    double      link_gbps;
    const char *version;
    /* remote KV tier (kvnodes this worker reaches; all 0 when none) */
    uint32_t    remote_kv_nodes;
    uint64_t    remote_kv_bytes;  /* summed capacity of the kvnodes */
    double      remote_put_gbps;  /* measured device -> remote */
    double      remote_get_gbps;  /* measured remote -> device */
} lkv_wire_hello_t;

typedef struct {
    const char *model;
    uint32_t    instance;
    uint32_t    tp;
    uint32_t    pp;
    uint32_t    block_size;
    uint64_t    device_kv_blocks;
    uint64_t    host_kv_blocks;
    uint32_t    max_seqs;
    uint32_t    max_batch_tokens;
    uint64_t    remote_kv_blocks; /* remote layer-blocks the scheduler uses
                                     (<= what the worker's kvnodes hold) */
} lkv_wire_config_t;

typedef struct {
    const char *reason; /* may be NULL */
} lkv_wire_shutdown_t;

/* One message. `id` is used by submit, cancel, accepted, token, done, error
 * (kind NONE = nil) and optionally health/stats and their replies. */
typedef struct {
    lkv_wire_type_t type;
    lkv_wire_id_t   id;
    union {
        lkv_wire_submit_t       submit;
        lkv_wire_accepted_t     accepted;
        lkv_wire_token_t        token;
        lkv_wire_done_t         done;
        lkv_wire_error_t        error;
        lkv_wire_health_reply_t health_reply;
        lkv_wire_stats_reply_t  stats_reply;
        lkv_wire_hello_t        hello;
        lkv_wire_config_t       config;
        lkv_step_plan_t         step_plan;
        lkv_step_result_t       step_result;
        lkv_wire_shutdown_t     shutdown;
    } u;
    void *arena;                 /* decoder-owned memory, or NULL */
    char  err[LKV_WIRE_ERR_MAX]; /* decode failure: what and what to do */
} lkv_wire_msg_t;

/* Zero the message and set its type (submit defaults filled for SUBMIT). */
void lkv_wire_msg_init(lkv_wire_msg_t *msg, lkv_wire_type_t type);
/* Free what the decoder allocated; the message becomes NONE. NULL-safe. */
void lkv_wire_msg_release(lkv_wire_msg_t *msg);

/* ---- limits ---- */
typedef struct {
    size_t   max_frame_bytes;
    uint32_t max_depth;     /* maps/arrays nested, <= 16 */
    uint32_t max_array_len; /* elements in one array */
    uint32_t max_map_len;   /* entries in one map */
    uint32_t max_str_bytes; /* bytes in one str/bin/ext */
    uint32_t max_objects;   /* msgpack objects in the whole frame */
} lkv_wire_limits_t;

lkv_wire_limits_t lkv_wire_limits_client(void);   /* client -> server */
lkv_wire_limits_t lkv_wire_limits_server(void);   /* server -> client */
lkv_wire_limits_t lkv_wire_limits_internal(void); /* coordinator <-> worker */

/* ---- byte buffer ---- */
typedef struct {
    uint8_t *data;
    size_t   len;
    size_t   cap;
    bool     oom; /* a write failed to grow the buffer */
} lkv_wire_buf_t;

void lkv_wire_buf_init(lkv_wire_buf_t *buf);
void lkv_wire_buf_reset(lkv_wire_buf_t *buf); /* len = 0, keeps memory */
void lkv_wire_buf_free(lkv_wire_buf_t *buf);

/* ---- codec ---- */

/* Append the encoding of msg to out (out is reset first). Validates what the
 * decoder would reject (e.g. both prompt and tokens). Errors:
 * LKV_ERR_INVALID (bad message, text names the field in the log),
 * LKV_ERR_NOMEM. */
lkv_status_t lkv_wire_encode(const lkv_wire_msg_t *msg, lkv_wire_buf_t *out);

/* Decode one frame of len bytes under lim (NULL = client limits). On
 * success msg owns its arena (release it); on failure msg->err, msg->type
 * and msg->id say what could be learned, and nothing needs releasing
 * (releasing is still allowed). Never reads outside [buf, buf + len). */
lkv_status_t lkv_wire_decode(const void *buf, size_t len,
                             const lkv_wire_limits_t *lim,
                             lkv_wire_msg_t *msg);

/* Only the structural scan (limits, well-formedness); errors as decode. */
lkv_status_t lkv_wire_scan(const void *buf, size_t len,
                           const lkv_wire_limits_t *lim, char *err,
                           size_t err_cap);

/* Encode an `error` reply: id may be NULL (nil), retry_after_ms < 0 = none. */
lkv_status_t lkv_wire_encode_error(const lkv_wire_id_t *id, lkv_status_t code,
                                   const char *message, int64_t retry_after_ms,
                                   lkv_wire_buf_t *out);

/* ---- writer for free-form maps (stats) ----
 * Append msgpack values to buf; check buf->oom once at the end. */
void lkv_wire_w_map(lkv_wire_buf_t *buf, uint32_t n_entries);
void lkv_wire_w_array(lkv_wire_buf_t *buf, uint32_t n);
void lkv_wire_w_str(lkv_wire_buf_t *buf, const char *s); /* NULL = nil */
void lkv_wire_w_i64(lkv_wire_buf_t *buf, int64_t v);
void lkv_wire_w_u64(lkv_wire_buf_t *buf, uint64_t v);
void lkv_wire_w_f64(lkv_wire_buf_t *buf, double v);
void lkv_wire_w_bool(lkv_wire_buf_t *buf, bool v);
void lkv_wire_w_nil(lkv_wire_buf_t *buf);

#ifdef __cplusplus
}
#endif

#endif /* LKV_TRANSPORT_WIRE_H */
