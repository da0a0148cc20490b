/* frontend.c - ZeroMQ loop of the coordinator (see frontend.h).
 * Threading: one thread. */
#define LKV_LOG_MODULE "frontend"

#include "coordinator/frontend.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"

#define BURST 256 /* frames taken from one socket per loop turn */

struct lkv_frontend {
    void *clients;
    void *workers;
    char *client_listen;
    bool  clients_bound;
};

lkv_status_t lkv_frontend_create(const lkv_frontend_config_t *cfg,
                                 lkv_frontend_t **fe_p)
{
    lkv_frontend_t *fe;
    lkv_zmq_opts_t  co = lkv_zmq_opts_default();
    lkv_zmq_opts_t  wo = lkv_zmq_opts_default();
    lkv_status_t    st;

    if (cfg == NULL || fe_p == NULL || cfg->zctx == NULL ||
        cfg->client_listen == NULL || cfg->worker_listen == NULL) {
        return LKV_ERR_INVALID;
    }
    fe = calloc(1, sizeof(*fe));
    if (fe == NULL) {
        return LKV_ERR_NOMEM;
    }
    co.router_mandatory     = true;
    co.sndhwm               = 100000;
    co.rcvhwm               = 100000;
    co.max_msg_bytes        = 4 << 20;
    co.heartbeat_ivl_ms     = cfg->heartbeat_ivl_ms > 0 ? cfg->heartbeat_ivl_ms
                                                        : 2000;
    co.heartbeat_timeout_ms = cfg->heartbeat_timeout_ms > 0
                                  ? cfg->heartbeat_timeout_ms
                                  : 10000;
    wo.router_mandatory     = true;
    wo.max_msg_bytes        = (int64_t)256 << 20;
    st = lkv_zmq_socket(cfg->zctx, ZMQ_ROUTER, &co, &fe->clients);
    if (st == LKV_OK) {
        st = lkv_zmq_socket(cfg->zctx, ZMQ_ROUTER, &wo, &fe->workers);
    }
    if (st == LKV_OK) {
        st = lkv_zmq_bind(fe->workers, cfg->worker_listen);
    }
    if (st == LKV_OK && !cfg->bind_clients_when_up) {
        st = lkv_zmq_bind(fe->clients, cfg->client_listen);
        fe->clients_bound = st == LKV_OK;
    }
    if (st == LKV_OK) {
        fe->client_listen = strdup(cfg->client_listen);
        st = fe->client_listen != NULL ? LKV_OK : LKV_ERR_NOMEM;
    }
    if (st != LKV_OK) {
        lkv_frontend_destroy(&fe);
        return st;
    }
    *fe_p = fe;
    return LKV_OK;
}

void lkv_frontend_destroy(lkv_frontend_t **fe_p)
{
    if (fe_p == NULL || *fe_p == NULL) {
        return;
    }
    lkv_zmq_close(&(*fe_p)->clients);
    lkv_zmq_close(&(*fe_p)->workers);
    free((*fe_p)->client_listen);
    free(*fe_p);
    *fe_p = NULL;
}

lkv_status_t lkv_frontend_send(void *ctx, lkv_core_dest_t dest,
                               const lkv_zmq_peer_t *peer, const void *data,
                               size_t len)
{
    lkv_frontend_t *fe = ctx;
    lkv_status_t    st;

    st = lkv_zmq_router_send(dest == LKV_CORE_TO_CLIENT ? fe->clients
                                                        : fe->workers,
                             peer, data, len, true);
    if (st == LKV_AGAIN) {
        /* the peer's queue is full (100k messages): it is not reading */
        return LKV_ERR_BUSY;
    }
    return st;
}

static void take(lkv_frontend_t *fe, lkv_core_t *core, bool workers)
{
    void *sock = workers ? fe->workers : fe->clients;

    for (int i = 0; i < BURST; i++) {
        lkv_zmq_peer_t  peer;
        lkv_zmq_frame_t f;
        lkv_status_t    st;

        memset(&f, 0, sizeof(f));
        st = lkv_zmq_router_recv(sock, &peer, &f, true);
        if (st == LKV_AGAIN) {
            return;
        }
        if (st == LKV_ERR_PROTOCOL) {
            if (!workers) {
                lkv_core_on_client_bad_frames(core, &peer);
            } else {
                LKV_LOG_WARN("dropping a multi-frame message from a worker");
            }
            continue;
        }
        if (st != LKV_OK) {
            LKV_LOG_WARN("receive failed: %s", lkv_status_str(st));
            return;
        }
        if (workers) {
            lkv_core_on_worker(core, &peer, lkv_zmq_frame_data(&f),
                               lkv_zmq_frame_size(&f), lkv_now_ns());
        } else {
            lkv_core_on_client(core, &peer, lkv_zmq_frame_data(&f),
                               lkv_zmq_frame_size(&f), lkv_now_ns());
        }
        lkv_zmq_frame_close(&f);
    }
}

lkv_status_t lkv_frontend_run(lkv_frontend_t *fe, lkv_core_t *core,
                              volatile sig_atomic_t *stop)
{
    void *const socks[2] = {fe->clients, fe->workers};
    int         timeout  = 0;

    while (!*stop) {
        bool         ready[2] = {false, false};
        lkv_status_t st       = lkv_zmq_poll_in(socks, 2, timeout, ready);
        if (st != LKV_OK && st != LKV_ERR_TIMEOUT) {
            if (*stop) {
                break;
            }
            LKV_LOG_ERROR("poll failed: %s", lkv_status_str(st));
            return LKV_ERR_IO;
        }
        /* worker results first: they free blocks and produce tokens */
        if (ready[1]) {
            take(fe, core, true);
        }
        if (ready[0]) {
            take(fe, core, false);
        }
        timeout = lkv_core_tick(core, lkv_now_ns());
        if (!fe->clients_bound) {
            lkv_core_info_t info;
            lkv_core_info(core, &info);
            if (info.n_instances_up == info.n_instances) {
                st = lkv_zmq_bind(fe->clients, fe->client_listen);
                if (st != LKV_OK) {
                    return st;
                }
                fe->clients_bound = true;
                LKV_LOG_INFO("serving clients on %s", fe->client_listen);
            }
        }
    }
    LKV_LOG_INFO("stopping: ending live requests, shutting workers down");
    lkv_core_shutdown(core, "coordinator stopping");
    return LKV_OK;
}
