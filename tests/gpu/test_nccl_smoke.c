/* test_nccl_smoke.c - one-GPU NCCL smoke test: a one-rank communicator on
 * the CUDA backend's compute stream, all-reduce (in place and out of place)
 * and a send/recv to itself inside a group. Exit 0 pass, 1 fail, 77 no GPU.
 * Single-threaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_nccl.h"
#include "tests/gpu/gpu_util.h"

int main(void)
{
    lkv_kern_backend_t *be = gpu_open_cuda_or_skip("test_nccl_smoke");
    lkv_nccl_comm_t    *c  = NULL;
    uint8_t             id[LKV_NCCL_ID_BYTES];
    enum { N = 1 << 20 };
    float              *h = gpu_rand_f32(N, 1.0f), *r = malloc(N * 4);
    void               *a, *b;
    int                 ok = 1;

    GPU_OK(lkv_nccl_unique_id(id));
    GPU_OK(lkv_nccl_comm_create(be, id, 1, 0, &c));
    ok &= lkv_nccl_rank(c) == 0 && lkv_nccl_size(c) == 1;
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, N * 4, &a));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, N * 4, &b));
    GPU_OK(LKV_KERN_CALL(be, mem_upload, a, h, N * 4));

    GPU_OK(lkv_nccl_allreduce_sum_f32(c, a, a, N)); /* in place */
    GPU_OK(lkv_nccl_allreduce_sum_f32(c, a, b, N));
    GPU_OK(LKV_KERN_CALL(be, mem_download, r, b, N * 4));
    ok &= memcmp(h, r, N * 4) == 0;
    printf("%-4s nccl all-reduce, 1 rank, %d floats\n", ok ? "ok" : "FAIL", N);

    memset(r, 0, N * 4);
    GPU_OK(LKV_KERN_CALL(be, mem_upload, b, r, N * 4));
    GPU_OK(lkv_nccl_group_start());
    GPU_OK(lkv_nccl_send_f32(c, a, N, 0));
    GPU_OK(lkv_nccl_recv_f32(c, b, N, 0));
    GPU_OK(lkv_nccl_group_end());
    GPU_OK(LKV_KERN_CALL(be, mem_download, r, b, N * 4));
    {
        int sr = memcmp(h, r, N * 4) == 0;
        printf("%-4s nccl send/recv to self\n", sr ? "ok" : "FAIL");
        ok &= sr;
    }
    ok &= lkv_nccl_send_f32(c, a, N, 3) == LKV_ERR_INVALID;
    lkv_nccl_comm_destroy(&c);
    ok &= c == NULL;
    be->ops->mem_free(be, a);
    be->ops->mem_free(be, b);
    lkv_kern_backend_close(&be);
    free(h);
    free(r);
    printf("nccl smoke: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
