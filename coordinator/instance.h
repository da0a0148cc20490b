/* instance.h - one instance (data-parallel replica) as seen by the
 * coordinator: its scheduler (coordinator/scheduler.h) and the link to its
 * worker (a DEALER peer of the coordinator's worker ROUTER; inproc:// when
 * embedded, tcp:// or ipc:// otherwise; docs/protocol.md §7).
 *
 * The instance only builds and parses bytes; the caller (coordinator/core.h)
 * moves them over ZeroMQ. Lifecycle: create (DOWN) -> attach(hello) encodes
 * the `config` reply (UP) -> next() encodes a step_plan when one can run and
 * none is outstanding -> on_result() consumes the step_result ->
 * detach()/reset when the worker is lost (scheduler state recreated empty).
 *
 * Threading: owned by the coordinator thread; not thread-safe.
 */
#ifndef LKV_COORDINATOR_INSTANCE_H
#define LKV_COORDINATOR_INSTANCE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/scheduler.h"
#include "transport/wire.h"
#include "transport/zmq_util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int                index;      /* instance number */
    lkv_sched_config_t sched;      /* complete scheduler config */
    const char        *model_path; /* sent in `config` (copied) */
    uint32_t           worker_max_batch_tokens; /* per step on the worker */
} lkv_inst_config_t;

typedef struct lkv_inst lkv_inst_t;

/* Errors: those of lkv_sched_create (LKV_ERR_INVALID names the field in the
 * log), LKV_ERR_NOMEM. */
lkv_status_t lkv_inst_create(const lkv_inst_config_t *cfg, lkv_inst_t **i_p);
void         lkv_inst_destroy(lkv_inst_t **i_p);

int          lkv_inst_index(const lkv_inst_t *in);
bool         lkv_inst_up(const lkv_inst_t *in);
lkv_sched_t *lkv_inst_sched(lkv_inst_t *in);
const lkv_sched_config_t *lkv_inst_sched_config(const lkv_inst_t *in);
/* Whether peer is this instance's worker. */
bool lkv_inst_is_worker(const lkv_inst_t *in, const lkv_zmq_peer_t *peer);
const lkv_zmq_peer_t *lkv_inst_worker(const lkv_inst_t *in);

/* A worker said hello: remember its identity, encode the `config` reply
 * into out. LKV_ERR_BUSY if a worker is already attached. Logs what the
 * worker reported (backend, blocks, link). */
lkv_status_t lkv_inst_attach(lkv_inst_t *in, const lkv_zmq_peer_t *peer,
                             const lkv_wire_hello_t *hello,
                             lkv_wire_buf_t *out);

/* Forget the worker and reset the scheduler to empty (every live request of
 * the instance is gone: the caller answers their clients first). */
lkv_status_t lkv_inst_reset(lkv_inst_t *in);

/* If the instance is up and no plan is outstanding, build the next plan and
 * encode it into out: *have_p = true. LKV_OK with *have_p = false when there
 * is nothing to run. Scheduler errors are returned (LKV_ERR_NOMEM...). */
lkv_status_t lkv_inst_next(lkv_inst_t *in, int64_t now_ns,
                           lkv_wire_buf_t *out, bool *have_p);
bool         lkv_inst_outstanding(const lkv_inst_t *in);
/* Age of the outstanding plan (0 when none). */
int64_t      lkv_inst_outstanding_ns(const lkv_inst_t *in, int64_t now_ns);

/* Consume the worker's step_result. Errors: LKV_ERR_PROTOCOL (no plan
 * outstanding or step id mismatch), those of lkv_sched_on_result. */
lkv_status_t lkv_inst_on_result(lkv_inst_t *in, const lkv_step_result_t *res,
                                int64_t now_ns);

/* Prompt tokens queued on this instance and not yet prefilled (kept by the
 * core for routing). */
void    lkv_inst_add_queued_tokens(lkv_inst_t *in, int64_t delta);
int64_t lkv_inst_queued_tokens(const lkv_inst_t *in);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_INSTANCE_H */
