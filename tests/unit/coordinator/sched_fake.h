/* sched_fake.h - a fake executor for scheduler tests: it "executes" step
 * plans on a simulated clock, returns tokens that depend only on the
 * sequence's token prefix (so recompute after preemption reproduces them),
 * completes OFFLOAD/RELOAD moves after a configurable number of steps, and
 * mirrors every block-table delta the way a worker would, so tests can check
 * the plans against the allocator. Header-only; single-threaded.
 */
#ifndef LKV_TESTS_SCHED_FAKE_H
#define LKV_TESTS_SCHED_FAKE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/scheduler.h"

/* A small scheduler config whose time-model priors match the fake
 * executor's cost: n_layers layers, dev_blocks device and 4096 host
 * layer-blocks of 16 tokens, no remote tier, no watermark. */
static inline lkv_sched_config_t fx_sched_config(lkv_sched_policy_t pol,
                                                 int n_layers, int dev_blocks)
{
    lkv_sched_config_t c = lkv_sched_config_default();

    c.policy                       = pol;
    c.n_layers                     = n_layers;
    c.block_size                   = 16;
    c.block_bytes                  = 1 << 16;
    c.n_blocks[LKV_KV_TIER_DEVICE] = dev_blocks;
    c.n_blocks[LKV_KV_TIER_HOST]   = 4096;
    c.n_blocks[LKV_KV_TIER_REMOTE] = 0;
    c.max_seqs                     = 64;
    c.max_seq_len                  = 2048;
    c.max_batch_tokens             = 4096;
    c.watermark                    = 0.0f;
    c.pf_c0_ns                     = 5e6;
    c.pf_c1_ns                     = 20000;
    c.pf_c2_ns                     = 0;
    c.dc_c0_ns                     = 5e6;
    c.dc_c1_ns                     = 200000;
    c.dc_c2_ns                     = 0;
    return c;
}

#define FX_MAX_SEQS   256
#define FX_MAX_LAYERS 32
#define FX_MAX_BLK    256
#define FX_MAX_MOVES  4096
#define FX_MAX_DEV    65536 /* device blocks the staging check tracks */

typedef struct {
    uint64_t seq_id; /* 0 = free slot */
    uint8_t  tier[FX_MAX_LAYERS];
    int      n[FX_MAX_LAYERS];
    int32_t  blk[FX_MAX_LAYERS][FX_MAX_BLK];
    int32_t  last_tok; /* token history hash */
} fx_seq_t;

typedef struct {
    uint64_t id, seq_id;
    int      layer, kind, steps_left;
    uint8_t  dst_tier;
    int      n;
    int32_t  dst[FX_MAX_BLK];
} fx_move_t;

typedef struct {
    /* knobs */
    int     n_layers;
    int     vocab;           /* tokens in [0, vocab) */
    int     move_delay;      /* steps until a move is reported done */
    int64_t base_ns;         /* fixed cost per step */
    int64_t prefill_tok_ns;  /* per prefill token */
    int64_t decode_seq_ns;   /* per decode sequence */
    double  link_bytes_per_s; /* stage copies add link time */
    int64_t block_bytes;
    int     fail_seq_at_step; /* >0: first seq of that step fails */
    /* state */
    int64_t             now_ns;
    uint64_t            steps;
    fx_seq_t            seqs[FX_MAX_SEQS];
    fx_move_t           moves[FX_MAX_MOVES];
    int                 n_moves;
    lkv_result_seq_t    res_seqs[FX_MAX_SEQS];
    uint64_t            done[FX_MAX_MOVES];
    lkv_step_result_t   res;
    int                 errors; /* mirror mismatches found */
    /* staging check: per device block, the plan move (+1) that last staged
     * into it in step stg_step */
    uint64_t            stg_step[FX_MAX_DEV];
    int32_t             stg_move[FX_MAX_DEV];
    int                 stage_errors; /* staging blocks shared wrongly */
} fx_t;

/* STAGE destinations of plan p: a device block may be shared only by layers
 * of ONE sequence staged in increasing layer order (a staging ring, which
 * the worker serialises), and never by a block table. */
static inline void fx_check_staging(fx_t *f, const lkv_step_plan_t *p)
{
    for (int i = 0; i < p->n_moves; i++) {
        const lkv_plan_move_t *m = &p->moves[i];

        if (m->kind != LKV_PLAN_MOVE_STAGE) {
            continue;
        }
        for (int k = 0; k < m->n_blocks; k++) {
            int32_t b = m->dst[k];

            if (b < 0 || b >= FX_MAX_DEV) {
                continue;
            }
            if (f->stg_step[b] == f->steps) {
                const lkv_plan_move_t *o = &p->moves[f->stg_move[b] - 1];
                if (o->seq_id != m->seq_id || o->layer >= m->layer) {
                    fprintf(stderr, "fx: staging block %d shared by seq "
                            "%llu layer %d and seq %llu layer %d\n", (int)b,
                            (unsigned long long)o->seq_id, o->layer,
                            (unsigned long long)m->seq_id, m->layer);
                    f->stage_errors++;
                }
            }
            f->stg_step[b] = f->steps;
            f->stg_move[b] = i + 1;
        }
    }
    for (int i = 0; i < FX_MAX_SEQS; i++) {
        const fx_seq_t *q    = &f->seqs[i];
        bool            gone = false;

        for (int k = 0; k < p->n_finished; k++) {
            gone |= p->finished[k] == q->seq_id; /* its blocks are free */
        }
        if (q->seq_id == 0 || gone) {
            continue;
        }
        for (int l = 0; l < f->n_layers; l++) {
            if (q->tier[l] != LKV_KV_TIER_DEVICE) {
                continue;
            }
            for (int k = 0; k < q->n[l]; k++) {
                int32_t b = q->blk[l][k];
                if (b >= 0 && b < FX_MAX_DEV && f->stg_step[b] == f->steps) {
                    fprintf(stderr, "fx: staging block %d is in the table "
                            "of seq %llu layer %d\n", (int)b,
                            (unsigned long long)q->seq_id, l);
                    f->stage_errors++; /* staging over a live table */
                }
            }
        }
    }
}

static inline void fx_init(fx_t *f, int n_layers)
{
    memset(f, 0, sizeof(*f));
    f->n_layers       = n_layers;
    f->vocab          = 1000;
    f->move_delay     = 1;
    f->base_ns        = 5000000;
    f->prefill_tok_ns = 20000;
    f->decode_seq_ns  = 200000;
    f->block_bytes    = 1 << 16;
}

static inline fx_seq_t *fx_seq(fx_t *f, uint64_t id, int create)
{
    fx_seq_t *hole = NULL;

    for (int i = 0; i < FX_MAX_SEQS; i++) {
        if (f->seqs[i].seq_id == id) {
            return &f->seqs[i];
        }
        if (hole == NULL && f->seqs[i].seq_id == 0) {
            hole = &f->seqs[i];
        }
    }
    if (!create || hole == NULL) {
        return NULL;
    }
    memset(hole, 0, sizeof(*hole));
    hole->seq_id = id;
    return hole;
}

/* Deterministic "model": next token from the whole prefix. */
static inline int32_t fx_next_token(const fx_t *f, const int32_t *toks, int n)
{
    uint64_t h = 1469598103934665603ULL;

    for (int i = 0; i < n; i++) {
        h = (h ^ (uint64_t)(uint32_t)toks[i]) * 1099511628211ULL;
    }
    return (int32_t)(h % (uint64_t)f->vocab);
}

/* Execute a plan; prefix[] gives each plan seq's full token history (the
 * scheduler's tokens pointer starts at pos0, and tokens before pos0 live at
 * tokens - pos0 in the scheduler's buffer, which is contiguous). */
static inline const lkv_step_result_t *fx_exec(fx_t *f,
                                               const lkv_step_plan_t *p)
{
    int64_t t     = f->base_ns;
    int     n_done = 0;
    double  link_bytes = 0;

    f->steps++;
    if (p->n_seqs > FX_MAX_SEQS || f->n_layers > FX_MAX_LAYERS) {
        f->errors++;
        return NULL;
    }
    for (int i = 0; i < p->n_appends; i++) {
        const lkv_plan_append_t *a = &p->appends[i];
        fx_seq_t                *q = fx_seq(f, a->seq_id, 1);

        if (q == NULL || a->layer < 0 || a->layer >= f->n_layers ||
            q->n[a->layer] + a->n_blocks > FX_MAX_BLK) {
            f->errors++;
            continue;
        }
        if (q->n[a->layer] > 0 && q->tier[a->layer] != a->tier) {
            f->errors++;
        }
        q->tier[a->layer] = a->tier;
        for (int k = 0; k < a->n_blocks && q->n[a->layer] < FX_MAX_BLK; k++) {
            q->blk[a->layer][q->n[a->layer]++] = a->blocks[k];
        }
    }
    for (int i = 0; i < p->n_moves; i++) {
        const lkv_plan_move_t *m = &p->moves[i];
        fx_seq_t              *q = fx_seq(f, m->seq_id, 0);

        if (q == NULL || q->n[m->layer] != m->n_blocks ||
            q->tier[m->layer] != m->src_tier ||
            memcmp(q->blk[m->layer], m->src,
                   (size_t)m->n_blocks * sizeof(int32_t)) != 0) {
            f->errors++; /* source must be the layer's current table */
        }
        if (m->kind == LKV_PLAN_MOVE_STAGE) {
            link_bytes += (double)m->n_blocks * (double)f->block_bytes;
            continue;
        }
        if (f->n_moves < FX_MAX_MOVES && m->n_blocks <= FX_MAX_BLK) {
            fx_move_t *fm  = &f->moves[f->n_moves++];
            fm->id         = m->move_id;
            fm->seq_id     = m->seq_id;
            fm->layer      = m->layer;
            fm->kind       = m->kind;
            fm->steps_left = f->move_delay;
            fm->dst_tier   = m->dst_tier;
            fm->n          = m->n_blocks;
            memcpy(fm->dst, m->dst, (size_t)m->n_blocks * sizeof(int32_t));
        }
    }
    fx_check_staging(f, p);
    for (int i = 0; i < p->n_seqs; i++) {
        const lkv_plan_seq_t *ps = &p->seqs[i];
        lkv_result_seq_t     *rs = &f->res_seqs[i];

        rs->seq_id = ps->seq_id;
        rs->status = LKV_OK;
        rs->token  = -1;
        if (ps->sample) {
            /* tokens - pos0 is the start of the sequence's buffer */
            rs->token = fx_next_token(f, ps->tokens - ps->pos0,
                                      ps->pos0 + ps->n_tokens);
        }
        if (ps->n_tokens > 1 || !ps->sample) {
            t += (int64_t)ps->n_tokens * f->prefill_tok_ns;
        } else {
            t += f->decode_seq_ns;
        }
        if (f->fail_seq_at_step > 0 && (int)f->steps == f->fail_seq_at_step &&
            i == 0) {
            rs->status = LKV_ERR_DEVICE;
        }
    }
    if (f->link_bytes_per_s > 0) {
        int64_t lt = (int64_t)(link_bytes / f->link_bytes_per_s * 1e9);
        if (lt > t) {
            t = lt;
        }
    }
    /* moves reported done after their delay; apply them to the mirror */
    for (int i = 0; i < f->n_moves; i++) {
        fx_move_t *m = &f->moves[i];

        if (m->steps_left-- > 0) {
            continue;
        }
        fx_seq_t *q = fx_seq(f, m->seq_id, 0);
        if (q != NULL) {
            q->tier[m->layer] = m->dst_tier;
            q->n[m->layer]    = m->n;
            memcpy(q->blk[m->layer], m->dst, (size_t)m->n * sizeof(int32_t));
        }
        f->done[n_done++] = m->id;
        f->moves[i--]     = f->moves[--f->n_moves];
    }
    for (int i = 0; i < p->n_finished; i++) {
        fx_seq_t *q = fx_seq(f, p->finished[i], 0);
        if (q != NULL) {
            q->seq_id = 0;
        }
    }
    memset(&f->res, 0, sizeof(f->res));
    f->res.step_id      = p->step_id;
    f->res.status       = LKV_OK;
    f->res.n_seqs       = p->n_seqs;
    f->res.seqs         = f->res_seqs;
    f->res.n_moves_done = n_done;
    f->res.moves_done   = f->done;
    f->res.step_ns      = t;
    f->res.compute_ns   = t;
    f->now_ns += t;
    return &f->res;
}

/* Compare the mirror with the allocator for every live sequence. */
static inline int fx_check_mirror(fx_t *f, const lkv_kv_alloc_t *kv)
{
    int bad = 0;

    for (int i = 0; i < FX_MAX_SEQS; i++) {
        fx_seq_t *q = &f->seqs[i];

        if (q->seq_id == 0 || !lkv_kv_seq_exists(kv, q->seq_id)) {
            continue;
        }
        for (int l = 0; l < f->n_layers; l++) {
            lkv_kv_tier_t         tier;
            const lkv_kv_block_t *b;
            int                   n;

            if (lkv_kv_layer_blocks(kv, q->seq_id, l, &tier, &b, &n) !=
                    LKV_OK ||
                n != q->n[l] || (n > 0 && tier != q->tier[l]) ||
                (n > 0 && memcmp(b, q->blk[l], (size_t)n * sizeof(*b)) != 0)) {
                bad++;
            }
        }
    }
    return bad;
}

/* ---- a driver: arrivals, steps, per-request bookkeeping ----------------- */

typedef struct {
    uint64_t id;
    int32_t  n_prompt;
    int32_t  max_tokens;
    int64_t  arrival_ns;
    int64_t  ttft_slo_ns, tpot_slo_ns;
    /* outcome */
    int      submitted_status;
    int      n_tokens;
    int32_t  toks[4096];
    int      finished;
    lkv_sched_finish_t reason;
    lkv_status_t       status;
    lkv_sched_timing_t timing;
} fx_req_t;

typedef struct {
    int      max_steps;
    int      check_every_step; /* every N steps: kv invariants + mirror */
    int      cancel_id_at_step; /* cancel request `cancel_id` at that step */
    uint64_t cancel_id;
    int      cancel_permille; /* per step: cancel a random live request */
    uint64_t rng;
    /* results */
    int      steps, stuck, invariant_failures, mirror_failures;
    int      event_errors;
} fx_run_t;

static inline void fx_prompt(const fx_req_t *r, int32_t *out)
{
    for (int i = 0; i < r->n_prompt; i++) {
        out[i] = (int32_t)((r->id * 131 + (uint64_t)i * 7) % 997) + 1;
    }
}

static inline void fx_take(lkv_sched_t *s, fx_req_t *reqs, int n, fx_run_t *run)
{
    const lkv_sched_event_t *ev;
    int                      n_ev;

    lkv_sched_take_events(s, &ev, &n_ev);
    for (int i = 0; i < n_ev; i++) {
        fx_req_t *r = NULL;

        for (int k = 0; k < n; k++) {
            if (reqs[k].id == ev[i].id) {
                r = &reqs[k];
            }
        }
        if (r == NULL || r->finished) {
            run->event_errors++;
            continue;
        }
        if (ev[i].kind == LKV_SCHED_EV_TOKEN) {
            if ((ev[i].first != (r->n_tokens == 0)) || r->n_tokens >= 4096) {
                run->event_errors++;
            }
            if (r->n_tokens < 4096) {
                r->toks[r->n_tokens++] = ev[i].token;
            }
        } else {
            r->finished = 1;
            r->reason   = ev[i].reason;
            r->status   = ev[i].status;
            r->timing   = ev[i].timing;
        }
    }
}

/* Run until every request finished (or max_steps). */
static inline void fx_run(lkv_sched_t *s, fx_t *f, fx_req_t *reqs, int n,
                          fx_run_t *run)
{
    int next = 0, done = 0;

    while (run->steps < run->max_steps) {
        const lkv_step_plan_t *plan;
        lkv_status_t           st;

        while (next < n && reqs[next].arrival_ns <= f->now_ns) {
            int32_t             prompt[4096];
            lkv_sched_request_t q;

            memset(&q, 0, sizeof(q));
            fx_prompt(&reqs[next], prompt);
            q.id          = reqs[next].id;
            q.prompt      = prompt;
            q.n_prompt    = reqs[next].n_prompt;
            q.max_tokens  = reqs[next].max_tokens;
            q.arrival_ns  = reqs[next].arrival_ns;
            q.ttft_slo_ns = reqs[next].ttft_slo_ns;
            q.tpot_slo_ns = reqs[next].tpot_slo_ns;
            q.ignore_stop = true;
            reqs[next].submitted_status =
                lkv_sched_submit(s, &q, f->now_ns, NULL);
            if (reqs[next].submitted_status != LKV_OK) {
                reqs[next].finished = 1;
            }
            next++;
        }
        done = 0;
        for (int i = 0; i < n; i++) {
            done += reqs[i].finished;
        }
        if (done == n && lkv_sched_idle(s)) {
            return;
        }
        if (run->cancel_id_at_step > 0 && run->steps == run->cancel_id_at_step) {
            lkv_sched_cancel(s, run->cancel_id, f->now_ns);
            fx_take(s, reqs, n, run);
        }
        if (run->cancel_permille > 0 && next > 0) {
            run->rng = run->rng * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((int)((run->rng >> 33) % 1000) < run->cancel_permille) {
                int k = (int)((run->rng >> 13) % (uint64_t)next);
                if (!reqs[k].finished) {
                    lkv_sched_cancel(s, reqs[k].id, f->now_ns);
                    fx_take(s, reqs, n, run);
                }
            }
        }
        st = lkv_sched_next_plan(s, f->now_ns, &plan);
        if (st == LKV_AGAIN) {
            if (next < n) {
                f->now_ns = reqs[next].arrival_ns;
                continue;
            }
            fx_take(s, reqs, n, run);
            if (lkv_sched_idle(s)) {
                continue;
            }
            run->stuck = 1;
            return;
        }
        if (st != LKV_OK) {
            run->stuck = 2;
            return;
        }
        const lkv_step_result_t *res = fx_exec(f, plan);
        if (lkv_sched_on_result(s, res, f->now_ns) != LKV_OK) {
            run->stuck = 3;
            return;
        }
        run->steps++;
        fx_take(s, reqs, n, run);
        if (run->check_every_step > 0 &&
            run->steps % run->check_every_step == 0) {
            if (lkv_kv_alloc_check(lkv_sched_kv(s)) != LKV_OK) {
                run->invariant_failures++;
            }
            if (fx_check_mirror(f, lkv_sched_kv(s)) != 0) {
                run->mirror_failures++;
            }
        }
    }
    run->stuck = 4; /* max_steps without finishing: livelock */
}

#endif /* LKV_TESTS_SCHED_FAKE_H */
