/* client.c - liblayerkv: the C client of a layerkv server (see
 * include/layerkv/client.h and docs/protocol.md).
 *
 * Threading: one I/O thread per handle owns the DEALER socket and the I/O end
 * of an inproc PAIR pipe. API calls (any thread) encode their message, take
 * `pipe_mu`, and push "send these bytes" commands into the pipe. The pending
 * request table and the query waiters are guarded by `mu`; only the I/O
 * thread removes requests (after their terminal callback returned), so a
 * request stays valid while its callback runs. Callbacks run without `mu`.
 */
#define LKV_LOG_MODULE "client"
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "layerkv/client.h"
#include "transport/wire.h"
#include "transport/zmq_util.h"

#define N_BUCKETS 1024
#define TICK_MS   50

enum { CMD_SEND = 'S', CMD_QUIT = 'Q' };

typedef struct req {
    struct req         *next;
    uint64_t            id;
    lkv_client_event_fn fn;
    void               *user;
    int64_t             deadline_ns; /* 0 = none */
    uint32_t            n_prompt_tokens;
    bool                terminal; /* terminal callback running (mu) */
} req_t;

typedef struct call {
    struct call    *next;
    uint64_t        id;
    lkv_wire_type_t want; /* HEALTH_REPLY or STATS_REPLY */
    bool            done;
    lkv_status_t    status;
    char            message[LKV_WIRE_ERR_MAX];
    lkv_wire_msg_t  reply; /* owned by the waiter once done */
} call_t;

/* A queued event for lkv_client_poll; ev is first so the public pointer
 * is the allocation. */
typedef struct polled {
    lkv_client_event_t ev;
    struct polled     *next;
    char               data[]; /* text, message, finish_reason */
} polled_t;

struct lkv_client {
    char              endpoint[256];
    lkv_client_opts_t opts;
    void             *ctx;
    void             *dealer;   /* I/O thread */
    void             *pipe_io;  /* I/O thread */
    void             *pipe_api; /* any thread, under pipe_mu */
    pthread_mutex_t   pipe_mu;
    pthread_t         thread;
    bool              thread_started;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t  cv;
    req_t          *buckets[N_BUCKETS];
    int             n_pending;
    call_t         *calls;
    int             n_calls;
    uint64_t        next_id;
    polled_t       *queue_head; /* events for lkv_client_poll */
    polled_t       *queue_tail;
    bool            closing;
    bool            dead; /* I/O thread gone after a fatal error */
};

/* ---- small helpers ---- */

static req_t **bucket(lkv_client_t *c, uint64_t id)
{
    uint64_t h = id * 0x9e3779b97f4a7c15ULL;

    return &c->buckets[h >> 54]; /* top 10 bits: N_BUCKETS = 1024 */
}

static req_t *find_req(lkv_client_t *c, uint64_t id) /* mu held */
{
    for (req_t *r = *bucket(c, id); r != NULL; r = r->next) {
        if (r->id == id) {
            return r;
        }
    }
    return NULL;
}

static void remove_req(lkv_client_t *c, req_t *target) /* mu held */
{
    for (req_t **pp = bucket(c, target->id); *pp != NULL; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            c->n_pending--;
            return;
        }
    }
}

static void remove_call(lkv_client_t *c, call_t *target) /* mu held */
{
    for (call_t **pp = &c->calls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            c->n_calls--;
            return;
        }
    }
}

/* Copy src (NULL = "") into dst[cap], truncating; always NUL-terminated. */
static void copy_trunc(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;

    if (n > 0) {
        memcpy(dst, src, n);
    }
    dst[n] = '\0';
}

static bool on_io_thread(lkv_client_t *c)
{
    return c->thread_started && pthread_equal(pthread_self(), c->thread);
}

static void abs_deadline(struct timespec *ts, int64_t ns_from_now)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    int64_t t   = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + ns_from_now;
    ts->tv_sec  = t / 1000000000LL;
    ts->tv_nsec = t % 1000000000LL;
}

/* Push a command to the I/O thread: [code][8-byte id][bytes]. */
static uint8_t *make_cmd(char code, uint64_t id, const void *bytes,
                         size_t len)
{
    uint8_t *frame = malloc(9 + len);

    if (frame != NULL) {
        frame[0] = (uint8_t)code;
        memcpy(frame + 1, &id, 8);
        if (len > 0) {
            memcpy(frame + 9, bytes, len);
        }
    }
    return frame;
}

/* Send a made command (frame of 9 + len bytes) and free it. Fails only
 * when the context is gone (handle closed): LKV_ERR_CANCELLED. */
static lkv_status_t send_cmd(lkv_client_t *c, uint8_t *frame, size_t len)
{
    lkv_status_t st;

    pthread_mutex_lock(&c->pipe_mu);
    st = lkv_zmq_send(c->pipe_api, frame, 9 + len, false);
    pthread_mutex_unlock(&c->pipe_mu);
    free(frame);
    return st;
}

static lkv_status_t push_cmd(lkv_client_t *c, char code, uint64_t id,
                             const void *bytes, size_t len)
{
    uint8_t *frame = make_cmd(code, id, bytes, len);

    if (frame == NULL) {
        return LKV_ERR_NOMEM;
    }
    return send_cmd(c, frame, len);
}

/* ---- options ---- */

lkv_client_opts_t lkv_client_opts_default(void)
{
    lkv_client_opts_t o = {
        .server_timeout_ms  = 30000,
        .request_timeout_ms = 0,
        .ping_interval_ms   = 1000,
        .sndhwm             = 10000,
    };
    return o;
}

lkv_client_request_t lkv_client_request_default(void)
{
    lkv_client_request_t r;

    memset(&r, 0, sizeof(r));
    r.max_tokens  = 64;
    r.temperature = 1.0f;
    r.top_p       = 1.0f;
    return r;
}

/* ---- I/O thread ---- */

/* Copy ev (and its strings) to the poll queue. */
static void enqueue(lkv_client_t *c, const lkv_client_event_t *ev)
{
    size_t    nt = ev->text != NULL ? ev->text_len : 0;
    size_t    nm = ev->message != NULL ? strlen(ev->message) : 0;
    size_t    nf = ev->finish_reason != NULL ? strlen(ev->finish_reason) : 0;
    polled_t *q  = malloc(sizeof(*q) + nt + nm + nf + 3);

    if (q == NULL) {
        LKV_LOG_ERROR("client: out of memory queueing an event of request "
                      "%llu; it is lost",
                      (unsigned long long)ev->request);
        return;
    }
    q->ev   = *ev;
    q->next = NULL;
    char *d = q->data;
    if (nt > 0) {
        memcpy(d, ev->text, nt);
    }
    d[nt]      = '\0';
    q->ev.text = ev->text != NULL ? d : NULL;
    d += nt + 1;
    if (nm > 0) {
        memcpy(d, ev->message, nm);
    }
    d[nm]         = '\0';
    q->ev.message = ev->message != NULL ? d : NULL;
    d += nm + 1;
    if (nf > 0) {
        memcpy(d, ev->finish_reason, nf);
    }
    d[nf]               = '\0';
    q->ev.finish_reason = ev->finish_reason != NULL ? d : NULL;
    pthread_mutex_lock(&c->mu);
    if (c->queue_tail != NULL) {
        c->queue_tail->next = q;
    } else {
        c->queue_head = q;
    }
    c->queue_tail = q;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void emit(lkv_client_t *c, req_t *r, lkv_client_event_t *ev,
                 bool terminal)
{
    ev->request = r->id;
    if (r->fn == NULL) {
        /* polled: a terminal event is queued after the request left the
         * table, so a poller that sees it also sees pending drop */
        if (terminal) {
            pthread_mutex_lock(&c->mu);
            remove_req(c, r);
            pthread_cond_broadcast(&c->cv);
            pthread_mutex_unlock(&c->mu);
            free(r);
        }
        enqueue(c, ev);
        return;
    }
    if (terminal) {
        pthread_mutex_lock(&c->mu);
        r->terminal = true;
        pthread_mutex_unlock(&c->mu);
    }
    r->fn(ev, r->user);
    if (terminal) {
        pthread_mutex_lock(&c->mu);
        remove_req(c, r);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        free(r);
    }
}

static void fail_req(lkv_client_t *c, req_t *r, lkv_status_t st,
                     const char *message, int64_t retry_after_ms)
{
    lkv_client_event_t ev;

    memset(&ev, 0, sizeof(ev));
    ev.kind           = LKV_CLIENT_EV_ERROR;
    ev.status         = st;
    ev.message        = message != NULL ? message : "";
    ev.retry_after_ms = retry_after_ms;
    ev.finish         = LKV_CLIENT_FINISH_ERROR;
    ev.finish_reason  = "error";
    emit(c, r, &ev, true);
}

static void finish_call(lkv_client_t *c, call_t *k, lkv_status_t st,
                        const char *message, lkv_wire_msg_t *reply)
{
    /* mu held */
    remove_call(c, k);
    k->done   = true;
    k->status = st;
    copy_trunc(k->message, sizeof(k->message), message);
    if (reply != NULL) {
        k->reply = *reply; /* the waiter now owns the arena */
        reply->arena = NULL;
    }
    pthread_cond_broadcast(&c->cv);
}

static void send_cancel(lkv_client_t *c, uint64_t id)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;

    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    lkv_wire_id_set_uint(&m.id, id);
    lkv_wire_buf_init(&b);
    if (lkv_wire_encode(&m, &b) == LKV_OK) {
        (void)lkv_zmq_send(c->dealer, b.data, b.len, true);
    }
    lkv_wire_buf_free(&b);
}

/* Fail every pending request and query (timeouts, close, fatal errors). */
static void fail_all(lkv_client_t *c, lkv_status_t st, const char *message,
                     bool cancel_on_server)
{
    for (;;) {
        req_t *r = NULL;

        pthread_mutex_lock(&c->mu);
        for (int b = 0; b < N_BUCKETS && r == NULL; b++) {
            r = c->buckets[b];
        }
        while (c->calls != NULL) {
            finish_call(c, c->calls, st, message, NULL);
        }
        pthread_mutex_unlock(&c->mu);
        if (r == NULL) {
            return;
        }
        if (cancel_on_server) {
            send_cancel(c, r->id);
        }
        fail_req(c, r, st, message, -1);
    }
}

static req_t *lookup(lkv_client_t *c, const lkv_wire_id_t *id)
{
    req_t *r = NULL;

    if (id->kind != LKV_WIRE_ID_UINT) {
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    r = find_req(c, id->u);
    pthread_mutex_unlock(&c->mu);
    return r;
}

static bool complete_call(lkv_client_t *c, lkv_wire_msg_t *m)
{
    bool found = false;

    pthread_mutex_lock(&c->mu);
    for (call_t *k = c->calls; k != NULL; k = k->next) {
        if (m->id.kind == LKV_WIRE_ID_UINT && k->id == m->id.u) {
            if (m->type == LKV_WIRE_ERROR) {
                finish_call(c, k, (lkv_status_t)m->u.error.code,
                            m->u.error.message, NULL);
            } else if (m->type == k->want) {
                finish_call(c, k, LKV_OK, NULL, m);
            } else {
                finish_call(c, k, LKV_ERR_PROTOCOL,
                            "server answered a query with the wrong type",
                            NULL);
            }
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

static void on_server_msg(lkv_client_t *c, lkv_wire_msg_t *m)
{
    lkv_client_event_t ev;
    req_t             *r;

    memset(&ev, 0, sizeof(ev));
    ev.retry_after_ms = -1;
    switch (m->type) {
    case LKV_WIRE_ACCEPTED:
        if ((r = lookup(c, &m->id)) != NULL) {
            r->n_prompt_tokens = m->u.accepted.n_prompt_tokens;
            ev.kind            = LKV_CLIENT_EV_ACCEPTED;
            ev.n_prompt_tokens = m->u.accepted.n_prompt_tokens;
            emit(c, r, &ev, false);
        }
        break;
    case LKV_WIRE_TOKEN:
        if ((r = lookup(c, &m->id)) != NULL) {
            ev.kind     = LKV_CLIENT_EV_TOKEN;
            ev.index    = m->u.token.index;
            ev.token    = m->u.token.token;
            ev.text     = m->u.token.text;
            ev.text_len = m->u.token.text_len;
            emit(c, r, &ev, false);
        }
        break;
    case LKV_WIRE_DONE:
        if ((r = lookup(c, &m->id)) != NULL) {
            const lkv_wire_done_t *d = &m->u.done;

            ev.kind            = LKV_CLIENT_EV_DONE;
            ev.finish          = (lkv_client_finish_t)d->finish_reason;
            ev.finish_reason   = lkv_wire_finish_name(d->finish_reason);
            ev.n_prompt_tokens = d->n_prompt_tokens;
            ev.n_tokens        = d->n_tokens;
            ev.ttft_ms         = d->ttft_ms;
            ev.tpot_ms         = d->tpot_ms;
            ev.queue_ms        = d->queue_ms;
            ev.text            = d->text;
            ev.text_len        = d->text_len;
            ev.message         = "";
            if (d->finish_reason == LKV_WIRE_FINISH_ERROR) {
                ev.status  = (lkv_status_t)d->error_code;
                ev.message = d->error_message != NULL ? d->error_message : "";
            }
            emit(c, r, &ev, true);
        }
        break;
    case LKV_WIRE_ERROR: {
        int64_t retry = m->u.error.has_retry_after
                            ? (int64_t)m->u.error.retry_after_ms
                            : -1;

        if (m->id.kind == LKV_WIRE_ID_NONE) {
            /* nil id: attributable only when exactly one thing is pending */
            pthread_mutex_lock(&c->mu);
            int n = c->n_pending + c->n_calls;
            r     = NULL;
            if (n == 1 && c->n_pending == 1) {
                for (int b = 0; b < N_BUCKETS && r == NULL; b++) {
                    r = c->buckets[b];
                }
            } else if (n == 1) {
                finish_call(c, c->calls, (lkv_status_t)m->u.error.code,
                            m->u.error.message, NULL);
            }
            pthread_mutex_unlock(&c->mu);
            if (r != NULL) {
                fail_req(c, r, (lkv_status_t)m->u.error.code,
                         m->u.error.message, retry);
            } else if (n != 1) {
                LKV_LOG_WARN("server error without a request id: %s (%s)",
                             m->u.error.message,
                             lkv_status_name((lkv_status_t)m->u.error.code));
            }
        } else if ((r = lookup(c, &m->id)) != NULL) {
            fail_req(c, r, (lkv_status_t)m->u.error.code, m->u.error.message,
                     retry);
        } else {
            (void)complete_call(c, m);
        }
        break;
    }
    case LKV_WIRE_HEALTH_REPLY:
    case LKV_WIRE_STATS_REPLY:
        (void)complete_call(c, m); /* unmatched: a ping reply */
        break;
    default:
        LKV_LOG_WARN("ignoring a '%s' message from the server",
                     lkv_wire_type_name(m->type));
        break;
    }
}

static void on_dealer_readable(lkv_client_t *c)
{
    lkv_wire_limits_t lim = lkv_wire_limits_server();

    /* bounded batch: a flooding server must not starve the command pipe */
    for (int batch = 0; batch < 512; batch++) {
        lkv_zmq_frame_t f;
        lkv_wire_msg_t  m;
        lkv_status_t    st = lkv_zmq_recv(c->dealer, &f, true);

        if (st == LKV_AGAIN || st == LKV_ERR_CANCELLED) {
            return;
        }
        if (st != LKV_OK) {
            LKV_LOG_WARN("dropping a malformed frame from the server (%s)",
                         lkv_status_name(st));
            continue;
        }
        st = lkv_wire_decode(lkv_zmq_frame_data(&f), lkv_zmq_frame_size(&f),
                             &lim, &m);
        lkv_zmq_frame_close(&f);
        if (st != LKV_OK) {
            req_t *r = lookup(c, &m.id);
            char   msg[LKV_WIRE_ERR_MAX + 64];

            snprintf(msg, sizeof(msg), "malformed message from the server: %s",
                     m.err);
            LKV_LOG_WARN("%s", msg);
            if (r != NULL) {
                send_cancel(c, r->id);
                fail_req(c, r, LKV_ERR_PROTOCOL, msg, -1);
            }
            continue;
        }
        on_server_msg(c, &m);
        lkv_wire_msg_release(&m);
    }
}

/* Returns true when asked to quit. */
static bool on_pipe_readable(lkv_client_t *c)
{
    for (;;) {
        lkv_zmq_frame_t f;
        lkv_status_t    st = lkv_zmq_recv(c->pipe_io, &f, true);
        uint64_t        id;

        if (st != LKV_OK) {
            return st == LKV_ERR_CANCELLED;
        }
        const uint8_t *p = lkv_zmq_frame_data(&f);
        size_t         n = lkv_zmq_frame_size(&f);
        if (n < 9 || p[0] == CMD_QUIT) {
            lkv_zmq_frame_close(&f);
            return true;
        }
        memcpy(&id, p + 1, 8);
        st = lkv_zmq_send(c->dealer, p + 9, n - 9, true);
        lkv_zmq_frame_close(&f);
        if (st != LKV_OK) {
            char msg[512];

            snprintf(msg, sizeof(msg),
                     "cannot send to server %s (%s): the send queue is full "
                     "because the server is not reading; is it running?",
                     c->endpoint, lkv_status_name(st));
            pthread_mutex_lock(&c->mu);
            req_t *r = find_req(c, id);
            for (call_t *k = c->calls; k != NULL; k = k->next) {
                if (k->id == id) {
                    finish_call(c, k, LKV_ERR_BUSY, msg, NULL);
                    break;
                }
            }
            pthread_mutex_unlock(&c->mu);
            if (r != NULL) {
                fail_req(c, r, LKV_ERR_BUSY, msg, -1);
            }
        }
    }
}

static void send_ping(lkv_client_t *c)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;

    lkv_wire_msg_init(&m, LKV_WIRE_HEALTH);
    pthread_mutex_lock(&c->mu);
    lkv_wire_id_set_uint(&m.id, c->next_id++);
    pthread_mutex_unlock(&c->mu);
    lkv_wire_buf_init(&b);
    if (lkv_wire_encode(&m, &b) == LKV_OK) {
        (void)lkv_zmq_send(c->dealer, b.data, b.len, true);
    }
    lkv_wire_buf_free(&b);
}

static void check_deadlines(lkv_client_t *c, int64_t now)
{
    for (;;) {
        req_t *late = NULL;

        pthread_mutex_lock(&c->mu);
        for (int b = 0; b < N_BUCKETS && late == NULL; b++) {
            for (req_t *r = c->buckets[b]; r != NULL; r = r->next) {
                if (r->deadline_ns != 0 && now >= r->deadline_ns) {
                    late = r;
                    break;
                }
            }
        }
        pthread_mutex_unlock(&c->mu);
        if (late == NULL) {
            return;
        }
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "request did not finish within %d ms (request timeout); "
                 "raise it or lower max_tokens",
                 c->opts.request_timeout_ms);
        send_cancel(c, late->id);
        fail_req(c, late, LKV_ERR_TIMEOUT, msg, -1);
    }
}

static void *io_main(void *arg)
{
    lkv_client_t *c         = arg;
    void         *socks[2]  = {c->dealer, c->pipe_io};
    int64_t       last_rx   = lkv_now_ns();
    int64_t       last_ping = 0;
    int64_t       last_scan = 0;
    bool          was_idle  = true;
    bool          quit      = false;

    while (!quit) {
        bool         rd[2] = {false, false};
        /* idle: sleep until the pipe brings work (timers need no tick) */
        lkv_status_t st = lkv_zmq_poll_in(socks, 2, was_idle ? 1000 : TICK_MS,
                                          rd);
        int64_t      now;

        if (st == LKV_ERR_CANCELLED || st == LKV_ERR_IO) {
            LKV_LOG_ERROR("client i/o thread stops: poll failed (%s)",
                          lkv_status_name(st));
            pthread_mutex_lock(&c->mu);
            c->dead = true;
            pthread_mutex_unlock(&c->mu);
            fail_all(c, LKV_ERR_IO, "client i/o failed; reconnect", false);
            /* keep serving the pipe so close() can finish */
            while (!quit) {
                if (lkv_zmq_wait_readable(c->pipe_io, 1000) == LKV_OK) {
                    quit = on_pipe_readable(c);
                }
            }
            break;
        }
        if (rd[0]) {
            last_rx = lkv_now_ns();
            on_dealer_readable(c);
        }
        if (rd[1]) {
            quit = on_pipe_readable(c);
            if (quit) {
                break;
            }
        }
        now = lkv_now_ns();
        pthread_mutex_lock(&c->mu);
        int pending = c->n_pending + c->n_calls;
        pthread_mutex_unlock(&c->mu);
        if (pending == 0) {
            was_idle = true;
            continue;
        }
        if (was_idle) {
            was_idle  = false;
            last_rx   = now;
            last_ping = now;
        }
        if (c->opts.server_timeout_ms > 0 &&
            now - last_rx > (int64_t)c->opts.server_timeout_ms * 1000000LL) {
            char msg[384];

            snprintf(msg, sizeof(msg),
                     "no answer from server %s for %d ms: is it running and "
                     "reachable? (raise the timeout if it is just slow)",
                     c->endpoint, c->opts.server_timeout_ms);
            fail_all(c, LKV_ERR_TIMEOUT, msg, true);
            last_rx = now;
            continue;
        }
        if (c->opts.ping_interval_ms > 0 &&
            now - last_rx >= (int64_t)c->opts.ping_interval_ms * 1000000LL &&
            now - last_ping >= (int64_t)c->opts.ping_interval_ms * 1000000LL) {
            send_ping(c);
            last_ping = now;
        }
        if (c->opts.request_timeout_ms > 0 &&
            now - last_scan >= (int64_t)TICK_MS * 1000000LL) {
            last_scan = now;
            check_deadlines(c, now);
        }
    }
    /* close(): every pending request ends with CANCELLED */
    fail_all(c, LKV_ERR_CANCELLED, "client closed before the request finished",
             true);
    return NULL;
}

/* ---- API ---- */

lkv_status_t lkv_client_connect(const char *endpoint,
                                const lkv_client_opts_t *opts,
                                lkv_client_t **client_p)
{
    lkv_client_t  *c;
    lkv_zmq_opts_t zo = lkv_zmq_opts_default();
    char           pipe_ep[64];
    lkv_status_t   st;

    if (endpoint == NULL || client_p == NULL || endpoint[0] == '\0' ||
        strlen(endpoint) >= sizeof(c->endpoint)) {
        LKV_LOG_ERROR("client: endpoint missing or too long (use "
                      "tcp://HOST:PORT or ipc:///PATH)");
        return LKV_ERR_INVALID;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    snprintf(c->endpoint, sizeof(c->endpoint), "%s", endpoint);
    c->opts    = opts != NULL ? *opts : lkv_client_opts_default();
    c->next_id = 1;
    pthread_mutex_init(&c->pipe_mu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    LKV_CHECK_GOTO(lkv_zmq_ctx_create(&c->ctx), st, err_free);
    zo.sndhwm = c->opts.sndhwm > 0 ? c->opts.sndhwm : 10000;
    zo.rcvhwm = 0;
    zo.reconnect_ivl_ms = 100;
    LKV_CHECK_GOTO(lkv_zmq_socket(c->ctx, ZMQ_DEALER, &zo, &c->dealer), st,
                   err_ctx);
    LKV_CHECK_GOTO(lkv_zmq_connect(c->dealer, endpoint), st, err_ctx);

    zo        = lkv_zmq_opts_default();
    zo.sndhwm = 0; /* unlimited: callbacks may submit from the I/O thread */
    zo.rcvhwm = 0;
    {
        int unlimited = 0;

        LKV_CHECK_GOTO(lkv_zmq_socket(c->ctx, ZMQ_PAIR, &zo, &c->pipe_io), st,
                       err_ctx);
        LKV_CHECK_GOTO(lkv_zmq_socket(c->ctx, ZMQ_PAIR, &zo, &c->pipe_api),
                       st, err_ctx);
        zmq_setsockopt(c->pipe_io, ZMQ_RCVHWM, &unlimited, sizeof(unlimited));
        zmq_setsockopt(c->pipe_api, ZMQ_SNDHWM, &unlimited, sizeof(unlimited));
    }
    snprintf(pipe_ep, sizeof(pipe_ep), "inproc://lkv-client-%p", (void *)c);
    LKV_CHECK_GOTO(lkv_zmq_bind(c->pipe_io, pipe_ep), st, err_ctx);
    LKV_CHECK_GOTO(lkv_zmq_connect(c->pipe_api, pipe_ep), st, err_ctx);
    if (pthread_create(&c->thread, NULL, io_main, c) != 0) {
        st = LKV_ERR_NOMEM;
        goto err_ctx;
    }
    c->thread_started = true;
    *client_p         = c;
    return LKV_OK;

err_ctx:
    lkv_zmq_close(&c->pipe_api);
    lkv_zmq_close(&c->pipe_io);
    lkv_zmq_close(&c->dealer);
    lkv_zmq_ctx_destroy(&c->ctx);
err_free:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->pipe_mu);
    free(c);
    return st;
}

void lkv_client_close(lkv_client_t **client_p)
{
    lkv_client_t *c;

    if (client_p == NULL || *client_p == NULL) {
        return;
    }
    c = *client_p;
    if (on_io_thread(c)) {
        LKV_LOG_ERROR("lkv_client_close called from an event callback: "
                      "ignored (close from another thread)");
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    if (push_cmd(c, CMD_QUIT, 0, NULL, 0) != LKV_OK) {
        LKV_LOG_ERROR("client: cannot stop the i/o thread cleanly");
    }
    pthread_join(c->thread, NULL);
    /* give the cancels the I/O thread just queued a moment to leave */
    int linger_ms = 200;
    zmq_setsockopt(c->dealer, ZMQ_LINGER, &linger_ms, sizeof(linger_ms));
    lkv_zmq_close(&c->pipe_api);
    lkv_zmq_close(&c->pipe_io);
    lkv_zmq_close(&c->dealer);
    lkv_zmq_ctx_destroy(&c->ctx);
    while (c->queue_head != NULL) {
        polled_t *next = c->queue_head->next;
        free(c->queue_head);
        c->queue_head = next;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->pipe_mu);
    free(c);
    *client_p = NULL;
}

static lkv_status_t check_request(const lkv_client_request_t *rq)
{
    const char *why = NULL;

    if ((rq->prompt == NULL) == (rq->tokens == NULL)) {
        why = "give exactly one of prompt and tokens";
    } else if (rq->tokens != NULL &&
               (rq->n_tokens < 1 || rq->n_tokens > LKV_WIRE_MAX_TOKENS)) {
        why = "n_tokens must be 1..65536";
    } else if (rq->max_tokens < 1 || rq->max_tokens > LKV_WIRE_MAX_TOKENS) {
        why = "max_tokens must be 1..65536";
    } else if (!(rq->temperature >= 0 && rq->temperature <= 100)) {
        why = "temperature must be 0..100";
    } else if (rq->top_k < 0 || rq->top_k > (1 << 20)) {
        why = "top_k must be 0..1048576";
    } else if (!(rq->top_p > 0 && rq->top_p <= 1)) {
        why = "top_p must be in (0, 1]";
    } else if (rq->n_stop_ids < 0 || rq->n_stop_ids > LKV_WIRE_MAX_STOP ||
               (rq->n_stop_ids > 0 && rq->stop_ids == NULL)) {
        why = "stop_ids: up to 64 ids";
    } else if (!(rq->ttft_slo_ms >= 0 && rq->ttft_slo_ms <= 1e9) ||
               !(rq->tpot_slo_ms >= 0 && rq->tpot_slo_ms <= 1e9)) {
        why = "SLOs must be >= 0 ms";
    }
    if (why == NULL && rq->tokens != NULL) {
        for (int i = 0; i < rq->n_tokens; i++) {
            if (rq->tokens[i] < 0) {
                why = "token ids must be >= 0";
                break;
            }
        }
    }
    if (why == NULL && rq->prompt != NULL) {
        size_t n = rq->prompt_len != 0 ? rq->prompt_len : strlen(rq->prompt);
        if (n > LKV_WIRE_MAX_PROMPT) {
            why = "prompt longer than 262144 bytes";
        }
    }
    if (why != NULL) {
        LKV_LOG_ERROR("lkv_client_submit: %s", why);
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

lkv_status_t lkv_client_submit(lkv_client_t *c, const lkv_client_request_t *rq,
                               lkv_client_event_fn fn, void *user,
                               uint64_t *request_p)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;
    req_t         *r;
    lkv_status_t   st;

    if (c == NULL || rq == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(check_request(rq));
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return LKV_ERR_NOMEM;
    }
    r->fn   = fn;
    r->user = user;
    if (c->opts.request_timeout_ms > 0) {
        r->deadline_ns =
            lkv_now_ns() + (int64_t)c->opts.request_timeout_ms * 1000000LL;
    }
    lkv_wire_msg_init(&m, LKV_WIRE_SUBMIT);
    m.u.submit.prompt = rq->prompt;
    if (rq->prompt != NULL) {
        m.u.submit.prompt_len = (uint32_t)(rq->prompt_len != 0
                                               ? rq->prompt_len
                                               : strlen(rq->prompt));
    }
    m.u.submit.tokens      = rq->tokens;
    m.u.submit.n_tokens    = rq->tokens != NULL ? rq->n_tokens : 0;
    m.u.submit.max_tokens  = rq->max_tokens;
    m.u.submit.temperature = rq->temperature;
    m.u.submit.top_k       = rq->top_k;
    m.u.submit.top_p       = rq->top_p;
    m.u.submit.has_seed    = rq->has_seed;
    m.u.submit.seed        = rq->seed;
    m.u.submit.stop_ids    = rq->stop_ids;
    m.u.submit.n_stop_ids  = rq->n_stop_ids;
    m.u.submit.ttft_slo_ms = rq->ttft_slo_ms;
    m.u.submit.tpot_slo_ms = rq->tpot_slo_ms;
    m.u.submit.stream      = true;

    pthread_mutex_lock(&c->mu);
    if (c->closing || c->dead) {
        st = c->dead ? LKV_ERR_IO : LKV_ERR_CANCELLED;
        pthread_mutex_unlock(&c->mu);
        free(r);
        return st;
    }
    r->id = c->next_id++;
    lkv_wire_id_set_uint(&m.id, r->id);
    pthread_mutex_unlock(&c->mu);

    lkv_wire_buf_init(&b);
    st = lkv_wire_encode(&m, &b);
    if (st != LKV_OK) {
        lkv_wire_buf_free(&b);
        free(r);
        return st;
    }
    /* everything that can fail for lack of memory happens before the
     * request becomes visible to the I/O thread */
    uint64_t id    = r->id; /* r belongs to the I/O thread once inserted */
    size_t   len   = b.len;
    uint8_t *frame = make_cmd(CMD_SEND, id, b.data, b.len);
    lkv_wire_buf_free(&b);
    if (frame == NULL) {
        free(r);
        return LKV_ERR_NOMEM;
    }
    pthread_mutex_lock(&c->mu);
    r->next           = *bucket(c, r->id);
    *bucket(c, r->id) = r;
    c->n_pending++;
    pthread_mutex_unlock(&c->mu);
    st = send_cmd(c, frame, len);
    if (st != LKV_OK) {
        /* only after close (a contract violation: the I/O thread is gone):
         * take it back unless something already ended it */
        bool mine;

        pthread_mutex_lock(&c->mu);
        mine = find_req(c, id) == r && !r->terminal;
        if (mine) {
            remove_req(c, r);
            pthread_cond_broadcast(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
        if (mine) {
            free(r);
        }
        return st;
    }
    if (request_p != NULL) {
        *request_p = id;
    }
    return LKV_OK;
}

lkv_status_t lkv_client_cancel(lkv_client_t *c, uint64_t request)
{
    lkv_wire_msg_t m;
    lkv_wire_buf_t b;
    lkv_status_t   st;
    bool           found;

    if (c == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&c->mu);
    found = find_req(c, request) != NULL;
    pthread_mutex_unlock(&c->mu);
    if (!found) {
        return LKV_ERR_NOTFOUND;
    }
    lkv_wire_msg_init(&m, LKV_WIRE_CANCEL);
    lkv_wire_id_set_uint(&m.id, request);
    lkv_wire_buf_init(&b);
    st = lkv_wire_encode(&m, &b);
    if (st == LKV_OK) {
        st = push_cmd(c, CMD_SEND, request, b.data, b.len);
    }
    lkv_wire_buf_free(&b);
    return st;
}

lkv_status_t lkv_client_wait(lkv_client_t *c, uint64_t request, int timeout_ms)
{
    struct timespec dl;
    lkv_status_t    st = LKV_OK;

    if (c == NULL) {
        return LKV_ERR_INVALID;
    }
    if (on_io_thread(c)) {
        return LKV_ERR_BUSY;
    }
    if (timeout_ms >= 0) {
        abs_deadline(&dl, (int64_t)timeout_ms * 1000000LL);
    }
    pthread_mutex_lock(&c->mu);
    while (find_req(c, request) != NULL) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT) {
            st = find_req(c, request) != NULL ? LKV_ERR_TIMEOUT : LKV_OK;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return st;
}

lkv_status_t lkv_client_poll(lkv_client_t *c, int timeout_ms,
                             lkv_client_event_t **ev_p)
{
    struct timespec dl;
    polled_t       *q = NULL;

    if (c == NULL || ev_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (on_io_thread(c)) {
        return LKV_ERR_BUSY;
    }
    if (timeout_ms > 0) {
        abs_deadline(&dl, (int64_t)timeout_ms * 1000000LL);
    }
    pthread_mutex_lock(&c->mu);
    while (c->queue_head == NULL && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT) {
            break;
        }
    }
    if (c->queue_head != NULL) {
        q             = c->queue_head;
        c->queue_head = q->next;
        if (c->queue_head == NULL) {
            c->queue_tail = NULL;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (q == NULL) {
        return LKV_ERR_TIMEOUT;
    }
    *ev_p = &q->ev;
    return LKV_OK;
}

void lkv_client_event_free(lkv_client_event_t *ev)
{
    free(ev); /* ev is the first member of its polled_t allocation */
}

int lkv_client_pending(lkv_client_t *c)
{
    int n;

    if (c == NULL) {
        return 0;
    }
    pthread_mutex_lock(&c->mu);
    n = c->n_pending;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Send a health/stats query and wait for its reply (moved into *reply). */
static lkv_status_t query(lkv_client_t *c, lkv_wire_type_t type,
                          lkv_wire_type_t want, int timeout_ms,
                          lkv_wire_msg_t *reply)
{
    call_t          k;
    lkv_wire_msg_t  m;
    lkv_wire_buf_t  b;
    struct timespec dl;
    lkv_status_t    st;

    if (c == NULL || reply == NULL) {
        return LKV_ERR_INVALID;
    }
    if (on_io_thread(c)) {
        return LKV_ERR_BUSY;
    }
    if (timeout_ms <= 0) {
        timeout_ms = c->opts.server_timeout_ms > 0 ? c->opts.server_timeout_ms
                                                   : 30000;
    }
    memset(&k, 0, sizeof(k));
    k.want = want;
    lkv_wire_msg_init(&m, type);
    pthread_mutex_lock(&c->mu);
    if (c->closing || c->dead) {
        pthread_mutex_unlock(&c->mu);
        return c->dead ? LKV_ERR_IO : LKV_ERR_CANCELLED;
    }
    k.id = c->next_id++;
    lkv_wire_id_set_uint(&m.id, k.id);
    k.next  = c->calls;
    c->calls = &k;
    c->n_calls++;
    pthread_mutex_unlock(&c->mu);

    lkv_wire_buf_init(&b);
    st = lkv_wire_encode(&m, &b);
    if (st == LKV_OK) {
        st = push_cmd(c, CMD_SEND, k.id, b.data, b.len);
    }
    lkv_wire_buf_free(&b);
    abs_deadline(&dl, (int64_t)timeout_ms * 1000000LL);
    pthread_mutex_lock(&c->mu);
    if (st != LKV_OK) {
        if (!k.done) {
            remove_call(c, &k);
        }
        pthread_mutex_unlock(&c->mu);
        lkv_wire_msg_release(&k.reply);
        return st;
    }
    while (!k.done) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT &&
            !k.done) {
            remove_call(c, &k);
            pthread_mutex_unlock(&c->mu);
            LKV_LOG_INFO("no %s reply from server %s within %d ms: is it "
                         "running?",
                          lkv_wire_type_name(type), c->endpoint, timeout_ms);
            return LKV_ERR_TIMEOUT;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (k.status != LKV_OK) {
        LKV_LOG_INFO("%s failed: %s (%s)", lkv_wire_type_name(type),
                     k.message, lkv_status_name(k.status));
        lkv_wire_msg_release(&k.reply);
        return k.status;
    }
    *reply = k.reply;
    return LKV_OK;
}

lkv_status_t lkv_client_health(lkv_client_t *c, int timeout_ms,
                               lkv_client_health_t *out)
{
    lkv_wire_msg_t r;
    int64_t        t0 = lkv_now_ns();

    if (out == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(query(c, LKV_WIRE_HEALTH, LKV_WIRE_HEALTH_REPLY, timeout_ms, &r));
    memset(out, 0, sizeof(*out));
    const lkv_wire_health_reply_t *h = &r.u.health_reply;
    snprintf(out->status, sizeof(out->status), "%s",
             h->status != NULL ? h->status : "");
    snprintf(out->model, sizeof(out->model), "%s",
             h->model != NULL ? h->model : "");
    snprintf(out->version, sizeof(out->version), "%s",
             h->version != NULL ? h->version : "");
    out->uptime_s  = h->uptime_s;
    out->n_running = h->n_running;
    out->n_waiting = h->n_waiting;
    out->rtt_ms    = (double)(lkv_now_ns() - t0) / 1e6;
    lkv_wire_msg_release(&r);
    return LKV_OK;
}

lkv_status_t lkv_client_stats(lkv_client_t *c, int timeout_ms, char **json_p,
                              char **text_p)
{
    lkv_wire_msg_t r;
    char          *json = NULL, *text = NULL;

    LKV_CHECK(query(c, LKV_WIRE_STATS, LKV_WIRE_STATS_REPLY, timeout_ms, &r));
    if (json_p != NULL) {
        json = strdup(r.u.stats_reply.json != NULL ? r.u.stats_reply.json
                                                   : "{}");
    }
    if (text_p != NULL) {
        text = strdup(r.u.stats_reply.text != NULL ? r.u.stats_reply.text : "");
    }
    lkv_wire_msg_release(&r);
    if ((json_p != NULL && json == NULL) || (text_p != NULL && text == NULL)) {
        free(json);
        free(text);
        return LKV_ERR_NOMEM;
    }
    if (json_p != NULL) {
        *json_p = json;
    }
    if (text_p != NULL) {
        *text_p = text;
    }
    return LKV_OK;
}
