/* cuda_impl.h - private: the CUDA backend's op functions, one per slot of
 * lkv_kern_ops_t (kernels.h documents each). Defined as extern "C" in the
 * .cu files of this folder and gathered into lkv_kern_cuda_ops by
 * cuda_ops.c. Not for use outside kernels/cuda/ - call through the table.
 */
#ifndef LKV_KERNELS_CUDA_IMPL_H
#define LKV_KERNELS_CUDA_IMPL_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cuda_backend.cu: device, streams, memory, copies, events */
lkv_status_t lkv_cuda_open(lkv_kern_backend_t *be, const lkv_kern_config_t *cfg);
void         lkv_cuda_close(lkv_kern_backend_t *be);
lkv_status_t lkv_cuda_mem_alloc(lkv_kern_backend_t *be, size_t bytes, void **p);
void         lkv_cuda_mem_free(lkv_kern_backend_t *be, void *p);
lkv_status_t lkv_cuda_host_alloc(lkv_kern_backend_t *be, size_t bytes, void **p);
void         lkv_cuda_host_free(lkv_kern_backend_t *be, void *p);
lkv_status_t lkv_cuda_mem_upload(lkv_kern_backend_t *be, void *dst,
                                 const void *host_src, size_t bytes);
lkv_status_t lkv_cuda_mem_download(lkv_kern_backend_t *be, void *host_dst,
                                   const void *src, size_t bytes);
lkv_status_t lkv_cuda_copy_async(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_kern_copy_kind_t kind, void *dst,
                                 const void *src, size_t bytes);
lkv_status_t lkv_cuda_event_create(lkv_kern_backend_t *be, lkv_kern_event_t **e);
void lkv_cuda_event_destroy(lkv_kern_backend_t *be, lkv_kern_event_t *e);
lkv_status_t lkv_cuda_event_record(lkv_kern_backend_t *be, lkv_kern_event_t *e,
                                   lkv_kern_queue_t q);
lkv_status_t lkv_cuda_queue_wait(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_kern_event_t *e);
lkv_status_t lkv_cuda_event_sync(lkv_kern_backend_t *be, lkv_kern_event_t *e);
lkv_status_t lkv_cuda_event_query(lkv_kern_backend_t *be, lkv_kern_event_t *e);
lkv_status_t lkv_cuda_sync(lkv_kern_backend_t *be, lkv_kern_queue_t q);

/* cuda_norm_rope.cu: element-wise, norms, rope */
lkv_status_t lkv_cuda_embedding(lkv_kern_backend_t *be, float *out,
                                const void *table, lkv_dtype_t dtype,
                                const int32_t *ids, int n, int dim);
lkv_status_t lkv_cuda_rmsnorm(lkv_kern_backend_t *be, float *y, const float *x,
                              const void *w, lkv_dtype_t dtype, int n, int dim,
                              float eps);
lkv_status_t lkv_cuda_add(lkv_kern_backend_t *be, float *y, const float *a,
                          const float *b, size_t n_elems);
lkv_status_t lkv_cuda_rope(lkv_kern_backend_t *be, float *x, const int32_t *pos,
                           int n, int n_heads, int head_dim, int rot_dim,
                           lkv_rope_style_t style, const float *inv_freq);
lkv_status_t lkv_cuda_swiglu(lkv_kern_backend_t *be, float *out,
                             const float *gate, const float *up,
                             size_t n_elems);
lkv_status_t lkv_cuda_gather_rows(lkv_kern_backend_t *be, float *dst,
                                  const float *src, const int32_t *idx, int n,
                                  int width);

/* cuda_gemm.cu */
lkv_status_t lkv_cuda_matmul(lkv_kern_backend_t *be, float *y, const float *x,
                             const void *w, lkv_dtype_t dtype,
                             const float *bias, int n, int in, int out);

/* cuda_attention.cu */
lkv_status_t lkv_cuda_kv_write(lkv_kern_backend_t *be, void *kv_pool,
                               lkv_dtype_t kv_dtype, const int32_t *slots,
                               const float *k, const float *v, int n,
                               int n_kv_heads, int head_dim, int block_size);
lkv_status_t lkv_cuda_attention(lkv_kern_backend_t *be, float *out,
                                const float *q, const void *kv_pool,
                                lkv_dtype_t kv_dtype, const lkv_kern_attn_t *a);

/* cuda_sample.cu */
lkv_status_t lkv_cuda_sample(lkv_kern_backend_t *be, int32_t *tokens,
                             const float *logits, int n, int vocab,
                             const lkv_sample_params_t *params,
                             uint64_t *rng_state);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KERNELS_CUDA_IMPL_H */
