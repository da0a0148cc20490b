/* worker_loop.h - the worker role shared by `layerkv worker` (a process
 * that connects to a coordinator over tcp:// or ipc://) and `layerkv serve`
 * (the same loop on a thread, over inproc://): connect a DEALER, send
 * `hello`, receive `config`, load the model and create the step executor
 * (worker/step_exec.h), then for every `step_plan` run it and answer with
 * its `step_result`, until `shutdown` or *stop (docs/protocol.md §7).
 *
 * A setup failure (model, backend, pools) is reported to the coordinator as
 * a step_result with step_id 0 and the error status, then the loop returns.
 * A kvnode that cannot be reached before hello ends the loop with its
 * error (no hello is sent).
 *
 * Threading: runs on the calling thread; the ZeroMQ context may be shared
 * with other threads (inproc).
 */
#ifndef LKV_CMD_WORKER_LOOP_H
#define LKV_CMD_WORKER_LOOP_H

#include <signal.h>

#include "common/status.h"

typedef struct {
    const char *coordinator; /* endpoint to connect to */
    void       *zctx;        /* ZeroMQ context (borrowed) */
    const char *backend;     /* "cpu" | "cuda" */
    int         threads;     /* CPU compute threads (0 = all) */
    double      link_gbps;   /* emulated link cap (CPU backend), 0 = none */
    const char *model_override; /* load this path instead of config.model */
    const char *tokenizer_path;  /* or NULL */
    int         instance;    /* reported in hello */
    double      connect_timeout_s; /* wait for `config` (0 = forever) */
    volatile sig_atomic_t *stop;   /* may be NULL */
    struct lkv_par *par; /* TP/PP peers of this instance leader
                            (worker/parallel.h), or NULL */
    /* remote KV tier: `layerkv kvnode` control endpoints (borrowed), or
     * n_kvnodes 0. The worker connects to them and measures put/get
     * bandwidth before its hello (which reports capacity and bandwidth,
     * docs/protocol.md §7.1), then offloads into the remote layer-blocks
     * the coordinator's config grants it. */
    const char *const *kvnodes;
    int                n_kvnodes;
} lkv_worker_loop_config_t;

/* Returns LKV_OK after `shutdown` or *stop, or the setup/transport error
 * (logged with what to do). */
lkv_status_t lkv_worker_loop_run(const lkv_worker_loop_config_t *cfg);

#endif /* LKV_CMD_WORKER_LOOP_H */
