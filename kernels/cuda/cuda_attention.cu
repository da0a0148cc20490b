/* cuda_attention.cu - paged attention over one layer's block tables, and
 * kv_write into the paged KV pool (layout and semantics: kernels.h).
 *
 * The sequence metadata (q_start, ctx_len, block_table) is device memory, so
 * the host never knows the number of query rows per sequence. Every call
 * is one launch of k_attn; its blocks pick their work on the device:
 *  - decode rows of the grid (sequences with exactly one query):
 *    flash-decoding. Block (head, seq, split) scores a contiguous slice of
 *    the sequence's keys (slice length = ceil(ctx / n_splits), decided on
 *    the device from the real context length); each warp loads K and V of
 *    DEC_KU keys at once, online softmax; the block writes a partial (max,
 *    sum, acc[head_dim]) and the last split block of (seq, head) to finish
 *    (atomic ticket) merges the partials into the output.
 *  - prefill rows (sequences with more than one query): tiled causal
 *    attention with an online softmax; 16 query rows x 32 keys per tile,
 *    K/V tiles gathered from the paged pool into shared memory (converted
 *    to f32). G persistent blocks per head stride over the (seq,
 *    query-tile) list, so no host-side count is needed.
 * GQA: query head h reads KV head h / (n_heads / n_kv_heads). head_dim up to
 * 256. Accumulation and softmax in f32 (expf, not the fast intrinsics).
 * Threading: the step thread.
 */
#define LKV_LOG_MODULE "cuda"

#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

/* ---- kv_write ---- */

__global__ void k_kv_write(void *pool, int dtype, const int32_t *slots,
                           const float *k, const float *v, int row,
                           int block_size)
{
    int     i    = blockIdx.x;
    int32_t slot = slots[i];

    if (slot < 0) {
        return;
    }
    size_t blk  = (size_t)slot / (size_t)block_size;
    size_t off  = (size_t)slot % (size_t)block_size;
    size_t base = blk * 2 * (size_t)block_size * row + off * row;
    size_t vofs = (size_t)block_size * row;
    for (int j = threadIdx.x; j < row; j += blockDim.x) {
        lkv_st(pool, dtype, base + j, k[(size_t)i * row + j]);
        lkv_st(pool, dtype, base + vofs + j, v[(size_t)i * row + j]);
    }
}

extern "C" lkv_status_t lkv_cuda_kv_write(lkv_kern_backend_t *be,
                                          void *kv_pool, lkv_dtype_t kv_dtype,
                                          const int32_t *slots, const float *k,
                                          const float *v, int n,
                                          int n_kv_heads, int head_dim,
                                          int block_size)
{
    int row;

    if (n == 0) {
        return LKV_OK;
    }
    if (kv_pool == NULL || slots == NULL || k == NULL || v == NULL || n < 0 ||
        n_kv_heads <= 0 || head_dim <= 0 || block_size <= 0 ||
        (kv_dtype != LKV_DTYPE_F32 && kv_dtype != LKV_DTYPE_F16 &&
         kv_dtype != LKV_DTYPE_BF16)) {
        return LKV_ERR_INVALID;
    }
    row = n_kv_heads * head_dim;
    k_kv_write<<<n, row >= 256 ? 256 : ((row + 31) / 32) * 32, 0,
                 lkv_cuda_compute(be)>>>(kv_pool, (int)kv_dtype, slots, k, v,
                                         row, block_size);
    LKV_CUDA_LAUNCHED("kv_write");
    return LKV_OK;
}

/* ---- shared geometry ---- */

struct attn_geo {
    const int32_t *q_start;
    const int32_t *ctx_len;
    const int32_t *bt;
    int            bt_stride;
    int            n_seqs;
    int            n_heads;
    int            group; /* n_heads / n_kv_heads */
    int            n_kv_heads;
    int            hd;
    int            bs;
    float          scale;
    int            dtype;
};

/* element index of K (V: + bs*n_kv_heads*hd) of key position p, kv head kvh */
__device__ __forceinline__ size_t k_index(const attn_geo &g, int s, int p,
                                          int kvh)
{
    int32_t blk = g.bt[(size_t)s * g.bt_stride + p / g.bs];
    return (size_t)blk * 2 * g.bs * g.n_kv_heads * g.hd +
           (size_t)(p % g.bs) * g.n_kv_heads * g.hd + (size_t)kvh * g.hd;
}

/* ---- decode: split-K ---- */

#define DEC_WARPS 4
#define DEC_KU    4 /* keys per warp per iteration */

/* Merge the n_splits partials of (s, h) into output row q0. Partials may
 * have been written by other blocks: read them through L2 (__ldcg). */
__device__ void attn_combine(float *o, const float *pp, const attn_geo &g,
                             int n_splits, int q0, int h)
{
    const size_t st = (size_t)(g.hd + 2);
    float        M = -INFINITY, L = 0.0f;

    for (int i = 0; i < n_splits; i++) {
        M = fmaxf(M, __ldcg(pp + i * st));
    }
    for (int i = 0; i < n_splits; i++) {
        float mi = __ldcg(pp + i * st);
        if (mi != -INFINITY) {
            L += __ldcg(pp + i * st + 1) * expf(mi - M);
        }
    }
    float *orow = o + ((size_t)q0 * g.n_heads + h) * g.hd;
    for (int d = threadIdx.x; d < g.hd; d += blockDim.x) {
        float a = 0.0f;
        for (int i = 0; i < n_splits; i++) {
            float mi = __ldcg(pp + i * st);
            if (mi != -INFINITY) {
                a += __ldcg(pp + i * st + 2 + d) * expf(mi - M);
            }
        }
        orow[d] = L > 0.0f ? a / L : 0.0f;
    }
}

/* One split of one (sequence, head) of a decode sequence. The block that
 * finishes last among the splits of (s, h) (ticket in cnt, reset to 0 for
 * the next call) merges them, so no separate combine launch is needed. */
template <int DMAX>
__device__ void attn_decode(float *o, float *part, unsigned *cnt,
                            const float *q, const void *pool,
                            const attn_geo &g, int n_splits, int s, int split)
{
    constexpr int NJ = DMAX / 32;
    int           h    = blockIdx.x;
    int           lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int           q0   = g.q_start[s];

    if (g.q_start[s + 1] - q0 != 1) {
        return;
    }
    int ctx   = min(g.ctx_len[s], g.bt_stride * g.bs);
    int chunk = (ctx + n_splits - 1) / n_splits;
    int kb    = split * chunk;
    int ke    = min(ctx, kb + chunk);
    int kvh   = h / g.group;
    size_t vofs = (size_t)g.bs * g.n_kv_heads * g.hd;

    float qv[NJ], acc[NJ];
    const float *qr = q + ((size_t)q0 * g.n_heads + h) * g.hd;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        int d  = lane + 32 * j;
        qv[j]  = d < g.hd ? qr[d] : 0.0f;
        acc[j] = 0.0f;
    }
    /* each warp takes DEC_KU consecutive keys at a time: their K and V rows
     * are loaded together before any math so DEC_KU * 2 * NJ loads per lane
     * are in flight (decode attention is bandwidth-bound) */
    float m = -INFINITY, l = 0.0f;
    for (int p0 = kb + warp * DEC_KU; p0 < ke; p0 += DEC_WARPS * DEC_KU) {
        float  kr[DEC_KU][NJ], vr[DEC_KU][NJ], sc[DEC_KU];
        size_t ki[DEC_KU];
#pragma unroll
        for (int u = 0; u < DEC_KU; u++) {
            ki[u] = p0 + u < ke ? k_index(g, s, p0 + u, kvh) : 0;
        }
#pragma unroll
        for (int u = 0; u < DEC_KU; u++) {
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                int  d  = lane + 32 * j;
                bool ok = p0 + u < ke && d < g.hd;
                kr[u][j] = ok ? lkv_ld(pool, g.dtype, ki[u] + d) : 0.0f;
                vr[u][j] = ok ? lkv_ld(pool, g.dtype, ki[u] + vofs + d) : 0.0f;
            }
        }
        float mx = m;
#pragma unroll
        for (int u = 0; u < DEC_KU; u++) {
            float dot = 0.0f;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                dot += qv[j] * kr[u][j];
            }
            dot   = lkv_warp_sum(dot) * g.scale;
            sc[u] = p0 + u < ke ? dot : -INFINITY;
            mx    = fmaxf(mx, sc[u]);
        }
        /* p0 < ke: sc[0] is finite, so mx is too */
        float corr = expf(m - mx); /* m == -inf: 0 */
        l *= corr;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            acc[j] *= corr;
        }
#pragma unroll
        for (int u = 0; u < DEC_KU; u++) {
            float pw = sc[u] == -INFINITY ? 0.0f : expf(sc[u] - mx);
            l += pw;
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                acc[j] += pw * vr[u][j];
            }
        }
        m = mx;
    }

    /* merge the warps */
    __shared__ float sm[DEC_WARPS], sl[DEC_WARPS];
    __shared__ float sacc[DEC_WARPS][DMAX];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        sacc[warp][lane + 32 * j] = acc[j];
    }
    __syncthreads();
    float *out = part + (((size_t)s * g.n_heads + h) * n_splits + split) *
                            (size_t)(g.hd + 2);
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) {
        M = fmaxf(M, sm[w]);
    }
    for (int d = threadIdx.x; d < g.hd; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) {
            if (sm[w] != -INFINITY) {
                a += sacc[w][d] * expf(sm[w] - M);
            }
        }
        out[2 + d] = a;
    }
    if (threadIdx.x == 0) {
        float L = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) {
            if (sm[w] != -INFINITY) {
                L += sl[w] * expf(sm[w] - M);
            }
        }
        out[0] = M;
        out[1] = L;
    }
    /* publish the partial, then take a ticket */
    __threadfence();
    __syncthreads();
    __shared__ int last;
    if (threadIdx.x == 0) {
        unsigned *c = cnt + (size_t)s * g.n_heads + h;
        unsigned  t = atomicAdd(c, 1u);
        last        = t == (unsigned)n_splits - 1;
        if (last) {
            *c = 0; /* ready for the next call (stream-ordered) */
        }
    }
    __syncthreads();
    if (last) {
        __threadfence();
        attn_combine(o, part + ((size_t)s * g.n_heads + h) * n_splits *
                                   (size_t)(g.hd + 2),
                     g, n_splits, q0, h);
    }
}

/* ---- prefill: tiled causal attention ---- */

#define PF_BQ      16
#define PF_BK      32
#define PF_THREADS 128 /* 8 threads per query row */

static size_t prefill_smem(int hd)
{
    return sizeof(float) * ((size_t)PF_BQ * (hd + 1) + (size_t)PF_BK * (hd + 1) +
                            (size_t)PF_BK * hd + (size_t)PF_BQ * (PF_BK + 1));
}

/* Prefill tiles: this block is number gy of G blocks striding over the
 * (sequence, query tile) list of head blockIdx.x. */
template <int DMAX>
__device__ void attn_prefill(float *o, const float *q, const void *pool,
                             const attn_geo &g, int gy, int G)
{
    constexpr int NJ = DMAX / 8;
    extern __shared__ float smem[];
    const int     hd  = g.hd;
    float        *Qs  = smem;                        /* [BQ][hd+1] */
    float        *Ks  = Qs + PF_BQ * (hd + 1);       /* [BK][hd+1] */
    float        *Vs  = Ks + PF_BK * (hd + 1);       /* [BK][hd] */
    float        *Ps  = Vs + PF_BK * hd;             /* [BQ][BK+1] */
    const int     h   = blockIdx.x;
    const int     kvh = h / g.group;
    const int     tid = threadIdx.x;
    const int     r   = tid >> 3; /* query row in the tile */
    const int     c8  = tid & 7;
    const size_t  vofs = (size_t)g.bs * g.n_kv_heads * hd;
    int           tile_no = 0;

    for (int s = 0; s < g.n_seqs; s++) {
        int q0 = g.q_start[s];
        int nq = g.q_start[s + 1] - q0;
        if (nq <= 1) {
            continue;
        }
        int ctx     = min(g.ctx_len[s], g.bt_stride * g.bs);
        int n_tiles = (nq + PF_BQ - 1) / PF_BQ;
        for (int t = 0; t < n_tiles; t++, tile_no++) {
            if (tile_no % G != gy) {
                continue;
            }
            int rows = min(PF_BQ, nq - t * PF_BQ);
            int pos0 = ctx - nq + t * PF_BQ; /* position of tile row 0 */
            int qpos = pos0 + r;
            int last = pos0 + rows - 1; /* last key any row needs */

            __syncthreads(); /* previous tile done with shared memory */
            for (int e = tid; e < PF_BQ * hd; e += PF_THREADS) {
                int rr = e / hd, d = e - rr * hd;
                Qs[rr * (hd + 1) + d] =
                    rr < rows ? q[((size_t)(q0 + t * PF_BQ + rr) * g.n_heads +
                                   h) * hd + d]
                              : 0.0f;
            }
            float acc[NJ];
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                acc[j] = 0.0f;
            }
            float m = -INFINITY, l = 0.0f;

            for (int kb = 0; kb <= last && kb < ctx; kb += PF_BK) {
                __syncthreads();
                for (int e = tid; e < PF_BK * hd; e += PF_THREADS) {
                    int c = e / hd, d = e - c * hd;
                    int p = kb + c;
                    float kv = 0.0f, vv = 0.0f;
                    if (p < ctx && p <= last) {
                        size_t ki = k_index(g, s, p, kvh) + d;
                        kv = lkv_ld(pool, g.dtype, ki);
                        vv = lkv_ld(pool, g.dtype, ki + vofs);
                    }
                    Ks[c * (hd + 1) + d] = kv;
                    Vs[c * hd + d]       = vv;
                }
                __syncthreads();

                float sc[PF_BK / 8];
                float tmax = -INFINITY;
                {
                    const float *qq = Qs + r * (hd + 1);
#pragma unroll
                    for (int k = 0; k < PF_BK / 8; k++) {
                        sc[k] = 0.0f;
                    }
                    for (int d = 0; d < hd; d++) {
                        float qd = qq[d];
#pragma unroll
                        for (int k = 0; k < PF_BK / 8; k++) {
                            sc[k] += qd * Ks[(c8 + 8 * k) * (hd + 1) + d];
                        }
                    }
                }
#pragma unroll
                for (int k = 0; k < PF_BK / 8; k++) {
                    int p = kb + c8 + 8 * k;
                    sc[k] = (r < rows && p <= qpos && p < ctx)
                                ? sc[k] * g.scale
                                : -INFINITY;
                    tmax = fmaxf(tmax, sc[k]);
                }
                /* the 8 threads of a row are consecutive lanes */
                for (int off = 1; off < 8; off <<= 1) {
                    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
                }
                float m_new = fmaxf(m, tmax);
                float corr  = m_new == -INFINITY ? 1.0f : expf(m - m_new);
                float psum  = 0.0f;
#pragma unroll
                for (int k = 0; k < PF_BK / 8; k++) {
                    float pk = sc[k] == -INFINITY ? 0.0f : expf(sc[k] - m_new);
                    Ps[r * (PF_BK + 1) + c8 + 8 * k] = pk;
                    psum += pk;
                }
                for (int off = 1; off < 8; off <<= 1) {
                    psum += __shfl_xor_sync(0xffffffffu, psum, off);
                }
                l = l * corr + psum;
                m = m_new;
                __syncwarp();
#pragma unroll
                for (int j = 0; j < NJ; j++) {
                    int   d = c8 + 8 * j;
                    float a = acc[j] * corr;
                    if (d < hd) {
                        for (int c = 0; c < PF_BK; c++) {
                            a += Ps[r * (PF_BK + 1) + c] * Vs[c * hd + d];
                        }
                    }
                    acc[j] = a;
                }
            }
            if (r < rows) {
                float *orow =
                    o + ((size_t)(q0 + t * PF_BQ + r) * g.n_heads + h) * hd;
#pragma unroll
                for (int j = 0; j < NJ; j++) {
                    int d = c8 + 8 * j;
                    if (d < hd) {
                        orow[d] = l > 0.0f ? acc[j] / l : 0.0f;
                    }
                }
            }
        }
    }
}

/* One launch for both kinds of sequences: blocks with y < n_seqs * n_splits
 * are decode splits, the remaining G rows of y are prefill tile workers. */
template <int DMAX>
__global__ void __launch_bounds__(PF_THREADS)
    k_attn(float *o, float *part, unsigned *cnt, const float *q,
           const void *pool, attn_geo g, int n_splits)
{
    int n_dec = g.n_seqs * n_splits;
    int y     = (int)blockIdx.y;

    if (y < n_dec) {
        attn_decode<DMAX>(o, part, cnt, q, pool, g, n_splits, y / n_splits,
                          y % n_splits);
    } else {
        attn_prefill<DMAX>(o, q, pool, g, y - n_dec, (int)gridDim.y - n_dec);
    }
}

static_assert(DEC_WARPS * 32 == PF_THREADS, "one block size for both paths");

template <int DMAX>
static lkv_status_t launch_attn(lkv_cuda_t *cu, float *out, const float *q,
                                const void *pool, const attn_geo &g)
{
    cudaStream_t s        = cu->stream[LKV_KERN_QUEUE_COMPUTE];
    int          max_ctx  = g.bt_stride * g.bs;
    int          n_splits = (2 * cu->n_sms + g.n_heads * g.n_seqs - 1) /
                   (g.n_heads * g.n_seqs);
    int          max_split = (max_ctx + 63) / 64;
    float       *part;
    size_t       smem = prefill_smem(g.hd);
    size_t       n_cnt = (size_t)g.n_seqs * g.n_heads;
    int          grid_y;

    if (n_splits > max_split) {
        n_splits = max_split;
    }
    if (n_splits > 32) {
        n_splits = 32;
    }
    if (n_splits < 1) {
        n_splits = 1;
    }
    grid_y = (4 * cu->n_sms + g.n_heads - 1) / g.n_heads;
    if (grid_y > 1024) {
        grid_y = 1024;
    }
    if ((size_t)g.n_seqs * n_splits + grid_y > 65535) {
        LKV_LOG_ERROR("attention: %d sequences in one call is too many for "
                      "cuda (at most %d)",
                      g.n_seqs, (65535 - grid_y) / n_splits);
        return LKV_ERR_INVALID;
    }
    if (smem + 8 * 1024 > cu->smem_optin) {
        LKV_LOG_ERROR("attention: head_dim %d needs %zu bytes of shared "
                      "memory, the device has %zu",
                      g.hd, smem, cu->smem_optin);
        return LKV_ERR_UNSUPPORTED;
    }
    LKV_CHECK(lkv_cuda_scratch(cu, LKV_CUDA_SCRATCH_ATTN,
                               sizeof(float) * n_cnt * n_splits * (g.hd + 2),
                               (void **)&part));
    if (cu->attn_cnt_n < n_cnt) {
        /* split tickets: zeroed once, reset by the kernel after each use */
        size_t want = n_cnt < 4096 ? 4096 : 2 * n_cnt;
        void  *np   = NULL;
        if (cu->attn_cnt != NULL) {
            LKV_CUDA_TRY(cudaFreeAsync(cu->attn_cnt, s));
            cu->attn_cnt   = NULL;
            cu->attn_cnt_n = 0;
        }
        LKV_CUDA_TRY(cudaMallocAsync(&np, want * sizeof(unsigned), s));
        LKV_CUDA_TRY(cudaMemsetAsync(np, 0, want * sizeof(unsigned), s));
        cu->attn_cnt   = (unsigned *)np;
        cu->attn_cnt_n = want;
    }
    /* the decode path's static shared memory (< 5 KiB) adds to this */
    if (smem + 8 * 1024 > 48 * 1024) {
        LKV_CUDA_TRY(cudaFuncSetAttribute(
            k_attn<DMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
            (int)smem));
    }
    dim3 grid((unsigned)g.n_heads, (unsigned)(g.n_seqs * n_splits + grid_y));
    k_attn<DMAX><<<grid, PF_THREADS, smem, s>>>(out, part, cu->attn_cnt, q,
                                                 pool, g, n_splits);
    LKV_CUDA_LAUNCHED("attention");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_attention(lkv_kern_backend_t *be, float *out,
                                           const float *q, const void *kv_pool,
                                           lkv_dtype_t kv_dtype,
                                           const lkv_kern_attn_t *a)
{
    lkv_cuda_t *cu = lkv_cuda_of(be);
    attn_geo    g;

    if (a == NULL) {
        return LKV_ERR_INVALID;
    }
    if (a->n_seqs == 0) {
        return LKV_OK;
    }
    if (out == NULL || q == NULL || kv_pool == NULL || a->n_seqs < 0 ||
        a->q_start == NULL || a->ctx_len == NULL || a->block_table == NULL ||
        a->bt_stride <= 0 || a->n_heads <= 0 || a->n_kv_heads <= 0 ||
        a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0 ||
        a->block_size <= 0 ||
        (kv_dtype != LKV_DTYPE_F32 && kv_dtype != LKV_DTYPE_F16 &&
         kv_dtype != LKV_DTYPE_BF16)) {
        return LKV_ERR_INVALID;
    }
    if (a->head_dim > 256) {
        LKV_LOG_ERROR("attention: head_dim %d is not supported on cuda "
                      "(at most 256)",
                      a->head_dim);
        return LKV_ERR_UNSUPPORTED;
    }
    g.q_start    = a->q_start;
    g.ctx_len    = a->ctx_len;
    g.bt         = a->block_table;
    g.bt_stride  = a->bt_stride;
    g.n_seqs     = a->n_seqs;
    g.n_heads    = a->n_heads;
    g.group      = a->n_heads / a->n_kv_heads;
    g.n_kv_heads = a->n_kv_heads;
    g.hd         = a->head_dim;
    g.bs         = a->block_size;
    g.scale      = a->scale;
    g.dtype      = (int)kv_dtype;
    if (g.hd <= 64) {
        return launch_attn<64>(cu, out, q, kv_pool, g);
    }
    if (g.hd <= 128) {
        return launch_attn<128>(cu, out, q, kv_pool, g);
    }
    return launch_attn<256>(cu, out, q, kv_pool, g);
}
