/* cpu_attention.c - paged attention over one layer's block tables (CPU).
 *
 * Semantics are those of kernels.h (lkv_kern_attn_t): causal prefill and
 * decode in one call, GQA, K/V read from the paged pool in f32/f16/bf16.
 * Work is split across the compute pool into tasks of (query row, KV head,
 * up to ATTN_GROUP of the query heads that share it), so each K/V row is
 * read once per group (GQA); each task runs a chunked online softmax (keys
 * in chunks of ATTN_CHUNK, running max and sum per head) so no scratch
 * proportional to the context is needed.
 *
 * Threading: one caller at a time (kernels.h).
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

#define ATTN_CHUNK 256
#define ATTN_MAX_HEAD_DIM 512
/* query heads per task that share one KV head (GQA): K and V rows are read
 * once for all of them */
#define ATTN_GROUP 8
/* query x key x head_dim products below which attention runs serially */
#define ATTN_SERIAL_WORK (32 * 1024)

typedef struct {
    lkv_cpu_impl_t        *impl;
    float                 *out;
    const float           *q;
    const void            *kv;
    lkv_dtype_t            dt;
    const lkv_kern_attn_t *a;
    int                    row0; /* q_start[0] */
} attn_ctx_t;

#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_AVX512 1
__attribute__((target("avx512f"))) static float
dot_f32_avx512(const float *a, const float *b, int n)
{
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    int    k    = 0;

    for (; k + 32 <= n; k += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k),
                               acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16),
                               _mm512_loadu_ps(b + k + 16), acc1);
    }
    for (; k + 16 <= n; k += 16) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k),
                               acc0);
    }
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1);
        acc1        = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k),
                                      _mm512_maskz_loadu_ps(m, b + k), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif

static float dot_f32(int simd, const float *a, const float *b, int n)
{
#ifdef ATTN_AVX512
    if (simd) {
        return dot_f32_avx512(a, b, n);
    }
#endif
    float s[4] = {0, 0, 0, 0};
    int   k    = 0;
    for (; k + 4 <= n; k += 4) {
        s[0] += a[k] * b[k];
        s[1] += a[k + 1] * b[k + 1];
        s[2] += a[k + 2] * b[k + 2];
        s[3] += a[k + 3] * b[k + 3];
    }
    for (; k < n; k++) {
        s[0] += a[k] * b[k];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* binary search: the s with q_start[s] <= row < q_start[s+1] */
static int seq_of_row(const int32_t *q_start, int n_seqs, int row)
{
    int lo = 0, hi = n_seqs - 1;

    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (q_start[mid] <= row) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    /* empty sequences share q_start with the next one: skip forward */
    while (lo + 1 < n_seqs && q_start[lo + 1] <= row) {
        lo++;
    }
    return lo;
}

static void attn_task(void *ctx_, int tid, int64_t begin, int64_t end)
{
    attn_ctx_t            *c     = ctx_;
    const lkv_kern_attn_t *a     = c->a;
    int                    hd    = a->head_dim;
    int                    grp   = a->n_heads / a->n_kv_heads;
    int                    n_sub = (grp + ATTN_GROUP - 1) / ATTN_GROUP;
    int64_t                per_r = (int64_t)a->n_kv_heads * n_sub;
    size_t                 row   = (size_t)a->n_kv_heads * hd;
    size_t                 bsz   = (size_t)a->block_size * row;
    size_t                 esz   = lkv_dtype_size(c->dt);
    int                    simd  = c->impl->have_avx512;
    float                  scores[ATTN_GROUP][ATTN_CHUNK];
    float                  acc[ATTN_GROUP][ATTN_MAX_HEAD_DIM];
    float                  kbuf[ATTN_MAX_HEAD_DIM];
    float                  m[ATTN_GROUP], l[ATTN_GROUP];

    for (int64_t task = begin; task < end; task++) {
        int r    = c->row0 + (int)(task / per_r);
        int kvh  = (int)(task % per_r) / n_sub;
        int sub  = (int)(task % per_r) % n_sub;
        int h0   = kvh * grp + sub * ATTN_GROUP;
        int G    = grp - sub * ATTN_GROUP < ATTN_GROUP ? grp - sub * ATTN_GROUP
                                                       : ATTN_GROUP;
        int s    = seq_of_row(a->q_start, a->n_seqs, r);
        int n_q  = a->q_start[s + 1] - a->q_start[s];
        int qpos = a->ctx_len[s] - n_q + (r - a->q_start[s]);
        const int32_t *bt = a->block_table + (size_t)s * a->bt_stride;
        const float   *q0 = c->q + ((size_t)r * a->n_heads + h0) * hd;

        for (int g = 0; g < G; g++) {
            memset(acc[g], 0, (size_t)hd * sizeof(float));
            m[g] = -INFINITY;
            l[g] = 0.0f;
        }
        for (int c0 = 0; c0 <= qpos; c0 += ATTN_CHUNK) {
            int   c1 = c0 + ATTN_CHUNK < qpos + 1 ? c0 + ATTN_CHUNK : qpos + 1;
            float cm[ATTN_GROUP];

            for (int g = 0; g < G; g++) {
                cm[g] = -INFINITY;
            }
            /* scores: each K row is read once for the G query heads */
            for (int p = c0; p < c1; p++) {
                size_t off = (size_t)bt[p / a->block_size] * 2 * bsz +
                             (size_t)(p % a->block_size) * row +
                             (size_t)kvh * hd;
                const float *kp;

                if (c->dt == LKV_DTYPE_F32) {
                    kp = (const float *)c->kv + off;
                } else {
                    lkv_cpu_convert_row(simd, kbuf,
                                        (const char *)c->kv + off * esz, c->dt,
                                        (size_t)hd);
                    kp = kbuf;
                }
                for (int g = 0; g < G; g++) {
                    float sc =
                        dot_f32(simd, q0 + (size_t)g * hd, kp, hd) * a->scale;

                    scores[g][p - c0] = sc;
                    cm[g]             = sc > cm[g] ? sc : cm[g];
                }
            }
            for (int g = 0; g < G; g++) {
                if (cm[g] > m[g]) {
                    float rs = expf(m[g] - cm[g]); /* 0 on the first chunk */
                    for (int d = 0; d < hd; d++) {
                        acc[g][d] *= rs;
                    }
                    l[g] *= rs;
                    m[g] = cm[g];
                }
            }
            /* values: each V row is read once for the G query heads */
            for (int p = c0; p < c1; p++) {
                size_t off = (size_t)bt[p / a->block_size] * 2 * bsz + bsz +
                             (size_t)(p % a->block_size) * row +
                             (size_t)kvh * hd;
                const float *vp;

                if (c->dt == LKV_DTYPE_F32) {
                    vp = (const float *)c->kv + off;
                } else {
                    lkv_cpu_convert_row(simd, kbuf,
                                        (const char *)c->kv + off * esz, c->dt,
                                        (size_t)hd);
                    vp = kbuf;
                }
                for (int g = 0; g < G; g++) {
                    float e = expf(scores[g][p - c0] - m[g]);

                    l[g] += e;
                    lkv_cpu_axpy(simd, acc[g], e, vp, hd);
                }
            }
        }
        for (int g = 0; g < G; g++) {
            float *oh = c->out + ((size_t)r * a->n_heads + h0 + g) * hd;
            for (int d = 0; d < hd; d++) {
                oh[d] = acc[g][d] / l[g];
            }
        }
    }
}

static lkv_status_t check_args(const lkv_kern_attn_t *a)
{
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->head_dim <= 0 ||
        a->block_size <= 0 || a->bt_stride < 0 ||
        a->n_heads % a->n_kv_heads != 0) {
        LKV_LOG_ERROR("attention: bad shape (%d heads, %d kv heads, head dim "
                      "%d, block size %d, table stride %d)",
                      a->n_heads, a->n_kv_heads, a->head_dim, a->block_size,
                      a->bt_stride);
        return LKV_ERR_INVALID;
    }
    if (a->head_dim > ATTN_MAX_HEAD_DIM) {
        LKV_LOG_ERROR("attention: head dim %d is over the cpu limit %d",
                      a->head_dim, ATTN_MAX_HEAD_DIM);
        return LKV_ERR_INVALID;
    }
    if (a->q_start[0] < 0) {
        return LKV_ERR_INVALID;
    }
    for (int s = 0; s < a->n_seqs; s++) {
        int n_q = a->q_start[s + 1] - a->q_start[s];
        int ctx = a->ctx_len[s];

        if (n_q < 0 || ctx < n_q ||
            (int64_t)ctx > (int64_t)a->bt_stride * a->block_size) {
            LKV_LOG_ERROR("attention: seq %d has %d queries, context %d and "
                          "room for %lld tokens in its block table",
                          s, n_q, ctx, (long long)a->bt_stride * a->block_size);
            return LKV_ERR_INVALID;
        }
        if (n_q == 0) {
            continue;
        }
        for (int b = 0; b < (ctx + a->block_size - 1) / a->block_size; b++) {
            if (a->block_table[(size_t)s * a->bt_stride + b] < 0) {
                LKV_LOG_ERROR("attention: seq %d block %d of its table is "
                              "unset (%d)",
                              s, b,
                              a->block_table[(size_t)s * a->bt_stride + b]);
                return LKV_ERR_INVALID;
            }
        }
    }
    return LKV_OK;
}

lkv_status_t lkv_cpu_attention(lkv_kern_backend_t *be, float *out,
                               const float *q, const void *kv_pool,
                               lkv_dtype_t kv_dtype, const lkv_kern_attn_t *a)
{
    lkv_cpu_impl_t *impl = lkv_cpu_impl(be);
    attn_ctx_t      c;
    int64_t         n_rows, n_tasks, work;

    if (impl == NULL || a == NULL || a->n_seqs < 0) {
        return LKV_ERR_INVALID;
    }
    if (a->n_seqs == 0) {
        return LKV_OK;
    }
    if (out == NULL || q == NULL || kv_pool == NULL || a->q_start == NULL ||
        a->ctx_len == NULL || a->block_table == NULL ||
        !lkv_cpu_dtype_ok(kv_dtype)) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(check_args(a));
    n_rows = (int64_t)a->q_start[a->n_seqs] - a->q_start[0];
    c.impl = impl;
    c.out  = out;
    c.q    = q;
    c.kv   = kv_pool;
    c.dt   = kv_dtype;
    c.a    = a;
    c.row0 = a->q_start[0];
    /* tiny jobs (short contexts of tiny models) are not worth the pool */
    work = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        work += (int64_t)(a->q_start[s + 1] - a->q_start[s]) * a->ctx_len[s];
    }
    work *= (int64_t)a->n_heads * a->head_dim;
    n_tasks = n_rows * a->n_kv_heads *
              ((a->n_heads / a->n_kv_heads + ATTN_GROUP - 1) / ATTN_GROUP);
    lkv_cpu_parallel_for(impl, n_tasks, work < ATTN_SERIAL_WORK ? n_tasks : 1,
                         attn_task, &c);
    return LKV_OK;
}
