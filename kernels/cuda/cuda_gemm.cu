/* cuda_gemm.cu - matmul on CUDA: y (n, out) = x (n, in) . W^T + bias.
 *
 * Two paths, chosen per call by the number of activation rows n:
 *  - n <= gemv_max_rows (decode): a GEMV kernel that streams the weight rows
 *    once with 16-byte loads (one warp per output row, every activation row
 *    of the batch against the same weights), f32 accumulation, bias fused.
 *    This is the path that decides decode speed: it reads W at close to the
 *    device's memory bandwidth.
 *  - larger n (prefill, big batches): cuBLAS. f32 weights use SGEMM; f16/bf16
 *    weights take the activations converted to the weight dtype (round to
 *    nearest even) into scratch and run cublasGemmEx with f32 output and f32
 *    compute; the bias is added by a small kernel.
 * Row-major y = x W^T is column-major y^T = W^T(op T on the (in, out) view of
 * W) x^T, so no transposes are materialised. Threading: the step thread.
 */
#define LKV_LOG_MODULE "cuda"

#include "kernels/cuda/cuda_common.cuh"

/* ---- GEMV ---- */

template <typename T> struct wvec;
/* 16 bytes of weights = 8 half-precision or 4 f32 elements */
template <> struct wvec<__nv_bfloat16> {
    static constexpr int N = 8;
};
template <> struct wvec<__half> {
    static constexpr int N = 8;
};
template <> struct wvec<float> {
    static constexpr int N = 4;
};

__device__ __forceinline__ void unpack(const uint4 &u, __nv_bfloat16 *,
                                       float *f)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v     = __bfloat1622float2(h[i]);
        f[2 * i]     = v.x;
        f[2 * i + 1] = v.y;
    }
}

__device__ __forceinline__ void unpack(const uint4 &u, __half *, float *f)
{
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v     = __half22float2(h[i]);
        f[2 * i]     = v.x;
        f[2 * i + 1] = v.y;
    }
}

__device__ __forceinline__ void unpack(const uint4 &u, float *, float *f)
{
    const float *h = (const float *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[i] = h[i];
    }
}

__device__ __forceinline__ float wload(const __nv_bfloat16 *w, size_t i)
{
    return __bfloat162float(w[i]);
}
__device__ __forceinline__ float wload(const __half *w, size_t i)
{
    return __half2float(w[i]);
}
__device__ __forceinline__ float wload(const float *w, size_t i)
{
    return w[i];
}

#define GEMV_WARPS  8
#define GEMV_UNROLL 4

/* One warp per output row o; NB activation rows. vec: in % VN == 0 and all
 * pointers 16-byte aligned (checked on the host). */
template <typename T, int NB, bool VEC>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    k_gemv(float *__restrict__ y, const float *__restrict__ x,
           const T *__restrict__ w, const float *__restrict__ bias, int in,
           int out)
{
    constexpr int VN   = wvec<T>::N;
    int           lane = threadIdx.x & 31;
    int           o    = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    float         acc[NB];

    if (o >= out) {
        return;
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        acc[b] = 0.0f;
    }
    const T *wr = w + (size_t)o * in;
    if (VEC) {
        const uint4 *wv    = (const uint4 *)wr;
        int          n_vec = in / VN;
        int          v     = lane;
        /* main loop: GEMV_UNROLL independent 16-byte loads in flight */
        for (; v + 32 * (GEMV_UNROLL - 1) < n_vec; v += 32 * GEMV_UNROLL) {
            uint4 u[GEMV_UNROLL];
#pragma unroll
            for (int k = 0; k < GEMV_UNROLL; k++) {
                u[k] = __ldg(wv + v + 32 * k);
            }
#pragma unroll
            for (int k = 0; k < GEMV_UNROLL; k++) {
                float f[VN];
                unpack(u[k], (T *)nullptr, f);
                int base = (v + 32 * k) * VN;
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    const float4 *xv =
                        (const float4 *)(x + (size_t)b * in + base);
#pragma unroll
                    for (int j = 0; j < VN / 4; j++) {
                        float4 xx = __ldg(xv + j);
                        acc[b] += f[4 * j] * xx.x + f[4 * j + 1] * xx.y +
                                  f[4 * j + 2] * xx.z + f[4 * j + 3] * xx.w;
                    }
                }
            }
        }
        for (; v < n_vec; v += 32) {
            float f[VN];
            unpack(__ldg(wv + v), (T *)nullptr, f);
            int base = v * VN;
#pragma unroll
            for (int b = 0; b < NB; b++) {
                const float4 *xv = (const float4 *)(x + (size_t)b * in + base);
#pragma unroll
                for (int j = 0; j < VN / 4; j++) {
                    float4 xx = __ldg(xv + j);
                    acc[b] += f[4 * j] * xx.x + f[4 * j + 1] * xx.y +
                              f[4 * j + 2] * xx.z + f[4 * j + 3] * xx.w;
                }
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            float wi = wload(wr, (size_t)i);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                acc[b] += wi * x[(size_t)b * in + i];
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        float s = lkv_warp_sum(acc[b]);
        if (lane == 0) {
            y[(size_t)b * out + o] = s + (bias != NULL ? bias[o] : 0.0f);
        }
    }
}

template <typename T, int NB>
static void launch_gemv_nb(cudaStream_t s, float *y, const float *x,
                           const void *w, const float *bias, int in, int out,
                           bool vec)
{
    unsigned grid = (unsigned)((out + GEMV_WARPS - 1) / GEMV_WARPS);

    if (vec) {
        k_gemv<T, NB, true><<<grid, GEMV_WARPS * 32, 0, s>>>(
            y, x, (const T *)w, bias, in, out);
    } else {
        k_gemv<T, NB, false><<<grid, GEMV_WARPS * 32, 0, s>>>(
            y, x, (const T *)w, bias, in, out);
    }
}

template <typename T>
static void launch_gemv(cudaStream_t s, float *y, const float *x,
                        const void *w, const float *bias, int n, int in,
                        int out)
{
    bool vec = (in % wvec<T>::N) == 0 && ((uintptr_t)w & 15) == 0 &&
               ((uintptr_t)x & 15) == 0;

    /* rows of x must stay 16-byte aligned: in % 4 == 0 (implied by vec) */
    for (int r = 0; r < n;) {
        int nb = n - r > 4 ? 4 : n - r;
        const float *xr = x + (size_t)r * in;
        float       *yr = y + (size_t)r * out;
        switch (nb) {
        case 1:
            launch_gemv_nb<T, 1>(s, yr, xr, w, bias, in, out, vec);
            break;
        case 2:
            launch_gemv_nb<T, 2>(s, yr, xr, w, bias, in, out, vec);
            break;
        case 3:
            launch_gemv_nb<T, 3>(s, yr, xr, w, bias, in, out, vec);
            break;
        default:
            launch_gemv_nb<T, 4>(s, yr, xr, w, bias, in, out, vec);
            break;
        }
        r += nb;
    }
}

/* ---- helpers for the cuBLAS path ---- */

__global__ void k_to_half(void *dst, int dtype, const float *src, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        lkv_st(dst, dtype, i, src[i]);
    }
}

__global__ void k_add_bias(float *y, const float *bias, size_t n, int out)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        y[i] += bias[i % (size_t)out];
    }
}

extern "C" lkv_status_t lkv_cuda_matmul(lkv_kern_backend_t *be, float *y,
                                        const float *x, const void *w,
                                        lkv_dtype_t dtype, const float *bias,
                                        int n, int in, int out)
{
    lkv_cuda_t    *cu = lkv_cuda_of(be);
    cudaStream_t   s  = lkv_cuda_compute(be);
    cublasStatus_t bst;
    const float    one = 1.0f, zero = 0.0f;

    if (n == 0) {
        return LKV_OK;
    }
    if (y == NULL || x == NULL || w == NULL || n < 0 || in <= 0 || out <= 0 ||
        (const void *)y == (const void *)x) {
        return LKV_ERR_INVALID;
    }
    if (dtype != LKV_DTYPE_F32 && dtype != LKV_DTYPE_F16 &&
        dtype != LKV_DTYPE_BF16) {
        return LKV_ERR_INVALID;
    }
    if (n <= cu->gemv_max_rows) {
        switch (dtype) {
        case LKV_DTYPE_BF16:
            launch_gemv<__nv_bfloat16>(s, y, x, w, bias, n, in, out);
            break;
        case LKV_DTYPE_F16:
            launch_gemv<__half>(s, y, x, w, bias, n, in, out);
            break;
        default:
            launch_gemv<float>(s, y, x, w, bias, n, in, out);
            break;
        }
        LKV_CUDA_LAUNCHED("gemv");
        return LKV_OK;
    }
    if (dtype == LKV_DTYPE_F32) {
        bst = cublasSgemm(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one,
                          (const float *)w, in, x, in, &zero, y, out);
        if (bst != CUBLAS_STATUS_SUCCESS) {
            return lkv_cuda_blas_error((int)bst, "sgemm");
        }
    } else {
        size_t       elems = (size_t)n * in;
        void        *xs;
        cudaDataType t = dtype == LKV_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;

        LKV_CHECK(lkv_cuda_scratch(cu, LKV_CUDA_SCRATCH_ACT, elems * 2, &xs));
        k_to_half<<<lkv_cuda_blocks(elems, 256), 256, 0, s>>>(xs, (int)dtype,
                                                              x, elems);
        LKV_CUDA_LAUNCHED("activation convert");
        bst = cublasGemmEx(cu->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one,
                           w, t, in, xs, t, in, &zero, y, CUDA_R_32F, out,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (bst != CUBLAS_STATUS_SUCCESS) {
            return lkv_cuda_blas_error((int)bst, "gemm_ex");
        }
    }
    if (bias != NULL) {
        size_t elems = (size_t)n * out;
        k_add_bias<<<lkv_cuda_blocks(elems, 256), 256, 0, s>>>(y, bias, elems,
                                                               out);
        LKV_CUDA_LAUNCHED("bias add");
    }
    return LKV_OK;
}
