/* test_kv_mover.c - asynchronous layer copies: exact bytes, merging of
 * contiguous blocks, completion order, events, accounting, errors, the
 * allocator + mover flow with a full tier, a failing backend seam and a fake
 * remote tier. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "kernels/cpu/cpu_queue.h"
#include "kvstore/kv_alloc.h"
#include "kvstore/kv_mover.h"
#include "kvstore/kv_pool.h"

#define BB 4096 /* block bytes */

typedef struct {
    lkv_kern_backend_t *be;
    lkv_kv_pool_t      *pool;
    lkv_kv_mover_t     *m;
} rig_t;

static void rig_open(rig_t *r, double gbps, int n_dev, int n_host,
                     int max_inflight, const lkv_kv_remote_t *remote)
{
    lkv_kern_config_t cfg = lkv_kern_config_default();
    cfg.n_threads         = 1;
    cfg.link_gbps         = gbps;
    assert_int_equal(lkv_kern_backend_open("cpu", &cfg, &r->be), LKV_OK);
    lkv_kv_pool_config_t pc = {
        .block_bytes = BB, .n_device_blocks = n_dev, .n_host_blocks = n_host};
    assert_int_equal(lkv_kv_pool_create(r->be, &pc, remote, &r->pool), LKV_OK);
    lkv_kv_mover_config_t mc = lkv_kv_mover_config_default();
    mc.max_inflight          = max_inflight;
    assert_int_equal(lkv_kv_mover_create(r->pool, &mc, &r->m), LKV_OK);
}

static void rig_close(rig_t *r)
{
    lkv_kv_mover_destroy(&r->m);
    assert_null(r->m);
    lkv_kv_pool_destroy(&r->pool);
    lkv_kern_backend_close(&r->be);
}

static void fill_block(rig_t *r, lkv_kv_tier_t t, int b, uint32_t seed)
{
    uint32_t *p = lkv_kv_pool_block_addr(r->pool, t, b);
    for (size_t i = 0; i < BB / 4; i++) {
        p[i] = seed * 2654435761u + (uint32_t)i;
    }
}

static void assert_block_eq(rig_t *r, lkv_kv_tier_t ta, int a,
                            lkv_kv_tier_t tb, int b)
{
    assert_memory_equal(lkv_kv_pool_block_addr(r->pool, ta, a),
                        lkv_kv_pool_block_addr(r->pool, tb, b), BB);
}

static void copies_are_exact_and_merged(void **state)
{
    rig_t r;
    rig_open(&r, 0, 16, 16, 8, NULL);
    for (int b = 0; b < 16; b++) {
        fill_block(&r, LKV_KV_TIER_DEVICE, b, (uint32_t)b + 1);
        fill_block(&r, LKV_KV_TIER_HOST, b, 1000u + (uint32_t)b);
    }
    /* runs: (3,4,5 -> 0,1,2) merge; 9 -> 7 alone; 10 -> 9 alone (dst gap) */
    lkv_kv_block_t     src[] = {3, 4, 5, 9, 10};
    lkv_kv_block_t     dst[] = {0, 1, 2, 7, 9};
    lkv_kv_mover_req_t req   = {.tag      = 42,
                                .src_tier = LKV_KV_TIER_DEVICE,
                                .dst_tier = LKV_KV_TIER_HOST,
                                .n_blocks = 5,
                                .src      = src,
                                .dst      = dst};
    lkv_kv_xfer_t     *x     = NULL;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_OK);
    assert_non_null(lkv_kv_mover_event(x));
    assert_int_equal(lkv_kv_mover_tag(x), 42);
    assert_int_equal(lkv_kv_mover_wait(r.m, x), LKV_OK);
    for (int i = 0; i < 5; i++) {
        assert_block_eq(&r, LKV_KV_TIER_DEVICE, src[i], LKV_KV_TIER_HOST,
                        dst[i]);
    }
    /* untouched host blocks keep their content */
    uint32_t *h8 = lkv_kv_pool_block_addr(r.pool, LKV_KV_TIER_HOST, 8);
    assert_int_equal(h8[0], 1008u * 2654435761u);
    /* and back to other device blocks */
    lkv_kv_block_t dst2[] = {11, 12, 13, 14, 15};
    req.tag               = 43;
    req.src_tier          = LKV_KV_TIER_HOST;
    req.dst_tier          = LKV_KV_TIER_DEVICE;
    req.src               = dst;
    req.dst               = dst2;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_OK);
    assert_int_equal(lkv_kv_mover_wait(r.m, x), LKV_OK);
    for (int i = 0; i < 5; i++) {
        assert_block_eq(&r, LKV_KV_TIER_DEVICE, src[i], LKV_KV_TIER_DEVICE,
                        dst2[i]);
    }
    lkv_kv_mover_stats_t st;
    lkv_kv_mover_stats(r.m, &st);
    assert_int_equal(st.n_xfers[0][1], 1);
    assert_int_equal(st.n_copies[0][1], 3); /* merged */
    assert_int_equal(st.bytes[0][1], 5 * BB);
    assert_int_equal(st.n_xfers[1][0], 1);
    assert_int_equal(st.n_copies[1][0], 3); /* 0,1,2 contiguous; 7; 9 */
    assert_int_equal(st.bytes[1][0], 5 * BB);
    assert_int_equal(st.n_failed, 0);
    lkv_kv_mover_done_t done[4];
    int                 n = -1;
    assert_int_equal(lkv_kv_mover_poll(r.m, done, 4, &n), LKV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(done[0].tag, 42);
    assert_int_equal(done[1].tag, 43);
    assert_int_equal(done[0].status, LKV_OK);
    assert_int_equal(done[1].src_tier, LKV_KV_TIER_HOST);
    assert_int_equal(done[1].n_blocks, 5);
    assert_int_equal(lkv_kv_mover_inflight(r.m), 0);
    rig_close(&r);
}

static void completion_order_poll_and_accounting(void **state)
{
    /* 0.05 GB/s link: 64 blocks x 4 KiB = 256 KiB ~ 5.2 ms per transfer,
     * 21 ms for all four: the last is surely still in flight when tested */
    rig_t r;
    rig_open(&r, 0.05, 256, 256, 8, NULL);
    lkv_kv_block_t src[64], dst[64];
    lkv_kv_xfer_t *x[4];
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 64; i++) {
            src[i] = (lkv_kv_block_t)(t * 64 + i);
            dst[i] = (lkv_kv_block_t)(255 - (t * 64 + i)); /* no merging */
            fill_block(&r, LKV_KV_TIER_DEVICE, src[i], (uint32_t)src[i]);
        }
        lkv_kv_mover_req_t req = {.tag      = 100 + (uint64_t)t,
                                  .src_tier = LKV_KV_TIER_DEVICE,
                                  .dst_tier = LKV_KV_TIER_HOST,
                                  .n_blocks = 64,
                                  .src      = src,
                                  .dst      = dst};
        assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x[t]), LKV_OK);
    }
    assert_int_equal(lkv_kv_mover_inflight(r.m), 4);
    /* the last cannot be done before the first three (FIFO queue) */
    assert_int_equal(lkv_kv_mover_test(r.m, x[3]), LKV_AGAIN);
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_kv_mover_wait(r.m, x[3]), LKV_OK);
    double secs = (double)(lkv_now_ns() - t0) / 1e9;
    for (int t = 0; t < 3; t++) {
        assert_int_equal(lkv_kv_mover_test(r.m, x[t]), LKV_OK);
    }
    lkv_kv_mover_done_t done[8];
    int                 n;
    assert_int_equal(lkv_kv_mover_poll(r.m, done, 2, &n), LKV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(done[0].tag, 100);
    assert_int_equal(done[1].tag, 101);
    assert_int_equal(lkv_kv_mover_poll(r.m, done, 8, &n), LKV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(done[0].tag, 102);
    assert_int_equal(done[1].tag, 103);
    for (int i = 0; i < 256; i++) {
        assert_block_eq(&r, LKV_KV_TIER_DEVICE, i, LKV_KV_TIER_HOST, 255 - i);
    }
    lkv_kv_mover_stats_t st;
    lkv_kv_mover_stats(r.m, &st);
    assert_int_equal(st.bytes[0][1], 256 * BB);
    assert_int_equal(st.n_copies[0][1], 256);
    /* 1 MiB at 0.05 GB/s is >= 21 ms of link time */
    double busy = (double)st.busy_ns[0][1] / 1e9;
    print_message("1 MiB D2H at 0.05 GB/s (emulated): busy %.2f ms, waited "
                  "%.2f ms\n",
                  busy * 1e3, secs * 1e3);
    assert_true(busy >= 20.0e-3);
    rig_close(&r);
}

static void after_event_orders_reload_behind_offload(void **state)
{
    rig_t r;
    rig_open(&r, 0.5, 64, 64, 8, NULL);
    lkv_kv_block_t a[32], h[32], d[32];
    for (int i = 0; i < 32; i++) {
        a[i] = (lkv_kv_block_t)i;
        h[i] = (lkv_kv_block_t)(63 - i);
        d[i] = (lkv_kv_block_t)(32 + i);
        fill_block(&r, LKV_KV_TIER_DEVICE, a[i], 7u * (uint32_t)i + 1);
    }
    /* compute "wrote" layer l: an event on the (synchronous) compute queue */
    lkv_kern_event_t *computed;
    assert_int_equal(LKV_KERN_CALL(r.be, event_create, &computed), LKV_OK);
    assert_int_equal(LKV_KERN_CALL(r.be, event_record, computed,
                                   LKV_KERN_QUEUE_COMPUTE),
                     LKV_OK);
    lkv_kv_mover_req_t off = {.tag      = 1,
                              .src_tier = LKV_KV_TIER_DEVICE,
                              .dst_tier = LKV_KV_TIER_HOST,
                              .n_blocks = 32,
                              .src      = a,
                              .dst      = h,
                              .after    = computed};
    lkv_kv_xfer_t     *xo;
    assert_int_equal(lkv_kv_mover_submit(r.m, &off, &xo), LKV_OK);
    /* the reload runs on the other queue but must wait for the offload */
    lkv_kv_mover_req_t re = {.tag      = 2,
                             .src_tier = LKV_KV_TIER_HOST,
                             .dst_tier = LKV_KV_TIER_DEVICE,
                             .n_blocks = 32,
                             .src      = h,
                             .dst      = d,
                             .after    = lkv_kv_mover_event(xo)};
    lkv_kv_xfer_t     *xr;
    assert_int_equal(lkv_kv_mover_submit(r.m, &re, &xr), LKV_OK);
    /* the compute queue waits for the reload before "using" the layer */
    assert_int_equal(LKV_KERN_CALL(r.be, queue_wait, LKV_KERN_QUEUE_COMPUTE,
                                   lkv_kv_mover_event(xr)),
                     LKV_OK);
    assert_int_equal(lkv_kv_mover_test(r.m, xr), LKV_OK);
    assert_int_equal(lkv_kv_mover_test(r.m, xo), LKV_OK);
    for (int i = 0; i < 32; i++) {
        assert_block_eq(&r, LKV_KV_TIER_DEVICE, a[i], LKV_KV_TIER_DEVICE,
                        d[i]);
    }
    LKV_KERN_CALL(r.be, event_destroy, computed);
    rig_close(&r); /* destroy reaps the unpolled transfers */
}

static void bad_requests_and_busy(void **state)
{
    rig_t r;
    rig_open(&r, 0.05, 8, 8, 2, NULL);
    lkv_kv_block_t     s[2] = {0, 1}, d[2] = {2, 3}, bad[2] = {0, 8};
    lkv_kv_mover_req_t req  = {.tag      = 9,
                               .src_tier = LKV_KV_TIER_DEVICE,
                               .dst_tier = LKV_KV_TIER_DEVICE,
                               .n_blocks = 2,
                               .src      = s,
                               .dst      = d};
    lkv_kv_xfer_t     *x    = NULL;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_INVALID);
    req.dst_tier = LKV_KV_TIER_HOST;
    req.n_blocks = 0;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_INVALID);
    req.n_blocks = 2;
    req.dst      = bad;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_INVALID);
    req.dst      = NULL;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_INVALID);
    req.dst      = d;
    req.src_tier = (lkv_kv_tier_t)7;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_INVALID);
    req.src_tier = LKV_KV_TIER_DEVICE;
    req.dst_tier = LKV_KV_TIER_REMOTE;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_ERR_UNSUPPORTED);
    assert_null(x);
    lkv_kv_mover_stats_t st;
    lkv_kv_mover_stats(r.m, &st);
    assert_int_equal(st.n_xfers[0][1], 0);
    assert_int_equal(lkv_kv_mover_inflight(r.m), 0);
    /* two slots: the third submit is BUSY until one is polled (slow link:
     * 8 KiB at 0.05 GB/s = 164 us each) */
    req.dst_tier = LKV_KV_TIER_HOST;
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, NULL), LKV_OK);
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, &x), LKV_OK);
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, NULL), LKV_ERR_BUSY);
    assert_int_equal(lkv_kv_mover_wait(r.m, x), LKV_OK);
    lkv_kv_mover_done_t done[2];
    int                 n;
    assert_int_equal(lkv_kv_mover_poll(r.m, done, 2, &n), LKV_OK);
    assert_int_equal(n, 2);
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, NULL), LKV_OK);
    assert_int_equal(lkv_kv_mover_poll(r.m, NULL, 0, &n), LKV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(lkv_kv_mover_poll(r.m, NULL, 1, &n), LKV_ERR_INVALID);
    rig_close(&r); /* one transfer still in flight: destroy waits */
}

/* issue 3 item 4: a full tier is NOSPACE and nothing leaks; then the whole
 * offload flow allocator -> mover -> allocator */
static void full_tier_nospace_then_offload_flow(void **state)
{
    rig_t r;
    rig_open(&r, 0, 8, 4, 4, NULL);
    lkv_kv_alloc_config_t ac = lkv_kv_alloc_config_default();
    ac.n_layers              = 2;
    ac.block_size            = 4;
    ac.n_blocks[0]           = 8;
    ac.n_blocks[1]           = 4;
    ac.n_blocks[2]           = 0;
    ac.max_seqs              = 2;
    ac.max_blocks_per_layer  = 8;
    lkv_kv_alloc_t *a        = NULL;
    assert_int_equal(lkv_kv_alloc_create(&ac, &a), LKV_OK);
    lkv_kv_block_t nb[8];
    int            n;
    assert_int_equal(lkv_kv_seq_add(a, 1), LKV_OK);
    assert_int_equal(lkv_kv_append(a, 1, 0, 20, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK); /* 5 blocks */
    assert_int_equal(lkv_kv_append(a, 1, 1, 12, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_OK); /* 3 blocks */
    assert_int_equal(lkv_kv_append(a, 1, 1, 1, LKV_KV_TIER_DEVICE, nb, 8, &n),
                     LKV_ERR_NOSPACE); /* device full */
    lkv_kv_copy_t c;
    /* layer 0 (5 blocks) does not fit the 4-block host tier */
    assert_int_equal(lkv_kv_move_begin(a, 1, 0, LKV_KV_TIER_HOST, &c),
                     LKV_ERR_NOSPACE);
    assert_int_equal(lkv_kv_mover_inflight(r.m), 0);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_HOST), 4);
    /* layer 1 (3 blocks) does */
    const lkv_kv_block_t *tab;
    lkv_kv_tier_t         tier;
    assert_int_equal(lkv_kv_layer_blocks(a, 1, 1, &tier, &tab, &n), LKV_OK);
    for (int i = 0; i < n; i++) {
        fill_block(&r, LKV_KV_TIER_DEVICE, tab[i], 50u + (uint32_t)i);
    }
    assert_int_equal(lkv_kv_move_begin(a, 1, 1, LKV_KV_TIER_HOST, &c), LKV_OK);
    lkv_kv_mover_req_t req = {.tag      = 77,
                              .src_tier = c.src_tier,
                              .dst_tier = c.dst_tier,
                              .n_blocks = c.n_blocks,
                              .src      = c.src,
                              .dst      = c.dst};
    assert_int_equal(lkv_kv_mover_submit(r.m, &req, NULL), LKV_OK);
    lkv_kv_mover_done_t done[1];
    do {
        assert_int_equal(lkv_kv_mover_poll(r.m, done, 1, &n), LKV_OK);
    } while (n == 0);
    assert_int_equal(done[0].tag, 77);
    assert_int_equal(done[0].status, LKV_OK);
    for (int i = 0; i < c.n_blocks; i++) {
        uint32_t *h = lkv_kv_pool_block_addr(r.pool, LKV_KV_TIER_HOST, c.dst[i]);
        assert_int_equal(h[1], (50u + (uint32_t)i) * 2654435761u + 1u);
    }
    assert_int_equal(lkv_kv_move_end(a, 1, 1), LKV_OK);
    assert_int_equal(lkv_kv_layer_residency(a, 1, 1), LKV_KV_RES_HOST);
    assert_int_equal(lkv_kv_free_blocks(a, LKV_KV_TIER_DEVICE), 3);
    assert_int_equal(lkv_kv_alloc_check(a), LKV_OK);
    lkv_kv_alloc_destroy(&a);
    rig_close(&r);
}

/* failing backend seam: copy_async fails on the Nth call */
static int copies_until_fail;

static lkv_status_t failing_copy(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_kern_copy_kind_t kind, void *dst,
                                 const void *src, size_t bytes)
{
    if (copies_until_fail-- == 0) {
        return LKV_ERR_DEVICE;
    }
    return lkv_cpu_copy_async(be, q, kind, dst, src, bytes);
}

static lkv_status_t plain_alloc(lkv_kern_backend_t *be, size_t n, void **p)
{
    *p = calloc(1, n);
    return *p != NULL ? LKV_OK : LKV_ERR_NOMEM;
}
static void plain_free(lkv_kern_backend_t *be, void *p)
{
    free(p);
}

static const lkv_kern_ops_t failing_ops = {
    .name          = "failing",
    .mem_alloc     = plain_alloc,
    .mem_free      = plain_free,
    .host_alloc    = plain_alloc,
    .host_free     = plain_free,
    .copy_async    = failing_copy,
    .event_create  = lkv_cpu_event_create,
    .event_destroy = lkv_cpu_event_destroy,
    .event_record  = lkv_cpu_event_record,
    .queue_wait    = lkv_cpu_queue_wait,
    .event_sync    = lkv_cpu_event_sync,
    .event_query   = lkv_cpu_event_query,
    .sync          = lkv_cpu_sync,
};

static void failed_copy_leaves_nothing_in_flight(void **state)
{
    lkv_kern_backend_t be = {.ops = &failing_ops};
    assert_int_equal(lkv_cpu_queues_open(&be, &be.cfg), LKV_OK);
    lkv_kv_pool_config_t pc = {
        .block_bytes = BB, .n_device_blocks = 8, .n_host_blocks = 8};
    lkv_kv_pool_t *pool = NULL;
    assert_int_equal(lkv_kv_pool_create(&be, &pc, NULL, &pool), LKV_OK);
    lkv_kv_mover_config_t mc = lkv_kv_mover_config_default();
    mc.max_inflight          = 4;
    lkv_kv_mover_t *m        = NULL;
    assert_int_equal(lkv_kv_mover_create(pool, &mc, &m), LKV_OK);
    lkv_kv_block_t     s[3] = {0, 2, 4}, d[3] = {1, 3, 5};
    lkv_kv_mover_req_t req  = {.tag      = 5,
                               .src_tier = LKV_KV_TIER_DEVICE,
                               .dst_tier = LKV_KV_TIER_HOST,
                               .n_blocks = 3,
                               .src      = s,
                               .dst      = d};
    copies_until_fail       = 1; /* the second copy fails */
    assert_int_equal(lkv_kv_mover_submit(m, &req, NULL), LKV_ERR_DEVICE);
    assert_int_equal(lkv_kv_mover_inflight(m), 0);
    lkv_kv_mover_stats_t st;
    lkv_kv_mover_stats(m, &st);
    assert_int_equal(st.n_xfers[0][1], 0);
    copies_until_fail = 100;
    assert_int_equal(lkv_kv_mover_submit(m, &req, NULL), LKV_OK);
    lkv_kv_mover_destroy(&m);
    lkv_kv_pool_destroy(&pool);
    lkv_cpu_queues_close(&be);
}

/* fake remote tier: an in-memory array; requests complete on the 2nd test */
typedef struct lkv_kv_remote_req {
    int tests;
} fake_req_t;

static uint8_t remote_mem[8 * BB];
static int     n_reqs_live;

static lkv_status_t fake_xfer(bool put, const lkv_kv_block_t *rb,
                              void *const *local, int n, size_t bb,
                              lkv_kv_remote_req_t **req_p)
{
    for (int i = 0; i < n; i++) {
        if (rb[i] < 0 || rb[i] >= 8) {
            return LKV_ERR_INVALID;
        }
        if (put) {
            memcpy(remote_mem + (size_t)rb[i] * bb, local[i], bb);
        } else {
            memcpy(local[i], remote_mem + (size_t)rb[i] * bb, bb);
        }
    }
    fake_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return LKV_ERR_NOMEM;
    }
    n_reqs_live++;
    *req_p = r;
    return LKV_OK;
}
static lkv_status_t fake_put(void *ctx, const lkv_kv_block_t *rb,
                             void *const *local, int n, size_t bb, int dev,
                             lkv_kv_remote_req_t **req_p)
{
    return fake_xfer(true, rb, local, n, bb, req_p);
}
static lkv_status_t fake_get(void *ctx, const lkv_kv_block_t *rb,
                             void *const *local, int n, size_t bb, int dev,
                             lkv_kv_remote_req_t **req_p)
{
    return fake_xfer(false, rb, local, n, bb, req_p);
}
static lkv_status_t fake_test(void *ctx, lkv_kv_remote_req_t *req)
{
    return ++req->tests >= 2 ? LKV_OK : LKV_AGAIN;
}
static void fake_req_free(void *ctx, lkv_kv_remote_req_t *req)
{
    n_reqs_live--;
    free(req);
}
static const lkv_kv_remote_ops_t fake_remote_ops = {
    .name     = "fake",
    .put      = fake_put,
    .get      = fake_get,
    .test     = fake_test,
    .req_free = fake_req_free,
};

static void remote_tier_goes_through_remote_ops(void **state)
{
    lkv_kv_remote_t remote = {.ops = &fake_remote_ops, .n_blocks = 8};
    rig_t           r;
    rig_open(&r, 0, 8, 8, 4, &remote);
    fill_block(&r, LKV_KV_TIER_HOST, 2, 9);
    fill_block(&r, LKV_KV_TIER_HOST, 3, 10);
    lkv_kv_block_t     hs[2] = {2, 3}, rs[2] = {6, 1}, hd[2] = {4, 5};
    lkv_kv_mover_req_t put   = {.tag      = 1,
                                .src_tier = LKV_KV_TIER_HOST,
                                .dst_tier = LKV_KV_TIER_REMOTE,
                                .n_blocks = 2,
                                .src      = hs,
                                .dst      = rs};
    lkv_kv_xfer_t     *x;
    assert_int_equal(lkv_kv_mover_submit(r.m, &put, &x), LKV_OK);
    assert_null(lkv_kv_mover_event(x));
    assert_int_equal(lkv_kv_mover_test(r.m, x), LKV_AGAIN);
    assert_int_equal(lkv_kv_mover_wait(r.m, x), LKV_OK);
    lkv_kv_mover_req_t get = {.tag      = 2,
                              .src_tier = LKV_KV_TIER_REMOTE,
                              .dst_tier = LKV_KV_TIER_HOST,
                              .n_blocks = 2,
                              .src      = rs,
                              .dst      = hd};
    assert_int_equal(lkv_kv_mover_submit(r.m, &get, NULL), LKV_OK);
    lkv_kv_mover_done_t done[2];
    int                 n = 0, total = 0;
    while (total < 2) {
        assert_int_equal(lkv_kv_mover_poll(r.m, done, 2, &n), LKV_OK);
        total += n;
    }
    assert_int_equal(n_reqs_live, 0);
    assert_block_eq(&r, LKV_KV_TIER_HOST, 2, LKV_KV_TIER_HOST, 4);
    assert_block_eq(&r, LKV_KV_TIER_HOST, 3, LKV_KV_TIER_HOST, 5);
    lkv_kv_mover_stats_t st;
    lkv_kv_mover_stats(r.m, &st);
    assert_int_equal(st.bytes[1][2], 2 * BB);
    assert_int_equal(st.bytes[2][1], 2 * BB);
    /* a remote block index outside the remote tier */
    rs[0] = 8;
    assert_int_equal(lkv_kv_mover_submit(r.m, &put, NULL), LKV_ERR_INVALID);
    rig_close(&r);
    assert_int_equal(n_reqs_live, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(copies_are_exact_and_merged),
        cmocka_unit_test(completion_order_poll_and_accounting),
        cmocka_unit_test(after_event_orders_reload_behind_offload),
        cmocka_unit_test(bad_requests_and_busy),
        cmocka_unit_test(full_tier_nospace_then_offload_flow),
        cmocka_unit_test(failed_copy_leaves_nothing_in_flight),
        cmocka_unit_test(remote_tier_goes_through_remote_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
