/* cpu_matmul.c - y (n, out) = x (n, in) . W^T + bias on the CPU.
 *
 * Decode (n <= LKV_CPU_GEMV_MAX_N): the AVX-512 GEMV of cpu_gemv.c, output
 * rows split across the compute pool, so the weights stream from memory once
 * per call. Prefill (n larger): the same kernel blocked 4 rows x 4 tokens,
 * or, when OpenBLAS runs an AVX-512 core and n >= LKV_CPU_BLAS_MIN_N,
 * OpenBLAS sgemm on each thread's slice of output rows (one OpenBLAS thread
 * per slice; f16/bf16 weights are widened to f32 a tile of rows at a time
 * into per-thread scratch). Without AVX-512 everything goes to OpenBLAS.
 * (Debian 12's OpenBLAS 0.3.21 takes this machine's Sapphire Rapids CPU for
 * a "Prescott" and runs SSE3 kernels, ~10 GFLOP/s a core: see kern_cpu.c.)
 *
 * Threading: one caller at a time (kernels.h); scratch lives in the impl.
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <cblas.h>
#include <stdlib.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

/* f32 elements of one thread's weight tile (256 KiB: stays in L2) */
#define WTILE_FLOATS (64 * 1024)
/* multiply-adds below which a matmul runs on the caller's thread only */
#define SERIAL_MACS (64 * 1024)
/* fewest output rows worth a chunk */
#define ROW_GRAIN 16

/* rows per dynamically claimed chunk: about `per_thread` chunks per thread
 * (so a descheduled thread delays little), a multiple of 4 (the GEMV
 * kernel's row block), at least ROW_GRAIN */
static int64_t row_grain(const lkv_cpu_impl_t *impl, int n, int in, int out,
                         int per_thread)
{
    int64_t g = (int64_t)out / ((int64_t)impl->n_threads * per_thread);

    if ((int64_t)n * in * out < SERIAL_MACS) {
        return out; /* waking the pool costs more than the work */
    }
    g = (g + 3) / 4 * 4;
    return g < ROW_GRAIN ? ROW_GRAIN : g;
}

typedef struct {
    lkv_cpu_impl_t *impl;
    float          *y;
    const float    *x;
    const void     *w;
    lkv_dtype_t     dtype;
    int             n, in, out;
} mm_ctx_t;

static void gemv_task(void *ctx_, int tid, int64_t begin, int64_t end)
{
    mm_ctx_t *c = ctx_;

    lkv_cpu_gemv_rows(c->impl->have_avx512, c->y, c->out, c->x, c->w, c->dtype,
                      c->n, c->in, (int)begin, (int)end);
}

static void own_gemm_task(void *ctx_, int tid, int64_t begin, int64_t end)
{
    mm_ctx_t *c = ctx_;

    lkv_cpu_gemm_rows(c->y, c->out, c->x, c->w, c->dtype, c->n, c->in,
                      (int)begin, (int)end);
}

static void gemm_task(void *ctx_, int tid, int64_t begin, int64_t end)
{
    mm_ctx_t *c    = ctx_;
    size_t    esz  = lkv_dtype_size(c->dtype);
    int       rows = (int)(end - begin);

    if (c->dtype == LKV_DTYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n, rows, c->in,
                    1.0f, c->x, c->in,
                    (const float *)c->w + (size_t)begin * c->in, c->in, 0.0f,
                    c->y + begin, c->out);
        return;
    }
    float *tile      = c->impl->wtile + (size_t)tid * c->impl->wtile_floats;
    int    tile_rows = (int)(c->impl->wtile_floats / (size_t)c->in);

    for (int r = (int)begin; r < (int)end; r += tile_rows) {
        int nr = (int)end - r < tile_rows ? (int)end - r : tile_rows;

        lkv_cpu_convert_row(c->impl->have_avx512, tile,
                            (const char *)c->w + (size_t)r * c->in * esz,
                            c->dtype, (size_t)nr * c->in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n, nr, c->in,
                    1.0f, c->x, c->in, tile, c->in, 0.0f, c->y + r, c->out);
    }
}

/* make sure every thread has a tile of at least max(WTILE_FLOATS, in) */
static lkv_status_t ensure_wtile(lkv_cpu_impl_t *impl, int in)
{
    size_t per = (size_t)in > WTILE_FLOATS ? (size_t)in : WTILE_FLOATS;
    float *p;

    if (impl->wtile != NULL && impl->wtile_floats >= per) {
        return LKV_OK;
    }
    p = aligned_alloc(64,
                      ((per * impl->n_threads * sizeof(float)) + 63) / 64 * 64);
    if (p == NULL) {
        LKV_LOG_ERROR("matmul: cannot allocate %zu bytes of weight tiles",
                      per * impl->n_threads * sizeof(float));
        return LKV_ERR_NOMEM;
    }
    free(impl->wtile);
    impl->wtile        = p;
    impl->wtile_floats = per;
    return LKV_OK;
}

lkv_status_t lkv_cpu_matmul(lkv_kern_backend_t *be, float *y, const float *x,
                            const void *w, lkv_dtype_t dtype, const float *bias,
                            int n, int in, int out)
{
    lkv_cpu_impl_t *impl = lkv_cpu_impl(be);
    mm_ctx_t        c;

    if (n == 0) {
        return LKV_OK;
    }
    if (impl == NULL || y == NULL || x == NULL || w == NULL || n < 0 ||
        in <= 0 || out <= 0 || !lkv_cpu_dtype_ok(dtype)) {
        return LKV_ERR_INVALID;
    }
    c.impl  = impl;
    c.y     = y;
    c.x     = x;
    c.w     = w;
    c.dtype = dtype;
    c.in    = in;
    c.out   = out;

    if (n <= LKV_CPU_GEMV_MAX_N) {
        c.n = n;
        lkv_cpu_parallel_for(impl, out, row_grain(impl, n, in, out, 4),
                             gemv_task, &c);
    } else if (impl->have_avx512 &&
               (!impl->use_blas || n < LKV_CPU_BLAS_MIN_N)) {
        c.n = n;
        lkv_cpu_parallel_for(impl, out, row_grain(impl, n, in, out, 4),
                             own_gemm_task, &c);
    } else {
        if (dtype != LKV_DTYPE_F32) {
            LKV_CHECK(ensure_wtile(impl, in));
        }
        c.n = n;
        lkv_cpu_parallel_for(impl, out, row_grain(impl, n, in, out, 2),
                             gemm_task, &c);
    }
    if (bias != NULL) {
        for (int t = 0; t < n; t++) {
            float *yr = y + (size_t)t * out;
            for (int o = 0; o < out; o++) {
                yr[o] += bias[o];
            }
        }
    }
    return LKV_OK;
}
