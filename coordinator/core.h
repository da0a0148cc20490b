/* core.h - the coordinator's request lifecycle (DESIGN.md §2): client
 * messages in (docs/protocol.md §4), tokenization and validation, routing
 * to an instance (coordinator/router.h), scheduler events out as streamed
 * `token` messages with incremental detokenization and a terminal `done`,
 * SLO defaults and per-request overrides, cancel, clients that vanish
 * (a send to their identity fails: their requests are cancelled and their
 * KV blocks freed), per-request time limits, worker links
 * (coordinator/instance.h), `health` / `stats` replies and the metrics
 * (coordinator/metrics.h).
 *
 * The core does no socket I/O itself: it is given whole frames and sends
 * replies through the caller's send function (coordinator/frontend.h wires
 * it to ZeroMQ ROUTER sockets; tests capture the bytes). Every frame from a
 * client is untrusted: malformed input gets an `error` reply, never a crash.
 *
 * Threading: one thread (the coordinator loop) calls every function; the
 * metrics object it owns may be read from other threads.
 */
#ifndef LKV_COORDINATOR_CORE_H
#define LKV_COORDINATOR_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/metrics.h"
#include "coordinator/scheduler.h"
#include "transport/zmq_util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LKV_CORE_TO_CLIENT = 0,
    LKV_CORE_TO_WORKER = 1,
} lkv_core_dest_t;

/* Send one frame to peer. Must not block for long; returns LKV_OK,
 * LKV_ERR_PEER_LOST when the peer is gone (the core then drops it), or
 * another error (logged; a client send failure also drops the client). */
typedef lkv_status_t (*lkv_core_send_fn)(void *ctx, lkv_core_dest_t dest,
                                         const lkv_zmq_peer_t *peer,
                                         const void *data, size_t len);

typedef struct {
    const char *model_path;     /* the model (tokenizer + config) */
    const char *tokenizer_path; /* NULL: the model's own */
    int         n_instances;    /* >= 1 */
    /* Scheduler template: policy, KV pools, batching, SLO defaults, links,
     * LAYERKV knobs. n_layers, block_bytes, max_seq_len and stop ids are
     * filled from the model by lkv_core_create. */
    lkv_sched_config_t sched;
    double request_timeout_s;   /* a request running longer is ended with
                                   LKV_ERR_TIMEOUT; 0 = no limit */
    double worker_timeout_s;    /* a step unanswered this long marks the
                                   worker lost; 0 = no limit */
    lkv_core_send_fn send;
    void            *send_ctx;
} lkv_core_config_t;

/* n_instances 1, scheduler defaults (policy layerkv, 1024 device + 4096
 * host blocks), request timeout 600 s, worker timeout 120 s. */
lkv_core_config_t lkv_core_config_default(void);

typedef struct lkv_core lkv_core_t;

/* Open the model file (tokenizer, config) and create the instances and the
 * metrics. Errors: LKV_ERR_INVALID (config; logged), those of
 * lkv_model_file_open, LKV_ERR_NOMEM. */
lkv_status_t lkv_core_create(const lkv_core_config_t *cfg, lkv_core_t **c_p);
/* Frees everything (no messages are sent; call lkv_core_shutdown first). */
void         lkv_core_destroy(lkv_core_t **c_p);

/* A frame from a client (untrusted). Never fails: errors are replies. */
void lkv_core_on_client(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                        const void *data, size_t len, int64_t now_ns);
/* A client sent a message that was not one frame: answer with `error`. */
void lkv_core_on_client_bad_frames(lkv_core_t *c, const lkv_zmq_peer_t *peer);

/* A frame from a worker (hello, step_result). Malformed or unexpected
 * frames are logged and dropped; a worker that fails its setup (a
 * step_result with step_id 0 and an error status) is detached. */
void lkv_core_on_worker(lkv_core_t *c, const lkv_zmq_peer_t *peer,
                        const void *data, size_t len, int64_t now_ns);

/* Periodic work: deferred cancels, time limits, plans to idle workers,
 * metrics state. Returns the poll timeout (ms) the loop should use. */
int lkv_core_tick(lkv_core_t *c, int64_t now_ns);

/* Graceful stop: health says "draining"; every live request ends with
 * `done` finish_reason "error" (LKV_ERR_CANCELLED, "server shutting
 * down"); workers get `shutdown`. */
void lkv_core_shutdown(lkv_core_t *c, const char *reason);

/* Observability for the loop and tests. */
typedef struct {
    int      n_live;          /* requests known to the core */
    int      n_instances;
    int      n_instances_up;
    uint64_t n_submitted;
    uint64_t n_finished;
    uint64_t n_errors_sent;   /* `error` replies */
    uint64_t n_clients_lost;  /* sends that found the client gone */
    int32_t  blocks_used[LKV_KV_TIER_COUNT];
} lkv_core_info_t;

void lkv_core_info(const lkv_core_t *c, lkv_core_info_t *out);

lkv_metrics_t *lkv_core_metrics(lkv_core_t *c);

/* Model facts for the worker side of embedded serving and for logs. */
int lkv_core_n_layers(const lkv_core_t *c);
int lkv_core_max_seq_len(const lkv_core_t *c);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_CORE_H */
