/* test_sched_compare.c - issue 4 item 3 at the scheduler level: one arrival
 * sequence of long prompts against a tight device pool, run under the
 * baseline and the layerkv policy with the same fake executor. layerkv must
 * show a lower mean queueing time, and both must return every request
 * complete and uncorrupted with no block left behind. Prints the numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>

#include "tests/unit/coordinator/sched_fake.h"

#define N_REQ 40

typedef struct {
    double queue_ms, ttft_ms, tpot_ms, e2e_ms, makespan_ms;
    int    preemptions, offloads;
} outcome_t;

static void workload(fx_req_t *reqs)
{
    uint64_t x = 12345;
    int64_t  t = 0;

    for (int i = 0; i < N_REQ; i++) {
        double u;

        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        u = (double)(x >> 11) / 9007199254740992.0;
        t += (int64_t)(-log(1.0 - u) * 600e6); /* Poisson, 1.67 req/s */
        memset(&reqs[i], 0, sizeof(reqs[i]));
        reqs[i].id         = (uint64_t)i + 1;
        reqs[i].n_prompt   = 512 + (int)((x >> 20) % 1024);
        reqs[i].max_tokens = 32 + (int)((x >> 40) % 96);
        reqs[i].arrival_ns = t;
    }
}

static void run_policy(lkv_sched_policy_t pol, int64_t tpot_slo_ns,
                       outcome_t *o)
{
    lkv_sched_config_t c    = lkv_sched_config_default();
    fx_req_t          *reqs = calloc(N_REQ, sizeof(*reqs));
    fx_t              *f    = calloc(1, sizeof(*f));
    fx_run_t           run  = {.max_steps = 20000, .check_every_step = 7};
    lkv_sched_t       *s    = NULL;
    lkv_sched_stats_t  st;
    int32_t            buf[4096];
    int                n_tpot = 0;

    assert_non_null(reqs);
    assert_non_null(f);
    /* a 7B-class model: 32 layers, 256 KiB per 16-token layer-block; a
     * device pool of ~2.5 long prompts (all layers), PCIe-class link */
    c.policy                       = pol;
    c.n_layers                     = 32;
    c.block_size                   = 16;
    c.block_bytes                  = 256 * 1024;
    c.n_blocks[LKV_KV_TIER_DEVICE] = 6000;
    c.n_blocks[LKV_KV_TIER_HOST]   = 120000;
    c.max_seq_len                  = 4096;
    c.watermark                    = 0.01f;
    c.tpot_slo_ns                  = tpot_slo_ns;
    c.pf_c0_ns = 10e6, c.pf_c1_ns = 100000, c.pf_c2_ns = 0;
    c.dc_c0_ns = 10e6, c.dc_c1_ns = 500000, c.dc_c2_ns = 0;
    fx_init(f, 32);
    f->base_ns          = 10000000;
    f->prefill_tok_ns   = 100000;
    f->decode_seq_ns    = 500000;
    f->block_bytes      = c.block_bytes;
    f->link_bytes_per_s = 16e9;
    f->move_delay       = 1;
    workload(reqs);
    assert_int_equal(lkv_sched_create(&c, &s), LKV_OK);
    fx_run(s, f, reqs, N_REQ, &run);
    assert_int_equal(run.stuck, 0);
    assert_int_equal(run.invariant_failures, 0);
    assert_int_equal(run.mirror_failures, 0);
    assert_int_equal(run.event_errors, 0);
    assert_int_equal(f->errors, 0);
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < N_REQ; i++) {
        const fx_req_t *r = &reqs[i];

        /* complete and uncorrupted: the reference continuation */
        assert_int_equal(r->submitted_status, LKV_OK);
        assert_int_equal(r->reason, LKV_SCHED_FINISH_LENGTH);
        assert_int_equal(r->n_tokens, r->max_tokens);
        fx_prompt(r, buf);
        for (int k = 0; k < r->max_tokens; k++) {
            buf[r->n_prompt + k] = fx_next_token(f, buf, r->n_prompt + k);
            assert_int_equal(r->toks[k], buf[r->n_prompt + k]);
        }
        o->queue_ms += r->timing.queue_ns / 1e6;
        o->ttft_ms += (r->timing.first_token_ns - r->arrival_ns) / 1e6;
        o->e2e_ms += (r->timing.last_token_ns - r->arrival_ns) / 1e6;
        if (r->timing.n_generated > 1) {
            o->tpot_ms += (r->timing.last_token_ns - r->timing.first_token_ns) /
                          1e6 / (r->timing.n_generated - 1);
            n_tpot++;
        }
        if (r->timing.last_token_ns / 1e6 > o->makespan_ms) {
            o->makespan_ms = r->timing.last_token_ns / 1e6;
        }
    }
    o->queue_ms /= N_REQ;
    o->ttft_ms /= N_REQ;
    o->e2e_ms /= N_REQ;
    o->tpot_ms /= n_tpot > 0 ? n_tpot : 1;
    lkv_sched_stats(s, &st);
    o->preemptions = (int)(st.preemptions + st.swap_preemptions);
    o->offloads    = (int)st.offload_moves;
    for (int t = 0; t < LKV_KV_TIER_COUNT; t++) {
        assert_int_equal(st.blocks_used[t], 0);
    }
    assert_true(lkv_sched_idle(s));
    lkv_sched_destroy(&s);
    free(reqs);
    free(f);
}

static void print_outcome(const char *name, const outcome_t *o)
{
    printf("# %-8s mean queue %7.1f ms  ttft %7.1f ms  tpot %5.1f ms  "
           "e2e %7.1f ms  makespan %7.1f ms  preempt %d  offload moves %d\n",
           name, o->queue_ms, o->ttft_ms, o->tpot_ms, o->e2e_ms,
           o->makespan_ms, o->preemptions, o->offloads);
}

static void layerkv_queues_less_than_baseline(void **state)
{
    (void)state;
    printf("# %d long prompts (512-1535 tokens, 32-127 out), Poisson 1.67 "
           "req/s, 32 layers, 6000 device layer-blocks; fake executor on a "
           "simulated clock\n",
           N_REQ);
    for (int slo = 0; slo < 2; slo++) {
        int64_t   tpot = slo ? 30000000 : 0;
        outcome_t b, l;

        run_policy(LKV_SCHED_POLICY_BASELINE, tpot, &b);
        run_policy(LKV_SCHED_POLICY_LAYERKV, tpot, &l);
        printf("# tpot slo: %s\n", slo ? "30 ms" : "none");
        print_outcome("baseline", &b);
        print_outcome("layerkv", &l);
        assert_true(l.offloads > 0);
        assert_true(l.queue_ms < b.queue_ms);
        if (slo) {
            assert_true(l.tpot_ms < 30.0); /* the TPOT guard holds on average */
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layerkv_queues_less_than_baseline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
