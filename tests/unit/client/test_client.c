/* test_client.c - liblayerkv against a real in-test ZeroMQ ROUTER peer that
 * speaks docs/protocol.md: streaming, cancel, error replies, a vanished
 * server (timeout), concurrent submits from 4 threads, health/stats, close
 * with pending requests, malformed server replies.
 *
 * Threading: each test runs a fake server thread (its own context and
 * ROUTER on tcp://127.0.0.1:ephemeral); client callbacks run on the client's
 * I/O thread and write per-request state that the test reads after
 * lkv_client_wait (which synchronises through the client's mutex).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "common/clock.h"
#include "layerkv/client.h"
#include "transport/wire.h"
#include "transport/zmq_util.h"

/* ---- fake server ---- */

#define MAX_SLOW 64

typedef struct {
    bool           active;
    lkv_zmq_peer_t peer;
    lkv_wire_id_t  id;
    int            next;
    int64_t        next_ns;
} slow_t;

typedef struct {
    void       *ctx;
    void       *router;
    char        ep[128];
    pthread_t   th;
    atomic_bool stop;
    atomic_int  n_submits;
    atomic_int  n_cancels;
    atomic_int  n_bad;
    bool        answer_health;
    slow_t      slow[MAX_SLOW];
} fake_t;

static void srv_send(fake_t *f, const lkv_zmq_peer_t *p, lkv_wire_msg_t *m)
{
    lkv_wire_buf_t b;

    lkv_wire_buf_init(&b);
    assert_int_equal(lkv_wire_encode(m, &b), LKV_OK);
    (void)lkv_zmq_router_send(f->router, p, b.data, b.len, false);
    lkv_wire_buf_free(&b);
}

static void srv_token(fake_t *f, const lkv_zmq_peer_t *p,
                      const lkv_wire_id_t *id, int i)
{
    lkv_wire_msg_t m;
    char           text[16];

    lkv_wire_msg_init(&m, LKV_WIRE_TOKEN);
    m.id = *id;
    snprintf(text, sizeof(text), "t%d ", i);
    m.u.token.index    = (uint32_t)i;
    m.u.token.token    = 100 + i;
    m.u.token.text     = text;
    m.u.token.text_len = (uint32_t)strlen(text);
    srv_send(f, p, &m);
}

static void srv_accepted(fake_t *f, const lkv_zmq_peer_t *p,
                         const lkv_wire_id_t *id)
{
    lkv_wire_msg_t m;

    lkv_wire_msg_init(&m, LKV_WIRE_ACCEPTED);
    m.id                         = *id;
    m.u.accepted.n_prompt_tokens = 4;
    srv_send(f, p, &m);
}

static void srv_done(fake_t *f, const lkv_zmq_peer_t *p,
                     const lkv_wire_id_t *id, lkv_wire_finish_t why, int n)
{
    lkv_wire_msg_t m;

    lkv_wire_msg_init(&m, LKV_WIRE_DONE);
    m.id                     = *id;
    m.u.done.finish_reason   = (uint8_t)why;
    m.u.done.n_prompt_tokens = 4;
    m.u.done.n_tokens        = (uint32_t)n;
    m.u.done.ttft_ms         = 1.5;
    m.u.done.tpot_ms         = 0.25;
    m.u.done.queue_ms        = 0.5;
    if (why == LKV_WIRE_FINISH_ERROR) {
        m.u.done.error_code    = LKV_ERR_DEVICE;
        m.u.done.error_message = "device lost: restart the worker";
    }
    srv_send(f, p, &m);
}

static void srv_submit(fake_t *f, const lkv_zmq_peer_t *p, lkv_wire_msg_t *m)
{
    const char *prompt = m->u.submit.prompt != NULL ? m->u.submit.prompt : "";

    atomic_fetch_add(&f->n_submits, 1);
    if (strcmp(prompt, "reject") == 0) {
        lkv_wire_buf_t b;

        lkv_wire_buf_init(&b);
        lkv_wire_encode_error(&m->id, LKV_ERR_REJECTED,
                              "ttft slo cannot be met: retry later", 500, &b);
        lkv_zmq_router_send(f->router, p, b.data, b.len, false);
        lkv_wire_buf_free(&b);
    } else if (strcmp(prompt, "nilerr") == 0) {
        lkv_wire_buf_t b;

        lkv_wire_buf_init(&b);
        lkv_wire_encode_error(NULL, LKV_ERR_PROTOCOL, "cannot read that", -1,
                              &b);
        lkv_zmq_router_send(f->router, p, b.data, b.len, false);
        lkv_wire_buf_free(&b);
    } else if (strcmp(prompt, "fail") == 0) {
        srv_accepted(f, p, &m->id);
        srv_token(f, p, &m->id, 0);
        srv_done(f, p, &m->id, LKV_WIRE_FINISH_ERROR, 1);
    } else if (strcmp(prompt, "garbage") == 0) {
        lkv_wire_buf_t b;

        srv_accepted(f, p, &m->id);
        lkv_wire_buf_init(&b);
        lkv_wire_w_map(&b, 4);
        lkv_wire_w_str(&b, "v");
        lkv_wire_w_i64(&b, 1);
        lkv_wire_w_str(&b, "type");
        lkv_wire_w_str(&b, "token");
        lkv_wire_w_str(&b, "id");
        lkv_wire_w_u64(&b, m->id.u);
        lkv_wire_w_str(&b, "index");
        lkv_wire_w_str(&b, "not a number");
        lkv_zmq_router_send(f->router, p, b.data, b.len, false);
        lkv_wire_buf_free(&b);
    } else if (strcmp(prompt, "mute") == 0) {
        srv_accepted(f, p, &m->id);
    } else if (strcmp(prompt, "slow") == 0) {
        srv_accepted(f, p, &m->id);
        for (int i = 0; i < MAX_SLOW; i++) {
            if (!f->slow[i].active) {
                f->slow[i] = (slow_t){.active = true, .peer = *p, .id = m->id,
                                      .next = 0, .next_ns = lkv_now_ns()};
                break;
            }
        }
    } else {
        int n = m->u.submit.max_tokens;

        srv_accepted(f, p, &m->id);
        for (int i = 0; i < n; i++) {
            srv_token(f, p, &m->id, i);
        }
        srv_done(f, p, &m->id, LKV_WIRE_FINISH_LENGTH, n);
    }
}

static void srv_handle(fake_t *f, const lkv_zmq_peer_t *p, const void *data,
                       size_t len)
{
    lkv_wire_msg_t m;
    lkv_status_t   st = lkv_wire_decode(data, len, NULL, &m);

    if (st != LKV_OK) {
        lkv_wire_buf_t b;

        atomic_fetch_add(&f->n_bad, 1);
        lkv_wire_buf_init(&b);
        lkv_wire_encode_error(&m.id, st, m.err, -1, &b);
        lkv_zmq_router_send(f->router, p, b.data, b.len, false);
        lkv_wire_buf_free(&b);
        return;
    }
    switch (m.type) {
    case LKV_WIRE_SUBMIT:
        srv_submit(f, p, &m);
        break;
    case LKV_WIRE_CANCEL: {
        bool found = false;

        atomic_fetch_add(&f->n_cancels, 1);
        for (int i = 0; i < MAX_SLOW; i++) {
            if (f->slow[i].active && lkv_wire_id_equal(&f->slow[i].id, &m.id)) {
                f->slow[i].active = false;
                srv_done(f, p, &m.id, LKV_WIRE_FINISH_CANCELLED,
                         f->slow[i].next);
                found = true;
            }
        }
        if (!found) {
            lkv_wire_buf_t b;

            lkv_wire_buf_init(&b);
            lkv_wire_encode_error(&m.id, LKV_ERR_NOTFOUND, "no such request",
                                  -1, &b);
            lkv_zmq_router_send(f->router, p, b.data, b.len, false);
            lkv_wire_buf_free(&b);
        }
        break;
    }
    case LKV_WIRE_HEALTH:
        if (f->answer_health) {
            lkv_wire_msg_t r;

            lkv_wire_msg_init(&r, LKV_WIRE_HEALTH_REPLY);
            r.id                      = m.id;
            r.u.health_reply.status   = "ok";
            r.u.health_reply.model    = "fake-model";
            r.u.health_reply.version  = "layerkv 0.1.0";
            r.u.health_reply.uptime_s = 12.5;
            r.u.health_reply.n_running = 3;
            srv_send(f, p, &r);
        }
        break;
    case LKV_WIRE_STATS: {
        lkv_wire_msg_t r;
        lkv_wire_buf_t s;

        lkv_wire_buf_init(&s);
        lkv_wire_w_map(&s, 2);
        lkv_wire_w_str(&s, "n_running");
        lkv_wire_w_u64(&s, 3);
        lkv_wire_w_str(&s, "kv_blocks_used");
        lkv_wire_w_map(&s, 1);
        lkv_wire_w_str(&s, "device");
        lkv_wire_w_u64(&s, 17);
        lkv_wire_msg_init(&r, LKV_WIRE_STATS_REPLY);
        r.id                          = m.id;
        r.u.stats_reply.stats_mp     = s.data;
        r.u.stats_reply.stats_mp_len = s.len;
        srv_send(f, p, &r);
        lkv_wire_buf_free(&s);
        break;
    }
    default:
        break;
    }
    lkv_wire_msg_release(&m);
}

static void *srv_main(void *arg)
{
    fake_t *f = arg;

    while (!atomic_load(&f->stop)) {
        if (lkv_zmq_wait_readable(f->router, 5) == LKV_OK) {
            for (;;) {
                lkv_zmq_peer_t  p;
                lkv_zmq_frame_t fr;
                lkv_status_t st = lkv_zmq_router_recv(f->router, &p, &fr, true);

                if (st == LKV_AGAIN) {
                    break;
                }
                if (st != LKV_OK) {
                    continue;
                }
                srv_handle(f, &p, lkv_zmq_frame_data(&fr),
                           lkv_zmq_frame_size(&fr));
                lkv_zmq_frame_close(&fr);
            }
        }
        int64_t now = lkv_now_ns();
        for (int i = 0; i < MAX_SLOW; i++) {
            slow_t *s = &f->slow[i];

            if (s->active && now >= s->next_ns) {
                srv_token(f, &s->peer, &s->id, s->next++);
                s->next_ns = now + 20 * 1000000LL;
            }
        }
    }
    return NULL;
}

static fake_t *fake_start(bool answer_health)
{
    fake_t        *f = calloc(1, sizeof(*f));
    lkv_zmq_opts_t o = lkv_zmq_opts_default();

    f->answer_health = answer_health;
    assert_int_equal(lkv_zmq_ctx_create(&f->ctx), LKV_OK);
    o.router_mandatory = true;
    assert_int_equal(lkv_zmq_socket(f->ctx, ZMQ_ROUTER, &o, &f->router),
                     LKV_OK);
    assert_int_equal(lkv_zmq_bind(f->router, "tcp://127.0.0.1:*"), LKV_OK);
    assert_int_equal(lkv_zmq_last_endpoint(f->router, f->ep, sizeof(f->ep)),
                     LKV_OK);
    assert_int_equal(pthread_create(&f->th, NULL, srv_main, f), 0);
    return f;
}

static void fake_stop(fake_t **fp)
{
    fake_t *f = *fp;

    if (f == NULL) {
        return;
    }
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    lkv_zmq_close(&f->router);
    lkv_zmq_ctx_destroy(&f->ctx);
    free(f);
    *fp = NULL;
}

/* ---- client-side event collection ---- */

typedef struct {
    char                text[4096];
    size_t              text_len;
    int                 n_tokens;
    int                 last_index;
    bool                order_ok;
    int                 n_accepted;
    int                 n_terminal;
    lkv_client_event_t  term; /* copy of the terminal event (no pointers) */
    char                message[256];
    char                finish_reason[16];
    uint64_t            request;
    atomic_int          seen; /* tokens so far, readable from any thread */
} track_t;

static void track_init(track_t *t)
{
    memset(t, 0, sizeof(*t));
    atomic_init(&t->seen, 0);
    t->last_index = -1;
    t->order_ok   = true;
}

static void on_event(const lkv_client_event_t *ev, void *user)
{
    track_t *t = user;

    switch (ev->kind) {
    case LKV_CLIENT_EV_ACCEPTED:
        t->n_accepted++;
        break;
    case LKV_CLIENT_EV_TOKEN:
        if ((int)ev->index != t->last_index + 1) {
            t->order_ok = false;
        }
        t->last_index = (int)ev->index;
        t->n_tokens++;
        atomic_fetch_add(&t->seen, 1);
        if (t->text_len + ev->text_len < sizeof(t->text)) {
            memcpy(t->text + t->text_len, ev->text, ev->text_len);
            t->text_len += ev->text_len;
            t->text[t->text_len] = '\0';
        }
        break;
    case LKV_CLIENT_EV_DONE:
    case LKV_CLIENT_EV_ERROR:
        t->n_terminal++;
        t->term = *ev;
        snprintf(t->message, sizeof(t->message), "%s",
                 ev->message != NULL ? ev->message : "");
        snprintf(t->finish_reason, sizeof(t->finish_reason), "%s",
                 ev->finish_reason != NULL ? ev->finish_reason : "");
        t->term.message       = NULL;
        t->term.finish_reason = NULL;
        t->term.text          = NULL;
        break;
    }
}

static lkv_client_t *connect_to(const char *ep, int server_timeout_ms)
{
    lkv_client_t     *c;
    lkv_client_opts_t o = lkv_client_opts_default();

    o.server_timeout_ms = server_timeout_ms;
    o.ping_interval_ms  = 100;
    assert_int_equal(lkv_client_connect(ep, &o, &c), LKV_OK);
    return c;
}

static uint64_t submit_prompt(lkv_client_t *c, const char *prompt,
                              int max_tokens, track_t *t)
{
    lkv_client_request_t rq = lkv_client_request_default();
    uint64_t             id = 0;

    rq.prompt      = prompt;
    rq.max_tokens  = max_tokens;
    rq.temperature = 0;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, t, &id), LKV_OK);
    t->request = id;
    return id;
}

/* ---- tests ---- */

static void client_streams_tokens_in_order(void **state)
{
    fake_t       *f = fake_start(true);
    lkv_client_t *c = connect_to(f->ep, 5000);
    track_t       t;

    (void)state;
    track_init(&t);
    uint64_t id = submit_prompt(c, "hello", 12, &t);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(t.n_accepted, 1);
    assert_int_equal(t.n_tokens, 12);
    assert_true(t.order_ok);
    assert_string_equal(t.text, "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 ");
    assert_int_equal(t.n_terminal, 1);
    assert_int_equal(t.term.kind, LKV_CLIENT_EV_DONE);
    assert_int_equal(t.term.finish, LKV_CLIENT_FINISH_LENGTH);
    assert_string_equal(t.finish_reason, "length");
    assert_int_equal(t.term.n_tokens, 12);
    assert_int_equal(t.term.n_prompt_tokens, 4);
    assert_true(t.term.ttft_ms == 1.5 && t.term.tpot_ms == 0.25);
    assert_int_equal(t.term.status, LKV_OK);
    assert_int_equal(lkv_client_pending(c), 0);
    /* a finished request cannot be cancelled */
    assert_int_equal(lkv_client_cancel(c, id), LKV_ERR_NOTFOUND);
    lkv_client_close(&c);
    assert_null(c);
    assert_int_equal(atomic_load(&f->n_bad), 0);
    fake_stop(&f);
}

static void client_cancel_ends_with_cancelled(void **state)
{
    fake_t       *f = fake_start(true);
    lkv_client_t *c = connect_to(f->ep, 5000);
    track_t       t;

    (void)state;
    track_init(&t);
    uint64_t id = submit_prompt(c, "slow", 1000, &t);
    for (int i = 0; i < 1000 && atomic_load(&t.seen) < 2; i++) {
        lkv_sleep_ns(5 * 1000000LL); /* let a few tokens stream */
    }
    assert_int_equal(lkv_client_cancel(c, id), LKV_OK);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(t.n_terminal, 1);
    assert_int_equal(t.term.kind, LKV_CLIENT_EV_DONE);
    assert_int_equal(t.term.finish, LKV_CLIENT_FINISH_CANCELLED);
    assert_true(t.n_tokens >= 1);
    assert_true(t.order_ok);
    assert_int_equal(atomic_load(&f->n_cancels), 1);
    lkv_client_close(&c);
    fake_stop(&f);
}

static void client_error_replies_are_terminal(void **state)
{
    fake_t       *f = fake_start(true);
    lkv_client_t *c = connect_to(f->ep, 5000);
    track_t       rej, fail, nil, garbage;

    (void)state;
    track_init(&rej);
    uint64_t id = submit_prompt(c, "reject", 4, &rej);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(rej.n_terminal, 1);
    assert_int_equal(rej.term.kind, LKV_CLIENT_EV_ERROR);
    assert_int_equal(rej.term.status, LKV_ERR_REJECTED);
    assert_int_equal(rej.term.retry_after_ms, 500);
    assert_non_null(strstr(rej.message, "retry later"));
    assert_int_equal(rej.n_accepted, 0);

    track_init(&fail); /* failure after acceptance: DONE with error */
    id = submit_prompt(c, "fail", 4, &fail);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(fail.n_terminal, 1);
    assert_int_equal(fail.term.kind, LKV_CLIENT_EV_DONE);
    assert_int_equal(fail.term.finish, LKV_CLIENT_FINISH_ERROR);
    assert_int_equal(fail.term.status, LKV_ERR_DEVICE);
    assert_non_null(strstr(fail.message, "restart"));

    track_init(&nil); /* nil-id error with one request pending */
    id = submit_prompt(c, "nilerr", 4, &nil);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(nil.term.kind, LKV_CLIENT_EV_ERROR);
    assert_int_equal(nil.term.status, LKV_ERR_PROTOCOL);

    track_init(&garbage); /* undecodable reply about a known request */
    id = submit_prompt(c, "garbage", 4, &garbage);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(garbage.n_terminal, 1);
    assert_int_equal(garbage.term.kind, LKV_CLIENT_EV_ERROR);
    assert_int_equal(garbage.term.status, LKV_ERR_PROTOCOL);
    assert_non_null(strstr(garbage.message, "index"));
    lkv_client_close(&c);
    fake_stop(&f);
}

static void client_server_gone_times_out(void **state)
{
    fake_t       *f = fake_start(true);
    char          ep[128];
    lkv_client_t *c = connect_to(f->ep, 400);
    track_t       t, t2;

    (void)state;
    snprintf(ep, sizeof(ep), "%s", f->ep);
    track_init(&t);
    uint64_t id = submit_prompt(c, "slow", 1000, &t);
    for (int i = 0; i < 1000 && atomic_load(&t.seen) < 2; i++) {
        lkv_sleep_ns(5 * 1000000LL); /* let a few tokens stream */
    }
    fake_stop(&f); /* the server vanishes mid-stream */
    int64_t t0 = lkv_now_ns();
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    double waited_ms = (double)(lkv_now_ns() - t0) / 1e6;
    assert_int_equal(t.n_terminal, 1);
    assert_int_equal(t.term.kind, LKV_CLIENT_EV_ERROR);
    assert_int_equal(t.term.status, LKV_ERR_TIMEOUT);
    assert_non_null(strstr(t.message, "no answer from server"));
    assert_true(waited_ms < 3000);

    /* a query to the dead server times out too */
    lkv_client_health_t h;
    assert_int_equal(lkv_client_health(c, 200, &h), LKV_ERR_TIMEOUT);
    lkv_client_close(&c);

    /* nothing ever listened: submit still ends, with a timeout */
    c = connect_to("tcp://127.0.0.1:1", 300);
    track_init(&t2);
    id = submit_prompt(c, "hello", 3, &t2);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(t2.term.status, LKV_ERR_TIMEOUT);
    lkv_client_close(&c);
}

static void client_request_timeout_bounds_mute_request(void **state)
{
    fake_t           *f = fake_start(true); /* answers pings, never finishes */
    lkv_client_t     *c;
    lkv_client_opts_t o = lkv_client_opts_default();
    track_t           t;

    (void)state;
    o.request_timeout_ms = 200;
    o.ping_interval_ms   = 50;
    assert_int_equal(lkv_client_connect(f->ep, &o, &c), LKV_OK);
    track_init(&t);
    uint64_t id = submit_prompt(c, "mute", 4, &t);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(t.n_accepted, 1);
    assert_int_equal(t.term.kind, LKV_CLIENT_EV_ERROR);
    assert_int_equal(t.term.status, LKV_ERR_TIMEOUT);
    assert_non_null(strstr(t.message, "request timeout"));
    lkv_client_close(&c);
    fake_stop(&f);
}

typedef struct {
    lkv_client_t *c;
    int           n;
    int           thread_no;
    int           failures;
} worker_arg_t;

static void *submitter(void *arg)
{
    worker_arg_t *w = arg;
    track_t      *t = calloc((size_t)w->n, sizeof(*t));
    uint64_t     *ids = calloc((size_t)w->n, sizeof(*ids));

    for (int i = 0; i < w->n; i++) {
        lkv_client_request_t rq = lkv_client_request_default();

        track_init(&t[i]);
        rq.prompt     = "hello";
        rq.max_tokens = 1 + (i + w->thread_no) % 7;
        if (lkv_client_submit(w->c, &rq, on_event, &t[i], &ids[i]) != LKV_OK) {
            w->failures++;
        }
    }
    for (int i = 0; i < w->n; i++) {
        int want = 1 + (i + w->thread_no) % 7;

        if (lkv_client_wait(w->c, ids[i], 10000) != LKV_OK ||
            t[i].n_terminal != 1 || t[i].term.kind != LKV_CLIENT_EV_DONE ||
            t[i].n_tokens != want || !t[i].order_ok || t[i].n_accepted != 1) {
            w->failures++;
        }
    }
    free(t);
    free(ids);
    return NULL;
}

static void client_concurrent_submits_from_4_threads(void **state)
{
    fake_t       *f = fake_start(true);
    lkv_client_t *c = connect_to(f->ep, 10000);
    pthread_t     th[4];
    worker_arg_t  w[4];

    (void)state;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_arg_t){.c = c, .n = 50, .thread_no = i};
        assert_int_equal(pthread_create(&th[i], NULL, submitter, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(atomic_load(&f->n_submits), 200);
    assert_int_equal(lkv_client_pending(c), 0);
    lkv_client_close(&c);
    fake_stop(&f);
}

static void client_health_and_stats(void **state)
{
    fake_t             *f = fake_start(true);
    lkv_client_t       *c = connect_to(f->ep, 5000);
    lkv_client_health_t h;
    char               *json = NULL, *text = NULL;

    (void)state;
    assert_int_equal(lkv_client_health(c, 5000, &h), LKV_OK);
    assert_string_equal(h.status, "ok");
    assert_string_equal(h.model, "fake-model");
    assert_int_equal(h.n_running, 3);
    assert_true(h.uptime_s == 12.5);
    assert_true(h.rtt_ms >= 0);
    assert_int_equal(lkv_client_stats(c, 5000, &json, &text), LKV_OK);
    assert_string_equal(json, "{\"n_running\": 3, \"kv_blocks_used\": {\"device\": 17}}");
    assert_non_null(strstr(text, "kv_blocks_used.device  17\n"));
    free(json);
    free(text);
    lkv_client_close(&c);
    fake_stop(&f);
}

static void client_rejects_bad_requests_locally(void **state)
{
    fake_t              *f = fake_start(true);
    lkv_client_t        *c = connect_to(f->ep, 5000);
    lkv_client_request_t rq;
    int32_t              toks[] = {1, 2};
    uint64_t             id;

    (void)state;
    rq = lkv_client_request_default(); /* neither prompt nor tokens */
    assert_int_equal(lkv_client_submit(c, &rq, on_event, NULL, &id),
                     LKV_ERR_INVALID);
    rq.prompt   = "x";
    rq.tokens   = toks;
    rq.n_tokens = 2;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, NULL, &id),
                     LKV_ERR_INVALID);
    rq.prompt     = NULL;
    rq.max_tokens = 0;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, NULL, &id),
                     LKV_ERR_INVALID);
    rq.max_tokens = 4;
    rq.top_p      = 0;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, NULL, &id),
                     LKV_ERR_INVALID);
    rq.top_p       = 1;
    rq.temperature = -1;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, NULL, &id),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_client_pending(c), 0);
    assert_int_equal(atomic_load(&f->n_submits), 0);
    assert_int_equal(lkv_client_connect(NULL, NULL, &c), LKV_ERR_INVALID);
    assert_int_equal(lkv_client_connect("nonsense", NULL, &c),
                     LKV_ERR_INVALID);
    assert_non_null(c); /* untouched on failure */

    /* token-id requests go through */
    track_t t;
    track_init(&t);
    rq = lkv_client_request_default();
    rq.tokens     = toks;
    rq.n_tokens   = 2;
    rq.max_tokens = 2;
    assert_int_equal(lkv_client_submit(c, &rq, on_event, &t, &id), LKV_OK);
    assert_int_equal(lkv_client_wait(c, id, 5000), LKV_OK);
    assert_int_equal(t.n_tokens, 2);
    lkv_client_close(&c);
    lkv_client_close(&c); /* NULL-safe */
    fake_stop(&f);
}

static void client_close_with_pending_cancels(void **state)
{
    fake_t       *f = fake_start(true);
    lkv_client_t *c = connect_to(f->ep, 5000);
    track_t       t[3];

    (void)state;
    for (int i = 0; i < 3; i++) {
        track_init(&t[i]);
        submit_prompt(c, "slow", 1000, &t[i]);
    }
    lkv_sleep_ns(50 * 1000000LL);
    lkv_client_close(&c); /* callbacks run before close returns */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i].n_terminal, 1);
        assert_int_equal(t[i].term.kind, LKV_CLIENT_EV_ERROR);
        assert_int_equal(t[i].term.status, LKV_ERR_CANCELLED);
    }
    /* the server was told to cancel (best effort: wait a little) */
    for (int i = 0; i < 100 && atomic_load(&f->n_cancels) < 3; i++) {
        lkv_sleep_ns(5 * 1000000LL);
    }
    assert_int_equal(atomic_load(&f->n_cancels), 3);
    fake_stop(&f);
}

static void client_poll_delivers_events_in_order(void **state)
{
    fake_t              *f = fake_start(true);
    lkv_client_t        *c = connect_to(f->ep, 5000);
    lkv_client_request_t rq = lkv_client_request_default();
    lkv_client_event_t  *ev;
    uint64_t             ids[3];
    int                  next_index[3] = {0, 0, 0}, ended = 0, accepted = 0;
    char                 text[3][128];

    (void)state;
    memset(text, 0, sizeof(text));
    assert_int_equal(lkv_client_poll(c, 0, &ev), LKV_ERR_TIMEOUT);
    assert_int_equal(lkv_client_poll(c, 20, &ev), LKV_ERR_TIMEOUT);
    rq.prompt = "hello";
    for (int i = 0; i < 3; i++) {
        rq.max_tokens = 3 + i;
        assert_int_equal(lkv_client_submit(c, &rq, NULL, NULL, &ids[i]), LKV_OK);
    }
    rq.prompt = "reject";
    uint64_t rej;
    assert_int_equal(lkv_client_submit(c, &rq, NULL, NULL, &rej), LKV_OK);
    bool rejected = false;
    while (ended < 3 || !rejected) {
        assert_int_equal(lkv_client_poll(c, 5000, &ev), LKV_OK);
        if (ev->request == rej) {
            assert_int_equal(ev->kind, LKV_CLIENT_EV_ERROR);
            assert_int_equal(ev->status, LKV_ERR_REJECTED);
            assert_non_null(strstr(ev->message, "retry"));
            rejected = true;
            lkv_client_event_free(ev);
            continue;
        }
        int k = -1;
        for (int i = 0; i < 3; i++) {
            if (ev->request == ids[i]) {
                k = i;
            }
        }
        assert_true(k >= 0);
        switch (ev->kind) {
        case LKV_CLIENT_EV_ACCEPTED:
            accepted++;
            break;
        case LKV_CLIENT_EV_TOKEN:
            assert_int_equal((int)ev->index, next_index[k]++);
            strncat(text[k], ev->text, sizeof(text[k]) - strlen(text[k]) - 1);
            break;
        case LKV_CLIENT_EV_DONE:
            assert_int_equal(ev->finish, LKV_CLIENT_FINISH_LENGTH);
            assert_string_equal(ev->finish_reason, "length");
            assert_int_equal((int)ev->n_tokens, 3 + k);
            ended++;
            break;
        default:
            fail();
        }
        lkv_client_event_free(ev);
    }
    assert_int_equal(accepted, 3);
    assert_string_equal(text[2], "t0 t1 t2 t3 t4 ");
    assert_int_equal(lkv_client_pending(c), 0);
    /* events left in the queue are freed by close */
    rq.prompt = "hello";
    assert_int_equal(lkv_client_submit(c, &rq, NULL, NULL, &ids[0]), LKV_OK);
    assert_int_equal(lkv_client_wait(c, ids[0], 5000), LKV_OK);
    lkv_client_event_free(NULL);
    lkv_client_close(&c);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(client_streams_tokens_in_order),
        cmocka_unit_test(client_cancel_ends_with_cancelled),
        cmocka_unit_test(client_error_replies_are_terminal),
        cmocka_unit_test(client_server_gone_times_out),
        cmocka_unit_test(client_request_timeout_bounds_mute_request),
        cmocka_unit_test(client_concurrent_submits_from_4_threads),
        cmocka_unit_test(client_health_and_stats),
        cmocka_unit_test(client_rejects_bad_requests_locally),
        cmocka_unit_test(client_close_with_pending_cancels),
        cmocka_unit_test(client_poll_delivers_events_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
