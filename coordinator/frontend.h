/* frontend.h - the coordinator's ZeroMQ event loop: a ROUTER for clients
 * (docs/protocol.md §1), a ROUTER for workers (§7; `inproc://` when the
 * worker runs in the same process, `tcp://` or `ipc://` otherwise), polled
 * together; frames go to coordinator/core.h, whose replies come back
 * through lkv_frontend_send.
 *
 * Client socket: ZMQ_ROUTER_MANDATORY (a send to a client that went away
 * fails at once, so its requests are cancelled and their blocks freed),
 * ZMTP heartbeats (a silent dead TCP peer is dropped after
 * heartbeat_timeout), a cap on inbound message size (bigger frames drop
 * the connection before any allocation; frames under it but over the
 * protocol's 1 MiB get an error reply).
 *
 * Threading: create, run and destroy on one thread; only `stop` is touched
 * from elsewhere (a signal handler may set it).
 */
#ifndef LKV_COORDINATOR_FRONTEND_H
#define LKV_COORDINATOR_FRONTEND_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"
#include "coordinator/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *client_listen; /* e.g. tcp://127.0.0.1:5555 */
    const char *worker_listen; /* e.g. inproc://lkv-workers, tcp://...:5556 */
    void       *zctx;          /* ZeroMQ context (borrowed; inproc needs the
                                  workers to share it) */
    int heartbeat_ivl_ms;      /* client ZMTP heartbeat (default 2000) */
    int heartbeat_timeout_ms;  /* default 10000 */
    bool bind_clients_when_up; /* bind client_listen only once every
                                  instance has a worker (embedded serve:
                                  clients never see a server without one) */
} lkv_frontend_config_t;

typedef struct lkv_frontend lkv_frontend_t;

/* Create and bind both sockets. Errors: LKV_ERR_INVALID (bad endpoint),
 * LKV_ERR_BUSY (address in use), LKV_ERR_IO; the log names the endpoint. */
lkv_status_t lkv_frontend_create(const lkv_frontend_config_t *cfg,
                                 lkv_frontend_t **fe_p);
void         lkv_frontend_destroy(lkv_frontend_t **fe_p);

/* lkv_core_send_fn for core configs: ctx is the frontend. */
lkv_status_t lkv_frontend_send(void *ctx, lkv_core_dest_t dest,
                               const lkv_zmq_peer_t *peer, const void *data,
                               size_t len);

/* Serve until *stop becomes nonzero, then lkv_core_shutdown and a short
 * drain (up to 1 s) so the last replies leave. Returns LKV_OK, or LKV_ERR_IO
 * when polling fails. */
lkv_status_t lkv_frontend_run(lkv_frontend_t *fe, lkv_core_t *core,
                              volatile sig_atomic_t *stop);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_FRONTEND_H */
