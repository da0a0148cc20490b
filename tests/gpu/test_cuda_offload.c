/* test_cuda_offload.c - layer offload/reload exactness on the GPU: KV written
 * by kv_write into shuffled device blocks is offloaded to the pinned host
 * tier by the kvstore mover on the D2H queue (ordered after the compute
 * queue only through an event, no host sync), the device blocks are
 * scribbled over, the layer is reloaded on the H2D queue into different
 * device blocks, and attention over the new block table must give
 * bit-identical output; the blocks must match byte for byte. Repeated for
 * f32, f16 and bf16 KV. Exit 0 pass, 1 fail, 77 no GPU. Single-threaded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_ext.h"
#include "kvstore/kv_mover.h"
#include "kvstore/kv_pool.h"
#include "tests/gpu/gpu_util.h"

static int run_one(lkv_kern_backend_t *be, lkv_dtype_t kd)
{
    enum { NH = 8, NKV = 4, HD = 64, BS = 16, CTX = 200, NDEV = 64, NHOST = 48 };
    const int            nblk = (CTX + BS - 1) / BS;
    size_t               row  = (size_t)NKV * HD;
    size_t               block_bytes = 2 * (size_t)BS * row * lkv_dtype_size(kd);
    lkv_kv_pool_config_t pc;
    lkv_kv_pool_t       *pool = NULL;
    lkv_kv_mover_t      *mv   = NULL;
    lkv_kv_mover_config_t mc  = lkv_kv_mover_config_default();
    lkv_kv_block_t       dev0[16], host[16], dev1[16];
    int32_t              slots[CTX], meta[3 + 16];
    lkv_kern_event_t    *written = NULL;
    lkv_kv_xfer_t       *x;
    lkv_kern_attn_t      a;
    float               *k = gpu_rand_f32((size_t)CTX * row, 1.0f);
    float               *v = gpu_rand_f32((size_t)CTX * row, 1.0f);
    float               *q = gpu_rand_f32((size_t)NH * HD, 1.0f);
    float                out0[NH * HD], out1[NH * HD];
    uint8_t             *b0 = malloc(block_bytes * nblk);
    uint8_t             *b1 = malloc(block_bytes * nblk);
    void                *dk, *dv, *dq, *dout, *dslots, *dmeta;
    int                  ok = 1;

    pc.block_bytes     = block_bytes;
    pc.n_device_blocks = NDEV;
    pc.n_host_blocks   = NHOST;
    GPU_OK(lkv_kv_pool_create(be, &pc, NULL, &pool));
    GPU_OK(lkv_kv_mover_create(pool, &mc, &mv));
    for (int i = 0; i < nblk; i++) {
        dev0[i] = (lkv_kv_block_t)(NDEV - 1 - 3 * i);   /* descending, gaps */
        host[i] = (lkv_kv_block_t)((i * 7) % NHOST);    /* scattered */
        dev1[i] = (lkv_kv_block_t)(i < 6 ? 2 + i : 30 + 2 * i); /* runs */
    }
    for (int t = 0; t < CTX; t++) {
        slots[t] = dev0[t / BS] * BS + t % BS;
    }
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, (size_t)CTX * row * 4, &dk));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, (size_t)CTX * row * 4, &dv));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, sizeof(float) * NH * HD, &dq));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, sizeof(float) * NH * HD, &dout));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, sizeof(slots), &dslots));
    GPU_OK(LKV_KERN_CALL(be, mem_alloc, sizeof(meta), &dmeta));
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dk, k, (size_t)CTX * row * 4));
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dv, v, (size_t)CTX * row * 4));
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dq, q, sizeof(float) * NH * HD));
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dslots, slots, sizeof(slots)));

    /* metadata: q_start {0,1}, ctx_len {CTX}, table */
    memset(&a, 0, sizeof(a));
    a.n_seqs      = 1;
    a.q_start     = (int32_t *)dmeta;
    a.ctx_len     = (int32_t *)dmeta + 2;
    a.block_table = (int32_t *)dmeta + 3;
    a.bt_stride   = 16;
    a.n_heads     = NH;
    a.n_kv_heads  = NKV;
    a.head_dim    = HD;
    a.block_size  = BS;
    a.scale       = 1.0f / sqrtf((float)HD);
    meta[0]       = 0;
    meta[1]       = 1;
    meta[2]       = CTX;
    for (int i = 0; i < 16; i++) {
        meta[3 + i] = i < nblk ? dev0[i] : 0;
    }
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dmeta, meta, sizeof(meta)));

    void *dbase = lkv_kv_pool_base(pool, LKV_KV_TIER_DEVICE);
    GPU_OK(LKV_KERN_CALL(be, kv_write, dbase, kd, (int32_t *)dslots, dk, dv,
                         CTX, NKV, HD, BS));
    GPU_OK(LKV_KERN_CALL(be, attention, dout, dq, dbase, kd, &a));
    GPU_OK(LKV_KERN_CALL(be, mem_download, out0, dout, sizeof(out0)));
    for (int i = 0; i < nblk; i++) {
        GPU_OK(LKV_KERN_CALL(be, mem_download, b0 + block_bytes * i,
                             lkv_kv_pool_block_addr(pool, LKV_KV_TIER_DEVICE,
                                                    dev0[i]),
                             block_bytes));
    }

    /* rewrite the same KV (so the offload must wait for the compute queue),
     * then offload after an event, without a host sync in between */
    GPU_OK(LKV_KERN_CALL(be, event_create, &written));
    GPU_OK(LKV_KERN_CALL(be, kv_write, dbase, kd, (int32_t *)dslots, dk, dv,
                         CTX, NKV, HD, BS));
    GPU_OK(LKV_KERN_CALL(be, event_record, written, LKV_KERN_QUEUE_COMPUTE));
    {
        lkv_kv_mover_req_t r;
        memset(&r, 0, sizeof(r));
        r.tag      = 1;
        r.src_tier = LKV_KV_TIER_DEVICE;
        r.dst_tier = LKV_KV_TIER_HOST;
        r.n_blocks = nblk;
        r.src      = dev0;
        r.dst      = host;
        r.after    = written;
        GPU_OK(lkv_kv_mover_submit(mv, &r, &x));
        GPU_OK(lkv_kv_mover_wait(mv, x));
    }
    /* scribble over the whole device pool */
    GPU_OK(lkv_cuda_fill_random(be, dbase, LKV_DTYPE_F32,
                                NDEV * block_bytes / 4, 99, 1000.0f));
    GPU_OK(LKV_KERN_CALL(be, event_record, written, LKV_KERN_QUEUE_COMPUTE));
    {
        lkv_kv_mover_req_t r;
        memset(&r, 0, sizeof(r));
        r.tag      = 2;
        r.src_tier = LKV_KV_TIER_HOST;
        r.dst_tier = LKV_KV_TIER_DEVICE;
        r.n_blocks = nblk;
        r.src      = host;
        r.dst      = dev1;
        r.after    = written; /* the reload must land after the scribble */
        GPU_OK(lkv_kv_mover_submit(mv, &r, &x));
        /* compute waits for the reload on the device, not the host */
        GPU_OK(LKV_KERN_CALL(be, queue_wait, LKV_KERN_QUEUE_COMPUTE,
                             lkv_kv_mover_event(x)));
    }
    for (int i = 0; i < 16; i++) {
        meta[3 + i] = i < nblk ? dev1[i] : 0;
    }
    GPU_OK(LKV_KERN_CALL(be, mem_upload, dmeta, meta, sizeof(meta)));
    GPU_OK(LKV_KERN_CALL(be, attention, dout, dq, dbase, kd, &a));
    GPU_OK(LKV_KERN_CALL(be, mem_download, out1, dout, sizeof(out1)));
    for (int i = 0; i < nblk; i++) {
        GPU_OK(LKV_KERN_CALL(be, mem_download, b1 + block_bytes * i,
                             lkv_kv_pool_block_addr(pool, LKV_KV_TIER_DEVICE,
                                                    dev1[i]),
                             block_bytes));
    }
    ok &= memcmp(b0, b1, block_bytes * nblk) == 0;
    ok &= memcmp(out0, out1, sizeof(out0)) == 0;
    {
        lkv_kv_mover_done_t done[4];
        int                 n = 0;
        GPU_OK(lkv_kv_mover_poll(mv, done, 4, &n));
        for (int i = 0; i < n; i++) {
            ok &= done[i].status == LKV_OK;
        }
    }
    printf("%-4s offload/reload %s: %d blocks of %zu bytes, attention "
           "bit-identical\n",
           ok ? "ok" : "FAIL", lkv_dtype_name(kd), nblk, block_bytes);

    LKV_KERN_CALL(be, sync, LKV_KERN_QUEUE_COMPUTE);
    be->ops->event_destroy(be, written);
    lkv_kv_mover_destroy(&mv);
    lkv_kv_pool_destroy(&pool);
    be->ops->mem_free(be, dk);
    be->ops->mem_free(be, dv);
    be->ops->mem_free(be, dq);
    be->ops->mem_free(be, dout);
    be->ops->mem_free(be, dslots);
    be->ops->mem_free(be, dmeta);
    free(k);
    free(v);
    free(q);
    free(b0);
    free(b1);
    return ok;
}

int main(void)
{
    lkv_kern_backend_t *be = gpu_open_cuda_or_skip("test_cuda_offload");
    int                 ok = 1;

    ok &= run_one(be, LKV_DTYPE_F32);
    ok &= run_one(be, LKV_DTYPE_F16);
    ok &= run_one(be, LKV_DTYPE_BF16);
    lkv_kern_backend_close(&be);
    printf("offload: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
