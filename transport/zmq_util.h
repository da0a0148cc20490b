/* zmq_util.h - ZeroMQ helpers shared by the client, the coordinator and the
 * workers: sockets with sane defaults (linger 0, high-water marks, optional
 * max message size), bind/connect with clear errors, poll with a timeout,
 * single-frame send/receive and ROUTER envelope handling
 * (docs/protocol.md §1).
 *
 * libzmq errors are converted to lkv_status_t here and logged once with
 * zmq_strerror. Threading: a ZeroMQ socket must be used by one thread at a
 * time (libzmq rule); the context is thread-safe.
 */
#ifndef LKV_TRANSPORT_ZMQ_UTIL_H
#define LKV_TRANSPORT_ZMQ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int     sndhwm;           /* messages queued per peer before send blocks
                                 (or fails with LKV_AGAIN); 0 = libzmq default */
    int     rcvhwm;           /* same for receiving */
    int     linger_ms;        /* after close; default 0 (never block) */
    int64_t max_msg_bytes;    /* ZMQ_MAXMSGSIZE: bigger inbound messages drop
                                 the connection; -1 = unlimited */
    bool    router_mandatory; /* ROUTER: sending to a gone identity fails with
                                 LKV_ERR_PEER_LOST instead of vanishing */
    int     reconnect_ivl_ms; /* 0 = libzmq default (100 ms) */
    int     heartbeat_ivl_ms; /* ZMTP heartbeats (tcp); 0 = off */
    int     heartbeat_timeout_ms;
} lkv_zmq_opts_t;

lkv_zmq_opts_t lkv_zmq_opts_default(void);

/* Context with one I/O thread. Errors: LKV_ERR_NOMEM/IO. */
lkv_status_t lkv_zmq_ctx_create(void **ctx_p);
/* zmq_ctx_term (all sockets must be closed first); NULL-safe, sets NULL. */
void         lkv_zmq_ctx_destroy(void **ctx_p);

/* Socket of type (ZMQ_ROUTER, ZMQ_DEALER, ZMQ_PAIR, ...) with opts (NULL =
 * default). Errors: LKV_ERR_IO. */
lkv_status_t lkv_zmq_socket(void *ctx, int type, const lkv_zmq_opts_t *opts,
                            void **sock_p);
/* Close (linger as set); NULL-safe, sets NULL. */
void         lkv_zmq_close(void **sock_p);

/* Errors: LKV_ERR_INVALID (malformed endpoint), LKV_ERR_BUSY (address in
 * use), LKV_ERR_IO. The message names the endpoint. */
lkv_status_t lkv_zmq_bind(void *sock, const char *endpoint);
lkv_status_t lkv_zmq_connect(void *sock, const char *endpoint);

/* After binding "tcp://host:*", the endpoint actually bound (cap bytes). */
lkv_status_t lkv_zmq_last_endpoint(void *sock, char *out, size_t cap);

/* Wait until sock is readable. timeout_ms < 0 waits forever. Returns LKV_OK
 * (readable), LKV_ERR_TIMEOUT, LKV_ERR_CANCELLED (context terminated) or
 * LKV_ERR_IO. EINTR is retried with the remaining time. */
lkv_status_t lkv_zmq_wait_readable(void *sock, int timeout_ms);

/* Poll n sockets for input; revents_out[i] = true when readable. Returns
 * LKV_OK (at least one readable), LKV_ERR_TIMEOUT, LKV_ERR_IO. */
lkv_status_t lkv_zmq_poll_in(void *const *socks, int n, int timeout_ms,
                             bool *readable_out);

/* Send one frame. dontwait: LKV_AGAIN when the HWM is reached. Errors:
 * LKV_ERR_PEER_LOST (ROUTER_MANDATORY, identity gone), LKV_ERR_CANCELLED
 * (context terminated), LKV_ERR_IO. */
lkv_status_t lkv_zmq_send(void *sock, const void *data, size_t len,
                          bool dontwait);

/* One received frame (owns a zmq_msg_t). */
typedef struct {
    zmq_msg_t msg;
    bool      live;
} lkv_zmq_frame_t;

static inline const void *lkv_zmq_frame_data(lkv_zmq_frame_t *f)
{
    return zmq_msg_data(&f->msg);
}
static inline size_t lkv_zmq_frame_size(lkv_zmq_frame_t *f)
{
    return zmq_msg_size(&f->msg);
}
/* Release the frame; safe on a frame that was never filled. */
void lkv_zmq_frame_close(lkv_zmq_frame_t *f);

/* Receive one message that must be a single frame (DEALER/PAIR side).
 * dontwait: LKV_AGAIN when nothing is queued. A multi-frame message is
 * drained and reported as LKV_ERR_PROTOCOL (f not filled). */
lkv_status_t lkv_zmq_recv(void *sock, lkv_zmq_frame_t *f, bool dontwait);

/* A ROUTER peer: its identity and whether it sent an empty delimiter. */
typedef struct {
    uint8_t id[256];
    size_t  id_len;
    bool    delimiter;
} lkv_zmq_peer_t;

/* ROUTER receive: [identity][body] or [identity][empty][body]. Other shapes
 * are drained: LKV_ERR_PROTOCOL with *peer filled (so the caller can answer
 * with an error) and body not filled. dontwait: LKV_AGAIN when empty. */
lkv_status_t lkv_zmq_router_recv(void *sock, lkv_zmq_peer_t *peer,
                                 lkv_zmq_frame_t *body, bool dontwait);

/* ROUTER send of one frame to peer, mirroring its envelope. dontwait and
 * errors as lkv_zmq_send (LKV_ERR_PEER_LOST when the peer is gone and the
 * socket has router_mandatory). */
lkv_status_t lkv_zmq_router_send(void *sock, const lkv_zmq_peer_t *peer,
                                 const void *data, size_t len, bool dontwait);

#ifdef __cplusplus
}
#endif

#endif /* LKV_TRANSPORT_ZMQ_UTIL_H */
