/* bench_cuda.c - GPU benchmarks of the CUDA backend, each compared with the
 * hardware measured in the same run:
 *   bench_cuda bw                  D2D copy and pinned H2D/D2H peak (GB/s)
 *   bench_cuda decode [B ...]      decode step of a Llama-2-7B-shaped model
 *                                  (bf16 weights, seeded random, bf16 KV)
 *                                  through the ops table: tokens/s and MBU
 *   bench_cuda mover               kvstore mover D2H/H2D GB/s on 7B
 *                                  layer-blocks vs pinned cudaMemcpyAsync
 * Options: --layers N (default 32) --ctx N (decode context, default 512)
 *          --steps N (default 20) --quick (small model, for a smoke run).
 * Prints aligned text and, prefixed with "| ", markdown table rows that
 * tests/gpu/run.sh collects into its summary. Exit 77 without a GPU.
 * Single-threaded (the mover's copies run on the backend's copy streams).
 */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "kernels/cuda/cuda_ext.h"
#include "kvstore/kv_mover.h"
#include "kvstore/kv_pool.h"
#include "tests/gpu/gpu_util.h"

typedef struct {
    int dim, hidden, heads, kv_heads, vocab, layers, ctx, steps, quick;
} opts_t;

static double g_d2d_gbs, g_h2d_gbs, g_d2h_gbs;
static char   g_dev[256];

#define CU(call_)                                                              \
    do {                                                                       \
        cudaError_t e_ = (call_);                                              \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call_,     \
                    cudaGetErrorString(e_));                                   \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static double secs(int64_t t0)
{
    return (double)(lkv_now_ns() - t0) * 1e-9;
}

/* ---- hardware peaks ---- */

static void bench_bw(lkv_kern_backend_t *be)
{
    size_t       bytes = (size_t)1 << 30;
    void        *a, *b, *h;
    cudaStream_t s = (cudaStream_t)lkv_cuda_stream(be, LKV_KERN_QUEUE_COMPUTE);
    double       best;

    GPU_OK(LKV_KERN_CALL(be, mem_alloc, bytes, &a));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, bytes, &b));
    GPU_OK(LKV_KERN_CALL(be, host_alloc, bytes, &h));
    memset(h, 1, bytes);
    CU(cudaMemsetAsync(a, 0, bytes, s));
    best = 1e9;
    for (int i = 0; i < 6; i++) {
        CU(cudaStreamSynchronize(s));
        int64_t t0 = lkv_now_ns();
        CU(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
        CU(cudaStreamSynchronize(s));
        if (i > 0 && secs(t0) < best) {
            best = secs(t0);
        }
    }
    g_d2d_gbs = 2.0 * bytes / best / 1e9; /* read + write */
    best      = 1e9;
    for (int i = 0; i < 4; i++) {
        int64_t t0 = lkv_now_ns();
        CU(cudaMemcpyAsync(a, h, bytes, cudaMemcpyHostToDevice, s));
        CU(cudaStreamSynchronize(s));
        if (i > 0 && secs(t0) < best) {
            best = secs(t0);
        }
    }
    g_h2d_gbs = bytes / best / 1e9;
    best      = 1e9;
    for (int i = 0; i < 4; i++) {
        int64_t t0 = lkv_now_ns();
        CU(cudaMemcpyAsync(h, a, bytes, cudaMemcpyDeviceToHost, s));
        CU(cudaStreamSynchronize(s));
        if (i > 0 && secs(t0) < best) {
            best = secs(t0);
        }
    }
    g_d2h_gbs = bytes / best / 1e9;
    printf("device: %s\n", g_dev);
    printf("D2D copy %.0f GB/s (read+write), pinned H2D %.1f GB/s, pinned D2H "
           "%.1f GB/s\n",
           g_d2d_gbs, g_h2d_gbs, g_d2h_gbs);
    printf("| D2D copy bandwidth (read+write) | %.0f GB/s |\n", g_d2d_gbs);
    printf("| pinned cudaMemcpyAsync H2D / D2H peak | %.1f / %.1f GB/s |\n",
           g_h2d_gbs, g_d2h_gbs);
    be->ops->mem_free(be, a);
    be->ops->mem_free(be, b);
    be->ops->host_free(be, h);
}

/* ---- decode ---- */

typedef struct {
    void *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w1, *w2, *w3;
} layer_w_t;

static void *dalloc(lkv_kern_backend_t *be, size_t bytes)
{
    void *p;
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, bytes, &p));
    return p;
}

static void *rand_w(lkv_kern_backend_t *be, size_t n, uint64_t seed,
                    float scale)
{
    void *p = dalloc(be, n * 2);
    GPU_OK(lkv_cuda_fill_random(be, p, LKV_DTYPE_BF16, n, seed, scale));
    return p;
}

static void bench_decode(lkv_kern_backend_t *be, const opts_t *o, int batch)
{
    const int   D = o->dim, F = o->hidden, H = o->heads, KV = o->kv_heads;
    const int   HD = D / H, L = o->layers, V = o->vocab, BS = 16;
    const int   kvd = KV * HD;
    const int   max_ctx = o->ctx + o->steps + 8;
    const int   stride  = (max_ctx + BS - 1) / BS;
    const size_t blk_elems = 2 * (size_t)BS * kvd;
    const size_t n_blocks  = (size_t)L * batch * stride;
    layer_w_t  *lw = calloc((size_t)L, sizeof(*lw));
    void       *emb, *out_norm, *lm_head, *pool;
    float      *x, *xn, *q, *k, *v, *att, *tmp, *g, *u, *logits, *invf;
    int32_t    *d_meta, *h_meta, *bt_host, *d_bt;
    size_t      meta_n;
    int32_t    *tokens = calloc((size_t)batch, sizeof(int32_t));
    uint64_t   *rng    = calloc((size_t)batch, sizeof(uint64_t));
    lkv_sample_params_t *sp = calloc((size_t)batch, sizeof(*sp));
    double      weight_bytes = 0, kv_bytes, t_step;
    uint64_t    seed = 1;

    for (int l = 0; l < L; l++) {
        lw[l].attn_norm = rand_w(be, D, seed++, 1.0f);
        lw[l].ffn_norm  = rand_w(be, D, seed++, 1.0f);
        lw[l].wq        = rand_w(be, (size_t)D * D, seed++, 0.02f);
        lw[l].wk        = rand_w(be, (size_t)kvd * D, seed++, 0.02f);
        lw[l].wv        = rand_w(be, (size_t)kvd * D, seed++, 0.02f);
        lw[l].wo        = rand_w(be, (size_t)D * D, seed++, 0.02f);
        lw[l].w1        = rand_w(be, (size_t)F * D, seed++, 0.02f);
        lw[l].w3        = rand_w(be, (size_t)F * D, seed++, 0.02f);
        lw[l].w2        = rand_w(be, (size_t)D * F, seed++, 0.02f);
    }
    weight_bytes = 2.0 * L * (2.0 * D * D + 2.0 * kvd * D + 3.0 * F * D + 2 * D);
    emb          = rand_w(be, (size_t)V * D, seed++, 1.0f);
    out_norm     = rand_w(be, D, seed++, 1.0f);
    lm_head      = rand_w(be, (size_t)V * D, seed++, 0.02f);
    weight_bytes += 2.0 * V * D + 2.0 * D;
    pool = rand_w(be, n_blocks * blk_elems, seed++, 1.0f);

    x      = dalloc(be, sizeof(float) * batch * D);
    xn     = dalloc(be, sizeof(float) * batch * D);
    q      = dalloc(be, sizeof(float) * batch * D);
    k      = dalloc(be, sizeof(float) * batch * kvd);
    v      = dalloc(be, sizeof(float) * batch * kvd);
    att    = dalloc(be, sizeof(float) * batch * D);
    tmp    = dalloc(be, sizeof(float) * batch * D);
    g      = dalloc(be, sizeof(float) * batch * F);
    u      = dalloc(be, sizeof(float) * batch * F);
    logits = dalloc(be, sizeof(float) * batch * V);
    invf   = dalloc(be, sizeof(float) * HD / 2);
    {
        float *hf = malloc(sizeof(float) * HD / 2);
        for (int i = 0; i < HD / 2; i++) {
            hf[i] = powf(10000.0f, -2.0f * i / (float)HD);
        }
        GPU_OK(LKV_KERN_CALL(be, mem_upload, invf, hf, sizeof(float) * HD / 2));
        free(hf);
    }
    /* per-layer block tables: layer l, seq s, block j */
    bt_host = malloc(sizeof(int32_t) * n_blocks);
    for (size_t i = 0; i < n_blocks; i++) {
        bt_host[i] = (int32_t)i;
    }
    d_bt = dalloc(be, sizeof(int32_t) * n_blocks);
    GPU_OK(LKV_KERN_CALL(be, mem_upload, d_bt, bt_host,
                         sizeof(int32_t) * n_blocks));
    /* step metadata: ids (B), pos (B), q_start (B+1), ctx (B), slots (L*B) */
    meta_n = (size_t)batch * 4 + 1 + (size_t)L * batch;
    h_meta = malloc(sizeof(int32_t) * meta_n);
    d_meta = dalloc(be, sizeof(int32_t) * meta_n);
    for (int s = 0; s < batch; s++) {
        tokens[s]      = 1 + s;
        sp[s].top_p    = 1.0f; /* greedy */
    }
    GPU_OK(LKV_KERN_CALL(be, sync, LKV_KERN_QUEUE_COMPUTE));

    int64_t t0 = 0;
    int     warm = 3;
    for (int step = 0; step < warm + o->steps; step++) {
        int      ctx = o->ctx + step + 1; /* after writing this token */
        int32_t *ids = h_meta, *pos = ids + batch, *qs = pos + batch;
        int32_t *cl = qs + batch + 1, *slots = cl + batch;

        if (step == warm) {
            GPU_OK(LKV_KERN_CALL(be, sync, LKV_KERN_QUEUE_COMPUTE));
            t0 = lkv_now_ns();
        }
        for (int s = 0; s < batch; s++) {
            ids[s] = tokens[s];
            pos[s] = ctx - 1;
            qs[s]  = s;
            cl[s]  = ctx;
        }
        qs[batch] = batch;
        for (int l = 0; l < L; l++) {
            for (int s = 0; s < batch; s++) {
                int32_t blk = bt_host[((size_t)l * batch + s) * stride +
                                      (ctx - 1) / BS];
                slots[l * batch + s] = blk * BS + (ctx - 1) % BS;
            }
        }
        GPU_OK(LKV_KERN_CALL(be, mem_upload, d_meta, h_meta,
                             sizeof(int32_t) * meta_n));
        ids = d_meta;
        pos = ids + batch;
        qs  = pos + batch;
        cl  = qs + batch + 1;
        slots = cl + batch;

        GPU_OK(LKV_KERN_CALL(be, embedding, x, emb, LKV_DTYPE_BF16, ids, batch,
                             D));
        GPU_OK(LKV_KERN_CALL(be, rmsnorm, xn, x, lw[0].attn_norm,
                             LKV_DTYPE_BF16, batch, D, 1e-5f));
        for (int l = 0; l < L; l++) {
            lkv_kern_attn_t a;

            GPU_OK(LKV_KERN_CALL(be, matmul, q, xn, lw[l].wq, LKV_DTYPE_BF16,
                                 NULL, batch, D, D));
            GPU_OK(LKV_KERN_CALL(be, matmul, k, xn, lw[l].wk, LKV_DTYPE_BF16,
                                 NULL, batch, D, kvd));
            GPU_OK(LKV_KERN_CALL(be, matmul, v, xn, lw[l].wv, LKV_DTYPE_BF16,
                                 NULL, batch, D, kvd));
            GPU_OK(LKV_KERN_CALL(be, rope, q, pos, batch, H, HD, HD,
                                 LKV_ROPE_ADJACENT, invf));
            GPU_OK(LKV_KERN_CALL(be, rope, k, pos, batch, KV, HD, HD,
                                 LKV_ROPE_ADJACENT, invf));
            GPU_OK(LKV_KERN_CALL(be, kv_write, pool, LKV_DTYPE_BF16,
                                 slots + l * batch, k, v, batch, KV, HD, BS));
            memset(&a, 0, sizeof(a));
            a.n_seqs      = batch;
            a.q_start     = qs;
            a.ctx_len     = cl;
            a.block_table = d_bt + (size_t)l * batch * stride;
            a.bt_stride   = stride;
            a.n_heads     = H;
            a.n_kv_heads  = KV;
            a.head_dim    = HD;
            a.block_size  = BS;
            a.scale       = 1.0f / sqrtf((float)HD);
            GPU_OK(LKV_KERN_CALL(be, attention, att, q, pool, LKV_DTYPE_BF16,
                                 &a));
            GPU_OK(LKV_KERN_CALL(be, matmul, tmp, att, lw[l].wo,
                                 LKV_DTYPE_BF16, NULL, batch, D, D));
            /* x += attn; xn = norm(x) */
            GPU_OK(lkv_cuda_add_rmsnorm(be, xn, x, tmp, lw[l].ffn_norm,
                                        LKV_DTYPE_BF16, batch, D, 1e-5f));
            GPU_OK(LKV_KERN_CALL(be, matmul, g, xn, lw[l].w1, LKV_DTYPE_BF16,
                                 NULL, batch, D, F));
            GPU_OK(LKV_KERN_CALL(be, matmul, u, xn, lw[l].w3, LKV_DTYPE_BF16,
                                 NULL, batch, D, F));
            GPU_OK(LKV_KERN_CALL(be, swiglu, g, g, u, (size_t)batch * F));
            GPU_OK(LKV_KERN_CALL(be, matmul, tmp, g, lw[l].w2, LKV_DTYPE_BF16,
                                 NULL, batch, F, D));
            GPU_OK(lkv_cuda_add_rmsnorm(
                be, xn, x, tmp, l + 1 < L ? lw[l + 1].attn_norm : out_norm,
                LKV_DTYPE_BF16, batch, D, 1e-5f));
        }
        GPU_OK(LKV_KERN_CALL(be, matmul, logits, xn, lm_head, LKV_DTYPE_BF16,
                             NULL, batch, D, V));
        GPU_OK(LKV_KERN_CALL(be, sample, tokens, logits, batch, V, sp, rng));
    }
    t_step = secs(t0) / o->steps;
    /* KV read per step: every layer reads ctx tokens of K and V per seq */
    kv_bytes = (double)L * batch * (o->ctx + o->steps / 2.0) * 2.0 * kvd * 2.0;
    {
        double bytes = weight_bytes + kv_bytes;
        double gbs   = bytes / t_step / 1e9;
        double mbu   = g_d2d_gbs > 0 ? gbs / g_d2d_gbs : 0.0;
        printf("decode batch %d: %.2f ms/step, %.1f tokens/s, %.0f GB/s "
               "(weights %.2f GB + kv %.2f GB), MBU %.1f%% of D2D %.0f GB/s\n",
               batch, t_step * 1e3, batch / t_step, gbs, weight_bytes / 1e9,
               kv_bytes / 1e9, 100.0 * mbu, g_d2d_gbs);
        printf("| decode batch %d (%d layers, ctx %d) | %.2f ms/step, %.1f "
               "tok/s, %.0f GB/s, MBU %.1f%% of D2D |\n",
               batch, L, o->ctx, t_step * 1e3, batch / t_step, gbs,
               100.0 * mbu);
    }
    for (int l = 0; l < L; l++) {
        void **pp = (void **)&lw[l];
        for (size_t i = 0; i < sizeof(layer_w_t) / sizeof(void *); i++) {
            be->ops->mem_free(be, pp[i]);
        }
    }
    void *bufs[] = {emb, out_norm, lm_head, pool, x,   xn,     q,    k,    v,
                    att, tmp,      g,       u,    logits, invf, d_bt, d_meta};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        be->ops->mem_free(be, bufs[i]);
    }
    free(lw);
    free(bt_host);
    free(h_meta);
    free(tokens);
    free(rng);
    free(sp);
}

/* ---- mover ---- */

static double mover_run(lkv_kv_mover_t *mv, lkv_kv_tier_t src_t,
                        lkv_kv_tier_t dst_t, int n_xfer, int per,
                        const lkv_kv_block_t *src, const lkv_kv_block_t *dst,
                        size_t block_bytes)
{
    lkv_kv_xfer_t **xs = calloc((size_t)n_xfer, sizeof(*xs));
    int64_t         t0 = lkv_now_ns();
    double          t;

    for (int i = 0; i < n_xfer; i++) {
        lkv_kv_mover_req_t r;
        memset(&r, 0, sizeof(r));
        r.tag      = (uint64_t)i;
        r.src_tier = src_t;
        r.dst_tier = dst_t;
        r.n_blocks = per;
        r.src      = src + (size_t)i * per;
        r.dst      = dst + (size_t)i * per;
        GPU_OK(lkv_kv_mover_submit(mv, &r, &xs[i]));
    }
    for (int i = 0; i < n_xfer; i++) {
        GPU_OK(lkv_kv_mover_wait(mv, xs[i]));
    }
    t = secs(t0);
    {
        lkv_kv_mover_done_t done[64];
        int                 n;
        do {
            GPU_OK(lkv_kv_mover_poll(mv, done, 64, &n));
        } while (n > 0);
    }
    free(xs);
    return (double)n_xfer * per * block_bytes / t / 1e9;
}

static void bench_mover(lkv_kern_backend_t *be, const opts_t *o)
{
    /* a 7B layer-block: 2 * 16 tokens * 32 heads * 128 dims * 2 bytes */
    size_t               bb    = 2 * 16 * (size_t)o->kv_heads * (o->dim / o->heads) * 2;
    int                  per   = 32;   /* one layer of a 512-token sequence */
    int                  n_x   = o->quick ? 16 : 128;
    int                  n     = n_x * per;
    lkv_kv_pool_config_t pc;
    lkv_kv_pool_t       *pool = NULL;
    lkv_kv_mover_t      *mv   = NULL;
    lkv_kv_mover_config_t mc  = lkv_kv_mover_config_default();
    lkv_kv_block_t      *dev  = malloc(sizeof(*dev) * n);
    lkv_kv_block_t      *host = malloc(sizeof(*host) * n);
    lkv_kv_block_t      *hsh  = malloc(sizeof(*hsh) * n);
    double               d2h, h2d, d2h_s, h2d_s;

    pc.block_bytes     = bb;
    pc.n_device_blocks = n;
    pc.n_host_blocks   = n;
    GPU_OK(lkv_kv_pool_create(be, &pc, NULL, &pool));
    GPU_OK(lkv_kv_mover_create(pool, &mc, &mv));
    for (int i = 0; i < n; i++) {
        dev[i]  = i;
        host[i] = i;
        hsh[i]  = i;
    }
    for (int i = n - 1; i > 0; i--) { /* shuffled host placement */
        int j = (int)(gpu_rand64() % (uint64_t)(i + 1));
        lkv_kv_block_t t = hsh[i];
        hsh[i] = hsh[j];
        hsh[j] = t;
    }
    (void)mover_run(mv, LKV_KV_TIER_DEVICE, LKV_KV_TIER_HOST, n_x, per, dev,
                    host, bb); /* warm-up */
    d2h   = mover_run(mv, LKV_KV_TIER_DEVICE, LKV_KV_TIER_HOST, n_x, per, dev,
                      host, bb);
    h2d   = mover_run(mv, LKV_KV_TIER_HOST, LKV_KV_TIER_DEVICE, n_x, per, host,
                      dev, bb);
    d2h_s = mover_run(mv, LKV_KV_TIER_DEVICE, LKV_KV_TIER_HOST, n_x, per, dev,
                      hsh, bb);
    h2d_s = mover_run(mv, LKV_KV_TIER_HOST, LKV_KV_TIER_DEVICE, n_x, per, hsh,
                      dev, bb);
    printf("mover (%d transfers of %d x %zu KiB blocks): D2H %.1f GB/s "
           "(%.0f%% of peak %.1f), H2D %.1f GB/s (%.0f%% of peak %.1f); "
           "shuffled blocks: D2H %.1f, H2D %.1f GB/s\n",
           n_x, per, bb / 1024, d2h, 100 * d2h / g_d2h_gbs, g_d2h_gbs, h2d,
           100 * h2d / g_h2d_gbs, g_h2d_gbs, d2h_s, h2d_s);
    printf("| mover D2H (contiguous / shuffled) | %.1f / %.1f GB/s = %.0f%% / "
           "%.0f%% of pinned peak |\n",
           d2h, d2h_s, 100 * d2h / g_d2h_gbs, 100 * d2h_s / g_d2h_gbs);
    printf("| mover H2D (contiguous / shuffled) | %.1f / %.1f GB/s = %.0f%% / "
           "%.0f%% of pinned peak |\n",
           h2d, h2d_s, 100 * h2d / g_h2d_gbs, 100 * h2d_s / g_h2d_gbs);
    lkv_kv_mover_destroy(&mv);
    lkv_kv_pool_destroy(&pool);
    free(dev);
    free(host);
    free(hsh);
}

int main(int argc, char **argv)
{
    opts_t              o  = {4096, 11008, 32, 32, 32000, 32, 512, 20, 0};
    lkv_kern_backend_t *be;
    int                 batches[8], n_batches = 0;
    const char         *what = argc > 1 ? argv[1] : "all";

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc) {
            o.layers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--ctx") == 0 && i + 1 < argc) {
            o.ctx = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            o.steps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--quick") == 0) {
            o.quick = 1;
            o.dim = 512, o.hidden = 1376, o.heads = 8, o.kv_heads = 8;
            o.vocab = 4096, o.layers = 4, o.steps = 5, o.ctx = 64;
        } else if (atoi(argv[i]) > 0 && n_batches < 8) {
            batches[n_batches++] = atoi(argv[i]);
        } else {
            fprintf(stderr,
                    "usage: bench_cuda bw|decode|mover|all [BATCH...] "
                    "[--layers N] [--ctx N] [--steps N] [--quick]\n");
            return 2;
        }
    }
    if (o.layers <= 0 || o.ctx < 0 || o.steps <= 0) {
        fprintf(stderr, "bench_cuda: --layers and --steps must be > 0\n");
        return 2;
    }
    if (n_batches == 0) {
        batches[n_batches++] = 1;
        batches[n_batches++] = 32;
    }
    be = gpu_open_cuda_or_skip("bench_cuda");
    {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
            snprintf(g_dev, sizeof(g_dev), "%s", prop.name);
        }
    }
    bench_bw(be); /* every section compares with these */
    if (strcmp(what, "decode") == 0 || strcmp(what, "all") == 0) {
        for (int i = 0; i < n_batches; i++) {
            bench_decode(be, &o, batches[i]);
        }
    }
    if (strcmp(what, "mover") == 0 || strcmp(what, "all") == 0) {
        bench_mover(be, &o);
    }
    lkv_kern_backend_close(&be);
    return 0;
}
