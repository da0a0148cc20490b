/* test_sched_remote.c - the scheduler with a REMOTE kv tier whose kvnode
 * dies mid-run (issue 8, failure): the fake executor fails every copy out of
 * REMOTE (reloads, stages) and every offload into it from the "kill" on, as
 * a worker does once its kvnode is gone. Every request must still end with
 * exactly the reference tokens (recompute) or an error after a prefix of
 * them, never hang, and once a failure is reported nothing new may go to
 * the dead tier (a failed offload into it marks it down too: otherwise
 * swap preemption retries failing offloads forever). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/unit/coordinator/sched_fake.h"

#define L_TEST   8
#define N_REQS   12
#define MAX_STEP 5000

static lkv_sched_config_t remote_cfg(lkv_sched_decode_mode_t mode)
{
    lkv_sched_config_t c =
        fx_sched_config(LKV_SCHED_POLICY_LAYERKV, L_TEST, 160);

    c.decode_mode                  = mode;
    c.n_blocks[LKV_KV_TIER_HOST]   = 0; /* offloads must go remote */
    c.n_blocks[LKV_KV_TIER_REMOTE] = 4096;
    return c;
}

typedef struct {
    fx_t    *f;
    bool     dead;          /* the kvnode is gone */
    bool     failed_out;    /* this step failed a move to/from REMOTE */
    bool     saw_failure;   /* such a failure was reported */
    int      remote_after;  /* REMOTE placements planned after that */
    int      remote_moves;  /* moves and appends into REMOTE before the
                               kill */
    uint64_t failed[FX_MAX_MOVES];
    int      n_failed;
    lkv_step_plan_t plan;   /* filtered copy handed to the fake */
    lkv_plan_move_t moves[FX_MAX_MOVES];
} dead_fx_t;

static bool fx_layer_remote(fx_t *f, uint64_t seq, int layer)
{
    fx_seq_t *q = fx_seq(f, seq, 0);

    return q != NULL && q->tier[layer] == LKV_KV_TIER_REMOTE;
}

/* Execute p; once dead, every move touching REMOTE fails (and the sequence
 * of a failed stage fails, as worker/step_exec.h reports it). */
static const lkv_step_result_t *dead_exec(dead_fx_t *d,
                                          const lkv_step_plan_t *p)
{
    uint64_t stage_fail_seq[FX_MAX_MOVES];
    int      n_stage_fail = 0;

    d->n_failed   = 0;
    d->failed_out = false;
    if (d->saw_failure) {
        for (int i = 0; i < p->n_moves; i++) {
            d->remote_after += p->moves[i].dst_tier == LKV_KV_TIER_REMOTE;
        }
        for (int i = 0; i < p->n_appends; i++) {
            /* a new sequence placed in REMOTE (old ones may still append
             * to their remote layers until they recompute) */
            const lkv_plan_append_t *a = &p->appends[i];
            fx_seq_t                *q = fx_seq(d->f, a->seq_id, 0);
            d->remote_after += a->tier == LKV_KV_TIER_REMOTE &&
                               (q == NULL || q->n[a->layer] == 0);
        }
    }
    if (!d->dead) {
        for (int i = 0; i < p->n_moves; i++) {
            d->remote_moves += p->moves[i].dst_tier == LKV_KV_TIER_REMOTE;
        }
        for (int i = 0; i < p->n_appends; i++) {
            d->remote_moves += p->appends[i].tier == LKV_KV_TIER_REMOTE;
        }
        return fx_exec(d->f, p);
    }
    /* reloads in flight out of REMOTE fail now */
    for (int i = 0; i < d->f->n_moves; i++) {
        fx_move_t *m = &d->f->moves[i];

        bool out = m->kind == LKV_PLAN_MOVE_RELOAD &&
                   fx_layer_remote(d->f, m->seq_id, m->layer);

        if (out || m->dst_tier == LKV_KV_TIER_REMOTE) {
            d->failed_out = true;
            d->failed[d->n_failed++] = m->id;
            d->f->moves[i--]         = d->f->moves[--d->f->n_moves];
        }
    }
    d->plan         = *p;
    d->plan.moves   = d->moves;
    d->plan.n_moves = 0;
    for (int i = 0; i < p->n_moves; i++) {
        const lkv_plan_move_t *m = &p->moves[i];

        if (m->src_tier == LKV_KV_TIER_REMOTE ||
            m->dst_tier == LKV_KV_TIER_REMOTE) {
            d->failed[d->n_failed++] = m->move_id;
            d->failed_out = true;
            if (m->kind == LKV_PLAN_MOVE_STAGE) {
                stage_fail_seq[n_stage_fail++] = m->seq_id;
            }
            continue;
        }
        d->moves[d->plan.n_moves++] = *m;
    }
    lkv_step_result_t *res = (lkv_step_result_t *)fx_exec(d->f, &d->plan);
    for (int i = 0; i < res->n_seqs; i++) {
        for (int k = 0; k < n_stage_fail; k++) {
            if (res->seqs[i].seq_id == stage_fail_seq[k]) {
                d->f->res_seqs[i].status = LKV_ERR_PEER_LOST;
                d->f->res_seqs[i].token  = -1;
            }
        }
    }
    res->n_moves_failed = d->n_failed;
    res->moves_failed   = d->failed;
    return res;
}

static void reference(const fx_t *f, const fx_req_t *r, int32_t *out)
{
    int32_t buf[4096 + 4096];

    fx_prompt(r, buf);
    for (int i = 0; i < r->max_tokens; i++) {
        out[i] = fx_next_token(f, buf, r->n_prompt + i);
        buf[r->n_prompt + i] = out[i];
    }
}

/* Submit N_REQS long prompts, run; kill the kvnode once kill_at remote
 * layer-blocks are in use (staging window `window`, -1 = default). Returns the number of requests that ended in
 * an error (after a prefix of the reference). */
static int run_with_kill(lkv_sched_decode_mode_t mode, int32_t kill_at,
                         int window, int *recomputed_p)
{
    lkv_sched_config_t c = remote_cfg(mode);
    lkv_sched_t       *s = NULL;
    dead_fx_t         *d = calloc(1, sizeof(*d));
    fx_req_t          *reqs = calloc(N_REQS, sizeof(*reqs));
    fx_run_t           run  = {0};
    int                n_err = 0, steps = 0;

    if (window >= 0) {
        c.prefill_staging_window = window;
    }
    assert_non_null(d);
    assert_non_null(reqs);
    d->f = calloc(1, sizeof(*d->f));
    assert_non_null(d->f);
    fx_init(d->f, L_TEST);
    d->f->move_delay = 2;
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
    for (int i = 0; i < N_REQS; i++) {
        int32_t             prompt[4096];
        lkv_sched_request_t q;

        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].id         = (uint64_t)i + 1;
        reqs[i].n_prompt   = 90 + 7 * i;
        reqs[i].max_tokens = 30;
        memset(&q, 0, sizeof(q));
        fx_prompt(&reqs[i], prompt);
        q.id          = reqs[i].id;
        q.prompt      = prompt;
        q.n_prompt    = reqs[i].n_prompt;
        q.max_tokens  = reqs[i].max_tokens;
        q.ignore_stop = true;
        assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    }
    for (steps = 0; steps < MAX_STEP; steps++) {
        const lkv_step_plan_t *plan;
        lkv_sched_stats_t      st;
        lkv_status_t           rc;

        lkv_sched_stats(s, &st);
        if (!d->dead && st.blocks_used[LKV_KV_TIER_REMOTE] >= kill_at) {
            d->dead = true;
        }
        rc = lkv_sched_next_plan(s, d->f->now_ns, &plan);
        if (rc == LKV_AGAIN) {
            fx_take(s, reqs, N_REQS, &run);
            break;
        }
        assert_int_equal(rc, LKV_OK);
        const lkv_step_result_t *res = dead_exec(d, plan);
        assert_int_equal(lkv_sched_on_result(s, res, d->f->now_ns), LKV_OK);
        d->saw_failure |= d->failed_out;
        fx_take(s, reqs, N_REQS, &run);
        assert_int_equal(lkv_kv_alloc_check(lkv_sched_kv(s)), LKV_OK);
        assert_int_equal(fx_check_mirror(d->f, lkv_sched_kv(s)), 0);
    }
    assert_true(steps < MAX_STEP); /* no livelock: every request ended */
    assert_int_equal(run.event_errors, 0);
    assert_int_equal(d->f->errors, 0);
    assert_true(d->dead);
    assert_true(d->saw_failure);
    assert_true(kill_at == 0 || d->remote_moves > 0);
    assert_int_equal(d->remote_after, 0); /* the dead tier is not used */
    for (int i = 0; i < N_REQS; i++) {
        int32_t ref[64];

        assert_true(reqs[i].finished);
        reference(d->f, &reqs[i], ref);
        assert_true(reqs[i].n_tokens <= reqs[i].max_tokens);
        assert_memory_equal(reqs[i].toks, ref,
                            (size_t)reqs[i].n_tokens * sizeof(int32_t));
        if (reqs[i].reason == LKV_SCHED_FINISH_ERROR) {
            n_err++;
        } else {
            assert_int_equal(reqs[i].reason, LKV_SCHED_FINISH_LENGTH);
            assert_int_equal(reqs[i].n_tokens, reqs[i].max_tokens);
        }
    }
    lkv_sched_stats_t st;
    lkv_sched_stats(s, &st);
    *recomputed_p = (int)st.preemptions;
    assert_true(lkv_sched_idle(s));
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        assert_int_equal(st.blocks_used[t], 0);
    }
    lkv_sched_destroy(&s);
    free(d->f);
    free(d);
    free(reqs);
    return n_err;
}

/* Reload path: KV offloaded to the kvnode is lost; the requests recompute
 * and every one completes with the reference tokens. */
static void sched_remote_dead_reload_recomputes(void **state)
{
    int recomputed = 0;

    (void)state;
    assert_int_equal(run_with_kill(LKV_SCHED_DECODE_RELOAD, 1, -1, &recomputed),
                     0);
    assert_true(recomputed > 0);
}

/* Stream path: stages out of the dead tier fail their sequence in the
 * step; the scheduler recomputes instead of failing the request. */
static void sched_remote_dead_stream_recomputes(void **state)
{
    int recomputed = 0;

    (void)state;
    assert_int_equal(run_with_kill(LKV_SCHED_DECODE_STREAM, 1, -1, &recomputed),
                     0);
    assert_true(recomputed > 0);
}

/* Killed later, with more of the run's KV remote (auto decode mode). */
static void sched_remote_dead_late_auto(void **state)
{
    int recomputed = 0;

    (void)state;
    assert_int_equal(run_with_kill(LKV_SCHED_DECODE_AUTO, 40, -1, &recomputed),
                     0);
}

/* Dead before anything reached it, no staging window (admission offloads
 * by moves): only offloads into REMOTE fail. The
 * first failure marks the tier down, so admission and swap preemption stop
 * choosing it (before, swap preemption retried a failing offload every
 * step, forever). */
static void sched_remote_dead_offloads_fail_mark_down(void **state)
{
    int recomputed = 0;

    (void)state;
    assert_int_equal(run_with_kill(LKV_SCHED_DECODE_AUTO, 0, 0, &recomputed),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sched_remote_dead_reload_recomputes),
        cmocka_unit_test(sched_remote_dead_stream_recomputes),
        cmocka_unit_test(sched_remote_dead_late_auto),
        cmocka_unit_test(sched_remote_dead_offloads_fail_mark_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
