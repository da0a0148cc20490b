/* sim_exec.c - see sim_exec.h. Arrays grow geometrically and are reused, so
 * steady-state steps do not allocate. */
#define LKV_LOG_MODULE "sim"
#include "sim/sim_exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef struct {
    uint64_t move_id;
    int64_t  done_ns;
} pending_t;

typedef struct {
    int32_t layer;
    int32_t kind;
    int32_t idx;  /* index into plan->moves */
    int32_t dep;  /* STAGE reusing the staging blocks of an earlier stage of
                     this step (a staging ring): that stage's mref, else -1 */
    int32_t n_in; /* STAGE: blocks copied in (0 when the sequence's first
                     chunk runs this step, as in the worker) */
    int64_t wb_end; /* STAGE: when its write-back ends (this step) */
} mref_t;

struct lkv_sim_exec {
    lkv_sim_exec_config_t cfg;
    int                   n_layers;
    int64_t               block_bytes;
    int64_t               d2h_free_ns, h2d_free_ns; /* link busy until */
    pending_t            *pend;
    int                   n_pend, cap_pend;
    lkv_result_seq_t     *rseqs;
    int                   cap_rseqs;
    uint64_t             *done;
    int                   cap_done;
    mref_t               *mrefs;
    int                   cap_mrefs;
    int64_t              *stage_done; /* (n_layers) */
    /* seq_id -> n_tokens of this step, open addressing (power of two) */
    uint64_t            *hkeys;
    int32_t             *hvals;
    int32_t             *hpos; /* pos0 of the seq this step */
    int                  hcap;
    /* staging block -> mref of the latest stage into it (this step) */
    int32_t             *bkeys, *bvals;
    int                  bcap;
    lkv_sim_exec_stats_t stats;
};

static lkv_status_t grow(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap) {
        return LKV_OK;
    }
    int n = *cap > 0 ? *cap : 64;
    while (n < need) {
        n *= 2;
    }
    void *q = realloc(*p, (size_t)n * elem);
    if (q == NULL) {
        return LKV_ERR_NOMEM;
    }
    *p   = q;
    *cap = n;
    return LKV_OK;
}

lkv_status_t lkv_sim_exec_create(const lkv_sim_exec_config_t *cfg,
                                 lkv_sim_exec_t             **e_p)
{
    if (cfg == NULL || cfg->cost == NULL || e_p == NULL ||
        cfg->block_size < 1) {
        return LKV_ERR_INVALID;
    }
    lkv_sim_exec_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return LKV_ERR_NOMEM;
    }
    e->cfg         = *cfg;
    e->n_layers    = lkv_sim_cost_model(cfg->cost)->n_layers;
    e->block_bytes = lkv_sim_cost_block_bytes(cfg->cost);
    e->stage_done  = calloc((size_t)e->n_layers, sizeof(int64_t));
    if (e->stage_done == NULL) {
        free(e);
        return LKV_ERR_NOMEM;
    }
    *e_p = e;
    return LKV_OK;
}

void lkv_sim_exec_destroy(lkv_sim_exec_t **e_p)
{
    if (e_p == NULL || *e_p == NULL) {
        return;
    }
    lkv_sim_exec_t *e = *e_p;
    free(e->pend);
    free(e->rseqs);
    free(e->done);
    free(e->mrefs);
    free(e->stage_done);
    free(e->hkeys);
    free(e->hvals);
    free(e->hpos);
    free(e->bkeys);
    free(e->bvals);
    free(e);
    *e_p = NULL;
}

int lkv_sim_exec_pending(const lkv_sim_exec_t *e)
{
    return e->n_pend;
}

void lkv_sim_exec_stats(const lkv_sim_exec_t *e, lkv_sim_exec_stats_t *out)
{
    *out = e->stats;
}

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static lkv_status_t seqmap_build(lkv_sim_exec_t *e, const lkv_step_plan_t *p)
{
    int need = 16;
    while (need < 2 * p->n_seqs) {
        need *= 2;
    }
    if (need > e->hcap) {
        uint64_t *k = realloc(e->hkeys, (size_t)need * sizeof(uint64_t));
        if (k == NULL) {
            return LKV_ERR_NOMEM;
        }
        e->hkeys   = k;
        int32_t *v = realloc(e->hvals, (size_t)need * sizeof(int32_t));
        if (v == NULL) {
            return LKV_ERR_NOMEM;
        }
        e->hvals = v;
        int32_t *q = realloc(e->hpos, (size_t)need * sizeof(int32_t));
        if (q == NULL) {
            return LKV_ERR_NOMEM;
        }
        e->hpos = q;
        e->hcap = need;
    }
    for (int i = 0; i < e->hcap; i++) {
        e->hvals[i] = -1;
    }
    for (int i = 0; i < p->n_seqs; i++) {
        uint64_t h = hash64(p->seqs[i].seq_id) & (uint64_t)(e->hcap - 1);
        while (e->hvals[h] >= 0) {
            h = (h + 1) & (uint64_t)(e->hcap - 1);
        }
        e->hkeys[h] = p->seqs[i].seq_id;
        e->hvals[h] = p->seqs[i].n_tokens;
        e->hpos[h]  = p->seqs[i].pos0;
    }
    return LKV_OK;
}

/* pos0 of seq_id in this step's plan, -1 if it does not run. */
static int32_t seqmap_pos0(const lkv_sim_exec_t *e, uint64_t seq_id)
{
    uint64_t h = hash64(seq_id) & (uint64_t)(e->hcap - 1);
    while (e->hvals[h] >= 0) {
        if (e->hkeys[h] == seq_id) {
            return e->hpos[h];
        }
        h = (h + 1) & (uint64_t)(e->hcap - 1);
    }
    return -1;
}

/* Block-level staging hazards, as the worker tracks them: a STAGE whose
 * first staging block an earlier-layer STAGE of this step also used (a
 * staging ring: all sets share their first block) depends on that stage.
 * mrefs are sorted by layer. Also sets n_in. */
static lkv_status_t stage_deps(lkv_sim_exec_t *e, const lkv_step_plan_t *plan,
                               int n_m)
{
    int need = 16;
    while (need < 2 * n_m) {
        need *= 2;
    }
    if (need > e->bcap) {
        int32_t *k = realloc(e->bkeys, (size_t)need * sizeof(int32_t));
        if (k == NULL) {
            return LKV_ERR_NOMEM;
        }
        e->bkeys   = k;
        int32_t *v = realloc(e->bvals, (size_t)need * sizeof(int32_t));
        if (v == NULL) {
            return LKV_ERR_NOMEM;
        }
        e->bvals = v;
        e->bcap  = need;
    }
    for (int i = 0; i < e->bcap; i++) {
        e->bvals[i] = -1;
    }
    for (int i = 0; i < n_m; i++) {
        mref_t                *r = &e->mrefs[i];
        const lkv_plan_move_t *m = &plan->moves[r->idx];

        r->dep    = -1;
        r->n_in   = m->n_blocks;
        r->wb_end = 0;
        if (m->kind != LKV_PLAN_MOVE_STAGE || m->n_blocks <= 0 ||
            m->dst == NULL) {
            continue;
        }
        if (seqmap_pos0(e, m->seq_id) == 0) {
            r->n_in = 0; /* first chunk: every block is written this step */
        }
        int32_t  b = m->dst[0];
        uint64_t h = hash64((uint64_t)(uint32_t)b) & (uint64_t)(e->bcap - 1);
        while (e->bvals[h] >= 0 && e->bkeys[h] != b) {
            h = (h + 1) & (uint64_t)(e->bcap - 1);
        }
        if (e->bvals[h] >= 0) {
            r->dep = e->bvals[h];
        }
        e->bkeys[h] = b;
        e->bvals[h] = i;
    }
    return LKV_OK;
}

static int32_t seqmap_tokens(const lkv_sim_exec_t *e, uint64_t seq_id)
{
    uint64_t h = hash64(seq_id) & (uint64_t)(e->hcap - 1);
    while (e->hvals[h] >= 0) {
        if (e->hkeys[h] == seq_id) {
            return e->hvals[h];
        }
        h = (h + 1) & (uint64_t)(e->hcap - 1);
    }
    return 0;
}

static int cmp_mref(const void *a, const void *b)
{
    const mref_t *x = a, *y = b;
    if (x->layer != y->layer) {
        return x->layer < y->layer ? -1 : 1;
    }
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Queue a copy on a link; returns its completion time. */
static int64_t link_copy(lkv_sim_exec_t *e, int64_t *free_ns, int64_t ready_ns,
                         int64_t bytes, int64_t *busy_acc)
{
    int64_t start = ready_ns > *free_ns ? ready_ns : *free_ns;
    int64_t dur   = (int64_t)llround(lkv_sim_cost_copy_ns(e->cfg.cost, bytes));
    *free_ns      = start + dur;
    *busy_acc += dur;
    return *free_ns;
}

lkv_status_t lkv_sim_exec_step(lkv_sim_exec_t *e, const lkv_step_plan_t *plan,
                               int64_t now_ns, int64_t wait_until_ns,
                               lkv_step_result_t *res, int64_t *end_ns)
{
    const int L = e->n_layers;
    LKV_CHECK(grow((void **)&e->rseqs, &e->cap_rseqs, plan->n_seqs + 1,
                   sizeof(*e->rseqs)));
    LKV_CHECK(grow((void **)&e->mrefs, &e->cap_mrefs, plan->n_moves + 1,
                   sizeof(*e->mrefs)));
    LKV_CHECK(seqmap_build(e, plan));

    /* 1. the batch */
    lkv_sim_batch_t b = {0};
    for (int i = 0; i < plan->n_seqs; i++) {
        const lkv_plan_seq_t *s = &plan->seqs[i];
        if (s->n_tokens < 1 || s->pos0 < 0) {
            LKV_LOG_ERROR("plan %llu: seq %llu has %d tokens at %d",
                          (unsigned long long)plan->step_id,
                          (unsigned long long)s->seq_id, s->n_tokens, s->pos0);
            return LKV_ERR_INVALID;
        }
        b.n_tokens += s->n_tokens;
        if (s->n_tokens == 1 && s->pos0 > 0) {
            b.n_decode++;
            b.decode_kv_sum += s->pos0 + 1;
        } else {
            b.n_prefill++;
            b.prefill_c2_sum += (double)s->n_tokens * s->n_tokens;
            b.prefill_kv_sum += s->pos0;
        }
        e->rseqs[i].seq_id = s->seq_id;
        e->rseqs[i].token  = s->sample ? 1 : -1;
        e->rseqs[i].status = LKV_OK;
    }
    /* 2. moves, by layer */
    int n_m = 0;
    for (int i = 0; i < plan->n_moves; i++) {
        const lkv_plan_move_t *m = &plan->moves[i];
        if (m->layer < 0 || m->layer >= L || m->n_blocks < 0 ||
            m->kind > LKV_PLAN_MOVE_STAGE) {
            LKV_LOG_ERROR(
                "plan %llu: move %llu has layer %d, %d blocks, kind %d",
                (unsigned long long)plan->step_id,
                (unsigned long long)m->move_id, m->layer, m->n_blocks, m->kind);
            return LKV_ERR_INVALID;
        }
        e->mrefs[n_m++] = (mref_t){m->layer, m->kind, i, -1, 0, 0};
    }
    qsort(e->mrefs, (size_t)n_m, sizeof(mref_t), cmp_mref);
    LKV_CHECK(stage_deps(e, plan, n_m));
    LKV_CHECK(grow((void **)&e->done, &e->cap_done, e->n_pend + n_m + 1,
                   sizeof(uint64_t)));
    LKV_CHECK(grow((void **)&e->pend, &e->cap_pend, e->n_pend + n_m + 1,
                   sizeof(pending_t)));

    int64_t bytes_d2h = 0, bytes_h2d = 0;
    /* stages first on the H2D link, then reloads behind them */
    for (int l = 0; l < L; l++) {
        e->stage_done[l] = now_ns;
    }
    for (int i = 0; i < n_m; i++) {
        const lkv_plan_move_t *m = &plan->moves[e->mrefs[i].idx];
        if (m->kind == LKV_PLAN_MOVE_STAGE && e->mrefs[i].dep < 0 &&
            e->mrefs[i].n_in > 0) {
            int64_t bytes = (int64_t)e->mrefs[i].n_in * e->block_bytes;
            int64_t t     = link_copy(e, &e->h2d_free_ns, now_ns, bytes,
                                      &e->stats.h2d_busy_ns);
            if (t > e->stage_done[m->layer]) {
                e->stage_done[m->layer] = t;
            }
            bytes_h2d += bytes;
        }
    }
    for (int i = 0; i < n_m; i++) {
        const lkv_plan_move_t *m = &plan->moves[e->mrefs[i].idx];
        if (m->kind == LKV_PLAN_MOVE_RELOAD) {
            int64_t bytes        = (int64_t)m->n_blocks * e->block_bytes;
            int64_t t            = link_copy(e, &e->h2d_free_ns, now_ns, bytes,
                                             &e->stats.h2d_busy_ns);
            e->pend[e->n_pend++] = (pending_t){m->move_id, t};
            bytes_h2d += bytes;
        }
    }

    /* 3. compute layer by layer, offloads after each layer */
    int     n_done   = 0;
    int64_t t        = now_ns;
    int64_t copy_end = now_ns;
    int64_t compute_end;
    if (plan->n_seqs > 0) {
        double  layer_ns = lkv_sim_cost_layer_ns(e->cfg.cost, &b);
        int64_t lns      = (int64_t)llround(layer_ns);
        int     mi       = 0;
        for (int l = 0; l < L; l++) {
            /* staging-ring stages of layer l: the compute queue waits for
             * the previous user's write-back, then copies in (if the layer
             * holds older tokens) */
            for (int k = mi; k < n_m && e->mrefs[k].layer == l; k++) {
                const mref_t *r = &e->mrefs[k];
                if (r->kind != LKV_PLAN_MOVE_STAGE || r->dep < 0) {
                    continue;
                }
                int64_t ready = e->mrefs[r->dep].wb_end;
                if (ready > t) {
                    e->stats.stall_ns += ready - t;
                    t = ready;
                }
                if (r->n_in > 0) {
                    int64_t bytes = (int64_t)r->n_in * e->block_bytes;
                    int64_t c     = link_copy(e, &e->h2d_free_ns, t, bytes,
                                              &e->stats.h2d_busy_ns);
                    bytes_h2d += bytes;
                    if (c > t) {
                        e->stats.stall_ns += c - t;
                        t = c;
                    }
                }
            }
            if (e->stage_done[l] > t) {
                e->stats.stall_ns += e->stage_done[l] - t;
                t = e->stage_done[l];
            }
            t += lns;
            int64_t layer_copies_end = t;
            for (; mi < n_m && e->mrefs[mi].layer == l; mi++) {
                const lkv_plan_move_t *m     = &plan->moves[e->mrefs[mi].idx];
                int64_t                bytes = 0;
                if (m->kind == LKV_PLAN_MOVE_OFFLOAD) {
                    bytes = (int64_t)m->n_blocks * e->block_bytes;
                } else if (m->kind == LKV_PLAN_MOVE_STAGE) {
                    /* write back the blocks written this step */
                    int32_t nt = seqmap_tokens(e, m->seq_id);
                    int64_t nb = nt <= 1 ? 1
                                         : (nt + e->cfg.block_size - 1) /
                                                   e->cfg.block_size +
                                               1;
                    if (nb > m->n_blocks) {
                        nb = m->n_blocks;
                    }
                    bytes = nb * e->block_bytes;
                } else {
                    continue;
                }
                int64_t c = link_copy(e, &e->d2h_free_ns, t, bytes,
                                      &e->stats.d2h_busy_ns);
                e->mrefs[mi].wb_end = c;
                bytes_d2h += bytes;
                if (c > layer_copies_end) {
                    layer_copies_end = c;
                }
                if (c > copy_end) {
                    copy_end = c;
                }
                e->done[n_done++] = m->move_id;
            }
            if (e->cfg.sync_offload && layer_copies_end > t) {
                e->stats.stall_ns += layer_copies_end - t;
                t = layer_copies_end;
            }
        }
        t += (int64_t)llround(lkv_sim_cost_step_extra_ns(e->cfg.cost, &b));
        compute_end = t;
        int64_t end = compute_end > copy_end ? compute_end : copy_end;
        e->stats.tail_ns += end - compute_end;
        e->stats.compute_ns += compute_end - now_ns;
        e->stats.steps++;
        *end_ns = end;
    } else {
        /* wait step: until the first background copy ends or wait_until */
        int64_t first = INT64_MAX;
        for (int i = 0; i < e->n_pend; i++) {
            if (e->pend[i].done_ns < first) {
                first = e->pend[i].done_ns;
            }
        }
        for (int i = 0; i < n_m; i++) { /* stray offload/stage in a wait plan */
            const lkv_plan_move_t *m = &plan->moves[e->mrefs[i].idx];
            if (m->kind != LKV_PLAN_MOVE_RELOAD) {
                int64_t bytes  = (int64_t)m->n_blocks * e->block_bytes;
                bool    is_off = m->kind == LKV_PLAN_MOVE_OFFLOAD;
                int64_t c      = link_copy(
                         e, is_off ? &e->d2h_free_ns : &e->h2d_free_ns, now_ns,
                         bytes,
                    is_off ? &e->stats.d2h_busy_ns : &e->stats.h2d_busy_ns);
                if (is_off) {
                    bytes_d2h += bytes;
                } else {
                    bytes_h2d += bytes;
                }
                if (c > copy_end) {
                    copy_end = c;
                }
                e->done[n_done++] = m->move_id;
            }
        }
        int64_t end = first < wait_until_ns ? first : wait_until_ns;
        if (end < copy_end) {
            end = copy_end;
        }
        if (end < now_ns || end == INT64_MAX) {
            end = now_ns;
        }
        compute_end = now_ns;
        e->stats.wait_steps++;
        *end_ns = end;
    }
    /* 4. background copies that finished by the end of the step */
    int k = 0;
    for (int i = 0; i < e->n_pend; i++) {
        if (e->pend[i].done_ns <= *end_ns) {
            e->done[n_done++] = e->pend[i].move_id;
        } else {
            e->pend[k++] = e->pend[i];
        }
    }
    e->n_pend = k;
    e->stats.bytes_d2h += bytes_d2h;
    e->stats.bytes_h2d += bytes_h2d;

    memset(res, 0, sizeof(*res));
    res->step_id        = plan->step_id;
    res->status         = LKV_OK;
    res->n_seqs         = plan->n_seqs;
    res->seqs           = e->rseqs;
    res->n_moves_done   = n_done;
    res->moves_done     = e->done;
    res->n_moves_failed = 0;
    res->moves_failed   = NULL;
    res->step_ns        = *end_ns - now_ns;
    res->compute_ns     = compute_end - now_ns;
    res->bytes_d2h      = bytes_d2h;
    res->bytes_h2d      = bytes_h2d;
    return LKV_OK;
}
