/* test_zmq_util.c - ZeroMQ helpers: ROUTER envelopes (plain and REQ-style
 * delimiter), multi-frame rejection, poll timeouts, bind errors, and
 * ROUTER_MANDATORY reporting a vanished peer. Single-threaded (inproc and
 * loopback tcp sockets driven from the test thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "transport/zmq_util.h"

typedef struct {
    void *ctx;
    void *router;
    void *dealer;
    char  ep[128];
} pair_t;

static int setup(void **state)
{
    static pair_t  p;
    lkv_zmq_opts_t o = lkv_zmq_opts_default();

    memset(&p, 0, sizeof(p));
    if (lkv_zmq_ctx_create(&p.ctx) != LKV_OK) {
        return -1;
    }
    o.router_mandatory = true;
    if (lkv_zmq_socket(p.ctx, ZMQ_ROUTER, &o, &p.router) != LKV_OK ||
        lkv_zmq_bind(p.router, "tcp://127.0.0.1:*") != LKV_OK ||
        lkv_zmq_last_endpoint(p.router, p.ep, sizeof(p.ep)) != LKV_OK ||
        lkv_zmq_socket(p.ctx, ZMQ_DEALER, NULL, &p.dealer) != LKV_OK ||
        lkv_zmq_connect(p.dealer, p.ep) != LKV_OK) {
        return -1;
    }
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    pair_t *p = *state;

    lkv_zmq_close(&p->dealer);
    lkv_zmq_close(&p->router);
    lkv_zmq_ctx_destroy(&p->ctx);
    lkv_zmq_ctx_destroy(&p->ctx); /* NULL-safe */
    return 0;
}

static void zmq_router_round_trip_mirrors_envelope(void **state)
{
    pair_t         *p = *state;
    lkv_zmq_peer_t  peer;
    lkv_zmq_frame_t f;

    assert_int_equal(lkv_zmq_send(p->dealer, "ping", 4, false), LKV_OK);
    assert_int_equal(lkv_zmq_wait_readable(p->router, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_router_recv(p->router, &peer, &f, true), LKV_OK);
    assert_false(peer.delimiter);
    assert_true(peer.id_len > 0);
    assert_int_equal(lkv_zmq_frame_size(&f), 4);
    assert_memory_equal(lkv_zmq_frame_data(&f), "ping", 4);
    lkv_zmq_frame_close(&f);
    lkv_zmq_frame_close(&f); /* idempotent */
    assert_int_equal(lkv_zmq_router_send(p->router, &peer, "pong", 4, false),
                     LKV_OK);
    assert_int_equal(lkv_zmq_wait_readable(p->dealer, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_recv(p->dealer, &f, false), LKV_OK);
    assert_memory_equal(lkv_zmq_frame_data(&f), "pong", 4);
    lkv_zmq_frame_close(&f);

    /* REQ-style [empty][body]: accepted, and the reply carries the delimiter */
    assert_int_equal(zmq_send(p->dealer, "", 0, ZMQ_SNDMORE), 0);
    assert_int_equal(zmq_send(p->dealer, "abc", 3, 0), 3);
    assert_int_equal(lkv_zmq_wait_readable(p->router, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_router_recv(p->router, &peer, &f, false), LKV_OK);
    assert_true(peer.delimiter);
    assert_memory_equal(lkv_zmq_frame_data(&f), "abc", 3);
    lkv_zmq_frame_close(&f);
    assert_int_equal(lkv_zmq_router_send(p->router, &peer, "xyz", 3, false),
                     LKV_OK);
    assert_int_equal(lkv_zmq_wait_readable(p->dealer, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_recv(p->dealer, &f, false), LKV_ERR_PROTOCOL);
}

static void zmq_multi_frame_message_is_protocol_error(void **state)
{
    pair_t         *p = *state;
    lkv_zmq_peer_t  peer;
    lkv_zmq_frame_t f;

    assert_int_equal(zmq_send(p->dealer, "a", 1, ZMQ_SNDMORE), 1);
    assert_int_equal(zmq_send(p->dealer, "b", 1, ZMQ_SNDMORE), 1);
    assert_int_equal(zmq_send(p->dealer, "c", 1, 0), 1);
    assert_int_equal(lkv_zmq_wait_readable(p->router, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_router_recv(p->router, &peer, &f, false),
                     LKV_ERR_PROTOCOL);
    assert_true(peer.id_len > 0); /* the caller can still answer */
    assert_false(f.live);
    /* the rest was drained: the socket is empty and usable */
    assert_int_equal(lkv_zmq_router_recv(p->router, &peer, &f, true),
                     LKV_AGAIN);
    assert_int_equal(lkv_zmq_send(p->dealer, "ok", 2, false), LKV_OK);
    assert_int_equal(lkv_zmq_wait_readable(p->router, 2000), LKV_OK);
    assert_int_equal(lkv_zmq_router_recv(p->router, &peer, &f, false), LKV_OK);
    lkv_zmq_frame_close(&f);
}

static void zmq_poll_times_out(void **state)
{
    pair_t *p  = *state;
    int64_t t0 = lkv_now_ns();

    assert_int_equal(lkv_zmq_wait_readable(p->router, 30), LKV_ERR_TIMEOUT);
    assert_true(lkv_now_ns() - t0 >= 25 * 1000000LL);
    assert_int_equal(lkv_zmq_wait_readable(p->router, 0), LKV_ERR_TIMEOUT);
}

static void zmq_bind_errors_are_statuses(void **state)
{
    pair_t *p = *state;
    void   *s = NULL;

    assert_int_equal(lkv_zmq_socket(p->ctx, ZMQ_ROUTER, NULL, &s), LKV_OK);
    assert_int_equal(lkv_zmq_bind(s, p->ep), LKV_ERR_BUSY); /* in use */
    assert_int_equal(lkv_zmq_bind(s, "bogus://x"), LKV_ERR_INVALID);
    assert_int_equal(lkv_zmq_bind(s, ""), LKV_ERR_INVALID);
    assert_int_equal(lkv_zmq_connect(s, "tcp://"), LKV_ERR_INVALID);
    lkv_zmq_close(&s);
    assert_null(s);
    lkv_zmq_close(&s);
}

static void zmq_router_mandatory_reports_gone_peer(void **state)
{
    pair_t        *p    = *state;
    lkv_zmq_peer_t gone = {.id = {0, 1, 2, 3}, .id_len = 4};

    assert_int_equal(lkv_zmq_router_send(p->router, &gone, "x", 1, true),
                     LKV_ERR_PEER_LOST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zmq_router_round_trip_mirrors_envelope),
        cmocka_unit_test(zmq_multi_frame_message_is_protocol_error),
        cmocka_unit_test(zmq_poll_times_out),
        cmocka_unit_test(zmq_bind_errors_are_statuses),
        cmocka_unit_test(zmq_router_mandatory_reports_gone_peer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
