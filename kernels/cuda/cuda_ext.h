/* cuda_ext.h - CUDA-only extras beyond the ops table of kernels.h.
 *
 * Available when LKV_HAVE_CUDA is defined. Every function takes a backend
 * opened as "cuda" (lkv_kern_backend_open("cuda", ...)) and returns
 * LKV_ERR_INVALID for any other backend or bad arguments, LKV_ERR_DEVICE on a
 * CUDA failure (logged). Nothing blocks the host unless stated. Threading as
 * kernels.h: the step thread, or the kvstore mover for the copy functions.
 */
#ifndef LKV_KERNELS_CUDA_EXT_H
#define LKV_KERNELS_CUDA_EXT_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True if be is a CUDA backend. */
int lkv_cuda_is_backend(const lkv_kern_backend_t *be);

/* Fused residual add + RMSNorm on the compute queue:
 * resid (n, dim) += x; y = rmsnorm(resid) * w. x may be NULL (norm only).
 * y must not alias resid or x. */
lkv_status_t lkv_cuda_add_rmsnorm(lkv_kern_backend_t *be, float *y,
                                  float *resid, const float *x, const void *w,
                                  lkv_dtype_t dtype, int n, int dim, float eps);

/* Layer-block copies between pools on queue q, for block lists that are not
 * contiguous: block dst_idx[i] of dst_base <- block src_idx[i] of src_base,
 * each block_bytes long. The index lists are host memory (read before the
 * call returns); runs of consecutive indices are merged into one copy.
 * Pools are mem_alloc (device) or host_alloc (pinned host) memory. */
lkv_status_t lkv_cuda_copy_blocks(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                  void *dst_base, const int32_t *dst_idx,
                                  const void *src_base, const int32_t *src_idx,
                                  int n_blocks, size_t block_bytes);

/* Same with a gather/scatter kernel instead of copy-engine transfers (good
 * for many small blocks; either pool may be pinned host memory, which the
 * kernel reads or writes through the mapping). Index lists are host memory
 * and are staged to the device on q. block_bytes must be a multiple of 16
 * and both bases 16-byte aligned. */
lkv_status_t lkv_cuda_gather_blocks(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                    void *dst_base, const int32_t *dst_idx,
                                    const void *src_base,
                                    const int32_t *src_idx, int n_blocks,
                                    size_t block_bytes);

/* Fill n elements of device memory p (dtype) with seeded uniform random
 * values in [-scale, scale) on the compute queue: value i depends only on
 * (seed, i). For dummy weights without a host round trip. */
lkv_status_t lkv_cuda_fill_random(lkv_kern_backend_t *be, void *p,
                                  lkv_dtype_t dtype, size_t n, uint64_t seed,
                                  float scale);

/* The CUDA stream behind queue q (a cudaStream_t), for libraries (NCCL)
 * that must run on the backend's streams. NULL for a non-CUDA backend. */
void *lkv_cuda_stream(lkv_kern_backend_t *be, lkv_kern_queue_t q);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KERNELS_CUDA_EXT_H */
