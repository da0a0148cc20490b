/* cuda_norm_rope.cu - CUDA element-wise ops: embedding, RMSNorm (plain and
 * fused with the residual add), add, RoPE (both conventions, partial
 * rot_dim), SwiGLU and gather_rows. All run on the compute stream.
 *
 * Index inputs (token ids, positions, row indices) live in device memory and
 * cannot be checked on the host; kernels treat a negative index as "write
 * zeros" instead of reading out of bounds. Threading: the step thread.
 */
#define LKV_LOG_MODULE "cuda"

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ext.h"

static int dtype_ok(lkv_dtype_t dt)
{
    return dt == LKV_DTYPE_F32 || dt == LKV_DTYPE_F16 || dt == LKV_DTYPE_BF16;
}

/* ---- embedding ---- */

__global__ void k_embedding(float *out, const void *table, int dtype,
                            const int32_t *ids, int dim)
{
    int     row = blockIdx.x;
    int32_t id  = ids[row];
    float  *o   = out + (size_t)row * dim;

    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = id >= 0 ? lkv_ld(table, dtype, (size_t)id * dim + i) : 0.0f;
    }
}

extern "C" lkv_status_t lkv_cuda_embedding(lkv_kern_backend_t *be, float *out,
                                           const void *table,
                                           lkv_dtype_t dtype,
                                           const int32_t *ids, int n, int dim)
{
    if (n == 0) {
        return LKV_OK;
    }
    if (out == NULL || table == NULL || ids == NULL || n < 0 || dim <= 0 ||
        !dtype_ok(dtype)) {
        return LKV_ERR_INVALID;
    }
    k_embedding<<<n, 256, 0, lkv_cuda_compute(be)>>>(out, table, (int)dtype,
                                                      ids, dim);
    LKV_CUDA_LAUNCHED("embedding");
    return LKV_OK;
}

/* ---- RMSNorm, optionally fused with the residual add ---- */

/* One block per row. resid != NULL: resid += x first (x may be NULL), then
 * normalise resid into y. resid == NULL: normalise x into y (y may == x). */
__global__ void k_rmsnorm(float *y, float *resid, const float *x,
                          const void *w, int dtype, int dim, float eps)
{
    __shared__ float red[32];
    size_t           base = (size_t)blockIdx.x * dim;
    const float     *src  = resid != NULL ? resid + base : x + base;
    float            ss   = 0.0f;

    if (resid != NULL) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float r = resid[base + i] + (x != NULL ? x[base + i] : 0.0f);
            resid[base + i] = r;
            ss += r * r;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = src[i];
            ss += v * v;
        }
    }
    ss = lkv_block_sum(ss, red);
    float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        y[base + i] = src[i] * scale * lkv_ld(w, dtype, (size_t)i);
    }
}

static unsigned norm_threads(int dim)
{
    unsigned t = 32;
    while (t < 1024 && t < (unsigned)dim / 4) {
        t *= 2;
    }
    return t;
}

extern "C" lkv_status_t lkv_cuda_rmsnorm(lkv_kern_backend_t *be, float *y,
                                         const float *x, const void *w,
                                         lkv_dtype_t dtype, int n, int dim,
                                         float eps)
{
    if (n == 0) {
        return LKV_OK;
    }
    if (y == NULL || x == NULL || w == NULL || n < 0 || dim <= 0 ||
        !dtype_ok(dtype) || !(eps >= 0.0f)) {
        return LKV_ERR_INVALID;
    }
    k_rmsnorm<<<n, norm_threads(dim), 0, lkv_cuda_compute(be)>>>(
        y, NULL, x, w, (int)dtype, dim, eps);
    LKV_CUDA_LAUNCHED("rmsnorm");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_add_rmsnorm(lkv_kern_backend_t *be, float *y,
                                             float *resid, const float *x,
                                             const void *w, lkv_dtype_t dtype,
                                             int n, int dim, float eps)
{
    if (!lkv_cuda_is_backend(be)) {
        LKV_LOG_ERROR("add_rmsnorm needs a cuda backend");
        return LKV_ERR_INVALID;
    }
    if (n == 0) {
        return LKV_OK;
    }
    if (y == NULL || resid == NULL || w == NULL || n < 0 || dim <= 0 ||
        !dtype_ok(dtype) || !(eps >= 0.0f) || y == resid || y == x) {
        return LKV_ERR_INVALID;
    }
    k_rmsnorm<<<n, norm_threads(dim), 0, lkv_cuda_compute(be)>>>(
        y, resid, x, w, (int)dtype, dim, eps);
    LKV_CUDA_LAUNCHED("add_rmsnorm");
    return LKV_OK;
}

/* ---- add, swiglu ---- */

__global__ void k_add(float *y, const float *a, const float *b, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        y[i] = a[i] + b[i];
    }
}

extern "C" lkv_status_t lkv_cuda_add(lkv_kern_backend_t *be, float *y,
                                     const float *a, const float *b,
                                     size_t n_elems)
{
    if (n_elems == 0) {
        return LKV_OK;
    }
    if (y == NULL || a == NULL || b == NULL) {
        return LKV_ERR_INVALID;
    }
    k_add<<<lkv_cuda_blocks(n_elems, 256), 256, 0, lkv_cuda_compute(be)>>>(
        y, a, b, n_elems);
    LKV_CUDA_LAUNCHED("add");
    return LKV_OK;
}

__global__ void k_swiglu(float *out, const float *gate, const float *up,
                         size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i]  = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" lkv_status_t lkv_cuda_swiglu(lkv_kern_backend_t *be, float *out,
                                        const float *gate, const float *up,
                                        size_t n_elems)
{
    if (n_elems == 0) {
        return LKV_OK;
    }
    if (out == NULL || gate == NULL || up == NULL) {
        return LKV_ERR_INVALID;
    }
    k_swiglu<<<lkv_cuda_blocks(n_elems, 256), 256, 0, lkv_cuda_compute(be)>>>(
        out, gate, up, n_elems);
    LKV_CUDA_LAUNCHED("swiglu");
    return LKV_OK;
}

/* ---- rope ---- */

/* grid (n tokens), threads over (head, pair). */
__global__ void k_rope(float *x, const int32_t *pos, int n_heads,
                       int head_dim, int half, int adjacent,
                       const float *inv_freq)
{
    int    t  = blockIdx.x;
    float  p  = (float)pos[t];
    float *xt = x + (size_t)t * n_heads * head_dim;

    for (int j = threadIdx.x; j < n_heads * half; j += blockDim.x) {
        int   h     = j / half;
        int   i     = j - h * half;
        float theta = p * inv_freq[i];
        float c, s;
        int   i0 = adjacent ? 2 * i : i;
        int   i1 = adjacent ? 2 * i + 1 : i + half;
        float *xh = xt + (size_t)h * head_dim;

        sincosf(theta, &s, &c);
        float a = xh[i0];
        float b = xh[i1];
        xh[i0]  = a * c - b * s;
        xh[i1]  = a * s + b * c;
    }
}

extern "C" lkv_status_t lkv_cuda_rope(lkv_kern_backend_t *be, float *x,
                                      const int32_t *pos, int n, int n_heads,
                                      int head_dim, int rot_dim,
                                      lkv_rope_style_t style,
                                      const float *inv_freq)
{
    int      half;
    unsigned threads;

    if (n == 0) {
        return LKV_OK;
    }
    if (x == NULL || pos == NULL || inv_freq == NULL || n < 0 ||
        n_heads <= 0 || head_dim <= 0 || rot_dim < 0 || rot_dim > head_dim ||
        (rot_dim & 1) != 0 ||
        (style != LKV_ROPE_ADJACENT && style != LKV_ROPE_HALVES)) {
        return LKV_ERR_INVALID;
    }
    half = rot_dim / 2;
    if (half == 0) {
        return LKV_OK;
    }
    threads = (unsigned)(n_heads * half);
    threads = threads >= 256 ? 256 : ((threads + 31) / 32) * 32;
    k_rope<<<n, threads, 0, lkv_cuda_compute(be)>>>(
        x, pos, n_heads, head_dim, half, style == LKV_ROPE_ADJACENT, inv_freq);
    LKV_CUDA_LAUNCHED("rope");
    return LKV_OK;
}

/* ---- gather_rows ---- */

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx,
                              int width)
{
    int     row = blockIdx.x;
    int32_t r   = idx[row];

    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        dst[(size_t)row * width + i] =
            r >= 0 ? src[(size_t)r * width + i] : 0.0f;
    }
}

extern "C" lkv_status_t lkv_cuda_gather_rows(lkv_kern_backend_t *be,
                                             float *dst, const float *src,
                                             const int32_t *idx, int n,
                                             int width)
{
    if (n == 0) {
        return LKV_OK;
    }
    if (dst == NULL || src == NULL || idx == NULL || n < 0 || width <= 0) {
        return LKV_ERR_INVALID;
    }
    if (dst == src) {
        /* in-place gather (rows may read rows already overwritten): go
         * through scratch, stream-ordered like every other user of it */
        lkv_cuda_t *cu  = lkv_cuda_of(be);
        size_t      bytes = (size_t)n * width * sizeof(float);
        void       *tmp;

        LKV_CHECK(lkv_cuda_scratch(cu, LKV_CUDA_SCRATCH_ACT, bytes, &tmp));
        k_gather_rows<<<n, 256, 0, lkv_cuda_compute(be)>>>((float *)tmp, src,
                                                           idx, width);
        LKV_CUDA_LAUNCHED("gather_rows");
        LKV_CUDA_TRY(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice,
                                     lkv_cuda_compute(be)));
        return LKV_OK;
    }
    k_gather_rows<<<n, 256, 0, lkv_cuda_compute(be)>>>(dst, src, idx, width);
    LKV_CUDA_LAUNCHED("gather_rows");
    return LKV_OK;
}
