/* test_cpu_queue.c - CPU backend copy queues: FIFO order, events, cross-queue
 * waits, the synchronous compute queue, link-emulation accuracy, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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
    /* 0.2 GB/s: each 4 MiB copy takes ~21 ms, 84 ms for all four */
    lkv_kern_backend_t *be = open_be(0.2, 0);
    enum { N = 4 };
    size_t            sz  = 4 << 20;
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

/* Timing on a shared machine: the cap (an upper bound on the rate) must hold
 * on every attempt; the lower bounds (the link is not wasted) may miss when
 * the scheduler runs the copy thread late, so each measurement gets up to
 * three attempts. */
#define ATTEMPTS 3

/* 2 x sz back to back on D2H; GB/s. */
static double measure_serial(lkv_kern_backend_t *be, uint8_t *const *buf,
                             size_t sz)
{
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, buf[3], buf[2], sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, buf[1], buf[0], sz),
                     LKV_OK);
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_memory_equal(buf[0], buf[1], sz);
    return 2.0 * (double)sz / (double)(lkv_now_ns() - t0);
}

/* 512 x 8 KiB on H2D, queued while the queue is held behind a D2H copy so
 * the measurement sees the link, not the submission rate; GB/s from the
 * earliest moment the gate can complete. */
static double measure_small(lkv_kern_backend_t *be, uint8_t *const *buf,
                            double gbps)
{
    lkv_kern_event_t *gate;
    assert_int_equal(lkv_cpu_event_create(be, &gate), LKV_OK);
    /* the gate copy cannot complete before t_gate: the small copies become
     * runnable no earlier */
    int64_t t_gate = lkv_now_ns() + (int64_t)((4 << 20) / gbps);
    assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                        LKV_KERN_COPY_D2H, buf[1], buf[2],
                                        4 << 20),
                     LKV_OK);
    assert_int_equal(lkv_cpu_event_record(be, gate, LKV_KERN_QUEUE_D2H),
                     LKV_OK);
    assert_int_equal(lkv_cpu_queue_wait(be, LKV_KERN_QUEUE_H2D, gate), LKV_OK);
    memset(buf[3], 0, 512 * 8192);
    for (int i = 0; i < 512; i++) {
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_H2D,
                                            LKV_KERN_COPY_H2D,
                                            buf[3] + (size_t)i * 8192,
                                            buf[0] + (size_t)i * 8192, 8192),
                         LKV_OK);
    }
    assert_int_equal(lkv_cpu_event_sync(be, gate), LKV_OK);
    int64_t t0 = t_gate;
    lkv_cpu_event_destroy(be, gate);
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_H2D), LKV_OK);
    double rate = (512.0 * 8192.0) / (double)(lkv_now_ns() - t0);
    assert_memory_equal(buf[3], buf[0], 512 * 8192);
    return rate;
}

/* Mean lateness of 1 ms sleeps, in ns: how late this machine wakes threads
 * up right now (a few us on a quiet machine, ms on an overloaded one). */
static double wakeup_lateness_ns(void)
{
    int64_t total = 0;
    for (int i = 0; i < 10; i++) {
        int64_t t0 = lkv_now_ns();
        lkv_sleep_ns(1000000);
        total += lkv_now_ns() - t0 - 1000000;
    }
    return (double)total / 10.0;
}

/* A lower-bound timing check that failed ATTEMPTS times: a real failure
 * unless the machine is too overloaded to run the copy thread on time. */
static void assert_low_or_overloaded(bool ok, const char *what)
{
    if (ok) {
        return;
    }
    double late = wakeup_lateness_ns();
    if (late > 300000.0) {
        print_message("%s: below the cap, but threads wake up %.2f ms late "
                      "here (overloaded machine): not counted\n",
                      what, late / 1e6);
        return;
    }
    fail_msg("%s: achieved rate below 85%% of the cap (wake-up lateness "
             "%.3f ms)",
             what, late / 1e6);
}

static void link_cap_is_accurate_and_full_duplex(void **state)
{
    /* a low cap keeps memcpy's own CPU time small next to the pacing */
    const double gbps = 0.25;
    size_t       sz   = 8 << 20; /* ~34 ms at 0.25 GB/s */
    uint8_t     *buf[4];
    for (int i = 0; i < 4; i++) {
        buf[i] = malloc(sz);
        assert_non_null(buf[i]);
        fill(buf[i], sz, (uint8_t)(i * 3 + 1)); /* also faults pages in */
    }
    /* the lower bounds need memcpy well above the cap (not so under TSan
     * or valgrind, which instrument every byte) */
    int64_t t_raw = lkv_now_ns();
    memcpy(buf[1], buf[0], sz);
    double raw       = (double)sz / (double)(lkv_now_ns() - t_raw);
    bool   check_low = raw > 4.0 * gbps;
    if (!check_low) {
        print_message("memcpy runs at %.2f GB/s here: checking only that the "
                      "cap holds\n",
                      raw);
    }
    lkv_kern_backend_t *be = open_be(gbps, 0);
    bool                ok = false;
    for (int t = 0; t < ATTEMPTS && !ok; t++) {
        double rate = measure_serial(be, buf, sz);
        print_message("capped D2H: %.3f GB/s (cap %.3f)\n", rate, gbps);
        assert_true(rate <= gbps * 1.01);
        ok = !check_low || rate >= gbps * 0.85;
    }
    assert_low_or_overloaded(ok, "one link, 2 x 8 MiB");
    /* both directions at once: each keeps its own link, so a small D2H copy
     * queued behind nothing finishes while a long H2D copy still runs */
    double single_s = (double)sz / (gbps * 1e9);
    ok              = false;
    for (int t = 0; t < ATTEMPTS && !ok; t++) {
        lkv_kern_event_t *long_h2d, *short_d2h;
        assert_int_equal(lkv_cpu_event_create(be, &long_h2d), LKV_OK);
        assert_int_equal(lkv_cpu_event_create(be, &short_d2h), LKV_OK);
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_H2D,
                                            LKV_KERN_COPY_H2D, buf[3], buf[0],
                                            sz),
                         LKV_OK);
        assert_int_equal(
            lkv_cpu_event_record(be, long_h2d, LKV_KERN_QUEUE_H2D), LKV_OK);
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                            LKV_KERN_COPY_D2H, buf[1], buf[2],
                                            8192),
                         LKV_OK);
        assert_int_equal(
            lkv_cpu_event_record(be, short_d2h, LKV_KERN_QUEUE_D2H), LKV_OK);
        assert_int_equal(lkv_cpu_event_sync(be, short_d2h), LKV_OK);
        ok = lkv_cpu_event_query(be, long_h2d) == LKV_AGAIN;
        int64_t t0 = lkv_now_ns();
        assert_int_equal(lkv_cpu_event_sync(be, long_h2d), LKV_OK);
        print_message("duplex: 8 KiB D2H done %s the %zu MiB H2D (%.1f ms "
                      "before its end; the H2D takes %.1f ms)\n",
                      ok ? "during" : "after", sz >> 20,
                      (double)(lkv_now_ns() - t0) / 1e6, single_s * 1e3);
        assert_memory_equal(buf[3], buf[0], sz);
        assert_memory_equal(buf[1], buf[2], 8192);
        lkv_cpu_event_destroy(be, long_h2d);
        lkv_cpu_event_destroy(be, short_d2h);
    }
    assert_true(ok);
    /* many small copies share one link timeline: the cap holds for them
     * too, without a sleep's overhead per copy */
    ok = false;
    for (int t = 0; t < ATTEMPTS && !ok; t++) {
        double rate = measure_small(be, buf, gbps);
        print_message("512 x 8 KiB H2D: %.3f GB/s (cap %.3f)\n", rate, gbps);
        assert_true(rate <= gbps * 1.02);
        ok = !check_low || rate >= gbps * 0.85;
    }
    assert_low_or_overloaded(ok, "512 x 8 KiB");
    close_be(be);

    /* latency is added per copy */
    be         = open_be(100.0, 5000.0); /* 5 ms per copy, fast link */
    int64_t t0 = lkv_now_ns();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lkv_cpu_copy_async(be, LKV_KERN_QUEUE_D2H,
                                            LKV_KERN_COPY_D2H, buf[1], buf[0],
                                            1024),
                         LKV_OK);
    }
    assert_int_equal(lkv_cpu_sync(be, LKV_KERN_QUEUE_D2H), LKV_OK);
    assert_true(lkv_now_ns() - t0 >= 15000000);
    close_be(be);
    for (int i = 0; i < 4; i++) {
        free(buf[i]);
    }
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
