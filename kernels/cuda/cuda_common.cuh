/* cuda_common.cuh - private state and helpers of the CUDA backend.
 *
 * Everything here is internal to kernels/cuda/: the backend-private struct
 * behind be->impl, error-mapping macros (cudaError_t / cublasStatus_t never
 * leave this folder), device-side dtype loads/stores and the stream-ordered
 * scratch buffers. Threading: as kernels.h - one step thread; the copy/event
 * functions may also run on the kvstore mover thread (serialised by it).
 */
#ifndef LKV_KERNELS_CUDA_COMMON_CUH
#define LKV_KERNELS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "common/log.h"
#include "kernels/cuda/cuda_impl.h"
#include "kernels/kernels.h"

/* Scratch buffers, grown with cudaMallocAsync on the compute stream (no
 * device-wide synchronisation; growth is amortised by doubling). */
enum {
    LKV_CUDA_SCRATCH_ACT  = 0, /* activations converted to the weight dtype */
    LKV_CUDA_SCRATCH_ATTN = 1, /* split-K partials of decode attention */
    LKV_CUDA_SCRATCH_SAMP = 2, /* sampling: params, rng, candidates */
    LKV_CUDA_SCRATCH_COUNT
};

typedef struct lkv_cuda {
    int             device;
    int             n_sms;
    size_t          smem_optin; /* max dynamic shared memory per block */
    cudaStream_t    stream[LKV_KERN_QUEUE_COUNT];
    cublasHandle_t  blas;
    void           *scratch[LKV_CUDA_SCRATCH_COUNT];
    size_t          scratch_bytes[LKV_CUDA_SCRATCH_COUNT];
    void           *host_stage; /* pinned staging, compute queue only */
    size_t          host_stage_bytes;
    int             gemv_max_rows;    /* use the GEMV kernel for n <= this */
    unsigned       *attn_cnt;         /* split tickets of decode attention */
    size_t          attn_cnt_n;
    /* small mem_upload()s are staged through a pinned ring and queued on
     * the compute stream without a host wait (see cuda_backend.cu) */
    char           *up_ring;        /* 2 halves of LKV_CUDA_UP_HALF bytes */
    int             up_half;        /* half being filled */
    size_t          up_off;         /* bytes used in it */
    cudaEvent_t     up_done[2];     /* recorded when a half was left */
    int             up_pending[2];  /* up_done[i] recorded, not yet waited */
    int             up_dirty[LKV_KERN_QUEUE_COUNT]; /* copy queue must fence */
    cudaEvent_t     up_fence[LKV_KERN_QUEUE_COUNT];
} lkv_cuda_t;

#define LKV_CUDA_UP_HALF ((size_t)1 << 20)

struct lkv_kern_event {
    cudaEvent_t ev;
};

static inline lkv_cuda_t *lkv_cuda_of(lkv_kern_backend_t *be)
{
    return (lkv_cuda_t *)be->impl;
}

static inline cudaStream_t lkv_cuda_compute(lkv_kern_backend_t *be)
{
    return lkv_cuda_of(be)->stream[LKV_KERN_QUEUE_COMPUTE];
}

/* Map a CUDA runtime error to LKV_ERR_DEVICE, logging where it happened. */
lkv_status_t lkv_cuda_error(cudaError_t err, const char *what, const char *file,
                            int line);

/* Map a cuBLAS status (as int) to LKV_ERR_DEVICE with a log line. */
lkv_status_t lkv_cuda_blas_error(int st, const char *what);

#define LKV_CUDA_TRY(call_)                                                    \
    do {                                                                       \
        cudaError_t lkv_cu_err_ = (call_);                                     \
        if (lkv_cu_err_ != cudaSuccess) {                                      \
            return lkv_cuda_error(lkv_cu_err_, #call_, __FILE__, __LINE__);    \
        }                                                                      \
    } while (0)

/* After a kernel launch: report launch errors (bad config, sticky faults). */
#define LKV_CUDA_LAUNCHED(name_)                                               \
    do {                                                                       \
        cudaError_t lkv_cu_err_ = cudaGetLastError();                          \
        if (lkv_cu_err_ != cudaSuccess) {                                      \
            return lkv_cuda_error(lkv_cu_err_, "launch of " name_, __FILE__,   \
                                  __LINE__);                                   \
        }                                                                      \
    } while (0)

/* Make sure scratch slot `slot` holds at least `bytes` (stream-ordered on the
 * compute stream); *p receives the buffer. */
lkv_status_t lkv_cuda_scratch(lkv_cuda_t *cu, int slot, size_t bytes, void **p);

/* Pinned host staging of at least `bytes` for the compute queue. The
 * caller synchronises the compute stream before it reuses the buffer (the
 * sampler does: it waits for its tokens anyway). */
lkv_status_t lkv_cuda_host_stage(lkv_cuda_t *cu, size_t bytes, void **p);

static inline unsigned lkv_cuda_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : (b == 0 ? 1 : b));
}

/* ---- device-side dtype helpers ---- */

__device__ __forceinline__ float lkv_ld(const void *p, int dtype, size_t i)
{
    if (dtype == LKV_DTYPE_BF16) {
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    }
    if (dtype == LKV_DTYPE_F16) {
        return __half2float(((const __half *)p)[i]);
    }
    return ((const float *)p)[i];
}

__device__ __forceinline__ void lkv_st(void *p, int dtype, size_t i, float v)
{
    if (dtype == LKV_DTYPE_BF16) {
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    } else if (dtype == LKV_DTYPE_F16) {
        ((__half *)p)[i] = __float2half_rn(v);
    } else {
        ((float *)p)[i] = v;
    }
}

__device__ __forceinline__ float lkv_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float lkv_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/* Block-wide sum; every thread gets the result. blockDim.x % 32 == 0,
 * <= 1024. `red` is __shared__ float[32]. */
__device__ __forceinline__ float lkv_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int nw   = (blockDim.x + 31) >> 5;

    v = lkv_warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        red[warp] = v;
    }
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return lkv_warp_sum(v);
}

#endif /* LKV_KERNELS_CUDA_COMMON_CUH */
