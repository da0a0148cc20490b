/* step_exec.c - execute step plans against the physical KV pools; see
 * step_exec.h. Runs on the step thread. Memory comes from kvstore/kv_pool,
 * copies go through kvstore/kv_mover (the backend's D2H/H2D queues); each
 * move slot tracks its transfers by tag = slot index. No allocation per
 * step: move slots, result arrays and batch arrays are preallocated. */
#define LKV_LOG_MODULE "step_exec"

#include "worker/step_exec.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "worker/comm.h"
#include "kvstore/kv_alloc.h"
#include "kvstore/kv_mover.h"
#include "kvstore/kv_pool.h"
#include "worker/seq_table.h"

typedef struct {
    bool              used;
    bool              started;  /* copies queued */
    bool              applied;  /* reload: table already switched */
    bool              orphan;   /* its sequence finished */
    bool              failed;   /* a transfer failed */
    bool              held;     /* reload done here, not yet on every TP/PP
                                   peer: reported in a later step */
    int               n_pending; /* transfers not yet reported by poll */
    uint64_t          move_id;
    uint64_t          seq_id;
    int               layer;
    uint8_t           kind;
    uint8_t           src_tier, dst_tier;
    int               n_blocks;
    int               n_in; /* blocks the inbound copy moves: n_blocks, or
                               0 for a STAGE of a sequence whose first
                               chunk runs in this step (no data yet) */
    int32_t          *src, *dst; /* (max_blocks_per_layer) */
    lkv_kv_xfer_t    *xin;  /* the move's copy (valid while n_pending) */
    lkv_kv_xfer_t    *xwb;  /* stage write-back, or NULL */
    int               dep;  /* STAGE: slot of the earlier stage of this step
                               whose staging blocks this one reuses (a
                               staging ring), or -1; its copy-in is deferred
                               until that stage's write-back is done */
} move_slot_t;

struct lkv_step_exec {
    const lkv_model_t     *m;
    lkv_kern_backend_t    *be;
    lkv_step_exec_config_t cfg;
    size_t                 block_bytes;
    lkv_kv_pool_t         *pool;
    lkv_kv_mover_t        *mover;
    void                  *dev_pool; /* device base: the kv_pool of kernels */
    lkv_kv_mover_done_t   *polled;   /* (2 * n_slots) */
    int32_t               *agree;    /* (2 * n_slots + 2) peer agreement */
    int                   *agree_slot; /* (n_slots) */
    bool                   agree_broken; /* peers' reload sets differ */
    lkv_seq_table_t       *tab;
    lkv_fwd_t             *fwd;

    move_slot_t       *slots;
    int                n_slots;
    int32_t           *slot_blocks;
    lkv_kern_event_t **ev_layer; /* (n_layers) compute events */
    lkv_kern_event_t **ev_stage; /* (n_layers) deferred stage-in starts */
    int32_t           *stage_owner; /* (n_device_blocks) slot staging into
                                       the block in step stage_gen */
    uint64_t          *stage_owner_gen; /* (n_device_blocks) */
    uint64_t           stage_gen;

    /* per-step batch (max_seqs) */
    lkv_fwd_seq_t        *bseqs;
    lkv_seq_entry_t     **bent;
    int                  *bplan;   /* batch index -> plan index */
    int32_t              *pstatus; /* plan index -> status */
    lkv_sample_params_t  *sparams;
    uint64_t             *srng;
    int32_t              *stokens;
    int                  *sbatch; /* sampled row -> batch index */

    /* results */
    lkv_result_seq_t *rseqs;
    uint64_t         *rdone;
    int               n_done;
    uint64_t         *rfailed;
    int               n_failed;
    int64_t           step_d2h, step_h2d;

    lkv_step_exec_stats_t stats;
};

lkv_step_exec_config_t lkv_step_exec_config_default(void)
{
    lkv_step_exec_config_t c;

    c.block_size           = 16;
    c.n_device_blocks      = 256;
    c.n_host_blocks        = 256;
    c.max_seqs             = 16;
    c.max_batch_tokens     = 512;
    c.max_blocks_per_layer = 64;
    c.kv_dtype             = LKV_DTYPE_F32;
    c.remote               = NULL;
    return c;
}

lkv_status_t lkv_step_exec_create(const lkv_model_t *m,
                                  const lkv_step_exec_config_t *cfg,
                                  lkv_step_exec_t **x_p)
{
    lkv_step_exec_t *x;
    lkv_status_t     st;
    int              nl = m->cfg.n_layers;

    if (cfg->block_size <= 0 || cfg->n_device_blocks <= 0 ||
        cfg->n_host_blocks < 0 || cfg->max_seqs <= 0 ||
        cfg->max_batch_tokens <= 0 || cfg->max_blocks_per_layer <= 0) {
        LKV_LOG_ERROR("invalid step executor config: block_size %d, device "
                      "blocks %d, host blocks %d, max_seqs %d, "
                      "max_batch_tokens %d, max_blocks_per_layer %d",
                      cfg->block_size, cfg->n_device_blocks,
                      cfg->n_host_blocks, cfg->max_seqs,
                      cfg->max_batch_tokens, cfg->max_blocks_per_layer);
        return LKV_ERR_INVALID;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return LKV_ERR_NOMEM;
    }
    x->m           = m;
    x->be          = m->be;
    x->cfg         = *cfg;
    x->block_bytes = lkv_model_block_bytes(m, cfg->block_size, cfg->kv_dtype);

    {
        lkv_kv_pool_config_t pc;
        pc.block_bytes     = x->block_bytes;
        pc.n_device_blocks = cfg->n_device_blocks;
        pc.n_host_blocks   = cfg->n_host_blocks;
        LKV_CHECK_GOTO(lkv_kv_pool_create(x->be, &pc, cfg->remote, &x->pool),
                       st, fail);
        x->dev_pool = lkv_kv_pool_base(x->pool, LKV_KV_TIER_DEVICE);
    }
    LKV_CHECK_GOTO(lkv_seq_table_create(nl, cfg->max_seqs,
                                        cfg->max_blocks_per_layer, &x->tab),
                   st, fail);
    {
        lkv_fwd_config_t fc   = lkv_fwd_config_default();
        fc.max_batch_tokens   = cfg->max_batch_tokens;
        fc.max_seqs           = cfg->max_seqs;
        fc.max_logit_rows     = cfg->max_seqs;
        fc.max_blocks_per_seq = cfg->max_blocks_per_layer;
        fc.block_size         = cfg->block_size;
        fc.kv_dtype           = cfg->kv_dtype;
        LKV_CHECK_GOTO(lkv_fwd_create(m, &fc, &x->fwd), st, fail);
    }

    /* a layer of a sequence has at most one move at a time, plus slack */
    x->n_slots     = cfg->max_seqs * nl * 2 + 8;
    x->slots       = calloc((size_t)x->n_slots, sizeof(*x->slots));
    x->slot_blocks = malloc((size_t)x->n_slots * 2 *
                            (size_t)cfg->max_blocks_per_layer *
                            sizeof(int32_t));
    x->ev_layer    = calloc((size_t)nl, sizeof(*x->ev_layer));
    x->ev_stage    = calloc((size_t)nl, sizeof(*x->ev_stage));
    x->stage_owner = calloc((size_t)cfg->n_device_blocks,
                            sizeof(*x->stage_owner));
    x->stage_owner_gen = calloc((size_t)cfg->n_device_blocks,
                                sizeof(*x->stage_owner_gen));
    x->bseqs       = calloc((size_t)cfg->max_seqs, sizeof(*x->bseqs));
    x->bent        = calloc((size_t)cfg->max_seqs, sizeof(*x->bent));
    x->bplan       = calloc((size_t)cfg->max_seqs, sizeof(*x->bplan));
    x->pstatus     = calloc((size_t)cfg->max_seqs, sizeof(*x->pstatus));
    x->sparams     = calloc((size_t)cfg->max_seqs, sizeof(*x->sparams));
    x->srng        = calloc((size_t)cfg->max_seqs, sizeof(*x->srng));
    x->stokens     = calloc((size_t)cfg->max_seqs, sizeof(*x->stokens));
    x->sbatch      = calloc((size_t)cfg->max_seqs, sizeof(*x->sbatch));
    x->rseqs       = calloc((size_t)cfg->max_seqs, sizeof(*x->rseqs));
    x->rdone       = calloc((size_t)x->n_slots, sizeof(*x->rdone));
    x->rfailed     = calloc((size_t)x->n_slots, sizeof(*x->rfailed));
    x->polled      = calloc((size_t)x->n_slots * 2, sizeof(*x->polled));
    x->agree       = calloc((size_t)x->n_slots * 2 + 2, sizeof(*x->agree));
    x->agree_slot  = calloc((size_t)x->n_slots, sizeof(*x->agree_slot));
    if (!x->polled || !x->slots || !x->slot_blocks || !x->ev_layer ||
        !x->ev_stage || !x->stage_owner || !x->stage_owner_gen || !x->bseqs ||
        !x->bent || !x->bplan || !x->pstatus || !x->sparams || !x->srng ||
        !x->stokens || !x->sbatch || !x->rseqs || !x->rdone || !x->rfailed ||
        !x->agree || !x->agree_slot) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    for (int i = 0; i < x->n_slots; i++) {
        size_t off       = (size_t)i * 2 * (size_t)cfg->max_blocks_per_layer;
        x->slots[i].src  = x->slot_blocks + off;
        x->slots[i].dst  = x->slot_blocks + off + cfg->max_blocks_per_layer;
    }
    {
        lkv_kv_mover_config_t mc = lkv_kv_mover_config_default();
        mc.max_inflight          = x->n_slots * 2;
        mc.max_blocks            = cfg->max_blocks_per_layer;
        LKV_CHECK_GOTO(lkv_kv_mover_create(x->pool, &mc, &x->mover), st,
                       fail);
    }
    for (int l = 0; l < nl; l++) {
        LKV_CHECK_GOTO(LKV_KERN_CALL(x->be, event_create, &x->ev_layer[l]),
                       st, fail);
        LKV_CHECK_GOTO(LKV_KERN_CALL(x->be, event_create, &x->ev_stage[l]),
                       st, fail);
    }
    *x_p = x;
    return LKV_OK;

fail:
    lkv_step_exec_destroy(&x);
    return st;
}

void lkv_step_exec_destroy(lkv_step_exec_t **x_p)
{
    lkv_step_exec_t *x;

    if (x_p == NULL || *x_p == NULL) {
        return;
    }
    x = *x_p;
    lkv_kv_mover_destroy(&x->mover); /* waits for copies in flight */
    if (x->ev_layer != NULL) {
        for (int l = 0; l < x->m->cfg.n_layers; l++) {
            if (x->ev_layer[l] != NULL) {
                x->be->ops->event_destroy(x->be, x->ev_layer[l]);
            }
            if (x->ev_stage != NULL && x->ev_stage[l] != NULL) {
                x->be->ops->event_destroy(x->be, x->ev_stage[l]);
            }
        }
    }
    lkv_fwd_destroy(&x->fwd);
    lkv_seq_table_destroy(&x->tab);
    lkv_kv_pool_destroy(&x->pool);
    free(x->polled);
    free(x->agree);
    free(x->agree_slot);
    free(x->slots);
    free(x->slot_blocks);
    free(x->ev_layer);
    free(x->ev_stage);
    free(x->stage_owner);
    free(x->stage_owner_gen);
    free(x->bseqs);
    free(x->bent);
    free(x->bplan);
    free(x->pstatus);
    free(x->sparams);
    free(x->srng);
    free(x->stokens);
    free(x->sbatch);
    free(x->rseqs);
    free(x->rdone);
    free(x->rfailed);
    free(x);
    *x_p = NULL;
}

lkv_fwd_t *lkv_step_exec_forward(lkv_step_exec_t *x)
{
    return x->fwd;
}

void lkv_step_exec_stats(const lkv_step_exec_t *x,
                         lkv_step_exec_stats_t *stats_p)
{
    lkv_kv_mover_stats_t ms;

    *stats_p = x->stats;
    lkv_kv_mover_stats(x->mover, &ms);
    stats_p->d2h_busy_ns =
        (int64_t)ms.busy_ns[LKV_KV_TIER_DEVICE][LKV_KV_TIER_HOST];
    stats_p->h2d_busy_ns =
        (int64_t)ms.busy_ns[LKV_KV_TIER_HOST][LKV_KV_TIER_DEVICE];
}

int lkv_step_exec_moves_in_flight(const lkv_step_exec_t *x)
{
    int n = 0;

    for (int i = 0; i < x->n_slots; i++) {
        n += x->slots[i].used;
    }
    return n;
}

/* Host wait for a transfer (NULL: none). */
static void xfer_wait(lkv_step_exec_t *x, lkv_kv_xfer_t *xf)
{
    if (xf != NULL) {
        lkv_kv_mover_wait(x->mover, xf);
    }
}

lkv_status_t lkv_step_exec_sync(lkv_step_exec_t *x)
{
    for (int i = 0; i < x->n_slots; i++) {
        move_slot_t *s = &x->slots[i];
        /* handles stay valid until the poll in finish_step reports them,
         * and a slot with reported handles is complete (not used) */
        if (s->used && s->started && s->n_pending > 0) {
            xfer_wait(x, s->xin);
            if (s->xwb != NULL) {
                lkv_kv_mover_wait(x->mover, s->xwb);
            }
        }
    }
    return LKV_OK;
}

/* ---- copies ---- */

static int32_t tier_blocks(const lkv_step_exec_t *x, int tier)
{
    return tier == LKV_KV_TIER_DEVICE || tier == LKV_KV_TIER_HOST ||
                   tier == LKV_KV_TIER_REMOTE
               ? lkv_kv_pool_n_blocks(x->pool, (lkv_kv_tier_t)tier)
               : 0;
}

/* Submit a transfer of n blocks from (src_tier, src) to (dst_tier, dst) for
 * slot s, after event `after` (or at once). */
static lkv_status_t submit(lkv_step_exec_t *x, move_slot_t *s, int src_tier,
                           const int32_t *src, int dst_tier,
                           const int32_t *dst, int n, lkv_kern_event_t *after,
                           lkv_kv_xfer_t **xf_p)
{
    lkv_kv_mover_req_t r;

    r.tag      = (uint64_t)(s - x->slots);
    r.src_tier = (lkv_kv_tier_t)src_tier;
    r.dst_tier = (lkv_kv_tier_t)dst_tier;
    r.n_blocks = n;
    r.src      = src;
    r.dst      = dst;
    r.after    = after;
    LKV_CHECK(lkv_kv_mover_submit(x->mover, &r, xf_p));
    s->n_pending++;
    if (dst_tier == LKV_KV_TIER_DEVICE) {
        x->step_h2d += (int64_t)n * (int64_t)x->block_bytes;
    } else {
        x->step_d2h += (int64_t)n * (int64_t)x->block_bytes;
    }
    return LKV_OK;
}

static lkv_status_t slot_start(lkv_step_exec_t *x, move_slot_t *s,
                               lkv_kern_event_t *after)
{
    if (s->n_in <= 0) {
        s->xin     = NULL; /* nothing to copy in */
        s->started = true;
        return LKV_OK;
    }
    LKV_CHECK(submit(x, s, s->src_tier, s->src, s->dst_tier, s->dst,
                     s->n_in, after, &s->xin));
    s->started = true;
    return LKV_OK;
}


/* Make the compute queue wait for the slot's inbound copy. */
static lkv_status_t wait_in(lkv_step_exec_t *x, move_slot_t *s)
{
    if (s->xin == NULL) {
        return LKV_OK; /* a stage with nothing to copy in */
    }
    lkv_kern_event_t *ev = lkv_kv_mover_event(s->xin);

    if (ev != NULL) {
        return LKV_KERN_CALL(x->be, queue_wait, LKV_KERN_QUEUE_COMPUTE, ev);
    }
    return lkv_kv_mover_wait(x->mover, s->xin);
}

static void report_done(lkv_step_exec_t *x, move_slot_t *s)
{
    x->rdone[x->n_done++] = s->move_id;
    s->used               = false;
}

static void report_failed(lkv_step_exec_t *x, move_slot_t *s)
{
    x->rfailed[x->n_failed++] = s->move_id;
    s->used                   = false;
}

/* A completed move: the layer's table follows it. */
static void slot_complete(lkv_step_exec_t *x, move_slot_t *s)
{
    lkv_seq_entry_t *e = s->orphan ? NULL
                                   : lkv_seq_table_find(x->tab, s->seq_id);

    if (e != NULL) {
        lkv_seq_layer_t *ly = &e->layers[s->layer];
        switch (s->kind) {
        case LKV_PLAN_MOVE_OFFLOAD:
            lkv_seq_table_set(x->tab, e, s->layer, s->dst_tier, s->dst,
                              s->n_blocks);
            ly->offload_slot = -1;
            break;
        case LKV_PLAN_MOVE_RELOAD:
            if (!s->applied) {
                lkv_seq_table_set(x->tab, e, s->layer, s->dst_tier, s->dst,
                                  s->n_blocks);
            }
            ly->reload_slot = -1;
            break;
        default:
            ly->stage_slot = -1;
            break;
        }
    }
    report_done(x, s);
}

/* ---- plan application ---- */

static bool blocks_ok(const lkv_step_exec_t *x, int tier, const int32_t *b,
                      int n)
{
    int32_t cap = tier_blocks(x, tier);

    if (b == NULL && n > 0) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (b[i] < 0 || b[i] >= cap) {
            return false;
        }
    }
    return true;
}

static lkv_status_t check_appends(lkv_step_exec_t *x,
                                  const lkv_step_plan_t *p)
{
    int nl = x->m->cfg.n_layers;

    for (int i = 0; i < p->n_appends; i++) {
        const lkv_plan_append_t *a = &p->appends[i];

        if (a->layer < 0 || a->layer >= nl || a->n_blocks < 0 ||
            (a->tier != LKV_KV_TIER_DEVICE && a->tier != LKV_KV_TIER_HOST &&
             a->tier != LKV_KV_TIER_REMOTE) ||
            !blocks_ok(x, a->tier, a->blocks, a->n_blocks)) {
            LKV_LOG_ERROR("step %llu: invalid append %d (seq %llu, layer %d, "
                          "tier %d, %d blocks): layer or block index out of "
                          "range",
                          (unsigned long long)p->step_id, i,
                          (unsigned long long)a->seq_id, a->layer, a->tier,
                          a->n_blocks);
            return LKV_ERR_INVALID;
        }
        lkv_seq_entry_t *e = lkv_seq_table_find(x->tab, a->seq_id);
        if (e != NULL) {
            const lkv_seq_layer_t *ly = &e->layers[a->layer];
            if ((ly->n_blocks > 0 && ly->tier != a->tier) ||
                ly->n_blocks + a->n_blocks > x->cfg.max_blocks_per_layer ||
                ly->reload_slot >= 0 || ly->offload_slot >= 0) {
                LKV_LOG_ERROR("step %llu: append of %d %s blocks to layer %d "
                              "of seq %llu does not fit its table (%d blocks "
                              "in tier %d%s)",
                              (unsigned long long)p->step_id, a->n_blocks,
                              lkv_kv_tier_name(a->tier), a->layer,
                              (unsigned long long)a->seq_id, ly->n_blocks,
                              ly->tier,
                              ly->reload_slot >= 0 || ly->offload_slot >= 0
                                  ? ", moving"
                                  : "");
                return LKV_ERR_INVALID;
            }
        }
    }
    return LKV_OK;
}

static move_slot_t *slot_alloc(lkv_step_exec_t *x)
{
    for (int i = 0; i < x->n_slots; i++) {
        if (!x->slots[i].used) {
            move_slot_t *s = &x->slots[i];
            s->used        = true;
            s->started     = false;
            s->applied     = false;
            s->orphan      = false;
            s->held        = false;
            return s;
        }
    }
    return NULL;
}

static int slot_index(const lkv_step_exec_t *x, const move_slot_t *s)
{
    return (int)(s - x->slots);
}

/* Register one move. Stages and reloads start in start_inbound(), offloads
 * after their layer's kv_write (kv_done hook) or at the end of the step when
 * the batch does not compute the layer. A move that cannot run is reported
 * failed. */
static void add_move(lkv_step_exec_t *x, const lkv_plan_move_t *mv)
{
    int              nl = x->m->cfg.n_layers;
    lkv_seq_entry_t *e  = lkv_seq_table_find(x->tab, mv->seq_id);
    move_slot_t     *s;
    const char      *why = NULL;

    s = slot_alloc(x);
    if (s == NULL) {
        LKV_LOG_ERROR("move %llu: no free move slot (%d in flight)",
                      (unsigned long long)mv->move_id, x->n_slots);
        x->rfailed[x->n_failed++] = mv->move_id;
        return;
    }
    s->move_id  = mv->move_id;
    s->seq_id   = mv->seq_id;
    s->layer    = mv->layer;
    s->kind     = mv->kind;
    s->src_tier = mv->src_tier;
    s->dst_tier = mv->dst_tier;
    s->n_blocks = mv->n_blocks;

    lkv_seq_layer_t *ly = NULL;
    if (e == NULL) {
        why = "unknown sequence";
    } else if (mv->layer < 0 || mv->layer >= nl) {
        why = "no such layer";
    } else if (mv->n_blocks <= 0 ||
               mv->n_blocks > x->cfg.max_blocks_per_layer ||
               !blocks_ok(x, mv->src_tier, mv->src, mv->n_blocks) ||
               !blocks_ok(x, mv->dst_tier, mv->dst, mv->n_blocks)) {
        why = "block index outside its pool (or the remote tier, which this "
              "worker does not have)";
    } else {
        ly = &e->layers[mv->layer];
        if (ly->stage_slot >= 0 || ly->reload_slot >= 0 ||
            ly->offload_slot >= 0) {
            why = "layer already has a move in flight";
        } else if (ly->tier != mv->src_tier || ly->n_blocks != mv->n_blocks) {
            why = "source does not match the layer's table";
        } else if (mv->kind == LKV_PLAN_MOVE_OFFLOAD &&
                   !(mv->src_tier == LKV_KV_TIER_DEVICE &&
                     (mv->dst_tier == LKV_KV_TIER_HOST ||
                      mv->dst_tier == LKV_KV_TIER_REMOTE))) {
            why = "offload must go device -> host or remote";
        } else if ((mv->kind == LKV_PLAN_MOVE_RELOAD ||
                    mv->kind == LKV_PLAN_MOVE_STAGE) &&
                   !((mv->src_tier == LKV_KV_TIER_HOST ||
                      mv->src_tier == LKV_KV_TIER_REMOTE) &&
                     mv->dst_tier == LKV_KV_TIER_DEVICE)) {
            why = "reload and stage must go host or remote -> device";
        } else if (mv->kind > LKV_PLAN_MOVE_STAGE) {
            why = "unknown move kind";
        }
    }
    if (why != NULL) {
        LKV_LOG_ERROR("move %llu (seq %llu, layer %d, kind %d) cannot run: %s",
                      (unsigned long long)mv->move_id,
                      (unsigned long long)mv->seq_id, mv->layer, mv->kind,
                      why);
        report_failed(x, s);
        return;
    }
    s->n_pending = 0;
    s->failed    = false;
    s->xin       = NULL;
    s->xwb       = NULL;
    s->dep       = -1;
    s->n_in      = mv->n_blocks;
    memcpy(s->src, mv->src, (size_t)mv->n_blocks * sizeof(int32_t));
    memcpy(s->dst, mv->dst, (size_t)mv->n_blocks * sizeof(int32_t));
    int idx = slot_index(x, s);
    switch (mv->kind) {
    case LKV_PLAN_MOVE_OFFLOAD:
        ly->offload_slot = idx; /* started by kv_done or at step start */
        x->stats.n_offloads++;
        break;
    case LKV_PLAN_MOVE_RELOAD:
        ly->reload_slot = idx;
        x->stats.n_reloads++;
        break;
    default:
        ly->stage_slot = idx;
        x->stats.n_stages++;
        break;
    }
}

/* Block-level hazard tracking for staging rings: a STAGE whose destination
 * blocks an earlier-layer STAGE of this step also uses (the scheduler's
 * staging window reuses one set of device blocks layer after layer) must not
 * copy in before that stage's layer has run and its write-back has read the
 * blocks. Records the latest such stage in s->dep; called in layer order. */
static void stage_track(lkv_step_exec_t *x, move_slot_t *s)
{
    int idx = slot_index(x, s);

    s->dep = -1;
    for (int k = 0; k < s->n_blocks; k++) {
        int32_t b = s->dst[k]; /* checked against the pool in add_move */
        if (x->stage_owner_gen[b] == x->stage_gen &&
            x->stage_owner[b] != idx) {
            s->dep = x->stage_owner[b];
        }
        x->stage_owner[b]     = idx;
        x->stage_owner_gen[b] = x->stage_gen;
    }
}

/* Start deferred stage s once its predecessor on the same staging blocks is
 * done with them: the compute queue (which already holds the predecessor's
 * layer) waits for the predecessor's write-back, and the copy-in starts after
 * that point of the compute queue. `host` = wait on the host instead (end of
 * step, nothing more to overlap). */
static lkv_status_t stage_start_deferred(lkv_step_exec_t *x, move_slot_t *s,
                                         bool host)
{
    move_slot_t      *t     = &x->slots[s->dep];
    lkv_kern_event_t *after = NULL;

    if (t->used && t->kind == LKV_PLAN_MOVE_STAGE && t->started &&
        t->n_pending > 0) {
        lkv_kv_xfer_t    *last = t->xwb != NULL ? t->xwb : t->xin;
        lkv_kern_event_t *ev   = host || last == NULL
                                     ? NULL
                                     : lkv_kv_mover_event(last);
        if (ev != NULL) {
            LKV_CHECK(LKV_KERN_CALL(x->be, queue_wait, LKV_KERN_QUEUE_COMPUTE,
                                    ev));
        } else {
            xfer_wait(x, t->xin);
            if (t->xwb != NULL) {
                lkv_kv_mover_wait(x->mover, t->xwb);
            }
        }
    }
    if (!host) {
        after = x->ev_stage[s->layer];
        LKV_CHECK(LKV_KERN_CALL(x->be, event_record, after,
                                LKV_KERN_QUEUE_COMPUTE));
    } else {
        LKV_CHECK(LKV_KERN_CALL(x->be, sync, LKV_KERN_QUEUE_COMPUTE));
    }
    LKV_CHECK(slot_start(x, s, after));
    s->dep = -1;
    return LKV_OK;
}

/* Queue the inbound copies registered by this plan: STAGE moves first, in
 * layer order (the forward pass needs layer 0's first; a stage reusing an
 * earlier stage's staging blocks is deferred, see stage_track), then RELOADs
 * (the background ones). */
static void start_inbound(lkv_step_exec_t *x, const lkv_step_plan_t *p)
{
    int nl = x->m->cfg.n_layers;

    x->stage_gen++;

    for (int pass = 0; pass < 2; pass++) {
        uint8_t kind = pass == 0 ? LKV_PLAN_MOVE_STAGE : LKV_PLAN_MOVE_RELOAD;
        for (int l = 0; l < nl; l++) {
            for (int i = 0; i < x->n_slots; i++) {
                move_slot_t *s = &x->slots[i];
                if (!s->used || s->started || s->kind != kind ||
                    s->layer != l) {
                    continue;
                }
                if (kind == LKV_PLAN_MOVE_STAGE) {
                    /* a sequence's first chunk writes every block of the
                     * layer in this step: nothing to copy in (sim/sim_exec.c
                     * models the same rule) */
                    for (int k = 0; k < p->n_seqs; k++) {
                        if (p->seqs[k].seq_id == s->seq_id) {
                            if (p->seqs[k].pos0 == 0) {
                                s->n_in = 0;
                            }
                            break;
                        }
                    }
                    stage_track(x, s);
                    if (s->dep >= 0) {
                        continue; /* started by hook_before(l) */
                    }
                }
                if (slot_start(x, s, NULL) == LKV_OK) {
                    continue;
                }
                /* the mover queued nothing (all-or-nothing submit) */
                LKV_LOG_ERROR("move %llu: queueing its copies failed",
                              (unsigned long long)s->move_id);
                lkv_seq_entry_t *e = lkv_seq_table_find(x->tab, s->seq_id);
                if (e != NULL) {
                    if (kind == LKV_PLAN_MOVE_RELOAD) {
                        e->layers[l].reload_slot = -1;
                    } else {
                        e->layers[l].stage_slot = -1;
                    }
                }
                report_failed(x, s);
            }
        }
    }
}

/* ---- forward hooks ---- */

static lkv_status_t hook_table(void *ctx, int si, int layer,
                               const int32_t **blocks_p, int *n_p)
{
    lkv_step_exec_t *x  = ctx;
    lkv_seq_layer_t *ly = &x->bent[si]->layers[layer];

    if (ly->stage_slot >= 0) {
        const move_slot_t *s = &x->slots[ly->stage_slot];
        *blocks_p            = s->dst;
        *n_p                 = s->n_blocks;
        return LKV_OK;
    }
    if (ly->n_blocks > 0 && ly->tier == LKV_KV_TIER_DEVICE) {
        *blocks_p = ly->blocks;
        *n_p      = ly->n_blocks;
        return LKV_OK;
    }
    if (ly->reload_slot >= 0 && x->pstatus[x->bplan[si]] != LKV_OK) {
        /* its reload failed: compute on the reserved blocks, the sequence's
         * result is discarded */
        const move_slot_t *s = &x->slots[ly->reload_slot];
        *blocks_p            = s->dst;
        *n_p                 = s->n_blocks;
        return LKV_OK;
    }
    LKV_LOG_ERROR("layer %d of seq %llu is not on the device and the plan "
                  "neither reloads nor stages it",
                  layer, (unsigned long long)x->bent[si]->seq_id);
    return LKV_ERR_INVALID;
}

static lkv_status_t hook_before(void *ctx, int layer)
{
    lkv_step_exec_t *x = ctx;
    int              n = 0;

    for (int i = 0; i < x->cfg.max_seqs && x->bent[i] != NULL; i++) {
        n = i + 1;
    }
    for (int i = 0; i < n; i++) {
        lkv_seq_layer_t *ly = &x->bent[i]->layers[layer];
        lkv_status_t     st = LKV_OK;
        if (x->pstatus[x->bplan[i]] != LKV_OK) {
            continue; /* already failed: computes on staging garbage */
        }
        if (ly->stage_slot >= 0 && !x->slots[ly->stage_slot].started) {
            st = stage_start_deferred(x, &x->slots[ly->stage_slot], false);
        }
        if (st == LKV_OK && ly->stage_slot >= 0) {
            st = wait_in(x, &x->slots[ly->stage_slot]);
        }
        if (st == LKV_OK && ly->reload_slot >= 0 &&
            !x->slots[ly->reload_slot].applied) {
            st = wait_in(x, &x->slots[ly->reload_slot]);
        }
        if (st != LKV_OK) {
            /* a copy into this layer failed (e.g. a kvnode died): only this
             * sequence fails; the rest of the batch goes on */
            LKV_LOG_ERROR("seq %llu: layer %d did not arrive: %s",
                          (unsigned long long)x->bent[i]->seq_id, layer,
                          lkv_status_str(st));
            x->pstatus[x->bplan[i]] = st;
            continue;
        }
        if (ly->reload_slot >= 0 && !x->slots[ly->reload_slot].applied) {
            move_slot_t *s = &x->slots[ly->reload_slot];
            LKV_CHECK(lkv_seq_table_set(x->tab, x->bent[i], layer,
                                        s->dst_tier, s->dst, s->n_blocks));
            s->applied = true;
        }
    }
    return LKV_OK;
}

static lkv_status_t hook_kv_done(void *ctx, int layer)
{
    lkv_step_exec_t *x        = ctx;
    bool             recorded = false;

    for (int i = 0; i < x->cfg.max_seqs && x->bent[i] != NULL; i++) {
        lkv_seq_layer_t     *ly = &x->bent[i]->layers[layer];
        const lkv_fwd_seq_t *q  = &x->bseqs[i];

        if (ly->offload_slot < 0 && ly->stage_slot < 0) {
            continue;
        }
        if (!recorded) {
            /* the copies of layer l start after its kv_write */
            LKV_CHECK(LKV_KERN_CALL(x->be, event_record, x->ev_layer[layer],
                                    LKV_KERN_QUEUE_COMPUTE));
            recorded = true;
        }
        if (ly->offload_slot >= 0 && !x->slots[ly->offload_slot].started) {
            move_slot_t *s = &x->slots[ly->offload_slot];
            if (slot_start(x, s, x->ev_layer[layer]) != LKV_OK) {
                /* the layer stays on the device; compute goes on */
                LKV_LOG_ERROR("move %llu: queueing the offload of layer %d "
                              "failed",
                              (unsigned long long)s->move_id, layer);
                ly->offload_slot = -1;
                report_failed(x, s);
            }
        }
        if (ly->stage_slot >= 0) {
            /* write the staged blocks that got new tokens back home */
            move_slot_t *s  = &x->slots[ly->stage_slot];
            int          bs = x->cfg.block_size;
            int          i0 = q->pos0 / bs;
            int          i1 = (q->pos0 + q->n_tokens - 1) / bs + 1;
            if (i1 > s->n_blocks) {
                i1 = s->n_blocks;
            }
            if (i1 > i0 &&
                submit(x, s, s->dst_tier, s->dst + i0, s->src_tier,
                       s->src + i0, i1 - i0, x->ev_layer[layer],
                       &s->xwb) != LKV_OK) {
                /* the home copy misses this step's tokens: the stage fails
                 * (reported at the end of the step) */
                LKV_LOG_ERROR("move %llu: write-back of streamed layer %d "
                              "failed",
                              (unsigned long long)s->move_id, layer);
                s->failed = true;
            }
        }
    }
    return LKV_OK;
}

/* ---- the step ---- */

/* Wait for the started OFFLOAD and STAGE copies (and stage write-backs):
 * they end with the step; RELOADs run on in the background. */
static void wait_step_copies(lkv_step_exec_t *x)
{
    for (int i = 0; i < x->n_slots; i++) {
        move_slot_t *s = &x->slots[i];
        if (s->used && s->started && s->kind != LKV_PLAN_MOVE_RELOAD &&
            s->n_pending > 0) {
            xfer_wait(x, s->xin);
            if (s->xwb != NULL) {
                lkv_kv_mover_wait(x->mover, s->xwb);
            }
        }
    }
}

/* TP/PP peers: a background reload is reported only in the step where it is
 * done on every rank of the instance. Otherwise the leader could report a
 * reload that a peer is still copying, and the next move the coordinator
 * plans for that layer would find the peer's layer busy. All ranks run the
 * same plans, so they hold the same reloads; they agree on them in move-id
 * order (a done flag: minimum; a failed flag, negated: maximum). Reloads not
 * done everywhere are held for a later step. */
static void agree_reloads(lkv_step_exec_t *x)
{
    struct lkv_comm *c = x->m->comm;
    int              n = 0;

    if (c == NULL || lkv_comm_tp_size(c) * lkv_comm_pp_size(c) == 1) {
        return;
    }
    for (int i = 0; i < x->n_slots; i++) {
        const move_slot_t *s = &x->slots[i];
        if (!s->used || s->kind != LKV_PLAN_MOVE_RELOAD) {
            continue;
        }
        int k = n++;
        while (k > 0 && x->slots[x->agree_slot[k - 1]].move_id > s->move_id) {
            x->agree_slot[k] = x->agree_slot[k - 1];
            k--;
        }
        x->agree_slot[k] = i;
    }
    x->agree[0] = n;
    x->agree[1] = -n;
    if (lkv_comm_inst_allreduce_min(c, x->agree, 2) != LKV_OK) {
        return; /* MPI failed: the peers are gone, nothing to agree with */
    }
    if (x->agree[0] != -x->agree[1]) {
        if (!x->agree_broken) {
            LKV_LOG_ERROR("TP/PP peers hold different reloads (%d to %d in "
                          "flight); reloads are reported as each rank sees "
                          "them",
                          x->agree[0], -x->agree[1]);
            x->agree_broken = true;
        }
        return;
    }
    for (int k = 0; k < n; k++) {
        const move_slot_t *s = &x->slots[x->agree_slot[k]];
        x->agree[2 * k]      = s->started && s->n_pending == 0 ? 1 : 0;
        x->agree[2 * k + 1]  = s->failed ? -1 : 0;
    }
    if (lkv_comm_inst_allreduce_min(c, x->agree, 2 * n) != LKV_OK) {
        return;
    }
    for (int k = 0; k < n; k++) {
        move_slot_t *s = &x->slots[x->agree_slot[k]];
        s->held        = x->agree[2 * k] == 0;
        if (x->agree[2 * k + 1] != 0) {
            s->failed = true; /* failed on a peer: fails everywhere */
        }
    }
}

static void finish_step(lkv_step_exec_t *x, const lkv_step_plan_t *p,
                        lkv_step_result_t *res, int64_t t0)
{
    /* offloads whose layer was not computed (sequence not in the batch, or
     * a failed pass): run them now so the source blocks are not left
     * pinned */
    for (int i = 0; i < x->n_slots; i++) {
        move_slot_t *s = &x->slots[i];
        if (s->used && !s->started && s->kind == LKV_PLAN_MOVE_OFFLOAD) {
            if (slot_start(x, s, NULL) != LKV_OK) {
                lkv_seq_entry_t *e = lkv_seq_table_find(x->tab, s->seq_id);
                if (e != NULL) {
                    e->layers[s->layer].offload_slot = -1;
                }
                report_failed(x, s);
            }
        }
    }
    /* the step's offloads and stages end with the step */
    wait_step_copies(x);
    /* deferred stages whose layer did not run (sequence failed or not in
     * the batch): copy in now, in layer order, once every earlier copy is
     * done, so they complete normally */
    for (int l = 0; l < x->m->cfg.n_layers; l++) {
        for (int i = 0; i < x->n_slots; i++) {
            move_slot_t *s = &x->slots[i];
            if (!s->used || s->started || s->kind != LKV_PLAN_MOVE_STAGE ||
                s->layer != l) {
                continue;
            }
            if (s->dep < 0 || stage_start_deferred(x, s, true) != LKV_OK) {
                lkv_seq_entry_t *e = s->orphan
                                         ? NULL
                                         : lkv_seq_table_find(x->tab, s->seq_id);
                if (e != NULL) {
                    e->layers[s->layer].stage_slot = -1;
                }
                report_failed(x, s);
            }
        }
    }
    /* ... and the deferred ones just started */
    wait_step_copies(x);
    /* collect finished transfers (reloads when they are done) */
    for (;;) {
        int n = 0;
        lkv_kv_mover_poll(x->mover, x->polled, x->n_slots * 2, &n);
        for (int k = 0; k < n; k++) {
            move_slot_t *s = &x->slots[x->polled[k].tag];
            s->n_pending--;
            if (x->polled[k].status != LKV_OK) {
                s->failed = true;
            }
        }
        if (n < x->n_slots * 2) {
            break;
        }
    }
    agree_reloads(x);
    for (int i = 0; i < x->n_slots; i++) {
        move_slot_t *s = &x->slots[i];
        if (!s->used || !s->started || s->n_pending > 0 || s->held) {
            continue;
        }
        if (s->failed) {
            LKV_LOG_ERROR("move %llu (seq %llu, layer %d): copy failed",
                          (unsigned long long)s->move_id,
                          (unsigned long long)s->seq_id, s->layer);
            lkv_seq_entry_t *e = s->orphan
                                     ? NULL
                                     : lkv_seq_table_find(x->tab, s->seq_id);
            if (e != NULL) {
                lkv_seq_layer_t *ly = &e->layers[s->layer];
                if (s->kind == LKV_PLAN_MOVE_OFFLOAD) {
                    ly->offload_slot = -1; /* the layer stays on the device */
                } else if (s->kind == LKV_PLAN_MOVE_RELOAD) {
                    ly->reload_slot = -1;
                    if (s->applied) { /* back to the host copy */
                        lkv_seq_table_set(x->tab, e, s->layer, s->src_tier,
                                          s->src, s->n_blocks);
                    }
                } else {
                    ly->stage_slot = -1;
                }
            }
            report_failed(x, s);
            continue;
        }
        slot_complete(x, s);
    }
    int64_t t1          = lkv_now_ns();
    res->step_id        = p->step_id;
    res->n_moves_done   = x->n_done;
    res->moves_done     = x->rdone;
    res->n_moves_failed = x->n_failed;
    res->moves_failed   = x->rfailed;
    res->step_ns        = t1 - t0;
    res->bytes_d2h      = x->step_d2h;
    res->bytes_h2d      = x->step_h2d;
    x->stats.bytes_d2h += x->step_d2h;
    x->stats.bytes_h2d += x->step_h2d;
    x->stats.steps++;
    x->stats.step_ns += t1 - t0;
    x->stats.compute_ns += res->compute_ns;
}

lkv_status_t lkv_step_exec_run(lkv_step_exec_t *x, const lkv_step_plan_t *p,
                               lkv_step_result_t *res)
{
    int64_t      t0 = lkv_now_ns();
    lkv_status_t st = LKV_OK;
    int          nb = 0;
    int          nl = x->m->cfg.n_layers;

    memset(res, 0, sizeof(*res));
    res->step_id  = p->step_id;
    res->seqs     = x->rseqs;
    x->n_done     = 0;
    x->n_failed   = 0;
    x->step_d2h   = 0;
    x->step_h2d   = 0;
    res->n_seqs   = 0;
    if (x->m->comm != NULL) {
        /* tensor/pipeline peers run this plan too (worker/comm.h) */
        st = lkv_comm_plan_send(x->m->comm, p);
        if (st != LKV_OK) {
            res->status = st;
            return st;
        }
    }
    if (p->n_seqs < 0 || p->n_seqs > x->cfg.max_seqs ||
        (p->n_seqs > 0 && p->seqs == NULL) || p->n_appends < 0 ||
        p->n_moves < 0 || p->n_finished < 0) {
        LKV_LOG_ERROR("step %llu: invalid plan (%d sequences, limit %d)",
                      (unsigned long long)p->step_id, p->n_seqs,
                      x->cfg.max_seqs);
        res->status = LKV_ERR_INVALID;
        return LKV_ERR_INVALID;
    }
    /* finished sequences go first, so their table entries are free for the
     * sequences this plan starts; copies still reading their blocks live in
     * move slots (their own block lists) and become orphans */
    for (int i = 0; i < p->n_finished; i++) {
        for (int j = 0; j < x->n_slots; j++) {
            if (x->slots[j].used && x->slots[j].seq_id == p->finished[i]) {
                x->slots[j].orphan = true;
            }
        }
        lkv_seq_table_remove(x->tab, p->finished[i]);
    }
    st = check_appends(x, p);
    if (st != LKV_OK) {
        res->status = st;
        return st;
    }
    for (int i = 0; i < p->n_appends; i++) {
        const lkv_plan_append_t *a = &p->appends[i];
        lkv_seq_entry_t         *e;

        st = lkv_seq_table_get(x->tab, a->seq_id, &e);
        if (st == LKV_OK) {
            st = lkv_seq_table_append(x->tab, e, a->layer, a->tier,
                                      a->blocks, a->n_blocks);
        }
        if (st != LKV_OK) {
            res->status = st;
            return st;
        }
    }
    for (int i = 0; i < p->n_moves; i++) {
        add_move(x, &p->moves[i]);
    }
    if (p->n_moves > 0) {
        start_inbound(x, p);
    }

    /* the batch: sequences whose every layer can be computed */
    memset(x->bent, 0, (size_t)x->cfg.max_seqs * sizeof(*x->bent));
    for (int i = 0; i < p->n_seqs; i++) {
        const lkv_plan_seq_t *q = &p->seqs[i];
        lkv_seq_entry_t      *e = lkv_seq_table_find(x->tab, q->seq_id);

        x->pstatus[i] = LKV_OK;
        if (e == NULL) {
            LKV_LOG_ERROR("step %llu: seq %llu has no kv blocks",
                          (unsigned long long)p->step_id,
                          (unsigned long long)q->seq_id);
            x->pstatus[i] = LKV_ERR_INVALID;
            continue;
        }
        for (int j = 0; j < nb; j++) {
            if (x->bent[j] == e) {
                LKV_LOG_ERROR("step %llu: seq %llu appears twice",
                              (unsigned long long)p->step_id,
                              (unsigned long long)q->seq_id);
                x->pstatus[i] = LKV_ERR_INVALID;
            }
        }
        for (int l = 0; l < nl && x->pstatus[i] == LKV_OK; l++) {
            const lkv_seq_layer_t *ly = &e->layers[l];
            if (!(ly->tier == LKV_KV_TIER_DEVICE && ly->n_blocks > 0) &&
                ly->stage_slot < 0 && ly->reload_slot < 0) {
                LKV_LOG_ERROR("step %llu: layer %d of seq %llu is not on the "
                              "device and the plan neither reloads nor "
                              "stages it",
                              (unsigned long long)p->step_id, l,
                              (unsigned long long)q->seq_id);
                x->pstatus[i] = LKV_ERR_INVALID;
            }
        }
        if (x->pstatus[i] != LKV_OK) {
            continue;
        }
        x->bent[nb]           = e;
        x->bplan[nb]          = i;
        x->bseqs[nb].n_tokens = q->n_tokens;
        x->bseqs[nb].tokens   = q->tokens;
        x->bseqs[nb].pos0     = q->pos0;
        x->bseqs[nb].n_logits = q->sample ? 1 : 0;
        nb++;
    }

    if (nb > 0) {
        lkv_fwd_batch_t b;
        int             n_rows = 0;
        int64_t         tc     = lkv_now_ns();

        b.n_seqs       = nb;
        b.seqs         = x->bseqs;
        b.kv_pool      = x->dev_pool;
        b.table        = hook_table;
        b.before_layer = hook_before;
        b.kv_done      = hook_kv_done;
        b.ctx          = x;
        st             = lkv_fwd_run(x->fwd, &b, &n_rows);
        if (st == LKV_OK && n_rows > 0) {
            int r = 0;
            for (int j = 0; j < nb; j++) {
                if (x->bseqs[j].n_logits == 0) {
                    continue;
                }
                const lkv_plan_sampling_t *sp =
                    &p->seqs[x->bplan[j]].sampling;
                lkv_seq_entry_t *e = x->bent[j];
                if (!e->rng_init) {
                    e->rng      = sp->seed;
                    e->rng_init = true;
                }
                x->sparams[r].temperature = sp->temperature;
                x->sparams[r].top_k       = sp->top_k;
                x->sparams[r].top_p       = sp->top_p;
                x->sparams[r].seed        = sp->seed;
                x->srng[r]                = e->rng;
                x->sbatch[r]              = j;
                r++;
            }
            st = LKV_KERN_CALL(x->be, sample, x->stokens,
                               lkv_fwd_logits(x->fwd), r,
                               x->m->cfg.vocab_size, x->sparams, x->srng);
            if (st == LKV_OK) {
                for (int k = 0; k < r; k++) {
                    x->bent[x->sbatch[k]]->rng = x->srng[k];
                }
            }
        }
        res->compute_ns = lkv_now_ns() - tc;
        if (st != LKV_OK) {
            LKV_LOG_ERROR("step %llu: forward pass failed: %s",
                          (unsigned long long)p->step_id,
                          lkv_status_str(st));
        }
    }

    /* per-sequence results in plan order */
    for (int i = 0; i < p->n_seqs; i++) {
        x->rseqs[i].seq_id = p->seqs[i].seq_id;
        x->rseqs[i].token  = -1;
        x->rseqs[i].status = x->pstatus[i] != LKV_OK ? x->pstatus[i] : st;
    }
    if (st == LKV_OK) {
        int r = 0;
        for (int j = 0; j < nb; j++) {
            if (x->bseqs[j].n_logits > 0) {
                x->rseqs[x->bplan[j]].token = x->stokens[r++];
            }
        }
    }
    res->n_seqs = p->n_seqs;
    finish_step(x, p, res, t0);
    res->status = st;
    return st;
}
