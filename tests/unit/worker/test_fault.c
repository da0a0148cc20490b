/* test_fault.c - error paths of the worker forced through a failing backend
 * seam: a copy of the CPU ops table whose slots fail on demand. Offload
 * copies that fail leave layers on the device and generation stays exact;
 * failing reloads, stages and kernels fail the affected requests with a
 * status and leak nothing; allocation failures at every point of model,
 * forward, step executor and engine creation unwind cleanly. The wrapper is
 * not the CPU ops table, so the model takes the device-backend path
 * (weights uploaded, per-layer metadata regions) on host memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/engine.h"
#include "worker/model.h"

#define NREQ   6
#define MAXGEN 24

static struct {
    int fail_copy_kind; /* -1 none, else lkv_kern_copy_kind_t to fail */
    int fail_attn_at;   /* fail the n-th attention call (-1: never) */
    int n_attn;
    int fail_alloc_at; /* fail the n-th mem_alloc/host_alloc (-1: never) */
    int n_alloc;
} F;

static lkv_kern_ops_t fault_ops;

static lkv_status_t f_copy_async(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_kern_copy_kind_t kind, void *dst,
                                 const void *src, size_t bytes)
{
    if ((int)kind == F.fail_copy_kind) {
        return LKV_ERR_DEVICE;
    }
    return lkv_kern_cpu_ops.copy_async(be, q, kind, dst, src, bytes);
}

static lkv_status_t f_attention(lkv_kern_backend_t *be, float *out,
                                const float *q, const void *kv,
                                lkv_dtype_t dt, const lkv_kern_attn_t *a)
{
    if (F.n_attn++ == F.fail_attn_at) {
        return LKV_ERR_DEVICE;
    }
    return lkv_kern_cpu_ops.attention(be, out, q, kv, dt, a);
}

static lkv_status_t f_mem_alloc(lkv_kern_backend_t *be, size_t bytes, void **p)
{
    if (F.n_alloc++ == F.fail_alloc_at) {
        return LKV_ERR_NOMEM;
    }
    return lkv_kern_cpu_ops.mem_alloc(be, bytes, p);
}

static lkv_status_t f_host_alloc(lkv_kern_backend_t *be, size_t bytes,
                                 void **p)
{
    if (F.n_alloc++ == F.fail_alloc_at) {
        return LKV_ERR_NOMEM;
    }
    return lkv_kern_cpu_ops.host_alloc(be, bytes, p);
}

typedef struct {
    lkv_kern_backend_t *real;
    lkv_kern_backend_t  fake;
    lkv_model_file_t   *mf;
    lkv_model_t        *m;
} fx_t;

static void reset_faults(void)
{
    memset(&F, 0, sizeof(F));
    F.fail_copy_kind = -1;
    F.fail_attn_at   = -1;
    F.fail_alloc_at  = -1;
}

static int setup(void **state)
{
    fx_t       *fx = calloc(1, sizeof(*fx));
    char        p[4096];
    const char *src = getenv("LKV_SOURCE_DIR");

    reset_faults();
    fault_ops            = lkv_kern_cpu_ops;
    fault_ops.name       = "cpu-faulty";
    fault_ops.copy_async = f_copy_async;
    fault_ops.attention  = f_attention;
    fault_ops.mem_alloc  = f_mem_alloc;
    fault_ops.host_alloc = f_host_alloc;
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &kc, &fx->real), LKV_OK);
    fx->fake     = *fx->real;
    fx->fake.ops = &fault_ops;
    snprintf(p, sizeof(p), "%s/models/stories260K/stories260K.gguf",
             src ? src : ".");
    assert_int_equal(lkv_model_file_open(p, NULL, &fx->mf), LKV_OK);
    assert_int_equal(lkv_model_create(&fx->fake, fx->mf, &fx->m), LKV_OK);
    assert_false(fx->m->on_host); /* uploaded: the device-backend path */
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lkv_model_destroy(&fx->m);
    lkv_model_file_close(&fx->mf);
    lkv_kern_backend_close(&fx->real);
    free(fx);
    return 0;
}

typedef struct {
    int32_t      toks[NREQ][MAXGEN];
    int          n[NREQ];
    lkv_status_t st[NREQ];
    int          ended[NREQ];
} out_t;

static void on_tok(void *ctx, int req, int32_t tok, lkv_status_t st)
{
    out_t *o = ctx;
    if (tok >= 0) {
        assert_true(o->n[req] < MAXGEN);
        o->toks[req][o->n[req]++] = tok;
    } else {
        o->st[req] = st;
        o->ended[req]++;
    }
}

static const int32_t prompts[NREQ][8] = {
    {1, 274, 287, 269, 345, 400, 428}, {1, 403, 407}, {1, 274},
    {1, 385, 410, 317, 407, 261},      {1, 432},      {1, 403, 407, 261, 378}};
static const int plen[NREQ] = {7, 3, 2, 6, 2, 5};

static lkv_status_t gen(fx_t *fx, lkv_engine_config_t *cfg, out_t *o)
{
    lkv_engine_request_t r[NREQ];
    lkv_engine_t        *e = NULL;
    lkv_status_t         st;

    memset(r, 0, sizeof(r));
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < NREQ; i++) {
        r[i].prompt     = prompts[i];
        r[i].n_prompt   = plen[i];
        r[i].max_tokens = MAXGEN - i;
    }
    cfg->max_seqs = NREQ;
    st            = lkv_engine_create(fx->m, cfg, &e);
    if (st != LKV_OK) {
        return st;
    }
    st = lkv_engine_generate(e, r, NREQ, on_tok, o);
    lkv_engine_destroy(&e);
    return st;
}

static void fault_failed_offloads_keep_layers_and_tokens(void **state)
{
    fx_t               *fx  = *state;
    out_t              *ref = malloc(sizeof(*ref)), *got = malloc(sizeof(*got));
    lkv_engine_config_t cfg = lkv_engine_config_default();

    reset_faults();
    assert_int_equal(gen(fx, &cfg, ref), LKV_OK);
    F.fail_copy_kind = LKV_KERN_COPY_D2H;
    for (int mode = 0; mode < 2; mode++) {
        cfg             = lkv_engine_config_default();
        cfg.offload     = LKV_OFFLOAD_INTERLEAVE;
        cfg.decode_mode = mode ? LKV_DECODE_STREAM : LKV_DECODE_RELOAD;
        assert_int_equal(gen(fx, &cfg, got), LKV_OK);
        for (int i = 0; i < NREQ; i++) {
            assert_int_equal(got->st[i], LKV_OK);
            assert_int_equal(got->n[i], ref->n[i]);
            assert_memory_equal(got->toks[i], ref->toks[i],
                                (size_t)ref->n[i] * sizeof(int32_t));
        }
    }
    free(ref);
    free(got);
}

static void fault_failed_reloads_and_stages_fail_requests(void **state)
{
    fx_t               *fx = *state;
    out_t              *o  = malloc(sizeof(*o));
    lkv_engine_config_t cfg;

    for (int mode = 0; mode < 2; mode++) {
        reset_faults();
        F.fail_copy_kind = LKV_KERN_COPY_H2D;
        cfg              = lkv_engine_config_default();
        cfg.offload      = LKV_OFFLOAD_ALL_BUT_ONE;
        cfg.decode_mode  = mode ? LKV_DECODE_STREAM : LKV_DECODE_RELOAD;
        /* the engine checks that every block is free at the end */
        assert_int_equal(gen(fx, &cfg, o), LKV_OK);
        for (int i = 0; i < NREQ; i++) {
            assert_int_equal(o->ended[i], 1);
            assert_int_equal(o->st[i], LKV_ERR_IO);
            assert_int_equal(o->n[i], 1); /* the prefill's token only */
        }
    }
    free(o);
}

static void fault_failed_kernel_fails_its_step_only(void **state)
{
    fx_t               *fx  = *state;
    out_t              *o   = malloc(sizeof(*o));
    lkv_engine_config_t cfg = lkv_engine_config_default();
    int                 n_failed = 0, n_ok = 0;

    reset_faults();
    cfg.max_batch_tokens = 8; /* prompts arrive over several steps */
    F.fail_attn_at       = 2; /* layer 2 of the first step (reqs 0, 1) */
    assert_int_equal(gen(fx, &cfg, o), LKV_OK);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(o->ended[i], 1);
        n_failed += o->st[i] == LKV_ERR_DEVICE;
        n_ok += o->st[i] == LKV_OK;
    }
    assert_true(n_failed > 0);
    assert_true(n_ok > 0);
    assert_int_equal(n_failed + n_ok, NREQ);
    free(o);
}

static void fault_allocation_failures_unwind(void **state)
{
    fx_t *fx = *state;
    int   k;

    /* every allocation of model + engine creation, failed one at a time */
    for (k = 0;; k++) {
        lkv_model_t        *m = NULL;
        lkv_engine_t       *e = NULL;
        lkv_engine_config_t c = lkv_engine_config_default();
        lkv_status_t        st;

        reset_faults();
        F.fail_alloc_at = k;
        st              = lkv_model_create(&fx->fake, fx->mf, &m);
        if (st == LKV_OK) {
            st = lkv_engine_create(m, &c, &e);
        }
        lkv_engine_destroy(&e);
        lkv_model_destroy(&m);
        if (F.n_alloc <= k) {
            assert_int_equal(st, LKV_OK); /* no allocation left to fail */
            break;
        }
        assert_int_not_equal(st, LKV_OK);
        assert_null(e);
    }
    assert_true(k > 50); /* weights, scratch, pools were all covered */
    reset_faults();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fault_failed_offloads_keep_layers_and_tokens),
        cmocka_unit_test(fault_failed_reloads_and_stages_fail_requests),
        cmocka_unit_test(fault_failed_kernel_fails_its_step_only),
        cmocka_unit_test(fault_allocation_failures_unwind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
