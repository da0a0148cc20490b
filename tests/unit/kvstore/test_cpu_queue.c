/* test_cpu_queue.c - CPU backend copy queues: FIFO order, events, cross-queue
 * waits, the synchronous compute queue, link-emulation accuracy, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "kernels/cpu/cpu_queue.h"

static lkv_kern_backend_t *open_be(double gbps, double lat_us)
{
    lkv_kern_backend_t *be = calloc(1, sizeof(*be));
    assert_non_null(be);
    be->cfg.link_gbps       = gbps;
    be->cfg.link_latency_us = lat_us;
    assert_int_equal(lkv_cpu_queues_open(be, &be->cfg), LKV_OK);
    assert_non_null(be->queues);
    return be;
}

static void close_be(lkv_kern_backend_t *be)
{
    lkv_cpu_queues_close(be);
    assert_null(be->queues);
    lkv_cpu_queues_close(be); /* idempotent */
    free(be);
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(seed + i * 7);
    }
}

static void queue_copies_run_in_fifo_order(void **state)
{
    lkv_kern_backend_t *be = open_be(0, 0);
    enum { N = 64, SZ = 4096 };
    uint8_t *src = malloc((size_t)N * SZ);
    uint8_t *dst = calloc(1, SZ);
    assert_non_null(src);
    assert_non_null(dst);
    for (int i = 0; i < N; i++) {
        fill(src + (size_t)i * SZ, SZ, (uint8_t)i);
    }
    /* all copies target the same dst: the last one must win */
    for (int i = 0; i < N; i++) {
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                            LKV_KERN_COPY_D2H, dst,
                                            src + (size_t)i * SZ, SZ),
                         LKV_OK);
    }
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_memory_equal(dst, src + (size_t)(N - 1) * SZ, SZ);
    lkv_cpu_queue_stats_t st;
    assert_int_equal(lkv_cpu_queue_stats(be, LKV_KERN_QUEUE_D2H, &st), LKV_OK);
    assert_int_equal(st.n_copies, N);
    assert_int_equal(st.bytes, (uint64_t)N * SZ);
    assert_int_equal(lkv_cpu_queue_stats(be, LKV_KERN_QUEUE_H2D, &st), LKV_OK);
    assert_int_equal(st.n_copies, 0);
    free(src);
    free(dst);
    close_be(be);
}

static void events_complete_in_queue_order(void **state)
{
    /* 0.2 GB/s: each 1 MiB copy takes ~5 ms */
    lkv_kern_backend_t *be = open_be(0.2, 0);
    enum { N = 4 };
    size_t            sz  = 1 << 20;
    uint8_t          *src = malloc(sz);
    uint8_t          *dst = malloc(sz * N);
    lkv_kern_event_t *ev[N];
    lkv_kern_event_t *fresh;
    assert_non_null(src);
    assert_non_null(dst);
    fill(src, sz, 3);
    assert_int_equal(lkv_cpu_event_create(be, &fresh), LKV_OK);
    assert_int_equal(lkv_cpu_event_query(be, fresh), LKV_OK); /* never recorded */
    assert_int_equal(lkv_cpu_event_sync(be, fresh), LKV_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(lkv_cpu_event_create(be, &ev[i]), LKV_OK);
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_H2D,
                                            LKV_KERN_COPY_H2D, dst + i * sz,
                                            src, sz),
                         LKV_OK);
        assert_int_equal(lkv_cpu_event_record(be, ev[i], LKV_KERN_QUEUE_H2D),
                         LKV_OK);
    }
    assert_int_equal(lkv_cpu_event_query(be, ev[N - 1]), LKV_AGAIN);
    for (int i = 0; i < N; i++) {
        assert_int_equal(lkv_cpu_event_sync(be, ev[i]), LKV_OK);
        assert_int_equal(lkv_cpu_event_query(be, ev[i]), LKV_OK);
        /* every earlier event is complete once a later one is */
        for (int j = 0; j < i; j++) {
            assert_int_equal(lkv_cpu_event_query(be, ev[j]), LKV_OK);
        }
        assert_memory_equal(dst + i * sz, src, sz);
    }
    /* re-recording on an idle queue completes at once */
    assert_int_equal(lkv_cpu_event_record(be, ev[0], LKV_KERN_QUEUE_H2D),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_query(be, ev[0]), LKV_OK);
    /* recording on the compute queue completes at once */
    assert_int_equal(lkv_cpu_event_record(be, ev[1], LKV_KERN_QUEUE_COMPUTE),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_query(be, ev[1]), LKV_OK);
    for (int i = 0; i < N; i++) {
        lkv_cpu_event_destroy(be, ev[i]);
    }
    lkv_cpu_event_destroy(be, fresh);
    free(src);
    free(dst);
    close_be(be);
}

static void queue_wait_orders_across_queues(void **state)
{
    /* D2H: a -> mid (slow); H2D waits for it, then mid -> out. Without the
     * wait the H2D copy would read a stale mid. */
    lkv_kern_backend_t *be = open_be(0.5, 0);
    size_t              sz = 4 << 20; /* ~8 ms at 0.5 GB/s */
    uint8_t            *a   = malloc(sz);
    uint8_t            *mid = calloc(1, sz);
    uint8_t            *out = calloc(1, sz);
    lkv_kern_event_t   *e, *done;
    assert_non_null(a);
    assert_non_null(mid);
    assert_non_null(out);
    fill(a, sz, 11);
    assert_int_equal(lkv_cpu_event_create(be, &e), LKV_OK);
    assert_int_equal(lkv_cpu_event_create(be, &done), LKV_OK);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, mid, a, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, e, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_int_equal(lkv_cpu_queue_wait(be, LKV_KERN_QUEUE_H2D, e), LKV_OK);
    /* destroying the event after the wait was queued is allowed */
    lkv_cpu_event_destroy(be, e);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_H2D,
                                        LKV_KERN_COPY_H2D, out, mid, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, done, LKV_KERN_QUEUE_H2D),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_sync(be, done), LKV_OK);
    assert_memory_equal(out, a, sz);
    lkv_cpu_event_destroy(be, done);
    free(a);
    free(mid);
    free(out);
    close_be(be);
}

static void compute_queue_is_synchronous(void **state)
{
    lkv_kern_backend_t *be = open_be(0.5, 0);
    size_t              sz = 4 << 20;
    uint8_t            *a  = malloc(sz);
    uint8_t            *b  = calloc(1, sz);
    uint8_t            *c  = calloc(1, sz);
    lkv_kern_event_t   *e;
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    fill(a, sz, 5);
    /* copy on COMPUTE is done on return */
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_COMPUTE,
                                        LKV_KERN_COPY_D2D, c, a, 100),
                     LKV_OK);
    assert_memory_equal(c, a, 100);
    /* queue_wait(COMPUTE, e) blocks until the D2H copy completes */
    assert_int_equal(lkv_cpu_event_create(be, &e), LKV_OK);
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, b, a, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, e, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_int_equal(lkv_cpu_queue_wait(be, LKV_KERN_QUEUE_COMPUTE, e), LKV_OK);
    int64_t t1 = lkv_now_ns();
    assert_int_equal(lkv_cpu_event_query(be, e), LKV_OK);
    assert_memory_equal(b, a, sz);
    /* 4 MiB at 0.5 GB/s >= 8.3 ms */
    assert_true(t1 - t0 >= 8000000);
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_COMPUTE), LKV_OK);
    lkv_cpu_event_destroy(be, e);
    free(a);
    free(b);
    free(c);
    close_be(be);
}

static double timed_copy_gbps(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                              uint8_t *dst, const uint8_t *src, size_t sz)
{
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_cpu_copy_async(be, q, LKV_KERN_COPY_D2H, dst, src,
                                        sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_sync(be, q), LKV_OK);
    return (double)sz / (double)(lkv_now_ns() - t0);
}

static void link_cap_is_accurate_and_full_duplex(void **state)
{
    const double gbps = 1.0;
    size_t       sz   = 32 << 20; /* ~34 ms at 1 GB/s */
    uint8_t     *a    = malloc(sz);
    uint8_t     *b    = malloc(sz);
    uint8_t     *c    = malloc(sz);
    uint8_t     *d    = malloc(sz);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    fill(a, sz, 1);
    fill(c, sz, 2);
    memset(b, 0, sz); /* fault pages in before timing */
    memset(d, 0, sz);

    lkv_kern_backend_t *be = open_be(gbps, 0);
    double rate = timed_copy_gbps(be, LKV_KERN_QUEUE_D2H, b, a, sz);
    print_message("capped D2H: %.3f GB/s (cap %.3f)\n", rate, gbps);
    assert_true(rate <= gbps * 1.01);
    assert_true(rate >= gbps * 0.85); /* a shared CI box can lag a little */
    assert_memory_equal(a, b, sz);

    /* both directions at once: each keeps its own link */
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, b, c, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_H2D,
                                        LKV_KERN_COPY_H2D, d, a, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_H2D), LKV_OK);
    double dup_s    = (double)(lkv_now_ns() - t0) / 1e9;
    double single_s = (double)sz / (gbps * 1e9);
    print_message("duplex: %.1f ms for 2 x %zu MiB (one copy %.1f ms)\n",
                  dup_s * 1e3, sz >> 20, single_s * 1e3);
    assert_true(dup_s < 1.5 * single_s);
    assert_memory_equal(b, c, sz);
    assert_memory_equal(d, a, sz);
    close_be(be);

    /* latency is added per copy */
    be      = open_be(100.0, 5000.0); /* 5 ms per copy, fast link */
    t0      = lkv_now_ns();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                            LKV_KERN_COPY_D2H, b, a, 1024),
                         LKV_OK);
    }
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_true(lkv_now_ns() - t0 >= 15000000);
    close_be(be);
    free(a);
    free(b);
    free(c);
    free(d);
}

static void close_drains_pending_copies(void **state)
{
    lkv_kern_backend_t *be = open_be(0.5, 0);
    size_t              sz = 2 << 20;
    uint8_t            *a  = malloc(sz);
    uint8_t            *b  = calloc(1, sz);
    lkv_kern_event_t   *e;
    assert_non_null(a);
    assert_non_null(b);
    fill(a, sz, 9);
    assert_int_equal(lkv_cpu_event_create(be, &e), LKV_OK);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, b, a, sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, e, LKV_KERN_QUEUE_D2H), LKV_OK);
    /* destroying an event with a pending record is allowed */
    lkv_cpu_event_destroy(be, e);
    close_be(be);
    assert_memory_equal(a, b, sz);
    free(a);
    free(b);
}

static void bad_arguments_are_rejected(void **state)
{
    lkv_kern_backend_t  be0 = {0};
    lkv_kern_config_t   cfg = {0};
    lkv_kern_event_t   *e;
    uint8_t             x[8] = {0}, y[8] = {0};

    cfg.link_gbps = -1.0;
    assert_int_equal(lkv_cpu_queues_open(&be0, &cfg), LKV_ERR_INVALID);
    assert_null(be0.queues);
    cfg.link_gbps       = 1.0;
    cfg.link_latency_us = -3.0;
    assert_int_equal(lkv_cpu_queues_open(&be0, &cfg), LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_queues_open(NULL, &cfg), LKV_ERR_INVALID);
    /* not opened */
    assert_int_equal(lkv_cpu_copy_async(&be0, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, x, y, 8),
                     LKV_ERR_INTERNAL);

    lkv_kern_backend_t *be = open_be(0, 0);
    assert_int_equal(lkv_cpu_copy_async(be, (lkv_kern_queue_t)7,
                                        LKV_KERN_COPY_D2H, x, y, 8),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        (lkv_kern_copy_kind_t)9, x, y, 8),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, NULL, y, 8),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, NULL, NULL, 0),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_create(be, NULL), LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_event_record(be, NULL, LKV_KERN_QUEUE_D2H),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_event_create(be, &e), LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, e, (lkv_kern_queue_t)-1),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_queue_wait(be, (lkv_kern_queue_t)3, e),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_cpu_sync(be, (lkv_kern_queue_t)3), LKV_ERR_INVALID);
    lkv_cpu_queue_stats_t st;
    assert_int_equal(lkv_cpu_queue_stats(be, LKV_KERN_QUEUE_COMPUTE, &st),
                     LKV_ERR_INVALID);
    lkv_cpu_event_destroy(be, e);
    lkv_cpu_event_destroy(be, NULL);
    close_be(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(queue_copies_run_in_fifo_order),
        cmocka_unit_test(events_complete_in_queue_order),
        cmocka_unit_test(queue_wait_orders_across_queues),
        cmocka_unit_test(compute_queue_is_synchronous),
        cmocka_unit_test(link_cap_is_accurate_and_full_duplex),
        cmocka_unit_test(close_drains_pending_copies),
        cmocka_unit_test(bad_arguments_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
