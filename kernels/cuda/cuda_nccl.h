/* cuda_nccl.h - NCCL collectives on the CUDA backend's compute stream, for
 * tensor- and pipeline-parallel workers on CUDA builds (LKV_HAVE_CUDA).
 *
 * Bootstrap: rank 0 calls lkv_nccl_unique_id(), the caller broadcasts the
 * LKV_NCCL_ID_BYTES bytes to every rank of the group (MPI_Bcast), then every
 * rank calls lkv_nccl_comm_create() with the same id, its rank and the group
 * size (blocks until all ranks joined). Collectives and send/recv are queued
 * on the compute stream of the backend the communicator was created with, in
 * stream order with the kernels, and return without waiting; an error of a
 * collective is reported by the call or by the next sync of the compute
 * queue. Threading: the step thread that owns the backend.
 */
#ifndef LKV_KERNELS_CUDA_NCCL_H
#define LKV_KERNELS_CUDA_NCCL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LKV_NCCL_ID_BYTES 128 /* == NCCL_UNIQUE_ID_BYTES */

typedef struct lkv_nccl_comm lkv_nccl_comm_t;

/* A fresh unique id (rank 0 only). LKV_ERR_DEVICE if NCCL cannot create one
 * (no usable network interface: set NCCL_SOCKET_IFNAME). */
lkv_status_t lkv_nccl_unique_id(uint8_t id[LKV_NCCL_ID_BYTES]);

/* Join the group `id` as rank `rank` of `n_ranks` using be's device and
 * compute stream. Blocks until every rank joined. LKV_ERR_INVALID for a
 * non-CUDA backend or bad rank/size; LKV_ERR_DEVICE when NCCL fails
 * (logged). The communicator must be destroyed before be is closed. */
lkv_status_t lkv_nccl_comm_create(lkv_kern_backend_t *be,
                                  const uint8_t id[LKV_NCCL_ID_BYTES],
                                  int n_ranks, int rank,
                                  lkv_nccl_comm_t **comm_p);
/* Accepts NULL; sets *comm_p to NULL. Waits for queued collectives. */
void lkv_nccl_comm_destroy(lkv_nccl_comm_t **comm_p);

int lkv_nccl_rank(const lkv_nccl_comm_t *c);
int lkv_nccl_size(const lkv_nccl_comm_t *c);

/* recv (n) = sum over ranks of send (n), f32; send == recv is in place.
 * Device memory of the communicator's backend. */
lkv_status_t lkv_nccl_allreduce_sum_f32(lkv_nccl_comm_t *c, const float *send,
                                        float *recv, size_t n);

/* Point-to-point (pipeline activations): n floats to / from rank `peer`.
 * A send must be matched by a recv on the peer; to post both directions at
 * once wrap them in lkv_nccl_group_start/end. */
lkv_status_t lkv_nccl_send_f32(lkv_nccl_comm_t *c, const float *buf, size_t n,
                               int peer);
lkv_status_t lkv_nccl_recv_f32(lkv_nccl_comm_t *c, float *buf, size_t n,
                               int peer);
lkv_status_t lkv_nccl_group_start(void);
lkv_status_t lkv_nccl_group_end(void);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KERNELS_CUDA_NCCL_H */
