/* test_cuda_parity.c - every op of the CUDA backend against the CPU
 * reference backend on the same inputs, with the per-op tolerances of
 * docs/cuda.md, plus argument errors and the CUDA-only extras (fused
 * add+RMSNorm, block copies). Exit 0 = all pass, 1 = a failure, 77 = no GPU.
 * Single-threaded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "kernels/cuda/cuda_ext.h"
#include "tests/gpu/gpu_util.h"

static int n_fail, n_pass;

static void check(const char *what, double err, double tol)
{
    int ok = err <= tol;

    printf("%-4s %-48s err %.3g (tol %.3g)\n", ok ? "ok" : "FAIL", what, err,
           tol);
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
    }
}

static void check_true(const char *what, int ok)
{
    printf("%-4s %s\n", ok ? "ok" : "FAIL", what);
    if (ok) {
        n_pass++;
    } else {
        n_fail++;
    }
}

static const lkv_dtype_t dtypes[3] = {LKV_DTYPE_F32, LKV_DTYPE_F16,
                                      LKV_DTYPE_BF16};

static void test_embedding(pair_t *p)
{
    for (int d = 0; d < 3; d++) {
        int     vocab = 301, dim = 67, n = 9;
        void   *tab   = gpu_rand_dtype((size_t)vocab * dim, dtypes[d], 1.0f);
        int32_t ids[9] = {0, 300, 5, 5, 17, 299, 1, 150, 42};
        pbuf_t  bt  = pb_new(p, (size_t)vocab * dim * lkv_dtype_size(dtypes[d]),
                             tab);
        pbuf_t  bi  = pb_new(p, sizeof(ids), ids);
        pbuf_t  bo  = pb_new(p, (size_t)n * dim * 4, NULL);
        float  *oc  = malloc(bo.bytes), *og = malloc(bo.bytes);
        char    name[64];

        GPU_OK(LKV_KERN_CALL(p->cpu, embedding, bo.c, bt.c, dtypes[d], bi.c, n,
                             dim));
        GPU_OK(LKV_KERN_CALL(p->gpu, embedding, bo.g, bt.g, dtypes[d], bi.g, n,
                             dim));
        pb_get(p, &bo, oc, og);
        snprintf(name, sizeof(name), "embedding %s", lkv_dtype_name(dtypes[d]));
        check(name, gpu_rel_err(oc, og, (size_t)n * dim), 0.0);
        pb_free(p, &bt);
        pb_free(p, &bi);
        pb_free(p, &bo);
        free(tab);
        free(oc);
        free(og);
    }
}

static void test_rmsnorm_add_swiglu(pair_t *p)
{
    int    n = 7, dim = 4096 + 3;
    size_t ne = (size_t)n * dim;
    float *x = gpu_rand_f32(ne, 3.0f), *b = gpu_rand_f32(ne, 3.0f);
    float *oc = malloc(ne * 4), *og = malloc(ne * 4);
    pbuf_t bx = pb_new(p, ne * 4, x), bb = pb_new(p, ne * 4, b);
    pbuf_t by = pb_new(p, ne * 4, NULL);
    char   name[64];

    for (int d = 0; d < 3; d++) {
        void  *w  = gpu_rand_dtype((size_t)dim, dtypes[d], 1.0f);
        pbuf_t bw = pb_new(p, (size_t)dim * lkv_dtype_size(dtypes[d]), w);

        GPU_OK(LKV_KERN_CALL(p->cpu, rmsnorm, by.c, bx.c, bw.c, dtypes[d], n,
                             dim, 1e-5f));
        GPU_OK(LKV_KERN_CALL(p->gpu, rmsnorm, by.g, bx.g, bw.g, dtypes[d], n,
                             dim, 1e-5f));
        pb_get(p, &by, oc, og);
        snprintf(name, sizeof(name), "rmsnorm %s", lkv_dtype_name(dtypes[d]));
        check(name, gpu_rel_err(oc, og, ne), 1e-5);

        /* fused residual add + norm on cuda vs add then norm on cpu */
        if (d == 2) {
            pbuf_t br = pb_new(p, ne * 4, x);
            float *rc = malloc(ne * 4), *rg = malloc(ne * 4);

            GPU_OK(LKV_KERN_CALL(p->cpu, add, br.c, br.c, bb.c, ne));
            GPU_OK(LKV_KERN_CALL(p->cpu, rmsnorm, by.c, br.c, bw.c, dtypes[d],
                                 n, dim, 1e-5f));
            GPU_OK(lkv_cuda_add_rmsnorm(p->gpu, by.g, br.g, bb.g, bw.g,
                                        dtypes[d], n, dim, 1e-5f));
            pb_get(p, &by, oc, og);
            pb_get(p, &br, rc, rg);
            check("add_rmsnorm (fused) output", gpu_rel_err(oc, og, ne), 1e-5);
            check("add_rmsnorm (fused) residual", gpu_rel_err(rc, rg, ne), 0.0);
            pb_free(p, &br);
            free(rc);
            free(rg);
        }
        pb_free(p, &bw);
        free(w);
    }
    /* in place y == x */
    GPU_OK(LKV_KERN_CALL(p->cpu, add, by.c, bx.c, bb.c, ne));
    GPU_OK(LKV_KERN_CALL(p->gpu, add, by.g, bx.g, bb.g, ne));
    pb_get(p, &by, oc, og);
    check("add", gpu_rel_err(oc, og, ne), 0.0);
    GPU_OK(LKV_KERN_CALL(p->cpu, swiglu, by.c, bx.c, bb.c, ne));
    GPU_OK(LKV_KERN_CALL(p->gpu, swiglu, by.g, bx.g, bb.g, ne));
    pb_get(p, &by, oc, og);
    check("swiglu", gpu_rel_err(oc, og, ne), 1e-6);
    pb_free(p, &bx);
    pb_free(p, &bb);
    pb_free(p, &by);
    free(x);
    free(b);
    free(oc);
    free(og);
}

static void test_matmul(pair_t *p)
{
    static const int shapes[][3] = {
        /* n, in, out: GEMV (vector + scalar tails) and cuBLAS paths */
        {1, 4096, 1024}, {3, 1024, 333}, {4, 517, 129}, {5, 256, 256},
        {17, 1024, 768}, {64, 288, 32000 / 8},
    };
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int    n = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x    = gpu_rand_f32((size_t)n * in, 1.0f);
        float *bias = gpu_rand_f32((size_t)out, 1.0f);
        pbuf_t bx = pb_new(p, (size_t)n * in * 4, x);
        pbuf_t bb = pb_new(p, (size_t)out * 4, bias);
        pbuf_t by = pb_new(p, (size_t)n * out * 4, NULL);
        float *oc = malloc(by.bytes), *og = malloc(by.bytes);

        for (int d = 0; d < 3; d++) {
            void  *w  = gpu_rand_dtype((size_t)in * out, dtypes[d], 0.05f);
            pbuf_t bw = pb_new(p, (size_t)in * out * lkv_dtype_size(dtypes[d]),
                               w);
            char   name[96];
            /* GEMV keeps f32 activations; cuBLAS rounds them to the weight
             * dtype (bf16: 8 mantissa bits, f16: 11) */
            double tol = n <= 4 || dtypes[d] == LKV_DTYPE_F32 ? 1e-4
                         : dtypes[d] == LKV_DTYPE_F16          ? 3e-3
                                                               : 2e-2;

            for (int wb = 0; wb < 2; wb++) {
                const void *bc = wb ? bb.c : NULL, *bg = wb ? bb.g : NULL;
                GPU_OK(LKV_KERN_CALL(p->cpu, matmul, by.c, bx.c, bw.c,
                                     dtypes[d], bc, n, in, out));
                GPU_OK(LKV_KERN_CALL(p->gpu, matmul, by.g, bx.g, bw.g,
                                     dtypes[d], bg, n, in, out));
                pb_get(p, &by, oc, og);
                snprintf(name, sizeof(name), "matmul %s n=%d in=%d out=%d%s",
                         lkv_dtype_name(dtypes[d]), n, in, out,
                         wb ? " +bias" : "");
                check(name, gpu_rel_err(oc, og, (size_t)n * out), tol);
            }
            pb_free(p, &bw);
            free(w);
        }
        pb_free(p, &bx);
        pb_free(p, &bb);
        pb_free(p, &by);
        free(x);
        free(bias);
        free(oc);
        free(og);
    }
}

static void test_rope(pair_t *p)
{
    int     n = 5, nh = 6, hd = 64;
    size_t  ne = (size_t)n * nh * hd;
    float  *x  = gpu_rand_f32(ne, 2.0f);
    int32_t pos[5] = {0, 1, 17, 1000, 4095};
    float   invf[32];
    float  *oc = malloc(ne * 4), *og = malloc(ne * 4);
    pbuf_t  bx = pb_new(p, ne * 4, x), bp = pb_new(p, sizeof(pos), pos);
    pbuf_t  bf;
    char    name[64];

    for (int i = 0; i < 32; i++) {
        invf[i] = powf(10000.0f, -2.0f * i / (float)hd);
    }
    bf = pb_new(p, sizeof(invf), invf);
    for (int style = 0; style < 2; style++) {
        for (int rd = 0; rd < 2; rd++) {
            int rot = rd ? 32 : hd; /* partial rotary dims */
            pb_put(p, &bx, x);
            GPU_OK(LKV_KERN_CALL(p->cpu, rope, bx.c, bp.c, n, nh, hd, rot,
                                 (lkv_rope_style_t)style, bf.c));
            GPU_OK(LKV_KERN_CALL(p->gpu, rope, bx.g, bp.g, n, nh, hd, rot,
                                 (lkv_rope_style_t)style, bf.g));
            pb_get(p, &bx, oc, og);
            snprintf(name, sizeof(name), "rope %s rot_dim=%d",
                     style ? "halves" : "adjacent", rot);
            check(name, gpu_rel_err(oc, og, ne), 1e-5);
        }
    }
    pb_free(p, &bx);
    pb_free(p, &bp);
    pb_free(p, &bf);
    free(x);
    free(oc);
    free(og);
}

static void test_gather_rows(pair_t *p)
{
    int     n = 4, rows = 9, width = 129;
    float  *x   = gpu_rand_f32((size_t)rows * width, 1.0f);
    int32_t idx[4] = {8, 0, 3, 3};
    int32_t inpl[4] = {2, 5, 7, 8}; /* in place: later rows only */
    pbuf_t  bx = pb_new(p, (size_t)rows * width * 4, x);
    pbuf_t  bi = pb_new(p, sizeof(idx), idx);
    pbuf_t  by = pb_new(p, (size_t)n * width * 4, NULL);
    float  *oc = malloc(bx.bytes), *og = malloc(bx.bytes);

    GPU_OK(LKV_KERN_CALL(p->cpu, gather_rows, by.c, bx.c, bi.c, n, width));
    GPU_OK(LKV_KERN_CALL(p->gpu, gather_rows, by.g, bx.g, bi.g, n, width));
    pb_get(p, &by, oc, og);
    check("gather_rows", gpu_rel_err(oc, og, (size_t)n * width), 0.0);
    pb_put(p, &bi, inpl);
    GPU_OK(LKV_KERN_CALL(p->cpu, gather_rows, bx.c, bx.c, bi.c, n, width));
    GPU_OK(LKV_KERN_CALL(p->gpu, gather_rows, bx.g, bx.g, bi.g, n, width));
    pb_get(p, &bx, oc, og);
    check("gather_rows in place", gpu_rel_err(oc, og, (size_t)rows * width),
          0.0);
    pb_free(p, &bx);
    pb_free(p, &bi);
    pb_free(p, &by);
    free(x);
    free(oc);
    free(og);
}

/* kv_write + attention: mixed decode and prefill sequences, GQA,
 * shuffled (non-contiguous) block tables, every KV dtype */
static void test_attention(pair_t *p, int n_heads, int n_kv, int hd, int bs)
{
    enum { NS = 6 };
    int32_t nq[NS]  = {1, 1, 7, 1, 33, 20};
    int32_t ctx[NS] = {1, 50, 40, 300, 80, 20};
    int     max_ctx = 300, stride = (max_ctx + bs - 1) / bs + 1;
    int     n_blocks = NS * stride + 3;
    int32_t q_start[NS + 1];
    int32_t *bt    = malloc(sizeof(int32_t) * NS * stride);
    int32_t *perm  = malloc(sizeof(int32_t) * n_blocks);
    int      kvrow = n_kv * hd;
    int      n_tok;

    q_start[0] = 0;
    for (int s = 0; s < NS; s++) {
        q_start[s + 1] = q_start[s] + nq[s];
    }
    n_tok = q_start[NS];
    for (int i = 0; i < n_blocks; i++) {
        perm[i] = i;
    }
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(gpu_rand64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < NS * stride; i++) {
        bt[i] = perm[i];
    }
    for (int d = 0; d < 3; d++) {
        lkv_dtype_t kd   = dtypes[d];
        size_t      pool = (size_t)n_blocks * 2 * bs * kvrow * lkv_dtype_size(kd);
        int         n_slots = 0;
        int32_t    *slots;
        float      *k, *v, *q, *oc, *og;
        pbuf_t      bpool, bslots, bk, bv, bq, bo, bqs, bctx, bbt;
        lkv_kern_attn_t ac, ag;
        char        name[128];

        for (int s = 0; s < NS; s++) {
            n_slots += ctx[s];
        }
        slots = malloc(sizeof(int32_t) * n_slots);
        n_slots = 0;
        for (int s = 0; s < NS; s++) {
            for (int t = 0; t < ctx[s]; t++) {
                slots[n_slots++] = bt[s * stride + t / bs] * bs + t % bs;
            }
        }
        k  = gpu_rand_f32((size_t)n_slots * kvrow, 1.0f);
        v  = gpu_rand_f32((size_t)n_slots * kvrow, 1.0f);
        q  = gpu_rand_f32((size_t)n_tok * n_heads * hd, 1.0f);
        bpool  = pb_new(p, pool, NULL);
        bslots = pb_new(p, sizeof(int32_t) * n_slots, slots);
        bk     = pb_new(p, (size_t)n_slots * kvrow * 4, k);
        bv     = pb_new(p, (size_t)n_slots * kvrow * 4, v);
        bq     = pb_new(p, (size_t)n_tok * n_heads * hd * 4, q);
        bo     = pb_new(p, (size_t)n_tok * n_heads * hd * 4, NULL);
        bqs    = pb_new(p, sizeof(q_start), q_start);
        bctx   = pb_new(p, sizeof(ctx), ctx);
        bbt    = pb_new(p, sizeof(int32_t) * NS * stride, bt);
        {
            void *z = calloc(1, pool);
            pb_put(p, &bpool, z);
            free(z);
        }
        GPU_OK(LKV_KERN_CALL(p->cpu, kv_write, bpool.c, kd, bslots.c, bk.c,
                             bv.c, n_slots, n_kv, hd, bs));
        GPU_OK(LKV_KERN_CALL(p->gpu, kv_write, bpool.g, kd, bslots.g, bk.g,
                             bv.g, n_slots, n_kv, hd, bs));
        {
            void *pc = malloc(pool), *pg = malloc(pool);
            pb_get(p, &bpool, pc, pg);
            snprintf(name, sizeof(name), "kv_write %s bytes identical",
                     lkv_dtype_name(kd));
            check_true(name, memcmp(pc, pg, pool) == 0);
            free(pc);
            free(pg);
        }
        memset(&ac, 0, sizeof(ac));
        ac.n_seqs     = NS;
        ac.bt_stride  = stride;
        ac.n_heads    = n_heads;
        ac.n_kv_heads = n_kv;
        ac.head_dim   = hd;
        ac.block_size = bs;
        ac.scale      = 1.0f / sqrtf((float)hd);
        ag            = ac;
        ac.q_start    = bqs.c;
        ac.ctx_len    = bctx.c;
        ac.block_table = bbt.c;
        ag.q_start    = bqs.g;
        ag.ctx_len    = bctx.g;
        ag.block_table = bbt.g;
        GPU_OK(LKV_KERN_CALL(p->cpu, attention, bo.c, bq.c, bpool.c, kd, &ac));
        GPU_OK(LKV_KERN_CALL(p->gpu, attention, bo.g, bq.g, bpool.g, kd, &ag));
        oc = malloc(bo.bytes);
        og = malloc(bo.bytes);
        pb_get(p, &bo, oc, og);
        snprintf(name, sizeof(name),
                 "attention %s heads %d/%d hd %d bs %d (mixed)",
                 lkv_dtype_name(kd), n_heads, n_kv, hd, bs);
        check(name, gpu_rel_err(oc, og, (size_t)n_tok * n_heads * hd), 1e-4);
        free(oc);
        free(og);
        pb_free(p, &bpool);
        pb_free(p, &bslots);
        pb_free(p, &bk);
        pb_free(p, &bv);
        pb_free(p, &bq);
        pb_free(p, &bo);
        pb_free(p, &bqs);
        pb_free(p, &bctx);
        pb_free(p, &bbt);
        free(slots);
        free(k);
        free(v);
        free(q);
    }
    free(bt);
    free(perm);
}

static void test_sample(pair_t *p, int vocab)
{
    enum { N = 12, STEPS = 20 };
    lkv_sample_params_t sp[N];
    uint64_t            rc[N], rg[N];
    int32_t             tc[N], tg[N];
    float              *lg = gpu_rand_f32((size_t)N * vocab, 4.0f);
    pbuf_t              bl = pb_new(p, (size_t)N * vocab * 4, lg);
    int                 same_tok = 1, same_rng = 1, greedy_ok = 1;
    char                name[96];

    for (int i = 0; i < N; i++) {
        memset(&sp[i], 0, sizeof(sp[i]));
        sp[i].top_p = 1.0f;
        sp[i].seed  = 1000 + i;
        switch (i % 6) {
        case 0: /* greedy */
            break;
        case 1: /* plain temperature */
            sp[i].temperature = 0.8f;
            break;
        case 2:
            sp[i].temperature = 1.0f;
            sp[i].top_k       = 40;
            break;
        case 3:
            sp[i].temperature = 0.7f;
            sp[i].top_p       = 0.9f;
            break;
        case 4:
            sp[i].temperature = 1.3f;
            sp[i].top_k       = 100;
            sp[i].top_p       = 0.5f;
            break;
        default: /* top_k 1 == greedy */
            sp[i].temperature = 1.0f;
            sp[i].top_k       = 1;
            break;
        }
        rc[i] = rg[i] = sp[i].seed;
    }
    /* ties: row 0 has two equal maxima; the lowest id must win */
    lg[10] = 100.0f;
    lg[20] = 100.0f;
    for (int step = 0; step < STEPS; step++) {
        for (size_t i = 0; i < (size_t)N * vocab; i++) {
            lg[i] = i == 10 || i == 20 ? 100.0f : gpu_randf(4.0f);
        }
        pb_put(p, &bl, lg);
        GPU_OK(LKV_KERN_CALL(p->cpu, sample, tc, bl.c, N, vocab, sp, rc));
        GPU_OK(LKV_KERN_CALL(p->gpu, sample, tg, bl.g, N, vocab, sp, rg));
        for (int i = 0; i < N; i++) {
            same_tok &= tc[i] == tg[i];
            same_rng &= rc[i] == rg[i];
        }
        greedy_ok &= tg[0] == 10;
    }
    snprintf(name, sizeof(name), "sample vocab %d: tokens equal to cpu", vocab);
    check_true(name, same_tok);
    snprintf(name, sizeof(name), "sample vocab %d: rng states equal", vocab);
    check_true(name, same_rng);
    check_true("sample greedy tie -> lowest id", greedy_ok);
    pb_free(p, &bl);
    free(lg);
}

static void test_errors(pair_t *p)
{
    lkv_kern_attn_t a;
    void           *d = NULL;
    int             ok = 1;

    memset(&a, 0, sizeof(a));
    GPU_OK(LKV_KERN_CALL(p->gpu, mem_alloc, 4096, &d));
    ok &= LKV_KERN_CALL(p->gpu, matmul, d, d, d, LKV_DTYPE_F32, NULL, 1, 4, 4) ==
          LKV_ERR_INVALID;
    ok &= LKV_KERN_CALL(p->gpu, matmul, d, NULL, d, LKV_DTYPE_F32, NULL, 1, 4,
                        4) == LKV_ERR_INVALID;
    ok &= LKV_KERN_CALL(p->gpu, rope, d, d, 1, 1, 8, 9, LKV_ROPE_ADJACENT,
                        d) == LKV_ERR_INVALID;
    a.n_seqs = 1;
    ok &= LKV_KERN_CALL(p->gpu, attention, d, d, d, LKV_DTYPE_F32, &a) ==
          LKV_ERR_INVALID;
    ok &= LKV_KERN_CALL(p->gpu, copy_async, (lkv_kern_queue_t)7,
                        LKV_KERN_COPY_D2D, d, d, 16) == LKV_ERR_INVALID;
    ok &= LKV_KERN_CALL(p->gpu, embedding, d, d, (lkv_dtype_t)9, d, 1, 4) ==
          LKV_ERR_INVALID;
    ok &= lkv_cuda_add_rmsnorm(p->cpu, d, d, d, d, LKV_DTYPE_F32, 1, 4, 0.f) ==
          LKV_ERR_INVALID;
    /* the device must still be healthy */
    ok &= LKV_KERN_CALL(p->gpu, sync, LKV_KERN_QUEUE_COMPUTE) == LKV_OK;
    p->gpu->ops->mem_free(p->gpu, d);
    check_true("bad arguments -> LKV_ERR_INVALID, device still healthy", ok);
}

/* lkv_cuda_copy_blocks / lkv_cuda_gather_blocks between device and pinned
 * host pools with shuffled indices: bytes must round-trip exactly */
static void test_block_copies(pair_t *p)
{
    lkv_kern_backend_t *g  = p->gpu;
    enum { NB = 40, BB = 4096 };
    int32_t             src[NB], dst[NB];
    uint8_t            *h0 = malloc((size_t)NB * BB), *h1 = malloc((size_t)NB * BB);
    void               *dev, *dev2, *host;

    for (size_t i = 0; i < (size_t)NB * BB; i++) {
        h0[i] = (uint8_t)gpu_rand64();
    }
    for (int i = 0; i < NB; i++) {
        src[i] = i;
        dst[i] = i < 10 ? i + 5 : (i < 15 ? i - 10 : i); /* runs + swaps */
    }
    GPU_OK(LKV_KERN_CALL(g, mem_alloc, (size_t)NB * BB, &dev));
    GPU_OK(LKV_KERN_CALL(g, mem_alloc, (size_t)NB * BB, &dev2));
    GPU_OK(LKV_KERN_CALL(g, host_alloc, (size_t)NB * BB, &host));
    GPU_OK(LKV_KERN_CALL(g, mem_upload, dev, h0, (size_t)NB * BB));
    /* device -> pinned host (copy engine), host -> device (kernel gather) */
    GPU_OK(lkv_cuda_copy_blocks(g, LKV_KERN_QUEUE_D2H, host, dst, dev, src, NB,
                                BB));
    GPU_OK(LKV_KERN_CALL(g, sync, LKV_KERN_QUEUE_D2H));
    GPU_OK(lkv_cuda_gather_blocks(g, LKV_KERN_QUEUE_H2D, dev2, src, host, dst,
                                  NB, BB));
    GPU_OK(LKV_KERN_CALL(g, sync, LKV_KERN_QUEUE_H2D));
    GPU_OK(LKV_KERN_CALL(g, mem_download, h1, dev2, (size_t)NB * BB));
    check_true("copy_blocks D2H + gather_blocks H2D round trip exact",
               memcmp(h0, h1, (size_t)NB * BB) == 0);
    g->ops->mem_free(g, dev);
    g->ops->mem_free(g, dev2);
    g->ops->host_free(g, host);
    free(h0);
    free(h1);
}

int main(void)
{
    pair_t p;

    p.gpu = gpu_open_cuda_or_skip("test_cuda_parity");
    p.cpu = gpu_open_cpu();

    test_embedding(&p);
    test_rmsnorm_add_swiglu(&p);
    test_matmul(&p);
    test_rope(&p);
    test_gather_rows(&p);
    test_attention(&p, 8, 4, 8, 16);    /* stories260K geometry */
    test_attention(&p, 32, 8, 128, 16); /* llama-3 style GQA */
    test_attention(&p, 12, 12, 64, 7);  /* MHA, odd block size */
    test_attention(&p, 4, 1, 256, 16);  /* big heads, MQA */
    test_sample(&p, 32000);
    test_sample(&p, 517);
    test_errors(&p);
    test_block_copies(&p);

    lkv_kern_backend_close(&p.cpu);
    lkv_kern_backend_close(&p.gpu);
    printf("parity: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
