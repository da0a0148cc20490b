/* test_sched_basic.c - the scheduler driven by a fake executor: admission
 * rules of both policies, no leaks, invariants and plan/allocator agreement
 * after every step, preemption by recompute, cancellation, anti-starvation,
 * rejection, chunked prefill, failures and bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/unit/coordinator/sched_fake.h"

#define L_TEST 8

static lkv_sched_config_t small_cfg(lkv_sched_policy_t pol, int dev_blocks)
{
    return fx_sched_config(pol, L_TEST, dev_blocks);
}

/* Reference continuation of request r (what any correct schedule returns). */
static void reference(const fx_t *f, const fx_req_t *r, int32_t *out)
{
    int32_t buf[4096 + 4096];

    fx_prompt(r, buf);
    for (int i = 0; i < r->max_tokens; i++) {
        out[i] = fx_next_token(f, buf, r->n_prompt + i);
        buf[r->n_prompt + i] = out[i];
    }
}

static void expect_complete(const fx_t *f, const fx_req_t *reqs, int n)
{
    int32_t ref[4096];

    for (int i = 0; i < n; i++) {
        assert_int_equal(reqs[i].submitted_status, LKV_OK);
        assert_true(reqs[i].finished);
        assert_int_equal(reqs[i].reason, LKV_SCHED_FINISH_LENGTH);
        assert_int_equal(reqs[i].n_tokens, reqs[i].max_tokens);
        reference(f, &reqs[i], ref);
        assert_memory_equal(reqs[i].toks, ref,
                            (size_t)reqs[i].n_tokens * sizeof(int32_t));
        assert_int_equal(reqs[i].timing.n_generated, reqs[i].max_tokens);
    }
}

static void expect_empty(lkv_sched_t *s)
{
    lkv_sched_stats_t st;

    lkv_sched_stats(s, &st);
    assert_true(lkv_sched_idle(s));
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        assert_int_equal(st.blocks_used[t], 0);
    }
    assert_int_equal(lkv_kv_alloc_check(lkv_sched_kv(s)), LKV_OK);
}

static void mk(fx_req_t *r, uint64_t id, int n_prompt, int max_tokens,
               int64_t arrival_ns)
{
    memset(r, 0, sizeof(*r));
    r->id         = id;
    r->n_prompt   = n_prompt;
    r->max_tokens = max_tokens;
    r->arrival_ns = arrival_ns;
}

/* Steps until every request has been scheduled once. */
static int steps_until_all_admitted(lkv_sched_config_t *c, fx_req_t *reqs,
                                    int n, lkv_sched_stats_t *after_first)
{
    lkv_sched_t *s = NULL;
    fx_t        *f = calloc(1, sizeof(*f));
    int          steps = -1;

    assert_non_null(f);
    fx_init(f, c->n_layers);
    assert_int_equal(lkv_sched_create(c, &s), LKV_OK);
    for (int i = 0; i < n; i++) {
        int32_t             p[4096];
        lkv_sched_request_t q = {0};

        fx_prompt(&reqs[i], p);
        q.id = reqs[i].id, q.prompt = p, q.n_prompt = reqs[i].n_prompt;
        q.max_tokens  = reqs[i].max_tokens;
        q.ignore_stop = true;
        assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    }
    for (int k = 0; k < 500; k++) {
        const lkv_step_plan_t *plan;
        lkv_sched_stats_t      st;
        const lkv_sched_event_t *ev;
        int                    n_ev;

        if (lkv_sched_next_plan(s, f->now_ns, &plan) != LKV_OK) {
            break;
        }
        assert_int_equal(
            lkv_sched_on_result(s, fx_exec(f, plan), f->now_ns), LKV_OK);
        lkv_sched_take_events(s, &ev, &n_ev);
        assert_int_equal(lkv_kv_alloc_check(lkv_sched_kv(s)), LKV_OK);
        assert_int_equal(fx_check_mirror(f, lkv_sched_kv(s)), 0);
        lkv_sched_stats(s, &st);
        if (k == 0) {
            *after_first = st;
        }
        if (st.n_waiting == 0 && steps < 0) {
            steps = k + 1;
        }
        if (lkv_sched_idle(s)) {
            break;
        }
    }
    assert_int_equal(f->errors, 0);
    expect_empty(s);
    lkv_sched_destroy(&s);
    free(f);
    return steps;
}

static void baseline_admits_only_when_all_layers_fit(void **state)
{
    lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_BASELINE, 70);
    fx_req_t           reqs[3];
    lkv_sched_stats_t  st;
    int                steps_base, steps_lkv;

    (void)state;
    memset(&st, 0, sizeof(st));
    /* 60 tokens -> 4 blocks per layer -> 32 blocks per request: 2 fit */
    for (int i = 0; i < 3; i++) {
        mk(&reqs[i], (uint64_t)i + 1, 60, 4, 0);
    }
    steps_base = steps_until_all_admitted(&c, reqs, 3, &st);
    assert_int_equal(st.n_running + (int)st.finished, 2);
    assert_int_equal(st.n_waiting, 1);
    assert_int_equal(st.offload_moves, 0);

    c         = small_cfg(LKV_SCHED_POLICY_LAYERKV, 70);
    c.prefill_staging_window = 0;
    steps_lkv = steps_until_all_admitted(&c, reqs, 3, &st);
    assert_true(st.offload_moves > 0); /* the 2nd request made room */
    printf("# all 3 admitted after %d steps (baseline) vs %d (layerkv)\n",
           steps_base, steps_lkv);
    assert_true(steps_lkv < steps_base);
    /* staging window: the offloaded layers never take device blocks */
    c.prefill_staging_window = 2;
    steps_lkv = steps_until_all_admitted(&c, reqs, 3, &st);
    assert_true(st.stage_moves > 0);
    printf("# all 3 admitted after %d steps (layerkv, W = 2)\n", steps_lkv);
    assert_true(steps_lkv < steps_base);
}

/* One request of 60 tokens (4 blocks per layer, 32 on 8 layers) on a
 * 28-block device: without a staging window it can never be admitted; with
 * W = 2 its offloaded layers are appended on the host and streamed through
 * two shared staging sets, so retained layers + ring fit, and it yields the
 * reference tokens. Chunked, later chunks go through the ring as well. */
static void staging_window_admits_when_retained_layers_fit(void **state)
{
    (void)state;
    for (int chunked = 0; chunked < 2; chunked++) {
        for (int w = 0; w <= 2; w += 2) {
            lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_LAYERKV, 28);
            fx_req_t           req;
            fx_t              *f = calloc(1, sizeof(*f));
            fx_run_t           run = {.max_steps = 1000, .check_every_step = 1};
            lkv_sched_t       *s = NULL;
            lkv_sched_stats_t  st;
            int32_t            ref[8];

            assert_non_null(f);
            c.prefill_staging_window = w;
            c.chunked_prefill        = chunked;
            c.chunk_tokens           = 32;
            fx_init(f, L_TEST);
            mk(&req, 1, 60, 1, 0);
            assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
            fx_run(s, f, &req, 1, &run);
            lkv_sched_stats(s, &st);
            assert_true(req.finished);
            assert_int_equal(run.invariant_failures, 0);
            assert_int_equal(run.mirror_failures, 0);
            assert_int_equal(f->errors, 0);
            assert_int_equal(f->stage_errors, 0);
            if (w == 0 && !chunked) {
                /* refused at submit or failed: never served */
                assert_int_not_equal(req.reason, LKV_SCHED_FINISH_LENGTH);
            } else if (w > 0) {
                assert_int_equal(req.reason, LKV_SCHED_FINISH_LENGTH);
                reference(f, &req, ref);
                assert_int_equal(req.toks[0], ref[0]);
                assert_true(st.stage_moves > 0);
                /* layers placed on the host at admission, no OFFLOAD move */
                assert_true(st.offload_moves > 0);
            }
            printf("# W=%d chunked=%d: %s, %llu stages\n", w, chunked,
                   req.reason == LKV_SCHED_FINISH_LENGTH ? "served" : "failed",
                   (unsigned long long)st.stage_moves);
            expect_empty(s);
            lkv_sched_destroy(&s);
            free(f);
        }
    }
}

/* Every combination of policy and knob completes a mixed workload with the
 * reference tokens, no leak, invariants and mirror intact after each step. */
static void workload_completes_without_leaks(void **state)
{
    (void)state;
    for (int combo = 0; combo < 16; combo++) {
        lkv_sched_config_t c = small_cfg(combo & 1 ? LKV_SCHED_POLICY_LAYERKV
                                                   : LKV_SCHED_POLICY_BASELINE,
                                         200);
        fx_req_t          *reqs = calloc(24, sizeof(*reqs));
        fx_t              *f    = calloc(1, sizeof(*f));
        fx_run_t           run  = {.max_steps = 5000, .check_every_step = 1};
        lkv_sched_t       *s    = NULL;
        lkv_sched_stats_t  st;

        assert_non_null(reqs);
        assert_non_null(f);
        c.chunked_prefill = (combo & 2) != 0;
        c.chunk_tokens    = 48;
        c.offload_rule    = combo & 4 ? LKV_SCHED_OFFLOAD_MAX
                                      : LKV_SCHED_OFFLOAD_NEEDED;
        c.decode_mode     = combo & 8 ? LKV_SCHED_DECODE_STREAM
                                      : LKV_SCHED_DECODE_AUTO;
        if (combo == 9) {
            c.decode_mode = LKV_SCHED_DECODE_RELOAD;
        }
        c.tpot_slo_ns = 50000000;
        fx_init(f, L_TEST);
        f->move_delay = combo % 3;
        for (int i = 0; i < 24; i++) {
            mk(&reqs[i], (uint64_t)i + 100, 20 + (i * 37) % 140,
               1 + (i * 13) % 40, (int64_t)i * 3000000);
        }
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        fx_run(s, f, reqs, 24, &run);
        lkv_sched_stats(s, &st);
        printf("# combo %2d %-8s chunk=%d rule=%d decode=%d: steps %d "
               "preempt %llu offload %llu reload %llu stage %llu\n",
               combo, lkv_sched_policy_name(c.policy), c.chunked_prefill,
               c.offload_rule, c.decode_mode, run.steps,
               (unsigned long long)st.preemptions,
               (unsigned long long)st.offload_moves,
               (unsigned long long)st.reload_moves,
               (unsigned long long)st.stage_moves);
        assert_int_equal(run.stuck, 0);
        assert_int_equal(run.invariant_failures, 0);
        assert_int_equal(run.mirror_failures, 0);
        assert_int_equal(run.event_errors, 0);
        assert_int_equal(f->errors, 0);
        expect_complete(f, reqs, 24);
        expect_empty(s);
        if (c.policy == LKV_SCHED_POLICY_BASELINE) {
            assert_int_equal(st.offload_moves + st.reload_moves +
                                 st.stage_moves,
                             0);
        }
        assert_int_equal(st.offloaded_bytes,
                         (int64_t)0 + st.offloaded_bytes); /* counted */
        lkv_sched_destroy(&s);
        free(reqs);
        free(f);
    }
}

static void preemption_recomputes_same_tokens(void **state)
{
    (void)state;
    for (int pol = 0; pol < 2; pol++) {
        lkv_sched_config_t c = small_cfg((lkv_sched_policy_t)pol, 70);
        fx_req_t           reqs[2];
        fx_t              *f   = calloc(1, sizeof(*f));
        fx_run_t           run = {.max_steps = 5000, .check_every_step = 1};
        lkv_sched_t       *s   = NULL;
        lkv_sched_stats_t  st;

        /* both fit at 60 tokens, but not at 100: decode must preempt */
        mk(&reqs[0], 1, 60, 40, 0);
        mk(&reqs[1], 2, 60, 40, 0);
        fx_init(f, L_TEST);
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        fx_run(s, f, reqs, 2, &run);
        lkv_sched_stats(s, &st);
        assert_int_equal(run.stuck, 0);
        /* baseline recomputes; layerkv offloads the newest request */
        assert_true(pol == LKV_SCHED_POLICY_BASELINE
                        ? st.preemptions > 0
                        : st.preemptions + st.swap_preemptions > 0);
        assert_int_equal(run.invariant_failures + run.mirror_failures, 0);
        expect_complete(f, reqs, 2);
        assert_true(reqs[0].timing.n_preemptions + reqs[1].timing.n_preemptions >
                    0);
        expect_empty(s);
        lkv_sched_destroy(&s);
        free(f);
    }
}

static void cancellation_frees_everything(void **state)
{
    (void)state;
    for (int pol = 0; pol < 2; pol++) {
        lkv_sched_config_t c = small_cfg((lkv_sched_policy_t)pol, 100);
        fx_req_t           reqs[4];
        fx_t              *f   = calloc(1, sizeof(*f));
        fx_run_t           run = {.max_steps = 5000, .check_every_step = 1};
        lkv_sched_t       *s   = NULL;
        lkv_sched_stats_t  st;

        for (int i = 0; i < 4; i++) {
            mk(&reqs[i], (uint64_t)i + 1, 60, 30, 0);
        }
        fx_init(f, L_TEST);
        f->move_delay         = 3; /* cancel while copies are in flight */
        run.cancel_id_at_step = 2;
        run.cancel_id         = 2;
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        /* cancel a queued one before it runs */
        {
            int32_t             p[64];
            lkv_sched_request_t q = {0};

            fx_prompt(&reqs[3], p);
            q.id = 99, q.prompt = p, q.n_prompt = 60, q.max_tokens = 5;
            assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
            assert_int_equal(lkv_sched_cancel(s, 99, 0), LKV_OK);
            assert_int_equal(lkv_sched_cancel(s, 99, 0), LKV_ERR_NOTFOUND);
            const lkv_sched_event_t *ev;
            int                      n;
            lkv_sched_take_events(s, &ev, &n);
            assert_int_equal(n, 1);
            assert_int_equal(ev[0].reason, LKV_SCHED_FINISH_CANCELLED);
        }
        fx_run(s, f, reqs, 4, &run);
        assert_int_equal(run.stuck, 0);
        assert_int_equal(run.invariant_failures + run.mirror_failures, 0);
        assert_true(reqs[1].finished);
        assert_int_equal(reqs[1].reason, LKV_SCHED_FINISH_CANCELLED);
        assert_true(reqs[1].n_tokens < 30);
        expect_complete(f, &reqs[0], 1);
        expect_complete(f, &reqs[2], 2);
        lkv_sched_stats(s, &st);
        assert_int_equal(st.cancellations, 2);
        expect_empty(s);
        lkv_sched_destroy(&s);
        free(f);
    }
}

/* A decode with a TPOT SLO it already misses leaves no slack (T_allow < 0);
 * a queued request runs only when its TTFT deadline gets close. */
static void anti_starvation_admits_near_deadline(void **state)
{
    (void)state;
    for (int guard = 0; guard < 2; guard++) {
        lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_LAYERKV, 400);
        fx_req_t           reqs[2];
        fx_t              *f   = calloc(1, sizeof(*f));
        fx_run_t           run = {.max_steps = 5000, .check_every_step = 1};
        lkv_sched_t       *s   = NULL;

        c.ttft_guard = guard ? 1.5f : 0.0f;
        mk(&reqs[0], 1, 32, 150, 0);
        reqs[0].tpot_slo_ns = 1000000; /* 1 ms: violated by every step */
        mk(&reqs[1], 2, 64, 4, 20000000);
        reqs[1].ttft_slo_ns = 100000000; /* 100 ms */
        fx_init(f, L_TEST);
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        fx_run(s, f, reqs, 2, &run);
        assert_int_equal(run.stuck, 0);
        expect_complete(f, reqs, 2);
        printf("# guard %.1f: queue %.1f ms (request 1 ends at %.1f ms)\n",
               (double)c.ttft_guard, reqs[1].timing.queue_ns / 1e6,
               (reqs[0].timing.finish_ns) / 1e6);
        if (guard) {
            assert_true(reqs[1].timing.anti_starved);
            assert_true(reqs[1].timing.queue_ns < 100000000);
            assert_true(reqs[1].timing.queue_ns > 50000000);
        } else {
            assert_false(reqs[1].timing.anti_starved);
            assert_true(reqs[1].timing.first_scheduled_ns >=
                        reqs[0].timing.last_token_ns);
        }
        expect_empty(s);
        lkv_sched_destroy(&s);
        free(f);
    }
}

static void hopeless_request_is_rejected_with_hint(void **state)
{
    lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_LAYERKV, 400);
    lkv_sched_t       *s = NULL;
    int32_t            p[200];
    lkv_sched_stats_t  st;
    int                n_rej = 0;

    (void)state;
    c.reject_hopeless = true;
    c.ttft_slo_ns     = 40000000; /* 40 ms; one 200-token prefill ~9 ms */
    for (int i = 0; i < 200; i++) {
        p[i] = i + 1;
    }
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
    for (int i = 0; i < 10; i++) {
        lkv_sched_request_t q     = {0};
        int64_t             retry = -1;
        lkv_status_t        rc;

        q.id = (uint64_t)i + 1, q.prompt = p, q.n_prompt = 200;
        q.max_tokens = 8;
        rc           = lkv_sched_submit(s, &q, 0, &retry);
        if (i < 3) {
            assert_int_equal(rc, LKV_OK);
        }
        if (rc == LKV_ERR_REJECTED) {
            n_rej++;
            assert_true(retry > 0);
            assert_non_null(strstr(lkv_sched_last_error(s), "retry"));
        }
    }
    assert_true(n_rej >= 5);
    lkv_sched_stats(s, &st);
    assert_int_equal(st.rejections, (uint64_t)n_rej);
    assert_int_equal(st.n_waiting, 10 - n_rej);
    /* a per-request SLO of "none" is never rejected */
    {
        lkv_sched_request_t q = {0};
        q.id = 77, q.prompt = p, q.n_prompt = 200, q.max_tokens = 8;
        q.ttft_slo_ns = -1;
        assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    }
    lkv_sched_destroy(&s);
}

static void chunked_prefill_splits_prompts(void **state)
{
    (void)state;
    for (int pol = 0; pol < 2; pol++) {
        lkv_sched_config_t     c = small_cfg((lkv_sched_policy_t)pol, 400);
        lkv_sched_t           *s = NULL;
        fx_t                  *f = calloc(1, sizeof(*f));
        fx_req_t               r;
        int32_t                p[100];
        lkv_sched_request_t    q = {0};
        const lkv_step_plan_t *plan;
        int                    chunks = 0, sampled = 0;

        c.chunked_prefill = true;
        c.chunk_tokens    = 32;
        mk(&r, 5, 100, 3, 0);
        fx_prompt(&r, p);
        fx_init(f, L_TEST);
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        q.id = 5, q.prompt = p, q.n_prompt = 100, q.max_tokens = 3;
        q.ignore_stop = true;
        assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
        while (lkv_sched_next_plan(s, f->now_ns, &plan) == LKV_OK) {
            const lkv_sched_event_t *ev;
            int                      n;

            if (plan->n_seqs == 1 && plan->seqs[0].n_tokens > 1) {
                chunks++;
                assert_true(plan->seqs[0].n_tokens <= 32);
                assert_int_equal(plan->seqs[0].sample,
                                 plan->seqs[0].pos0 + plan->seqs[0].n_tokens ==
                                     100);
            }
            assert_int_equal(
                lkv_sched_on_result(s, fx_exec(f, plan), f->now_ns), LKV_OK);
            lkv_sched_take_events(s, &ev, &n);
            for (int i = 0; i < n; i++) {
                sampled += ev[i].kind == LKV_SCHED_EV_TOKEN;
            }
        }
        assert_int_equal(chunks, 4); /* 32 + 32 + 32 + 4 */
        assert_int_equal(sampled, 3);
        expect_empty(s);
        lkv_sched_destroy(&s);
        free(f);
    }
}

static void failed_sequence_finishes_with_error(void **state)
{
    lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_LAYERKV, 200);
    fx_req_t           reqs[3];
    fx_t              *f   = calloc(1, sizeof(*f));
    fx_run_t           run = {.max_steps = 5000, .check_every_step = 1};
    lkv_sched_t       *s   = NULL;
    int                n_err = 0;

    (void)state;
    for (int i = 0; i < 3; i++) {
        mk(&reqs[i], (uint64_t)i + 1, 40, 10, 0);
    }
    fx_init(f, L_TEST);
    f->fail_seq_at_step = 3;
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
    fx_run(s, f, reqs, 3, &run);
    assert_int_equal(run.stuck, 0);
    for (int i = 0; i < 3; i++) {
        assert_true(reqs[i].finished);
        if (reqs[i].reason == LKV_SCHED_FINISH_ERROR) {
            n_err++;
            assert_int_equal(reqs[i].status, LKV_ERR_DEVICE);
        }
    }
    assert_int_equal(n_err, 1);
    expect_empty(s);
    lkv_sched_destroy(&s);
    free(f);
}

static void bad_input_is_refused(void **state)
{
    lkv_sched_config_t     c = small_cfg(LKV_SCHED_POLICY_BASELINE, 64);
    lkv_sched_t           *s = NULL;
    int32_t                p[4096];
    lkv_sched_request_t    q = {0};
    const lkv_step_plan_t *plan;
    lkv_step_result_t      res = {0};
    uint64_t               bogus = 12345;

    (void)state;
    for (int i = 0; i < 4096; i++) {
        p[i] = 1;
    }
    /* config */
    c.n_layers = 0;
    assert_int_equal(lkv_sched_create(&c, &s), LKV_ERR_INVALID);
    assert_null(s);
    c = small_cfg(LKV_SCHED_POLICY_BASELINE, 64);
    c.watermark = 2.0f;
    assert_int_equal(lkv_sched_create(&c, &s), LKV_ERR_INVALID);
    c = small_cfg(LKV_SCHED_POLICY_BASELINE, 64);
    c.max_queue = 2;
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);

    q.id = 1, q.prompt = p, q.n_prompt = 0, q.max_tokens = 4;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_INVALID);
    q.n_prompt = 10, q.max_tokens = 0;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_INVALID);
    q.max_tokens = 4, q.n_stop = 99;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_INVALID);
    q.n_stop = 0, q.n_prompt = 2048;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_TOOLONG);
    /* 8 layers x 9 blocks = 72 > 64 device blocks: never fits */
    q.n_prompt = 140;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_TOOLONG);
    assert_non_null(strstr(lkv_sched_last_error(s), "device-kv-blocks"));
    q.n_prompt = 10;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_INVALID);
    q.id = 2;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    q.id = 3;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_ERR_BUSY);

    /* results */
    assert_int_equal(lkv_sched_on_result(s, &res, 0), LKV_ERR_INVALID);
    assert_int_equal(lkv_sched_next_plan(s, 0, &plan), LKV_OK);
    assert_int_equal(lkv_sched_next_plan(s, 0, &plan), LKV_ERR_BUSY);
    res.step_id = plan->step_id + 1;
    assert_int_equal(lkv_sched_on_result(s, &res, 0), LKV_ERR_INVALID);
    res.step_id      = plan->step_id;
    res.n_moves_done = 1;
    res.moves_done   = &bogus;
    assert_int_equal(lkv_sched_on_result(s, &res, 0), LKV_ERR_INVALID);
    res.moves_done = NULL;
    assert_int_equal(lkv_sched_on_result(s, &res, 0), LKV_ERR_INVALID);
    /* a result missing its sequences fails those requests, nothing leaks */
    res.n_moves_done = 0;
    assert_int_equal(lkv_sched_on_result(s, &res, 1000), LKV_OK);
    {
        const lkv_sched_event_t *ev;
        int                      n;
        lkv_sched_take_events(s, &ev, &n);
        assert_int_equal(n, 2);
        assert_int_equal(ev[0].reason, LKV_SCHED_FINISH_ERROR);
        assert_int_equal(ev[0].status, LKV_ERR_PROTOCOL);
    }
    assert_int_equal(lkv_sched_next_plan(s, 0, &plan), LKV_OK);
    assert_int_equal(plan->n_finished, 2);
    res.step_id = plan->step_id;
    assert_int_equal(lkv_sched_on_result(s, &res, 0), LKV_OK);
    assert_int_equal(lkv_sched_next_plan(s, 0, &plan), LKV_AGAIN);
    expect_empty(s);
    lkv_sched_destroy(&s);
    lkv_sched_destroy(&s); /* NULL is fine */
}

static void stop_token_ends_request(void **state)
{
    lkv_sched_config_t c = small_cfg(LKV_SCHED_POLICY_LAYERKV, 200);
    lkv_sched_t       *s = NULL;
    fx_t              *f = calloc(1, sizeof(*f));
    fx_req_t           r;
    int32_t            p[40], ref[64];
    lkv_sched_request_t q = {0};
    const lkv_step_plan_t *plan;
    int                n_tok = 0;
    lkv_sched_finish_t reason = LKV_SCHED_FINISH_NONE;

    (void)state;
    fx_init(f, L_TEST);
    mk(&r, 9, 40, 64, 0);
    reference(f, &r, ref);
    fx_prompt(&r, p);
    c.n_stop      = 1;
    c.stop_ids[0] = ref[5]; /* the 6th token is a stop token */
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
    q.id = 9, q.prompt = p, q.n_prompt = 40, q.max_tokens = 64;
    assert_int_equal(lkv_sched_submit(s, &q, 0, NULL), LKV_OK);
    while (lkv_sched_next_plan(s, f->now_ns, &plan) == LKV_OK) {
        const lkv_sched_event_t *ev;
        int                      n;

        assert_int_equal(lkv_sched_on_result(s, fx_exec(f, plan), f->now_ns),
                         LKV_OK);
        lkv_sched_take_events(s, &ev, &n);
        for (int i = 0; i < n; i++) {
            if (ev[i].kind == LKV_SCHED_EV_TOKEN) {
                n_tok++;
            } else {
                reason = ev[i].reason;
            }
        }
    }
    /* the first earlier token equal to the stop id ends it */
    int expect = 0;
    while (ref[expect] != c.stop_ids[0]) {
        expect++;
    }
    assert_int_equal(n_tok, expect + 1);
    assert_int_equal(reason, LKV_SCHED_FINISH_STOP);
    expect_empty(s);
    lkv_sched_destroy(&s);
    free(f);
}

static uint64_t rnd(uint64_t *x, uint64_t n)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (*x >> 17) % n;
}

/* Random configurations, workloads, copy delays and cancellations: nothing
 * sticks, nothing leaks, invariants and the worker mirror hold every step,
 * and every request that ran to its length got the reference tokens. */
static void random_workloads_never_stick_or_leak(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        uint64_t           x    = seed * 7919;
        lkv_sched_config_t c    = small_cfg(rnd(&x, 2) ? LKV_SCHED_POLICY_LAYERKV
                                                       : LKV_SCHED_POLICY_BASELINE,
                                            40 + (int)rnd(&x, 300));
        fx_req_t          *reqs = calloc(20, sizeof(*reqs));
        fx_t              *f    = calloc(1, sizeof(*f));
        fx_run_t           run  = {.max_steps = 20000, .check_every_step = 1};
        lkv_sched_t       *s    = NULL;
        int32_t            ref[4096];
        static const int   hosts[3] = {0, 50, 4096};

        assert_non_null(reqs);
        assert_non_null(f);
        c.n_blocks[LKV_KV_TIER_HOST]   = hosts[rnd(&x, 3)];
        c.n_blocks[LKV_KV_TIER_REMOTE] = rnd(&x, 2) ? 100 : 0;
        c.chunked_prefill              = rnd(&x, 2);
        c.chunk_tokens                 = 8 + (int)rnd(&x, 64);
        c.max_batch_tokens             = 64 + (int)rnd(&x, 512);
        c.offload_rule    = (lkv_sched_offload_rule_t)rnd(&x, 2);
        c.decode_mode     = (lkv_sched_decode_mode_t)rnd(&x, 3);
        c.tpot_slo_ns     = (int64_t)rnd(&x, 3) * 20000000;
        c.ttft_slo_ns     = (int64_t)rnd(&x, 3) * 100000000;
        c.reject_hopeless = rnd(&x, 4) == 0;
        c.watermark       = rnd(&x, 2) ? 0.0f : 0.05f;
        c.max_seqs        = 2 + (int)rnd(&x, 30);
        c.min_retained_layers = 1 + (int)rnd(&x, 3);
        /* prefill staging window and layer choice (not from x: the other
         * draws stay as they were) */
        c.prefill_staging_window = (int)(seed % 4);
        c.offload_contiguous     = seed % 5 == 0;
        fx_init(f, L_TEST);
        f->move_delay       = (int)rnd(&x, 4);
        run.cancel_permille = rnd(&x, 2) ? 20 : 0;
        run.rng             = seed;
        for (int i = 0; i < 20; i++) {
            mk(&reqs[i], (uint64_t)i + 1, 1 + (int)rnd(&x, 150),
               1 + (int)rnd(&x, 60), (int64_t)rnd(&x, 400) * 1000000);
        }
        /* arrivals in order */
        for (int i = 1; i < 20; i++) {
            for (int k = i; k > 0 && reqs[k].arrival_ns < reqs[k - 1].arrival_ns;
                 k--) {
                fx_req_t t  = reqs[k];
                reqs[k]     = reqs[k - 1];
                reqs[k - 1] = t;
            }
        }
        assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
        fx_run(s, f, reqs, 20, &run);
        if (run.stuck || run.invariant_failures || run.mirror_failures ||
            run.event_errors || f->errors) {
            lkv_sched_stats_t st;

            lkv_sched_stats(s, &st);
            printf("# seed %llu: stuck %d inv %d mirror %d ev %d fx %d | "
                   "%s dev %d host %d rem %d chunk %d/%d rule %d dec %d "
                   "seqs %d | waiting %d running %d partial %d moves %d "
                   "used %d/%d/%d\n",
                   (unsigned long long)seed, run.stuck,
                   run.invariant_failures, run.mirror_failures,
                   run.event_errors, f->errors,
                   lkv_sched_policy_name(c.policy),
                   c.n_blocks[0], c.n_blocks[1], c.n_blocks[2],
                   c.chunked_prefill, c.chunk_tokens, c.offload_rule,
                   c.decode_mode, c.max_seqs, st.n_waiting, st.n_running,
                   st.n_partial, st.n_moves_inflight, st.blocks_used[0],
                   st.blocks_used[1], st.blocks_used[2]);
            for (int i = 0; i < 20; i++) {
                if (!reqs[i].finished) {
                    printf("#   req %llu prompt %d max %d got %d\n",
                           (unsigned long long)reqs[i].id, reqs[i].n_prompt,
                           reqs[i].max_tokens, reqs[i].n_tokens);
                }
            }
        }
        assert_int_equal(run.stuck, 0);
        assert_int_equal(run.invariant_failures, 0);
        assert_int_equal(run.mirror_failures, 0);
        assert_int_equal(run.event_errors, 0);
        assert_int_equal(f->errors, 0);
        assert_int_equal(f->stage_errors, 0);
        for (int i = 0; i < 20; i++) {
            assert_true(reqs[i].finished);
            if (reqs[i].submitted_status == LKV_OK &&
                reqs[i].reason != LKV_SCHED_FINISH_ERROR) {
                reference(f, &reqs[i], ref);
                assert_memory_equal(reqs[i].toks, ref,
                                    (size_t)reqs[i].n_tokens * sizeof(int32_t));
            }
            if (reqs[i].reason == LKV_SCHED_FINISH_LENGTH) {
                assert_int_equal(reqs[i].n_tokens, reqs[i].max_tokens);
            }
        }
        expect_empty(s);
        lkv_sched_destroy(&s);
        free(reqs);
        free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(baseline_admits_only_when_all_layers_fit),
        cmocka_unit_test(workload_completes_without_leaks),
        cmocka_unit_test(preemption_recomputes_same_tokens),
        cmocka_unit_test(cancellation_frees_everything),
        cmocka_unit_test(anti_starvation_admits_near_deadline),
        cmocka_unit_test(hopeless_request_is_rejected_with_hint),
        cmocka_unit_test(chunked_prefill_splits_prompts),
        cmocka_unit_test(failed_sequence_finishes_with_error),
        cmocka_unit_test(bad_input_is_refused),
        cmocka_unit_test(stop_token_ends_request),
        cmocka_unit_test(random_workloads_never_stick_or_leak),
        cmocka_unit_test(staging_window_admits_when_retained_layers_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
