/* sched_plan.c - builds one step plan: reap finished sequences, place decode
 * tokens (preempting by recompute when the device cannot grow), let the
 * policy reload or stream partially resident requests, continue chunked
 * prefills, admit queued requests FCFS through the policy, and lay the
 * deltas out as a lkv_step_plan_t. See scheduler.h for the plan semantics.
 * Threading: one owner thread.
 */
#include "coordinator/sched_impl.h"

#include <math.h>
#include <string.h>

#define LKV_LOG_MODULE "sched"
#include "common/log.h"

/* ---- plan arena ---------------------------------------------------------- */

static void plan_reset(lkv_sched_t *s, int64_t now_ns)
{
    s->p_seqs.n       = 0;
    s->p_reqs.n       = 0;
    s->p_appends.n    = 0;
    s->p_append_off.n = 0;
    s->p_moves.n      = 0;
    s->p_move_off.n   = 0;
    s->p_finished.n   = 0;
    s->p_blocks.n     = 0;
    s->p_stages.n     = 0;
    s->p_new_moves.n  = 0;
    memset(&s->step, 0, sizeof(s->step));
    s->step.now_ns     = now_ns;
    s->step.tok_budget = s->cfg.max_batch_tokens;
    s->step.t_allow_ns = INFINITY;
}

static lkv_status_t push_blocks(lkv_sched_t *s, const int32_t *b, int n,
                                int32_t *off_p)
{
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_blocks, s->p_blocks.n + n));
    *off_p = s->p_blocks.n;
    memcpy(s->p_blocks.v + s->p_blocks.n, b, (size_t)n * sizeof(*b));
    s->p_blocks.n += n;
    return LKV_OK;
}

static lkv_status_t push_finished(lkv_sched_t *s, uint64_t seq_id)
{
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_finished, s->p_finished.n + 1));
    s->p_finished.v[s->p_finished.n++] = seq_id;
    return LKV_OK;
}

/* Append n_tokens to (r, layer) in tier and record the new blocks. */
static lkv_status_t do_append(lkv_sched_t *s, sched_req_t *r, int layer,
                              int n_tokens, lkv_kv_tier_t tier)
{
    lkv_plan_append_t *a;
    int                n_new = 0;
    int32_t            off;

    LKV_CHECK(SCHED_VEC_RESERVE(s->p_appends, s->p_appends.n + 1));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_append_off, s->p_append_off.n + 1));
    LKV_CHECK(lkv_kv_append(s->kv, r->seq_id, layer, n_tokens, tier,
                            s->tmp_blocks, s->tmp_cap, &n_new));
    if (n_new == 0) {
        return LKV_OK;
    }
    if (push_blocks(s, s->tmp_blocks, n_new, &off) != LKV_OK) {
        return LKV_ERR_NOMEM; /* kv grew; the request fails with NOMEM */
    }
    a           = &s->p_appends.v[s->p_appends.n++];
    a->seq_id   = r->seq_id;
    a->layer    = layer;
    a->tier     = (uint8_t)tier;
    a->n_blocks = n_new;
    a->blocks   = NULL; /* fixed up in finalize */
    s->p_append_off.v[s->p_append_off.n++] = off;
    return LKV_OK;
}

static lkv_status_t push_move(lkv_sched_t *s, sched_req_t *r, int layer,
                              lkv_plan_move_kind_t kind,
                              const lkv_kv_copy_t *c, uint64_t *id_p)
{
    lkv_plan_move_t *m;
    int32_t          off, off2;

    LKV_CHECK(SCHED_VEC_RESERVE(s->p_moves, s->p_moves.n + 1));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_move_off, s->p_move_off.n + 1));
    LKV_CHECK(push_blocks(s, c->src, c->n_blocks, &off));
    LKV_CHECK(push_blocks(s, c->dst, c->n_blocks, &off2));
    m           = &s->p_moves.v[s->p_moves.n++];
    m->move_id  = s->next_move_id++;
    m->seq_id   = r->seq_id;
    m->layer    = layer;
    m->kind     = (uint8_t)kind;
    m->src_tier = (uint8_t)c->src_tier;
    m->dst_tier = (uint8_t)c->dst_tier;
    m->n_blocks = c->n_blocks;
    m->src      = NULL;
    m->dst      = NULL;
    s->p_move_off.v[s->p_move_off.n++] = off;
    *id_p = m->move_id;
    return LKV_OK;
}

lkv_status_t sched_issue_move(lkv_sched_t *s, sched_req_t *r, int layer,
                              lkv_kv_tier_t dst, lkv_plan_move_kind_t kind)
{
    lkv_kv_copy_t c;
    sched_move_t  sm;
    uint64_t      id;
    lkv_status_t  st;

    LKV_CHECK(SCHED_VEC_RESERVE(s->moves, s->moves.n + 1));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_new_moves, s->p_new_moves.n + 1));
    LKV_CHECK(lkv_kv_move_begin(s->kv, r->seq_id, layer, dst, &c));
    st = push_move(s, r, layer, kind, &c, &id);
    if (st != LKV_OK) {
        lkv_kv_move_abort(s->kv, r->seq_id, layer);
        return st;
    }
    sm.move_id = id;
    sm.seq_id  = r->seq_id;
    sm.req     = r;
    sm.layer   = layer;
    sm.kind    = (uint8_t)kind;
    sm.bytes   = (int64_t)c.n_blocks * s->cfg.block_bytes;
    s->moves.v[s->moves.n++]             = sm;
    s->p_new_moves.v[s->p_new_moves.n++] = sm;
    r->n_moves++;
    if (kind == LKV_PLAN_MOVE_OFFLOAD) {
        s->st.offload_moves++;
    } else {
        s->st.reload_moves++;
    }
    return LKV_OK;
}

/* Stage (r, layer) for this step: on its own new device blocks (ring < 0)
 * or on staging ring `ring`. */
static lkv_status_t issue_stage(lkv_sched_t *s, sched_req_t *r, int layer,
                                int ring)
{
    lkv_kv_copy_t c;
    sched_move_t  sm;
    uint64_t      id;
    lkv_status_t  st;

    LKV_CHECK(SCHED_VEC_RESERVE(s->p_stages, s->p_stages.n + 1));
    if (ring >= 0) {
        LKV_CHECK(lkv_kv_stage_begin_ring(s->kv, r->seq_id, layer, ring, &c));
    } else {
        LKV_CHECK(lkv_kv_stage_begin(s->kv, r->seq_id, layer, &c));
    }
    st = push_move(s, r, layer, LKV_PLAN_MOVE_STAGE, &c, &id);
    if (st != LKV_OK) {
        lkv_kv_stage_end(s->kv, r->seq_id, layer);
        return st;
    }
    sm.move_id = id;
    sm.seq_id  = r->seq_id;
    sm.req     = r;
    sm.layer   = layer;
    sm.kind    = LKV_PLAN_MOVE_STAGE;
    sm.bytes   = (int64_t)c.n_blocks * s->cfg.block_bytes;
    s->p_stages.v[s->p_stages.n++] = sm;
    s->st.stage_moves++;
    return LKV_OK;
}

static lkv_status_t push_seq(lkv_sched_t *s, sched_req_t *r, int n_tokens,
                             bool sample)
{
    lkv_plan_seq_t *ps;

    LKV_CHECK(SCHED_VEC_RESERVE(s->p_seqs, s->p_seqs.n + 1));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_reqs, s->p_reqs.n + 1));
    ps           = &s->p_seqs.v[s->p_seqs.n];
    ps->seq_id   = r->seq_id;
    ps->n_tokens = n_tokens;
    ps->tokens   = r->toks + r->n_cached;
    ps->pos0     = r->n_cached;
    ps->sample   = sample;
    ps->sampling = r->sampling;
    s->p_reqs.v[s->p_seqs.n++] = r;
    s->p_reqs.n                = s->p_seqs.n;
    r->in_plan                 = true;
    r->n_cached += n_tokens;
    s->step.tok_budget -= n_tokens;
    return LKV_OK;
}

/* ---- helpers ------------------------------------------------------------- */

/* Free device blocks less those held for decodes waiting on copies in
 * flight (see sched_step_t.dev_held). */
int32_t sched_device_free(const lkv_sched_t *s)
{
    int64_t f = (int64_t)lkv_kv_free_blocks(s->kv, LKV_KV_TIER_DEVICE) -
                s->step.dev_held;

    return f > 0 ? (int32_t)f : 0;
}

int sched_staging_window(const lkv_sched_t *s)
{
    return s->cfg.policy == LKV_SCHED_POLICY_LAYERKV
               ? s->cfg.prefill_staging_window
               : 0;
}

bool sched_offloads_layer(const lkv_sched_t *s, int layer, int k)
{
    if (s->cfg.offload_contiguous) {
        return layer < k;
    }
    return sched_layer_offloaded(layer, k, s->cfg.n_layers);
}

bool sched_layer_offloaded(int layer, int k, int n_layers)
{
    if (k <= 0) {
        return false;
    }
    return ((int64_t)layer * k) % n_layers < k;
}

double sched_prefill_with(const lkv_sched_t *s, const sched_step_t *st, int c,
                          int o)
{
    return lkv_slo_prefill_ns(s->slo, st->pf_x1 + c,
                              st->pf_x2 + (double)c * ((double)o + c));
}

int32_t sched_pred_remaining(const lkv_sched_t *s, const sched_req_t *r)
{
    return lkv_pred_remaining(s->pred, r->n_prompt, r->t.n_generated,
                              r->max_tokens - r->t.n_generated);
}

static int tier_of_res(lkv_kv_res_t res)
{
    return res == LKV_KV_RES_HOST     ? LKV_KV_TIER_HOST
           : res == LKV_KV_RES_REMOTE ? LKV_KV_TIER_REMOTE
                                      : LKV_KV_TIER_DEVICE;
}

/* Blocks needed to add n tokens to r on every layer: device (appends to
 * device layers + staging of off-device layers, i.e. their whole table after
 * the append) and per off-device tier. Returns false if a layer is MOVING. */
static bool chunk_needs_w(const lkv_sched_t *s, const sched_req_t *r, int n,
                          int32_t need[LKV_KV_TIER_COUNT], int w)
{
    int32_t ring_max = 0; /* largest staged table (ring set size) */
    int     n_staged = 0;

    memset(need, 0, sizeof(int32_t) * LKV_KV_TIER_COUNT);
    for (int l = 0; l < s->cfg.n_layers; l++) {
        lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);
        int          add = lkv_kv_blocks_needed(s->kv, r->seq_id, l, n);

        if (res == LKV_KV_RES_MOVING) {
            return false;
        }
        if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
            int have = sched_blocks_for(s, lkv_kv_layer_tokens(s->kv,
                                                               r->seq_id, l));
            need[tier_of_res(res)] += add;
            if (w > 0) {
                n_staged++;
                if (have + add > ring_max) {
                    ring_max = have + add;
                }
            } else {
                need[LKV_KV_TIER_DEVICE] += have + add; /* staging */
            }
        } else {
            need[LKV_KV_TIER_DEVICE] += add;
        }
    }
    need[LKV_KV_TIER_DEVICE] += (n_staged < w ? n_staged : w) * ring_max;
    return true;
}

static bool chunk_needs(const lkv_sched_t *s, const sched_req_t *r, int n,
                        int32_t need[LKV_KV_TIER_COUNT])
{
    return chunk_needs_w(s, r, n, need, 0);
}

/* Stage r's off-device layers for this step through a ring of min(W, n)
 * staging sets sized for the largest of them: the j-th staged layer (in
 * layer order) uses set j mod W. n: tokens appended this step (their
 * blocks are written back home: counted as offloaded bytes). */
static lkv_status_t stage_ring(lkv_sched_t *s, sched_req_t *r, int w, int n)
{
    int ids[LKV_SCHED_MAX_STAGING_WINDOW];
    int n_staged = 0, nr, ring_max = 0, j = 0;

    for (int l = 0; l < s->cfg.n_layers; l++) {
        lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

        if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
            int nb = sched_blocks_for(s, lkv_kv_layer_tokens(s->kv, r->seq_id,
                                                             l));
            n_staged++;
            if (nb > ring_max) {
                ring_max = nb;
            }
        }
    }
    if (n_staged == 0) {
        return LKV_OK;
    }
    nr = n_staged < w ? n_staged : w;
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_rings, s->p_rings.n + nr));
    for (int i = 0; i < nr; i++) {
        lkv_status_t st = lkv_kv_ring_create(s->kv, ring_max, &ids[i]);

        if (st != LKV_OK) {
            while (--i >= 0) {
                lkv_kv_ring_destroy(s->kv, ids[i]);
                s->p_rings.n--;
            }
            return st;
        }
        s->p_rings.v[s->p_rings.n++] = ids[i];
    }
    for (int l = 0; l < s->cfg.n_layers; l++) {
        lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

        if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
            int tok = lkv_kv_layer_tokens(s->kv, r->seq_id, l);
            LKV_CHECK(issue_stage(s, r, l, ids[j % nr]));
            j++;
            s->st.offloaded_bytes +=
                (int64_t)(sched_blocks_for(s, tok) -
                          (tok - n) / s->cfg.block_size) *
                s->cfg.block_bytes;
        }
    }
    return LKV_OK;
}

static bool needs_fit(const lkv_sched_t *s, const int32_t need[], int32_t dev_reserve)
{
    if (need[LKV_KV_TIER_DEVICE] + dev_reserve > sched_device_free(s)) {
        return false;
    }
    for (int t = 1; t < LKV_KV_TIER_COUNT; t++) {
        if (need[t] > lkv_kv_free_blocks(s->kv, (lkv_kv_tier_t)t)) {
            return false;
        }
    }
    return true;
}

/* Add n tokens of r on every layer: device layers grow on the device;
 * off-device layers grow in their tier and are staged for this step. The
 * caller checked chunk_needs/needs_fit, so failures here are internal or
 * NOMEM. */
static lkv_status_t grow_all_layers_w(lkv_sched_t *s, sched_req_t *r, int n,
                                     int w)
{
    if (w > 0) {
        for (int l = 0; l < s->cfg.n_layers; l++) {
            lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

            LKV_CHECK(do_append(s, r, l, n,
                                (lkv_kv_tier_t)tier_of_res(res)));
        }
        return stage_ring(s, r, w, n);
    }
    for (int l = 0; l < s->cfg.n_layers; l++) {
        lkv_kv_res_t res = lkv_kv_layer_residency(s->kv, r->seq_id, l);

        if (res == LKV_KV_RES_HOST || res == LKV_KV_RES_REMOTE) {
            LKV_CHECK(do_append(s, r, l, n, (lkv_kv_tier_t)tier_of_res(res)));
            LKV_CHECK(issue_stage(s, r, l, -1));
        } else {
            LKV_CHECK(do_append(s, r, l, n, LKV_KV_TIER_DEVICE));
        }
    }
    return LKV_OK;
}

/* The decode token of a request whose layers all live on the device: one
 * bulk append (the same blocks and plan appends as per-layer do_append
 * calls) instead of per-layer queries and appends. LKV_ERR_INVALID when some
 * layer lives off the device (the caller takes the general path); BUSY and
 * NOSPACE as that path would answer. */
static lkv_status_t grow_device_decode(lkv_sched_t *s, sched_req_t *r)
{
    const int L = s->cfg.n_layers;
    int32_t  *per_layer, off;
    int       n_new = 0, j;

    LKV_CHECK(SCHED_VEC_RESERVE(s->p_appends, s->p_appends.n + L));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_append_off, s->p_append_off.n + L));
    LKV_CHECK(SCHED_VEC_RESERVE(s->p_blocks, s->p_blocks.n + L));
    /* the per-layer counts land in p_append_off's spare room; the loop below
     * turns them into offsets in place (it writes entry j <= l after reading
     * entry l) */
    per_layer = s->p_append_off.v + s->p_append_off.n;
    off       = s->p_blocks.n;
    LKV_CHECK(lkv_kv_append_all(s->kv, r->seq_id, 1, LKV_KV_TIER_DEVICE,
                                s->p_blocks.v + off, L, per_layer, &n_new));
    s->p_blocks.n += n_new;
    j = 0;
    for (int l = 0; l < L; l++) {
        int32_t            nb = per_layer[l];
        lkv_plan_append_t *a;

        if (nb == 0) {
            continue;
        }
        a           = &s->p_appends.v[s->p_appends.n++];
        a->seq_id   = r->seq_id;
        a->layer    = l;
        a->tier     = LKV_KV_TIER_DEVICE;
        a->n_blocks = nb;
        a->blocks   = NULL; /* fixed up in finalize */
        per_layer[j++] = off;
        off += nb;
    }
    s->p_append_off.n += j;
    return LKV_OK;
}

lkv_status_t sched_place_decode(lkv_sched_t *s, sched_req_t *r, bool stream)
{
    int32_t      need[LKV_KV_TIER_COUNT];
    lkv_status_t st = grow_device_decode(s, r);

    if (st == LKV_OK) {
        LKV_CHECK(push_seq(s, r, 1, true));
        s->step.n_decode++;
        s->step.dc_ctx += r->n_cached;
        return LKV_OK;
    }
    if (st != LKV_ERR_INVALID) {
        return st;
    }
    if (!chunk_needs(s, r, 1, need)) {
        return LKV_ERR_BUSY;
    }
    if (!stream && need[LKV_KV_TIER_DEVICE] > 0 &&
        (need[LKV_KV_TIER_HOST] > 0 || need[LKV_KV_TIER_REMOTE] > 0)) {
        return LKV_ERR_BUSY; /* off-device layers need the stream path */
    }
    if (!needs_fit(s, need, 0)) {
        return LKV_ERR_NOSPACE;
    }
    LKV_CHECK(grow_all_layers_w(s, r, 1, 0));
    LKV_CHECK(push_seq(s, r, 1, true));
    s->step.n_decode++;
    s->step.dc_ctx += r->n_cached;
    return LKV_OK;
}

/* ---- preemption ---------------------------------------------------------- */

static void preempt(lkv_sched_t *s, int idx)
{
    sched_req_t *v = s->running.v[idx];

    if (v->seq_id != 0) {
        lkv_kv_seq_free(s->kv, v->seq_id);
        if (push_finished(s, v->seq_id) != LKV_OK) {
            LKV_LOG_ERROR("out of memory listing finished seq %llu; the "
                          "worker keeps its state until restart",
                          (unsigned long long)v->seq_id);
        }
    }
    LKV_LOG_DEBUG("preempting request %llu (%d tokens) by recompute",
                  (unsigned long long)v->id, v->n_total);
    v->seq_id     = 0;
    v->state      = RQ_WAITING;
    v->n_cached   = 0;
    v->prefilling = false;
    v->path       = PATH_NONE;
    v->n_off      = 0;
    v->t.n_preemptions++;
    s->st.preemptions++;
    memmove(&s->running.v[idx], &s->running.v[idx + 1],
            (size_t)(s->running.n - idx - 1) * sizeof(*s->running.v));
    s->running.n--;
    /* capacity was reserved at submit (waiting.cap >= live requests) */
    memmove(&s->waiting.v[1], &s->waiting.v[0],
            (size_t)s->waiting.n * sizeof(*s->waiting.v));
    s->waiting.v[0] = v;
    s->waiting.n++;
}

/* Newest running request after index `after` with no copy in flight (and,
 * when `holding`, with more than its retained layers on the device). */
static int pick_victim(const lkv_sched_t *s, int after, bool holding)
{
    for (int j = s->running.n - 1; j > after; j--) {
        const sched_req_t *v = s->running.v[j];

        if (v->n_moves != 0 || v->in_plan) {
            continue;
        }
        if (holding && sched_layers_in(s, v, LKV_KV_RES_DEVICE) <=
                           s->cfg.min_retained_layers) {
            continue;
        }
        return j;
    }
    return -1;
}

static int offload_tier(const lkv_sched_t *s, int64_t blocks);

/* LAYERKV preemption by offload instead of recompute: v's device layers but
 * the retained ones (interleaved) go to the host; their device blocks free
 * when the copies are reported done, and v comes back by reload or stream
 * like any partially resident request. Returns the device blocks that will
 * free (0: not possible, use recompute). */
static int64_t preempt_offload(lkv_sched_t *s, sched_req_t *v)
{
    const int L = s->cfg.n_layers;
    int       k = L - s->cfg.min_retained_layers;
    int64_t   blocks = 0;
    int       tier;

    if (s->cfg.policy != LKV_SCHED_POLICY_LAYERKV || v->n_moves > 0 ||
        v->in_plan || v->prefilling || v->seq_id == 0) {
        return 0;
    }
    for (int l = 0; l < L; l++) {
        if (sched_offloads_layer(s, l, k) &&
            lkv_kv_layer_residency(s->kv, v->seq_id, l) == LKV_KV_RES_DEVICE) {
            blocks += sched_blocks_for(s, lkv_kv_layer_tokens(s->kv,
                                                              v->seq_id, l));
        }
    }
    tier = blocks > 0 ? offload_tier(s, blocks) : -1;
    if (tier < 0) {
        return 0;
    }
    for (int l = 0; l < L; l++) {
        if (sched_offloads_layer(s, l, k) &&
            lkv_kv_layer_residency(s->kv, v->seq_id, l) == LKV_KV_RES_DEVICE &&
            sched_issue_move(s, v, l, (lkv_kv_tier_t)tier,
                             LKV_PLAN_MOVE_OFFLOAD) != LKV_OK) {
            break; /* what was issued still frees */
        }
    }
    LKV_LOG_DEBUG("preempting request %llu by offloading %lld blocks",
                  (unsigned long long)v->id, (long long)blocks);
    v->t.n_preemptions++;
    s->st.swap_preemptions++;
    return blocks;
}

static bool decode_ready(const sched_req_t *r)
{
    return !r->prefilling && r->n_cached == r->n_total - 1;
}

/* Place every fully resident decode, oldest first. When the device cannot
 * grow: wait if offloads already in flight will free enough; LAYERKV
 * offloads the newest request (preemption by swap); otherwise the newest
 * request is preempted by recompute (vLLM). */
static lkv_status_t place_decodes(lkv_sched_t *s)
{
    int64_t pending = 0;

    for (int k = 0; k < s->moves.n; k++) {
        if (s->moves.v[k].kind == LKV_PLAN_MOVE_OFFLOAD) {
            pending += s->moves.v[k].bytes / s->cfg.block_bytes;
        }
    }
    for (int i = 0; i < s->running.n; i++) {
        sched_req_t *r = s->running.v[i];
        lkv_status_t st;

        if (!decode_ready(r) || sched_layers_in(s, r, LKV_KV_RES_DEVICE) !=
                                    s->cfg.n_layers) {
            continue;
        }
        for (;;) {
            int     v;
            int64_t freed;

            st = sched_place_decode(s, r, false);
            if (st != LKV_ERR_NOSPACE) {
                break;
            }
            st = LKV_OK;
            {
                int32_t need[LKV_KV_TIER_COUNT];

                chunk_needs(s, r, 1, need);
                if (pending > 0 &&
                    pending + sched_device_free(s) >= need[LKV_KV_TIER_DEVICE]) {
                    /* copies in flight free room: r waits, and what is
                     * free now stays for it */
                    s->step.dev_held += need[LKV_KV_TIER_DEVICE];
                    break;
                }
            }
            v = pick_victim(s, i, s->cfg.policy == LKV_SCHED_POLICY_LAYERKV);
            if (v >= 0) {
                freed = preempt_offload(s, s->running.v[v]);
                if (freed > 0) {
                    pending += freed;
                    continue;
                }
                preempt(s, v);
                continue;
            }
            if (s->cfg.policy == LKV_SCHED_POLICY_LAYERKV) {
                v = pick_victim(s, i, false);
                if (v >= 0) {
                    preempt(s, v);
                    continue;
                }
                freed = preempt_offload(s, r);
                if (freed > 0) {
                    pending += freed;
                    break;
                }
            }
            /* nobody newer to evict: evict r itself, unless it is alone and
             * the pool simply cannot hold it */
            if (s->running.n > 1 || s->moves.n > 0 || s->zombies.n > 0) {
                preempt(s, i);
            } else {
                sched_set_error(s, "request %llu needs more kv blocks than the "
                                   "device pool holds at %d tokens",
                                (unsigned long long)r->id, r->n_total);
                LKV_LOG_WARN("%s; raise --device-kv-blocks", s->err);
                sched_finish(s, r, LKV_SCHED_FINISH_ERROR, LKV_ERR_NOSPACE,
                             s->step.now_ns);
            }
            i--;
            break;
        }
        if (st < 0 && st != LKV_ERR_BUSY) {
            return st;
        }
    }
    return LKV_OK;
}

/* Nothing could run this step although requests are admitted (partially
 * resident requests waiting for room, chunked prefills that cannot grow) and
 * no copy in flight will free memory: let the policy reload ignoring the
 * watermark; failing that, preempt the newest request by recompute, or fail
 * a lone one that can never fit. */
static lkv_status_t unstick(lkv_sched_t *s)
{
    int v = -1;

    if (s->p_seqs.n > 0 || s->moves.n > 0 || s->p_new_moves.n > 0 ||
        s->running.n == 0) {
        return LKV_OK;
    }
    if (s->ops->partial != NULL) {
        s->step.force = true;
        LKV_CHECK(s->ops->partial(s, &s->step));
        s->step.force = false;
        if (s->p_seqs.n > 0 || s->p_new_moves.n > 0) {
            return LKV_OK;
        }
    }
    /* the newest partially resident request is the one stuck; else the
     * newest of all */
    for (int i = s->running.n - 1; i >= 0 && v < 0; i--) {
        const sched_req_t *r = s->running.v[i];

        if (r->n_moves == 0 && !r->in_plan && decode_ready(r) &&
            sched_layers_in(s, r, LKV_KV_RES_DEVICE) < s->cfg.n_layers) {
            v = i;
        }
    }
    for (int i = s->running.n - 1; i >= 0 && v < 0; i--) {
        if (s->running.v[i]->n_moves == 0 && !s->running.v[i]->in_plan) {
            v = i;
        }
    }
    if (v < 0) {
        return LKV_OK;
    }
    if (s->running.n > 1) {
        preempt(s, v);
        s->admit_hold = true; /* or it comes straight back and sticks */
    } else {
        sched_req_t *r = s->running.v[v];

        sched_set_error(s, "request %llu cannot continue: the device pool is "
                           "too small for %d tokens",
                        (unsigned long long)r->id, r->n_total);
        LKV_LOG_WARN("%s; raise --device-kv-blocks", s->err);
        sched_finish(s, r, LKV_SCHED_FINISH_ERROR, LKV_ERR_NOSPACE,
                     s->step.now_ns);
    }
    return LKV_OK;
}

/* Device blocks the admitted but unfinished prefills still need for the
 * rest of their prompts on every layer (admission keeps them free, so two
 * chunked prefills cannot deadlock each other). */
int64_t sched_prefill_reserve(const lkv_sched_t *s)
{
    int64_t n = 0;

    for (int i = 0; i < s->running.n; i++) {
        const sched_req_t *r = s->running.v[i];

        if (r->prefilling) {
            int64_t rest = sched_blocks_for(s, r->n_total) -
                           sched_blocks_for(s, r->n_cached);
            int     w    = sched_staging_window(s);

            if (w > 0 && r->n_off > 0) {
                /* retained layers grow; the rest passes through the ring */
                n += (int64_t)(s->cfg.n_layers - r->n_off) * rest +
                     (int64_t)(r->n_off < w ? r->n_off : w) *
                         sched_blocks_for(s, r->n_total);
            } else {
                n += (int64_t)s->cfg.n_layers * rest;
            }
        }
    }
    return n;
}

/* ---- prefill --------------------------------------------------------------- */

static int chunk_len(const lkv_sched_t *s, const sched_req_t *r)
{
    int c = r->n_total - r->n_cached;

    if (s->cfg.chunked_prefill) {
        if (c > s->cfg.chunk_tokens) {
            c = s->cfg.chunk_tokens;
        }
        if (c > s->step.tok_budget) {
            c = s->step.tok_budget;
        }
    }
    return c;
}

static bool budget_allows(const lkv_sched_t *s, int c)
{
    if (c <= 0) {
        return false;
    }
    /* one prefill longer than the budget may run alone */
    return c <= s->step.tok_budget || s->step.n_prefill == 0;
}

static lkv_status_t plan_prefill_chunk(lkv_sched_t *s, sched_req_t *r, int c)
{
    int  o    = r->n_cached;
    bool last = o + c == r->n_total;

    LKV_CHECK(push_seq(s, r, c, last));
    s->step.n_prefill++;
    s->step.pf_x1 += c;
    s->step.pf_x2 += (double)c * ((double)o + c);
    if (last) {
        r->prefilling = false;
    }
    return LKV_OK;
}

/* Later chunks of requests already admitted, in admission order. */
static lkv_status_t continue_prefills(lkv_sched_t *s)
{
    for (int i = 0; i < s->running.n; i++) {
        sched_req_t *r = s->running.v[i];
        int32_t      need[LKV_KV_TIER_COUNT];
        int          c;

        if (!r->prefilling || r->in_plan) {
            continue;
        }
        c = chunk_len(s, r);
        if (!budget_allows(s, c)) {
            break;
        }
        /* stage every off-device layer at once (copies prefetched at the
         * step start) when the device has room; else through the staging
         * ring (its copy-ins follow the previous user's write-back) */
        int w = 0;
        if (!chunk_needs_w(s, r, c, need, 0)) {
            continue; /* moving */
        }
        if (!needs_fit(s, need, 0)) {
            w = sched_staging_window(s);
            if (w == 0 || !chunk_needs_w(s, r, c, need, w) ||
                !needs_fit(s, need, 0)) {
                continue; /* no room this step: try next step */
            }
        }
        LKV_CHECK(grow_all_layers_w(s, r, c, w));
        LKV_CHECK(plan_prefill_chunk(s, r, c));
    }
    return LKV_OK;
}

/* Tier that takes an offloaded layer of n_full blocks x k layers. */
static int offload_tier(const lkv_sched_t *s, int64_t blocks)
{
    if (s->cfg.d2h_bytes_per_s[LKV_KV_TIER_HOST] > 0.0 &&
        lkv_kv_free_blocks(s->kv, LKV_KV_TIER_HOST) >= blocks) {
        return LKV_KV_TIER_HOST;
    }
    if (s->cfg.d2h_bytes_per_s[LKV_KV_TIER_REMOTE] > 0.0 &&
        lkv_kv_free_blocks(s->kv, LKV_KV_TIER_REMOTE) >= blocks) {
        return LKV_KV_TIER_REMOTE;
    }
    return -1;
}

/* Admit q: register its sequence, append its first chunk on every layer and
 * start offloading n_off layers (interleaved). All or nothing. */
static lkv_status_t admit(lkv_sched_t *s, sched_req_t *q, int c, int n_off,
                          bool anti)
{
    int          n_app = s->p_appends.n, n_mv = s->p_moves.n;
    int          n_blk = s->p_blocks.n, n_new = s->p_new_moves.n;
    int          n_stg = s->p_stages.n, n_rng = s->p_rings.n;
    int          w     = sched_staging_window(s);
    int          tier = -1;
    lkv_status_t st;

    LKV_CHECK(SCHED_VEC_RESERVE(s->running, s->running.n + 1));
    if (n_off > 0) {
        tier = offload_tier(s, (int64_t)n_off *
                                   sched_blocks_for(s, q->n_total));
        if (tier < 0) {
            n_off = 0;
        }
    }
    q->seq_id = s->next_seq_id++;
    LKV_CHECK(lkv_kv_seq_add(s->kv, q->seq_id));
    if (w > 0 && n_off > 0) {
        /* staging window: offloaded layers live off the device from the
         * start; the prefill step streams them through the ring */
        for (int l = 0; l < s->cfg.n_layers; l++) {
            lkv_kv_tier_t t = sched_offloads_layer(s, l, n_off)
                                  ? (lkv_kv_tier_t)tier
                                  : LKV_KV_TIER_DEVICE;
            LKV_CHECK_GOTO(do_append(s, q, l, c, t), st, undo);
            if (t != LKV_KV_TIER_DEVICE) {
                s->step.off_blocks += sched_blocks_for(s, c);
            }
        }
        LKV_CHECK_GOTO(stage_ring(s, q, w, c), st, undo);
        s->st.offload_moves += (uint64_t)n_off; /* layers offloaded */
        n_off = -n_off; /* done: skip the offload moves below */
    } else {
        for (int l = 0; l < s->cfg.n_layers; l++) {
            LKV_CHECK_GOTO(do_append(s, q, l, c, LKV_KV_TIER_DEVICE), st,
                           undo);
        }
    }
    for (int l = 0; l < s->cfg.n_layers && n_off > 0; l++) {
        if (sched_offloads_layer(s, l, n_off)) {
            LKV_CHECK_GOTO(sched_issue_move(s, q, l, (lkv_kv_tier_t)tier,
                                            LKV_PLAN_MOVE_OFFLOAD),
                           st, undo);
            s->step.off_blocks += sched_blocks_for(s, c);
        }
    }
    if (n_off < 0) {
        n_off = -n_off;
    }
    q->state      = RQ_RUNNING;
    q->prefilling = true;
    q->n_off      = n_off;
    q->off_tier   = tier < 0 ? LKV_KV_TIER_DEVICE : (lkv_kv_tier_t)tier;
    q->path       = PATH_NONE;
    q->admit_ord  = s->next_admit_ord++;
    q->n_cached   = 0;
    q->t.n_offloaded_layers = n_off;
    q->t.anti_starved |= anti;
    if (q->t.first_scheduled_ns == 0) {
        q->t.first_scheduled_ns = s->step.now_ns;
        q->t.queue_ns           = s->step.now_ns - q->t.arrival_ns;
    }
    s->st.anti_starvation_admits += anti;
    memmove(&s->waiting.v[0], &s->waiting.v[1],
            (size_t)(s->waiting.n - 1) * sizeof(*s->waiting.v));
    s->waiting.n--;
    s->running.v[s->running.n++] = q;
    return plan_prefill_chunk(s, q, c);

undo:
    /* roll back: abort the moves begun, drop plan entries, free the seq */
    for (int i = n_new; i < s->p_new_moves.n; i++) {
        for (int k = s->moves.n - 1; k >= 0; k--) {
            if (s->moves.v[k].move_id == s->p_new_moves.v[i].move_id) {
                lkv_kv_move_abort(s->kv, q->seq_id, s->moves.v[k].layer);
                s->moves.v[k] = s->moves.v[--s->moves.n];
                q->n_moves--;
                break;
            }
        }
    }
    for (int i = n_stg; i < s->p_stages.n; i++) {
        lkv_kv_stage_end(s->kv, q->seq_id, s->p_stages.v[i].layer);
        s->st.stage_moves--;
    }
    s->p_stages.n = n_stg;
    for (int i = n_rng; i < s->p_rings.n; i++) {
        lkv_kv_ring_destroy(s->kv, s->p_rings.v[i]);
    }
    s->p_rings.n      = n_rng;
    s->p_new_moves.n  = n_new;
    s->p_appends.n    = n_app;
    s->p_append_off.n = n_app;
    s->p_moves.n      = n_mv;
    s->p_move_off.n   = n_mv;
    s->p_blocks.n     = n_blk;
    lkv_kv_seq_free(s->kv, q->seq_id);
    q->seq_id = 0;
    return st;
}

static lkv_status_t admit_waiting(lkv_sched_t *s)
{
    while (s->waiting.n > 0 && s->running.n < s->cfg.max_seqs) {
        sched_req_t *q = s->waiting.v[0];
        int          c = chunk_len(s, q);
        int          n_off = 0;
        bool         anti  = false;
        lkv_status_t st;

        if (!budget_allows(s, c)) {
            break;
        }
        st = s->ops->admit(s, &s->step, q, c, &n_off, &anti);
        if (st == LKV_AGAIN && s->running.n == 0 && s->moves.n == 0 &&
            s->zombies.n == 0 && s->p_seqs.n == 0) {
            /* not even an empty device holds it (a recompute that grew
             * past the pool): it can never run */
            sched_set_error(s, "request %llu needs more device kv blocks "
                               "than the pool has at %d tokens",
                            (unsigned long long)q->id, q->n_total);
            LKV_LOG_WARN("%s; raise --device-kv-blocks", s->err);
            sched_finish(s, q, LKV_SCHED_FINISH_ERROR, LKV_ERR_NOSPACE,
                         s->step.now_ns);
            continue;
        }
        if (st == LKV_AGAIN) {
            break; /* FCFS: stop at the first request that does not fit */
        }
        LKV_CHECK(st);
        st = admit(s, q, c, n_off, anti);
        if (st == LKV_ERR_NOSPACE) {
            break;
        }
        LKV_CHECK(st);
    }
    return LKV_OK;
}

/* ---- the step ------------------------------------------------------------ */

static void reap_zombies(lkv_sched_t *s)
{
    for (int i = 0; i < s->zombies.n; i++) {
        sched_req_t *z = s->zombies.v[i];

        if (z->in_plan || z->n_moves > 0) {
            continue;
        }
        if (z->seq_id != 0) {
            lkv_kv_seq_free(s->kv, z->seq_id);
            if (push_finished(s, z->seq_id) != LKV_OK) {
                continue; /* retry next step */
            }
        }
        sched_req_free(z);
        s->zombies.v[i--] = s->zombies.v[--s->zombies.n];
    }
}

static void finalize(lkv_sched_t *s)
{
    lkv_step_plan_t *p = &s->plan;

    for (int i = 0; i < s->p_appends.n; i++) {
        s->p_appends.v[i].blocks = s->p_blocks.v + s->p_append_off.v[i];
    }
    for (int i = 0; i < s->p_moves.n; i++) {
        lkv_plan_move_t *m = &s->p_moves.v[i];

        m->src = s->p_blocks.v + s->p_move_off.v[i];
        m->dst = m->src + m->n_blocks;
    }
    p->step_id    = ++s->step_id;
    p->n_seqs     = s->p_seqs.n;
    p->seqs       = s->p_seqs.v;
    p->n_appends  = s->p_appends.n;
    p->appends    = s->p_appends.v;
    p->n_moves    = s->p_moves.n;
    p->moves      = s->p_moves.v;
    p->n_finished = s->p_finished.n;
    p->finished   = s->p_finished.v;
    s->plan_outstanding = true;
    s->st.steps++;
}

lkv_status_t sched_build_plan(lkv_sched_t *s, int64_t now_ns)
{
    lkv_status_t st;

    plan_reset(s, now_ns);
    reap_zombies(s);
    LKV_CHECK_GOTO(place_decodes(s), st, fail);
    s->ops->begin_admission(s, &s->step); /* Eq. 1-2 over the running set */
    if (s->ops->partial != NULL) {
        LKV_CHECK_GOTO(s->ops->partial(s, &s->step), st, fail);
    }
    LKV_CHECK_GOTO(continue_prefills(s), st, fail);
    if (s->p_seqs.n > 0 || s->running.n == 0) {
        s->admit_hold = false; /* the running set moves again */
    }
    if (!s->admit_hold) {
        LKV_CHECK_GOTO(admit_waiting(s), st, fail);
    }
    LKV_CHECK_GOTO(unstick(s), st, fail);
    reap_zombies(s); /* requests failed above release their blocks now */
    s->st.last_t_allow_ns = isfinite(s->step.t_allow_ns)
                                ? (int64_t)s->step.t_allow_ns
                                : INT64_MAX;
    if (s->p_seqs.n == 0 && s->p_moves.n == 0 && s->p_finished.n == 0 &&
        s->p_appends.n == 0 && s->moves.n == 0) {
        return LKV_AGAIN;
    }
    finalize(s);
    return LKV_OK;

fail:
    /* Something internal (NOMEM) broke mid-plan. Emit what was built so the
     * worker mirrors every allocator change already made. */
    LKV_LOG_ERROR("building step plan failed: %s; emitting the partial plan",
                  lkv_status_str(st));
    finalize(s);
    return LKV_OK;
}
