/* cuda_ops.c - the CUDA backend's ops table (see kernels.h). The functions
 * live in the .cu files of this folder; this file only names them, in C, so
 * the table can use designated initialisers. */
#include "kernels/cuda/cuda_impl.h"

const lkv_kern_ops_t lkv_kern_cuda_ops = {
    .name          = "cuda",
    .open          = lkv_cuda_open,
    .close         = lkv_cuda_close,
    .mem_alloc     = lkv_cuda_mem_alloc,
    .mem_free      = lkv_cuda_mem_free,
    .host_alloc    = lkv_cuda_host_alloc,
    .host_free     = lkv_cuda_host_free,
    .mem_upload    = lkv_cuda_mem_upload,
    .mem_download  = lkv_cuda_mem_download,
    .copy_async    = lkv_cuda_copy_async,
    .event_create  = lkv_cuda_event_create,
    .event_destroy = lkv_cuda_event_destroy,
    .event_record  = lkv_cuda_event_record,
    .queue_wait    = lkv_cuda_queue_wait,
    .event_sync    = lkv_cuda_event_sync,
    .event_query   = lkv_cuda_event_query,
    .sync          = lkv_cuda_sync,
    .embedding     = lkv_cuda_embedding,
    .rmsnorm       = lkv_cuda_rmsnorm,
    .add           = lkv_cuda_add,
    .matmul        = lkv_cuda_matmul,
    .rope          = lkv_cuda_rope,
    .kv_write      = lkv_cuda_kv_write,
    .attention     = lkv_cuda_attention,
    .swiglu        = lkv_cuda_swiglu,
    .gather_rows   = lkv_cuda_gather_rows,
    .sample        = lkv_cuda_sample,
};
