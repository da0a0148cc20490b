/* parallel.h - command-line glue for tensor/pipeline-parallel runs: takes
 * --tp N, --pp N and --pp-layers A,B,... out of a subcommand's argv, starts
 * the ranks' communicator (worker/comm.h; MPI only under mpirun), and loads
 * each rank's shard of a model (worker/shard.h).
 *
 * Under mpirun every rank gets a "[rank R] " log prefix and every rank but
 * world rank 0 has its stdout sent to /dev/null, so generated text is written
 * once; diagnostics stay on stderr. MPI is finalised at exit.
 *
 * Threading: call from main's thread before any other thread starts.
 */
#ifndef LKV_WORKER_PARALLEL_H
#define LKV_WORKER_PARALLEL_H

#include <stdio.h>

#include "common/status.h"
#include "format/model_file.h"
#include "kernels/kernels.h"
#include "worker/comm.h"
#include "worker/engine.h"
#include "worker/step_exec.h"
#include "worker/model.h"
#include "worker/shard.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_par {
    int         tp, pp;
    int         stage_layers[LKV_SHARD_MAX_STAGES]; /* --pp-layers counts */
    int         n_stage_layers;                     /* 0: even split */
    lkv_comm_t *comm;  /* owned by this module, destroyed at exit */
    int         setup_sent; /* serving leader: 0, 1 (model), 2 (pools) */
} lkv_par_t;

/* Help lines for the options lkv_par_args() takes. */
void lkv_par_usage(FILE *out);

/* Remove --tp N, --pp N, --pp-layers L (also --opt=value) from argv
 * (argc updated, argv[argc] = NULL), then create the communicator.
 * one_instance: the world must be exactly one instance (layerkv run).
 * Returns 0, or -1 after printing what is wrong to stderr. */
int lkv_par_args(const char *cmd, int *argc, char **argv, bool one_instance,
                 lkv_par_t *par);

/* Load this rank's shard of mf (the whole model for tp 1 x pp 1, exactly
 * lkv_model_create). Errors as lkv_model_create_sharded and lkv_shard_plan. */
lkv_status_t lkv_par_model_create(const lkv_par_t *par, lkv_kern_backend_t *be,
                                  const lkv_model_file_t *mf,
                                  lkv_model_t **m_p);

/* True for the rank that schedules (rank 0 of its instance; also without
 * MPI). */
bool lkv_par_is_leader(const lkv_par_t *par);

/* Follower ranks: run the leader's plans on x (lkv_comm_plan_recv) until the
 * leader stops; then wait for copies in flight. Errors: the first failing
 * lkv_comm_plan_recv status (a step whose forward pass fails on this rank is
 * logged and the loop goes on, as the leader's engine goes on). */
lkv_status_t lkv_par_follow(const lkv_par_t *par, lkv_step_exec_t *x);

/* `layerkv run`: the leader runs lkv_engine_generate (whose step executor
 * sends every plan to the peers) and then stops the followers; followers run
 * lkv_par_follow on the engine's executor, fn is never called. Returns the
 * leader's generate status (followers: their follow status). */
lkv_status_t lkv_par_generate(const lkv_par_t *par, lkv_engine_t *e,
                              const lkv_engine_request_t *reqs, int n_reqs,
                              lkv_engine_token_fn fn, void *ctx);

/* Serving (`mpirun ... layerkv worker --tp T --pp P`): the instance leader
 * runs the worker loop against the coordinator and tells its followers what
 * to load; followers mirror its setup and then run its plans.
 * Leader side, all no-ops without peers:
 *   lkv_par_lead_model: model and tokenizer paths (before loading),
 *   lkv_par_lead_exec:  the step executor config (before creating it; its
 *                       remote tier is not shared: followers get none),
 *   lkv_par_lead_done:  at exit; aborts a setup not finished and stops the
 *                       followers' plan loop.
 * Errors: LKV_ERR_PEER_LOST (MPI). */
lkv_status_t lkv_par_lead_model(lkv_par_t *par, const char *model_path,
                                const char *tokenizer_path);
lkv_status_t lkv_par_lead_exec(lkv_par_t *par,
                               const lkv_step_exec_config_t *xc);
void         lkv_par_lead_done(lkv_par_t *par);

/* Follower side of serving: wait for the leader's setup, load this rank's
 * shard on a backend opened with (backend, threads, link_gbps), create the
 * step executor and run the leader's plans until it stops. Returns LKV_OK
 * after a normal stop, LKV_ERR_CANCELLED when the leader aborted its setup,
 * or the local setup / MPI error (logged). */
lkv_status_t lkv_par_worker_follow(lkv_par_t *par, const char *backend,
                                   int threads, double link_gbps);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_PARALLEL_H */
