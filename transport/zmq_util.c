/* zmq_util.c - ZeroMQ helpers; see zmq_util.h. Thread-safety as libzmq:
 * one thread per socket at a time. */
#define LKV_LOG_MODULE "zmq"
#include <errno.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/zmq_util.h"

lkv_zmq_opts_t lkv_zmq_opts_default(void)
{
    lkv_zmq_opts_t o = {
        .sndhwm               = 0,
        .rcvhwm               = 0,
        .linger_ms            = 0,
        .max_msg_bytes        = -1,
        .router_mandatory     = false,
        .reconnect_ivl_ms     = 0,
        .heartbeat_ivl_ms     = 0,
        .heartbeat_timeout_ms = 0,
    };
    return o;
}

static lkv_status_t from_errno(int e)
{
    switch (e) {
    case EAGAIN:
        return LKV_AGAIN;
    case EHOSTUNREACH:
        return LKV_ERR_PEER_LOST;
    case ETERM:
        return LKV_ERR_CANCELLED;
    case ENOMEM:
        return LKV_ERR_NOMEM;
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
        return LKV_ERR_INVALID;
    case EADDRINUSE:
        return LKV_ERR_BUSY;
    default:
        return LKV_ERR_IO;
    }
}

lkv_status_t lkv_zmq_ctx_create(void **ctx_p)
{
    void *ctx = zmq_ctx_new();

    if (ctx == NULL) {
        LKV_LOG_ERROR("zmq_ctx_new failed: %s", zmq_strerror(errno));
        return LKV_ERR_NOMEM;
    }
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
    *ctx_p = ctx;
    return LKV_OK;
}

void lkv_zmq_ctx_destroy(void **ctx_p)
{
    if (ctx_p == NULL || *ctx_p == NULL) {
        return;
    }
    while (zmq_ctx_term(*ctx_p) != 0 && errno == EINTR) {
    }
    *ctx_p = NULL;
}

static int setopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof(v));
}

lkv_status_t lkv_zmq_socket(void *ctx, int type, const lkv_zmq_opts_t *opts,
                            void **sock_p)
{
    lkv_zmq_opts_t o = opts != NULL ? *opts : lkv_zmq_opts_default();
    void          *s;
    int            rc = 0;

    if (ctx == NULL || sock_p == NULL) {
        return LKV_ERR_INVALID;
    }
    s = zmq_socket(ctx, type);
    if (s == NULL) {
        int e = errno;
        LKV_LOG_ERROR("zmq_socket(type %d) failed: %s", type,
                      zmq_strerror(e));
        return from_errno(e) == LKV_ERR_CANCELLED ? LKV_ERR_CANCELLED
                                                  : LKV_ERR_IO;
    }
    rc |= setopt_int(s, ZMQ_LINGER, o.linger_ms);
    if (o.sndhwm > 0) {
        rc |= setopt_int(s, ZMQ_SNDHWM, o.sndhwm);
    }
    if (o.rcvhwm > 0) {
        rc |= setopt_int(s, ZMQ_RCVHWM, o.rcvhwm);
    }
    if (o.max_msg_bytes >= 0) {
        rc |= zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &o.max_msg_bytes,
                             sizeof(o.max_msg_bytes));
    }
    if (o.router_mandatory && type == ZMQ_ROUTER) {
        rc |= setopt_int(s, ZMQ_ROUTER_MANDATORY, 1);
    }
    if (o.reconnect_ivl_ms > 0) {
        rc |= setopt_int(s, ZMQ_RECONNECT_IVL, o.reconnect_ivl_ms);
    }
    if (o.heartbeat_ivl_ms > 0) {
        rc |= setopt_int(s, ZMQ_HEARTBEAT_IVL, o.heartbeat_ivl_ms);
        rc |= setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT,
                         o.heartbeat_timeout_ms > 0 ? o.heartbeat_timeout_ms
                                                    : 3 * o.heartbeat_ivl_ms);
    }
    if (rc != 0) {
        LKV_LOG_ERROR("zmq_setsockopt failed: %s", zmq_strerror(errno));
        zmq_close(s);
        return LKV_ERR_IO;
    }
    *sock_p = s;
    return LKV_OK;
}

void lkv_zmq_close(void **sock_p)
{
    if (sock_p == NULL || *sock_p == NULL) {
        return;
    }
    zmq_close(*sock_p);
    *sock_p = NULL;
}

static lkv_status_t attach(void *sock, const char *endpoint, bool bind)
{
    int rc;

    if (sock == NULL || endpoint == NULL || endpoint[0] == '\0') {
        return LKV_ERR_INVALID;
    }
    rc = bind ? zmq_bind(sock, endpoint) : zmq_connect(sock, endpoint);
    if (rc != 0) {
        int          e  = errno;
        lkv_status_t st = from_errno(e);

        if (st == LKV_AGAIN) {
            st = LKV_ERR_IO;
        }
        LKV_LOG_ERROR("cannot %s '%s': %s (use tcp://HOST:PORT, "
                      "ipc:///PATH or inproc://NAME%s)",
                      bind ? "bind" : "connect to", endpoint, zmq_strerror(e),
                      st == LKV_ERR_BUSY ? "; is another server running?"
                                         : "");
        return st;
    }
    return LKV_OK;
}

lkv_status_t lkv_zmq_bind(void *sock, const char *endpoint)
{
    return attach(sock, endpoint, true);
}

lkv_status_t lkv_zmq_connect(void *sock, const char *endpoint)
{
    return attach(sock, endpoint, false);
}

lkv_status_t lkv_zmq_last_endpoint(void *sock, char *out, size_t cap)
{
    size_t len = cap;

    if (sock == NULL || out == NULL || cap == 0) {
        return LKV_ERR_INVALID;
    }
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, out, &len) != 0) {
        return LKV_ERR_IO;
    }
    out[cap - 1] = '\0';
    return LKV_OK;
}

lkv_status_t lkv_zmq_poll_in(void *const *socks, int n, int timeout_ms,
                             bool *readable_out)
{
    zmq_pollitem_t items[8];
    int64_t        deadline = lkv_now_ns() + (int64_t)timeout_ms * 1000000LL;

    if (n <= 0 || n > 8) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof(items[i]));
        items[i].socket = socks[i];
        items[i].events = ZMQ_POLLIN;
    }
    for (;;) {
        long wait = timeout_ms;

        if (timeout_ms >= 0) {
            int64_t left = deadline - lkv_now_ns();
            wait         = left <= 0 ? 0 : (long)((left + 999999) / 1000000);
        }
        int rc = zmq_poll(items, n, wait);
        if (rc > 0) {
            for (int i = 0; i < n; i++) {
                readable_out[i] = (items[i].revents & ZMQ_POLLIN) != 0;
            }
            return LKV_OK;
        }
        if (rc == 0) {
            if (timeout_ms >= 0 && lkv_now_ns() >= deadline) {
                return LKV_ERR_TIMEOUT;
            }
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == ETERM) {
            return LKV_ERR_CANCELLED;
        }
        LKV_LOG_ERROR("zmq_poll failed: %s", zmq_strerror(errno));
        return LKV_ERR_IO;
    }
}

lkv_status_t lkv_zmq_wait_readable(void *sock, int timeout_ms)
{
    bool r = false;

    return lkv_zmq_poll_in(&sock, 1, timeout_ms, &r);
}

static lkv_status_t send_part(void *sock, const void *data, size_t len,
                              int flags)
{
    for (;;) {
        if (zmq_send(sock, data, len, flags) >= 0) {
            return LKV_OK;
        }
        if (errno == EINTR) {
            continue;
        }
        return from_errno(errno);
    }
}

lkv_status_t lkv_zmq_send(void *sock, const void *data, size_t len,
                          bool dontwait)
{
    lkv_status_t st = send_part(sock, data, len, dontwait ? ZMQ_DONTWAIT : 0);

    if (st == LKV_ERR_IO) {
        LKV_LOG_ERROR("zmq_send of %zu bytes failed: %s", len,
                      zmq_strerror(errno));
    }
    return st;
}

void lkv_zmq_frame_close(lkv_zmq_frame_t *f)
{
    if (f != NULL && f->live) {
        zmq_msg_close(&f->msg);
        f->live = false;
    }
}

static bool more(void *sock)
{
    int    m   = 0;
    size_t len = sizeof(m);

    return zmq_getsockopt(sock, ZMQ_RCVMORE, &m, &len) == 0 && m != 0;
}

static void drain(void *sock)
{
    while (more(sock)) {
        zmq_msg_t m;

        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0 && errno != EINTR) {
            zmq_msg_close(&m);
            return;
        }
        zmq_msg_close(&m);
    }
}

static lkv_status_t recv_part(void *sock, zmq_msg_t *m, int flags)
{
    zmq_msg_init(m);
    for (;;) {
        if (zmq_msg_recv(m, sock, flags) >= 0) {
            return LKV_OK;
        }
        if (errno == EINTR) {
            continue;
        }
        int e = errno;
        zmq_msg_close(m);
        if (e != EAGAIN && e != ETERM) {
            LKV_LOG_ERROR("zmq_msg_recv failed: %s", zmq_strerror(e));
        }
        return from_errno(e);
    }
}

lkv_status_t lkv_zmq_recv(void *sock, lkv_zmq_frame_t *f, bool dontwait)
{
    lkv_status_t st;

    f->live = false;
    st      = recv_part(sock, &f->msg, dontwait ? ZMQ_DONTWAIT : 0);
    if (st != LKV_OK) {
        return st;
    }
    if (more(sock)) {
        zmq_msg_close(&f->msg);
        drain(sock);
        return LKV_ERR_PROTOCOL;
    }
    f->live = true;
    return LKV_OK;
}

lkv_status_t lkv_zmq_router_recv(void *sock, lkv_zmq_peer_t *peer,
                                 lkv_zmq_frame_t *body, bool dontwait)
{
    zmq_msg_t    idm;
    lkv_status_t st;

    body->live = false;
    memset(peer, 0, sizeof(*peer));
    st = recv_part(sock, &idm, dontwait ? ZMQ_DONTWAIT : 0);
    if (st != LKV_OK) {
        return st;
    }
    peer->id_len = zmq_msg_size(&idm);
    if (peer->id_len > sizeof(peer->id)) {
        peer->id_len = sizeof(peer->id); /* libzmq caps identities at 255 */
    }
    memcpy(peer->id, zmq_msg_data(&idm), peer->id_len);
    zmq_msg_close(&idm);
    if (!more(sock)) {
        return LKV_ERR_PROTOCOL;
    }
    st = recv_part(sock, &body->msg, 0);
    if (st != LKV_OK) {
        return st;
    }
    if (zmq_msg_size(&body->msg) == 0 && more(sock)) {
        /* REQ-style empty delimiter */
        zmq_msg_close(&body->msg);
        peer->delimiter = true;
        st              = recv_part(sock, &body->msg, 0);
        if (st != LKV_OK) {
            return st;
        }
    }
    if (more(sock)) {
        zmq_msg_close(&body->msg);
        drain(sock);
        return LKV_ERR_PROTOCOL;
    }
    body->live = true;
    return LKV_OK;
}

lkv_status_t lkv_zmq_router_send(void *sock, const lkv_zmq_peer_t *peer,
                                 const void *data, size_t len, bool dontwait)
{
    int          flags = dontwait ? ZMQ_DONTWAIT : 0;
    lkv_status_t st;

    st = send_part(sock, peer->id, peer->id_len, flags | ZMQ_SNDMORE);
    if (st != LKV_OK) {
        return st;
    }
    /* once the first part is queued, the rest is queued atomically */
    if (peer->delimiter) {
        st = send_part(sock, "", 0, ZMQ_SNDMORE);
        if (st != LKV_OK) {
            return st;
        }
    }
    st = send_part(sock, data, len, 0);
    if (st == LKV_ERR_IO) {
        LKV_LOG_ERROR("zmq router send failed: %s", zmq_strerror(errno));
    }
    return st;
}
