/* test_staging_window.c - the LAYERKV scheduler (coordinator/) driving the
 * real step executor on stories260K with the prefill staging window: the
 * offloaded layers of a prefill are appended on the host and streamed
 * through W shared device staging sets (worker: block-level hazard tracking
 * orders each set's copy-in after the previous layer's write-back). Greedy
 * tokens must equal an all-device run for every W, chunked or not, with a
 * device pool too small to hold every layer of the batch.
 * Threading: single-threaded test (the CPU backend's copy queues run their
 * own threads).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/scheduler.h"
#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/model.h"
#include "worker/step_exec.h"

#define NREQ     6
#define MAX_OUT  8
#define BS       4

typedef struct {
    lkv_kern_backend_t *be;
    lkv_model_file_t   *mf;
    lkv_model_t        *m;
} fx_t;

typedef struct {
    int32_t toks[NREQ][MAX_OUT];
    int     n[NREQ];
    int     reason[NREQ];
    int64_t stages, offloads, steps;
} out_t;

static int32_t prompts[NREQ][64];
static int     plen[NREQ];

static int setup(void **state)
{
    fx_t       *fx = calloc(1, sizeof(*fx));
    char        p[4096];
    const char *src = getenv("LKV_SOURCE_DIR");

    snprintf(p, sizeof(p), "%s/models/stories260K/stories260K.gguf",
             src ? src : ".");
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &kc, &fx->be), LKV_OK);
    assert_int_equal(lkv_model_file_open(p, NULL, &fx->mf), LKV_OK);
    assert_int_equal(lkv_model_create(fx->be, fx->mf, &fx->m), LKV_OK);
    uint64_t x = 12345;
    for (int i = 0; i < NREQ; i++) {
        plen[i]       = 17 + (i * 13) % 40;
        prompts[i][0] = 1;
        for (int k = 1; k < plen[i]; k++) {
            x             = x * 6364136223846793005ULL + 1442695040888963407ULL;
            prompts[i][k] = 2 + (int32_t)((x >> 33) % 500);
        }
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lkv_model_destroy(&fx->m);
    lkv_model_file_close(&fx->mf);
    lkv_kern_backend_close(&fx->be);
    free(fx);
    return 0;
}

/* Serve the NREQ prompts with scheduler config c on a fresh executor. */
static void serve(fx_t *fx, const lkv_sched_config_t *c, out_t *o)
{
    lkv_step_exec_config_t xc = lkv_step_exec_config_default();
    lkv_step_exec_t       *x  = NULL;
    lkv_sched_t           *s  = NULL;
    int64_t                now = 0;
    int                    finished = 0;
    lkv_sched_stats_t      st;

    memset(o, 0, sizeof(*o));
    xc.block_size           = BS;
    xc.n_device_blocks      = 512;
    xc.n_host_blocks        = 512;
    xc.max_seqs             = NREQ;
    xc.max_batch_tokens     = 512;
    xc.max_blocks_per_layer = 32;
    assert_true(c->n_blocks[LKV_KV_TIER_DEVICE] <= xc.n_device_blocks);
    assert_int_equal(lkv_step_exec_create(fx->m, &xc, &x), LKV_OK);
    assert_int_equal(lkv_sched_create(c, &s), LKV_OK);
    for (int i = 0; i < NREQ; i++) {
        lkv_sched_request_t q = {0};
        q.id                  = (uint64_t)i + 1;
        q.prompt              = prompts[i];
        q.n_prompt            = plen[i];
        q.max_tokens          = MAX_OUT;
        q.ignore_stop         = true;
        q.sampling.temperature = 0.0f;
        assert_int_equal(lkv_sched_submit(s, &q, now, NULL), LKV_OK);
    }
    /* steps that only collect background copies (reloads) can be many
     * when the machine is loaded: the bound only catches a hang */
    for (int step = 0;
         step < 200000 && !(finished == NREQ && lkv_sched_idle(s)); step++) {
        const lkv_step_plan_t   *plan;
        const lkv_sched_event_t *ev;
        lkv_step_result_t        res;
        int                      n_ev = 0;
        lkv_status_t             rc   = lkv_sched_next_plan(s, now, &plan);

        if (rc == LKV_AGAIN) {
            if (finished == NREQ) {
                break;
            }
            now += 1000000;
            continue;
        }
        assert_int_equal(rc, LKV_OK);
        assert_int_equal(lkv_step_exec_run(x, plan, &res), LKV_OK);
        assert_int_equal(res.n_moves_failed, 0);
        now += res.step_ns > 0 ? res.step_ns : 1000;
        assert_int_equal(lkv_sched_on_result(s, &res, now), LKV_OK);
        assert_int_equal(lkv_kv_alloc_check(lkv_sched_kv(s)), LKV_OK);
        lkv_sched_take_events(s, &ev, &n_ev);
        for (int i = 0; i < n_ev; i++) {
            int r = (int)ev[i].id - 1;
            assert_true(r >= 0 && r < NREQ);
            if (ev[i].kind == LKV_SCHED_EV_TOKEN) {
                assert_true(o->n[r] < MAX_OUT);
                o->toks[r][o->n[r]++] = ev[i].token;
            } else {
                o->reason[r] = ev[i].reason;
                finished++;
            }
        }
        o->steps++;
    }
    assert_int_equal(finished, NREQ);
    lkv_sched_stats(s, &st);
    o->stages   = (int64_t)st.stage_moves;
    o->offloads = (int64_t)st.offload_moves;
    assert_true(lkv_sched_idle(s));
    lkv_sched_destroy(&s);
    assert_int_equal(lkv_step_exec_sync(x), LKV_OK);
    lkv_step_exec_destroy(&x);
}

static lkv_sched_config_t cfg_for(const fx_t *fx, lkv_sched_policy_t pol,
                                  int dev_blocks)
{
    lkv_sched_config_t c = lkv_sched_config_default();

    c.policy                       = pol;
    c.n_layers                     = fx->m->cfg.n_layers;
    c.block_size                   = BS;
    c.block_bytes = (int64_t)lkv_model_block_bytes(fx->m, BS, LKV_DTYPE_F32);
    c.n_blocks[LKV_KV_TIER_DEVICE] = dev_blocks;
    c.n_blocks[LKV_KV_TIER_HOST]   = 512;
    c.max_seqs                     = NREQ;
    c.max_seq_len                  = 128;
    c.max_batch_tokens             = 512;
    c.watermark                    = 0.0f;
    c.adapt                        = false;
    return c;
}

static void staging_window_tokens_equal_all_device_run(void **state)
{
    fx_t  *fx  = *state;
    out_t *ref = malloc(sizeof(*ref));
    out_t *got = malloc(sizeof(*got));
    int    L   = fx->m->cfg.n_layers;

    assert_non_null(ref);
    assert_non_null(got);
    lkv_sched_config_t c = cfg_for(fx, LKV_SCHED_POLICY_BASELINE, 512);
    c.prefill_staging_window = 0;
    serve(fx, &c, ref);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(ref->reason[i], LKV_SCHED_FINISH_LENGTH);
        assert_int_equal(ref->n[i], MAX_OUT);
    }
    /* the longest request (64 tokens) needs 16 blocks per layer: it fits
     * alone (its decode reloads every layer), the batch does not */
    for (int chunked = 0; chunked < 2; chunked++) {
        for (int contig = 0; contig < 2; contig++) {
            for (int w = 0; w <= 3; w++) {
                c = cfg_for(fx, LKV_SCHED_POLICY_LAYERKV, 18 * L);
                c.prefill_staging_window = w;
                c.offload_rule           = LKV_SCHED_OFFLOAD_MAX;
                c.offload_contiguous     = contig;
                c.chunked_prefill        = chunked;
                c.chunk_tokens           = 24;
                serve(fx, &c, got);
                printf("# W=%d chunked=%d contiguous=%d: %lld steps, %lld "
                       "stages, %lld offloads\n",
                       w, chunked, contig, (long long)got->steps,
                       (long long)got->stages, (long long)got->offloads);
                if (w > 0) {
                    assert_true(got->stages > 0);
                }
                for (int i = 0; i < NREQ; i++) {
                    assert_int_equal(got->reason[i], LKV_SCHED_FINISH_LENGTH);
                    assert_int_equal(got->n[i], ref->n[i]);
                    assert_memory_equal(got->toks[i], ref->toks[i],
                                        (size_t)ref->n[i] * sizeof(int32_t));
                }
            }
        }
    }
    free(ref);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            staging_window_tokens_equal_all_device_run, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
