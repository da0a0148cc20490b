/* cuda_copy.cu - layer-block copies between KV pools for block lists that
 * are not contiguous (see cuda_ext.h):
 *  - lkv_cuda_copy_blocks: copy-engine transfers (cudaMemcpyAsync) on the
 *    queue's stream, merging runs of consecutive source and destination
 *    indices into one transfer;
 *  - lkv_cuda_gather_blocks: one kernel launch per 256 blocks that moves
 *    16-byte words, the index pairs passed by value in the launch
 *    parameters (no staging, no host synchronisation); pinned host pools
 *    are reached through their device mapping.
 * Threading: the step thread or the kvstore mover (serialised by it).
 */
#define LKV_LOG_MODULE "cuda"

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ext.h"

#define GATHER_MAX 256

struct gather_list {
    int32_t src[GATHER_MAX];
    int32_t dst[GATHER_MAX];
};

static int queue_ok(lkv_kern_queue_t q)
{
    return (int)q >= 0 && q < LKV_KERN_QUEUE_COUNT;
}

extern "C" lkv_status_t lkv_cuda_copy_blocks(lkv_kern_backend_t *be,
                                             lkv_kern_queue_t q,
                                             void *dst_base,
                                             const int32_t *dst_idx,
                                             const void *src_base,
                                             const int32_t *src_idx,
                                             int n_blocks, size_t block_bytes)
{
    lkv_cuda_t *cu;

    if (!lkv_cuda_is_backend(be) || !queue_ok(q) || n_blocks < 0 ||
        (n_blocks > 0 && (dst_base == NULL || src_base == NULL ||
                          dst_idx == NULL || src_idx == NULL))) {
        return LKV_ERR_INVALID;
    }
    if (n_blocks == 0 || block_bytes == 0) {
        return LKV_OK;
    }
    cu = lkv_cuda_of(be);
    LKV_CUDA_TRY(cudaSetDevice(cu->device));
    for (int i = 0; i < n_blocks;) {
        int run = 1;

        if (dst_idx[i] < 0 || src_idx[i] < 0) {
            LKV_LOG_ERROR("copy_blocks: negative block index at entry %d", i);
            return LKV_ERR_INVALID;
        }
        while (i + run < n_blocks && dst_idx[i + run] == dst_idx[i] + run &&
               src_idx[i + run] == src_idx[i] + run) {
            run++;
        }
        LKV_CUDA_TRY(cudaMemcpyAsync(
            (char *)dst_base + (size_t)dst_idx[i] * block_bytes,
            (const char *)src_base + (size_t)src_idx[i] * block_bytes,
            (size_t)run * block_bytes, cudaMemcpyDefault, cu->stream[q]));
        i += run;
    }
    return LKV_OK;
}

/* grid (n in this list, slices); 16-byte words */
__global__ void k_gather_blocks(uint4 *dst, const uint4 *src, gather_list l,
                                size_t words)
{
    const uint4 *s = src + (size_t)l.src[blockIdx.x] * words;
    uint4       *d = dst + (size_t)l.dst[blockIdx.x] * words;

    for (size_t i = (size_t)blockIdx.y * blockDim.x + threadIdx.x; i < words;
         i += (size_t)gridDim.y * blockDim.x) {
        d[i] = s[i];
    }
}

extern "C" lkv_status_t lkv_cuda_gather_blocks(lkv_kern_backend_t *be,
                                               lkv_kern_queue_t q,
                                               void *dst_base,
                                               const int32_t *dst_idx,
                                               const void *src_base,
                                               const int32_t *src_idx,
                                               int n_blocks,
                                               size_t block_bytes)
{
    lkv_cuda_t *cu;
    size_t      words;
    unsigned    slices;
    gather_list l;
    void       *dmap = dst_base;
    const void *smap = src_base;

    if (!lkv_cuda_is_backend(be) || !queue_ok(q) || n_blocks < 0 ||
        (n_blocks > 0 && (dst_base == NULL || src_base == NULL ||
                          dst_idx == NULL || src_idx == NULL)) ||
        block_bytes % 16 != 0 || ((uintptr_t)dst_base & 15) != 0 ||
        ((uintptr_t)src_base & 15) != 0) {
        LKV_LOG_ERROR("gather_blocks: bad arguments (block bytes %zu must be "
                      "a multiple of 16, bases 16-byte aligned)",
                      block_bytes);
        return LKV_ERR_INVALID;
    }
    if (n_blocks == 0 || block_bytes == 0) {
        return LKV_OK;
    }
    cu = lkv_cuda_of(be);
    LKV_CUDA_TRY(cudaSetDevice(cu->device));
    /* pinned host memory: use its device mapping (identical under UVA) */
    {
        cudaPointerAttributes at;
        if (cudaPointerGetAttributes(&at, dst_base) == cudaSuccess &&
            at.type == cudaMemoryTypeHost && at.devicePointer != NULL) {
            dmap = at.devicePointer;
        }
        if (cudaPointerGetAttributes(&at, src_base) == cudaSuccess &&
            at.type == cudaMemoryTypeHost && at.devicePointer != NULL) {
            smap = at.devicePointer;
        }
        (void)cudaGetLastError();
    }
    words  = block_bytes / 16;
    slices = (unsigned)((words + 255) / 256);
    if (slices > 64) {
        slices = 64;
    }
    for (int i = 0; i < n_blocks; i += GATHER_MAX) {
        int m = n_blocks - i < GATHER_MAX ? n_blocks - i : GATHER_MAX;
        for (int j = 0; j < m; j++) {
            if (dst_idx[i + j] < 0 || src_idx[i + j] < 0) {
                LKV_LOG_ERROR("gather_blocks: negative block index at "
                              "entry %d",
                              i + j);
                return LKV_ERR_INVALID;
            }
            l.src[j] = src_idx[i + j];
            l.dst[j] = dst_idx[i + j];
        }
        dim3 grid((unsigned)m, slices);
        k_gather_blocks<<<grid, 256, 0, cu->stream[q]>>>(
            (uint4 *)dmap, (const uint4 *)smap, l, words);
        LKV_CUDA_LAUNCHED("gather_blocks");
    }
    return LKV_OK;
}

/* ---- seeded random fill ---- */

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void k_fill_random(void *p, int dtype, size_t n, uint64_t seed,
                              float scale)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t r = mix64(seed + 0x9E3779B97F4A7C15ull * (i + 1));
        float    u = (float)(r >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        lkv_st(p, dtype, i, (2.0f * u - 1.0f) * scale);
    }
}

extern "C" lkv_status_t lkv_cuda_fill_random(lkv_kern_backend_t *be, void *p,
                                             lkv_dtype_t dtype, size_t n,
                                             uint64_t seed, float scale)
{
    if (!lkv_cuda_is_backend(be) || (n > 0 && p == NULL) ||
        (dtype != LKV_DTYPE_F32 && dtype != LKV_DTYPE_F16 &&
         dtype != LKV_DTYPE_BF16)) {
        return LKV_ERR_INVALID;
    }
    if (n == 0) {
        return LKV_OK;
    }
    k_fill_random<<<lkv_cuda_blocks(n, 256) > 4096 ? 4096
                                                   : lkv_cuda_blocks(n, 256),
                    256, 0, lkv_cuda_compute(be)>>>(p, (int)dtype, n, seed,
                                                    scale);
    LKV_CUDA_LAUNCHED("fill_random");
    return LKV_OK;
}
