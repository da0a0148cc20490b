/* engine.c - offline engine: local scheduler over kv_alloc + step executor;
 * see engine.h. Single-threaded. */
#define LKV_LOG_MODULE "engine"

#include "worker/engine.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kvstore/kv_alloc.h"

typedef struct {
    const lkv_engine_request_t *r;
    uint64_t                    seq_id;
    bool                        registered; /* kv_seq_add done */
    bool                        done;
    int                         n_prefilled;
    int                         n_gen;
    int32_t                     last;
    int                         max_gen;
    bool                       *off;          /* (n_layers) chosen by policy */
    bool                       *host;         /* (n_layers) layer lives on host */
    int                         n_host;
    int                         n_moving;     /* moves in flight */
    bool                        reloading;
    int32_t                    *toks;   /* prompt + generated ids */
    int                         n_ctx0; /* tokens to prefill (n_prompt, or
                                           prompt + generated after a
                                           recompute) */
    int                         n_recompute;
    lkv_kv_tier_t               otier; /* tier of its offloaded layers */
} req_t;

/* Move ids carry their record's index in the low 24 bits. */
#define MREC_BITS 24

typedef struct {
    bool     used;
    uint64_t move_id;
    uint64_t seq_id; /* the request's incarnation the move belongs to */
    int      req;
    int      layer;
    uint8_t  kind;
} mrec_t;

struct lkv_engine {
    const lkv_model_t  *m;
    lkv_engine_config_t cfg;
    bool                remote_down; /* a remote transfer failed: stop
                                        offloading to the remote tier */
    int                 max_ctx;
    int                 max_blocks;
    lkv_kv_alloc_t     *alloc;
    lkv_step_exec_t    *x;
    lkv_engine_stats_t  stats;
    uint64_t            next_seq_id;
    uint64_t            next_move_id;
    uint64_t            next_step_id;

    /* plan arena */
    lkv_plan_seq_t    *pseqs;
    int               *preq;    /* plan seq -> request index */
    lkv_plan_append_t *pappends;
    int32_t           *pblocks; /* append block arena */
    int                n_pblocks_cap;
    lkv_plan_move_t   *pmoves;
    int                n_moves_cap;
    uint64_t          *pfinished;
    int                n_finished_cap;
    mrec_t            *mrecs;
    int               *mfree; /* free record indices */
    int                n_mfree;
};

lkv_engine_config_t lkv_engine_config_default(void)
{
    lkv_engine_config_t c;

    memset(&c, 0, sizeof(c));
    c.block_size       = 16;
    c.n_device_blocks  = 1024;
    c.n_host_blocks    = 1024;
    c.max_seqs         = 16;
    c.max_batch_tokens = 256;
    c.max_ctx          = 0;
    c.offload          = LKV_OFFLOAD_NONE;
    c.decode_mode      = LKV_DECODE_RELOAD;
    c.kv_dtype         = LKV_DTYPE_F32;
    c.remote           = NULL;
    c.n_remote_blocks  = 0;
    return c;
}

lkv_status_t lkv_engine_parse_offload(const char *text,
                                      lkv_offload_policy_t *policy_p,
                                      uint64_t *seed_p)
{
    if (text == NULL) {
        return LKV_ERR_INVALID;
    }
    *seed_p = 0;
    if (strcmp(text, "none") == 0) {
        *policy_p = LKV_OFFLOAD_NONE;
    } else if (strcmp(text, "interleave") == 0) {
        *policy_p = LKV_OFFLOAD_INTERLEAVE;
    } else if (strcmp(text, "all-but-one") == 0) {
        *policy_p = LKV_OFFLOAD_ALL_BUT_ONE;
    } else if (strncmp(text, "random:", 7) == 0 && text[7] != '\0') {
        char              *end;
        unsigned long long v = strtoull(text + 7, &end, 10);
        if (*end != '\0' || text[7] == '-') {
            return LKV_ERR_INVALID;
        }
        *policy_p = LKV_OFFLOAD_RANDOM;
        *seed_p   = v;
    } else {
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z          = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

bool lkv_engine_layer_offloaded(lkv_offload_policy_t policy, uint64_t seed,
                                int n_layers, int seq_index, int layer)
{
    switch (policy) {
    case LKV_OFFLOAD_NONE:
        return false;
    case LKV_OFFLOAD_INTERLEAVE:
        return (layer & 1) == 1;
    case LKV_OFFLOAD_ALL_BUT_ONE:
        return layer != 0;
    case LKV_OFFLOAD_RANDOM: {
        uint64_t s = seed * 0x100000001b3ULL + (uint64_t)seq_index * 7919u +
                     (uint64_t)layer * 104729u;
        (void)n_layers;
        return (splitmix64(&s) >> 63) != 0;
    }
    }
    return false;
}

lkv_status_t lkv_engine_create(const lkv_model_t *m,
                               const lkv_engine_config_t *cfg,
                               lkv_engine_t **e_p)
{
    lkv_engine_t *e;
    lkv_status_t  st;
    int           nl = m->cfg.n_layers;

    if (cfg->block_size <= 0 || cfg->n_device_blocks <= 0 ||
        cfg->n_host_blocks < 0 || cfg->max_seqs <= 0 ||
        cfg->n_remote_blocks < 0 ||
        (cfg->n_remote_blocks > 0 && cfg->remote == NULL) ||
        cfg->max_batch_tokens <= 0 || cfg->max_ctx < 0) {
        LKV_LOG_ERROR("invalid engine config: block size %d, device blocks "
                      "%d, host blocks %d, max seqs %d, batch tokens %d",
                      cfg->block_size, cfg->n_device_blocks,
                      cfg->n_host_blocks, cfg->max_seqs,
                      cfg->max_batch_tokens);
        return LKV_ERR_INVALID;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return LKV_ERR_NOMEM;
    }
    e->m       = m;
    e->cfg     = *cfg;
    e->max_ctx = m->cfg.max_seq_len > 0 ? m->cfg.max_seq_len : 2048;
    if (cfg->max_ctx > 0 && cfg->max_ctx < e->max_ctx) {
        e->max_ctx = cfg->max_ctx;
    }
    e->max_blocks   = (e->max_ctx + cfg->block_size - 1) / cfg->block_size;
    e->next_seq_id  = 1;
    e->next_move_id = 1;
    e->next_step_id = 1;

    lkv_kv_alloc_config_t ac = lkv_kv_alloc_config_default();
    ac.n_layers                        = nl;
    ac.block_size                      = cfg->block_size;
    ac.n_blocks[LKV_KV_TIER_DEVICE]    = cfg->n_device_blocks;
    ac.n_blocks[LKV_KV_TIER_HOST]      = cfg->n_host_blocks;
    ac.n_blocks[LKV_KV_TIER_REMOTE]    = cfg->n_remote_blocks;
    ac.max_seqs                        = cfg->max_seqs;
    ac.max_blocks_per_layer            = e->max_blocks;
    LKV_CHECK_GOTO(lkv_kv_alloc_create(&ac, &e->alloc), st, fail);

    lkv_step_exec_config_t xc = lkv_step_exec_config_default();
    xc.block_size             = cfg->block_size;
    xc.n_device_blocks        = cfg->n_device_blocks;
    xc.n_host_blocks          = cfg->n_host_blocks;
    xc.max_seqs               = cfg->max_seqs;
    xc.max_batch_tokens       = cfg->max_batch_tokens;
    xc.max_blocks_per_layer   = e->max_blocks;
    xc.kv_dtype               = cfg->kv_dtype;
    xc.remote                 = cfg->remote;
    LKV_CHECK_GOTO(lkv_step_exec_create(m, &xc, &e->x), st, fail);

    size_t sl          = (size_t)cfg->max_seqs * (size_t)nl;
    e->n_pblocks_cap   = (int)(sl * (size_t)(cfg->max_batch_tokens /
                                                 cfg->block_size + 2));
    e->n_moves_cap     = (int)(sl * 2);
    e->pseqs           = calloc((size_t)cfg->max_seqs, sizeof(*e->pseqs));
    e->preq            = calloc((size_t)cfg->max_seqs, sizeof(*e->preq));
    e->pappends        = calloc(sl, sizeof(*e->pappends));
    e->pblocks         = calloc((size_t)e->n_pblocks_cap, sizeof(int32_t));
    e->pmoves          = calloc((size_t)e->n_moves_cap, sizeof(*e->pmoves));
    e->mrecs           = calloc((size_t)e->n_moves_cap, sizeof(*e->mrecs));
    e->mfree           = calloc((size_t)e->n_moves_cap, sizeof(*e->mfree));
    if (!e->pseqs || !e->preq || !e->pappends || !e->pblocks || !e->pmoves ||
        !e->mrecs || !e->mfree) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    if (e->n_moves_cap >= (1 << MREC_BITS)) {
        LKV_LOG_ERROR("engine: %d sequences x %d layers is too many moves in "
                      "flight; lower the sequence count",
                      cfg->max_seqs, nl);
        st = LKV_ERR_INVALID;
        goto fail;
    }
    for (int i = e->n_moves_cap - 1; i >= 0; i--) {
        e->mfree[e->n_mfree++] = i;
    }
    *e_p = e;
    return LKV_OK;

fail:
    lkv_engine_destroy(&e);
    return st;
}

void lkv_engine_destroy(lkv_engine_t **e_p)
{
    lkv_engine_t *e;

    if (e_p == NULL || *e_p == NULL) {
        return;
    }
    e = *e_p;
    lkv_step_exec_destroy(&e->x);
    lkv_kv_alloc_destroy(&e->alloc);
    free(e->pseqs);
    free(e->preq);
    free(e->pappends);
    free(e->pblocks);
    free(e->pmoves);
    free(e->mrecs);
    free(e->mfree);
    free(e->pfinished);
    free(e);
    *e_p = NULL;
}

int lkv_engine_max_ctx(const lkv_engine_t *e)
{
    return e->max_ctx;
}

void lkv_engine_stats(const lkv_engine_t *e, lkv_engine_stats_t *stats_p)
{
    *stats_p = e->stats;
}

lkv_step_exec_t *lkv_engine_step_exec(lkv_engine_t *e)
{
    return e->x;
}

/* ---- plan building ---- */

typedef struct {
    lkv_engine_t *e;
    req_t        *reqs;
    int           n_reqs;
    int           n_seqs, n_appends, n_blocks, n_moves, n_finished;
    int           n_tokens;
    int           n_prefill_tokens;
    int           n_live; /* sequences holding kv blocks */
    int32_t       dev_free, host_free, remote_free;
    bool          reset; /* plan_preempt dropped a sequence's KV */
} plan_t;

static mrec_t *mrec_alloc(lkv_engine_t *e)
{
    if (e->n_mfree == 0) {
        return NULL;
    }
    mrec_t *r = &e->mrecs[e->mfree[--e->n_mfree]];
    r->used   = true;
    r->move_id = (e->next_move_id++ << MREC_BITS) |
                 (uint64_t)(r - e->mrecs);
    return r;
}

static void mrec_free(lkv_engine_t *e, mrec_t *r)
{
    r->used                 = false;
    e->mfree[e->n_mfree++] = (int)(r - e->mrecs);
}

static mrec_t *mrec_find(lkv_engine_t *e, uint64_t id)
{
    uint64_t i = id & ((1u << MREC_BITS) - 1);

    if (i < (uint64_t)e->n_moves_cap && e->mrecs[i].used &&
        e->mrecs[i].move_id == id) {
        return &e->mrecs[i];
    }
    return NULL;
}

/* Append n_tokens to (seq, layer) in tier and record the delta. */
static lkv_status_t plan_append(plan_t *p, req_t *r, int layer, int n_tokens,
                                lkv_kv_tier_t tier)
{
    lkv_engine_t *e   = p->e;
    int           cap = e->n_pblocks_cap - p->n_blocks;
    int           n_new;
    int32_t      *dst = e->pblocks + p->n_blocks;

    LKV_CHECK(lkv_kv_append(e->alloc, r->seq_id, layer, n_tokens, tier, dst,
                            cap, &n_new));
    if (n_new > 0) {
        lkv_plan_append_t *a = &e->pappends[p->n_appends++];
        a->seq_id            = r->seq_id;
        a->layer             = layer;
        a->tier              = (uint8_t)tier;
        a->n_blocks          = n_new;
        a->blocks            = dst;
        p->n_blocks += n_new;
    }
    return LKV_OK;
}

static int32_t *off_free(plan_t *p, lkv_kv_tier_t tier)
{
    return tier == LKV_KV_TIER_REMOTE ? &p->remote_free : &p->host_free;
}

/* Where `need` offloaded blocks of a sequence go: the host pool while it
 * has room, else the remote tier (kvnodes) while it is up and has room. */
static bool pick_off_tier(plan_t *p, int32_t need, lkv_kv_tier_t *tier_p)
{
    if (p->e->cfg.n_host_blocks > 0 && need <= p->host_free) {
        *tier_p = LKV_KV_TIER_HOST;
        return true;
    }
    if (!p->e->remote_down && need <= p->remote_free && p->remote_free > 0) {
        *tier_p = LKV_KV_TIER_REMOTE;
        return true;
    }
    return false;
}

static lkv_status_t plan_move(plan_t *p, int ri, int layer,
                              lkv_plan_move_kind_t kind)
{
    lkv_engine_t  *e = p->e;
    req_t         *r = &p->reqs[ri];
    lkv_kv_copy_t  c;
    lkv_status_t   st;
    mrec_t        *rec;

    if (p->n_moves >= e->n_moves_cap || (rec = mrec_alloc(e)) == NULL) {
        return LKV_ERR_NOSPACE;
    }
    if (kind == LKV_PLAN_MOVE_STAGE) {
        st = lkv_kv_stage_begin(e->alloc, r->seq_id, layer, &c);
    } else {
        st = lkv_kv_move_begin(e->alloc, r->seq_id, layer,
                               kind == LKV_PLAN_MOVE_OFFLOAD
                                   ? r->otier
                                   : LKV_KV_TIER_DEVICE,
                               &c);
    }
    if (st != LKV_OK) {
        mrec_free(e, rec);
        return st;
    }
    lkv_plan_move_t *mv = &e->pmoves[p->n_moves++];
    mv->move_id         = rec->move_id;
    mv->seq_id          = r->seq_id;
    mv->layer           = layer;
    mv->kind            = (uint8_t)kind;
    mv->src_tier        = (uint8_t)c.src_tier;
    mv->dst_tier        = (uint8_t)c.dst_tier;
    mv->n_blocks        = c.n_blocks;
    mv->src             = c.src;
    mv->dst             = c.dst;
    rec->req            = ri;
    rec->seq_id         = r->seq_id;
    rec->layer          = layer;
    rec->kind           = (uint8_t)kind;
    r->n_moving++;
    return LKV_OK;
}

static void plan_seq(plan_t *p, int ri, const int32_t *tokens, int n,
                     int pos0, bool sample)
{
    lkv_plan_seq_t *q = &p->e->pseqs[p->n_seqs];

    q->seq_id       = p->reqs[ri].seq_id;
    q->n_tokens     = n;
    q->tokens       = tokens;
    q->pos0         = pos0;
    q->sample       = sample;
    q->sampling     = p->reqs[ri].r->sampling;
    p->e->preq[p->n_seqs] = ri;
    p->n_seqs++;
    p->n_tokens += n;
}

static int layer_blocks(const lkv_engine_t *e, uint64_t seq_id, int layer)
{
    lkv_kv_tier_t         tier;
    const lkv_kv_block_t *b;
    int                   n = 0;

    if (lkv_kv_layer_blocks(e->alloc, seq_id, layer, &tier, &b, &n) !=
        LKV_OK) {
        return 0;
    }
    return n;
}

/* A decoding request: one token, if its KV can be placed. */
static lkv_status_t plan_decode(plan_t *p, int ri)
{
    lkv_engine_t *e  = p->e;
    req_t        *r  = &p->reqs[ri];
    int           nl = e->m->cfg.n_layers;
    int32_t       dev_need = 0, host_need = 0;
    int           pos0 = r->r->n_prompt + r->n_gen - 1;

    if (r->n_host > 0 && e->cfg.decode_mode == LKV_DECODE_RELOAD) {
        if (r->reloading) {
            return LKV_OK;
        }
        int32_t grow = 0; /* the next token's blocks, once resident */
        for (int l = 0; l < nl; l++) {
            if (r->host[l]) {
                dev_need += layer_blocks(e, r->seq_id, l);
            }
            grow += lkv_kv_blocks_needed(e->alloc, r->seq_id, l, 1);
        }
        if (dev_need + grow > p->dev_free) {
            return LKV_OK; /* wait for room */
        }
        for (int l = 0; l < nl; l++) {
            if (r->host[l]) {
                LKV_CHECK(plan_move(p, ri, l, LKV_PLAN_MOVE_RELOAD));
            }
        }
        p->dev_free -= dev_need;
        r->reloading = true;
        return LKV_OK;
    }
    for (int l = 0; l < nl; l++) {
        int grow = lkv_kv_blocks_needed(e->alloc, r->seq_id, l, 1);
        if (r->host[l]) {
            host_need += grow;
            dev_need += layer_blocks(e, r->seq_id, l) + grow; /* staging */
        } else {
            dev_need += grow;
        }
    }
    if (dev_need > p->dev_free || host_need > *off_free(p, r->otier)) {
        return LKV_OK; /* stall this step */
    }
    for (int l = 0; l < nl; l++) {
        LKV_CHECK(plan_append(p, r, l, 1,
                              r->host[l] ? r->otier
                                         : LKV_KV_TIER_DEVICE));
    }
    for (int l = 0; l < nl; l++) {
        if (r->host[l]) {
            LKV_CHECK(plan_move(p, ri, l, LKV_PLAN_MOVE_STAGE));
        }
    }
    p->dev_free -= dev_need;
    *off_free(p, r->otier) -= host_need;
    plan_seq(p, ri, &r->last, 1, pos0, true);
    return LKV_OK;
}

/* A prefilling request: the next chunk of its prompt. Returns LKV_AGAIN when
 * it does not fit (later requests must not jump ahead). */
static lkv_status_t plan_prefill(plan_t *p, int ri, int seq_index)
{
    lkv_engine_t *e      = p->e;
    req_t        *r      = &p->reqs[ri];
    int           nl     = e->m->cfg.n_layers;
    int           remain = r->n_ctx0 - r->n_prefilled;
    int           chunk  = remain;
    int32_t       need   = 0, host_need = 0;
    bool          last;

    if (chunk > e->cfg.max_batch_tokens - p->n_tokens) {
        chunk = e->cfg.max_batch_tokens - p->n_tokens;
    }
    if (chunk <= 0) {
        return LKV_AGAIN;
    }
    if (!r->registered) {
        lkv_status_t st = lkv_kv_seq_add(e->alloc, r->seq_id);
        if (st == LKV_ERR_NOSPACE) {
            return LKV_AGAIN;
        }
        LKV_CHECK(st);
        r->registered = true;
        for (int l = 0; l < nl; l++) {
            r->off[l] = lkv_engine_layer_offloaded(
                e->cfg.offload, e->cfg.offload_seed, nl, seq_index, l);
        }
    }
    for (int l = 0; l < nl; l++) {
        need += lkv_kv_blocks_needed(e->alloc, r->seq_id, l, chunk);
    }
    /* a sequence's first chunk leaves one block per layer of headroom so
     * running sequences can grow (when there are any) */
    if (need + (r->n_prefilled == 0 && p->n_live > 0 ? nl : 0) >
        p->dev_free) {
        return LKV_AGAIN;
    }
    last = r->n_prefilled + chunk == r->n_ctx0;
    for (int l = 0; l < nl; l++) {
        LKV_CHECK(plan_append(p, r, l, chunk, LKV_KV_TIER_DEVICE));
    }
    p->dev_free -= need;
    if (last) {
        for (int l = 0; l < nl; l++) {
            if (r->off[l]) {
                host_need += layer_blocks(e, r->seq_id, l);
            }
        }
        if (!pick_off_tier(p, host_need, &r->otier)) {
            LKV_LOG_DEBUG("seq %" PRIu64 " keeps its layers on the device: "
                          "host pool full",
                          r->seq_id);
        } else {
            for (int l = 0; l < nl; l++) {
                if (r->off[l]) {
                    LKV_CHECK(plan_move(p, ri, l, LKV_PLAN_MOVE_OFFLOAD));
                    r->host[l] = true;
                    r->n_host++;
                }
            }
            *off_free(p, r->otier) -= host_need;
        }
    }
    plan_seq(p, ri, r->toks + r->n_prefilled, chunk, r->n_prefilled,
             last);
    p->n_prefill_tokens += chunk;
    return LKV_OK;
}

/* Drop a request's KV (the worker drops its state with the next plan) so
 * it prefills its prompt and the tokens generated so far again. */
static void req_reset(plan_t *p, int ri)
{
    lkv_engine_t *e = p->e;
    req_t        *r = &p->reqs[ri];

    lkv_kv_seq_free(e->alloc, r->seq_id);
    e->pfinished[p->n_finished++] = r->seq_id;
    r->seq_id      = e->next_seq_id++;
    r->registered  = false;
    r->n_prefilled = 0;
    r->n_ctx0      = r->r->n_prompt + r->n_gen;
    r->n_host      = 0;
    r->n_moving    = 0;
    r->reloading   = false;
    r->otier       = LKV_KV_TIER_HOST;
    memset(r->host, 0, (size_t)e->m->cfg.n_layers * sizeof(bool));
}

/* The request's KV was lost with a remote node: drop it and prefill the
 * prompt and the tokens generated so far again (on the device: the remote
 * tier is no longer used). Greedy requests continue with the same tokens.
 * Returns false when the request must fail instead. */
static bool req_recompute(plan_t *p, int ri, lkv_status_t why)
{
    lkv_engine_t *e = p->e;
    req_t        *r = &p->reqs[ri];

    if (r->otier != LKV_KV_TIER_REMOTE ||
        (why != LKV_ERR_PEER_LOST && why != LKV_ERR_TIMEOUT)) {
        return false;
    }
    e->remote_down = true;
    if (r->done) {
        return true;
    }
    if (!r->registered) {
        return true; /* already reset in this step */
    }
    if (r->n_recompute >= 2) {
        return false;
    }
    LKV_LOG_WARN("seq %" PRIu64 ": its kv was lost with a kvnode (%s); "
                 "recomputing %d tokens on the device",
                 r->seq_id, lkv_status_str(why), r->r->n_prompt + r->n_gen);
    r->n_recompute++;
    req_reset(p, ri);
    return true;
}

/* Nothing can progress: move every device layer of the latest decoding
 * sequence to the host (it comes back by reload or stream like any offloaded
 * layer). Returns false when no sequence can be preempted. */
static bool plan_preempt(plan_t *p)
{
    lkv_engine_t *e  = p->e;
    int           nl = e->m->cfg.n_layers;

    if (e->remote_down && e->cfg.n_host_blocks == 0) {
        /* nowhere to move KV to: preempt the latest sequence by
         * recompute (never the earliest one, which must progress) */
        int first = -1;
        for (int ri = 0; ri < p->n_reqs && first < 0; ri++) {
            if (!p->reqs[ri].done && p->reqs[ri].registered) {
                first = ri;
            }
        }
        for (int ri = p->n_reqs - 1; ri > first && first >= 0; ri--) {
            req_t *r = &p->reqs[ri];
            if (!r->done && r->registered && r->n_moving == 0 &&
                r->n_prefilled > 0) {
                LKV_LOG_DEBUG("kv pools full: seq %" PRIu64 " is preempted "
                              "(recompute)",
                              r->seq_id);
                req_reset(p, ri);
                p->reset = true;
                return true;
            }
        }
        return false;
    }
    for (int ri = p->n_reqs - 1; ri >= 0; ri--) {
        req_t  *r    = &p->reqs[ri];
        int32_t need = 0;
        int     n    = 0;

        if (r->done || !r->registered || r->n_moving > 0 ||
            r->n_prefilled < r->n_ctx0) {
            continue;
        }
        for (int l = 0; l < nl; l++) {
            if (!r->host[l]) {
                need += layer_blocks(e, r->seq_id, l);
                n += layer_blocks(e, r->seq_id, l) > 0;
            }
        }
        if (n == 0) {
            continue;
        }
        if (r->n_host > 0 ? need > *off_free(p, r->otier)
                          : !pick_off_tier(p, need, &r->otier)) {
            continue;
        }
        for (int l = 0; l < nl; l++) {
            if (!r->host[l] && layer_blocks(e, r->seq_id, l) > 0) {
                if (plan_move(p, ri, l, LKV_PLAN_MOVE_OFFLOAD) != LKV_OK) {
                    return p->n_moves > 0;
                }
                r->host[l] = true;
                r->n_host++;
            }
        }
        *off_free(p, r->otier) -= need;
        LKV_LOG_DEBUG("kv pools full: seq %" PRIu64 " moves %d layers to the "
                      "host",
                      r->seq_id, n);
        return true;
    }
    return false;
}

static bool is_stop(const lkv_model_config_t *c, int32_t tok)
{
    for (int i = 0; i < c->n_stop_ids; i++) {
        if (c->stop_ids[i] == tok) {
            return true;
        }
    }
    return c->n_stop_ids == 0 && c->eos_id >= 0 && tok == c->eos_id;
}

static void req_finish(plan_t *p, int ri, lkv_status_t status,
                       lkv_engine_token_fn fn, void *ctx)
{
    req_t *r = &p->reqs[ri];

    if (r->done) {
        return;
    }
    r->done = true;
    if (r->registered) {
        lkv_kv_seq_free(p->e->alloc, r->seq_id);
        p->e->pfinished[p->n_finished++] = r->seq_id;
    }
    fn(ctx, ri, -1, status);
}

static void apply_result(plan_t *p, const lkv_step_result_t *res,
                         lkv_engine_token_fn fn, void *ctx)
{
    lkv_engine_t             *e = p->e;
    const lkv_model_config_t *c = &e->m->cfg;

    for (int i = 0; i < res->n_moves_done + res->n_moves_failed; i++) {
        bool     ok  = i < res->n_moves_done;
        uint64_t id  = ok ? res->moves_done[i]
                          : res->moves_failed[i - res->n_moves_done];
        mrec_t  *rec = mrec_find(e, id);
        if (rec == NULL) {
            LKV_LOG_WARN("worker reported unknown move %" PRIu64, id);
            continue;
        }
        req_t *r = &p->reqs[rec->req];
        if (rec->seq_id != r->seq_id) {
            /* a move of an incarnation dropped for recompute: end it so
             * the allocator releases its blocks */
            if (rec->kind == LKV_PLAN_MOVE_STAGE) {
                lkv_kv_stage_end(e->alloc, rec->seq_id, rec->layer);
            } else if (ok) {
                lkv_kv_move_end(e->alloc, rec->seq_id, rec->layer);
            } else {
                lkv_kv_move_abort(e->alloc, rec->seq_id, rec->layer);
            }
            mrec_free(e, rec);
            continue;
        }
        mrec_free(e, rec);
        r->n_moving--;
        if (rec->kind == LKV_PLAN_MOVE_STAGE) {
            lkv_kv_stage_end(e->alloc, r->seq_id, rec->layer);
        } else if (ok) {
            lkv_kv_move_end(e->alloc, r->seq_id, rec->layer);
            if (rec->kind == LKV_PLAN_MOVE_RELOAD) {
                r->host[rec->layer] = false;
                r->n_host--;
                if (r->n_moving == 0) {
                    r->reloading = false;
                }
            }
        } else {
            lkv_kv_move_abort(e->alloc, r->seq_id, rec->layer);
            if (rec->kind == LKV_PLAN_MOVE_OFFLOAD && r->host[rec->layer]) {
                r->host[rec->layer] = false; /* stayed on the device */
                r->n_host--;
            }
            if (rec->kind == LKV_PLAN_MOVE_OFFLOAD &&
                r->otier == LKV_KV_TIER_REMOTE && !e->remote_down) {
                /* a failed put means the kvnode is gone or unusable: stop
                 * planning offloads there, or every step would retry one
                 * that cannot succeed and the pools never drain
                 * (preemption by recompute takes over) */
                LKV_LOG_ERROR("seq %" PRIu64 ": offload of layer %d to the "
                              "remote tier failed; the remote tier is no "
                              "longer used",
                              r->seq_id, rec->layer);
                e->remote_down = true;
            }
        }
        if (!ok && rec->kind != LKV_PLAN_MOVE_OFFLOAD) {
            LKV_LOG_ERROR("seq %" PRIu64 ": %s of layer %d failed",
                          r->seq_id,
                          rec->kind == LKV_PLAN_MOVE_STAGE ? "stage"
                                                           : "reload",
                          rec->layer);
            if (!req_recompute(p, rec->req, LKV_ERR_PEER_LOST)) {
                req_finish(p, rec->req,
                           r->otier == LKV_KV_TIER_REMOTE
                               ? LKV_ERR_PEER_LOST
                               : LKV_ERR_IO,
                           fn, ctx);
            }
        }
    }
    for (int i = 0; i < res->n_seqs; i++) {
        int                   ri = e->preq[i];
        req_t                *r  = &p->reqs[ri];
        const lkv_plan_seq_t *q  = &e->pseqs[i];

        if (r->done) {
            continue;
        }
        if (q->seq_id != r->seq_id) {
            continue; /* recomputed in this step: its result is stale */
        }
        if (res->seqs[i].status != LKV_OK) {
            if (!req_recompute(p, ri, (lkv_status_t)res->seqs[i].status)) {
                req_finish(p, ri, (lkv_status_t)res->seqs[i].status, fn,
                           ctx);
            }
            continue;
        }
        if (r->n_prefilled < r->n_ctx0) {
            r->n_prefilled += q->n_tokens;
        }
        int32_t tok = res->seqs[i].token;
        if (tok < 0) {
            continue;
        }
        r->n_gen++;
        r->last = tok;
        r->toks[r->r->n_prompt + r->n_gen - 1] = tok;
        if (is_stop(c, tok)) {
            req_finish(p, ri, LKV_OK, fn, ctx);
            continue;
        }
        fn(ctx, ri, tok, LKV_OK);
        if (r->n_gen >= r->max_gen ||
            r->r->n_prompt + r->n_gen > e->max_ctx) {
            req_finish(p, ri, LKV_OK, fn, ctx);
        }
    }
}

lkv_status_t lkv_engine_generate(lkv_engine_t *e,
                                 const lkv_engine_request_t *reqs, int n_reqs,
                                 lkv_engine_token_fn fn, void *ctx)
{
    int          nl   = e->m->cfg.n_layers;
    req_t       *rs   = NULL;
    bool        *bits = NULL;
    lkv_status_t st   = LKV_OK;
    plan_t       p;

    if (n_reqs <= 0 || reqs == NULL || fn == NULL) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n_reqs; i++) {
        if (reqs[i].n_prompt <= 0 || reqs[i].prompt == NULL ||
            reqs[i].max_tokens <= 0) {
            LKV_LOG_ERROR("request %d: empty prompt or max_tokens %d", i,
                          reqs[i].max_tokens);
            return LKV_ERR_INVALID;
        }
        if (reqs[i].n_prompt > e->max_ctx) {
            LKV_LOG_ERROR("prompt %d has %d tokens, longer than the context "
                          "of %d tokens; shorten it",
                          i, reqs[i].n_prompt, e->max_ctx);
            return LKV_ERR_TOOLONG;
        }
    }
    size_t n_toks = 0;
    for (int i = 0; i < n_reqs; i++) {
        n_toks += (size_t)reqs[i].n_prompt + (size_t)reqs[i].max_tokens + 1;
    }
    rs   = calloc((size_t)n_reqs, sizeof(*rs));
    bits = calloc((size_t)n_reqs * (size_t)nl * 2, sizeof(bool));
    int32_t *toks = malloc(n_toks * sizeof(int32_t));
    free(e->pfinished);
    e->pfinished = calloc((size_t)n_reqs, sizeof(uint64_t));
    if (rs == NULL || bits == NULL || toks == NULL || e->pfinished == NULL) {
        free(rs);
        free(bits);
        free(toks);
        return LKV_ERR_NOMEM;
    }
    n_toks = 0;
    for (int i = 0; i < n_reqs; i++) {
        rs[i].r       = &reqs[i];
        rs[i].seq_id  = e->next_seq_id++;
        rs[i].off     = bits + (size_t)i * (size_t)nl * 2;
        rs[i].host    = rs[i].off + nl;
        rs[i].max_gen = reqs[i].max_tokens;
        rs[i].toks    = toks + n_toks;
        rs[i].n_ctx0  = reqs[i].n_prompt;
        rs[i].otier   = LKV_KV_TIER_HOST;
        memcpy(rs[i].toks, reqs[i].prompt,
               (size_t)reqs[i].n_prompt * sizeof(int32_t));
        n_toks += (size_t)reqs[i].n_prompt + (size_t)reqs[i].max_tokens + 1;
    }
    memset(&p, 0, sizeof(p));
    p.e      = e;
    p.reqs   = rs;
    p.n_reqs = n_reqs;

    for (;;) {
        int n_done = 0;
        int finished_carry;

        /* finished from the previous step go out with this plan */
        finished_carry = p.n_finished;
        p.n_seqs = p.n_appends = p.n_blocks = p.n_moves = 0;
        p.n_tokens = p.n_prefill_tokens = 0;
        p.dev_free  = lkv_kv_free_blocks(e->alloc, LKV_KV_TIER_DEVICE);
        p.host_free   = lkv_kv_free_blocks(e->alloc, LKV_KV_TIER_HOST);
        p.remote_free = e->cfg.n_remote_blocks > 0 && !e->remote_down
                            ? lkv_kv_free_blocks(e->alloc, LKV_KV_TIER_REMOTE)
                            : 0;

        p.n_live = 0;
        for (int i = 0; i < n_reqs; i++) {
            p.n_live += rs[i].registered && !rs[i].done &&
                        rs[i].n_prefilled > 0;
        }
        for (int i = 0; i < n_reqs; i++) {
            req_t *r = &rs[i];
            if (r->done || r->n_prefilled < r->n_ctx0 ||
                r->n_moving > 0) {
                continue;
            }
            if (p.n_seqs >= e->cfg.max_seqs ||
                p.n_tokens + 1 > e->cfg.max_batch_tokens) {
                break;
            }
            st = plan_decode(&p, i);
            if (st != LKV_OK) {
                goto out;
            }
        }
        for (int i = 0; i < n_reqs; i++) {
            req_t *r = &rs[i];
            if (r->done || r->n_prefilled >= r->n_ctx0) {
                continue;
            }
            if (p.n_seqs >= e->cfg.max_seqs) {
                break;
            }
            st = plan_prefill(&p, i, i);
            if (st == LKV_AGAIN) {
                st = LKV_OK;
                break;
            }
            if (st != LKV_OK) {
                goto out;
            }
        }
        for (int i = 0; i < n_reqs; i++) {
            n_done += rs[i].done;
        }
        int in_flight = lkv_step_exec_moves_in_flight(e->x);
        if (p.n_seqs == 0 && p.n_moves == 0 && finished_carry == 0) {
            if (n_done == n_reqs && in_flight == 0) {
                break;
            }
            if (in_flight == 0 && plan_preempt(&p)) {
                if (p.reset) {
                    p.reset = false;
                    continue; /* its blocks are free: plan again */
                }
                goto run_step;
            }
            if (in_flight == 0) {
                LKV_LOG_ERROR("the kv pools are too small for any sequence "
                              "to make progress (%d device blocks, %d host "
                              "blocks free); raise --device-kv-blocks or "
                              "--host-kv-blocks",
                              p.dev_free, p.host_free);
                st = LKV_ERR_NOSPACE;
                goto out;
            }
            /* only reloads are pending: wait for them */
            st = lkv_step_exec_sync(e->x);
            if (st != LKV_OK) {
                goto out;
            }
        }

    run_step:;
        lkv_step_plan_t   plan;
        lkv_step_result_t res;
        plan.step_id    = e->next_step_id++;
        plan.n_seqs     = p.n_seqs;
        plan.seqs       = e->pseqs;
        plan.n_appends  = p.n_appends;
        plan.appends    = e->pappends;
        plan.n_moves    = p.n_moves;
        plan.moves      = e->pmoves;
        plan.n_finished = finished_carry;
        plan.finished   = e->pfinished;
        p.n_finished    = 0;

        lkv_step_exec_stats_t before;
        int                   n_off = 0;
        for (int i = 0; i < p.n_moves; i++) {
            n_off += e->pmoves[i].kind == LKV_PLAN_MOVE_OFFLOAD;
        }
        lkv_step_exec_stats(e->x, &before);
        st = lkv_step_exec_run(e->x, &plan, &res);
        if (n_off > 0) {
            lkv_step_exec_stats_t after;
            lkv_step_exec_stats(e->x, &after);
            e->stats.offload_steps++;
            e->stats.offload_compute_ns += res.compute_ns;
            e->stats.offload_copy_ns += after.d2h_busy_ns - before.d2h_busy_ns;
            e->stats.offload_step_ns += res.step_ns;
        }
        if (st != LKV_OK && res.n_seqs == 0) {
            goto out; /* the plan itself was rejected */
        }
        st = LKV_OK;
        e->stats.steps++;
        e->stats.bytes_d2h += res.bytes_d2h;
        e->stats.bytes_h2d += res.bytes_h2d;
        e->stats.compute_ns += res.compute_ns;
        if (p.n_prefill_tokens > 0) {
            e->stats.prefill_tokens += p.n_prefill_tokens;
            e->stats.prefill_ns += res.step_ns;
        } else if (p.n_seqs > 0) {
            e->stats.decode_tokens += p.n_seqs;
            e->stats.decode_ns += res.step_ns;
            e->stats.decode_steps++;
        }
        apply_result(&p, &res, fn, ctx);
#ifndef NDEBUG
        st = lkv_kv_alloc_check(e->alloc);
        if (st != LKV_OK) {
            LKV_LOG_ERROR("kv allocator invariant broken after step %" PRIu64,
                          plan.step_id);
            goto out;
        }
#endif
    }

out:
    /* drop whatever is still live (errors), and the worker's state of it */
    for (int i = 0; i < n_reqs; i++) {
        if (!rs[i].done) {
            req_finish(&p, i, st != LKV_OK ? st : LKV_ERR_CANCELLED, fn, ctx);
        }
    }
    lkv_step_exec_sync(e->x);
    if (p.n_finished > 0 || lkv_step_exec_moves_in_flight(e->x) > 0) {
        lkv_step_plan_t   plan;
        lkv_step_result_t res;
        memset(&plan, 0, sizeof(plan));
        plan.step_id    = e->next_step_id++;
        plan.n_finished = p.n_finished;
        plan.finished   = e->pfinished;
        p.n_finished    = 0;
        lkv_step_exec_run(e->x, &plan, &res);
        apply_result(&p, &res, fn, ctx);
    }
    if (st == LKV_OK && (lkv_kv_used_blocks(e->alloc, LKV_KV_TIER_DEVICE) !=
                             0 ||
                         lkv_kv_used_blocks(e->alloc, LKV_KV_TIER_HOST) != 0 ||
                         lkv_step_exec_moves_in_flight(e->x) != 0)) {
        LKV_LOG_ERROR("kv blocks leaked: %d device, %d host still used, %d "
                      "moves in flight after every request ended",
                      lkv_kv_used_blocks(e->alloc, LKV_KV_TIER_DEVICE),
                      lkv_kv_used_blocks(e->alloc, LKV_KV_TIER_HOST),
                      lkv_step_exec_moves_in_flight(e->x));
        st = LKV_ERR_INTERNAL;
    }
    {
        lkv_step_exec_stats_t xs;
        lkv_step_exec_stats(e->x, &xs);
        e->stats.n_offloads = xs.n_offloads;
        e->stats.n_reloads  = xs.n_reloads;
        e->stats.n_stages   = xs.n_stages;
    }
    free(rs);
    free(bits);
    free(toks);
    return st;
}
