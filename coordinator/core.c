/* core.c - request lifecycle of the coordinator (see core.h).
 *
 * Requests live in a slot table; the scheduler id of a request is
 * (generation << 32 | slot), so a late event of a recycled slot is
 * recognised and ignored. Cancels caused by the network (a client that
 * vanished) are deferred to lkv_core_tick so the scheduler's event array is
 * never modified while it is being walked.
 *
 * Threading: coordinator thread only.
 */
#define LKV_LOG_MODULE "core"

#include "coordinator/core.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/instance.h"
#include "coordinator/router.h"
#include "format/model_file.h"
#include "format/tokenizer.h"
#include "transport/wire.h"

#define MAX_SLOTS        65536
#define VERSION_STR      "layerkv 0.1.0"
#define SCAN_INTERVAL_NS (50 * 1000 * 1000)

typedef struct {
    bool           live;
    bool           stream;
    bool           gone;           /* client vanished: send nothing */
    bool           cancel_pending; /* cancel at the next tick */
    bool           cancel_sent;    /* lkv_sched_cancel called */
    bool           fin_in_batch;   /* FINISHED follows in this batch */
    bool           queued_counted; /* prompt counted in queued tokens */
    uint32_t       gen;
    int            inst;
    lkv_zmq_peer_t peer;
    lkv_wire_id_t  wid;
    lkv_status_t   end_status; /* server-side reason for a cancel */
    char           end_msg[160];
    lkv_detok_t    detok;
    uint32_t       n_prompt;
    uint32_t       n_out;
    int64_t        deadline_ns; /* 0 = none */
    /* stream == false: the completion accumulated here */
    char    *text;
    size_t   text_len, text_cap;
    int32_t *toks;
    int32_t  n_toks, cap_toks;
} req_t;

struct lkv_core {
    lkv_core_config_t         cfg;
    char                     *model_path;
    lkv_model_file_t         *mf;
    const lkv_tokenizer_t    *tok;
    const lkv_model_config_t *mc;
    int                       vocab;
    int                       max_seq_len;
    lkv_inst_t              **insts;
    int                       n_insts;
    lkv_metrics_t            *metrics;

    req_t   *slots;
    int      n_slots, cap_slots;
    int     *free_list;
    int      n_free;
    int      n_live;

    int32_t *tok_buf; /* (tok_cap) prompt ids */
    int      tok_cap;
    char    *piece;   /* detok output */
    size_t   piece_cap;
    lkv_wire_buf_t out;
    lkv_wire_buf_t aux; /* stats map */
    int32_t *layer_buf; /* (LKV_KV_TIER_COUNT * n_layers) */

    uint64_t seed_next;
    int64_t  start_ns;
    int64_t  last_scan_ns;
    int64_t  last_metrics_ns;
    bool     draining;
    uint64_t n_submitted, n_finished, n_errors_sent, n_clients_lost;
    uint64_t n_rejected;
};

static void drain_events(lkv_core_t *c, int ii, int64_t now_ns);
static void pump(lkv_core_t *c, int64_t now_ns);

lkv_core_config_t lkv_core_config_default(void)
{
    lkv_core_config_t cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.n_instances                         = 1;
    cfg.sched                               = lkv_sched_config_default();
    cfg.sched.n_blocks[LKV_KV_TIER_HOST]    = 4096;
    cfg.request_timeout_s                   = 600;
    cfg.worker_timeout_s                    = 120;
    return cfg;
}

/* ---- sending ---------------------------------------------------------- */

static bool same_peer(const lkv_zmq_peer_t *a, const lkv_zmq_peer_t *b)
{
    return a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

static void client_lost(lkv_core_t *c, const lkv_zmq_peer_t *peer)
{
    int n = 0;

    c->n_clients_lost++;
    for (int i = 0; i < c->n_slots; i++) {
        req_t *r = &c->slots[i];
        if (r->live && !r->gone && same_peer(&r->peer, peer)) {
            r->gone           = true;
            r->cancel_pending = true;
            n++;
        }
    }
    LKV_LOG_DEBUG("client gone; cancelling its %d request(s)", n);
}

static void send_client(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                        const lkv_wire_buf_t *buf)
{
    lkv_status_t st;

    if (buf->oom) {
        LKV_LOG_ERROR("reply not sent: out of memory while encoding");
        return;
    }
    st = c->cfg.send(c->cfg.send_ctx, LKV_CORE_TO_CLIENT, peer, buf->data,
                     buf->len);
    if (st != LKV_OK) {
        if (st != LKV_ERR_PEER_LOST) {
            LKV_LOG_WARN("send to a client failed: %s; dropping the client",
                         lkv_status_str(st));
        }
        client_lost(c, peer);
    }
}

static const char *reject_label(lkv_status_t st)
{
    switch (st) {
    case LKV_ERR_INVALID: return "invalid";
    case LKV_ERR_TOOLONG: return "toolong";
    case LKV_ERR_BUSY: return "busy";
    case LKV_ERR_REJECTED: return "slo";
    case LKV_ERR_NOSPACE: return "nospace";
    case LKV_ERR_PROTOCOL: return "protocol";
    case LKV_ERR_FORMAT: return "format";
    case LKV_ERR_UNSUPPORTED: return "unsupported";
    case LKV_ERR_NOMEM: return "nomem";
    default: return "other";
    }
}

/* `error` reply; counts a rejection when it ends a request (count). */
static void send_error(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                       const lkv_wire_id_t *id, lkv_status_t code,
                       const char *message, int64_t retry_after_ms, bool count)
{
    if (lkv_wire_encode_error(id != NULL && id->kind != LKV_WIRE_ID_NONE ? id
                                                                         : NULL,
                              code, message, retry_after_ms,
                              &c->out) != LKV_OK) {
        LKV_LOG_ERROR("cannot encode an error reply (%s)", message);
        return;
    }
    c->n_errors_sent++;
    if (count) {
        c->n_rejected++;
        lkv_metrics_count_rejected(c->metrics, reject_label(code));
    }
    send_client(c, peer, &c->out);
}

/* ---- slots -------------------------------------------------------------- */

static uint64_t req_sched_id(const lkv_core_t *c, const req_t *r)
{
    return ((uint64_t)r->gen << 32) | (uint64_t)(r - c->slots);
}

static req_t *req_by_sched_id(lkv_core_t *c, uint64_t id)
{
    uint64_t idx = id & 0xffffffffu;

    if (idx >= (uint64_t)c->n_slots) {
        return NULL;
    }
    req_t *r = &c->slots[idx];
    return r->live && r->gen == (uint32_t)(id >> 32) ? r : NULL;
}

static req_t *req_alloc(lkv_core_t *c)
{
    int idx;

    if (c->n_free > 0) {
        idx = c->free_list[--c->n_free];
    } else {
        if (c->n_slots == MAX_SLOTS) {
            return NULL;
        }
        if (c->n_slots == c->cap_slots) {
            int    cap = c->cap_slots ? c->cap_slots * 2 : 256;
            req_t *s   = realloc(c->slots, (size_t)cap * sizeof(*s));
            if (s == NULL) {
                return NULL;
            }
            c->slots = s;
            int *fl  = realloc(c->free_list, (size_t)cap * sizeof(*fl));
            if (fl == NULL) {
                return NULL;
            }
            c->free_list = fl;
            c->cap_slots = cap;
        }
        idx = c->n_slots++;
        memset(&c->slots[idx], 0, sizeof(req_t));
    }
    req_t   *r   = &c->slots[idx];
    uint32_t gen = r->gen + 1;
    memset(r, 0, sizeof(*r));
    r->gen  = gen == 0 ? 1 : gen;
    r->live = true;
    c->n_live++;
    return r;
}

static void req_free(lkv_core_t *c, req_t *r)
{
    if (r->queued_counted) {
        lkv_inst_add_queued_tokens(c->insts[r->inst], -(int64_t)r->n_prompt);
    }
    free(r->text);
    free(r->toks);
    r->text = NULL;
    r->toks = NULL;
    r->live = false;
    c->n_live--;
    c->free_list[c->n_free++] = (int)(r - c->slots);
}

static req_t *req_find(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                       const lkv_wire_id_t *id)
{
    for (int i = 0; i < c->n_slots; i++) {
        req_t *r = &c->slots[i];
        if (r->live && !r->gone && lkv_wire_id_equal(&r->wid, id) &&
            same_peer(&r->peer, peer)) {
            return r;
        }
    }
    return NULL;
}

/* ---- create / destroy ---------------------------------------------------- */

lkv_status_t lkv_core_create(const lkv_core_config_t *cfg, lkv_core_t **c_p)
{
    lkv_core_t  *c;
    lkv_status_t st;

    if (cfg == NULL || c_p == NULL || cfg->model_path == NULL ||
        cfg->send == NULL || cfg->n_instances < 1 || cfg->n_instances > 256) {
        LKV_LOG_ERROR("core config: model path, send function and 1..256 "
                      "instances are required");
        return LKV_ERR_INVALID;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    c->cfg        = *cfg;
    c->model_path = strdup(cfg->model_path);
    if (c->model_path == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    st = lkv_model_file_open(cfg->model_path, cfg->tokenizer_path, &c->mf);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot open model '%s': %s", cfg->model_path,
                      lkv_status_str(st));
        goto fail;
    }
    c->mc  = lkv_model_file_config(c->mf);
    c->tok = lkv_model_file_tokenizer(c->mf);
    if (c->tok == NULL) {
        LKV_LOG_ERROR("model '%s' has no tokenizer; give --tokenizer PATH",
                      cfg->model_path);
        st = LKV_ERR_INVALID;
        goto fail;
    }
    c->vocab       = c->mc->vocab_size;
    c->max_seq_len = c->mc->max_seq_len > 0 ? c->mc->max_seq_len : 2048;

    lkv_sched_config_t sc = cfg->sched;
    sc.n_layers           = c->mc->n_layers;
    sc.block_bytes        = (int64_t)2 * sc.block_size * c->mc->n_kv_heads *
                     c->mc->head_dim * (int64_t)sizeof(float);
    sc.max_seq_len = c->max_seq_len;
    sc.n_stop      = 0;
    for (int i = 0; i < c->mc->n_stop_ids && sc.n_stop < LKV_SCHED_MAX_STOP;
         i++) {
        sc.stop_ids[sc.n_stop++] = c->mc->stop_ids[i];
    }
    if (sc.n_stop == 0 && c->mc->eos_id >= 0) {
        sc.stop_ids[sc.n_stop++] = c->mc->eos_id;
    }
    c->cfg.sched = sc;

    c->insts = calloc((size_t)cfg->n_instances, sizeof(*c->insts));
    if (c->insts == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    for (int i = 0; i < cfg->n_instances; i++) {
        lkv_inst_config_t ic;
        memset(&ic, 0, sizeof(ic));
        ic.index      = i;
        ic.sched      = sc;
        ic.model_path = cfg->model_path;
        int wbt       = sc.max_batch_tokens;
        if (!sc.chunked_prefill && wbt < c->max_seq_len) {
            wbt = c->max_seq_len; /* a lone long prefill runs whole */
        }
        ic.worker_max_batch_tokens = (uint32_t)wbt;
        st = lkv_inst_create(&ic, &c->insts[i]);
        if (st != LKV_OK) {
            LKV_LOG_ERROR("cannot create instance %d: %s", i,
                          lkv_status_str(st));
            goto fail;
        }
        c->n_insts++;
    }
    st = lkv_metrics_create(sc.n_layers, cfg->model_path,
                            lkv_sched_policy_name(sc.policy), &c->metrics);
    if (st != LKV_OK) {
        goto fail;
    }
    c->tok_cap   = c->max_seq_len + 8;
    c->tok_buf   = malloc((size_t)c->tok_cap * sizeof(int32_t));
    c->piece_cap = lkv_tok_max_piece_bytes(c->tok) + 32;
    c->piece     = malloc(c->piece_cap);
    c->layer_buf = calloc((size_t)sc.n_layers * LKV_KV_TIER_COUNT,
                          sizeof(int32_t));
    if (c->tok_buf == NULL || c->piece == NULL || c->layer_buf == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    lkv_wire_buf_init(&c->out);
    lkv_wire_buf_init(&c->aux);
    c->seed_next = 0x9e3779b97f4a7c15ull;
    c->start_ns  = lkv_now_ns();
    *c_p         = c;
    return LKV_OK;

fail:
    lkv_core_destroy(&c);
    return st;
}

void lkv_core_destroy(lkv_core_t **c_p)
{
    lkv_core_t *c;

    if (c_p == NULL || *c_p == NULL) {
        return;
    }
    c = *c_p;
    for (int i = 0; i < c->n_slots; i++) {
        if (c->slots[i].live) {
            free(c->slots[i].text);
            free(c->slots[i].toks);
        }
    }
    free(c->slots);
    free(c->free_list);
    for (int i = 0; i < c->n_insts; i++) {
        lkv_inst_destroy(&c->insts[i]);
    }
    free(c->insts);
    lkv_metrics_destroy(&c->metrics);
    lkv_model_file_close(&c->mf);
    free(c->tok_buf);
    free(c->piece);
    free(c->layer_buf);
    lkv_wire_buf_free(&c->out);
    lkv_wire_buf_free(&c->aux);
    free(c->model_path);
    free(c);
    *c_p = NULL;
}

/* ---- client messages ---------------------------------------------------- */

static bool append_text(req_t *r, const char *s, size_t n)
{
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap * 2 : 256;
        while (cap < r->text_len + n + 1) {
            cap *= 2;
        }
        char *t = realloc(r->text, cap);
        if (t == NULL) {
            return false;
        }
        r->text     = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = '\0';
    return true;
}

static bool append_tok(req_t *r, int32_t t)
{
    if (r->n_toks == r->cap_toks) {
        int      cap = r->cap_toks ? r->cap_toks * 2 : 64;
        int32_t *p   = realloc(r->toks, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            return false;
        }
        r->toks     = p;
        r->cap_toks = cap;
    }
    r->toks[r->n_toks++] = t;
    return true;
}

static void handle_submit(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                          const lkv_wire_msg_t *msg, int64_t now_ns)
{
    const lkv_wire_submit_t *s = &msg->u.submit;
    char                     err[256];
    int                      n = 0;
    lkv_status_t             st;

    if (c->draining) {
        send_error(c, peer, &msg->id, LKV_ERR_BUSY,
                   "server is shutting down; retry on another server", 1000,
                   true);
        return;
    }
    if (req_find(c, peer, &msg->id) != NULL) {
        char idtxt[LKV_WIRE_ID_MAX + 8];
        snprintf(err, sizeof(err),
                 "submit: id '%s' is already in flight on this connection; "
                 "use a new id or wait for its 'done'",
                 lkv_wire_id_format(&msg->id, idtxt, sizeof(idtxt)));
        send_error(c, peer, &msg->id, LKV_ERR_BUSY, err, -1, true);
        return;
    }
    /* prompt -> ids (validated) */
    if (s->tokens != NULL) {
        if (s->n_tokens > c->tok_cap) {
            n = s->n_tokens;
        } else {
            for (int i = 0; i < s->n_tokens; i++) {
                if (s->tokens[i] < 0 || s->tokens[i] >= c->vocab) {
                    snprintf(err, sizeof(err),
                             "submit: tokens[%d] = %d is not a token id of "
                             "this model (vocabulary 0..%d); fix the prompt",
                             i, (int)s->tokens[i], c->vocab - 1);
                    send_error(c, peer, &msg->id, LKV_ERR_INVALID, err, -1,
                               true);
                    return;
                }
                c->tok_buf[i] = s->tokens[i];
            }
            n = s->n_tokens;
        }
    } else {
        const char *text = s->prompt != NULL ? s->prompt : "";
        st = lkv_tok_encode(c->tok, text, s->prompt_len, lkv_tok_add_bos_default(c->tok),
                            false, c->tok_buf, c->tok_cap, &n);
        if (st != LKV_OK) {
            send_error(c, peer, &msg->id, LKV_ERR_INVALID,
                       "submit: 'prompt' could not be tokenized", -1, true);
            return;
        }
    }
    if (n < 1) {
        send_error(c, peer, &msg->id, LKV_ERR_INVALID,
                   "submit: the prompt encodes to no tokens and this model "
                   "adds no BOS; give some text or token ids",
                   -1, true);
        return;
    }
    if (n + 1 > c->max_seq_len) {
        snprintf(err, sizeof(err),
                 "submit: the prompt has %d tokens; the model context is %d "
                 "tokens (prompt + at least 1 generated); shorten it",
                 n, c->max_seq_len);
        send_error(c, peer, &msg->id, LKV_ERR_TOOLONG, err, -1, true);
        return;
    }
    if (s->n_stop_ids > LKV_SCHED_MAX_STOP) {
        snprintf(err, sizeof(err),
                 "submit: 'stop_ids' has %d entries; this server supports at "
                 "most %d",
                 (int)s->n_stop_ids, LKV_SCHED_MAX_STOP);
        send_error(c, peer, &msg->id, LKV_ERR_INVALID, err, -1, true);
        return;
    }
    int ii = lkv_router_pick(c->insts, c->n_insts, n);
    if (ii < 0) {
        send_error(c, peer, &msg->id, LKV_ERR_BUSY,
                   "no worker is connected yet (server starting); retry "
                   "shortly",
                   1000, true);
        return;
    }
    req_t *r = req_alloc(c);
    if (r == NULL) {
        send_error(c, peer, &msg->id, LKV_ERR_BUSY,
                   "too many requests in flight; retry later", 1000, true);
        return;
    }
    r->peer     = *peer;
    r->wid      = msg->id;
    r->inst     = ii;
    r->stream   = s->stream;
    r->n_prompt = (uint32_t)n;
    lkv_detok_init(&r->detok);
    r->detok.prev_id = c->tok_buf[n - 1];
    if (c->cfg.request_timeout_s > 0) {
        r->deadline_ns = now_ns + (int64_t)(c->cfg.request_timeout_s * 1e9);
    }

    lkv_sched_request_t q;
    memset(&q, 0, sizeof(q));
    q.id                   = req_sched_id(c, r);
    q.prompt               = c->tok_buf;
    q.n_prompt             = n;
    q.max_tokens           = s->max_tokens;
    q.sampling.temperature = s->temperature;
    q.sampling.top_k       = s->top_k;
    q.sampling.top_p       = s->top_p;
    q.sampling.seed        = s->has_seed ? s->seed : c->seed_next++;
    q.ttft_slo_ns = s->ttft_slo_ms > 0 ? (int64_t)(s->ttft_slo_ms * 1e6) : 0;
    q.tpot_slo_ns = s->tpot_slo_ms > 0 ? (int64_t)(s->tpot_slo_ms * 1e6) : 0;
    q.arrival_ns  = now_ns;
    q.n_stop      = s->n_stop_ids;
    for (int i = 0; i < s->n_stop_ids; i++) {
        q.stop_ids[i] = s->stop_ids[i];
    }
    int64_t retry_ns = -1;
    lkv_sched_t *sched = lkv_inst_sched(c->insts[ii]);
    st = lkv_sched_submit(sched, &q, now_ns, &retry_ns);
    if (st != LKV_OK) {
        const char *why = lkv_sched_last_error(sched);
        snprintf(err, sizeof(err), "submit: %s",
                 why && why[0] ? why : lkv_status_str(st));
        req_free(c, r);
        send_error(c, peer, &msg->id, st, err,
                   (st == LKV_ERR_REJECTED || st == LKV_ERR_BUSY)
                       ? (retry_ns > 0 ? retry_ns / 1000000 + 1 : 1000)
                       : -1,
                   true);
        return;
    }
    c->n_submitted++;
    r->queued_counted = true;
    lkv_inst_add_queued_tokens(c->insts[ii], n);

    lkv_wire_msg_t a;
    lkv_wire_msg_init(&a, LKV_WIRE_ACCEPTED);
    a.id                          = msg->id;
    a.u.accepted.n_prompt_tokens = (uint32_t)n;
    if (lkv_wire_encode(&a, &c->out) == LKV_OK) {
        send_client(c, peer, &c->out);
    }
    pump(c, now_ns);
}

static void handle_cancel(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                          const lkv_wire_msg_t *msg, int64_t now_ns)
{
    req_t *r = req_find(c, peer, &msg->id);
    char   idtxt[LKV_WIRE_ID_MAX + 8], err[200];

    if (r == NULL || r->cancel_sent) {
        snprintf(err, sizeof(err),
                 "cancel: no request '%s' in flight on this connection (it "
                 "may have finished already)",
                 lkv_wire_id_format(&msg->id, idtxt, sizeof(idtxt)));
        send_error(c, peer, &msg->id, LKV_ERR_NOTFOUND, err, -1, false);
        return;
    }
    r->cancel_sent = true;
    if (lkv_sched_cancel(lkv_inst_sched(c->insts[r->inst]),
                         req_sched_id(c, r), now_ns) == LKV_OK) {
        drain_events(c, r->inst, now_ns);
    }
    pump(c, now_ns);
}

static void sum_stats(lkv_core_t *c, lkv_sched_stats_t *tot, int *n_up)
{
    memset(tot, 0, sizeof(*tot));
    *n_up = 0;
    for (int i = 0; i < c->n_insts; i++) {
        lkv_sched_stats_t s;
        lkv_sched_stats(lkv_inst_sched(c->insts[i]), &s);
        *n_up += lkv_inst_up(c->insts[i]) ? 1 : 0;
        tot->n_waiting += s.n_waiting;
        tot->n_running += s.n_running;
        tot->n_moves_inflight += s.n_moves_inflight;
        for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
            tot->blocks_used[t] += s.blocks_used[t];
            tot->blocks_total[t] += s.blocks_total[t];
        }
        tot->steps += s.steps;
        tot->submitted += s.submitted;
        tot->finished += s.finished;
        tot->preemptions += s.preemptions;
        tot->swap_preemptions += s.swap_preemptions;
        tot->rejections += s.rejections;
        tot->cancellations += s.cancellations;
        tot->errors += s.errors;
        tot->ttft_violations += s.ttft_violations;
        tot->tpot_violations += s.tpot_violations;
        tot->offloaded_bytes += s.offloaded_bytes;
        tot->reloaded_bytes += s.reloaded_bytes;
        tot->staged_bytes += s.staged_bytes;
        tot->alpha += s.alpha / c->n_insts;
    }
}

static void fill_layer_blocks(lkv_core_t *c)
{
    int nl = c->cfg.sched.n_layers;

    memset(c->layer_buf, 0, (size_t)nl * LKV_KV_TIER_COUNT * sizeof(int32_t));
    for (int i = 0; i < c->n_insts; i++) {
        const lkv_sched_t *s = lkv_inst_sched(c->insts[i]);
        for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
            if (lkv_inst_sched_config(c->insts[i])->n_blocks[t] == 0) {
                continue;
            }
            for (int l = 0; l < nl; l++) {
                c->layer_buf[t * nl + l] +=
                    lkv_sched_layer_blocks(s, (lkv_kv_tier_t)t, l);
            }
        }
    }
}

static void handle_health(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                          const lkv_wire_msg_t *msg, int64_t now_ns)
{
    lkv_sched_stats_t tot;
    int               n_up;
    lkv_wire_msg_t    m;

    sum_stats(c, &tot, &n_up);
    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH_REPLY);
    m.id                    = msg->id;
    m.u.health_reply.status = c->draining ? "draining"
                              : n_up == 0 ? "starting"
                                          : "ok";
    m.u.health_reply.model     = c->model_path;
    m.u.health_reply.version   = VERSION_STR;
    m.u.health_reply.uptime_s  = (double)(now_ns - c->start_ns) * 1e-9;
    m.u.health_reply.n_running = (uint32_t)tot.n_running;
    m.u.health_reply.n_waiting = (uint32_t)tot.n_waiting;
    if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
        send_client(c, peer, &c->out);
    }
}

/* One "key": value member of a msgpack map being written. */
static void w_kv_i64(lkv_wire_buf_t *b, const char *key, int64_t v)
{
    lkv_wire_w_str(b, key);
    lkv_wire_w_i64(b, v);
}

static void w_kv_u64(lkv_wire_buf_t *b, const char *key, uint64_t v)
{
    lkv_wire_w_str(b, key);
    lkv_wire_w_u64(b, v);
}

static void w_kv_f64(lkv_wire_buf_t *b, const char *key, double v)
{
    lkv_wire_w_str(b, key);
    lkv_wire_w_f64(b, v);
}

static void w_kv_str(lkv_wire_buf_t *b, const char *key, const char *v)
{
    lkv_wire_w_str(b, key);
    lkv_wire_w_str(b, v);
}

static void w_kv_bool(lkv_wire_buf_t *b, const char *key, bool v)
{
    lkv_wire_w_str(b, key);
    lkv_wire_w_bool(b, v);
}

static void w_tier_map_i(lkv_wire_buf_t *b, const int32_t *v)
{
    lkv_wire_w_map(b, 3);
    w_kv_i64(b, "device", v[0]);
    w_kv_i64(b, "host", v[1]);
    w_kv_i64(b, "remote", v[2]);
}

static void handle_stats(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                         const lkv_wire_msg_t *msg, int64_t now_ns)
{
    lkv_sched_stats_t tot;
    int               n_up, nl = c->cfg.sched.n_layers;
    lkv_wire_buf_t   *b = &c->aux;
    static const char *const tiers[3] = {"device", "host", "remote"};

    sum_stats(c, &tot, &n_up);
    fill_layer_blocks(c);
    lkv_wire_buf_reset(b);
    lkv_wire_w_map(b, 29);
    w_kv_str(b, "policy", lkv_sched_policy_name(c->cfg.sched.policy));
    w_kv_str(b, "model", c->model_path);
    w_kv_i64(b, "n_instances", c->n_insts);
    w_kv_i64(b, "n_instances_up", n_up);
    w_kv_i64(b, "n_running", tot.n_running);
    w_kv_i64(b, "n_waiting", tot.n_waiting);
    w_kv_i64(b, "n_live", c->n_live);
    w_kv_u64(b, "n_submitted", c->n_submitted);
    w_kv_u64(b, "n_finished", c->n_finished);
    w_kv_u64(b, "n_rejected", c->n_rejected);
    w_kv_u64(b, "n_preempted", tot.preemptions);
    w_kv_u64(b, "n_swap_preempted", tot.swap_preemptions);
    w_kv_u64(b, "n_cancelled", tot.cancellations);
    w_kv_u64(b, "n_errors", tot.errors);
    w_kv_u64(b, "n_clients_lost", c->n_clients_lost);
    w_kv_u64(b, "n_steps", tot.steps);
    w_kv_i64(b, "n_moves_inflight", tot.n_moves_inflight);
    lkv_wire_w_str(b, "kv_blocks_total");
    w_tier_map_i(b, tot.blocks_total);
    lkv_wire_w_str(b, "kv_blocks_used");
    w_tier_map_i(b, tot.blocks_used);
    lkv_wire_w_str(b, "kv_blocks_used_per_layer");
    lkv_wire_w_map(b, 3);
    for (int t = 0; t < 3; t++) {
        lkv_wire_w_str(b, tiers[t]);
        lkv_wire_w_array(b, (uint32_t)nl);
        for (int l = 0; l < nl; l++) {
            lkv_wire_w_i64(b, c->layer_buf[t * nl + l]);
        }
    }
    w_kv_i64(b, "bytes_offloaded", tot.offloaded_bytes);
    w_kv_i64(b, "bytes_reloaded", tot.reloaded_bytes);
    w_kv_i64(b, "bytes_staged", tot.staged_bytes);
    lkv_wire_w_str(b, "slo_violations");
    lkv_wire_w_map(b, 2);
    w_kv_u64(b, "ttft", tot.ttft_violations);
    w_kv_u64(b, "tpot", tot.tpot_violations);
    w_kv_f64(b, "alpha", tot.alpha);
    w_kv_i64(b, "block_size", c->cfg.sched.block_size);
    w_kv_i64(b, "max_context", c->max_seq_len);
    w_kv_f64(b, "uptime_s", (double)(now_ns - c->start_ns) * 1e-9);
    lkv_wire_w_str(b, "instances");
    lkv_wire_w_array(b, (uint32_t)c->n_insts);
    for (int i = 0; i < c->n_insts; i++) {
        lkv_sched_stats_t is;
        int64_t           ttft = lkv_router_predict_ttft_ns(c->insts[i], 1);
        lkv_sched_stats(lkv_inst_sched(c->insts[i]), &is);
        lkv_wire_w_map(b, 7);
        w_kv_bool(b, "up", lkv_inst_up(c->insts[i]));
        w_kv_i64(b, "n_running", is.n_running);
        w_kv_i64(b, "n_waiting", is.n_waiting);
        w_kv_u64(b, "n_steps", is.steps);
        w_kv_i64(b, "device_blocks_used", is.blocks_used[LKV_KV_TIER_DEVICE]);
        w_kv_i64(b, "queued_prompt_tokens",
                 lkv_inst_queued_tokens(c->insts[i]));
        w_kv_f64(b, "predicted_ttft_ms",
                 ttft == INT64_MAX ? -1.0 : (double)ttft * 1e-6);
    }
    if (b->oom) {
        send_error(c, peer, &msg->id, LKV_ERR_NOMEM,
                   "stats: out of memory; retry later", 1000, false);
        return;
    }
    lkv_wire_msg_t m;
    lkv_wire_msg_init(&m, LKV_WIRE_STATS_REPLY);
    m.id                        = msg->id;
    m.u.stats_reply.stats_mp     = b->data;
    m.u.stats_reply.stats_mp_len = b->len;
    if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
        send_client(c, peer, &c->out);
    } else {
        LKV_LOG_ERROR("cannot encode the stats reply");
    }
}

void lkv_core_on_client(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                        const void *data, size_t len, int64_t now_ns)
{
    lkv_wire_msg_t    msg;
    lkv_wire_limits_t lim = lkv_wire_limits_client();
    lkv_status_t      st;

    st = lkv_wire_decode(data, len, &lim, &msg);
    if (st != LKV_OK) {
        /* an undecodable submit ends that request: count it as rejected */
        send_error(c, peer, &msg.id, st, msg.err, -1,
                   msg.type == LKV_WIRE_SUBMIT || msg.type == LKV_WIRE_NONE);
        lkv_wire_msg_release(&msg);
        return;
    }
    switch (msg.type) {
    case LKV_WIRE_SUBMIT:
        handle_submit(c, peer, &msg, now_ns);
        break;
    case LKV_WIRE_CANCEL:
        handle_cancel(c, peer, &msg, now_ns);
        break;
    case LKV_WIRE_HEALTH:
        handle_health(c, peer, &msg, now_ns);
        break;
    case LKV_WIRE_STATS:
        handle_stats(c, peer, &msg, now_ns);
        break;
    default: {
        char err[160];
        snprintf(err, sizeof(err),
                 "message type '%s' is not accepted from clients; send "
                 "submit, cancel, health or stats",
                 lkv_wire_type_name(msg.type));
        send_error(c, peer, &msg.id, LKV_ERR_UNSUPPORTED, err, -1, false);
        break;
    }
    }
    lkv_wire_msg_release(&msg);
}

void lkv_core_on_client_bad_frames(lkv_core_t *c, const lkv_zmq_peer_t *peer)
{
    send_error(c, peer, NULL, LKV_ERR_PROTOCOL,
               "every message must be exactly one ZeroMQ frame holding one "
               "msgpack map (docs/protocol.md section 1)",
               -1, true);
}

/* ---- scheduler events ---------------------------------------------------- */

static lkv_wire_finish_t wire_finish(lkv_sched_finish_t f)
{
    switch (f) {
    case LKV_SCHED_FINISH_STOP: return LKV_WIRE_FINISH_STOP;
    case LKV_SCHED_FINISH_LENGTH: return LKV_WIRE_FINISH_LENGTH;
    case LKV_SCHED_FINISH_CANCELLED: return LKV_WIRE_FINISH_CANCELLED;
    default: return LKV_WIRE_FINISH_ERROR;
    }
}

static void on_token(lkv_core_t *c, req_t *r, const lkv_sched_event_t *ev)
{
    size_t n;

    if (r->queued_counted) {
        lkv_inst_add_queued_tokens(c->insts[r->inst], -(int64_t)r->n_prompt);
        r->queued_counted = false;
    }
    uint32_t index = r->n_out++;
    if (r->gone) {
        return;
    }
    n = lkv_detok_push(c->tok, &r->detok, ev->token, c->piece, c->piece_cap);
    if (r->fin_in_batch) {
        n += lkv_detok_flush(&r->detok, c->piece + n, c->piece_cap - n);
    }
    c->piece[n] = '\0';
    if (!r->stream) {
        if (!append_text(r, c->piece, n) || !append_tok(r, ev->token)) {
            r->end_status = LKV_ERR_NOMEM;
        }
        return;
    }
    lkv_wire_msg_t m;
    lkv_wire_msg_init(&m, LKV_WIRE_TOKEN);
    m.id               = r->wid;
    m.u.token.index    = index;
    m.u.token.token    = ev->token;
    m.u.token.text     = c->piece;
    m.u.token.text_len = (uint32_t)n;
    if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
        send_client(c, &r->peer, &c->out);
    }
}

/* Tell r's client (unless it vanished) that r is done: `reason`, and for
 * an error `code` and `msg`; mr (NULL when unknown) gives the timings. A
 * non-streaming request gets its whole text and tokens with it. */
static void send_done(lkv_core_t *c, req_t *r, lkv_wire_finish_t reason,
                      lkv_status_t code, const char *msg,
                      const lkv_metrics_request_t *mr)
{
    static const int32_t none[1] = {0};
    lkv_wire_msg_t       m;

    if (r->gone) {
        return;
    }
    lkv_wire_msg_init(&m, LKV_WIRE_DONE);
    m.id                     = r->wid;
    m.u.done.finish_reason   = (uint8_t)reason;
    m.u.done.n_prompt_tokens = r->n_prompt;
    m.u.done.n_tokens        = r->n_out;
    if (mr != NULL) {
        m.u.done.ttft_ms  = mr->ttft_ns >= 0 ? (double)mr->ttft_ns * 1e-6 : 0;
        m.u.done.tpot_ms  = mr->tpot_ns >= 0 ? (double)mr->tpot_ns * 1e-6 : 0;
        m.u.done.queue_ms = mr->queue_ns >= 0 ? (double)mr->queue_ns * 1e-6 : 0;
    }
    if (!r->stream) {
        m.u.done.text         = r->text != NULL ? r->text : "";
        m.u.done.text_len     = (uint32_t)r->text_len;
        m.u.done.tokens       = r->toks != NULL ? r->toks : none;
        m.u.done.n_out_tokens = r->n_toks;
    }
    if (reason == LKV_WIRE_FINISH_ERROR) {
        m.u.done.error_code    = code;
        m.u.done.error_message = msg;
    }
    if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
        send_client(c, &r->peer, &c->out);
    } else {
        LKV_LOG_ERROR("cannot encode done for a request");
    }
}

static void on_finished(lkv_core_t *c, req_t *r, const lkv_sched_event_t *ev)
{
    const lkv_sched_timing_t *t = &ev->timing;
    lkv_wire_finish_t         reason = wire_finish(ev->reason);
    lkv_status_t              code   = ev->status;
    const char               *emsg   = NULL;
    char                      ebuf[200];

    if (r->end_status != LKV_OK && !r->gone) {
        reason = LKV_WIRE_FINISH_ERROR;
        code   = r->end_status;
        emsg   = r->end_msg[0] ? r->end_msg : lkv_status_str(code);
    } else if (reason == LKV_WIRE_FINISH_ERROR) {
        if (code >= 0) {
            code = LKV_ERR_INTERNAL;
        }
        snprintf(ebuf, sizeof(ebuf),
                 "the request failed in the server: %s%s", lkv_status_str(code),
                 code == LKV_ERR_NOSPACE
                     ? " (the KV pools cannot hold it; shorten the prompt or "
                       "max_tokens)"
                     : "; retry, and report it if it persists");
        emsg = ebuf;
    }
    /* metrics */
    lkv_metrics_request_t mr;
    mr.queue_ns   = t->first_scheduled_ns > 0 ? t->first_scheduled_ns - t->arrival_ns : -1;
    mr.prefill_ns = t->first_token_ns > 0 && t->first_scheduled_ns > 0
                        ? t->first_token_ns - t->first_scheduled_ns
                        : -1;
    mr.ttft_ns = t->first_token_ns > 0 ? t->first_token_ns - t->arrival_ns : -1;
    mr.tpot_ns = t->n_generated >= 2
                     ? (t->last_token_ns - t->first_token_ns) /
                           (t->n_generated - 1)
                     : -1;
    mr.e2e_ns        = t->finish_ns > 0 ? t->finish_ns - t->arrival_ns : -1;
    mr.n_prompt      = t->n_prompt;
    mr.n_generated   = t->n_generated;
    mr.finish_reason = lkv_wire_finish_name(reason);
    mr.ttft_violated = t->ttft_violated;
    mr.tpot_violated = t->tpot_violated;
    lkv_metrics_observe_request(c->metrics, &mr);
    c->n_finished++;

    if (!r->gone && !r->stream) {
        size_t n = lkv_detok_flush(&r->detok, c->piece, c->piece_cap);
        if (n > 0) {
            append_text(r, c->piece, n);
        }
    }
    send_done(c, r, reason, code, emsg, &mr);
    req_free(c, r);
}

static void drain_events(lkv_core_t *c, int ii, int64_t now_ns)
{
    const lkv_sched_event_t *ev;
    int                      n;

    (void)now_ns;
    lkv_sched_take_events(lkv_inst_sched(c->insts[ii]), &ev, &n);
    for (int i = 0; i < n; i++) {
        if (ev[i].kind == LKV_SCHED_EV_FINISHED) {
            req_t *r = req_by_sched_id(c, ev[i].id);
            if (r != NULL) {
                r->fin_in_batch = true;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        req_t *r = req_by_sched_id(c, ev[i].id);
        if (r == NULL) {
            continue;
        }
        if (ev[i].kind == LKV_SCHED_EV_TOKEN) {
            on_token(c, r, &ev[i]);
        } else {
            on_finished(c, r, &ev[i]);
        }
    }
}

/* ---- workers ------------------------------------------------------------- */

static void send_worker(lkv_core_t *c, int ii, const lkv_wire_buf_t *buf);

/* The worker of instance ii is lost: end its requests, reset it. */
static void fail_instance(lkv_core_t *c, int ii, lkv_status_t code,
                          const char *why)
{
    char msg[240];
    int  n = 0;

    snprintf(msg, sizeof(msg),
             "the worker of instance %d was lost (%s); the request was not "
             "completed: retry it",
             ii, why);
    for (int i = 0; i < c->n_slots; i++) {
        req_t *r = &c->slots[i];
        if (!r->live || r->inst != ii) {
            continue;
        }
        n++;
        send_done(c, r, LKV_WIRE_FINISH_ERROR, code, msg, NULL);
        c->n_finished++;
        req_free(c, r);
    }
    LKV_LOG_ERROR("instance %d: worker lost (%s); %d request(s) failed; "
                  "waiting for a worker to connect",
                  ii, why, n);
    if (lkv_inst_reset(c->insts[ii]) != LKV_OK) {
        LKV_LOG_ERROR("instance %d: cannot reset its scheduler", ii);
    }
}

static void send_worker(lkv_core_t *c, int ii, const lkv_wire_buf_t *buf)
{
    const lkv_zmq_peer_t *w = lkv_inst_worker(c->insts[ii]);
    lkv_status_t          st;

    if (w == NULL) {
        return;
    }
    st = c->cfg.send(c->cfg.send_ctx, LKV_CORE_TO_WORKER, w, buf->data,
                     buf->len);
    if (st != LKV_OK) {
        fail_instance(c, ii, LKV_ERR_PEER_LOST,
                      st == LKV_ERR_PEER_LOST ? "disconnected"
                                              : lkv_status_str(st));
    }
}

static void pump(lkv_core_t *c, int64_t now_ns)
{
    for (int i = 0; i < c->n_insts; i++) {
        bool         have = false;
        lkv_status_t st   = lkv_inst_next(c->insts[i], now_ns, &c->out, &have);
        drain_events(c, i, now_ns); /* next_plan may finish requests */
        if (st != LKV_OK) {
            continue;
        }
        if (have) {
            send_worker(c, i, &c->out);
        }
    }
}

static int inst_of_worker(lkv_core_t *c, const lkv_zmq_peer_t *peer)
{
    for (int i = 0; i < c->n_insts; i++) {
        if (lkv_inst_is_worker(c->insts[i], peer)) {
            return i;
        }
    }
    return -1;
}

void lkv_core_on_worker(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                        const void *data, size_t len, int64_t now_ns)
{
    lkv_wire_msg_t    msg;
    lkv_wire_limits_t lim = lkv_wire_limits_internal();
    lkv_status_t      st;
    int               ii;

    st = lkv_wire_decode(data, len, &lim, &msg);
    if (st != LKV_OK) {
        LKV_LOG_WARN("dropping a malformed message from a worker: %s (%s)",
                     lkv_status_str(st), msg.err);
        lkv_wire_msg_release(&msg);
        return;
    }
    ii = inst_of_worker(c, peer);
    if (msg.type == LKV_WIRE_HELLO) {
        if (ii >= 0) {
            fail_instance(c, ii, LKV_ERR_PEER_LOST, "worker restarted");
        }
        for (ii = 0; ii < c->n_insts; ii++) {
            if (!lkv_inst_up(c->insts[ii])) {
                break;
            }
        }
        if (ii == c->n_insts || c->draining) {
            lkv_wire_msg_t m;
            lkv_wire_msg_init(&m, LKV_WIRE_SHUTDOWN);
            m.u.shutdown.reason = c->draining
                                      ? "coordinator is shutting down"
                                      : "every instance already has a worker "
                                        "(raise --n-instances)";
            LKV_LOG_WARN("refusing worker pid %u: %s", msg.u.hello.pid,
                         m.u.shutdown.reason);
            if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
                c->cfg.send(c->cfg.send_ctx, LKV_CORE_TO_WORKER, peer,
                            c->out.data, c->out.len);
            }
        } else if (lkv_inst_attach(c->insts[ii], peer, &msg.u.hello,
                                   &c->out) == LKV_OK) {
            send_worker(c, ii, &c->out);
        } else {
            lkv_wire_msg_t m;
            lkv_wire_msg_init(&m, LKV_WIRE_SHUTDOWN);
            m.u.shutdown.reason = "the coordinator cannot take this worker "
                                  "(see the coordinator's log)";
            if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
                c->cfg.send(c->cfg.send_ctx, LKV_CORE_TO_WORKER, peer,
                            c->out.data, c->out.len);
            }
        }
    } else if (msg.type == LKV_WIRE_STEP_RESULT) {
        const lkv_step_result_t *res = &msg.u.step_result;
        if (ii < 0) {
            LKV_LOG_WARN("step_result from an unknown worker dropped");
        } else if (!lkv_inst_outstanding(c->insts[ii]) && res->step_id == 0 &&
                   res->status < 0) {
            char why[96];
            snprintf(why, sizeof(why), "its setup failed: %s",
                     lkv_status_str((lkv_status_t)res->status));
            fail_instance(c, ii, res->status, why);
        } else {
            st = lkv_inst_on_result(c->insts[ii], res, now_ns);
            if (st != LKV_OK) {
                fail_instance(c, ii, LKV_ERR_INTERNAL,
                              "its step result did not match the plan");
            } else {
                drain_events(c, ii, now_ns);
            }
        }
    } else {
        LKV_LOG_WARN("dropping an unexpected '%s' message from a worker",
                     lkv_wire_type_name(msg.type));
    }
    lkv_wire_msg_release(&msg);
    pump(c, now_ns);
}

/* ---- periodic work ------------------------------------------------------- */

static void update_metrics(lkv_core_t *c)
{
    lkv_sched_stats_t   tot;
    lkv_metrics_state_t s;
    int                 n_up, nl = c->cfg.sched.n_layers;

    sum_stats(c, &tot, &n_up);
    fill_layer_blocks(c);
    memset(&s, 0, sizeof(s));
    s.n_running = tot.n_running;
    s.n_waiting = tot.n_waiting;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        s.blocks_used[t]  = tot.blocks_used[t];
        s.blocks_total[t] = tot.blocks_total[t];
        s.layer_blocks[t] = c->layer_buf + t * nl;
    }
    s.offload_bytes    = tot.offloaded_bytes;
    s.reload_bytes     = tot.reloaded_bytes;
    s.stage_bytes      = tot.staged_bytes;
    s.preemptions      = tot.preemptions;
    s.swap_preemptions = tot.swap_preemptions;
    s.steps            = tot.steps;
    s.n_instances_up   = n_up;
    lkv_metrics_set_state(c->metrics, &s);
}

int lkv_core_tick(lkv_core_t *c, int64_t now_ns)
{
    bool busy = false;

    if (now_ns - c->last_scan_ns >= SCAN_INTERVAL_NS) {
        c->last_scan_ns = now_ns;
        for (int i = 0; i < c->n_slots; i++) {
            req_t *r = &c->slots[i];
            if (r->live && !r->cancel_sent && r->deadline_ns > 0 &&
                now_ns > r->deadline_ns) {
                r->cancel_pending = true;
                r->end_status     = LKV_ERR_TIMEOUT;
                snprintf(r->end_msg, sizeof(r->end_msg),
                         "the request ran longer than the server's limit of "
                         "%.0f s; ask for fewer tokens",
                         c->cfg.request_timeout_s);
            }
        }
        if (c->cfg.worker_timeout_s > 0) {
            for (int i = 0; i < c->n_insts; i++) {
                if (lkv_inst_outstanding_ns(c->insts[i], now_ns) >
                    (int64_t)(c->cfg.worker_timeout_s * 1e9)) {
                    fail_instance(c, i, LKV_ERR_PEER_LOST,
                                  "a step went unanswered past "
                                  "--worker-timeout-s");
                }
            }
        }
    }
    for (int i = 0; i < c->n_slots; i++) {
        req_t *r = &c->slots[i];
        if (r->live && r->cancel_pending) {
            r->cancel_pending = false;
            if (!r->cancel_sent) {
                r->cancel_sent = true;
                lkv_sched_cancel(lkv_inst_sched(c->insts[r->inst]),
                                 req_sched_id(c, r), now_ns);
            }
            drain_events(c, r->inst, now_ns);
        }
    }
    pump(c, now_ns);
    if (now_ns - c->last_metrics_ns >= 20 * 1000 * 1000) {
        c->last_metrics_ns = now_ns;
        update_metrics(c);
    }
    for (int i = 0; i < c->n_insts; i++) {
        if (lkv_inst_up(c->insts[i]) && !lkv_inst_outstanding(c->insts[i]) &&
            !lkv_sched_idle(lkv_inst_sched(c->insts[i]))) {
            busy = true;
        }
    }
    return busy ? 5 : 50;
}

void lkv_core_shutdown(lkv_core_t *c, const char *reason)
{
    c->draining = true;
    for (int i = 0; i < c->n_slots; i++) {
        req_t *r = &c->slots[i];
        if (!r->live) {
            continue;
        }
        send_done(c, r, LKV_WIRE_FINISH_ERROR, LKV_ERR_CANCELLED,
                  "server shutting down; retry on another server", NULL);
        req_free(c, r);
    }
    for (int i = 0; i < c->n_insts; i++) {
        if (lkv_inst_up(c->insts[i])) {
            lkv_wire_msg_t m;
            lkv_wire_msg_init(&m, LKV_WIRE_SHUTDOWN);
            m.u.shutdown.reason = reason;
            if (lkv_wire_encode(&m, &c->out) == LKV_OK) {
                c->cfg.send(c->cfg.send_ctx, LKV_CORE_TO_WORKER,
                            lkv_inst_worker(c->insts[i]), c->out.data,
                            c->out.len);
            }
        }
    }
}

void lkv_core_info(const lkv_core_t *c, lkv_core_info_t *out)
{
    memset(out, 0, sizeof(*out));
    out->n_live         = c->n_live;
    out->n_instances    = c->n_insts;
    out->n_submitted    = c->n_submitted;
    out->n_finished     = c->n_finished;
    out->n_errors_sent  = c->n_errors_sent;
    out->n_clients_lost = c->n_clients_lost;
    for (int i = 0; i < c->n_insts; i++) {
        lkv_sched_stats_t s;
        lkv_sched_stats(lkv_inst_sched(c->insts[i]), &s);
        out->n_instances_up += lkv_inst_up(c->insts[i]) ? 1 : 0;
        for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
            out->blocks_used[t] += s.blocks_used[t];
        }
    }
}

lkv_metrics_t *lkv_core_metrics(lkv_core_t *c)
{
    return c->metrics;
}

int lkv_core_n_layers(const lkv_core_t *c)
{
    return c->cfg.sched.n_layers;
}

int lkv_core_max_seq_len(const lkv_core_t *c)
{
    return c->max_seq_len;
}
