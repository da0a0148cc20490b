/* cpu_gemv.c - matrix-vector kernels for decode (1..4 activation rows):
 * AVX-512 versions for f32, f16 (vcvtph2ps) and bf16 (shift) weights, four
 * weight rows at a time with one accumulator per (row, token), and a scalar
 * fallback selected at run time when the CPU lacks AVX-512.
 *
 * The AVX-512 code is compiled with a target attribute, so the file builds
 * without -march flags; lkv_cpu_have_avx512() guards its use.
 * Threading: pure functions; callers split rows across threads.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86_AVX512_CODE 1
#endif

int lkv_cpu_have_avx512(void)
{
#ifdef HAVE_X86_AVX512_CODE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* ---- scalar reference path ---- */
static void gemv_scalar(float *y, int ldy, const float *x, const void *w,
                        lkv_dtype_t dt, int n, int in, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        size_t base = (size_t)r * in;

        for (int t = 0; t < n; t++) {
            const float *xt     = x + (size_t)t * in;
            float        acc[4] = {0, 0, 0, 0};
            int          k      = 0;

            if (dt == LKV_DTYPE_F32) {
                const float *wr = (const float *)w + base;
                for (; k + 4 <= in; k += 4) {
                    acc[0] += wr[k] * xt[k];
                    acc[1] += wr[k + 1] * xt[k + 1];
                    acc[2] += wr[k + 2] * xt[k + 2];
                    acc[3] += wr[k + 3] * xt[k + 3];
                }
                for (; k < in; k++) {
                    acc[0] += wr[k] * xt[k];
                }
            } else {
                for (; k < in; k++) {
                    acc[k & 3] += lkv_cpu_load(w, dt, base + k) * xt[k];
                }
            }
            y[(size_t)t * ldy + r] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
    }
}

#ifdef HAVE_X86_AVX512_CODE
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define AVX512_INLINE static inline __attribute__((always_inline)) AVX512_FN

AVX512_INLINE __m512 ldw(const void *w, int dt, size_t k)
{
    if (dt == LKV_DTYPE_F32) {
        return _mm512_loadu_ps((const float *)w + k);
    }
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
    if (dt == LKV_DTYPE_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AVX512_INLINE __m512 ldw_mask(const void *w, int dt, size_t k, __mmask16 m)
{
    if (dt == LKV_DTYPE_F32) {
        return _mm512_maskz_loadu_ps(m, (const float *)w + k);
    }
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
    if (dt == LKV_DTYPE_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* rows r .. r+R-1, tokens 0..N-1; R, N and dt are constants after inlining */
AVX512_INLINE void gemv_block(float *y, int ldy, const float *x, const void *w,
                              int dt, int in, int r, int R, int N)
{
    __m512      acc[8][4];
    const char *wr[8];
    size_t      esz = dt == LKV_DTYPE_F32 ? 4 : 2;
    int         k   = 0;

    for (int i = 0; i < R; i++) {
        wr[i] = (const char *)w + (size_t)(r + i) * in * esz;
        for (int t = 0; t < N; t++) {
            acc[i][t] = _mm512_setzero_ps();
        }
    }
    for (; k + 16 <= in; k += 16) {
        __m512 xv[4];

        for (int t = 0; t < N; t++) {
            xv[t] = _mm512_loadu_ps(x + (size_t)t * in + k);
        }
        for (int i = 0; i < R; i++) {
            __m512 wv = ldw(wr[i], dt, (size_t)k);
            for (int t = 0; t < N; t++) {
                acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
            }
        }
    }
    if (k < in) {
        __mmask16 m = (__mmask16)((1u << (in - k)) - 1);
        __m512    xv[4];

        for (int t = 0; t < N; t++) {
            xv[t] = _mm512_maskz_loadu_ps(m, x + (size_t)t * in + k);
        }
        for (int i = 0; i < R; i++) {
            __m512 wv = ldw_mask(wr[i], dt, (size_t)k, m);
            for (int t = 0; t < N; t++) {
                acc[i][t] = _mm512_fmadd_ps(wv, xv[t], acc[i][t]);
            }
        }
    }
    for (int i = 0; i < R; i++) {
        for (int t = 0; t < N; t++) {
            y[(size_t)t * ldy + r + i] = _mm512_reduce_add_ps(acc[i][t]);
        }
    }
}

AVX512_INLINE void gemv_rows_n(float *y, int ldy, const float *x, const void *w,
                               int dt, int in, int r0, int r1, int N)
{
    int r = r0;

    if (N == 1) { /* one token: 8 weight rows in flight */
        for (; r + 8 <= r1; r += 8) {
            gemv_block(y, ldy, x, w, dt, in, r, 8, 1);
        }
    }
    for (; r + 4 <= r1; r += 4) {
        gemv_block(y, ldy, x, w, dt, in, r, 4, N);
    }
    for (; r < r1; r++) {
        gemv_block(y, ldy, x, w, dt, in, r, 1, N);
    }
}

AVX512_FN void lkv_cpu_convert_row_avx512(float *dst, const uint16_t *src,
                                          lkv_dtype_t dt, size_t n)
{
    size_t k = 0;

    for (; k + 16 <= n; k += 16) {
        _mm512_storeu_ps(dst + k, ldw(src, dt, k));
    }
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(dst + k, m, ldw_mask(src, dt, k, m));
    }
}

AVX512_FN static void axpy_avx512(float *y, float a, const float *x, int n)
{
    __m512 av = _mm512_set1_ps(a);
    int    k  = 0;

    for (; k + 16 <= n; k += 16) {
        _mm512_storeu_ps(y + k, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + k),
                                                _mm512_loadu_ps(y + k)));
    }
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(y + k, m,
                              _mm512_fmadd_ps(av,
                                              _mm512_maskz_loadu_ps(m, x + k),
                                              _mm512_maskz_loadu_ps(m, y + k)));
    }
}

/* multi-token: tokens in blocks of GEMM_TOKEN_BLOCK (their activations stay
 * in L2); within a block, for each 4-row block of weights (which stays in
 * L1) sweep the tokens 4 at a time */
#define GEMM_TOKEN_BLOCK 128

AVX512_INLINE void gemm_rows_dt(float *y, int ldy, const float *x,
                                const void *w, int dt, int n, int in, int r0,
                                int r1)
{
    for (int tb = 0; tb < n; tb += GEMM_TOKEN_BLOCK) {
        int te = n - tb < GEMM_TOKEN_BLOCK ? n : tb + GEMM_TOKEN_BLOCK;

        for (int r = r0; r < r1; r += 4) {
            int R = r1 - r < 4 ? r1 - r : 4;
            int t = tb;

            for (; t + 4 <= te; t += 4) {
                float       *yt = y + (size_t)t * ldy;
                const float *xt = x + (size_t)t * in;
                if (R == 4) {
                    gemv_block(yt, ldy, xt, w, dt, in, r, 4, 4);
                } else {
                    for (int i = 0; i < R; i++) {
                        gemv_block(yt, ldy, xt, w, dt, in, r + i, 1, 4);
                    }
                }
            }
            for (; t < te; t++) {
                float       *yt = y + (size_t)t * ldy;
                const float *xt = x + (size_t)t * in;
                if (R == 4) {
                    gemv_block(yt, ldy, xt, w, dt, in, r, 4, 1);
                } else {
                    for (int i = 0; i < R; i++) {
                        gemv_block(yt, ldy, xt, w, dt, in, r + i, 1, 1);
                    }
                }
            }
        }
    }
}

AVX512_FN static void gemm_avx512(float *y, int ldy, const float *x,
                                  const void *w, lkv_dtype_t dt, int n, int in,
                                  int r0, int r1)
{
    switch (dt) {
    case LKV_DTYPE_F32:
        gemm_rows_dt(y, ldy, x, w, LKV_DTYPE_F32, n, in, r0, r1);
        break;
    case LKV_DTYPE_F16:
        gemm_rows_dt(y, ldy, x, w, LKV_DTYPE_F16, n, in, r0, r1);
        break;
    case LKV_DTYPE_BF16:
        gemm_rows_dt(y, ldy, x, w, LKV_DTYPE_BF16, n, in, r0, r1);
        break;
    }
}

#define GEMV_DT(name_, dt_)                                                    \
    AVX512_FN static void name_(float *y, int ldy, const float *x,             \
                                const void *w, int n, int in, int r0, int r1)  \
    {                                                                          \
        switch (n) {                                                           \
        case 1:                                                                \
            gemv_rows_n(y, ldy, x, w, dt_, in, r0, r1, 1);                     \
            break;                                                             \
        case 2:                                                                \
            gemv_rows_n(y, ldy, x, w, dt_, in, r0, r1, 2);                     \
            break;                                                             \
        case 3:                                                                \
            gemv_rows_n(y, ldy, x, w, dt_, in, r0, r1, 3);                     \
            break;                                                             \
        default:                                                               \
            gemv_rows_n(y, ldy, x, w, dt_, in, r0, r1, 4);                     \
            break;                                                             \
        }                                                                      \
    }

GEMV_DT(gemv_avx512_f32, LKV_DTYPE_F32)
GEMV_DT(gemv_avx512_f16, LKV_DTYPE_F16)
GEMV_DT(gemv_avx512_bf16, LKV_DTYPE_BF16)
#endif /* HAVE_X86_AVX512_CODE */

#ifndef HAVE_X86_AVX512_CODE
void lkv_cpu_convert_row_avx512(float *dst, const uint16_t *src, lkv_dtype_t dt,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = lkv_cpu_load(src, dt, i);
    }
}
#endif

void lkv_cpu_axpy(int simd, float *y, float a, const float *x, int n)
{
#ifdef HAVE_X86_AVX512_CODE
    if (simd) {
        axpy_avx512(y, a, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}

void lkv_cpu_gemm_rows(float *y, int ldy, const float *x, const void *w,
                       lkv_dtype_t dtype, int n, int in, int r0, int r1)
{
#ifdef HAVE_X86_AVX512_CODE
    gemm_avx512(y, ldy, x, w, dtype, n, in, r0, r1);
#else
    gemv_scalar(y, ldy, x, w, dtype, n, in, r0, r1);
#endif
}

void lkv_cpu_gemv_rows(int use_avx512, float *y, int ldy, const float *x,
                       const void *w, lkv_dtype_t dtype, int n, int in, int r0,
                       int r1)
{
#ifdef HAVE_X86_AVX512_CODE
    if (use_avx512) {
        switch (dtype) {
        case LKV_DTYPE_F32:
            gemv_avx512_f32(y, ldy, x, w, n, in, r0, r1);
            return;
        case LKV_DTYPE_F16:
            gemv_avx512_f16(y, ldy, x, w, n, in, r0, r1);
            return;
        case LKV_DTYPE_BF16:
            gemv_avx512_bf16(y, ldy, x, w, n, in, r0, r1);
            return;
        }
    }
#endif
    gemv_scalar(y, ldy, x, w, dtype, n, in, r0, r1);
}
