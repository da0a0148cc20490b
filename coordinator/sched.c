/* sched.c - scheduler lifecycle, requests, results, events and queries; the
 * plan builder is sched_plan.c, admission rules are policy_*.c. See
 * scheduler.h. Threading: one owner thread, no locks, no clock reads.
 */
#include "coordinator/sched_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "sched"
#include "common/log.h"

/* ---- small helpers ------------------------------------------------------- */

lkv_status_t sched_vec_grow(void **v, int *cap, int need, size_t elem)
{
    void *nv;
    int   ncap;

    if (need <= *cap) {
        return LKV_OK;
    }
    ncap = *cap > 0 ? *cap : 16;
    while (ncap < need) {
        ncap *= 2;
    }
    nv = realloc(*v, (size_t)ncap * elem);
    if (nv == NULL) {
        return LKV_ERR_NOMEM;
    }
    *v   = nv;
    *cap = ncap;
    return LKV_OK;
}

void sched_set_error(lkv_sched_t *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

lkv_status_t sched_emit(lkv_sched_t *s, const lkv_sched_event_t *ev)
{
    int f = s->ev_fill;

    LKV_CHECK(SCHED_VEC_RESERVE(s->ev[f], s->ev[f].n + 1));
    s->ev[f].v[s->ev[f].n++] = *ev;
    return LKV_OK;
}

static void vec_remove_at(req_vec_t *v, int i)
{
    memmove(&v->v[i], &v->v[i + 1], (size_t)(v->n - i - 1) * sizeof(*v->v));
    v->n--;
}

static int vec_find(const req_vec_t *v, const sched_req_t *r)
{
    for (int i = 0; i < v->n; i++) {
        if (v->v[i] == r) {
            return i;
        }
    }
    return -1;
}

void sched_req_free(sched_req_t *r)
{
    if (r != NULL) {
        free(r->toks);
        free(r);
    }
}

static sched_req_t *find_live(const lkv_sched_t *s, uint64_t id)
{
    for (int i = 0; i < s->running.n; i++) {
        if (s->running.v[i]->id == id) {
            return s->running.v[i];
        }
    }
    for (int i = 0; i < s->waiting.n; i++) {
        if (s->waiting.v[i]->id == id) {
            return s->waiting.v[i];
        }
    }
    return NULL;
}

const char *lkv_sched_finish_str(lkv_sched_finish_t reason)
{
    switch (reason) {
    case LKV_SCHED_FINISH_NONE:
        return "none";
    case LKV_SCHED_FINISH_STOP:
        return "stop";
    case LKV_SCHED_FINISH_LENGTH:
        return "length";
    case LKV_SCHED_FINISH_CANCELLED:
        return "cancelled";
    case LKV_SCHED_FINISH_ERROR:
        return "error";
    }
    return "unknown";
}

const char *lkv_sched_policy_name(lkv_sched_policy_t p)
{
    return p == LKV_SCHED_POLICY_BASELINE ? "baseline"
           : p == LKV_SCHED_POLICY_LAYERKV ? "layerkv"
                                           : "unknown";
}

lkv_status_t lkv_sched_policy_parse(const char *name, lkv_sched_policy_t *p)
{
    if (name != NULL && strcmp(name, "baseline") == 0) {
        *p = LKV_SCHED_POLICY_BASELINE;
        return LKV_OK;
    }
    if (name != NULL && strcmp(name, "layerkv") == 0) {
        *p = LKV_SCHED_POLICY_LAYERKV;
        return LKV_OK;
    }
    return LKV_ERR_INVALID;
}

/* ---- config, create, destroy ------------------------------------------- */

lkv_sched_config_t lkv_sched_config_default(void)
{
    lkv_slo_model_config_t m = lkv_slo_model_config_default();
    lkv_pred_config_t      p = lkv_pred_config_default();
    lkv_sched_config_t     c;

    memset(&c, 0, sizeof(c));
    c.policy                     = LKV_SCHED_POLICY_LAYERKV;
    c.n_layers                   = 32;
    c.block_size                 = 16;
    c.block_bytes                = 256 * 1024;
    c.n_blocks[LKV_KV_TIER_DEVICE] = 1024;
    c.n_blocks[LKV_KV_TIER_HOST] = 8192;
    c.n_blocks[LKV_KV_TIER_REMOTE] = 0;
    c.max_seqs                   = 256;
    c.max_queue                  = 4096;
    c.max_seq_len                = 4096;
    c.max_batch_tokens           = 8192;
    c.watermark                  = 0.01f;
    c.chunked_prefill            = false;
    c.chunk_tokens               = 512;
    c.ttft_slo_ns                = 0;
    c.tpot_slo_ns                = 0;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        c.d2h_bytes_per_s[t] = t == LKV_KV_TIER_DEVICE ? 0.0 : 16e9;
        c.h2d_bytes_per_s[t] = t == LKV_KV_TIER_DEVICE ? 0.0 : 16e9;
    }
    c.pf_c0_ns            = m.pf[0];
    c.pf_c1_ns            = m.pf[1];
    c.pf_c2_ns            = m.pf[2];
    c.alpha               = m.alpha;
    c.adapt               = true;
    c.dc_c0_ns            = m.dc[0];
    c.dc_c1_ns            = m.dc[1];
    c.dc_c2_ns            = m.dc[2];
    c.offload_rule        = LKV_SCHED_OFFLOAD_NEEDED;
    c.decode_mode         = LKV_SCHED_DECODE_AUTO;
    c.min_retained_layers = 1;
    c.ttft_guard          = 1.5f;
    c.max_parked          = 0.5f;
    c.reject_hopeless     = false;
    c.prefill_staging_window = LKV_SCHED_DEFAULT_STAGING_WINDOW;
    c.offload_contiguous  = false;
    c.pred_quantile       = p.quantile;
    c.pred_window         = p.window;
    c.pred_prior          = p.prior;
    c.n_stop              = 0;
    return c;
}

static lkv_status_t check_config(const lkv_sched_config_t *c, char *err,
                                 size_t n)
{
#define BAD(...)                                                               \
    do {                                                                       \
        snprintf(err, n, __VA_ARGS__);                                         \
        return LKV_ERR_INVALID;                                                \
    } while (0)
    if (c->policy != LKV_SCHED_POLICY_BASELINE &&
        c->policy != LKV_SCHED_POLICY_LAYERKV) {
        BAD("policy %d is not baseline or layerkv", (int)c->policy);
    }
    if (c->n_layers < 1 || c->n_layers > 4096) {
        BAD("n_layers %d must be in [1, 4096]", c->n_layers);
    }
    if (c->block_size < 1 || c->block_bytes < 1) {
        BAD("block_size and block_bytes must be >= 1");
    }
    if (c->n_blocks[LKV_KV_TIER_DEVICE] < 1 ||
        c->n_blocks[LKV_KV_TIER_HOST] < 0 ||
        c->n_blocks[LKV_KV_TIER_REMOTE] < 0) {
        BAD("device blocks must be >= 1 and host/remote blocks >= 0");
    }
    if (c->max_seqs < 1 || c->max_queue < 1) {
        BAD("max_seqs and max_queue must be >= 1");
    }
    if (c->max_seq_len < 2 || c->max_batch_tokens < 1) {
        BAD("max_seq_len must be >= 2 and max_batch_tokens >= 1");
    }
    if (!(c->watermark >= 0.0f) || c->watermark > 0.5f) {
        BAD("watermark %g must be in [0, 0.5]", (double)c->watermark);
    }
    if (c->chunked_prefill && c->chunk_tokens < 1) {
        BAD("chunk_tokens must be >= 1 with chunked prefill");
    }
    if (c->min_retained_layers < 1 || c->min_retained_layers > c->n_layers) {
        BAD("min_retained_layers %d must be in [1, n_layers]",
            c->min_retained_layers);
    }
    if (!(c->ttft_guard >= 0.0f) || !isfinite(c->ttft_guard)) {
        BAD("ttft_guard must be >= 0");
    }
    if (!(c->max_parked >= 0.0f) || !isfinite(c->max_parked)) {
        BAD("max_parked must be >= 0");
    }
    if (c->prefill_staging_window < 0 ||
        c->prefill_staging_window > LKV_SCHED_MAX_STAGING_WINDOW) {
        BAD("prefill_staging_window %d must be in [0, %d]",
            c->prefill_staging_window, LKV_SCHED_MAX_STAGING_WINDOW);
    }
    if (c->n_stop < 0 || c->n_stop > LKV_SCHED_MAX_STOP) {
        BAD("n_stop %d must be in [0, %d]", c->n_stop, LKV_SCHED_MAX_STOP);
    }
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        if (!(c->d2h_bytes_per_s[t] >= 0.0) || !(c->h2d_bytes_per_s[t] >= 0.0) ||
            !isfinite(c->d2h_bytes_per_s[t]) ||
            !isfinite(c->h2d_bytes_per_s[t])) {
            BAD("link bandwidths must be finite and >= 0");
        }
    }
    if ((int)c->offload_rule < 0 || c->offload_rule > LKV_SCHED_OFFLOAD_MAX ||
        (int)c->decode_mode < 0 || c->decode_mode > LKV_SCHED_DECODE_STREAM) {
        BAD("offload_rule or decode_mode out of range");
    }
#undef BAD
    return LKV_OK;
}

lkv_status_t lkv_sched_create(const lkv_sched_config_t *cfg, lkv_sched_t **s_p)
{
    lkv_kv_alloc_config_t  kc;
    lkv_slo_model_config_t mc = lkv_slo_model_config_default();
    lkv_pred_config_t      pc = lkv_pred_config_default();
    lkv_sched_t           *s;
    lkv_status_t           st;
    char                   err[256];

    if (cfg == NULL || s_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (check_config(cfg, err, sizeof(err)) != LKV_OK) {
        LKV_LOG_ERROR("invalid scheduler config: %s", err);
        return LKV_ERR_INVALID;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return LKV_ERR_NOMEM;
    }
    s->cfg = *cfg;
    s->ops = cfg->policy == LKV_SCHED_POLICY_BASELINE
                 ? &lkv_sched_policy_baseline
                 : &lkv_sched_policy_layerkv;
    s->watermark_blocks =
        (int32_t)(cfg->watermark * (float)cfg->n_blocks[LKV_KV_TIER_DEVICE]);

    kc            = lkv_kv_alloc_config_default();
    kc.n_layers   = cfg->n_layers;
    kc.block_size = cfg->block_size;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        kc.n_blocks[t] = cfg->n_blocks[t];
    }
    /* finished sequences linger until their copies end */
    kc.max_seqs             = 2 * cfg->max_seqs + 16;
    kc.max_blocks_per_layer = (cfg->max_seq_len + cfg->block_size - 1) /
                                  cfg->block_size + 1;
    LKV_CHECK_GOTO(lkv_kv_alloc_create(&kc, &s->kv), st, fail);

    mc.pf[0] = cfg->pf_c0_ns;
    mc.pf[1] = cfg->pf_c1_ns;
    mc.pf[2] = cfg->pf_c2_ns;
    mc.alpha = cfg->alpha;
    mc.dc[0] = cfg->dc_c0_ns;
    mc.dc[1] = cfg->dc_c1_ns;
    mc.dc[2] = cfg->dc_c2_ns;
    mc.adapt = cfg->adapt;
    LKV_CHECK_GOTO(lkv_slo_model_create(&mc, &s->slo), st, fail);

    pc.quantile = cfg->pred_quantile;
    pc.window   = cfg->pred_window;
    pc.prior    = cfg->pred_prior;
    LKV_CHECK_GOTO(lkv_pred_create(&pc, &s->pred), st, fail);

    s->tmp_cap    = kc.max_blocks_per_layer + 1;
    s->tmp_blocks = calloc((size_t)s->tmp_cap, sizeof(*s->tmp_blocks));
    if (s->tmp_blocks == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    s->next_seq_id  = 1;
    s->next_move_id = 1;
    s->st.alpha     = cfg->alpha;
    s->st.dc_ratio  = 1.0;
    s->st.last_t_allow_ns = INT64_MAX;
    *s_p            = s;
    return LKV_OK;

fail:
    lkv_sched_destroy(&s);
    return st;
}

static void free_vec_reqs(req_vec_t *v)
{
    for (int i = 0; i < v->n; i++) {
        sched_req_free(v->v[i]);
    }
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

void lkv_sched_destroy(lkv_sched_t **s_p)
{
    lkv_sched_t *s;

    if (s_p == NULL || *s_p == NULL) {
        return;
    }
    s = *s_p;
    free_vec_reqs(&s->waiting);
    free_vec_reqs(&s->running);
    free_vec_reqs(&s->zombies);
    free(s->moves.v);
    free(s->p_seqs.v);
    free(s->p_reqs.v);
    free(s->p_appends.v);
    free(s->p_append_off.v);
    free(s->p_moves.v);
    free(s->p_move_off.v);
    free(s->p_finished.v);
    free(s->p_blocks.v);
    free(s->p_stages.v);
    free(s->p_rings.v);
    free(s->p_new_moves.v);
    free(s->ev[0].v);
    free(s->ev[1].v);
    free(s->tmp_blocks);
    lkv_kv_alloc_destroy(&s->kv);
    lkv_slo_model_destroy(&s->slo);
    lkv_pred_destroy(&s->pred);
    free(s);
    *s_p = NULL;
}

/* ---- requests ------------------------------------------------------------ */

int32_t sched_blocks_for(const lkv_sched_t *s, int32_t n_tokens)
{
    return (n_tokens + s->cfg.block_size - 1) / s->cfg.block_size;
}

/* True when a prompt of n tokens can never be admitted under this policy
 * with these pools (so it must be refused now, not queued forever). */
static bool never_fits(const lkv_sched_t *s, int32_t n, char *why, size_t len)
{
    const lkv_sched_config_t *c   = &s->cfg;
    int64_t                   L   = c->n_layers;
    int64_t                   dev = (int64_t)c->n_blocks[LKV_KV_TIER_DEVICE] -
                  s->watermark_blocks;
    int64_t first = c->chunked_prefill && c->chunk_tokens < n ? c->chunk_tokens
                                                              : n;
    int64_t need;

    if (c->policy == LKV_SCHED_POLICY_BASELINE) {
        need = L * sched_blocks_for(s, n);
    } else {
        /* transient: every layer of the first chunk; then the retained
         * layers of the whole prompt stay */
        int64_t keep = (int64_t)c->min_retained_layers * sched_blocks_for(s, n);
        int     w    = sched_staging_window(s);
        need         = L * sched_blocks_for(s, (int32_t)first);
        if (w > 0 && w + c->min_retained_layers < L) {
            /* staging window: the retained layers + the ring */
            need = (int64_t)(c->min_retained_layers + w) *
                   sched_blocks_for(s, (int32_t)first);
        }
        if (keep > need) {
            need = keep;
        }
        if (need <= dev && L * sched_blocks_for(s, n) > dev) {
            int64_t off = (int64_t)c->n_blocks[LKV_KV_TIER_HOST] +
                          c->n_blocks[LKV_KV_TIER_REMOTE];
            if ((L - c->min_retained_layers) * sched_blocks_for(s, n) > off) {
                snprintf(why, len,
                         "prompt of %d tokens needs %lld off-device blocks, "
                         "host+remote tiers have %lld; raise --host-kv-blocks",
                         n, (long long)((L - c->min_retained_layers) *
                                        sched_blocks_for(s, n)),
                         (long long)off);
                return true;
            }
        }
    }
    if (need > dev) {
        snprintf(why, len,
                 "prompt of %d tokens needs %lld device kv blocks under policy "
                 "%s, the pool has %lld usable; raise --device-kv-blocks%s",
                 n, (long long)need, lkv_sched_policy_name(c->policy),
                 (long long)dev,
                 c->chunked_prefill ? "" : " or enable chunked prefill");
        return true;
    }
    return false;
}

lkv_status_t lkv_sched_submit(lkv_sched_t *s, const lkv_sched_request_t *req,
                              int64_t now_ns, int64_t *retry_after_ns_p)
{
    sched_req_t *r;
    int32_t      max_tokens;
    char         why[200];

    if (s == NULL || req == NULL) {
        return LKV_ERR_INVALID;
    }
    s->err[0] = '\0';
    if (req->n_prompt < 1 || req->prompt == NULL) {
        sched_set_error(s, "request %llu has an empty prompt",
                        (unsigned long long)req->id);
        return LKV_ERR_INVALID;
    }
    if (req->max_tokens < 1) {
        sched_set_error(s, "request %llu: max_tokens %d must be >= 1",
                        (unsigned long long)req->id, req->max_tokens);
        return LKV_ERR_INVALID;
    }
    if (req->n_stop < 0 || req->n_stop > LKV_SCHED_MAX_STOP) {
        sched_set_error(s, "request %llu: %d stop ids, at most %d",
                        (unsigned long long)req->id, req->n_stop,
                        LKV_SCHED_MAX_STOP);
        return LKV_ERR_INVALID;
    }
    if (find_live(s, req->id) != NULL) {
        sched_set_error(s, "request id %llu is already live; use a fresh id",
                        (unsigned long long)req->id);
        return LKV_ERR_INVALID;
    }
    if (req->n_prompt + 1 > s->cfg.max_seq_len) {
        sched_set_error(s,
                        "prompt of %d tokens leaves no room to generate in a "
                        "context of %d; shorten the prompt",
                        req->n_prompt, s->cfg.max_seq_len);
        return LKV_ERR_TOOLONG;
    }
    if (never_fits(s, req->n_prompt, why, sizeof(why))) {
        sched_set_error(s, "%s", why);
        return LKV_ERR_TOOLONG;
    }
    if (s->waiting.n >= s->cfg.max_queue) {
        sched_set_error(s, "queue full (%d waiting); retry later",
                        s->waiting.n);
        return LKV_ERR_BUSY;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return LKV_ERR_NOMEM;
    }
    r->ttft_slo_ns = req->ttft_slo_ns != 0 ? req->ttft_slo_ns
                                           : s->cfg.ttft_slo_ns;
    r->tpot_slo_ns = req->tpot_slo_ns != 0 ? req->tpot_slo_ns
                                           : s->cfg.tpot_slo_ns;
    if (r->ttft_slo_ns <= 0) {
        r->ttft_slo_ns = -1;
    }
    if (r->tpot_slo_ns <= 0) {
        r->tpot_slo_ns = -1;
    }
    if (s->cfg.reject_hopeless && r->ttft_slo_ns > 0) {
        /* predicted TTFT: time already waited + prefill of everything queued
         * ahead (prefills run one step after another) + own prefill + the
         * decode work of the running batch in that step */
        double ahead = 0.0, pred;
        double ctx   = 0.0;

        for (int i = 0; i < s->waiting.n; i++) {
            double p = s->waiting.v[i]->n_total;
            ahead += lkv_slo_prefill_ns(s->slo, p, p * p);
        }
        for (int i = 0; i < s->running.n; i++) {
            ctx += s->running.v[i]->n_total;
        }
        pred = (double)(now_ns - req->arrival_ns) + ahead +
               lkv_slo_prefill_ns(s->slo, req->n_prompt,
                                  (double)req->n_prompt * req->n_prompt) +
               lkv_slo_decode_ns(s->slo, s->running.n, ctx);
        if (pred > (double)r->ttft_slo_ns) {
            if (retry_after_ns_p != NULL) {
                *retry_after_ns_p = (int64_t)(pred - (double)r->ttft_slo_ns);
            }
            sched_set_error(s,
                            "predicted ttft %.1f ms exceeds the slo of %.1f ms "
                            "(%d requests queued); retry in %.1f ms or relax "
                            "the ttft slo",
                            pred / 1e6, (double)r->ttft_slo_ns / 1e6,
                            s->waiting.n,
                            (pred - (double)r->ttft_slo_ns) / 1e6);
            free(r);
            s->st.rejections++;
            return LKV_ERR_REJECTED;
        }
    }
    max_tokens = req->max_tokens;
    if (max_tokens > s->cfg.max_seq_len - req->n_prompt) {
        max_tokens = s->cfg.max_seq_len - req->n_prompt;
    }
    r->cap  = req->n_prompt + max_tokens;
    r->toks = malloc((size_t)r->cap * sizeof(*r->toks));
    /* room for every live request to be queued again (preemption) */
    if (r->toks == NULL ||
        SCHED_VEC_RESERVE(s->waiting, s->waiting.n + s->running.n + 1)) {
        sched_req_free(r);
        return LKV_ERR_NOMEM;
    }
    memcpy(r->toks, req->prompt, (size_t)req->n_prompt * sizeof(*r->toks));
    r->id          = req->id;
    r->state       = RQ_WAITING;
    r->n_prompt    = req->n_prompt;
    r->n_total     = req->n_prompt;
    r->max_tokens  = max_tokens;
    r->sampling    = req->sampling;
    r->n_stop      = req->n_stop;
    memcpy(r->stop_ids, req->stop_ids, sizeof(r->stop_ids));
    r->ignore_stop   = req->ignore_stop;
    r->t.arrival_ns  = req->arrival_ns;
    r->t.n_prompt    = req->n_prompt;
    r->t.ttft_slo_ns = r->ttft_slo_ns;
    r->t.tpot_slo_ns = r->tpot_slo_ns;
    s->waiting.v[s->waiting.n++] = r;
    s->st.submitted++;
    return LKV_OK;
}

void sched_finish(lkv_sched_t *s, sched_req_t *r, lkv_sched_finish_t reason,
                  lkv_status_t status, int64_t now_ns)
{
    lkv_sched_event_t ev;
    int               i;

    r->t.finish_ns = now_ns;
    if (r->t.first_token_ns != 0 && r->ttft_slo_ns > 0 &&
        r->t.first_token_ns - r->t.arrival_ns > r->ttft_slo_ns) {
        r->t.ttft_violated = true;
    }
    if (r->t.n_generated >= 2 && r->tpot_slo_ns > 0 &&
        (r->t.last_token_ns - r->t.first_token_ns) / (r->t.n_generated - 1) >
            r->tpot_slo_ns) {
        r->t.tpot_violated = true;
    }
    if (reason == LKV_SCHED_FINISH_STOP || reason == LKV_SCHED_FINISH_LENGTH) {
        s->st.ttft_violations += r->t.ttft_violated;
        s->st.tpot_violations += r->t.tpot_violated;
        lkv_pred_observe(s->pred, r->n_prompt, r->t.n_generated);
    } else if (reason == LKV_SCHED_FINISH_CANCELLED) {
        s->st.cancellations++;
    } else {
        s->st.errors++;
    }
    s->st.finished++;

    memset(&ev, 0, sizeof(ev));
    ev.kind    = LKV_SCHED_EV_FINISHED;
    ev.id      = r->id;
    ev.token   = -1;
    ev.time_ns = now_ns;
    ev.reason  = reason;
    ev.status  = status;
    ev.timing  = r->t;
    if (sched_emit(s, &ev) != LKV_OK) {
        LKV_LOG_ERROR("out of memory queueing the finish event of request "
                      "%llu; the event is lost",
                      (unsigned long long)r->id);
    }

    if (r->state == RQ_WAITING) {
        i = vec_find(&s->waiting, r);
        if (i >= 0) {
            vec_remove_at(&s->waiting, i);
        }
        sched_req_free(r); /* queued requests hold no kv */
        return;
    }
    if (r->state == RQ_RUNNING) {
        i = vec_find(&s->running, r);
        if (i >= 0) {
            vec_remove_at(&s->running, i);
        }
        r->state = RQ_ZOMBIE;
        /* capacity: zombies <= running ever admitted; growth failure would
         * leak the request, so fall back to freeing kv at once */
        if (SCHED_VEC_RESERVE(s->zombies, s->zombies.n + 1) != LKV_OK) {
            LKV_LOG_ERROR("out of memory tracking finished request %llu",
                          (unsigned long long)r->id);
            if (r->seq_id != 0) {
                lkv_kv_seq_free(s->kv, r->seq_id);
            }
            sched_req_free(r);
            return;
        }
        s->zombies.v[s->zombies.n++] = r;
    }
}

lkv_status_t lkv_sched_cancel(lkv_sched_t *s, uint64_t id, int64_t now_ns)
{
    sched_req_t *r;

    if (s == NULL) {
        return LKV_ERR_INVALID;
    }
    r = find_live(s, id);
    if (r == NULL) {
        return LKV_ERR_NOTFOUND;
    }
    sched_finish(s, r, LKV_SCHED_FINISH_CANCELLED, LKV_ERR_CANCELLED, now_ns);
    return LKV_OK;
}

/* ---- steps --------------------------------------------------------------- */

lkv_status_t lkv_sched_next_plan(lkv_sched_t *s, int64_t now_ns,
                                 const lkv_step_plan_t **plan_p)
{
    lkv_status_t st;

    if (s == NULL || plan_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (s->plan_outstanding) {
        sched_set_error(s, "step %llu is still outstanding; pass its result to "
                           "lkv_sched_on_result first",
                        (unsigned long long)s->step_id);
        return LKV_ERR_BUSY;
    }
    st = sched_build_plan(s, now_ns);
    if (st != LKV_OK) {
        return st;
    }
    *plan_p = &s->plan;
    return LKV_OK;
}

static int find_move(const lkv_sched_t *s, uint64_t move_id)
{
    for (int i = 0; i < s->moves.n; i++) {
        if (s->moves.v[i].move_id == move_id) {
            return i;
        }
    }
    return -1;
}

static bool is_stage(const lkv_sched_t *s, uint64_t move_id)
{
    for (int i = 0; i < s->p_stages.n; i++) {
        if (s->p_stages.v[i].move_id == move_id) {
            return true;
        }
    }
    return false;
}

static void end_move(lkv_sched_t *s, int idx, bool ok)
{
    sched_move_t m = s->moves.v[idx];
    lkv_status_t st;

    st = ok ? lkv_kv_move_end(s->kv, m.seq_id, m.layer)
            : lkv_kv_move_abort(s->kv, m.seq_id, m.layer);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("kv %s of seq %llu layer %d failed: %s",
                      ok ? "move_end" : "move_abort",
                      (unsigned long long)m.seq_id, m.layer,
                      lkv_status_str(st));
    }
    if (ok && m.kind == LKV_PLAN_MOVE_OFFLOAD) {
        s->st.offloaded_bytes += m.bytes;
    } else if (ok && m.kind == LKV_PLAN_MOVE_RELOAD) {
        s->st.reloaded_bytes += m.bytes;
    }
    m.req->n_moves--;
    s->moves.v[idx] = s->moves.v[--s->moves.n];
}

static bool is_stop(const lkv_sched_t *s, const sched_req_t *r, int32_t tok)
{
    for (int i = 0; i < r->n_stop; i++) {
        if (r->stop_ids[i] == tok) {
            return true;
        }
    }
    if (!r->ignore_stop) {
        for (int i = 0; i < s->cfg.n_stop; i++) {
            if (s->cfg.stop_ids[i] == tok) {
                return true;
            }
        }
    }
    return false;
}

/* ---- remote tier failure ------------------------------------------------ */

static bool result_failed(const lkv_step_result_t *res, uint64_t move_id)
{
    for (int i = 0; i < res->n_moves_failed; i++) {
        if (res->moves_failed[i] == move_id) {
            return true;
        }
    }
    return false;
}

/* Destination tier of a move of the outstanding plan (-1: not in it).
 * Offloads are reported in the step that carries them. */
static int plan_move_dst(const lkv_sched_t *s, uint64_t move_id)
{
    for (int i = 0; i < s->p_moves.n; i++) {
        if (s->p_moves.v[i].move_id == move_id) {
            return s->p_moves.v[i].dst_tier;
        }
    }
    return -1;
}

/* A copy to or from the REMOTE tier failed: its kvnode died or is
 * unreachable, so KV that lives there is lost (a transient failure is
 * treated the same: recompute is always correct). Use the tier no more
 * (new placements need d2h_bytes_per_s > 0: sched_plan.c offload_tier, the
 * policies' Eq. 4), or swap preemption would retry failing offloads
 * forever; requests with layers there recompute (recompute_lost). */
static void remote_mark_down(lkv_sched_t *s, uint64_t move_id)
{
    if (s->remote_down) {
        return;
    }
    s->remote_down                             = true;
    s->cfg.d2h_bytes_per_s[LKV_KV_TIER_REMOTE] = 0.0;
    LKV_LOG_ERROR("remote kv tier marked down (move %llu failed): "
                  "no more layers go there; requests whose kv lived there "
                  "recompute it. Restart the worker once its kvnodes are "
                  "back to use them again",
                  (unsigned long long)move_id);
}

/* r lives partly in a remote tier that is down. */
static bool lost_remote(const lkv_sched_t *s, const sched_req_t *r)
{
    return s->remote_down && r->seq_id != 0 &&
           sched_layers_in(s, r, LKV_KV_RES_REMOTE) > 0;
}

/* Queue r again with its prompt and the tokens generated so far (recompute,
 * like preemption: the caller sees the stream continue). r has no copy in
 * flight and is not in a plan; its old sequence becomes a zombie that the
 * next plan frees and lists as finished for the worker. Errors:
 * LKV_ERR_NOMEM (r untouched). */
static lkv_status_t requeue_recompute(lkv_sched_t *s, sched_req_t *r)
{
    sched_req_t *n    = malloc(sizeof(*n));
    int32_t     *toks = malloc((size_t)r->cap * sizeof(*toks));
    int          i    = vec_find(&s->running, r);

    if (n == NULL || toks == NULL || i < 0 ||
        SCHED_VEC_RESERVE(s->zombies, s->zombies.n + 1) != LKV_OK) {
        free(n);
        free(toks);
        return i < 0 ? LKV_ERR_INTERNAL : LKV_ERR_NOMEM;
    }
    *n = *r;
    memcpy(toks, r->toks, (size_t)r->n_total * sizeof(*toks));
    n->toks       = toks;
    n->seq_id     = 0;
    n->state      = RQ_WAITING;
    n->n_cached   = 0;
    n->n_moves    = 0;
    n->n_off      = 0;
    n->path       = PATH_NONE;
    n->in_plan    = false;
    n->prefilling = false;
    n->t.n_preemptions++;
    s->st.preemptions++;
    LKV_LOG_WARN("request %llu lost kv in the remote tier; recomputing its "
                 "%d tokens",
                 (unsigned long long)r->id, r->n_total);

    vec_remove_at(&s->running, i);
    r->state                     = RQ_ZOMBIE;
    s->zombies.v[s->zombies.n++] = r;
    /* capacity was reserved at submit (waiting.cap >= live requests) */
    memmove(&s->waiting.v[1], &s->waiting.v[0],
            (size_t)s->waiting.n * sizeof(*s->waiting.v));
    s->waiting.v[0] = n;
    s->waiting.n++;
    return LKV_OK;
}

/* After a result: requeue every request that lost kv in a dead remote tier
 * once nothing of it is in flight (its other moves fail or finish within the
 * worker's transfer timeout). Oldest ends first in the queue. */
static void recompute_lost(lkv_sched_t *s, int64_t now_ns)
{
    if (!s->remote_down) {
        return;
    }
    for (int i = s->running.n - 1; i >= 0; i--) {
        sched_req_t *r = s->running.v[i];

        if (r->in_plan || r->n_moves > 0 || !lost_remote(s, r)) {
            continue;
        }
        if (requeue_recompute(s, r) != LKV_OK) {
            LKV_LOG_ERROR("request %llu lost kv in the remote tier and "
                          "cannot be queued again (out of memory); it fails",
                          (unsigned long long)r->id);
            sched_finish(s, r, LKV_SCHED_FINISH_ERROR, LKV_ERR_PEER_LOST,
                         now_ns);
        }
    }
}

/* One sequence's outcome. */
static void seq_result(lkv_sched_t *s, sched_req_t *r, const lkv_plan_seq_t *ps,
                       const lkv_result_seq_t *rs, int64_t now_ns)
{
    lkv_sched_event_t ev;

    r->in_plan = false;
    if (r->state != RQ_RUNNING) {
        return; /* cancelled while the step ran: drop its token */
    }
    if (rs != NULL && rs->status < 0 && lost_remote(s, r)) {
        return; /* a stage out of the dead remote tier: recompute_lost */
    }
    if (rs == NULL || rs->status < 0) {
        lkv_status_t err = rs == NULL ? LKV_ERR_PROTOCOL
                                      : (lkv_status_t)rs->status;
        LKV_LOG_WARN("request %llu failed in step %llu: %s",
                     (unsigned long long)r->id,
                     (unsigned long long)s->step_id,
                     rs == NULL ? "no result for its sequence"
                                : lkv_status_str(err));
        sched_finish(s, r, LKV_SCHED_FINISH_ERROR, err, now_ns);
        return;
    }
    if (!ps->sample) {
        return; /* a prefill chunk before the last */
    }
    if (rs->token < 0 || r->n_total >= r->cap) {
        sched_finish(s, r, LKV_SCHED_FINISH_ERROR, LKV_ERR_PROTOCOL, now_ns);
        return;
    }
    r->toks[r->n_total++] = rs->token;
    r->t.n_generated++;
    memset(&ev, 0, sizeof(ev));
    ev.kind    = LKV_SCHED_EV_TOKEN;
    ev.id      = r->id;
    ev.token   = rs->token;
    ev.first   = r->t.first_token_ns == 0;
    ev.time_ns = now_ns;
    if (ev.first) {
        r->t.first_token_ns = now_ns;
    }
    r->t.last_token_ns = now_ns;
    if (sched_emit(s, &ev) != LKV_OK) {
        sched_finish(s, r, LKV_SCHED_FINISH_ERROR, LKV_ERR_NOMEM, now_ns);
        return;
    }
    if (is_stop(s, r, rs->token)) {
        sched_finish(s, r, LKV_SCHED_FINISH_STOP, LKV_OK, now_ns);
    } else if (r->t.n_generated >= r->max_tokens || r->n_total >= r->cap ||
               r->n_total >= s->cfg.max_seq_len) {
        sched_finish(s, r, LKV_SCHED_FINISH_LENGTH, LKV_OK, now_ns);
    }
}

lkv_status_t lkv_sched_on_result(lkv_sched_t *s, const lkv_step_result_t *res,
                                 int64_t now_ns)
{
    const sched_step_t *fs;

    if (s == NULL || res == NULL) {
        return LKV_ERR_INVALID;
    }
    if (!s->plan_outstanding) {
        sched_set_error(s, "no step is outstanding (result for step %llu)",
                        (unsigned long long)res->step_id);
        return LKV_ERR_INVALID;
    }
    if (res->step_id != s->step_id) {
        sched_set_error(s, "result for step %llu, but step %llu is outstanding",
                        (unsigned long long)res->step_id,
                        (unsigned long long)s->step_id);
        return LKV_ERR_INVALID;
    }
    if (res->n_seqs < 0 || res->n_moves_done < 0 || res->n_moves_failed < 0 ||
        (res->n_seqs > 0 && res->seqs == NULL) ||
        (res->n_moves_done > 0 && res->moves_done == NULL) ||
        (res->n_moves_failed > 0 && res->moves_failed == NULL)) {
        sched_set_error(s, "malformed step result (negative count or missing "
                           "array)");
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < res->n_moves_done + res->n_moves_failed; i++) {
        uint64_t id = i < res->n_moves_done
                          ? res->moves_done[i]
                          : res->moves_failed[i - res->n_moves_done];
        if (find_move(s, id) < 0 && !is_stage(s, id)) {
            sched_set_error(s, "step result names unknown move %llu",
                            (unsigned long long)id);
            return LKV_ERR_INVALID;
        }
    }
    s->plan_outstanding = false;

    /* moves: completed ones free their sources; a failed step aborts the
     * moves it issued (their copies never ran) */
    for (int i = 0; i < res->n_moves_done; i++) {
        int k = find_move(s, res->moves_done[i]);
        if (k >= 0) {
            end_move(s, k, true);
        }
    }
    for (int i = 0; i < res->n_moves_failed; i++) {
        int k = find_move(s, res->moves_failed[i]);
        if (k >= 0) {
            const sched_move_t *m = &s->moves.v[k];
            lkv_kv_tier_t       src;
            const lkv_kv_block_t *b;
            int                 nb;

            LKV_LOG_WARN("move %llu (seq %llu layer %d) failed; kv stays in "
                         "its source tier",
                         (unsigned long long)m->move_id,
                         (unsigned long long)m->seq_id, m->layer);
            if ((lkv_kv_layer_blocks(s->kv, m->seq_id, m->layer, &src, &b,
                                     &nb) == LKV_OK &&
                 src == LKV_KV_TIER_REMOTE) ||
                plan_move_dst(s, m->move_id) == LKV_KV_TIER_REMOTE) {
                remote_mark_down(s, m->move_id);
            }
            end_move(s, k, false);
        }
    }
    if (res->status < 0) {
        for (int i = 0; i < s->p_new_moves.n; i++) {
            int k = find_move(s, s->p_new_moves.v[i].move_id);
            if (k >= 0) {
                end_move(s, k, false);
            }
        }
    }
    for (int i = 0; i < s->p_stages.n; i++) {
        sched_move_t *m  = &s->p_stages.v[i];
        lkv_status_t  st = lkv_kv_stage_end(s->kv, m->seq_id, m->layer);

        if (st != LKV_OK) {
            LKV_LOG_ERROR("kv stage_end of seq %llu layer %d failed: %s",
                          (unsigned long long)m->seq_id, m->layer,
                          lkv_status_str(st));
        }
        if (res->status >= 0) {
            s->st.staged_bytes += m->bytes;
        }
        if (result_failed(res, m->move_id) &&
            lkv_kv_layer_residency(s->kv, m->seq_id, m->layer) ==
                LKV_KV_RES_REMOTE) {
            remote_mark_down(s, m->move_id);
        }
    }
    s->p_stages.n = 0;
    /* the step's staging rings are empty now */
    for (int i = 0; i < s->p_rings.n; i++) {
        lkv_status_t st = lkv_kv_ring_destroy(s->kv, s->p_rings.v[i]);

        if (st != LKV_OK) {
            LKV_LOG_ERROR("kv ring_destroy of staging ring %d failed: %s",
                          s->p_rings.v[i], lkv_status_str(st));
        }
    }
    s->p_rings.n = 0;

    /* sequences */
    for (int i = 0; i < s->p_seqs.n; i++) {
        const lkv_plan_seq_t   *ps = &s->p_seqs.v[i];
        const lkv_result_seq_t *rs = NULL;
        sched_req_t            *r  = s->p_reqs.v[i];

        if (res->status < 0) {
            r->in_plan = false;
            if (r->state == RQ_RUNNING) {
                sched_finish(s, r, LKV_SCHED_FINISH_ERROR,
                             (lkv_status_t)res->status, now_ns);
            }
            continue;
        }
        if (i < res->n_seqs && res->seqs[i].seq_id == ps->seq_id) {
            rs = &res->seqs[i];
        } else {
            for (int k = 0; k < res->n_seqs; k++) {
                if (res->seqs[k].seq_id == ps->seq_id) {
                    rs = &res->seqs[k];
                    break;
                }
            }
        }
        seq_result(s, r, ps, rs, now_ns);
    }
    recompute_lost(s, now_ns);
    if (res->status < 0) {
        LKV_LOG_WARN("step %llu failed (%s); its %d requests finish with an "
                     "error",
                     (unsigned long long)res->step_id,
                     lkv_status_str((lkv_status_t)res->status), s->p_seqs.n);
    }

    /* time models */
    fs = &s->step;
    if (res->status >= 0 && res->step_ns > 0) {
        if (fs->n_prefill > 0) {
            double pf = (double)res->step_ns -
                        lkv_slo_decode_ns(s->slo, fs->n_decode, fs->dc_ctx);
            if (pf > 0.0) {
                lkv_slo_observe_prefill(s->slo, fs->pf_x1, fs->pf_x2, pf);
            }
        } else if (fs->n_decode > 0) {
            lkv_slo_observe_decode(s->slo, fs->n_decode, fs->dc_ctx,
                                   (double)res->step_ns);
        }
    }
    s->st.alpha    = lkv_slo_alpha(s->slo);
    s->st.dc_ratio = lkv_slo_decode_ratio(s->slo);
    lkv_slo_prefill_coef(s->slo, s->st.pf_coef);
    return LKV_OK;
}

/* ---- events and queries -------------------------------------------------- */

void lkv_sched_take_events(lkv_sched_t *s, const lkv_sched_event_t **ev_p,
                           int *n_p)
{
    int f = s->ev_fill;

    *ev_p        = s->ev[f].v;
    *n_p         = s->ev[f].n;
    s->ev_fill   = f ^ 1;
    s->ev[f ^ 1].n = 0;
}

int sched_layers_in(const lkv_sched_t *s, const sched_req_t *r,
                    lkv_kv_res_t res)
{
    int n = 0;

    if (r->seq_id == 0) {
        return 0;
    }
    for (int l = 0; l < s->cfg.n_layers; l++) {
        n += lkv_kv_layer_residency(s->kv, r->seq_id, l) == res;
    }
    return n;
}

void lkv_sched_stats(const lkv_sched_t *s, lkv_sched_stats_t *out)
{
    *out             = s->st;
    out->n_waiting   = s->waiting.n;
    out->n_running   = s->running.n;
    out->n_prefilling = 0;
    out->n_partial   = 0;
    for (int i = 0; i < s->running.n; i++) {
        const sched_req_t *r = s->running.v[i];

        if (r->prefilling || r->n_cached < r->n_total - 1) {
            out->n_prefilling++;
        } else if (sched_layers_in(s, r, LKV_KV_RES_HOST) +
                       sched_layers_in(s, r, LKV_KV_RES_REMOTE) +
                       sched_layers_in(s, r, LKV_KV_RES_MOVING) >
                   0) {
            out->n_partial++;
        }
    }
    out->n_moves_inflight = s->moves.n;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        out->blocks_used[t]  = lkv_kv_used_blocks(s->kv, (lkv_kv_tier_t)t);
        out->blocks_total[t] = lkv_kv_total_blocks(s->kv, (lkv_kv_tier_t)t);
    }
    if (s->remote_down) {
        /* nothing is placed there any more: its capacity is gone (what
         * the allocator still counts as used is released by recompute) */
        out->blocks_total[LKV_KV_TIER_REMOTE] =
            out->blocks_used[LKV_KV_TIER_REMOTE];
    }
}

int32_t lkv_sched_layer_blocks(const lkv_sched_t *s, lkv_kv_tier_t tier,
                               int layer)
{
    if (layer < 0 || layer >= s->cfg.n_layers || (int)tier < 0 ||
        tier >= LKV_KV_TIER_COUNT) {
        return 0;
    }
    return lkv_kv_layer_used_blocks(s->kv, tier, layer);
}

lkv_status_t lkv_sched_request_timing(const lkv_sched_t *s, uint64_t id,
                                      lkv_sched_timing_t *out)
{
    const sched_req_t *r = find_live(s, id);

    if (r == NULL) {
        return LKV_ERR_NOTFOUND;
    }
    *out = r->t;
    return LKV_OK;
}

bool lkv_sched_idle(const lkv_sched_t *s)
{
    return s->waiting.n == 0 && s->running.n == 0 && s->zombies.n == 0 &&
           s->moves.n == 0 && !s->plan_outstanding;
}

const lkv_kv_alloc_t *lkv_sched_kv(const lkv_sched_t *s)
{
    return s->kv;
}

const char *lkv_sched_last_error(const lkv_sched_t *s)
{
    return s == NULL ? "" : s->err;
}
