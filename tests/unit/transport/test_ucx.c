/* test_ucx.c - the UCX data plane: a kvnode (served by a thread of this
 * process) publishes its region; the UCX remote KV tier puts and gets lists
 * of layer-blocks across two kvnodes and the bytes land where the block
 * index says; bad requests are statuses; a malformed control message gets an
 * error answer; a kvnode that goes away fails transfers within the bounded
 * timeout and is marked down. UCX_TLS=tcp (set before UCX starts). Threads:
 * one per kvnode (serve loop) plus the test thread (the client). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <pthread.h>

#include "common/clock.h"
#include "kvstore/kv_remote_ucx.h"
#include "transport/kvnode.h"
#include "transport/ucx.h"
#include "transport/zmq_util.h"

#define BB 4096 /* block bytes */

typedef struct {
    lkv_kvnode_t         *n;
    pthread_t             th;
    volatile sig_atomic_t stop;
    char                  ep[256];
} node_t;

static void *serve_main(void *arg)
{
    node_t *nd = arg;
    (void)lkv_kvnode_serve(nd->n, &nd->stop);
    return NULL;
}

static void node_start(node_t *nd, uint64_t bytes)
{
    lkv_kvnode_config_t c;
    memset(nd, 0, sizeof(*nd));
    memset(&c, 0, sizeof(c));
    c.listen         = "tcp://127.0.0.1:*";
    c.capacity_bytes = bytes;
    c.block_bytes    = BB;
    assert_int_equal(lkv_kvnode_create(&c, &nd->n), LKV_OK);
    snprintf(nd->ep, sizeof(nd->ep), "%s", lkv_kvnode_endpoint(nd->n));
    assert_int_equal(pthread_create(&nd->th, NULL, serve_main, nd), 0);
}

static void node_stop(node_t *nd)
{
    if (nd->n == NULL) {
        return;
    }
    nd->stop = 1;
    pthread_join(nd->th, NULL);
    lkv_kvnode_destroy(&nd->n);
}

static lkv_status_t wait_req(lkv_kv_remote_t *h, lkv_kv_remote_req_t *q)
{
    lkv_status_t st;
    while ((st = h->ops->test(h->ctx, q)) == LKV_AGAIN) {
    }
    h->ops->req_free(h->ctx, q);
    return st;
}

static void kvnode_config_errors_are_statuses(void **state)
{
    (void)state;
    lkv_kvnode_config_t c;
    lkv_kvnode_t       *n = NULL;
    memset(&c, 0, sizeof(c));
    c.listen = "tcp://127.0.0.1:*";
    assert_int_equal(lkv_kvnode_create(&c, &n), LKV_ERR_INVALID);
    c.capacity_bytes = 100;
    c.block_bytes    = 4096; /* less than one block */
    assert_int_equal(lkv_kvnode_create(&c, &n), LKV_ERR_INVALID);
    c.capacity_bytes = 1 << 16;
    c.listen         = "nonsense://x";
    assert_true(lkv_kvnode_create(&c, &n) < 0);
    assert_null(n);
}

static void kvnode_query_without_node_times_out(void **state)
{
    (void)state;
    lkv_kvnode_info_t info;
    int64_t           t0 = lkv_now_ns();
    assert_int_equal(lkv_kvnode_query("tcp://127.0.0.1:1", 200, &info),
                     LKV_ERR_TIMEOUT);
    assert_true(lkv_now_ns() - t0 < 2000000000LL);
}

static void kvnode_malformed_request_gets_error_answer(void **state)
{
    (void)state;
    node_t nd;
    node_start(&nd, 1 << 16);
    void *ctx = NULL, *s = NULL;
    assert_int_equal(lkv_zmq_ctx_create(&ctx), LKV_OK);
    assert_int_equal(lkv_zmq_socket(ctx, ZMQ_DEALER, NULL, &s), LKV_OK);
    assert_int_equal(lkv_zmq_connect(s, nd.ep), LKV_OK);
    const char junk[] = "\xc1\xc1 not msgpack";
    assert_int_equal(lkv_zmq_send(s, junk, sizeof(junk), false), LKV_OK);
    assert_int_equal(lkv_zmq_wait_readable(s, 3000), LKV_OK);
    lkv_zmq_frame_t f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(lkv_zmq_recv(s, &f, false), LKV_OK);
    msgpack_unpacked u;
    size_t           off = 0;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, lkv_zmq_frame_data(&f),
                                         lkv_zmq_frame_size(&f), &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    bool saw_false = false;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size == 2 &&
            memcmp(kv->key.via.str.ptr, "ok", 2) == 0) {
            saw_false = kv->val.type == MSGPACK_OBJECT_BOOLEAN &&
                        !kv->val.via.boolean;
        }
    }
    assert_true(saw_false);
    msgpack_unpacked_destroy(&u);
    lkv_zmq_frame_close(&f);
    lkv_zmq_close(&s);
    lkv_zmq_ctx_destroy(&ctx);
    node_stop(&nd);
}

static void remote_put_get_two_nodes_round_trip(void **state)
{
    (void)state;
    node_t a, b;
    node_start(&a, 8 * BB);
    node_start(&b, 8 * BB + 100); /* rounded down to 8 blocks */

    const char                *eps[2] = {a.ep, b.ep};
    lkv_kv_remote_ucx_config_t c;
    memset(&c, 0, sizeof(c));
    c.endpoints   = eps;
    c.n_endpoints = 2;
    c.block_bytes = BB;
    lkv_kv_remote_ucx_t *r = NULL;
    assert_int_equal(lkv_kv_remote_ucx_create(&c, &r), LKV_OK);
    assert_int_equal(lkv_kv_remote_ucx_n_blocks(r), 16);
    assert_int_equal(lkv_kv_remote_ucx_node_of(r, 7), 0);
    assert_int_equal(lkv_kv_remote_ucx_node_of(r, 8), 1);
    lkv_kv_remote_t h;
    lkv_kv_remote_ucx_handle(r, &h);
    assert_string_equal(h.ops->name, "ucx");

    /* start-up bandwidth probe (writes blocks 0..3 of node 0) */
    double pb = 0, gb = 0;
    assert_int_equal(lkv_kv_remote_ucx_probe(r, 4, &pb, &gb), LKV_OK);
    assert_true(pb > 0 && gb > 0);

    /* 4 blocks, two on each node, out of order */
    lkv_kv_block_t blocks[4] = {9, 2, 15, 0};
    char          *src       = malloc(4 * BB);
    char          *dst       = calloc(4, BB);
    void          *ls[4], *ld[4];
    for (int i = 0; i < 4; i++) {
        memset(src + i * BB, 'a' + i, BB);
        ls[i] = src + i * BB;
        ld[i] = dst + i * BB;
    }
    lkv_kv_remote_req_t *q = NULL;
    assert_int_equal(h.ops->put(h.ctx, blocks, ls, 4, BB, 0, &q), LKV_OK);
    assert_int_equal(wait_req(&h, q), LKV_OK);
    /* bytes are where the index says, in each kvnode's memory */
    const char *ma = lkv_kvnode_memory(a.n);
    const char *mb = lkv_kvnode_memory(b.n);
    assert_int_equal(ma[2 * BB], 'b');
    assert_int_equal(ma[0], 'd');
    assert_int_equal(mb[1 * BB + BB - 1], 'a');
    assert_int_equal(mb[7 * BB], 'c');
    assert_int_equal(h.ops->get(h.ctx, blocks, ld, 4, BB, 0, &q), LKV_OK);
    assert_int_equal(wait_req(&h, q), LKV_OK);
    assert_memory_equal(src, dst, 4 * BB);

    /* bad requests */
    lkv_kv_block_t bad[1] = {16};
    assert_int_equal(h.ops->put(h.ctx, bad, ls, 1, BB, 0, &q),
                     LKV_ERR_INVALID);
    assert_int_equal(h.ops->put(h.ctx, blocks, ls, 1, BB / 2, 0, &q),
                     LKV_ERR_INVALID);
    assert_int_equal(h.ops->put(h.ctx, blocks, ls, 1, BB, 1, &q),
                     LKV_ERR_UNSUPPORTED);

    /* node b goes away: transfers touching it fail within the timeout and
     * the node is marked down; node a keeps working */
    node_stop(&b);
    int64_t t0 = lkv_now_ns();
    for (int tries = 0; tries < 3 && lkv_kv_remote_ucx_node_up(r, 1);
         tries++) {
        lkv_status_t st = h.ops->get(h.ctx, blocks, ld, 4, BB, 0, &q);
        if (st == LKV_OK) {
            st = wait_req(&h, q);
        }
        assert_true(st == LKV_ERR_PEER_LOST || st == LKV_ERR_TIMEOUT ||
                    st == LKV_ERR_IO);
    }
    assert_true(lkv_now_ns() - t0 < 7000000000LL);
    assert_false(lkv_kv_remote_ucx_node_up(r, 1));
    assert_true(lkv_kv_remote_ucx_node_up(r, 0));
    assert_int_equal(h.ops->get(h.ctx, blocks, ld, 1, BB, 0, &q),
                     LKV_ERR_PEER_LOST);
    lkv_kv_block_t on_a[2] = {2, 0};
    memset(dst, 0, 2 * BB);
    assert_int_equal(h.ops->get(h.ctx, on_a, ld, 2, BB, 0, &q), LKV_OK);
    assert_int_equal(wait_req(&h, q), LKV_OK);
    assert_int_equal(dst[0], 'b');
    assert_int_equal(dst[BB], 'd');

    lkv_kv_remote_ucx_destroy(&r);
    assert_null(r);
    free(src);
    free(dst);
    node_stop(&a);
}

static void ucx_op_offsets_outside_region_are_invalid(void **state)
{
    (void)state;
    node_t nd;
    node_start(&nd, 4 * BB);
    lkv_kvnode_info_t info;
    assert_int_equal(lkv_kvnode_query(nd.ep, 3000, &info), LKV_OK);
    assert_int_equal(info.bytes, 4 * BB);
    assert_int_equal(info.block_bytes, BB);
    lkv_ucx_t    *u  = NULL;
    lkv_ucx_ep_t *ep = NULL;
    assert_int_equal(lkv_ucx_create(NULL, &u), LKV_OK);
    assert_int_equal(lkv_ucx_ep_create(u, "t", info.addr, info.addr_len,
                                       info.rkey, info.rkey_len, info.base,
                                       info.bytes, &ep),
                     LKV_OK);
    char          buf[BB];
    void         *loc[1]  = {buf};
    uint64_t      roff[1] = {3 * BB + 1};
    lkv_ucx_op_t *op      = NULL;
    assert_int_equal(lkv_ucx_put(u, ep, loc, roff, 1, BB, &op),
                     LKV_ERR_INVALID);
    roff[0] = 3 * BB;
    memset(buf, 7, sizeof(buf));
    assert_int_equal(lkv_ucx_put(u, ep, loc, roff, 1, BB, &op), LKV_OK);
    assert_int_equal(lkv_ucx_op_wait(u, op), LKV_OK);
    lkv_ucx_op_release(u, op);
    assert_int_equal(lkv_ucx_ops_in_use(u), 0);
    assert_int_equal(((char *)lkv_kvnode_memory(nd.n))[3 * BB + 5], 7);
    lkv_ucx_ep_destroy(u, &ep);
    lkv_ucx_destroy(&u);
    lkv_kvnode_info_free(&info);
    node_stop(&nd);
}

int main(void)
{
    setenv("UCX_TLS", "tcp", 0);
    setenv("LKV_UCX_TIMEOUT_MS", "2000", 0);
    setenv("UCX_HANDLE_ERRORS", "none", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kvnode_config_errors_are_statuses),
        cmocka_unit_test(kvnode_query_without_node_times_out),
        cmocka_unit_test(kvnode_malformed_request_gets_error_answer),
        cmocka_unit_test(remote_put_get_two_nodes_round_trip),
        cmocka_unit_test(ucx_op_offsets_outside_region_are_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
