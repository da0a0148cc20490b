/* test_kern_cpu.c - every CPU backend op against a naive reference written
 * here (double accumulation, no paging tricks), with random inputs and odd
 * shapes, f32/f16/bf16 weights and KV, both RoPE styles, GQA paged attention
 * over shuffled block tables with mixed prefill and decode, and sampling
 * (greedy, seeds, top-k, top-p, distribution). Each op is run on four
 * backends: 1 thread, 3 threads (SIMD) and 2 threads with SIMD disabled
 * (LKV_CPU_NO_SIMD), so the pool, the AVX-512 code and the scalar fallback
 * are all checked, plus 2 threads with OpenBLAS forced for multi-token
 * matmuls (LKV_CPU_GEMM=blas). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kernels.h"

#define N_BE 4

typedef struct {
    lkv_kern_backend_t *be[N_BE];
} fixture_t;

/* ---- test helpers ---- */
static uint64_t g_rng = 0x1234567;

static uint64_t rnd_u64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* uniform in [-1, 1) */
static float rnd(void)
{
    return (float)((double)(rnd_u64() >> 11) / 4503599627370496.0 - 1.0);
}

static void fill_rand(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = rnd() * scale;
    }
}

/* round f32 through dtype and back */
static float round_dt(float x, lkv_dtype_t dt)
{
    switch (dt) {
    case LKV_DTYPE_F16:
        return lkv_f16_to_f32(lkv_f32_to_f16(x));
    case LKV_DTYPE_BF16:
        return lkv_bf16_to_f32(lkv_f32_to_bf16(x));
    default:
        return x;
    }
}

/* encode f32 values as a dtype tensor (malloc'd) */
static void *encode(const float *x, size_t n, lkv_dtype_t dt)
{
    void *p = malloc(n * lkv_dtype_size(dt) + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        if (dt == LKV_DTYPE_F32) {
            ((float *)p)[i] = x[i];
        } else if (dt == LKV_DTYPE_F16) {
            ((uint16_t *)p)[i] = lkv_f32_to_f16(x[i]);
        } else {
            ((uint16_t *)p)[i] = lkv_f32_to_bf16(x[i]);
        }
    }
    return p;
}

static void assert_close(const float *got, const double *want, size_t n,
                         double atol, double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= atol + rtol * fabs(want[i]))) {
            fail_msg("%s: element %zu is %.8g, want %.8g (err %.3g)", what, i,
                     (double)got[i], want[i], err);
        }
    }
}

static int setup(void **state)
{
    fixture_t        *f = calloc(1, sizeof(*f));
    lkv_kern_config_t cfg;
    int               threads[N_BE] = {1, 3, 2, 2};

    if (f == NULL) {
        return -1;
    }
    for (int i = 0; i < N_BE; i++) {
        cfg           = lkv_kern_config_default();
        cfg.n_threads = threads[i];
        if (i == 2) {
            setenv("LKV_CPU_NO_SIMD", "1", 1);
        }
        if (i == 3) {
            setenv("LKV_CPU_GEMM", "blas", 1);
        }
        if (lkv_kern_backend_open("cpu", &cfg, &f->be[i]) != LKV_OK) {
            return -1;
        }
        unsetenv("LKV_CPU_NO_SIMD");
        unsetenv("LKV_CPU_GEMM");
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    for (int i = 0; i < N_BE; i++) {
        lkv_kern_backend_close(&f->be[i]);
    }
    lkv_kern_backend_close(&f->be[0]); /* NULL is fine */
    free(f);
    return 0;
}

/* ---- conversions ---- */
static void f16_known_values_round_to_nearest_even(void **state)
{
    assert_int_equal(lkv_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(lkv_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(lkv_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(lkv_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(lkv_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(lkv_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
    assert_int_equal(lkv_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(lkv_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(lkv_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    assert_int_equal(lkv_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie->even */
    assert_int_equal(lkv_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* tie->even */
    assert_int_equal(lkv_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);
    /* 1 + 2^-11 is halfway between 1 and 1+2^-10: even is 1 */
    assert_int_equal(lkv_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(lkv_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    assert_true(isnan(lkv_f16_to_f32(lkv_f32_to_f16(NAN))));
    assert_true(lkv_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(lkv_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(lkv_f16_to_f32(0x7c00)));
}

static void f16_every_value_round_trips(void **state)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = lkv_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0);
            continue;
        }
        assert_int_equal(lkv_f32_to_f16(f), h);
    }
}

static void bf16_round_to_nearest_even_and_round_trip(void **state)
{
    float    f;
    uint32_t bits;

    assert_int_equal(lkv_f32_to_bf16(1.0f), 0x3f80);
    bits = 0x3f808000u; /* tie: keep even 0x3f80 */
    memcpy(&f, &bits, 4);
    assert_int_equal(lkv_f32_to_bf16(f), 0x3f80);
    bits = 0x3f818000u; /* tie: round up to even 0x3f82 */
    memcpy(&f, &bits, 4);
    assert_int_equal(lkv_f32_to_bf16(f), 0x3f82);
    bits = 0x3f808001u;
    memcpy(&f, &bits, 4);
    assert_int_equal(lkv_f32_to_bf16(f), 0x3f81);
    assert_true(isnan(lkv_bf16_to_f32(lkv_f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 0x10000; h++) {
        f = lkv_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            continue;
        }
        assert_int_equal(lkv_f32_to_bf16(f), h);
    }
}

/* ---- memory ---- */
static void mem_alloc_is_aligned_and_copies_work(void **state)
{
    fixture_t          *f  = *state;
    lkv_kern_backend_t *be = f->be[1];
    void               *d = NULL, *h = NULL;
    char                src[100], back[100];

    for (int i = 0; i < 100; i++) {
        src[i] = (char)i;
    }
    assert_int_equal(LKV_KERN_CALL(be, mem_alloc, 100, &d), LKV_OK);
    assert_int_equal(LKV_KERN_CALL(be, host_alloc, 3, &h), LKV_OK);
    assert_int_equal((uintptr_t)d % 64, 0);
    assert_int_equal((uintptr_t)h % 64, 0);
    assert_int_equal(LKV_KERN_CALL(be, mem_upload, d, src, 100), LKV_OK);
    assert_int_equal(LKV_KERN_CALL(be, mem_download, back, d, 100), LKV_OK);
    assert_memory_equal(src, back, 100);
    assert_int_equal(LKV_KERN_CALL(be, mem_upload, NULL, src, 4),
                     LKV_ERR_INVALID);
    be->ops->mem_free(be, d);
    be->ops->host_free(be, h);
    be->ops->mem_free(be, NULL);
}

static void backend_open_rejects_bad_thread_count(void **state)
{
    lkv_kern_config_t   cfg = lkv_kern_config_default();
    lkv_kern_backend_t *be  = NULL;

    cfg.n_threads = -1;
    assert_int_equal(lkv_kern_backend_open("cpu", &cfg, &be), LKV_ERR_INVALID);
    assert_null(be);
    assert_int_equal(lkv_kern_backend_open("tpu", NULL, &be), LKV_ERR_NOTFOUND);
    cfg.n_threads = 0; /* all cpus */
    assert_int_equal(lkv_kern_backend_open("cpu", &cfg, &be), LKV_OK);
    lkv_kern_backend_close(&be);
    assert_null(be);
}

/* ---- matmul ---- */
static void matmul_ref(double *y, const float *x, const float *w_rounded,
                       const float *bias, int n, int in, int out)
{
    for (int t = 0; t < n; t++) {
        for (int o = 0; o < out; o++) {
            double s = bias != NULL ? bias[o] : 0.0;
            for (int k = 0; k < in; k++) {
                s += (double)x[(size_t)t * in + k] *
                     w_rounded[(size_t)o * in + k];
            }
            y[(size_t)t * out + o] = s;
        }
    }
}

static void matmul_matches_reference_all_dtypes_and_shapes(void **state)
{
    fixture_t *f           = *state;
    const int  shapes[][3] = {
         {1, 1, 1},     {1, 17, 33},    {1, 64, 64},   {2, 31, 7},
         {3, 64, 129},  {4, 1000, 37},  {5, 33, 300},  {17, 257, 65},
         {64, 512, 96}, {1, 768, 2048}, {2, 2048, 70}, {130, 40, 24},
    };
    const lkv_dtype_t dts[] = {LKV_DTYPE_F32, LKV_DTYPE_F16, LKV_DTYPE_BF16};

    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int     n = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float  *x    = malloc(sizeof(float) * n * in);
        float  *w    = malloc(sizeof(float) * out * in);
        float  *wr   = malloc(sizeof(float) * out * in);
        float  *bias = malloc(sizeof(float) * out);
        float  *y    = malloc(sizeof(float) * n * out);
        double *ref  = malloc(sizeof(double) * n * out);

        fill_rand(x, (size_t)n * in, 1.0f);
        fill_rand(w, (size_t)out * in, 0.5f);
        fill_rand(bias, (size_t)out, 1.0f);
        for (size_t d = 0; d < 3; d++) {
            void *wenc = encode(w, (size_t)out * in, dts[d]);
            for (size_t i = 0; i < (size_t)out * in; i++) {
                wr[i] = round_dt(w[i], dts[d]);
            }
            for (int use_bias = 0; use_bias < 2; use_bias++) {
                const float *b = use_bias ? bias : NULL;
                matmul_ref(ref, x, wr, b, n, in, out);
                for (int bi = 0; bi < N_BE; bi++) {
                    memset(y, 0xff, sizeof(float) * n * out);
                    assert_int_equal(LKV_KERN_CALL(f->be[bi], matmul, y, x,
                                                   wenc, dts[d], b, n, in, out),
                                     LKV_OK);
                    assert_close(y, ref, (size_t)n * out,
                                 1e-5 * sqrt((double)in), 1e-5, "matmul");
                }
            }
            free(wenc);
        }
        free(x);
        free(w);
        free(wr);
        free(bias);
        free(y);
        free(ref);
    }
}

static void matmul_rejects_bad_arguments_and_leaves_output(void **state)
{
    fixture_t          *f    = *state;
    lkv_kern_backend_t *be   = f->be[1];
    float               x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1};
    float               y[2] = {7, 7};

    assert_int_equal(
        LKV_KERN_CALL(be, matmul, y, x, w, LKV_DTYPE_F32, NULL, -1, 2, 2),
        LKV_ERR_INVALID);
    assert_int_equal(
        LKV_KERN_CALL(be, matmul, y, x, w, (lkv_dtype_t)9, NULL, 1, 2, 2),
        LKV_ERR_INVALID);
    assert_int_equal(
        LKV_KERN_CALL(be, matmul, y, NULL, w, LKV_DTYPE_F32, NULL, 1, 2, 2),
        LKV_ERR_INVALID);
    assert_int_equal(
        LKV_KERN_CALL(be, matmul, y, x, w, LKV_DTYPE_F32, NULL, 1, 0, 2),
        LKV_ERR_INVALID);
    assert_true(y[0] == 7 && y[1] == 7);
    /* n == 0 is a no-op */
    assert_int_equal(
        LKV_KERN_CALL(be, matmul, y, x, w, LKV_DTYPE_F32, NULL, 0, 2, 2),
        LKV_OK);
}

/* ---- embedding, rmsnorm, add, swiglu, gather ---- */
static void embedding_and_gather_copy_the_right_rows(void **state)
{
    fixture_t *f = *state;
    enum { V = 37, D = 19, N = 6 };
    float             table[V * D], out[N * D], dst[N * D];
    int32_t           ids[N] = {0, 36, 5, 5, 17, 1};
    const lkv_dtype_t dts[]  = {LKV_DTYPE_F32, LKV_DTYPE_F16, LKV_DTYPE_BF16};

    fill_rand(table, V * D, 2.0f);
    for (int d = 0; d < 3; d++) {
        void *enc = encode(table, V * D, dts[d]);
        for (int bi = 0; bi < N_BE; bi++) {
            assert_int_equal(LKV_KERN_CALL(f->be[bi], embedding, out, enc,
                                           dts[d], ids, N, D),
                             LKV_OK);
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < D; j++) {
                    assert_true(out[i * D + j] ==
                                round_dt(table[ids[i] * D + j], dts[d]));
                }
            }
        }
        free(enc);
    }
    ids[2] = -1;
    assert_int_equal(LKV_KERN_CALL(f->be[0], embedding, out, table,
                                   LKV_DTYPE_F32, ids, N, D),
                     LKV_ERR_INVALID);
    ids[2] = 5;
    assert_int_equal(
        LKV_KERN_CALL(f->be[0], gather_rows, dst, table, ids, N, D), LKV_OK);
    for (int i = 0; i < N; i++) {
        assert_memory_equal(dst + i * D, table + ids[i] * D, D * sizeof(float));
    }
    ids[0] = -3;
    assert_int_equal(
        LKV_KERN_CALL(f->be[0], gather_rows, dst, table, ids, N, D),
        LKV_ERR_INVALID);
}

static void rmsnorm_matches_reference_in_place(void **state)
{
    fixture_t        *f      = *state;
    const int         dims[] = {1, 7, 64, 259};
    const lkv_dtype_t dts[]  = {LKV_DTYPE_F32, LKV_DTYPE_F16, LKV_DTYPE_BF16};
    enum { N = 3 };

    for (int di = 0; di < 4; di++) {
        int     dim = dims[di];
        float  *x   = malloc(sizeof(float) * N * dim);
        float  *y   = malloc(sizeof(float) * N * dim);
        float  *w   = malloc(sizeof(float) * dim);
        double *ref = malloc(sizeof(double) * N * dim);

        fill_rand(x, (size_t)N * dim, 3.0f);
        fill_rand(w, (size_t)dim, 1.0f);
        for (int d = 0; d < 3; d++) {
            void *wenc = encode(w, (size_t)dim, dts[d]);
            for (int t = 0; t < N; t++) {
                double ss = 0;
                for (int i = 0; i < dim; i++) {
                    ss += (double)x[t * dim + i] * x[t * dim + i];
                }
                ss = 1.0 / sqrt(ss / dim + 1e-5);
                for (int i = 0; i < dim; i++) {
                    ref[t * dim + i] =
                        x[t * dim + i] * ss * round_dt(w[i], dts[d]);
                }
            }
            for (int bi = 0; bi < N_BE; bi++) {
                memcpy(y, x, sizeof(float) * N * dim);
                assert_int_equal(LKV_KERN_CALL(f->be[bi], rmsnorm, y, y, wenc,
                                               dts[d], N, dim, 1e-5f),
                                 LKV_OK);
                assert_close(y, ref, (size_t)N * dim, 1e-5, 1e-5, "rmsnorm");
            }
            free(wenc);
        }
        free(x);
        free(y);
        free(w);
        free(ref);
    }
}

static void add_and_swiglu_match_reference_with_aliasing(void **state)
{
    fixture_t *f = *state;
    enum { N = 1001 };
    float  a[N], b[N], y[N];
    double ref[N];

    fill_rand(a, N, 8.0f);
    fill_rand(b, N, 8.0f);
    for (int i = 0; i < N; i++) {
        ref[i] = (double)a[i] + b[i];
    }
    memcpy(y, a, sizeof(y));
    assert_int_equal(LKV_KERN_CALL(f->be[0], add, y, y, b, (size_t)N), LKV_OK);
    assert_close(y, ref, N, 1e-6, 1e-6, "add");
    for (int i = 0; i < N; i++) {
        double g = a[i];
        ref[i]   = g / (1.0 + exp(-g)) * b[i];
    }
    memcpy(y, a, sizeof(y));
    assert_int_equal(LKV_KERN_CALL(f->be[0], swiglu, y, y, b, (size_t)N),
                     LKV_OK);
    assert_close(y, ref, N, 1e-5, 1e-5, "swiglu");
    assert_int_equal(LKV_KERN_CALL(f->be[0], add, y, NULL, b, (size_t)N),
                     LKV_ERR_INVALID);
}

/* ---- rope ---- */
static void rope_ref(double *out, const float *x, const int32_t *pos, int n,
                     int n_heads, int hd, int rot, lkv_rope_style_t style,
                     const float *inv_freq)
{
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < n_heads; h++) {
            const float *xh = x + ((size_t)t * n_heads + h) * hd;
            double      *oh = out + ((size_t)t * n_heads + h) * hd;

            for (int i = 0; i < hd; i++) {
                oh[i] = xh[i];
            }
            for (int i = 0; i < rot / 2; i++) {
                double th = (double)((float)pos[t] * inv_freq[i]);
                int    i0 = style == LKV_ROPE_ADJACENT ? 2 * i : i;
                int i1 = style == LKV_ROPE_ADJACENT ? 2 * i + 1 : i + rot / 2;
                oh[i0] = xh[i0] * cos(th) - xh[i1] * sin(th);
                oh[i1] = xh[i0] * sin(th) + xh[i1] * cos(th);
            }
        }
    }
}

static void rope_both_styles_match_reference(void **state)
{
    fixture_t *f         = *state;
    const int  cfgs[][3] = {{2, 8, 8}, {3, 64, 64}, {2, 80, 32}, {1, 6, 0}};
    int32_t    pos[5]    = {0, 1, 7, 300, 4095};
    enum { N = 5 };

    for (int ci = 0; ci < 4; ci++) {
        int     nh = cfgs[ci][0], hd = cfgs[ci][1], rot = cfgs[ci][2];
        size_t  ne = (size_t)N * nh * hd;
        float  *x  = malloc(ne * sizeof(float));
        float  *y  = malloc(ne * sizeof(float));
        double *r  = malloc(ne * sizeof(double));
        float   inv_freq[64];

        for (int i = 0; i < rot / 2; i++) {
            inv_freq[i] = powf(10000.0f, -2.0f * i / (float)rot);
        }
        fill_rand(x, ne, 1.0f);
        for (int style = 0; style < 2; style++) {
            rope_ref(r, x, pos, N, nh, hd, rot, (lkv_rope_style_t)style,
                     inv_freq);
            for (int bi = 0; bi < N_BE; bi++) {
                memcpy(y, x, ne * sizeof(float));
                assert_int_equal(LKV_KERN_CALL(f->be[bi], rope, y, pos, N, nh,
                                               hd, rot, (lkv_rope_style_t)style,
                                               inv_freq),
                                 LKV_OK);
                assert_close(y, r, ne, 2e-5, 1e-5, "rope");
            }
        }
        free(x);
        free(y);
        free(r);
    }
    {
        float x[8] = {0}, inv[2] = {1, 1};
        assert_int_equal(LKV_KERN_CALL(f->be[0], rope, x, pos, 1, 1, 8, 3,
                                       LKV_ROPE_ADJACENT, inv),
                         LKV_ERR_INVALID); /* odd rot_dim */
        assert_int_equal(LKV_KERN_CALL(f->be[0], rope, x, pos, 1, 1, 4, 8,
                                       LKV_ROPE_ADJACENT, inv),
                         LKV_ERR_INVALID); /* rot_dim > head_dim */
    }
}

/* ---- kv_write + attention ---- */
static void kv_write_follows_documented_layout(void **state)
{
    fixture_t *f = *state;
    enum { BS = 4, KVH = 2, HD = 3, NB = 3, ROW = KVH * HD };
    float   pool[NB * 2 * BS * ROW];
    float   k[2 * ROW], v[2 * ROW];
    int32_t slots[3] = {9, -1, 2}; /* block 2 off 1; skipped; block 0 off 2 */
    float   k3[3 * ROW], v3[3 * ROW];

    fill_rand(k, 2 * ROW, 1.0f);
    fill_rand(v, 2 * ROW, 1.0f);
    memset(k3, 0, sizeof(k3));
    memset(v3, 0, sizeof(v3));
    memcpy(k3, k, ROW * sizeof(float));
    memcpy(v3, v, ROW * sizeof(float));
    memcpy(k3 + 2 * ROW, k + ROW, ROW * sizeof(float));
    memcpy(v3 + 2 * ROW, v + ROW, ROW * sizeof(float));
    memset(pool, 0, sizeof(pool));
    assert_int_equal(LKV_KERN_CALL(f->be[0], kv_write, pool, LKV_DTYPE_F32,
                                   slots, k3, v3, 3, KVH, HD, BS),
                     LKV_OK);
    for (int i = 0; i < ROW; i++) {
        assert_true(pool[2 * 2 * BS * ROW + 1 * ROW + i] == k[i]);
        assert_true(pool[2 * 2 * BS * ROW + BS * ROW + 1 * ROW + i] == v[i]);
        assert_true(pool[0 * 2 * BS * ROW + 2 * ROW + i] == k[ROW + i]);
        assert_true(pool[0 * 2 * BS * ROW + BS * ROW + 2 * ROW + i] ==
                    v[ROW + i]);
    }
    /* block 1 untouched */
    for (int i = 0; i < 2 * BS * ROW; i++) {
        assert_true(pool[2 * BS * ROW + i] == 0.0f);
    }
    assert_int_equal(LKV_KERN_CALL(f->be[0], kv_write, pool, LKV_DTYPE_F32,
                                   slots, k3, v3, 3, 0, HD, BS),
                     LKV_ERR_INVALID);
}

typedef struct {
    int n_q;
    int ctx;
} seq_shape_t;

static void attention_case(fixture_t *f, lkv_dtype_t kvdt, int n_heads,
                           int n_kv, int hd, int bs, const seq_shape_t *sh,
                           int n_seqs)
{
    int      max_blocks = 0, total_blocks = 0, n_rows = 0;
    int32_t *q_start = calloc((size_t)n_seqs + 1, sizeof(int32_t));
    int32_t *ctx_len = calloc((size_t)n_seqs, sizeof(int32_t));
    size_t   row     = (size_t)n_kv * hd;

    for (int s = 0; s < n_seqs; s++) {
        int nb     = (sh[s].ctx + bs - 1) / bs;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total_blocks += nb;
        q_start[s + 1] = q_start[s] + sh[s].n_q;
        ctx_len[s]     = sh[s].ctx;
    }
    n_rows          = q_start[n_seqs];
    int      stride = max_blocks + 1;
    int      n_pool = total_blocks + 3; /* spare blocks stay unused */
    int32_t *bt     = malloc(sizeof(int32_t) * n_seqs * stride);
    int32_t *perm   = malloc(sizeof(int32_t) * n_pool);
    for (int i = 0; i < n_pool; i++) {
        perm[i] = i;
    }
    for (int i = n_pool - 1; i > 0; i--) { /* shuffled: non-contiguous */
        int     j = (int)(rnd_u64() % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i]   = perm[j];
        perm[j]   = t;
    }
    for (int s = 0, used = 0; s < n_seqs; s++) {
        for (int b = 0; b < stride; b++) {
            bt[s * stride + b] =
                b < (sh[s].ctx + bs - 1) / bs ? perm[used++] : -1;
        }
    }
    size_t pool_elems = (size_t)n_pool * 2 * bs * row;
    void  *pool       = calloc(pool_elems, lkv_dtype_size(kvdt));
    /* per seq K/V for every position (rounded through kvdt: the oracle) */
    float **ks = calloc((size_t)n_seqs, sizeof(float *));
    float **vs = calloc((size_t)n_seqs, sizeof(float *));
    for (int s = 0; s < n_seqs; s++) {
        int      ctx   = sh[s].ctx;
        int32_t *slots = malloc(sizeof(int32_t) * (ctx + 1));
        ks[s]          = malloc(sizeof(float) * ctx * row + 4);
        vs[s]          = malloc(sizeof(float) * ctx * row + 4);
        fill_rand(ks[s], (size_t)ctx * row, 1.0f);
        fill_rand(vs[s], (size_t)ctx * row, 1.0f);
        for (int p = 0; p < ctx; p++) {
            slots[p] = bt[s * stride + p / bs] * bs + p % bs;
        }
        /* write in two calls (as prefill chunks would) */
        int half = ctx / 2;
        assert_int_equal(LKV_KERN_CALL(f->be[0], kv_write, pool, kvdt, slots,
                                       ks[s], vs[s], half, n_kv, hd, bs),
                         LKV_OK);
        assert_int_equal(LKV_KERN_CALL(f->be[0], kv_write, pool, kvdt,
                                       slots + half, ks[s] + half * row,
                                       vs[s] + half * row, ctx - half, n_kv, hd,
                                       bs),
                         LKV_OK);
        for (size_t i = 0; i < (size_t)ctx * row; i++) {
            ks[s][i] = round_dt(ks[s][i], kvdt);
            vs[s][i] = round_dt(vs[s][i], kvdt);
        }
        free(slots);
    }
    size_t  qn  = (size_t)n_rows * n_heads * hd;
    float  *q   = malloc(sizeof(float) * qn + 4);
    float  *out = malloc(sizeof(float) * qn + 4);
    double *ref = malloc(sizeof(double) * qn + 8);
    fill_rand(q, qn, 1.0f);
    float scale = 1.0f / sqrtf((float)hd);

    /* naive reference */
    for (int s = 0; s < n_seqs; s++) {
        for (int i = 0; i < sh[s].n_q; i++) {
            int     r    = q_start[s] + i;
            int     qpos = sh[s].ctx - sh[s].n_q + i;
            double *sc   = malloc(sizeof(double) * (qpos + 1));
            for (int h = 0; h < n_heads; h++) {
                int          kvh = h / (n_heads / n_kv);
                const float *qh  = q + ((size_t)r * n_heads + h) * hd;
                double       mx = -INFINITY, sum = 0;
                for (int p = 0; p <= qpos; p++) {
                    double d = 0;
                    for (int j = 0; j < hd; j++) {
                        d += (double)qh[j] * ks[s][p * row + kvh * hd + j];
                    }
                    sc[p] = d * scale;
                    mx    = sc[p] > mx ? sc[p] : mx;
                }
                for (int p = 0; p <= qpos; p++) {
                    sc[p] = exp(sc[p] - mx);
                    sum += sc[p];
                }
                for (int j = 0; j < hd; j++) {
                    double a = 0;
                    for (int p = 0; p <= qpos; p++) {
                        a += sc[p] * vs[s][p * row + kvh * hd + j];
                    }
                    ref[((size_t)r * n_heads + h) * hd + j] = a / sum;
                }
            }
            free(sc);
        }
    }
    lkv_kern_attn_t a = {
        .n_seqs      = n_seqs,
        .q_start     = q_start,
        .ctx_len     = ctx_len,
        .block_table = bt,
        .bt_stride   = stride,
        .n_heads     = n_heads,
        .n_kv_heads  = n_kv,
        .head_dim    = hd,
        .block_size  = bs,
        .scale       = scale,
    };
    for (int bi = 0; bi < N_BE; bi++) {
        memset(out, 0xff, sizeof(float) * qn);
        assert_int_equal(
            LKV_KERN_CALL(f->be[bi], attention, out, q, pool, kvdt, &a),
            LKV_OK);
        assert_close(out, ref, qn, 2e-5, 1e-4, "attention");
    }
    /* bad inputs are rejected and leave out untouched */
    memset(out, 0, sizeof(float) * qn);
    ctx_len[0] = sh[0].n_q - 1; /* fewer keys than queries */
    assert_int_equal(LKV_KERN_CALL(f->be[1], attention, out, q, pool, kvdt, &a),
                     LKV_ERR_INVALID);
    ctx_len[0] = sh[0].ctx;
    bt[0]      = -1;
    assert_int_equal(LKV_KERN_CALL(f->be[1], attention, out, q, pool, kvdt, &a),
                     LKV_ERR_INVALID);
    bt[0]      = perm[0];
    a.head_dim = 4096; /* over the cpu limit */
    assert_int_equal(LKV_KERN_CALL(f->be[1], attention, out, q, pool, kvdt, &a),
                     LKV_ERR_INVALID);
    a.head_dim   = hd;
    a.n_kv_heads = n_heads + 1;
    assert_int_equal(LKV_KERN_CALL(f->be[1], attention, out, q, pool, kvdt, &a),
                     LKV_ERR_INVALID);
    for (size_t i = 0; i < qn; i++) {
        assert_true(out[i] == 0.0f);
    }

    for (int s = 0; s < n_seqs; s++) {
        free(ks[s]);
        free(vs[s]);
    }
    free(ks);
    free(vs);
    free(q);
    free(out);
    free(ref);
    free(pool);
    free(bt);
    free(perm);
    free(q_start);
    free(ctx_len);
}

static void attention_mixed_prefill_decode_gqa_matches_reference(void **state)
{
    fixture_t *f = *state;
    /* prefill from scratch, chunked prefill, decodes, a long context that
     * spans several softmax chunks, an idle (0-query) sequence */
    seq_shape_t       mixed[] = {{7, 7}, {1, 1},   {1, 40}, {5, 33},
                                 {0, 9}, {1, 600}, {3, 3}};
    seq_shape_t       one[]   = {{1, 17}};
    const lkv_dtype_t dts[]   = {LKV_DTYPE_F32, LKV_DTYPE_F16, LKV_DTYPE_BF16};

    for (int d = 0; d < 3; d++) {
        attention_case(f, dts[d], 8, 2, 16, 16, mixed, 7); /* GQA 4:1 */
        attention_case(f, dts[d], 4, 4, 24, 5, mixed, 7);  /* MHA, odd bs */
        attention_case(f, dts[d], 6, 1, 64, 1, one, 1);    /* MQA, bs 1 */
    }
    attention_case(f, LKV_DTYPE_F32, 12, 12, 64, 16, mixed, 7);
    attention_case(f, LKV_DTYPE_F16, 12, 1, 16, 4, mixed, 7); /* 12 > group */
    attention_case(f, LKV_DTYPE_F32, 20, 2, 8, 3, mixed, 7);  /* 10 per kv */
}

/* ---- sampling ---- */
static void sample_greedy_is_argmax_lowest_id_on_ties(void **state)
{
    fixture_t *f             = *state;
    float      logits[2][6]  = {{0, 3, 1, 3, -1, 2}, {-5, -5, -5, -5, -5, -5}};
    lkv_sample_params_t p[2] = {{0.0f, 0, 1.0f, 1}, {-1.0f, 0, 1.0f, 2}};
    uint64_t            rng[2] = {1, 2};
    int32_t             tok[2] = {-1, -1};

    assert_int_equal(
        LKV_KERN_CALL(f->be[0], sample, tok, &logits[0][0], 2, 6, p, rng),
        LKV_OK);
    assert_int_equal(tok[0], 1);
    assert_int_equal(tok[1], 0);
}

static void sample_seeded_is_reproducible_and_batch_independent(void **state)
{
    fixture_t *f = *state;
    enum { V = 100, T = 50 };
    float               logits[3 * V];
    lkv_sample_params_t p[3] = {
        {1.0f, 0, 1.0f, 42}, {0.8f, 10, 0.9f, 43}, {1.2f, 0, 0.95f, 42}};
    int32_t  a[T][3], b[T][3];
    uint64_t rng[3];

    fill_rand(logits, 3 * V, 2.0f);
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < 3; i++) {
            rng[i] = p[i].seed;
        }
        for (int t = 0; t < T; t++) {
            assert_int_equal(LKV_KERN_CALL(f->be[rep], sample,
                                           rep ? b[t] : a[t], logits, 3, V, p,
                                           rng),
                             LKV_OK);
        }
    }
    assert_memory_equal(a, b, sizeof(a));
    /* row 1 alone, same seed: same stream as inside the batch */
    rng[0] = p[1].seed;
    for (int t = 0; t < T; t++) {
        int32_t tok = -1;
        assert_int_equal(
            LKV_KERN_CALL(f->be[0], sample, &tok, logits + V, 1, V, &p[1], rng),
            LKV_OK);
        assert_int_equal(tok, a[t][1]);
    }
    /* the draws are not all the same token (temperature 1 over 100) */
    int distinct = 0;
    for (int t = 1; t < T; t++) {
        distinct += a[t][0] != a[0][0];
    }
    assert_true(distinct > 0);
    /* a different seed gives a different stream */
    int same = 0;
    rng[0]   = 7;
    for (int t = 0; t < T; t++) {
        int32_t tok = -1;
        LKV_KERN_CALL(f->be[0], sample, &tok, logits, 1, V, &p[0], rng);
        same += tok == a[t][0];
    }
    assert_true(same < T);
}

static void sample_top_k1_and_tiny_top_p_equal_greedy(void **state)
{
    fixture_t *f = *state;
    enum { V = 1000 };
    float logits[V];

    for (int trial = 0; trial < 20; trial++) {
        fill_rand(logits, V, 5.0f);
        if (trial == 3) { /* a tie at the top */
            logits[10] = logits[900] = 50.0f;
        }
        int32_t             want = 0, got;
        lkv_sample_params_t g    = {0.0f, 0, 1.0f, 0};
        lkv_sample_params_t k1   = {1.5f, 1, 1.0f, (uint64_t)trial};
        lkv_sample_params_t tp   = {1.5f, 0, 1e-6f, (uint64_t)trial};
        lkv_sample_params_t kp   = {0.7f, 50, 1e-6f, (uint64_t)trial};
        uint64_t            st   = (uint64_t)trial;

        LKV_KERN_CALL(f->be[0], sample, &want, logits, 1, V, &g, &st);
        if (trial == 3) {
            assert_int_equal(want, 10);
        }
        assert_int_equal(
            LKV_KERN_CALL(f->be[0], sample, &got, logits, 1, V, &k1, &st),
            LKV_OK);
        assert_int_equal(got, want);
        assert_int_equal(
            LKV_KERN_CALL(f->be[0], sample, &got, logits, 1, V, &tp, &st),
            LKV_OK);
        assert_int_equal(got, want);
        assert_int_equal(
            LKV_KERN_CALL(f->be[0], sample, &got, logits, 1, V, &kp, &st),
            LKV_OK);
        assert_int_equal(got, want);
    }
}

static void sample_distribution_follows_softmax_topk_topp(void **state)
{
    fixture_t   *f       = *state;
    const double probs[] = {0.1, 0.2, 0.3, 0.4};
    float        logits[4];
    enum { N = 20000 };

    for (int i = 0; i < 4; i++) {
        logits[i] = (float)log(probs[i]) + 3.0f; /* shift must not matter */
    }
    struct {
        lkv_sample_params_t p;
        double              want[4];
    } cases[] = {
        {{1.0f, 0, 1.0f, 99}, {0.1, 0.2, 0.3, 0.4}},
        {{1.0f, 2, 1.0f, 98}, {0, 0, 0.3 / 0.7, 0.4 / 0.7}},
        {{1.0f, 0, 0.5f, 97}, {0, 0, 0.3 / 0.7, 0.4 / 0.7}}, /* 0.4 < 0.5 */
        {{1.0f, 0, 0.35f, 96}, {0, 0, 0, 1}},
        {{1.0f, 3, 0.8f, 95}, {0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int      count[4] = {0};
        uint64_t st       = cases[c].p.seed;
        for (int i = 0; i < N; i++) {
            int32_t tok = -1;
            assert_int_equal(LKV_KERN_CALL(f->be[0], sample, &tok, logits, 1, 4,
                                           &cases[c].p, &st),
                             LKV_OK);
            assert_true(tok >= 0 && tok < 4);
            count[tok]++;
        }
        for (int i = 0; i < 4; i++) {
            double got = (double)count[i] / N;
            if (fabs(got - cases[c].want[i]) > 0.015) {
                fail_msg("case %zu token %d: frequency %.4f, want %.4f", c, i,
                         got, cases[c].want[i]);
            }
        }
    }
    /* temperature 0.5 sharpens: p ~ probs^2 */
    {
        lkv_sample_params_t p    = {0.5f, 0, 1.0f, 5};
        uint64_t            st   = 5;
        int                 c3   = 0;
        double              norm = 0.01 + 0.04 + 0.09 + 0.16;
        for (int i = 0; i < N; i++) {
            int32_t tok = -1;
            LKV_KERN_CALL(f->be[0], sample, &tok, logits, 1, 4, &p, &st);
            c3 += tok == 3;
        }
        assert_true(fabs((double)c3 / N - 0.16 / norm) < 0.015);
    }
}

static void sample_rejects_nan_params(void **state)
{
    fixture_t          *f         = *state;
    float               logits[3] = {1, 2, 3};
    lkv_sample_params_t p         = {NAN, 0, 1.0f, 0};
    uint64_t            st        = 3;
    int32_t             tok       = -7;

    assert_int_equal(
        LKV_KERN_CALL(f->be[0], sample, &tok, logits, 1, 3, &p, &st),
        LKV_ERR_INVALID);
    assert_int_equal(tok, -7);
    assert_int_equal(st, 3);
    p.temperature = 1.0f;
    assert_int_equal(
        LKV_KERN_CALL(f->be[0], sample, &tok, logits, 1, 0, &p, &st),
        LKV_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_known_values_round_to_nearest_even),
        cmocka_unit_test(f16_every_value_round_trips),
        cmocka_unit_test(bf16_round_to_nearest_even_and_round_trip),
        cmocka_unit_test(backend_open_rejects_bad_thread_count),
        cmocka_unit_test(mem_alloc_is_aligned_and_copies_work),
        cmocka_unit_test(matmul_matches_reference_all_dtypes_and_shapes),
        cmocka_unit_test(matmul_rejects_bad_arguments_and_leaves_output),
        cmocka_unit_test(embedding_and_gather_copy_the_right_rows),
        cmocka_unit_test(rmsnorm_matches_reference_in_place),
        cmocka_unit_test(add_and_swiglu_match_reference_with_aliasing),
        cmocka_unit_test(rope_both_styles_match_reference),
        cmocka_unit_test(kv_write_follows_documented_layout),
        cmocka_unit_test(attention_mixed_prefill_decode_gqa_matches_reference),
        cmocka_unit_test(sample_greedy_is_argmax_lowest_id_on_ties),
        cmocka_unit_test(sample_seeded_is_reproducible_and_batch_independent),
        cmocka_unit_test(sample_top_k1_and_tiny_top_p_equal_greedy),
        cmocka_unit_test(sample_distribution_follows_softmax_topk_topp),
        cmocka_unit_test(sample_rejects_nan_params),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
