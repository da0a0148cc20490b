/* cpu_impl.h - private state and helpers of the CPU compute backend.
 *
 * The compute state (lkv_cpu_impl_t, be->impl) holds a persistent thread pool
 * and grow-only scratch buffers. Ops run on the caller's thread (the worker's
 * step thread), which also takes part in the parallel work; pool threads
 * sleep on a condition variable between calls.
 *
 * Threading: one caller thread at a time (kernels.h); the pool threads only
 * run tasks handed to them by lkv_cpu_parallel_for.
 */
#ifndef LKV_KERNELS_CPU_CPU_IMPL_H
#define LKV_KERNELS_CPU_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

typedef struct lkv_cpu_pool lkv_cpu_pool_t;

/* Runs tasks [begin, end) of a parallel-for; tid is 0..n_threads-1. */
typedef void (*lkv_cpu_task_fn)(void *ctx, int tid, int64_t begin, int64_t end);

typedef struct {
    int             n_threads;
    lkv_cpu_pool_t *pool;
    int             have_avx512; /* avx512f+bw+vl and f16c at run time */
    int             use_blas;    /* OpenBLAS for n >= LKV_CPU_BLAS_MIN_N */
    /* grow-only scratch (hot path allocates only when a shape grows) */
    float *wtile;        /* per-thread f32 weight tiles (matmul) */
    size_t wtile_floats; /* per thread */
    void  *sample_cand;  /* (vocab) candidates, see cpu_sample.c */
    size_t sample_cap;
} lkv_cpu_impl_t;

/* ---- thread pool (cpu_pool.c) ---- */
lkv_status_t lkv_cpu_pool_create(int n_threads, lkv_cpu_pool_t **pool_p);
void         lkv_cpu_pool_destroy(lkv_cpu_pool_t **pool_p);

/* Run fn over [0, n) in chunks of `grain` items (the last may be shorter)
 * that the caller and the pool threads claim dynamically; fn may be called
 * several times per thread. Returns when every item is done. Runs serially
 * (fn(ctx, 0, 0, n)) when n <= grain or the pool has one thread. */
void lkv_cpu_parallel_for(lkv_cpu_impl_t *impl, int64_t n, int64_t grain,
                          lkv_cpu_task_fn fn, void *ctx);

/* ---- helpers ---- */
static inline lkv_cpu_impl_t *lkv_cpu_impl(lkv_kern_backend_t *be)
{
    return (lkv_cpu_impl_t *)be->impl;
}

static inline int lkv_cpu_dtype_ok(lkv_dtype_t dt)
{
    return dt == LKV_DTYPE_F32 || dt == LKV_DTYPE_F16 || dt == LKV_DTYPE_BF16;
}

/* Element i of a tensor of dtype dt as f32. */
static inline float lkv_cpu_load(const void *p, lkv_dtype_t dt, size_t i)
{
    switch (dt) {
    case LKV_DTYPE_F16:
        return lkv_f16_to_f32(((const uint16_t *)p)[i]);
    case LKV_DTYPE_BF16:
        return lkv_bf16_to_f32(((const uint16_t *)p)[i]);
    default:
        return ((const float *)p)[i];
    }
}

/* Convert n elements of src (dtype dt) to f32 dst; simd selects the
 * AVX-512 path (impl->have_avx512). */
void lkv_cpu_convert_row(int simd, float *dst, const void *src, lkv_dtype_t dt,
                         size_t n);
/* The AVX-512 part of it (cpu_gemv.c); only for dt f16/bf16. */
void lkv_cpu_convert_row_avx512(float *dst, const uint16_t *src, lkv_dtype_t dt,
                                size_t n);
/* y[i] += a * x[i] (attention's V accumulation) */
void lkv_cpu_axpy(int simd, float *y, float a, const float *x, int n);

/* ---- ops (one file per family) ---- */
lkv_status_t lkv_cpu_embedding(lkv_kern_backend_t *be, float *out,
                               const void *table, lkv_dtype_t dtype,
                               const int32_t *ids, int n, int dim);
lkv_status_t lkv_cpu_rmsnorm(lkv_kern_backend_t *be, float *y, const float *x,
                             const void *w, lkv_dtype_t dtype, int n, int dim,
                             float eps);
lkv_status_t lkv_cpu_add(lkv_kern_backend_t *be, float *y, const float *a,
                         const float *b, size_t n_elems);
lkv_status_t lkv_cpu_matmul(lkv_kern_backend_t *be, float *y, const float *x,
                            const void *w, lkv_dtype_t dtype, const float *bias,
                            int n, int in, int out);
lkv_status_t lkv_cpu_rope(lkv_kern_backend_t *be, float *x, const int32_t *pos,
                          int n, int n_heads, int head_dim, int rot_dim,
                          lkv_rope_style_t style, const float *inv_freq);
lkv_status_t lkv_cpu_kv_write(lkv_kern_backend_t *be, void *kv_pool,
                              lkv_dtype_t kv_dtype, const int32_t *slots,
                              const float *k, const float *v, int n,
                              int n_kv_heads, int head_dim, int block_size);
lkv_status_t lkv_cpu_attention(lkv_kern_backend_t *be, float *out,
                               const float *q, const void *kv_pool,
                               lkv_dtype_t kv_dtype, const lkv_kern_attn_t *a);
lkv_status_t lkv_cpu_swiglu(lkv_kern_backend_t *be, float *out,
                            const float *gate, const float *up, size_t n_elems);
lkv_status_t lkv_cpu_gather_rows(lkv_kern_backend_t *be, float *dst,
                                 const float *src, const int32_t *idx, int n,
                                 int width);
lkv_status_t lkv_cpu_sample(lkv_kern_backend_t *be, int32_t *tokens,
                            const float *logits, int n, int vocab,
                            const lkv_sample_params_t *params,
                            uint64_t                  *rng_state);

/* fewest activation rows for which an AVX-512 OpenBLAS beats our kernel */
#define LKV_CPU_BLAS_MIN_N 32

/* GEMV kernels (cpu_gemv.c): y[t*ldy + r] = dot(x[t*in ..], w row r) for
 * rows [r0, r1) and t < n (n <= LKV_CPU_GEMV_MAX_N), no bias. */
#define LKV_CPU_GEMV_MAX_N 4
/* Any n: the same kernel blocked 4 rows x 4 tokens (AVX-512 only; callers
 * check impl->have_avx512). */
void lkv_cpu_gemm_rows(float *y, int ldy, const float *x, const void *w,
                       lkv_dtype_t dtype, int n, int in, int r0, int r1);
int  lkv_cpu_have_avx512(void);
void lkv_cpu_gemv_rows(int use_avx512, float *y, int ldy, const float *x,
                       const void *w, lkv_dtype_t dtype, int n, int in, int r0,
                       int r1);

#endif /* LKV_KERNELS_CPU_CPU_IMPL_H */
