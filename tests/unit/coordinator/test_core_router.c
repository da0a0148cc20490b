/* test_core_router.c - coordinator/router.h and coordinator/instance.h:
 * the router never picks an instance without a worker, prefers the one
 * with the shorter predicted TTFT (less queued prefill, less KV pressure),
 * breaks ties by index; an instance builds a plan only when attached and
 * nothing is outstanding, rejects a result for the wrong step, and resets
 * to an empty scheduler. Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/instance.h"
#include "coordinator/router.h"

static lkv_inst_t *make_inst(int index)
{
    lkv_inst_config_t ic;
    lkv_inst_t       *in = NULL;

    memset(&ic, 0, sizeof(ic));
    ic.index                             = index;
    ic.sched                             = lkv_sched_config_default();
    ic.sched.n_layers                    = 4;
    ic.sched.block_bytes                 = 4096;
    ic.sched.n_blocks[LKV_KV_TIER_DEVICE] = 64;
    ic.sched.n_blocks[LKV_KV_TIER_HOST]   = 64;
    ic.sched.max_seq_len                 = 512;
    ic.model_path                        = "model.gguf";
    ic.worker_max_batch_tokens           = 512;
    assert_int_equal(lkv_inst_create(&ic, &in), LKV_OK);
    return in;
}

static void attach(lkv_inst_t *in, const char *name)
{
    lkv_zmq_peer_t   p;
    lkv_wire_hello_t h;
    lkv_wire_buf_t   b;

    memset(&p, 0, sizeof(p));
    memset(&h, 0, sizeof(h));
    p.id_len = strlen(name);
    memcpy(p.id, name, p.id_len);
    h.backend = "cpu";
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_inst_attach(in, &p, &h, &b), LKV_OK);
    assert_true(b.len > 0);
    assert_int_equal(lkv_inst_attach(in, &p, &h, &b), LKV_ERR_BUSY);
    assert_true(lkv_inst_is_worker(in, &p));
    lkv_wire_buf_free(&b);
}

static void submit(lkv_inst_t *in, uint64_t id, int n_prompt)
{
    static int32_t      prompt[256];
    lkv_sched_request_t q;

    for (int i = 0; i < n_prompt; i++) {
        prompt[i] = 5 + i % 7;
    }
    memset(&q, 0, sizeof(q));
    q.id         = id;
    q.prompt     = prompt;
    q.n_prompt   = n_prompt;
    q.max_tokens = 8;
    assert_int_equal(lkv_sched_submit(lkv_inst_sched(in), &q, 1, NULL), LKV_OK);
    lkv_inst_add_queued_tokens(in, n_prompt);
}

static void router_prefers_short_queue_and_up_instances(void **state)
{
    lkv_inst_t *in[3] = {make_inst(0), make_inst(1), make_inst(2)};

    (void)state;
    assert_int_equal(lkv_router_pick(in, 3, 10), -1); /* nobody up */
    assert_true(lkv_router_predict_ttft_ns(in[0], 10) == INT64_MAX);
    attach(in[1], "w1");
    assert_int_equal(lkv_router_pick(in, 3, 10), 1);
    attach(in[0], "w0");
    attach(in[2], "w2");
    assert_int_equal(lkv_router_pick(in, 3, 10), 0); /* tie: lowest index */
    submit(in[0], 1, 200);
    submit(in[1], 2, 50);
    assert_int_equal(lkv_router_pick(in, 3, 10), 2);
    submit(in[2], 3, 100);
    assert_int_equal(lkv_router_pick(in, 3, 10), 1);
    assert_true(lkv_router_predict_ttft_ns(in[0], 10) >
                lkv_router_predict_ttft_ns(in[1], 10));
    lkv_inst_add_queued_tokens(in[0], -1000000);
    assert_int_equal(lkv_inst_queued_tokens(in[0]), 0);
    for (int i = 0; i < 3; i++) {
        lkv_inst_destroy(&in[i]);
        assert_null(in[i]);
    }
}

static void instance_plans_only_when_attached(void **state)
{
    lkv_inst_t    *in = make_inst(0);
    lkv_wire_buf_t b;
    bool           have = true;

    (void)state;
    lkv_wire_buf_init(&b);
    submit(in, 7, 20);
    assert_int_equal(lkv_inst_next(in, 2, &b, &have), LKV_OK);
    assert_false(have); /* no worker */
    attach(in, "w");
    assert_int_equal(lkv_inst_next(in, 2, &b, &have), LKV_OK);
    assert_true(have);
    assert_true(lkv_inst_outstanding(in));
    assert_true(lkv_inst_outstanding_ns(in, 12) == 10);
    assert_int_equal(lkv_inst_next(in, 3, &b, &have), LKV_OK);
    assert_false(have); /* one plan in flight at a time */

    lkv_wire_msg_t m;
    lkv_wire_limits_t lim = lkv_wire_limits_internal();
    assert_int_equal(lkv_wire_decode(b.data, b.len, &lim, &m), LKV_OK);
    assert_int_equal(m.type, LKV_WIRE_STEP_PLAN);
    lkv_step_result_t r;
    memset(&r, 0, sizeof(r));
    r.step_id = m.u.step_plan.step_id + 1; /* wrong step */
    assert_int_equal(lkv_inst_on_result(in, &r, 4), LKV_ERR_PROTOCOL);
    lkv_wire_msg_release(&m);

    assert_int_equal(lkv_inst_reset(in), LKV_OK);
    assert_false(lkv_inst_up(in));
    assert_false(lkv_inst_outstanding(in));
    assert_true(lkv_sched_idle(lkv_inst_sched(in)));
    lkv_wire_buf_free(&b);
    lkv_inst_destroy(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(router_prefers_short_queue_and_up_instances),
        cmocka_unit_test(instance_plans_only_when_attached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
