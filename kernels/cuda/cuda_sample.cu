/* cuda_sample.cu - on-device token sampling with the CPU backend's exact
 * semantics (kernels/cpu/cpu_sample.c is the reference):
 *  - the per-sequence stream is splitmix64: rng_state[i] advances exactly
 *    once per sampled token, also for greedy rows; u = (r >> 11) * 2^-53.
 *    The host advances it (it is one add) and ships u to the device.
 *  - greedy (temperature <= 0 or top_k == 1): argmax, lowest id on ties,
 *    nan never wins over a number.
 *  - otherwise p_i = expf((logit_i - max) / T) (nan -> 0); top-k / top-p
 *    candidates are ordered by (p desc, id asc) with a stable segmented
 *    radix sort (CUB), top-p keeps the shortest prefix whose mass reaches
 *    top_p * sum, and the token is the first candidate whose running sum
 *    exceeds u * sum (double), as on the CPU. The sums are formed per thread
 *    chunk and scanned, so they can differ from the CPU's sequential sums in
 *    the last bits: a draw can differ only when u falls within that rounding
 *    of a boundary (never for greedy).
 * The sampled ids are returned to host memory, so this op ends with a wait
 * on the compute stream. Threading: the step thread.
 */
#define LKV_LOG_MODULE "cuda"

#include <cub/cub.cuh>
#include <math.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

#define SAMP_THREADS 1024

enum { MODE_GREEDY = 0, MODE_PLAIN = 1, MODE_SORTED = 2 };

typedef struct {
    double  u;
    float   inv_t;
    float   top_p;
    int32_t top_k;
    int32_t mode;
} srow_t;

typedef cub::BlockScan<double, SAMP_THREADS>  scan_t;
typedef cub::BlockReduce<int, SAMP_THREADS>   ireduce_t;

struct op_min {
    __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};
struct op_max {
    __device__ int operator()(int a, int b) const { return a > b ? a : b; }
};

struct samp_smem {
    union {
        typename scan_t::TempStorage    scan;
        typename ireduce_t::TempStorage ired;
    } t;
    float bv[SAMP_THREADS / 32];
    int   bi[SAMP_THREADS / 32];
    int   result;
};

/* (v, i) beats (bv, bi) in a left-to-right scan that starts at bv */
__device__ __forceinline__ bool amax_better(float v, int i, float bv, int bi)
{
    if (isnan(v)) {
        return isnan(bv) && i < bi;
    }
    if (isnan(bv)) {
        return true;
    }
    return v > bv || (v == bv && i < bi);
}

__device__ int block_argmax(const float *x, int n, samp_smem &sm)
{
    float bv = x[0];
    int   bi = 0;
    int   lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (amax_better(x[i], i, bv, bi)) {
            bv = x[i];
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int   oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (amax_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    __syncthreads();
    if (lane == 0) {
        sm.bv[warp] = bv;
        sm.bi[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        bv = sm.bv[0];
        bi = sm.bi[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) {
            if (amax_better(sm.bv[w], sm.bi[w], bv, bi)) {
                bv = sm.bv[w];
                bi = sm.bi[w];
            }
        }
        sm.result = bi;
    }
    __syncthreads();
    return sm.result;
}

/* First index i < n whose inclusive prefix sum of p exceeds frac * total
 * (strict) or reaches it (!strict); -1 if none. Every thread gets it. */
__device__ int block_first_cross(const float *p, int n, double frac,
                                 bool strict, samp_smem &sm)
{
    int    chunk = (n + SAMP_THREADS - 1) / SAMP_THREADS;
    int    b = threadIdx.x * chunk, e = min(n, b + chunk);
    double local = 0.0, excl, total;

    for (int i = b; i < e; i++) {
        local += p[i];
    }
    __syncthreads();
    scan_t(sm.t.scan).ExclusiveSum(local, excl, total);
    double thr   = frac * total;
    int    found = INT_MAX;
    double acc   = excl;
    for (int i = b; i < e; i++) {
        acc += p[i];
        if (strict ? acc > thr : acc >= thr) {
            found = i;
            break;
        }
    }
    __syncthreads();
    int f = ireduce_t(sm.t.ired).Reduce(found, op_min());
    if (threadIdx.x == 0) {
        sm.result = f == INT_MAX ? -1 : f;
    }
    __syncthreads();
    return sm.result;
}

/* CPU draw(): first candidate whose running sum exceeds u * sum; on rounding
 * the last non-zero candidate (index > 0), else the first. Returns the index
 * into p. */
__device__ int block_draw(const float *p, int n, double u, samp_smem &sm)
{
    int i = block_first_cross(p, n, u, true, sm);
    if (i >= 0) {
        return i;
    }
    int last = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        if (j > 0 && p[j] > 0.0f) {
            last = max(last, j);
        }
    }
    __syncthreads();
    int r = ireduce_t(sm.t.ired).Reduce(last, op_max());
    if (threadIdx.x == 0) {
        sm.result = r;
    }
    __syncthreads();
    return sm.result;
}

/* One block per row: greedy rows finish here; others get probabilities
 * (and ids for sorting); plain temperature rows draw in id order. */
__global__ void __launch_bounds__(SAMP_THREADS)
    k_sample_prep(const float *logits, int vocab, const srow_t *rows,
                  float *probs, int32_t *ids, int32_t *tokens, int fill_all)
{
    __shared__ samp_smem sm;
    int                  row = blockIdx.x;
    const float         *x   = logits + (size_t)row * vocab;
    srow_t               sr  = rows[row];
    float               *p   = probs + (size_t)row * vocab;
    int                  am  = block_argmax(x, vocab, sm);

    if (sr.mode == MODE_GREEDY) {
        if (threadIdx.x == 0) {
            tokens[row] = am;
        }
        if (fill_all) { /* keep the sort's input defined */
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                p[i]                          = 0.0f;
                ids[(size_t)row * vocab + i] = i;
            }
        }
        return;
    }
    float mx = x[am];
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float e = expf((x[i] - mx) * sr.inv_t);
        p[i]    = e == e ? e : 0.0f;
        if (fill_all) {
            ids[(size_t)row * vocab + i] = i;
        }
    }
    if (sr.mode == MODE_PLAIN) {
        __syncthreads();
        int t = block_draw(p, vocab, sr.u, sm);
        if (threadIdx.x == 0) {
            tokens[row] = t;
        }
    }
}

/* After the sort: top-k / top-p cut and the draw. */
__global__ void __launch_bounds__(SAMP_THREADS)
    k_sample_sorted(const srow_t *rows, const float *sprobs,
                    const int32_t *sids, int vocab, int32_t *tokens)
{
    __shared__ samp_smem sm;
    int                  row = blockIdx.x;
    srow_t               sr  = rows[row];
    const float         *p   = sprobs + (size_t)row * vocab;
    int                  n_cand = vocab;

    if (sr.mode != MODE_SORTED) {
        return;
    }
    if (sr.top_k > 0 && sr.top_k < vocab) {
        n_cand = sr.top_k;
    }
    if (sr.top_p < 1.0f) {
        int i  = block_first_cross(p, n_cand, (double)sr.top_p, false, sm);
        n_cand = i >= 0 ? i + 1 : n_cand;
    }
    int t = block_draw(p, n_cand, sr.u, sm);
    if (threadIdx.x == 0) {
        tokens[row] = sids[(size_t)row * vocab + t];
    }
}

static uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t align256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

extern "C" lkv_status_t lkv_cuda_sample(lkv_kern_backend_t *be,
                                        int32_t *tokens, const float *logits,
                                        int n, int vocab,
                                        const lkv_sample_params_t *params,
                                        uint64_t *rng_state)
{
    lkv_cuda_t  *cu = lkv_cuda_of(be);
    cudaStream_t s  = lkv_cuda_compute(be);
    size_t       elems, off_rows, off_offs, off_tok, off_state, stage_bytes;
    size_t       d_probs, d_ids, d_sprobs, d_sids, d_rows, d_offs, d_tok,
        d_temp, temp_bytes = 0, dev_bytes;
    char        *st, *dv;
    srow_t      *rows;
    int32_t     *offs;
    uint64_t    *new_state;
    int          any_sorted = 0;

    if (n == 0) {
        return LKV_OK;
    }
    if (tokens == NULL || logits == NULL || params == NULL ||
        rng_state == NULL || n < 0 || vocab <= 0) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        if (isnan(params[i].temperature) || isnan(params[i].top_p)) {
            LKV_LOG_ERROR("sample: row %d has a nan temperature or top_p; "
                          "use temperature 0 for greedy",
                          i);
            return LKV_ERR_INVALID;
        }
    }
    if ((size_t)n * (size_t)vocab > (size_t)INT32_MAX) {
        LKV_LOG_ERROR("sample: %d rows of %d logits is too many for one call",
                      n, vocab);
        return LKV_ERR_INVALID;
    }
    elems       = (size_t)n * vocab;
    off_rows    = 0;
    off_offs    = align256(off_rows + sizeof(srow_t) * n);
    off_tok     = align256(off_offs + sizeof(int32_t) * (n + 1));
    off_state   = align256(off_tok + sizeof(int32_t) * n);
    stage_bytes = off_state + sizeof(uint64_t) * n;
    LKV_CHECK(lkv_cuda_host_stage(cu, stage_bytes, (void **)&st));
    rows      = (srow_t *)(st + off_rows);
    offs      = (int32_t *)(st + off_offs);
    new_state = (uint64_t *)(st + off_state);
    for (int i = 0; i < n; i++) {
        const lkv_sample_params_t *sp = &params[i];
        uint64_t                   x  = rng_state[i];
        uint64_t                   r  = splitmix64_next(&x);

        new_state[i]  = x;
        rows[i].u     = (double)(r >> 11) * (1.0 / 9007199254740992.0);
        rows[i].inv_t = sp->temperature > 0.0f ? 1.0f / sp->temperature : 0;
        rows[i].top_p = sp->top_p;
        rows[i].top_k = sp->top_k;
        if (!(sp->temperature > 0.0f) || sp->top_k == 1) {
            rows[i].mode = MODE_GREEDY;
        } else if ((sp->top_k > 0 && sp->top_k < vocab) || sp->top_p < 1.0f) {
            rows[i].mode = MODE_SORTED;
            any_sorted   = 1;
        } else {
            rows[i].mode = MODE_PLAIN;
        }
    }
    for (int i = 0; i <= n; i++) {
        offs[i] = (int32_t)((size_t)i * vocab);
    }

    /* device scratch layout */
    if (any_sorted) {
        cudaError_t err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
            NULL, temp_bytes, (const float *)NULL, (float *)NULL,
            (const int32_t *)NULL, (int32_t *)NULL, (int)elems, n,
            (const int32_t *)NULL, (const int32_t *)NULL, 0, 32, s);
        if (err != cudaSuccess) {
            return lkv_cuda_error(err, "cub sort size query", __FILE__,
                                  __LINE__);
        }
    }
    d_probs   = 0;
    d_ids     = align256(d_probs + sizeof(float) * elems);
    d_sprobs  = align256(d_ids + (any_sorted ? sizeof(int32_t) * elems : 0));
    d_sids    = align256(d_sprobs + (any_sorted ? sizeof(float) * elems : 0));
    d_rows    = align256(d_sids + (any_sorted ? sizeof(int32_t) * elems : 0));
    d_offs    = align256(d_rows + sizeof(srow_t) * n);
    d_tok     = align256(d_offs + sizeof(int32_t) * (n + 1));
    d_temp    = align256(d_tok + sizeof(int32_t) * n);
    dev_bytes = d_temp + temp_bytes;
    LKV_CHECK(lkv_cuda_scratch(cu, LKV_CUDA_SCRATCH_SAMP, dev_bytes,
                               (void **)&dv));

    LKV_CUDA_TRY(cudaMemcpyAsync(dv + d_rows, rows, sizeof(srow_t) * n,
                                 cudaMemcpyHostToDevice, s));
    if (any_sorted) {
        LKV_CUDA_TRY(cudaMemcpyAsync(dv + d_offs, offs,
                                     sizeof(int32_t) * (n + 1),
                                     cudaMemcpyHostToDevice, s));
    }
    k_sample_prep<<<n, SAMP_THREADS, 0, s>>>(
        logits, vocab, (const srow_t *)(dv + d_rows), (float *)(dv + d_probs),
        (int32_t *)(dv + d_ids), (int32_t *)(dv + d_tok), any_sorted);
    LKV_CUDA_LAUNCHED("sample prep");
    if (any_sorted) {
        const int32_t *ob = (const int32_t *)(dv + d_offs);
        cudaError_t    err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
            dv + d_temp, temp_bytes, (const float *)(dv + d_probs),
            (float *)(dv + d_sprobs), (const int32_t *)(dv + d_ids),
            (int32_t *)(dv + d_sids), (int)elems, n, ob, ob + 1, 0, 32, s);
        if (err != cudaSuccess) {
            return lkv_cuda_error(err, "cub segmented sort", __FILE__,
                                  __LINE__);
        }
        k_sample_sorted<<<n, SAMP_THREADS, 0, s>>>(
            (const srow_t *)(dv + d_rows), (const float *)(dv + d_sprobs),
            (const int32_t *)(dv + d_sids), vocab, (int32_t *)(dv + d_tok));
        LKV_CUDA_LAUNCHED("sample sorted");
    }
    LKV_CUDA_TRY(cudaMemcpyAsync(st + off_tok, dv + d_tok, sizeof(int32_t) * n,
                                 cudaMemcpyDeviceToHost, s));
    LKV_CUDA_TRY(cudaStreamSynchronize(s));
    memcpy(tokens, st + off_tok, sizeof(int32_t) * n);
    memcpy(rng_state, new_state, sizeof(uint64_t) * n);
    return LKV_OK;
}
