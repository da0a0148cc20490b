/* test_wire.c - wire codec: round trips of every message type and rejection
 * of every malformed case (docs/protocol.md). Single-threaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/clock.h"
#include "transport/wire.h"
#include "transport/wire_impl.h"

/* ---- helpers ---- */

static lkv_wire_buf_t B; /* scratch for hand-built frames */

static void begin(uint32_t n_entries)
{
    lkv_wire_buf_reset(&B);
    lkv_wire_w_map(&B, n_entries);
}

static void kv_str(const char *k, const char *v)
{
    lkv_wire_w_str(&B, k);
    lkv_wire_w_str(&B, v);
}

static void kv_i64(const char *k, int64_t v)
{
    lkv_wire_w_str(&B, k);
    lkv_wire_w_i64(&B, v);
}

static void kv_f64(const char *k, double v)
{
    lkv_wire_w_str(&B, k);
    lkv_wire_w_f64(&B, v);
}

/* {v:1, type:T, ...} header: 2 entries */
static void head(uint32_t n_extra, const char *type)
{
    begin(2 + n_extra);
    kv_i64("v", 1);
    kv_str("type", type);
}

static lkv_status_t dec(lkv_wire_msg_t *m)
{
    return lkv_wire_decode(B.data, B.len, NULL, m);
}

static lkv_status_t dec_bytes(const void *p, size_t n, lkv_wire_msg_t *m)
{
    return lkv_wire_decode(p, n, NULL, m);
}

/* decode expecting failure st whose message contains needle */
static void expect_fail(lkv_status_t st, const char *needle)
{
    lkv_wire_msg_t m;
    lkv_status_t   got = dec(&m);

    if (got != st || (needle != NULL && strstr(m.err, needle) == NULL)) {
        fprintf(stderr, "expected %s containing '%s', got %s: '%s'\n",
                lkv_status_name(st), needle ? needle : "",
                lkv_status_name(got), m.err);
    }
    assert_int_equal(got, st);
    if (needle != NULL) {
        assert_non_null(strstr(m.err, needle));
    }
    assert_null(m.arena);
    lkv_wire_msg_release(&m);
}

/* encode m, decode it back into out (with internal limits) */
static void round_trip(const lkv_wire_msg_t *m, lkv_wire_msg_t *out)
{
    lkv_wire_buf_t    b;
    lkv_wire_limits_t lim = lkv_wire_limits_internal();

    lim.max_map_len = 4096;
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(m, &b), LKV_OK);
    lkv_status_t st = lkv_wire_decode(b.data, b.len, &lim, out);
    if (st != LKV_OK) {
        fprintf(stderr, "decode failed: %s\n", out->err);
    }
    assert_int_equal(st, LKV_OK);
    assert_int_equal(out->type, m->type);
    assert_true(lkv_wire_id_equal(&out->id, &m->id));
    lkv_wire_buf_free(&b);
}

static int setup(void **state)
{
    (void)state;
    lkv_wire_buf_init(&B);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    lkv_wire_buf_free(&B);
    return 0;
}

/* The fast step decoder handles frame (no fallback) and agrees byte for
 * byte (after re-encoding) with the general decoder. */
static void expect_fast_equals_general(const uint8_t *frame, size_t len)
{
    lkv_wire_msg_t    f, g;
    lkv_wire_buf_t    bf, bg;
    lkv_wire_limits_t lim = lkv_wire_limits_internal();

    memset(&f, 0, sizeof(f));
    char serr[160] = "";
    if (lkv_wire_scan(frame, len, &lim, serr, sizeof(serr)) != LKV_OK) {
        fprintf(stderr, "scan: %s\n", serr);
    }
    assert_int_equal(lkv_wire_scan(frame, len, &lim, NULL, 0), LKV_OK);
    assert_true(wire_fast_decode(frame, len, &f));
    assert_int_equal(wire_decode_general(frame, len, &lim, &g), LKV_OK);
    assert_int_equal(f.type, g.type);
    lkv_wire_buf_init(&bf);
    lkv_wire_buf_init(&bg);
    assert_int_equal(lkv_wire_encode(&f, &bf), LKV_OK);
    assert_int_equal(lkv_wire_encode(&g, &bg), LKV_OK);
    assert_int_equal(bf.len, bg.len);
    assert_memory_equal(bf.data, bg.data, bf.len);
    lkv_wire_buf_free(&bf);
    lkv_wire_buf_free(&bg);
    lkv_wire_msg_release(&f);
    lkv_wire_msg_release(&g);
}

/* ---- round trips ---- */

static void wire_submit_prompt_round_trips(void **state)
{
    lkv_wire_msg_t m, d;
    int32_t        stop[] = {2, 13};

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    assert_int_equal(lkv_wire_id_set_str(&m.id, "req-1", 5), LKV_OK);
    m.u.submit.prompt      = "Once upon a time \xc3\xa9";
    m.u.submit.prompt_len  = (uint32_t)strlen(m.u.submit.prompt);
    m.u.submit.max_tokens  = 32;
    m.u.submit.temperature = 0.0f;
    m.u.submit.top_k       = 40;
    m.u.submit.top_p       = 0.9f;
    m.u.submit.has_seed    = true;
    m.u.submit.seed        = UINT64_MAX;
    m.u.submit.stop_ids    = stop;
    m.u.submit.n_stop_ids  = 2;
    m.u.submit.ttft_slo_ms = 250;
    m.u.submit.tpot_slo_ms = 50.5;
    m.u.submit.stream      = false;
    round_trip(&m, &d);
    assert_string_equal(d.id.str, "req-1");
    assert_string_equal(d.u.submit.prompt, m.u.submit.prompt);
    assert_int_equal(d.u.submit.prompt_len, m.u.submit.prompt_len);
    assert_null(d.u.submit.tokens);
    assert_int_equal(d.u.submit.max_tokens, 32);
    assert_true(d.u.submit.temperature == 0.0f);
    assert_int_equal(d.u.submit.top_k, 40);
    assert_true(d.u.submit.top_p == 0.9f);
    assert_true(d.u.submit.has_seed);
    assert_true(d.u.submit.seed == UINT64_MAX);
    assert_int_equal(d.u.submit.n_stop_ids, 2);
    assert_int_equal(d.u.submit.stop_ids[1], 13);
    assert_true(d.u.submit.ttft_slo_ms == 250);
    assert_true(d.u.submit.tpot_slo_ms == 50.5);
    assert_false(d.u.submit.stream);
    assert_non_null(d.arena);
    lkv_wire_msg_release(&d);
    assert_null(d.arena);
    lkv_wire_msg_release(&d); /* twice is fine */
}

static void wire_submit_tokens_defaults_filled(void **state)
{
    lkv_wire_msg_t d;

    (void)state;
    head(2, "submit");
    kv_i64("id", 9);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 3);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 500);
    lkv_wire_w_i64(&B, 0);
    assert_int_equal(dec(&d), LKV_OK);
    assert_int_equal(d.type, LKV_WIRE_SUBMIT);
    assert_int_equal(d.id.kind, LKV_WIRE_ID_UINT);
    assert_true(d.id.u == 9);
    assert_int_equal(d.u.submit.n_tokens, 3);
    assert_int_equal(d.u.submit.tokens[1], 500);
    assert_null(d.u.submit.prompt);
    assert_int_equal(d.u.submit.max_tokens, 64);
    assert_true(d.u.submit.temperature == 1.0f);
    assert_int_equal(d.u.submit.top_k, 0);
    assert_true(d.u.submit.top_p == 1.0f);
    assert_false(d.u.submit.has_seed);
    assert_true(d.u.submit.stream);
    lkv_wire_msg_release(&d);
}

static void wire_small_messages_round_trip(void **state)
{
    lkv_wire_msg_t m, d;

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    lkv_wire_id_set_uint(&m.id, 77);
    round_trip(&m, &d);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH);
    round_trip(&m, &d);
    assert_int_equal(d.id.kind, LKV_WIRE_ID_NONE);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_STATS);
    lkv_wire_id_set_uint(&m.id, 3);
    round_trip(&m, &d);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_ACCEPTED);
    lkv_wire_id_set_uint(&m.id, 0);
    m.u.accepted.n_prompt_tokens = 17;
    round_trip(&m, &d);
    assert_int_equal(d.u.accepted.n_prompt_tokens, 17);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_TOKEN);
    lkv_wire_id_set_str(&m.id, "a", 1);
    m.u.token.index    = 5;
    m.u.token.token    = 1151;
    m.u.token.text     = " th\xe2\x82\xac";
    m.u.token.text_len = 6;
    round_trip(&m, &d);
    assert_int_equal(d.u.token.index, 5);
    assert_int_equal(d.u.token.token, 1151);
    assert_string_equal(d.u.token.text, " th\xe2\x82\xac");
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_SHUTDOWN);
    m.u.shutdown.reason = "bye";
    round_trip(&m, &d);
    assert_string_equal(d.u.shutdown.reason, "bye");
    lkv_wire_msg_release(&d);
}

static void wire_done_and_error_round_trip(void **state)
{
    lkv_wire_msg_t m, d;
    int32_t        toks[] = {5, 6, 7};

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_DONE);
    lkv_wire_id_set_uint(&m.id, 4);
    m.u.done.finish_reason   = LKV_WIRE_FINISH_LENGTH;
    m.u.done.n_prompt_tokens = 3;
    m.u.done.n_tokens        = 3;
    m.u.done.ttft_ms         = 4.5;
    m.u.done.tpot_ms         = 1.25;
    m.u.done.queue_ms        = 0.5;
    m.u.done.text            = "abc";
    m.u.done.text_len        = 3;
    m.u.done.tokens          = toks;
    m.u.done.n_out_tokens    = 3;
    round_trip(&m, &d);
    assert_int_equal(d.u.done.finish_reason, LKV_WIRE_FINISH_LENGTH);
    assert_int_equal(d.u.done.n_tokens, 3);
    assert_true(d.u.done.ttft_ms == 4.5 && d.u.done.tpot_ms == 1.25 &&
                d.u.done.queue_ms == 0.5);
    assert_string_equal(d.u.done.text, "abc");
    assert_int_equal(d.u.done.n_out_tokens, 3);
    assert_int_equal(d.u.done.tokens[2], 7);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_DONE);
    lkv_wire_id_set_uint(&m.id, 4);
    m.u.done.finish_reason = LKV_WIRE_FINISH_ERROR;
    m.u.done.error_code    = LKV_ERR_DEVICE;
    m.u.done.error_message = "gpu fell off the bus";
    round_trip(&m, &d);
    assert_int_equal(d.u.done.error_code, LKV_ERR_DEVICE);
    assert_string_equal(d.u.done.error_message, "gpu fell off the bus");
    assert_null(d.u.done.text);
    lkv_wire_msg_release(&d);

    lkv_wire_buf_t b;
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode_error(NULL, LKV_ERR_REJECTED,
                                           "ttft slo cannot be met", 250, &b),
                     LKV_OK);
    assert_int_equal(dec_bytes(b.data, b.len, &d), LKV_OK);
    assert_int_equal(d.type, LKV_WIRE_ERROR);
    assert_int_equal(d.id.kind, LKV_WIRE_ID_NONE);
    assert_int_equal(d.u.error.code, LKV_ERR_REJECTED);
    assert_string_equal(d.u.error.message, "ttft slo cannot be met");
    assert_true(d.u.error.has_retry_after);
    assert_int_equal(d.u.error.retry_after_ms, 250);
    lkv_wire_msg_release(&d);
    lkv_wire_buf_free(&b);
}

static void wire_health_and_stats_reply_round_trip(void **state)
{
    lkv_wire_msg_t m, d;
    lkv_wire_buf_t s;

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH_REPLY);
    lkv_wire_id_set_uint(&m.id, 12);
    m.u.health_reply.status    = "ok";
    m.u.health_reply.model     = "stories260K";
    m.u.health_reply.version   = "layerkv 0.1.0";
    m.u.health_reply.uptime_s  = 3.5;
    m.u.health_reply.n_running = 2;
    m.u.health_reply.n_waiting = 1;
    round_trip(&m, &d);
    assert_string_equal(d.u.health_reply.status, "ok");
    assert_string_equal(d.u.health_reply.model, "stories260K");
    assert_int_equal(d.u.health_reply.n_running, 2);
    lkv_wire_msg_release(&d);

    lkv_wire_buf_init(&s);
    lkv_wire_w_map(&s, 3);
    lkv_wire_w_str(&s, "policy");
    lkv_wire_w_str(&s, "layerkv \"q\"");
    lkv_wire_w_str(&s, "kv_blocks_used");
    lkv_wire_w_map(&s, 2);
    lkv_wire_w_str(&s, "device");
    lkv_wire_w_u64(&s, 120);
    lkv_wire_w_str(&s, "host");
    lkv_wire_w_i64(&s, -1);
    lkv_wire_w_str(&s, "per_layer");
    lkv_wire_w_array(&s, 3);
    lkv_wire_w_f64(&s, 1.5);
    lkv_wire_w_bool(&s, true);
    lkv_wire_w_nil(&s);
    assert_false(s.oom);
    lkv_wire_msg_init(&m, LKV_WIRE_STATS_REPLY);
    m.u.stats_reply.stats_mp     = s.data;
    m.u.stats_reply.stats_mp_len = s.len;
    round_trip(&m, &d);
    assert_string_equal(d.u.stats_reply.json,
                        "{\"policy\": \"layerkv \\\"q\\\"\", \"kv_blocks_used\": "
                        "{\"device\": 120, \"host\": -1}, \"per_layer\": "
                        "[1.5, true, null]}");
    assert_non_null(strstr(d.u.stats_reply.text, "kv_blocks_used.device  120\n"));
    assert_non_null(strstr(d.u.stats_reply.text, "per_layer              [1.5 true null]\n"));
    assert_int_equal(d.u.stats_reply.stats_mp_len, s.len);
    assert_memory_equal(d.u.stats_reply.stats_mp, s.data, s.len);
    lkv_wire_msg_release(&d);

    /* stats_mp that is not a map is refused by the encoder */
    lkv_wire_buf_reset(&s);
    lkv_wire_w_array(&s, 0);
    m.u.stats_reply.stats_mp     = s.data;
    m.u.stats_reply.stats_mp_len = s.len;
    lkv_wire_buf_t out;
    lkv_wire_buf_init(&out);
    assert_int_equal(lkv_wire_encode(&m, &out), LKV_ERR_INVALID);
    lkv_wire_buf_free(&out);
    lkv_wire_buf_free(&s);
}

static void wire_hello_config_round_trip(void **state)
{
    lkv_wire_msg_t m, d;

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_HELLO);
    m.u.hello.rank             = 3;
    m.u.hello.world_size       = 4;
    m.u.hello.instance         = 1;
    m.u.hello.pid              = 4242;
    m.u.hello.backend          = "cuda";
    m.u.hello.device_kv_blocks = 1ull << 33;
    m.u.hello.host_kv_blocks   = 99;
    m.u.hello.kv_block_bytes   = 65536;
    m.u.hello.link_gbps        = 24.5;
    m.u.hello.version          = "layerkv 0.1.0";
    m.u.hello.remote_kv_nodes  = 2;
    m.u.hello.remote_kv_bytes  = 3ull << 32;
    m.u.hello.remote_put_gbps  = 4.25;
    m.u.hello.remote_get_gbps  = 5.5;
    round_trip(&m, &d);
    assert_int_equal(d.u.hello.rank, 3);
    assert_int_equal(d.u.hello.remote_kv_nodes, 2);
    assert_true(d.u.hello.remote_kv_bytes == (3ull << 32));
    assert_true(d.u.hello.remote_put_gbps == 4.25);
    assert_true(d.u.hello.remote_get_gbps == 5.5);
    assert_int_equal(d.u.hello.world_size, 4);
    assert_string_equal(d.u.hello.backend, "cuda");
    assert_true(d.u.hello.device_kv_blocks == (1ull << 33));
    assert_true(d.u.hello.link_gbps == 24.5);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_CONFIG);
    m.u.config.model            = "models/stories260K/stories260K.gguf";
    m.u.config.tp               = 2;
    m.u.config.pp               = 1;
    m.u.config.block_size       = 16;
    m.u.config.device_kv_blocks = 64;
    m.u.config.host_kv_blocks   = 1024;
    m.u.config.max_seqs         = 256;
    m.u.config.max_batch_tokens = 2048;
    m.u.config.remote_kv_blocks = 777;
    round_trip(&m, &d);
    assert_true(d.u.config.remote_kv_blocks == 777);
    assert_string_equal(d.u.config.model, m.u.config.model);
    assert_int_equal(d.u.config.tp, 2);
    assert_int_equal(d.u.config.block_size, 16);
    assert_int_equal(d.u.config.max_batch_tokens, 2048);
    lkv_wire_msg_release(&d);

    lkv_wire_msg_init(&m, LKV_WIRE_CONFIG); /* model is required */
    lkv_wire_buf_t b;
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID);
    lkv_wire_buf_free(&b);
}

static void wire_step_plan_round_trips(void **state)
{
    lkv_wire_msg_t    m, d;
    int32_t           t0[] = {1, 2, 3, 4}, t1[] = {9};
    int32_t           b0[] = {10, 11}, src[] = {4, 5, 6}, dst[] = {7, 8, 9};
    uint64_t          fin[] = {42, 43};
    lkv_plan_seq_t    seqs[2];
    lkv_plan_append_t app[1];
    lkv_plan_move_t   mv[2];

    (void)state;
    memset(seqs, 0, sizeof(seqs));
    memset(app, 0, sizeof(app));
    memset(mv, 0, sizeof(mv));
    seqs[0] = (lkv_plan_seq_t){.seq_id = 1, .n_tokens = 4, .tokens = t0,
                               .pos0 = 0, .sample = true,
                               .sampling = {0.7f, 40, 0.95f, 1234}};
    seqs[1] = (lkv_plan_seq_t){.seq_id = 2, .n_tokens = 1, .tokens = t1,
                               .pos0 = 77, .sample = false};
    app[0]  = (lkv_plan_append_t){.seq_id = 1, .layer = 5, .tier = 1,
                                  .n_blocks = 2, .blocks = b0};
    mv[0]   = (lkv_plan_move_t){.move_id = 1000, .seq_id = 1, .layer = 3,
                                .kind = LKV_PLAN_MOVE_OFFLOAD, .src_tier = 0,
                                .dst_tier = 1, .n_blocks = 3, .src = src,
                                .dst = dst};
    mv[1]   = (lkv_plan_move_t){.move_id = 1001, .seq_id = 2, .layer = 0,
                                .kind = LKV_PLAN_MOVE_STAGE, .src_tier = 2,
                                .dst_tier = 0, .n_blocks = 0};
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_PLAN);
    m.u.step_plan = (lkv_step_plan_t){
        .step_id = 99, .n_seqs = 2, .seqs = seqs, .n_appends = 1,
        .appends = app, .n_moves = 2, .moves = mv, .n_finished = 2,
        .finished = fin};
    round_trip(&m, &d);
    const lkv_step_plan_t *p = &d.u.step_plan;
    assert_true(p->step_id == 99);
    assert_int_equal(p->n_seqs, 2);
    assert_true(p->seqs[0].seq_id == 1);
    assert_int_equal(p->seqs[0].n_tokens, 4);
    assert_memory_equal(p->seqs[0].tokens, t0, sizeof(t0));
    assert_true(p->seqs[0].sample);
    assert_true(p->seqs[0].sampling.temperature == 0.7f);
    assert_int_equal(p->seqs[0].sampling.top_k, 40);
    assert_true(p->seqs[0].sampling.top_p == 0.95f);
    assert_true(p->seqs[0].sampling.seed == 1234);
    assert_int_equal(p->seqs[1].pos0, 77);
    assert_false(p->seqs[1].sample);
    assert_int_equal(p->n_appends, 1);
    assert_int_equal(p->appends[0].layer, 5);
    assert_int_equal(p->appends[0].tier, 1);
    assert_memory_equal(p->appends[0].blocks, b0, sizeof(b0));
    assert_int_equal(p->n_moves, 2);
    assert_true(p->moves[0].move_id == 1000);
    assert_int_equal(p->moves[0].kind, LKV_PLAN_MOVE_OFFLOAD);
    assert_int_equal(p->moves[0].n_blocks, 3);
    assert_memory_equal(p->moves[0].src, src, sizeof(src));
    assert_memory_equal(p->moves[0].dst, dst, sizeof(dst));
    assert_int_equal(p->moves[1].src_tier, 2);
    assert_int_equal(p->moves[1].n_blocks, 0);
    assert_int_equal(p->n_finished, 2);
    assert_true(p->finished[1] == 43);
    lkv_wire_msg_release(&d);

    /* empty plan */
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_PLAN);
    m.u.step_plan.step_id = 1;
    round_trip(&m, &d);
    assert_int_equal(d.u.step_plan.n_seqs, 0);
    lkv_wire_msg_release(&d);
}

static void wire_step_result_round_trips(void **state)
{
    lkv_wire_msg_t   m, d;
    lkv_result_seq_t rs[2] = {{1, 500, 0}, {2, -1, LKV_ERR_TOOLONG}};
    uint64_t         done[] = {1000, 1001}, failed[] = {7};

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_RESULT);
    m.u.step_result = (lkv_step_result_t){
        .step_id = 99, .status = 0, .n_seqs = 2, .seqs = rs,
        .n_moves_done = 2, .moves_done = done, .n_moves_failed = 1,
        .moves_failed = failed, .step_ns = 123456789, .compute_ns = 100,
        .bytes_d2h = 1ll << 40, .bytes_h2d = 5};
    round_trip(&m, &d);
    const lkv_step_result_t *r = &d.u.step_result;
    assert_true(r->step_id == 99);
    assert_int_equal(r->n_seqs, 2);
    assert_int_equal(r->seqs[0].token, 500);
    assert_int_equal(r->seqs[1].token, -1);
    assert_int_equal(r->seqs[1].status, LKV_ERR_TOOLONG);
    assert_int_equal(r->n_moves_done, 2);
    assert_true(r->moves_done[1] == 1001);
    assert_int_equal(r->n_moves_failed, 1);
    assert_true(r->step_ns == 123456789);
    assert_true(r->bytes_d2h == (1ll << 40));
    lkv_wire_msg_release(&d);
}

static void wire_fast_step_decoder_matches_general(void **state)
{
    lkv_wire_msg_t m, d;
    lkv_wire_buf_t b;
    int32_t        toks[] = {7, -3, 1 << 30};
    lkv_plan_seq_t seq    = {.seq_id = 1ull << 40, .n_tokens = 3,
                             .tokens = toks, .pos0 = 5, .sample = true,
                             .sampling = {0.5f, 3, 0.25f, 99}};
    uint64_t       fin[]  = {1, 2};

    (void)state;
    lkv_wire_buf_init(&b);
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_PLAN);
    m.u.step_plan = (lkv_step_plan_t){.step_id = 7, .n_seqs = 1, .seqs = &seq,
                                      .n_finished = 2, .finished = fin};
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    expect_fast_equals_general(b.data, b.len);

    /* hand-built: map16 keys in odd order, int encodings of every width,
     * float32, nil = absent, unknown nested key, non-string key */
    begin(9);
    lkv_wire_w_str(&B, "moves");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 8);
    lkv_wire_w_u64(&B, 1ull << 33); /* uint64 */
    lkv_wire_w_u64(&B, 300);        /* uint16 */
    lkv_wire_w_i64(&B, 2);
    lkv_wire_w_u64(&B, 1);
    lkv_wire_w_u64(&B, 0);
    lkv_wire_w_u64(&B, 1);
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, 70000); /* uint32 */
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 2);
    kv_str("type", "step_plan");
    lkv_wire_w_str(&B, "future");
    lkv_wire_w_map(&B, 1);
    lkv_wire_w_str(&B, "x");
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_f64(&B, 1.5);
    lkv_wire_w_nil(&B);
    lkv_wire_w_str(&B, "bin?");
    lkv_wire_w_i64(&B, 9);
    lkv_wire_w_str(&B, "appends");
    lkv_wire_w_nil(&B);
    kv_i64("step_id", 12);
    lkv_wire_w_str(&B, "seqs");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 8);
    lkv_wire_w_u64(&B, 3);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_bool(&B, false);
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, -200000); /* int32 */
    lkv_wire_w_i64(&B, -5);      /* negative fixint */
    {
        const uint8_t f32[5] = {0xca, 0x3f, 0x00, 0x00, 0x00}; /* 0.5f */

        wire_buf_append(&B, f32, sizeof(f32)); /* temperature as float32 */
    }
    lkv_wire_w_i64(&B, -1);
    lkv_wire_w_i64(&B, 1); /* top_p as an integer */
    lkv_wire_w_u64(&B, 0);
    kv_i64("v", 1);
    lkv_wire_w_i64(&B, 5); /* non-string key */
    lkv_wire_w_str(&B, "ignored");
    expect_fast_equals_general(B.data, B.len);
    assert_int_equal(dec(&d), LKV_OK); /* client limits too */
    assert_int_equal(d.u.step_plan.n_moves, 1);
    assert_int_equal(d.u.step_plan.moves[0].src[0], 70000);
    assert_int_equal(d.u.step_plan.seqs[0].tokens[0], -200000);
    assert_true(d.u.step_plan.seqs[0].sampling.top_p == 1.0f);
    assert_true(d.u.step_plan.seqs[0].sampling.temperature == 0.5f);
    assert_int_equal(d.u.step_plan.n_appends, 0);
    lkv_wire_msg_release(&d);

    /* step_result */
    lkv_result_seq_t rs[2] = {{1, -1, -3}, {2, 5, 0}};
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_RESULT);
    m.u.step_result = (lkv_step_result_t){.step_id = 4, .status = -1,
                                          .n_seqs = 2, .seqs = rs,
                                          .n_moves_done = 2, .moves_done = fin,
                                          .step_ns = 5, .bytes_h2d = 1};
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    expect_fast_equals_general(b.data, b.len);

    /* fast path declines what it must not decide: errors stay precise */
    lkv_wire_limits_t lim = lkv_wire_limits_internal();
    head(1, "step_plan"); /* no step_id */
    memset(&d, 0, sizeof(d));
    assert_false(wire_fast_decode(B.data, B.len, &d));
    assert_null(d.arena);
    head(1, "health");
    kv_i64("id", 1);
    assert_false(wire_fast_decode(B.data, B.len, &d));
    assert_int_equal(lkv_wire_decode(B.data, B.len, &lim, &d), LKV_OK);
    lkv_wire_msg_release(&d);
    lkv_wire_buf_free(&b);
}

static void wire_unknown_fields_and_nil_ignored(void **state)
{
    lkv_wire_msg_t d;

    (void)state;
    head(5, "submit");
    kv_str("id", "x");
    kv_str("prompt", "hi");
    lkv_wire_w_str(&B, "future_field");
    lkv_wire_w_map(&B, 1);
    lkv_wire_w_str(&B, "nested");
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_nil(&B);
    lkv_wire_w_f64(&B, 1.0);
    lkv_wire_w_str(&B, "max_tokens");
    lkv_wire_w_nil(&B); /* nil = absent -> default */
    lkv_wire_w_i64(&B, 5); /* non-string key: ignored */
    lkv_wire_w_i64(&B, 5);
    assert_int_equal(dec(&d), LKV_OK);
    assert_int_equal(d.u.submit.max_tokens, 64);
    assert_string_equal(d.u.submit.prompt, "hi");
    lkv_wire_msg_release(&d);
}

/* ---- malformed frames ---- */

static void wire_garbage_frames_rejected(void **state)
{
    lkv_wire_msg_t m;
    const uint8_t  c1[]       = {0xc1};
    const uint8_t  arr[]      = {0x91, 0x01};
    const uint8_t  arr32[]    = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t  map32[]    = {0xdf, 0xff, 0xff, 0xff, 0xff};
    const uint8_t  str32[]    = {0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff};
    const uint8_t  bin32[]    = {0x81, 0xa1, 'x', 0xc6, 0x00, 0x10, 0x00, 0x00};
    const uint8_t  ext32[]    = {0x81, 0xa1, 'x', 0xc9, 0x00, 0x00, 0x10, 0x00, 0x01};
    const uint8_t  arr16[]    = {0x81, 0xa1, 'x', 0xdc, 0x10, 0x00, 0x01};
    const uint8_t  trunc_u64[] = {0x81, 0xa1, 'v', 0xcf, 0x00, 0x01};
    const uint8_t  fix_int[]  = {0x05};

    (void)state;
    assert_int_equal(dec_bytes(NULL, 0, &m), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "empty"));
    assert_int_equal(dec_bytes(c1, sizeof(c1), &m), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "0xc1"));
    assert_int_equal(dec_bytes(arr, sizeof(arr), &m), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "map"));
    assert_int_equal(dec_bytes(fix_int, sizeof(fix_int), &m),
                     LKV_ERR_PROTOCOL);
    /* declared counts far beyond the bytes: refused before any allocation */
    assert_int_equal(dec_bytes(arr32, sizeof(arr32), &m), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "array"));
    assert_int_equal(dec_bytes(map32, sizeof(map32), &m), LKV_ERR_PROTOCOL);
    assert_int_equal(dec_bytes(str32, sizeof(str32), &m), LKV_ERR_PROTOCOL);
    assert_int_equal(dec_bytes(bin32, sizeof(bin32), &m), LKV_ERR_PROTOCOL);
    assert_int_equal(dec_bytes(ext32, sizeof(ext32), &m), LKV_ERR_PROTOCOL);
    assert_int_equal(dec_bytes(arr16, sizeof(arr16), &m), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "remain"));
    assert_int_equal(dec_bytes(trunc_u64, sizeof(trunc_u64), &m),
                     LKV_ERR_PROTOCOL);
}

static void wire_truncations_and_trailing_rejected(void **state)
{
    lkv_wire_msg_t m, d;
    lkv_wire_buf_t b;
    int32_t        toks[] = {1, 2, 3};

    (void)state;
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    lkv_wire_id_set_uint(&m.id, 1);
    m.u.submit.tokens   = toks;
    m.u.submit.n_tokens = 3;
    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    for (size_t n = 0; n < b.len; n++) {
        assert_int_equal(dec_bytes(b.data, n, &d), LKV_ERR_PROTOCOL);
    }
    uint8_t *longer = malloc(b.len + 1);
    memcpy(longer, b.data, b.len);
    longer[b.len] = 0x00;
    assert_int_equal(dec_bytes(longer, b.len + 1, &d), LKV_ERR_PROTOCOL);
    assert_non_null(strstr(d.err, "trailing"));
    free(longer);
    lkv_wire_buf_free(&b);
}

static void wire_limits_enforced(void **state)
{
    lkv_wire_msg_t    m;
    lkv_wire_limits_t lim = lkv_wire_limits_client();
    uint8_t           deep[40];
    int               n = 0;

    (void)state;
    /* nesting: 16 levels pass the scanner, 17 do not */
    for (int i = 0; i < 15; i++) {
        deep[n++] = 0x91; /* array of 1 */
    }
    deep[n++] = 0x90; /* 16th level: empty array */
    assert_int_equal(lkv_wire_scan(deep, (size_t)n, &lim, NULL, 0), LKV_OK);
    n = 0;
    for (int i = 0; i < 16; i++) {
        deep[n++] = 0x91;
    }
    deep[n++] = 0x90;
    char err[128];
    assert_int_equal(lkv_wire_scan(deep, (size_t)n, &lim, err, sizeof(err)),
                     LKV_ERR_PROTOCOL);
    assert_non_null(strstr(err, "nesting"));

    /* frame size */
    lim.max_frame_bytes = 8;
    head(1, "health");
    kv_i64("id", 1);
    assert_int_equal(lkv_wire_decode(B.data, B.len, &lim, &m),
                     LKV_ERR_PROTOCOL);
    assert_non_null(strstr(m.err, "exceeds"));

    /* array length cap */
    lim = lkv_wire_limits_client();
    lim.max_array_len = 4;
    head(2, "submit");
    kv_i64("id", 1);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 5);
    for (int i = 0; i < 5; i++) {
        lkv_wire_w_i64(&B, i);
    }
    assert_int_equal(lkv_wire_decode(B.data, B.len, &lim, &m),
                     LKV_ERR_PROTOCOL);

    /* string length cap */
    lim = lkv_wire_limits_client();
    lim.max_str_bytes = 3;
    head(1, "cancel");
    kv_str("id", "abcdef");
    assert_int_equal(lkv_wire_decode(B.data, B.len, &lim, &m),
                     LKV_ERR_PROTOCOL);

    /* object count cap */
    lim = lkv_wire_limits_client();
    lim.max_objects = 5;
    head(1, "cancel");
    kv_i64("id", 1);
    assert_int_equal(lkv_wire_decode(B.data, B.len, &lim, &m),
                     LKV_ERR_PROTOCOL);

    /* map entries cap (client: 64) */
    head(63, "health");
    for (int i = 0; i < 63; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        kv_i64(k, i);
    }
    assert_int_equal(dec(&m), LKV_ERR_PROTOCOL);
}

static void wire_envelope_errors(void **state)
{
    lkv_wire_msg_t m;

    (void)state;
    begin(1); /* no v */
    kv_str("type", "health");
    expect_fail(LKV_ERR_PROTOCOL, "'v'");

    head(0, "health"); /* fine */
    assert_int_equal(dec(&m), LKV_OK);
    lkv_wire_msg_release(&m);

    begin(2); /* v = 2 */
    kv_i64("v", 2);
    kv_str("type", "health");
    expect_fail(LKV_ERR_UNSUPPORTED, "version 2");

    begin(1); /* no type */
    kv_i64("v", 1);
    expect_fail(LKV_ERR_INVALID, "'type'");

    begin(2); /* type not a string */
    kv_i64("v", 1);
    kv_i64("type", 3);
    expect_fail(LKV_ERR_INVALID, "'type'");

    head(1, "teleport"); /* unknown type: id still reported */
    kv_i64("id", 5);
    assert_int_equal(dec(&m), LKV_ERR_UNSUPPORTED);
    assert_non_null(strstr(m.err, "teleport"));
    assert_int_equal(m.id.kind, LKV_WIRE_ID_UINT);
    assert_true(m.id.u == 5);

    head(1, "health"); /* duplicate key */
    kv_i64("v", 1);
    expect_fail(LKV_ERR_PROTOCOL, "duplicate");
}

static void wire_submit_field_errors_named(void **state)
{
    lkv_wire_msg_t m;

    (void)state;
    head(1, "submit");
    kv_str("prompt", "x");
    expect_fail(LKV_ERR_INVALID, "'id'");

    head(2, "submit");
    kv_f64("id", 1.5);
    kv_str("prompt", "x");
    expect_fail(LKV_ERR_INVALID, "'id'");

    head(2, "submit");
    kv_i64("id", -3);
    kv_str("prompt", "x");
    expect_fail(LKV_ERR_INVALID, "'id'");

    head(2, "submit");
    kv_str("id", "");
    kv_str("prompt", "x");
    expect_fail(LKV_ERR_INVALID, "'id'");

    head(2, "submit");
    kv_str("id", "0123456789012345678901234567890123456789012345678901234567890123X");
    kv_str("prompt", "x");
    expect_fail(LKV_ERR_INVALID, "'id'");

    head(1, "submit"); /* neither prompt nor tokens */
    kv_i64("id", 1);
    expect_fail(LKV_ERR_INVALID, "exactly one");

    head(3, "submit"); /* both */
    kv_i64("id", 1);
    kv_str("prompt", "x");
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_i64(&B, 1);
    expect_fail(LKV_ERR_INVALID, "exactly one");

    head(2, "submit");
    kv_i64("id", 1);
    kv_str("tokens", "oops");
    expect_fail(LKV_ERR_INVALID, "tokens");

    head(2, "submit");
    kv_i64("id", 1);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_str(&B, "two");
    expect_fail(LKV_ERR_INVALID, "tokens'[1]");

    head(2, "submit");
    kv_i64("id", 1);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_i64(&B, -5);
    expect_fail(LKV_ERR_INVALID, "out of range");

    head(2, "submit");
    kv_i64("id", 1);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_i64(&B, 1ll << 40);
    expect_fail(LKV_ERR_INVALID, "out of range");

    head(2, "submit");
    kv_i64("id", 1);
    lkv_wire_w_str(&B, "tokens");
    lkv_wire_w_array(&B, 0);
    expect_fail(LKV_ERR_INVALID, "empty");

    head(2, "submit");
    kv_i64("id", 1);
    kv_str("prompt", "bad \xff\xfe utf8");
    expect_fail(LKV_ERR_FORMAT, "UTF-8");

    head(2, "submit");
    kv_i64("id", 1);
    kv_str("prompt", "overlong \xc0\xaf");
    expect_fail(LKV_ERR_FORMAT, "UTF-8");

    static const struct {
        const char *key;
        int         is_float;
        double      val;
    } bad[] = {
        {"max_tokens", 0, 0},        {"max_tokens", 0, 65537},
        {"max_tokens", 1, 3.5},      {"temperature", 1, -1},
        {"temperature", 1, 101},     {"temperature", 1, 0.0 / 0.0},
        {"top_k", 0, -1},            {"top_p", 1, 0},
        {"top_p", 1, 1.5},           {"ttft_slo_ms", 1, -5},
        {"tpot_slo_ms", 1, 1e300},   {"seed", 0, -1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        head(3, "submit");
        kv_i64("id", 77);
        kv_str("prompt", "x");
        if (bad[i].is_float) {
            kv_f64(bad[i].key, bad[i].val);
        } else {
            kv_i64(bad[i].key, (int64_t)bad[i].val);
        }
        assert_int_equal(dec(&m), LKV_ERR_INVALID);
        assert_non_null(strstr(m.err, bad[i].key));
        /* the id survives so the server can address its error reply */
        assert_int_equal(m.id.kind, LKV_WIRE_ID_UINT);
        assert_true(m.id.u == 77);
        assert_int_equal(m.type, LKV_WIRE_SUBMIT);
    }

    head(3, "submit");
    kv_i64("id", 1);
    kv_str("prompt", "x");
    kv_str("stream", "yes");
    expect_fail(LKV_ERR_INVALID, "stream");

    head(3, "submit");
    kv_i64("id", 1);
    kv_str("prompt", "x");
    kv_str("temperature", "hot");
    expect_fail(LKV_ERR_INVALID, "temperature");

    head(3, "submit"); /* 65 stop ids */
    kv_i64("id", 1);
    kv_str("prompt", "x");
    lkv_wire_w_str(&B, "stop_ids");
    lkv_wire_w_array(&B, 65);
    for (int i = 0; i < 65; i++) {
        lkv_wire_w_i64(&B, i);
    }
    expect_fail(LKV_ERR_INVALID, "stop_ids");

    head(0, "cancel");
    expect_fail(LKV_ERR_INVALID, "'id'");
}

static void wire_reply_field_errors_named(void **state)
{
    (void)state;
    head(2, "done");
    kv_i64("id", 1);
    kv_str("finish_reason", "bored");
    expect_fail(LKV_ERR_INVALID, "finish_reason");

    head(1, "done");
    kv_i64("id", 1);
    expect_fail(LKV_ERR_INVALID, "finish_reason");

    head(1, "error");
    kv_str("message", "x");
    expect_fail(LKV_ERR_INVALID, "'code'");

    head(1, "error");
    kv_i64("code", 5);
    expect_fail(LKV_ERR_INVALID, "code");

    head(2, "token");
    kv_i64("id", 1);
    kv_i64("token", 3);
    expect_fail(LKV_ERR_INVALID, "index");

    head(1, "stats_reply");
    kv_i64("stats", 3);
    expect_fail(LKV_ERR_INVALID, "stats");

    head(0, "hello");
    expect_fail(LKV_ERR_INVALID, "rank");

    head(0, "config");
    expect_fail(LKV_ERR_INVALID, "model");
}

static void wire_step_plan_errors_named(void **state)
{
    (void)state;
    head(0, "step_plan");
    expect_fail(LKV_ERR_INVALID, "step_id");

    head(2, "step_plan"); /* move tuple too short */
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "moves");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 1);
    expect_fail(LKV_ERR_INVALID, "moves[0]");

    head(2, "step_plan"); /* src/dst length mismatch */
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "moves");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 8);
    for (int i = 0; i < 6; i++) {
        lkv_wire_w_i64(&B, 0);
    }
    lkv_wire_w_array(&B, 2);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 2);
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_i64(&B, 3);
    expect_fail(LKV_ERR_INVALID, "dst has 1");

    head(2, "step_plan"); /* tier 3 */
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "appends");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 4);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_i64(&B, 3);
    lkv_wire_w_array(&B, 0);
    expect_fail(LKV_ERR_INVALID, "appends[0]");

    head(2, "step_plan"); /* negative block index */
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "appends");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 4);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_i64(&B, -1);
    expect_fail(LKV_ERR_INVALID, "appends[0][3]");

    head(2, "step_plan"); /* seq tuple with wrong element type */
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "seqs");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 8);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_i64(&B, 1); /* sample must be bool */
    lkv_wire_w_array(&B, 0);
    lkv_wire_w_f64(&B, 0);
    lkv_wire_w_i64(&B, 0);
    lkv_wire_w_f64(&B, 1);
    lkv_wire_w_i64(&B, 0);
    expect_fail(LKV_ERR_INVALID, "sample");

    head(2, "step_result");
    kv_i64("step_id", 1);
    lkv_wire_w_str(&B, "seqs");
    lkv_wire_w_array(&B, 1);
    lkv_wire_w_array(&B, 3);
    lkv_wire_w_i64(&B, 1);
    lkv_wire_w_i64(&B, -2);
    lkv_wire_w_i64(&B, 0);
    expect_fail(LKV_ERR_INVALID, "seqs[0]");
}

static void wire_encoder_rejects_bad_messages(void **state)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;
    int32_t        t = 1;

    (void)state;
    lkv_wire_buf_init(&b);
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    lkv_wire_id_set_uint(&m.id, 1);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID); /* neither */
    m.u.submit.prompt   = "x";
    m.u.submit.tokens   = &t;
    m.u.submit.n_tokens = 1;
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID); /* both */
    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID); /* no id */
    lkv_wire_msg_init(&m, LKV_WIRE_NONE);
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID);
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_PLAN);
    m.u.step_plan.n_seqs = 3; /* NULL array */
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_ERR_INVALID);
    assert_int_equal(lkv_wire_id_set_str(&m.id, "", 0), LKV_ERR_INVALID);
    assert_int_equal(lkv_wire_id_set_str(&m.id, "a\0b", 3), LKV_ERR_INVALID);
    lkv_wire_buf_free(&b);
}

/* Mutate valid encodings byte by byte: every outcome is a status, never a
 * crash or leak (ASan build), and accepted mutants re-encode. */
static void wire_mutations_never_crash(void **state)
{
    lkv_wire_msg_t m, d;
    lkv_wire_buf_t b, b2;
    int32_t        toks[] = {1, 2, 3, 4, 5};
    uint32_t       rng    = 12345;
    int            ok = 0, bad = 0;

    (void)state;
    lkv_wire_buf_init(&b);
    lkv_wire_buf_init(&b2);
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    lkv_wire_id_set_str(&m.id, "mut", 3);
    m.u.submit.tokens   = toks;
    m.u.submit.n_tokens = 5;
    m.u.submit.has_seed = true;
    m.u.submit.seed     = 7;
    assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    uint8_t *work = malloc(b.len);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(work, b.data, b.len);
        int flips = 1 + (int)(rng % 3);
        for (int f = 0; f < flips; f++) {
            rng           = rng * 1103515245u + 12345u;
            size_t pos    = (rng >> 8) % b.len;
            rng           = rng * 1103515245u + 12345u;
            work[pos]     = (uint8_t)(rng >> 16);
        }
        rng = rng * 1103515245u + 12345u;
        size_t len = b.len - ((rng >> 8) % 4 == 0 ? (rng >> 12) % b.len : 0);
        if (lkv_wire_decode(work, len, NULL, &d) == LKV_OK) {
            ok++;
            assert_int_equal(lkv_wire_encode(&d, &b2), LKV_OK);
            lkv_wire_msg_release(&d);
        } else {
            bad++;
            assert_true(d.err[0] != '\0');
        }
    }
    assert_true(ok > 0 && bad > 0);
    free(work);
    lkv_wire_buf_free(&b);
    lkv_wire_buf_free(&b2);
}

/* Per-step codec cost of a 64-sequence decode plan with block appends and
 * offloads (printed; correctness asserted). */
static void wire_step_plan_codec_speed(void **state)
{
    enum { N_SEQ = 64, N_MOVE = 32, ITERS = 500 };
    lkv_plan_seq_t    seqs[N_SEQ];
    lkv_plan_append_t app[N_SEQ];
    lkv_plan_move_t   mv[N_MOVE];
    int32_t           tok[N_SEQ], blocks[N_SEQ][4], src[8], dst[8];
    lkv_wire_msg_t    m, d;
    lkv_wire_buf_t    b;
    lkv_wire_limits_t lim = lkv_wire_limits_internal();

    (void)state;
    for (int i = 0; i < 8; i++) {
        src[i] = i;
        dst[i] = 100 + i;
    }
    for (int i = 0; i < N_SEQ; i++) {
        tok[i] = 1000 + i;
        for (int k = 0; k < 4; k++) {
            blocks[i][k] = i * 4 + k;
        }
        seqs[i] = (lkv_plan_seq_t){.seq_id = (uint64_t)i, .n_tokens = 1,
                                   .tokens = &tok[i], .pos0 = 100 + i,
                                   .sample = true,
                                   .sampling = {0.0f, 0, 1.0f, (uint64_t)i}};
        app[i]  = (lkv_plan_append_t){.seq_id = (uint64_t)i, .layer = i % 8,
                                      .tier = 0, .n_blocks = 4,
                                      .blocks = blocks[i]};
    }
    for (int i = 0; i < N_MOVE; i++) {
        mv[i] = (lkv_plan_move_t){.move_id = (uint64_t)i, .seq_id = (uint64_t)i,
                                  .layer = i % 8, .kind = 0, .src_tier = 0,
                                  .dst_tier = 1, .n_blocks = 8, .src = src,
                                  .dst = dst};
    }
    lkv_wire_msg_init(&m, LKV_WIRE_STEP_PLAN);
    m.u.step_plan = (lkv_step_plan_t){.step_id = 1, .n_seqs = N_SEQ,
                                      .seqs = seqs, .n_appends = N_SEQ,
                                      .appends = app, .n_moves = N_MOVE,
                                      .moves = mv};
    lkv_wire_buf_init(&b);
    int64_t t0 = lkv_now_ns();
    for (int i = 0; i < ITERS; i++) {
        assert_int_equal(lkv_wire_encode(&m, &b), LKV_OK);
    }
    int64_t t1 = lkv_now_ns();
    for (int i = 0; i < ITERS; i++) {
        assert_int_equal(lkv_wire_decode(b.data, b.len, &lim, &d), LKV_OK);
        if (i + 1 < ITERS) {
            lkv_wire_msg_release(&d);
        }
    }
    int64_t t2 = lkv_now_ns();
    assert_int_equal(d.u.step_plan.n_seqs, N_SEQ);
    assert_int_equal(d.u.step_plan.moves[N_MOVE - 1].dst[7], 107);
    assert_int_equal(d.u.step_plan.appends[N_SEQ - 1].blocks[3], 255);
    lkv_wire_msg_release(&d);
    printf("step_plan (%d seqs, %d appends, %d moves): %zu bytes, encode "
           "%.1f us, decode %.1f us\n",
           N_SEQ, N_SEQ, N_MOVE, b.len, (double)(t1 - t0) / ITERS / 1e3,
           (double)(t2 - t1) / ITERS / 1e3);
    lkv_wire_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wire_submit_prompt_round_trips),
        cmocka_unit_test(wire_submit_tokens_defaults_filled),
        cmocka_unit_test(wire_small_messages_round_trip),
        cmocka_unit_test(wire_done_and_error_round_trip),
        cmocka_unit_test(wire_health_and_stats_reply_round_trip),
        cmocka_unit_test(wire_hello_config_round_trip),
        cmocka_unit_test(wire_step_plan_round_trips),
        cmocka_unit_test(wire_step_result_round_trips),
        cmocka_unit_test(wire_fast_step_decoder_matches_general),
        cmocka_unit_test(wire_unknown_fields_and_nil_ignored),
        cmocka_unit_test(wire_garbage_frames_rejected),
        cmocka_unit_test(wire_truncations_and_trailing_rejected),
        cmocka_unit_test(wire_limits_enforced),
        cmocka_unit_test(wire_envelope_errors),
        cmocka_unit_test(wire_submit_field_errors_named),
        cmocka_unit_test(wire_reply_field_errors_named),
        cmocka_unit_test(wire_step_plan_errors_named),
        cmocka_unit_test(wire_encoder_rejects_bad_messages),
        cmocka_unit_test(wire_mutations_never_crash),
        cmocka_unit_test(wire_step_plan_codec_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
