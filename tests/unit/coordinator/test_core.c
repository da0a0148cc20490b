/* test_core.c - the coordinator core (coordinator/core.h) driven without
 * sockets: client frames in, replies captured from the send function, and a
 * fake worker that answers every step plan (a fixed token per sampled seq,
 * every move reported done). Covers malformed and invalid requests (error
 * replies with codes, never a crash), the whole submit -> accepted -> token*
 * -> done path, non-streaming replies, cancel, duplicate ids, clients that
 * vanish mid-stream (blocks freed), a lost worker, and stats / health.
 * Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "common/clock.h"
#include "coordinator/core.h"
#include "transport/wire.h"

#define MAX_SENT 4096

typedef struct {
    lkv_core_dest_t dest;
    lkv_zmq_peer_t  peer;
    uint8_t        *data;
    size_t          len;
} sent_t;

typedef struct {
    sent_t         sent[MAX_SENT];
    int            n_sent;
    lkv_zmq_peer_t gone; /* sends to this peer fail with PEER_LOST */
    bool           worker_gone;
    lkv_core_t    *core;
    lkv_zmq_peer_t worker;
    int32_t        token; /* what the fake worker samples */
} fx_t;

static lkv_status_t cap_send(void *ctx, lkv_core_dest_t dest,
                             const lkv_zmq_peer_t *peer, const void *data,
                             size_t len)
{
    fx_t *f = ctx;

    if (dest == LKV_CORE_TO_CLIENT && f->gone.id_len == peer->id_len &&
        memcmp(f->gone.id, peer->id, peer->id_len) == 0) {
        return LKV_ERR_PEER_LOST;
    }
    if (dest == LKV_CORE_TO_WORKER && f->worker_gone) {
        return LKV_ERR_PEER_LOST;
    }
    assert_true(f->n_sent < MAX_SENT);
    sent_t *s = &f->sent[f->n_sent++];
    s->dest   = dest;
    s->peer   = *peer;
    s->data   = malloc(len);
    assert_non_null(s->data);
    memcpy(s->data, data, len);
    s->len = len;
    return LKV_OK;
}

static void clear_sent(fx_t *f)
{
    for (int i = 0; i < f->n_sent; i++) {
        free(f->sent[i].data);
    }
    f->n_sent = 0;
}

static lkv_zmq_peer_t peer(const char *name)
{
    lkv_zmq_peer_t p;
    memset(&p, 0, sizeof(p));
    p.id_len = strlen(name);
    memcpy(p.id, name, p.id_len);
    return p;
}

static const char *model_path(void)
{
    static char path[1024];
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/models/stories260K/stories260K.gguf",
             src ? src : ".");
    return path;
}

static int setup(void **state)
{
    fx_t             *f = calloc(1, sizeof(*f));
    lkv_core_config_t cc = lkv_core_config_default();

    if (f == NULL) {
        return -1;
    }
    cc.model_path                        = model_path();
    cc.send                              = cap_send;
    cc.send_ctx                          = f;
    cc.sched.n_blocks[LKV_KV_TIER_DEVICE] = 64;
    cc.sched.n_blocks[LKV_KV_TIER_HOST]   = 256;
    cc.sched.max_seqs                     = 16;
    if (lkv_core_create(&cc, &f->core) != LKV_OK) {
        free(f);
        return -1;
    }
    f->worker = peer("worker-0");
    f->token  = 300;
    *state    = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    clear_sent(f);
    lkv_core_destroy(&f->core);
    assert_null(f->core);
    free(f);
    return 0;
}

/* send a msgpack-encoded client message */
static void client_send(fx_t *f, const char *who, const lkv_wire_msg_t *m)
{
    lkv_wire_buf_t b;
    lkv_zmq_peer_t p = peer(who);

    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(m, &b), LKV_OK);
    lkv_core_on_client(f->core, &p, b.data, b.len, lkv_now_ns());
    lkv_wire_buf_free(&b);
}

/* decode captured message i (server limits) */
static void decode_sent(fx_t *f, int i, lkv_wire_msg_t *m)
{
    lkv_wire_limits_t lim = lkv_wire_limits_internal();
    lim.max_map_len       = 4096;
    assert_int_equal(lkv_wire_decode(f->sent[i].data, f->sent[i].len, &lim, m),
                     LKV_OK);
}

/* the single reply to a client (and it must be an error with code) */
static void expect_error(fx_t *f, lkv_status_t code, const char *needle)
{
    lkv_wire_msg_t m;
    assert_int_equal(f->n_sent, 1);
    assert_int_equal(f->sent[0].dest, LKV_CORE_TO_CLIENT);
    decode_sent(f, 0, &m);
    assert_int_equal(m.type, LKV_WIRE_ERROR);
    assert_int_equal(m.u.error.code, code);
    if (needle != NULL && strstr(m.u.error.message, needle) == NULL) {
        fail_msg("error message '%s' lacks '%s'", m.u.error.message, needle);
    }
    lkv_wire_msg_release(&m);
    clear_sent(f);
}

static void attach_worker(fx_t *f)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;

    lkv_wire_msg_init(&m, LKV_WIRE_HELLO);
    m.u.hello.backend = "cpu";
    m.u.hello.version = "test";
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    lkv_core_on_worker(f->core, &f->worker, b.data, b.len, lkv_now_ns());
    lkv_wire_buf_free(&b);
    assert_int_equal(f->n_sent, 1);
    assert_int_equal(f->sent[0].dest, LKV_CORE_TO_WORKER);
    decode_sent(f, 0, &m);
    assert_int_equal(m.type, LKV_WIRE_CONFIG);
    assert_int_equal(m.u.config.device_kv_blocks, 64);
    assert_string_equal(m.u.config.model, model_path());
    lkv_wire_msg_release(&m);
    clear_sent(f);
}

static lkv_wire_msg_t submit_msg(uint64_t id, const char *prompt, int max_tokens)
{
    lkv_wire_msg_t m;
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    lkv_wire_id_set_uint(&m.id, id);
    m.u.submit.prompt      = prompt;
    m.u.submit.prompt_len  = (uint32_t)strlen(prompt);
    m.u.submit.max_tokens  = max_tokens;
    m.u.submit.temperature = 0;
    return m;
}

/* Answer every plan sent to the worker until none is outstanding; client
 * messages are moved to *out (decoded). Returns the number of steps. */
static int run_worker(fx_t *f, lkv_wire_msg_t *out, int *n_out, int cap)
{
    int steps = 0;

    for (int guard = 0; guard < 10000; guard++) {
        int plan_i = -1;
        for (int i = 0; i < f->n_sent; i++) {
            if (f->sent[i].dest == LKV_CORE_TO_WORKER) {
                plan_i = i;
            } else if (out != NULL && *n_out < cap) {
                decode_sent(f, i, &out[(*n_out)++]);
            }
        }
        if (plan_i < 0) {
            clear_sent(f);
            lkv_core_tick(f->core, lkv_now_ns());
            for (int i = 0; i < f->n_sent; i++) {
                if (f->sent[i].dest == LKV_CORE_TO_WORKER) {
                    plan_i = i;
                }
            }
            if (plan_i < 0) {
                for (int i = 0; i < f->n_sent; i++) {
                    if (out != NULL && *n_out < cap) {
                        decode_sent(f, i, &out[(*n_out)++]);
                    }
                }
                clear_sent(f);
                return steps;
            }
            continue;
        }
        lkv_wire_msg_t p;
        decode_sent(f, plan_i, &p);
        assert_int_equal(p.type, LKV_WIRE_STEP_PLAN);
        const lkv_step_plan_t *pl = &p.u.step_plan;
        lkv_result_seq_t       rs[64];
        uint64_t               done[256];
        int                    nr = 0, nd = 0;
        for (int i = 0; i < pl->n_seqs && nr < 64; i++) {
            rs[nr].seq_id = pl->seqs[i].seq_id;
            rs[nr].token  = pl->seqs[i].sample ? f->token : -1;
            rs[nr].status = 0;
            nr++;
        }
        for (int i = 0; i < pl->n_moves && nd < 256; i++) {
            done[nd++] = pl->moves[i].move_id;
        }
        lkv_wire_msg_t r;
        lkv_wire_msg_init(&r, LKV_WIRE_STEP_RESULT);
        r.u.step_result.step_id      = pl->step_id;
        r.u.step_result.n_seqs       = nr;
        r.u.step_result.seqs         = rs;
        r.u.step_result.n_moves_done = nd;
        r.u.step_result.moves_done   = done;
        r.u.step_result.step_ns      = 100000;
        r.u.step_result.compute_ns   = 90000;
        lkv_wire_buf_t b;
        lkv_wire_buf_init(&b);
        assert_int_equal(lkv_wire_encode(&r, &b), LKV_OK);
        lkv_wire_msg_release(&p);
        /* keep client messages sent before this plan */
        for (int i = 0; i < f->n_sent; i++) {
            free(f->sent[i].data);
        }
        f->n_sent = 0;
        lkv_core_on_worker(f->core, &f->worker, b.data, b.len, lkv_now_ns());
        lkv_wire_buf_free(&b);
        steps++;
    }
    fail_msg("fake worker did not settle");
    return steps;
}

static void release_all(lkv_wire_msg_t *m, int n)
{
    for (int i = 0; i < n; i++) {
        lkv_wire_msg_release(&m[i]);
    }
}

static void core_malformed_frames_get_error_replies(void **state)
{
    fx_t          *f = *state;
    lkv_zmq_peer_t c = peer("c1");
    static const uint8_t junk[] = {0xc1, 0x00, 0x01};
    /* map32 declaring 4 billion entries, 5 bytes */
    static const uint8_t huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff};

    lkv_core_on_client(f->core, &c, junk, sizeof(junk), lkv_now_ns());
    expect_error(f, LKV_ERR_PROTOCOL, NULL);
    lkv_core_on_client(f->core, &c, huge, sizeof(huge), lkv_now_ns());
    expect_error(f, LKV_ERR_PROTOCOL, NULL);
    lkv_core_on_client(f->core, &c, junk, 0, lkv_now_ns());
    expect_error(f, LKV_ERR_PROTOCOL, NULL);
    lkv_core_on_client_bad_frames(f->core, &c);
    expect_error(f, LKV_ERR_PROTOCOL, "one ZeroMQ frame");

    /* {"v":1,"type":"submit","id":8,"tokens":"oops"} */
    msgpack_sbuffer sb;
    msgpack_packer  pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "submit", 6);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int(&pk, 8);
    msgpack_pack_str_with_body(&pk, "tokens", 6);
    msgpack_pack_str_with_body(&pk, "oops", 4);
    lkv_core_on_client(f->core, &c, sb.data, sb.size, lkv_now_ns());
    msgpack_sbuffer_destroy(&sb);
    lkv_wire_msg_t m;
    assert_int_equal(f->n_sent, 1);
    decode_sent(f, 0, &m);
    assert_int_equal(m.type, LKV_WIRE_ERROR);
    assert_int_equal(m.u.error.code, LKV_ERR_INVALID);
    assert_int_equal(m.id.kind, LKV_WIRE_ID_UINT); /* our id echoed */
    assert_int_equal(m.id.u, 8);
    lkv_wire_msg_release(&m);
    clear_sent(f);

    /* a server-only type from a client */
    lkv_wire_msg_init(&m, LKV_WIRE_ACCEPTED);
    lkv_wire_id_set_uint(&m.id, 3);
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_UNSUPPORTED, "submit, cancel");

    lkv_core_info_t info;
    lkv_core_info(f->core, &info);
    assert_int_equal(info.n_live, 0);
    assert_int_equal(info.n_errors_sent, 6);
}

static void core_invalid_requests_rejected_with_codes(void **state)
{
    fx_t          *f = *state;
    lkv_wire_msg_t m = submit_msg(1, "Once upon a time", 8);

    /* no worker yet: busy, retry */
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_BUSY, "no worker");
    attach_worker(f);

    int32_t toks[3] = {1, 99999, 5};
    m.u.submit.prompt   = NULL;
    m.u.submit.tokens   = toks;
    m.u.submit.n_tokens = 3;
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_INVALID, "tokens[1]");

    int32_t *lng = calloc(4000, sizeof(int32_t));
    assert_non_null(lng);
    for (int i = 0; i < 4000; i++) {
        lng[i] = 7;
    }
    m.u.submit.tokens   = lng;
    m.u.submit.n_tokens = 4000;
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_TOOLONG, "shorten");
    free(lng);

    int32_t stops[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    m                     = submit_msg(2, "hi", 4);
    m.u.submit.stop_ids   = stops;
    m.u.submit.n_stop_ids = 9;
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_INVALID, "stop_ids");

    /* cancel of an unknown id */
    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    lkv_wire_id_set_str(&m.id, "nope", 4);
    client_send(f, "c1", &m);
    expect_error(f, LKV_ERR_NOTFOUND, "nope");
}

static void core_stream_and_nonstream_complete(void **state)
{
    fx_t          *f = *state;
    lkv_wire_msg_t out[256];
    int            n_out = 0;

    attach_worker(f);
    lkv_wire_msg_t m = submit_msg(1, "Once upon a time", 5);
    client_send(f, "c1", &m);
    m                 = submit_msg(2, "Once upon a time", 3);
    m.u.submit.stream = false;
    client_send(f, "c2", &m);
    /* duplicate id on c1 while 1 is in flight */
    m = submit_msg(1, "again", 3);
    client_send(f, "c1", &m);
    int steps = run_worker(f, out, &n_out, 256);
    assert_true(steps >= 5);

    int n_acc = 0, n_tok = 0, n_done = 0, n_busy = 0;
    for (int i = 0; i < n_out; i++) {
        switch (out[i].type) {
        case LKV_WIRE_ACCEPTED:
            n_acc++;
            assert_true(out[i].u.accepted.n_prompt_tokens >= 4);
            break;
        case LKV_WIRE_TOKEN:
            assert_int_equal(out[i].id.u, 1);
            assert_int_equal(out[i].u.token.index, n_tok);
            assert_int_equal(out[i].u.token.token, 300);
            n_tok++;
            break;
        case LKV_WIRE_DONE:
            n_done++;
            assert_int_equal(out[i].u.done.finish_reason,
                             LKV_WIRE_FINISH_LENGTH);
            if (out[i].id.u == 2) {
                assert_int_equal(out[i].u.done.n_tokens, 3);
                assert_int_equal(out[i].u.done.n_out_tokens, 3);
                assert_non_null(out[i].u.done.text);
                assert_true(strlen(out[i].u.done.text) > 0);
            } else {
                assert_int_equal(out[i].u.done.n_tokens, 5);
                assert_null(out[i].u.done.tokens);
            }
            break;
        case LKV_WIRE_ERROR:
            assert_int_equal(out[i].u.error.code, LKV_ERR_BUSY);
            n_busy++;
            break;
        default:
            fail_msg("unexpected %s", lkv_wire_type_name(out[i].type));
        }
    }
    assert_int_equal(n_acc, 2);
    assert_int_equal(n_tok, 5);
    assert_int_equal(n_done, 2);
    assert_int_equal(n_busy, 1);
    release_all(out, n_out);

    lkv_core_info_t info;
    lkv_core_info(f->core, &info);
    assert_int_equal(info.n_live, 0);
    assert_int_equal(info.blocks_used[0] + info.blocks_used[1], 0);

    /* metrics saw both */
    char  *text = NULL;
    size_t len  = 0;
    lkv_core_tick(f->core, lkv_now_ns() + 100000000);
    assert_int_equal(lkv_metrics_render(lkv_core_metrics(f->core), &text, &len),
                     LKV_OK);
    assert_non_null(strstr(text, "layerkv_time_to_first_token_seconds_count{"
                                 "model_name="));
    assert_non_null(strstr(text, "layerkv_generation_tokens_total"));
    free(text);
}

static void core_vanished_client_frees_blocks(void **state)
{
    fx_t          *f = *state;
    lkv_wire_msg_t out[512];
    int            n_out = 0;

    attach_worker(f);
    for (int i = 0; i < 8; i++) {
        char who[16];
        snprintf(who, sizeof(who), "v%d", i);
        lkv_wire_msg_t m = submit_msg((uint64_t)i, "Once upon a time there", 40);
        client_send(f, who, &m);
    }
    /* a few steps, then clients v0..v7 all vanish */
    lkv_core_info_t info;
    lkv_core_info(f->core, &info);
    assert_int_equal(info.n_live, 8);
    for (int i = 0; i < 8; i++) {
        char who[16];
        snprintf(who, sizeof(who), "v%d", i);
        f->gone = peer(who);
        /* the next message to this client fails: its requests end */
        lkv_wire_msg_t h;
        lkv_wire_msg_init(&h, LKV_WIRE_HEALTH);
        client_send(f, who, &h);
    }
    run_worker(f, out, &n_out, 512);
    release_all(out, n_out);
    lkv_core_info(f->core, &info);
    assert_int_equal(info.n_live, 0);
    assert_int_equal(info.n_clients_lost, 8);
    assert_int_equal(info.blocks_used[0] + info.blocks_used[1], 0);

    /* and the server still serves */
    memset(&f->gone, 0, sizeof(f->gone));
    n_out            = 0;
    lkv_wire_msg_t m = submit_msg(9, "Hello", 2);
    client_send(f, "after", &m);
    run_worker(f, out, &n_out, 512);
    assert_int_equal(out[n_out - 1].type, LKV_WIRE_DONE);
    release_all(out, n_out);
}

static void core_cancel_and_lost_worker(void **state)
{
    fx_t          *f = *state;
    lkv_wire_msg_t out[512];
    int            n_out = 0;

    attach_worker(f);
    lkv_wire_msg_t m = submit_msg(1, "Once upon a time", 100);
    client_send(f, "c1", &m);
    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    lkv_wire_id_set_uint(&m.id, 1);
    client_send(f, "c1", &m);
    run_worker(f, out, &n_out, 512);
    assert_int_equal(out[n_out - 1].type, LKV_WIRE_DONE);
    assert_int_equal(out[n_out - 1].u.done.finish_reason,
                     LKV_WIRE_FINISH_CANCELLED);
    release_all(out, n_out);

    /* the worker's link breaks while a request runs: done with an error */
    m = submit_msg(2, "Once upon a time", 100);
    client_send(f, "c1", &m);
    clear_sent(f);
    f->worker_gone = true;
    /* the outstanding plan's result never comes; a timeout-free path: a
     * send to the worker fails at the next plan */
    lkv_wire_msg_t r;
    lkv_wire_msg_init(&r, LKV_WIRE_STEP_RESULT);
    r.u.step_result.step_id = 0;
    r.u.step_result.status  = LKV_ERR_DEVICE;
    lkv_wire_buf_t b;
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(&r, &b), LKV_OK);
    lkv_core_on_worker(f->core, &f->worker, b.data, b.len, lkv_now_ns());
    lkv_wire_buf_free(&b);
    lkv_core_info_t info;
    lkv_core_info(f->core, &info);
    assert_int_equal(info.n_live, 0);
    assert_int_equal(info.n_instances_up, 0);
    bool got_error_done = false;
    for (int i = 0; i < f->n_sent; i++) {
        lkv_wire_msg_t d;
        decode_sent(f, i, &d);
        if (d.type == LKV_WIRE_DONE &&
            d.u.done.finish_reason == LKV_WIRE_FINISH_ERROR) {
            got_error_done = true;
        }
        lkv_wire_msg_release(&d);
    }
    clear_sent(f);
    /* (the step_result with id 0 arrived while a plan was outstanding, so
     * it is a mismatch: the instance is failed either way) */
    assert_true(got_error_done);
}

static void core_health_and_stats_replies(void **state)
{
    fx_t          *f = *state;
    lkv_wire_msg_t m, r;

    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH);
    lkv_wire_id_set_str(&m.id, "h", 1);
    client_send(f, "c1", &m);
    decode_sent(f, 0, &r);
    assert_int_equal(r.type, LKV_WIRE_HEALTH_REPLY);
    assert_string_equal(r.u.health_reply.status, "starting");
    lkv_wire_msg_release(&r);
    clear_sent(f);
    attach_worker(f);
    client_send(f, "c1", &m);
    decode_sent(f, 0, &r);
    assert_string_equal(r.u.health_reply.status, "ok");
    lkv_wire_msg_release(&r);
    clear_sent(f);

    lkv_wire_msg_init(&m, LKV_WIRE_STATS);
    client_send(f, "c1", &m);
    decode_sent(f, 0, &r);
    assert_int_equal(r.type, LKV_WIRE_STATS_REPLY);
    assert_non_null(strstr(r.u.stats_reply.json, "\"kv_blocks_used\""));
    assert_non_null(strstr(r.u.stats_reply.json, "\"layerkv\""));
    lkv_wire_msg_release(&r);
    clear_sent(f);

    lkv_core_shutdown(f->core, "test");
    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH);
    clear_sent(f);
    client_send(f, "c1", &m);
    decode_sent(f, 0, &r);
    assert_string_equal(r.u.health_reply.status, "draining");
    lkv_wire_msg_release(&r);
    clear_sent(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(core_malformed_frames_get_error_replies,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(core_invalid_requests_rejected_with_codes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(core_stream_and_nonstream_complete,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(core_vanished_client_frees_blocks,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(core_cancel_and_lost_worker, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(core_health_and_stats_replies, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
