/* wire_enc.c - encoders for every layerkv message and the free-form map
 * writer (docs/protocol.md). The top-level map is written as map32 and its
 * count patched at the end, so optional fields need no pre-count.
 * Reentrant; one buffer per thread.
 */
#define LKV_LOG_MODULE "wire"
#include <math.h>
#include <string.h>

#include "common/log.h"
#include "transport/wire.h"
#include "transport/wire_impl.h"

typedef struct {
    lkv_wire_buf_t *buf;
    msgpack_packer  pk;
    size_t          map_at;
    uint32_t        n;
} enc_t;

static int buf_write(void *data, const char *bytes, size_t n)
{
    return wire_buf_append(data, bytes, n);
}

static void enc_begin(enc_t *e, lkv_wire_buf_t *buf, lkv_wire_type_t type)
{
    static const uint8_t map32[5] = {0xdf, 0, 0, 0, 0};
    const char          *name     = lkv_wire_type_name(type);

    e->buf = buf;
    lkv_wire_buf_reset(buf);
    msgpack_packer_init(&e->pk, buf, buf_write);
    e->map_at = buf->len;
    e->n      = 0;
    wire_buf_append(buf, map32, sizeof(map32));
    msgpack_pack_str_with_body(&e->pk, "v", 1);
    msgpack_pack_unsigned_int(&e->pk, LKV_WIRE_VERSION);
    msgpack_pack_str_with_body(&e->pk, "type", 4);
    msgpack_pack_str_with_body(&e->pk, name, strlen(name));
    e->n = 2;
}

static lkv_status_t enc_end(enc_t *e)
{
    if (e->buf->oom) {
        return LKV_ERR_NOMEM;
    }
    uint8_t *p = e->buf->data + e->map_at + 1;
    p[0]       = (uint8_t)(e->n >> 24);
    p[1]       = (uint8_t)(e->n >> 16);
    p[2]       = (uint8_t)(e->n >> 8);
    p[3]       = (uint8_t)e->n;
    return LKV_OK;
}

static void key(enc_t *e, const char *k)
{
    msgpack_pack_str_with_body(&e->pk, k, strlen(k));
    e->n++;
}

static void put_u64(enc_t *e, const char *k, uint64_t v)
{
    key(e, k);
    msgpack_pack_uint64(&e->pk, v);
}

static void put_i64(enc_t *e, const char *k, int64_t v)
{
    key(e, k);
    msgpack_pack_int64(&e->pk, v);
}

static void put_f64(enc_t *e, const char *k, double v)
{
    key(e, k);
    msgpack_pack_double(&e->pk, v);
}

static void put_bool(enc_t *e, const char *k, bool v)
{
    key(e, k);
    if (v) {
        msgpack_pack_true(&e->pk);
    } else {
        msgpack_pack_false(&e->pk);
    }
}

static void pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str_with_body(pk, s != NULL ? s : "", s != NULL ? n : 0);
}

static void put_str(enc_t *e, const char *k, const char *s)
{
    key(e, k);
    pack_str(&e->pk, s, s != NULL ? strlen(s) : 0);
}

static void put_strn(enc_t *e, const char *k, const char *s, size_t n)
{
    key(e, k);
    pack_str(&e->pk, s, n);
}

static void pack_i32s(msgpack_packer *pk, const int32_t *v, int32_t n)
{
    msgpack_pack_array(pk, n > 0 ? (size_t)n : 0);
    for (int32_t i = 0; i < n; i++) {
        msgpack_pack_int32(pk, v[i]);
    }
}

static void pack_u64s(msgpack_packer *pk, const uint64_t *v, int32_t n)
{
    msgpack_pack_array(pk, n > 0 ? (size_t)n : 0);
    for (int32_t i = 0; i < n; i++) {
        msgpack_pack_uint64(pk, v[i]);
    }
}

static void pack_id(msgpack_packer *pk, const lkv_wire_id_t *id)
{
    if (id == NULL || id->kind == LKV_WIRE_ID_NONE) {
        msgpack_pack_nil(pk);
    } else if (id->kind == LKV_WIRE_ID_UINT) {
        msgpack_pack_uint64(pk, id->u);
    } else {
        msgpack_pack_str_with_body(pk, id->str, id->len);
    }
}

static void put_id(enc_t *e, const lkv_wire_id_t *id)
{
    key(e, "id");
    pack_id(&e->pk, id);
}

static lkv_status_t bad(const char *what)
{
    LKV_LOG_ERROR("wire encode: %s", what);
    return LKV_ERR_INVALID;
}

static bool arr_ok(const void *p, int32_t n)
{
    return n >= 0 && (n == 0 || p != NULL);
}

static lkv_status_t enc_submit(enc_t *e, const lkv_wire_msg_t *m)
{
    const lkv_wire_submit_t *s = &m->u.submit;

    if ((s->prompt == NULL) == (s->tokens == NULL)) {
        return bad("submit needs exactly one of prompt and tokens");
    }
    if (!arr_ok(s->tokens, s->n_tokens) ||
        !arr_ok(s->stop_ids, s->n_stop_ids)) {
        return bad("submit: token array with n > 0 but NULL pointer");
    }
    put_id(e, &m->id);
    if (s->prompt != NULL) {
        put_strn(e, "prompt", s->prompt, s->prompt_len);
    } else {
        key(e, "tokens");
        pack_i32s(&e->pk, s->tokens, s->n_tokens);
    }
    put_i64(e, "max_tokens", s->max_tokens);
    put_f64(e, "temperature", s->temperature);
    put_i64(e, "top_k", s->top_k);
    put_f64(e, "top_p", s->top_p);
    if (s->has_seed) {
        put_u64(e, "seed", s->seed);
    }
    if (s->n_stop_ids > 0) {
        key(e, "stop_ids");
        pack_i32s(&e->pk, s->stop_ids, s->n_stop_ids);
    }
    if (s->ttft_slo_ms > 0) {
        put_f64(e, "ttft_slo_ms", s->ttft_slo_ms);
    }
    if (s->tpot_slo_ms > 0) {
        put_f64(e, "tpot_slo_ms", s->tpot_slo_ms);
    }
    put_bool(e, "stream", s->stream);
    return LKV_OK;
}

static lkv_status_t enc_done(enc_t *e, const lkv_wire_msg_t *m)
{
    const lkv_wire_done_t *d = &m->u.done;

    if (d->finish_reason >= LKV_WIRE_FINISH_COUNT) {
        return bad("done: finish_reason out of range");
    }
    put_id(e, &m->id);
    put_str(e, "finish_reason", lkv_wire_finish_name(d->finish_reason));
    put_u64(e, "n_prompt_tokens", d->n_prompt_tokens);
    put_u64(e, "n_tokens", d->n_tokens);
    put_f64(e, "ttft_ms", d->ttft_ms);
    put_f64(e, "tpot_ms", d->tpot_ms);
    put_f64(e, "queue_ms", d->queue_ms);
    if (d->text != NULL) {
        put_strn(e, "text", d->text, d->text_len);
    }
    if (d->tokens != NULL) {
        if (!arr_ok(d->tokens, d->n_out_tokens)) {
            return bad("done: negative token count");
        }
        key(e, "tokens");
        pack_i32s(&e->pk, d->tokens, d->n_out_tokens);
    }
    if (d->finish_reason == LKV_WIRE_FINISH_ERROR) {
        int32_t code = d->error_code < 0 ? d->error_code : LKV_ERR_INTERNAL;

        put_i64(e, "error_code", code);
        put_str(e, "error_name", lkv_status_name((lkv_status_t)code));
        put_str(e, "error_message", d->error_message != NULL
                                        ? d->error_message
                                        : lkv_status_str((lkv_status_t)code));
    }
    return LKV_OK;
}

static lkv_status_t enc_step_plan(enc_t *e, const lkv_step_plan_t *p)
{
    msgpack_packer *pk = &e->pk;

    if (!arr_ok(p->seqs, p->n_seqs) || !arr_ok(p->appends, p->n_appends) ||
        !arr_ok(p->moves, p->n_moves) || !arr_ok(p->finished, p->n_finished)) {
        return bad("step_plan: array with n > 0 but NULL pointer, or n < 0");
    }
    put_u64(e, "step_id", p->step_id);
    key(e, "seqs");
    msgpack_pack_array(pk, (size_t)p->n_seqs);
    for (int32_t i = 0; i < p->n_seqs; i++) {
        const lkv_plan_seq_t *s = &p->seqs[i];

        if (!arr_ok(s->tokens, s->n_tokens)) {
            return bad("step_plan: seq tokens NULL");
        }
        msgpack_pack_array(pk, 8);
        msgpack_pack_uint64(pk, s->seq_id);
        msgpack_pack_int32(pk, s->pos0);
        if (s->sample) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        pack_i32s(pk, s->tokens, s->n_tokens);
        msgpack_pack_double(pk, s->sampling.temperature);
        msgpack_pack_int32(pk, s->sampling.top_k);
        msgpack_pack_double(pk, s->sampling.top_p);
        msgpack_pack_uint64(pk, s->sampling.seed);
    }
    key(e, "appends");
    msgpack_pack_array(pk, (size_t)p->n_appends);
    for (int32_t i = 0; i < p->n_appends; i++) {
        const lkv_plan_append_t *a = &p->appends[i];

        if (!arr_ok(a->blocks, a->n_blocks)) {
            return bad("step_plan: append blocks NULL");
        }
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint64(pk, a->seq_id);
        msgpack_pack_int32(pk, a->layer);
        msgpack_pack_uint8(pk, a->tier);
        pack_i32s(pk, a->blocks, a->n_blocks);
    }
    key(e, "moves");
    msgpack_pack_array(pk, (size_t)p->n_moves);
    for (int32_t i = 0; i < p->n_moves; i++) {
        const lkv_plan_move_t *mv = &p->moves[i];

        if (!arr_ok(mv->src, mv->n_blocks) || !arr_ok(mv->dst, mv->n_blocks)) {
            return bad("step_plan: move src/dst NULL");
        }
        msgpack_pack_array(pk, 8);
        msgpack_pack_uint64(pk, mv->move_id);
        msgpack_pack_uint64(pk, mv->seq_id);
        msgpack_pack_int32(pk, mv->layer);
        msgpack_pack_uint8(pk, mv->kind);
        msgpack_pack_uint8(pk, mv->src_tier);
        msgpack_pack_uint8(pk, mv->dst_tier);
        pack_i32s(pk, mv->src, mv->n_blocks);
        pack_i32s(pk, mv->dst, mv->n_blocks);
    }
    key(e, "finished");
    pack_u64s(pk, p->finished, p->n_finished);
    return LKV_OK;
}

static lkv_status_t enc_step_result(enc_t *e, const lkv_step_result_t *r)
{
    msgpack_packer *pk = &e->pk;

    if (!arr_ok(r->seqs, r->n_seqs) ||
        !arr_ok(r->moves_done, r->n_moves_done) ||
        !arr_ok(r->moves_failed, r->n_moves_failed)) {
        return bad("step_result: array with n > 0 but NULL pointer, or n < 0");
    }
    put_u64(e, "step_id", r->step_id);
    put_i64(e, "status", r->status);
    key(e, "seqs");
    msgpack_pack_array(pk, (size_t)r->n_seqs);
    for (int32_t i = 0; i < r->n_seqs; i++) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint64(pk, r->seqs[i].seq_id);
        msgpack_pack_int32(pk, r->seqs[i].token);
        msgpack_pack_int32(pk, r->seqs[i].status);
    }
    key(e, "moves_done");
    pack_u64s(pk, r->moves_done, r->n_moves_done);
    key(e, "moves_failed");
    pack_u64s(pk, r->moves_failed, r->n_moves_failed);
    put_i64(e, "step_ns", r->step_ns);
    put_i64(e, "compute_ns", r->compute_ns);
    put_i64(e, "bytes_d2h", r->bytes_d2h);
    put_i64(e, "bytes_h2d", r->bytes_h2d);
    return LKV_OK;
}

lkv_status_t lkv_wire_encode(const lkv_wire_msg_t *m, lkv_wire_buf_t *out)
{
    enc_t        e;
    lkv_status_t st = LKV_OK;

    if (m == NULL || out == NULL || m->type <= LKV_WIRE_NONE ||
        m->type >= LKV_WIRE_TYPE_COUNT) {
        return bad("message NULL or of no known type");
    }
    enc_begin(&e, out, m->type);
    switch (m->type) {
    case LKV_WIRE_SUBMIT:
        st = enc_submit(&e, m);
        break;
    case LKV_WIRE_CANCEL:
        if (m->id.kind == LKV_WIRE_ID_NONE) {
            return bad("cancel needs an id");
        }
        put_id(&e, &m->id);
        break;
    case LKV_WIRE_HEALTH:
    case LKV_WIRE_STATS:
        if (m->id.kind != LKV_WIRE_ID_NONE) {
            put_id(&e, &m->id);
        }
        break;
    case LKV_WIRE_ACCEPTED:
        put_id(&e, &m->id);
        put_u64(&e, "n_prompt_tokens", m->u.accepted.n_prompt_tokens);
        break;
    case LKV_WIRE_TOKEN:
        put_id(&e, &m->id);
        put_u64(&e, "index", m->u.token.index);
        put_i64(&e, "token", m->u.token.token);
        put_strn(&e, "text", m->u.token.text, m->u.token.text_len);
        break;
    case LKV_WIRE_DONE:
        st = enc_done(&e, m);
        break;
    case LKV_WIRE_ERROR: {
        int32_t code = m->u.error.code < 0 ? m->u.error.code : LKV_ERR_INTERNAL;

        put_id(&e, &m->id);
        put_i64(&e, "code", code);
        put_str(&e, "name", lkv_status_name((lkv_status_t)code));
        put_str(&e, "message", m->u.error.message != NULL
                                   ? m->u.error.message
                                   : lkv_status_str((lkv_status_t)code));
        if (m->u.error.has_retry_after) {
            put_u64(&e, "retry_after_ms", m->u.error.retry_after_ms);
        }
        break;
    }
    case LKV_WIRE_HEALTH_REPLY: {
        const lkv_wire_health_reply_t *h = &m->u.health_reply;

        if (m->id.kind != LKV_WIRE_ID_NONE) {
            put_id(&e, &m->id);
        }
        put_str(&e, "status", h->status != NULL ? h->status : "ok");
        put_str(&e, "model", h->model);
        put_str(&e, "version", h->version);
        put_f64(&e, "uptime_s", h->uptime_s);
        put_u64(&e, "n_running", h->n_running);
        put_u64(&e, "n_waiting", h->n_waiting);
        break;
    }
    case LKV_WIRE_STATS_REPLY: {
        const lkv_wire_stats_reply_t *s = &m->u.stats_reply;
        char                          err[160];

        if (m->id.kind != LKV_WIRE_ID_NONE) {
            put_id(&e, &m->id);
        }
        key(&e, "stats");
        if (s->stats_mp == NULL || s->stats_mp_len == 0) {
            msgpack_pack_map(&e.pk, 0);
        } else {
            lkv_wire_limits_t lim = lkv_wire_limits_server();

            uint8_t b0 = s->stats_mp[0];

            err[0] = '\0';
            if (lkv_wire_scan(s->stats_mp, s->stats_mp_len, &lim, err,
                              sizeof(err)) != LKV_OK ||
                !((b0 >= 0x80 && b0 <= 0x8f) || b0 == 0xde || b0 == 0xdf)) {
                LKV_LOG_ERROR("wire encode: stats_reply: stats_mp (%zu bytes, "
                              "first 0x%02x) is not one msgpack map: %s",
                              s->stats_mp_len, b0,
                              err[0] ? err : "not a map");
                return LKV_ERR_INVALID;
            }
            wire_buf_append(out, s->stats_mp, s->stats_mp_len);
        }
        break;
    }
    case LKV_WIRE_HELLO: {
        const lkv_wire_hello_t *h = &m->u.hello;

        put_u64(&e, "rank", h->rank);
        put_u64(&e, "world_size", h->world_size);
        put_u64(&e, "instance", h->instance);
        put_u64(&e, "pid", h->pid);
        put_str(&e, "backend", h->backend != NULL ? h->backend : "cpu");
        put_u64(&e, "device_kv_blocks", h->device_kv_blocks);
        put_u64(&e, "host_kv_blocks", h->host_kv_blocks);
        put_u64(&e, "kv_block_bytes", h->kv_block_bytes);
        put_f64(&e, "link_gbps", h->link_gbps);
        put_str(&e, "version", h->version != NULL ? h->version : "");
        if (h->remote_kv_nodes > 0) {
            put_u64(&e, "remote_kv_nodes", h->remote_kv_nodes);
            put_u64(&e, "remote_kv_bytes", h->remote_kv_bytes);
            put_f64(&e, "remote_put_gbps", h->remote_put_gbps);
            put_f64(&e, "remote_get_gbps", h->remote_get_gbps);
        }
        break;
    }
    case LKV_WIRE_CONFIG: {
        const lkv_wire_config_t *k = &m->u.config;

        if (k->model == NULL) {
            return bad("config needs a model");
        }
        put_str(&e, "model", k->model);
        put_u64(&e, "instance", k->instance);
        put_u64(&e, "tp", k->tp);
        put_u64(&e, "pp", k->pp);
        put_u64(&e, "block_size", k->block_size);
        put_u64(&e, "device_kv_blocks", k->device_kv_blocks);
        put_u64(&e, "host_kv_blocks", k->host_kv_blocks);
        put_u64(&e, "max_seqs", k->max_seqs);
        put_u64(&e, "max_batch_tokens", k->max_batch_tokens);
        if (k->remote_kv_blocks > 0) {
            put_u64(&e, "remote_kv_blocks", k->remote_kv_blocks);
        }
        break;
    }
    case LKV_WIRE_STEP_PLAN:
        st = enc_step_plan(&e, &m->u.step_plan);
        break;
    case LKV_WIRE_STEP_RESULT:
        st = enc_step_result(&e, &m->u.step_result);
        break;
    case LKV_WIRE_SHUTDOWN:
        if (m->u.shutdown.reason != NULL) {
            put_str(&e, "reason", m->u.shutdown.reason);
        }
        break;
    default:
        return bad("unknown type");
    }
    if (st != LKV_OK) {
        return st;
    }
    return enc_end(&e);
}

lkv_status_t lkv_wire_encode_error(const lkv_wire_id_t *id, lkv_status_t code,
                                   const char *message, int64_t retry_after_ms,
                                   lkv_wire_buf_t *out)
{
    lkv_wire_msg_t m;

    lkv_wire_msg_init(&m, LKV_WIRE_ERROR);
    if (id != NULL) {
        m.id = *id;
    }
    m.u.error.code    = code;
    m.u.error.message = message;
    if (retry_after_ms >= 0) {
        m.u.error.has_retry_after = true;
        m.u.error.retry_after_ms  = retry_after_ms > UINT32_MAX
                                        ? UINT32_MAX
                                        : (uint32_t)retry_after_ms;
    }
    return lkv_wire_encode(&m, out);
}

/* ---- free-form writer ---- */

static void with_packer(lkv_wire_buf_t *buf, msgpack_packer *pk)
{
    msgpack_packer_init(pk, buf, buf_write);
}

void lkv_wire_w_map(lkv_wire_buf_t *buf, uint32_t n_entries)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_map(&pk, n_entries);
}

void lkv_wire_w_array(lkv_wire_buf_t *buf, uint32_t n)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_array(&pk, n);
}

void lkv_wire_w_str(lkv_wire_buf_t *buf, const char *s)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    if (s == NULL) {
        msgpack_pack_nil(&pk);
    } else {
        msgpack_pack_str_with_body(&pk, s, strlen(s));
    }
}

void lkv_wire_w_i64(lkv_wire_buf_t *buf, int64_t v)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_int64(&pk, v);
}

void lkv_wire_w_u64(lkv_wire_buf_t *buf, uint64_t v)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_uint64(&pk, v);
}

void lkv_wire_w_f64(lkv_wire_buf_t *buf, double v)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_double(&pk, v);
}

void lkv_wire_w_bool(lkv_wire_buf_t *buf, bool v)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    if (v) {
        msgpack_pack_true(&pk);
    } else {
        msgpack_pack_false(&pk);
    }
}

void lkv_wire_w_nil(lkv_wire_buf_t *buf)
{
    msgpack_packer pk;

    with_packer(buf, &pk);
    msgpack_pack_nil(&pk);
}
