/* cuda_nccl.cu - NCCL communicator and collectives on the backend's compute
 * stream; see cuda_nccl.h. Threading: the step thread. */
#define LKV_LOG_MODULE "cuda.nccl"

#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ext.h"
#include "kernels/cuda/cuda_nccl.h"

static_assert(LKV_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES,
              "nccl unique id size changed");

struct lkv_nccl_comm {
    ncclComm_t   comm;
    cudaStream_t stream;
    int          device;
    int          rank;
    int          n_ranks;
};

static lkv_status_t nccl_fail(ncclResult_t r, const char *what)
{
    LKV_LOG_ERROR("%s failed: %s (%d)%s", what, ncclGetErrorString(r), (int)r,
                  r == ncclSystemError || r == ncclRemoteError
                      ? "; check NCCL_SOCKET_IFNAME and that every rank is "
                        "alive (NCCL_DEBUG=WARN shows more)"
                      : "");
    return r == ncclInvalidArgument || r == ncclInvalidUsage
               ? LKV_ERR_INVALID
               : LKV_ERR_DEVICE;
}

#define NCCL_TRY(call_, what_)                                                 \
    do {                                                                       \
        ncclResult_t lkv_nc_r_ = (call_);                                      \
        if (lkv_nc_r_ != ncclSuccess) {                                        \
            return nccl_fail(lkv_nc_r_, what_);                                \
        }                                                                      \
    } while (0)

extern "C" lkv_status_t lkv_nccl_unique_id(uint8_t id[LKV_NCCL_ID_BYTES])
{
    ncclUniqueId u;

    if (id == NULL) {
        return LKV_ERR_INVALID;
    }
    NCCL_TRY(ncclGetUniqueId(&u), "ncclGetUniqueId");
    memcpy(id, u.internal, LKV_NCCL_ID_BYTES);
    return LKV_OK;
}

extern "C" lkv_status_t lkv_nccl_comm_create(
    lkv_kern_backend_t *be, const uint8_t id[LKV_NCCL_ID_BYTES], int n_ranks,
    int rank, lkv_nccl_comm_t **comm_p)
{
    lkv_nccl_comm_t *c;
    ncclUniqueId     u;
    ncclResult_t     r;

    if (!lkv_cuda_is_backend(be) || id == NULL || comm_p == NULL ||
        n_ranks <= 0 || rank < 0 || rank >= n_ranks) {
        LKV_LOG_ERROR("nccl: needs a cuda backend and 0 <= rank %d < size %d",
                      rank, n_ranks);
        return LKV_ERR_INVALID;
    }
    c = (lkv_nccl_comm_t *)calloc(1, sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    c->device  = lkv_cuda_of(be)->device;
    c->stream  = lkv_cuda_compute(be);
    c->rank    = rank;
    c->n_ranks = n_ranks;
    memcpy(u.internal, id, LKV_NCCL_ID_BYTES);
    if (cudaSetDevice(c->device) != cudaSuccess) {
        free(c);
        return LKV_ERR_DEVICE;
    }
    r = ncclCommInitRank(&c->comm, n_ranks, u, rank);
    if (r != ncclSuccess) {
        free(c);
        return nccl_fail(r, "ncclCommInitRank");
    }
    LKV_LOG_INFO("nccl: rank %d of %d on cuda device %d", rank, n_ranks,
                 c->device);
    *comm_p = c;
    return LKV_OK;
}

extern "C" void lkv_nccl_comm_destroy(lkv_nccl_comm_t **comm_p)
{
    lkv_nccl_comm_t *c;

    if (comm_p == NULL || *comm_p == NULL) {
        return;
    }
    c = *comm_p;
    (void)cudaSetDevice(c->device);
    (void)cudaStreamSynchronize(c->stream);
    (void)ncclCommDestroy(c->comm);
    free(c);
    *comm_p = NULL;
}

extern "C" int lkv_nccl_rank(const lkv_nccl_comm_t *c)
{
    return c != NULL ? c->rank : -1;
}

extern "C" int lkv_nccl_size(const lkv_nccl_comm_t *c)
{
    return c != NULL ? c->n_ranks : 0;
}

extern "C" lkv_status_t lkv_nccl_allreduce_sum_f32(lkv_nccl_comm_t *c,
                                                   const float *send,
                                                   float *recv, size_t n)
{
    if (c == NULL || send == NULL || recv == NULL) {
        return LKV_ERR_INVALID;
    }
    if (n == 0) {
        return LKV_OK;
    }
    NCCL_TRY(ncclAllReduce(send, recv, n, ncclFloat32, ncclSum, c->comm,
                           c->stream),
             "ncclAllReduce");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_nccl_send_f32(lkv_nccl_comm_t *c, const float *buf,
                                          size_t n, int peer)
{
    if (c == NULL || buf == NULL || peer < 0 || peer >= c->n_ranks) {
        return LKV_ERR_INVALID;
    }
    NCCL_TRY(ncclSend(buf, n, ncclFloat32, peer, c->comm, c->stream),
             "ncclSend");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_nccl_recv_f32(lkv_nccl_comm_t *c, float *buf,
                                          size_t n, int peer)
{
    if (c == NULL || buf == NULL || peer < 0 || peer >= c->n_ranks) {
        return LKV_ERR_INVALID;
    }
    NCCL_TRY(ncclRecv(buf, n, ncclFloat32, peer, c->comm, c->stream),
             "ncclRecv");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_nccl_group_start(void)
{
    NCCL_TRY(ncclGroupStart(), "ncclGroupStart");
    return LKV_OK;
}

extern "C" lkv_status_t lkv_nccl_group_end(void)
{
    NCCL_TRY(ncclGroupEnd(), "ncclGroupEnd");
    return LKV_OK;
}
