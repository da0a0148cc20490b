/* comm.h - collectives between the ranks of tensor- and pipeline-parallel
 * workers: MPI on the CPU backend (all-reduce of f32 activations, point-to-
 * point activations between pipeline stages, broadcasts), NCCL on CUDA
 * backends (lkv_comm_attach_backend; unique id broadcast over MPI).
 *
 * Layout: the world (mpirun -np N) holds N / (tp*pp) instances of tp*pp ranks
 * each; inside an instance rank r is stage r / tp, tensor rank r % tp. The
 * TP group is the tp ranks of one stage, the PP group the pp ranks with the
 * same tensor rank. Without a launcher (no OMPI_COMM_WORLD_SIZE / PMI_SIZE in
 * the environment) MPI is not initialised and every collective of a size-1
 * group is a no-op, so single-process runs are unchanged.
 *
 * The TP all-reduce sums the ranks' buffers in rank order on every rank
 * (allgather + ordered sum on MPI), so all ranks of a group hold bitwise
 * identical results: greedy and seeded sampling agree without extra traffic.
 *
 * Threading: one comm per process, used from the thread that created it
 * (MPI_THREAD_FUNNELED); not thread-safe.
 */
#ifndef LKV_WORKER_COMM_H
#define LKV_WORKER_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/step_plan.h"
#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lkv_comm lkv_comm_t;

/* True when the process was started by an MPI launcher (mpirun / srun). */
bool lkv_comm_launched(void);

/* Initialise MPI when launched (see above) and split the world into
 * instances of tp*pp ranks. tp, pp >= 1; the world size must be a multiple of
 * tp*pp. Errors: LKV_ERR_INVALID (bad sizes: logged with what to pass),
 * LKV_ERR_NOMEM, LKV_ERR_INTERNAL (MPI failed). Call once per process, before
 * any thread is started. */
lkv_status_t lkv_comm_create(int tp, int pp, lkv_comm_t **c_p);
/* Frees the groups and finalises MPI if create initialised it. Accepts
 * NULL; sets *c_p to NULL. Collective: every rank must call it. */
void lkv_comm_destroy(lkv_comm_t **c_p);

int lkv_comm_world_rank(const lkv_comm_t *c);
int lkv_comm_world_size(const lkv_comm_t *c);
int lkv_comm_instance(const lkv_comm_t *c);    /* index of this instance */
int lkv_comm_n_instances(const lkv_comm_t *c);
int lkv_comm_inst_rank(const lkv_comm_t *c);   /* rank inside the instance */
int lkv_comm_tp_rank(const lkv_comm_t *c);
int lkv_comm_tp_size(const lkv_comm_t *c);
int lkv_comm_pp_rank(const lkv_comm_t *c);     /* pipeline stage */
int lkv_comm_pp_size(const lkv_comm_t *c);
/* Rank 0 of its instance (the rank that talks to the outside world). */
bool lkv_comm_is_leader(const lkv_comm_t *c);

/* Use be's device memory for the activation collectives: on a CUDA backend
 * (CUDA builds) this creates an NCCL communicator per group (unique id
 * broadcast over MPI; collective over the instance). Host backends need
 * nothing. Errors: LKV_ERR_DEVICE (NCCL failed), LKV_ERR_UNSUPPORTED (device
 * backend without NCCL support compiled in). */
lkv_status_t lkv_comm_attach_backend(lkv_comm_t *c, lkv_kern_backend_t *be);

/* buf (n f32, backend memory) = sum over the TP group, in place. No-op for
 * tp 1. Blocks (host backends) or queues on the compute stream (NCCL). */
lkv_status_t lkv_comm_tp_allreduce(lkv_comm_t *c, float *buf, size_t n);

/* Pipeline activations: n f32 (backend memory) to the next stage / from the
 * previous stage of this rank's PP group. Blocking. LKV_ERR_INVALID on the
 * last / first stage. */
lkv_status_t lkv_comm_pp_send_next(lkv_comm_t *c, const float *buf, size_t n);
lkv_status_t lkv_comm_pp_recv_prev(lkv_comm_t *c, float *buf, size_t n);
/* n f32 (backend memory) from the last stage to every stage of the PP
 * group (logits). No-op for pp 1. */
lkv_status_t lkv_comm_pp_bcast_from_last(lkv_comm_t *c, float *buf, size_t n);

/* bytes of host memory from the instance leader to every rank of the
 * instance (step plans, control). For a size that only the leader knows,
 * broadcast the size first. No-op for a one-rank instance. */
lkv_status_t lkv_comm_inst_bcast(lkv_comm_t *c, void *buf, size_t bytes);
/* Wait for every rank of the instance. */
lkv_status_t lkv_comm_inst_barrier(lkv_comm_t *c);
/* buf (n int32, host) = element-wise minimum over the ranks of the
 * instance, in place; every rank must pass the same n. No-op for a one-rank
 * instance. */
lkv_status_t lkv_comm_inst_allreduce_min(lkv_comm_t *c, int32_t *buf, int n);

/* Step plans: the instance leader decides every plan and sends it to its
 * TP/PP peers, which run exactly the leader's plans (their own schedulers
 * would diverge: plans depend on when background copies complete).
 * lkv_comm_plan_send: leader only (a no-op on other ranks and for a
 * one-rank instance); called by lkv_step_exec_run for every plan.
 * lkv_comm_plan_recv: followers; blocks for the next plan, which stays valid
 * until the next call (memory owned by c); *stop_p is set when the leader
 * called lkv_comm_plan_stop (no more plans: the follower returns).
 * Errors: LKV_ERR_PEER_LOST (MPI failed), LKV_ERR_PROTOCOL (a malformed
 * plan), LKV_ERR_NOMEM. Plans travel as raw structs: all ranks must run the
 * same layerkv binary. */
lkv_status_t lkv_comm_plan_send(lkv_comm_t *c, const lkv_step_plan_t *p);
lkv_status_t lkv_comm_plan_recv(lkv_comm_t *c, lkv_step_plan_t *p,
                                bool *stop_p);
lkv_status_t lkv_comm_plan_stop(lkv_comm_t *c);

/* Benchmark helpers (bench/allreduce_bench.c): the MPI library's own
 * MPI_Allreduce(SUM) over the TP group of n host floats, in place. */
lkv_status_t lkv_comm_tp_allreduce_mpi(lkv_comm_t *c, float *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* LKV_WORKER_COMM_H */
