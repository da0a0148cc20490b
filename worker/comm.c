/* comm.c - MPI (and, on CUDA builds, NCCL) collectives for TP/PP workers;
 * see comm.h. Single-threaded: the thread that created the comm. */
#define LKV_LOG_MODULE "comm"

#include "worker/comm.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "common/log.h"
#ifdef LKV_HAVE_CUDA
#include "kernels/cuda/cuda_nccl.h"
#endif

struct lkv_comm {
    bool     mpi;          /* MPI initialised (by us or before us) */
    bool     own_mpi;      /* we called MPI_Init: finalise on destroy */
    int      world_rank, world_size;
    int      tp, pp, tp_rank, pp_rank;
    int      inst, n_inst, inst_rank;
    MPI_Comm inst_comm, tp_comm, pp_comm;
    float   *gather;       /* (tp, n) allgather scratch, host */
    uint8_t *pbuf;         /* step plan wire buffer */
    size_t   pbuf_cap;
    size_t   gather_n;
    lkv_kern_backend_t *be; /* attached backend (borrowed) */
    bool     on_host;
#ifdef LKV_HAVE_CUDA
    lkv_nccl_comm_t *nccl_tp, *nccl_pp;
#endif
};

bool lkv_comm_launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                 "PMIX_RANK", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        if (getenv(vars[i]) != NULL) {
            return true;
        }
    }
    return false;
}

static lkv_status_t mpi_st(int rc, const char *what)
{
    if (rc == MPI_SUCCESS) {
        return LKV_OK;
    }
    char msg[MPI_MAX_ERROR_STRING];
    int  len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) {
        snprintf(msg, sizeof(msg), "error %d", rc);
    }
    LKV_LOG_ERROR("%s failed: %s", what, msg);
    return LKV_ERR_PEER_LOST;
}

#define MPI_CHECK(call_, what_) LKV_CHECK(mpi_st((call_), (what_)))

lkv_status_t lkv_comm_create(int tp, int pp, lkv_comm_t **c_p)
{
    lkv_comm_t  *c;
    lkv_status_t st = LKV_OK;
    int          inited = 0;

    if (c_p == NULL || tp < 1 || pp < 1 || tp > 1024 || pp > 1024) {
        LKV_LOG_ERROR("invalid parallel sizes: tp %d, pp %d (both >= 1)", tp,
                      pp);
        return LKV_ERR_INVALID;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    c->tp         = tp;
    c->pp         = pp;
    c->world_size = 1;
    c->n_inst     = 1;
    c->on_host    = true;
    c->inst_comm = c->tp_comm = c->pp_comm = MPI_COMM_NULL;

    MPI_Initialized(&inited);
    if (!inited && lkv_comm_launched()) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) !=
            MPI_SUCCESS) {
            LKV_LOG_ERROR("MPI_Init failed: start the ranks with mpirun "
                          "(deploy/mpirun/launch.sh)");
            free(c);
            return LKV_ERR_INTERNAL;
        }
        inited     = 1;
        c->own_mpi = true;
    }
    c->mpi = inited != 0;
    if (c->mpi) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &c->world_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &c->world_size);
    }
    if (!c->mpi && tp * pp != 1) {
        LKV_LOG_ERROR("tp %d x pp %d needs %d ranks: start with mpirun -np %d "
                      "(deploy/mpirun/launch.sh)",
                      tp, pp, tp * pp, tp * pp);
        st = LKV_ERR_INVALID;
        goto fail;
    }
    if (c->world_size % (tp * pp) != 0) {
        LKV_LOG_ERROR("%d ranks cannot form instances of tp %d x pp %d = %d "
                      "ranks: start a multiple of %d ranks (mpirun -np)",
                      c->world_size, tp, pp, tp * pp, tp * pp);
        st = LKV_ERR_INVALID;
        goto fail;
    }
    int per       = tp * pp;
    c->n_inst     = c->world_size / per;
    c->inst       = c->world_rank / per;
    c->inst_rank  = c->world_rank % per;
    c->pp_rank    = c->inst_rank / tp;
    c->tp_rank    = c->inst_rank % tp;
    if (c->mpi) {
        /* colors: instance; (instance, stage); (instance, tensor rank) */
        LKV_CHECK_GOTO(mpi_st(MPI_Comm_split(MPI_COMM_WORLD, c->inst,
                                             c->inst_rank, &c->inst_comm),
                              "MPI_Comm_split"),
                       st, fail);
        LKV_CHECK_GOTO(mpi_st(MPI_Comm_split(c->inst_comm, c->pp_rank,
                                             c->tp_rank, &c->tp_comm),
                              "MPI_Comm_split"),
                       st, fail);
        LKV_CHECK_GOTO(mpi_st(MPI_Comm_split(c->inst_comm, c->tp_rank,
                                             c->pp_rank, &c->pp_comm),
                              "MPI_Comm_split"),
                       st, fail);
        MPI_Comm_set_errhandler(c->inst_comm, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(c->tp_comm, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(c->pp_comm, MPI_ERRORS_RETURN);
    }
    *c_p = c;
    return LKV_OK;

fail:
    lkv_comm_destroy(&c);
    return st;
}

void lkv_comm_destroy(lkv_comm_t **c_p)
{
    lkv_comm_t *c;

    if (c_p == NULL || *c_p == NULL) {
        return;
    }
    c = *c_p;
#ifdef LKV_HAVE_CUDA
    lkv_nccl_comm_destroy(&c->nccl_tp);
    lkv_nccl_comm_destroy(&c->nccl_pp);
#endif
    if (c->mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) {
            if (c->tp_comm != MPI_COMM_NULL) {
                MPI_Comm_free(&c->tp_comm);
            }
            if (c->pp_comm != MPI_COMM_NULL) {
                MPI_Comm_free(&c->pp_comm);
            }
            if (c->inst_comm != MPI_COMM_NULL) {
                MPI_Comm_free(&c->inst_comm);
            }
            if (c->own_mpi) {
                MPI_Finalize();
            }
        }
    }
    free(c->gather);
    free(c->pbuf);
    free(c);
    *c_p = NULL;
}

int lkv_comm_world_rank(const lkv_comm_t *c) { return c->world_rank; }
int lkv_comm_world_size(const lkv_comm_t *c) { return c->world_size; }
int lkv_comm_instance(const lkv_comm_t *c) { return c->inst; }
int lkv_comm_n_instances(const lkv_comm_t *c) { return c->n_inst; }
int lkv_comm_inst_rank(const lkv_comm_t *c) { return c->inst_rank; }
int lkv_comm_tp_rank(const lkv_comm_t *c) { return c->tp_rank; }
int lkv_comm_tp_size(const lkv_comm_t *c) { return c->tp; }
int lkv_comm_pp_rank(const lkv_comm_t *c) { return c->pp_rank; }
int lkv_comm_pp_size(const lkv_comm_t *c) { return c->pp; }
bool lkv_comm_is_leader(const lkv_comm_t *c) { return c->inst_rank == 0; }

lkv_status_t lkv_comm_attach_backend(lkv_comm_t *c, lkv_kern_backend_t *be)
{
    if (c == NULL || be == NULL) {
        return LKV_ERR_INVALID;
    }
    c->be      = be;
    c->on_host = be->ops == &lkv_kern_cpu_ops;
    if (c->on_host || c->tp * c->pp == 1) {
        return LKV_OK;
    }
#ifdef LKV_HAVE_CUDA
    uint8_t      id[LKV_NCCL_ID_BYTES];
    lkv_status_t st;

    /* TP group, then PP group: each leader makes an id, bcast over MPI */
    if (c->tp > 1) {
        if (c->tp_rank == 0) {
            LKV_CHECK(lkv_nccl_unique_id(id));
        }
        MPI_CHECK(MPI_Bcast(id, LKV_NCCL_ID_BYTES, MPI_BYTE, 0, c->tp_comm),
                  "MPI_Bcast of the nccl id");
        st = lkv_nccl_comm_create(be, id, c->tp, c->tp_rank, &c->nccl_tp);
        if (st != LKV_OK) {
            return st;
        }
    }
    if (c->pp > 1) {
        if (c->pp_rank == 0) {
            LKV_CHECK(lkv_nccl_unique_id(id));
        }
        MPI_CHECK(MPI_Bcast(id, LKV_NCCL_ID_BYTES, MPI_BYTE, 0, c->pp_comm),
                  "MPI_Bcast of the nccl id");
        st = lkv_nccl_comm_create(be, id, c->pp, c->pp_rank, &c->nccl_pp);
        if (st != LKV_OK) {
            return st;
        }
    }
    return LKV_OK;
#else
    LKV_LOG_ERROR("backend %s keeps activations in device memory but this "
                  "build has no NCCL: rebuild with CUDA or use --backend cpu",
                  be->ops->name);
    return LKV_ERR_UNSUPPORTED;
#endif
}

static lkv_status_t check_count(size_t n)
{
    if (n > (size_t)INT_MAX) {
        LKV_LOG_ERROR("collective of %zu elements exceeds the MPI count "
                      "limit",
                      n);
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

/* d += o (the buffers never overlap: o is the gather scratch) */
static void add_into(float *restrict d, const float *restrict o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        d[i] += o[i];
    }
}

lkv_status_t lkv_comm_tp_allreduce(lkv_comm_t *c, float *buf, size_t n)
{
    if (c == NULL || c->tp == 1 || n == 0) {
        return LKV_OK;
    }
#ifdef LKV_HAVE_CUDA
    if (c->nccl_tp != NULL) {
        return lkv_nccl_allreduce_sum_f32(c->nccl_tp, buf, buf, n);
    }
#endif
    LKV_CHECK(check_count(n));
    if (c->gather_n < n) {
        /* grows to the largest activation once, then stays */
        float *g = realloc(c->gather, (size_t)c->tp * n * sizeof(float));
        if (g == NULL) {
            return LKV_ERR_NOMEM;
        }
        c->gather   = g;
        c->gather_n = n;
    }
    if (c->tp == 2) {
        /* a + b == b + a: both ranks hold the same bits */
        MPI_CHECK(MPI_Sendrecv(buf, (int)n, MPI_FLOAT, 1 - c->tp_rank, 71,
                               c->gather, (int)n, MPI_FLOAT, 1 - c->tp_rank,
                               71, c->tp_comm, MPI_STATUS_IGNORE),
                  "MPI_Sendrecv (tp all-reduce)");
        add_into(buf, c->gather, n);
        return LKV_OK;
    }
    MPI_CHECK(MPI_Allgather(buf, (int)n, MPI_FLOAT, c->gather, (int)n,
                            MPI_FLOAT, c->tp_comm),
              "MPI_Allgather (tp all-reduce)");
    /* sum in rank order so that every rank gets the same bits */
    memcpy(buf, c->gather, n * sizeof(float));
    for (int r = 1; r < c->tp; r++) {
        add_into(buf, c->gather + (size_t)r * n, n);
    }
    return LKV_OK;
}

lkv_status_t lkv_comm_tp_allreduce_mpi(lkv_comm_t *c, float *buf, size_t n)
{
    if (c == NULL || c->tp == 1 || n == 0) {
        return LKV_OK;
    }
    LKV_CHECK(check_count(n));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM,
                            c->tp_comm),
              "MPI_Allreduce");
    return LKV_OK;
}

lkv_status_t lkv_comm_pp_send_next(lkv_comm_t *c, const float *buf, size_t n)
{
    if (c == NULL || c->pp_rank + 1 >= c->pp) {
        return LKV_ERR_INVALID;
    }
#ifdef LKV_HAVE_CUDA
    if (c->nccl_pp != NULL) {
        return lkv_nccl_send_f32(c->nccl_pp, buf, n, c->pp_rank + 1);
    }
#endif
    LKV_CHECK(check_count(n));
    MPI_CHECK(MPI_Send(buf, (int)n, MPI_FLOAT, c->pp_rank + 1, 72,
                       c->pp_comm),
              "MPI_Send (pipeline activations)");
    return LKV_OK;
}

lkv_status_t lkv_comm_pp_recv_prev(lkv_comm_t *c, float *buf, size_t n)
{
    if (c == NULL || c->pp_rank == 0) {
        return LKV_ERR_INVALID;
    }
#ifdef LKV_HAVE_CUDA
    if (c->nccl_pp != NULL) {
        return lkv_nccl_recv_f32(c->nccl_pp, buf, n, c->pp_rank - 1);
    }
#endif
    LKV_CHECK(check_count(n));
    MPI_Status ms;
    int        got = 0;
    MPI_CHECK(MPI_Recv(buf, (int)n, MPI_FLOAT, c->pp_rank - 1, 72, c->pp_comm,
                       &ms),
              "MPI_Recv (pipeline activations)");
    MPI_Get_count(&ms, MPI_FLOAT, &got);
    if ((size_t)got != n) {
        LKV_LOG_ERROR("stage %d sent %d activations, expected %zu: the ranks "
                      "run different plans",
                      c->pp_rank - 1, got, n);
        return LKV_ERR_PROTOCOL;
    }
    return LKV_OK;
}

lkv_status_t lkv_comm_pp_bcast_from_last(lkv_comm_t *c, float *buf, size_t n)
{
    if (c == NULL || c->pp == 1 || n == 0) {
        return LKV_OK;
    }
    LKV_CHECK(check_count(n));
#ifdef LKV_HAVE_CUDA
    if (c->nccl_pp != NULL) {
        /* NCCL p2p from the last stage to each other stage */
        LKV_CHECK(lkv_nccl_group_start());
        lkv_status_t st = LKV_OK;
        if (c->pp_rank == c->pp - 1) {
            for (int r = 0; r < c->pp - 1 && st == LKV_OK; r++) {
                st = lkv_nccl_send_f32(c->nccl_pp, buf, n, r);
            }
        } else {
            st = lkv_nccl_recv_f32(c->nccl_pp, buf, n, c->pp - 1);
        }
        lkv_status_t st2 = lkv_nccl_group_end();
        return st != LKV_OK ? st : st2;
    }
#endif
    MPI_CHECK(MPI_Bcast(buf, (int)n, MPI_FLOAT, c->pp - 1, c->pp_comm),
              "MPI_Bcast (logits)");
    return LKV_OK;
}

lkv_status_t lkv_comm_inst_bcast(lkv_comm_t *c, void *buf, size_t bytes)
{
    if (c == NULL || c->tp * c->pp == 1 || bytes == 0) {
        return LKV_OK;
    }
    LKV_CHECK(check_count(bytes));
    MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, c->inst_comm),
              "MPI_Bcast (instance)");
    return LKV_OK;
}

lkv_status_t lkv_comm_inst_barrier(lkv_comm_t *c)
{
    if (c == NULL || c->tp * c->pp == 1) {
        return LKV_OK;
    }
    MPI_CHECK(MPI_Barrier(c->inst_comm), "MPI_Barrier");
    return LKV_OK;
}

lkv_status_t lkv_comm_inst_allreduce_min(lkv_comm_t *c, int32_t *buf, int n)
{
    if (c == NULL || c->tp * c->pp == 1 || n <= 0) {
        return LKV_OK;
    }
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_INT32_T, MPI_MIN,
                            c->inst_comm),
              "MPI_Allreduce (instance)");
    return LKV_OK;
}

/* ---- step plans: a header, then the arrays back to back ---- */

typedef struct {
    uint64_t step_id;
    int32_t  n_seqs, n_appends, n_moves, n_finished;
    int32_t  n_tokens, n_blocks; /* totals of the variable arrays */
    int32_t  stop;
    int32_t  pad;
} plan_hdr_t;

static size_t plan_bytes(const plan_hdr_t *h)
{
    return (size_t)h->n_seqs * sizeof(lkv_plan_seq_t) +
           (size_t)h->n_appends * sizeof(lkv_plan_append_t) +
           (size_t)h->n_moves * sizeof(lkv_plan_move_t) +
           (size_t)h->n_finished * sizeof(uint64_t) +
           (size_t)(h->n_tokens + h->n_blocks) * sizeof(int32_t);
}

static lkv_status_t pbuf_reserve(lkv_comm_t *c, size_t bytes)
{
    if (bytes > c->pbuf_cap) {
        uint8_t *b = realloc(c->pbuf, bytes);
        if (b == NULL) {
            return LKV_ERR_NOMEM;
        }
        c->pbuf     = b;
        c->pbuf_cap = bytes;
    }
    return LKV_OK;
}

static bool plan_active(const lkv_comm_t *c)
{
    return c != NULL && c->mpi && c->tp * c->pp > 1;
}

lkv_status_t lkv_comm_plan_send(lkv_comm_t *c, const lkv_step_plan_t *p)
{
    plan_hdr_t h;

    if (!plan_active(c) || c->inst_rank != 0) {
        return LKV_OK;
    }
    memset(&h, 0, sizeof(h));
    h.step_id    = p->step_id;
    h.n_seqs     = p->n_seqs > 0 ? p->n_seqs : 0;
    h.n_appends  = p->n_appends > 0 ? p->n_appends : 0;
    h.n_moves    = p->n_moves > 0 ? p->n_moves : 0;
    h.n_finished = p->n_finished > 0 ? p->n_finished : 0;
    for (int i = 0; i < h.n_seqs; i++) {
        h.n_tokens += p->seqs[i].n_tokens > 0 ? p->seqs[i].n_tokens : 0;
    }
    for (int i = 0; i < h.n_appends; i++) {
        h.n_blocks += p->appends[i].n_blocks > 0 ? p->appends[i].n_blocks : 0;
    }
    for (int i = 0; i < h.n_moves; i++) {
        h.n_blocks += 2 * (p->moves[i].n_blocks > 0 ? p->moves[i].n_blocks
                                                    : 0);
    }
    size_t bytes = plan_bytes(&h);
    LKV_CHECK(pbuf_reserve(c, bytes));
    uint8_t *w = c->pbuf;
#define PUT(src_, n_)                                                          \
    do {                                                                       \
        size_t b_ = (size_t)(n_) * sizeof(*(src_));                            \
        if (b_ > 0) {                                                          \
            memcpy(w, (src_), b_);                                             \
            w += b_;                                                           \
        }                                                                      \
    } while (0)
    PUT(p->seqs, h.n_seqs);
    PUT(p->appends, h.n_appends);
    PUT(p->moves, h.n_moves);
    PUT(p->finished, h.n_finished);
    for (int i = 0; i < h.n_seqs; i++) {
        if (p->seqs[i].n_tokens > 0) {
            PUT(p->seqs[i].tokens, p->seqs[i].n_tokens);
        }
    }
    for (int i = 0; i < h.n_appends; i++) {
        if (p->appends[i].n_blocks > 0) {
            PUT(p->appends[i].blocks, p->appends[i].n_blocks);
        }
    }
    for (int i = 0; i < h.n_moves; i++) {
        if (p->moves[i].n_blocks > 0) {
            PUT(p->moves[i].src, p->moves[i].n_blocks);
            PUT(p->moves[i].dst, p->moves[i].n_blocks);
        }
    }
#undef PUT
    MPI_CHECK(MPI_Bcast(&h, (int)sizeof(h), MPI_BYTE, 0, c->inst_comm),
              "MPI_Bcast (plan header)");
    LKV_CHECK(check_count(bytes));
    if (bytes > 0) {
        MPI_CHECK(MPI_Bcast(c->pbuf, (int)bytes, MPI_BYTE, 0, c->inst_comm),
                  "MPI_Bcast (plan)");
    }
    return LKV_OK;
}

lkv_status_t lkv_comm_plan_stop(lkv_comm_t *c)
{
    plan_hdr_t h;

    if (!plan_active(c) || c->inst_rank != 0) {
        return LKV_OK;
    }
    memset(&h, 0, sizeof(h));
    h.stop = 1;
    MPI_CHECK(MPI_Bcast(&h, (int)sizeof(h), MPI_BYTE, 0, c->inst_comm),
              "MPI_Bcast (plan stop)");
    return LKV_OK;
}

lkv_status_t lkv_comm_plan_recv(lkv_comm_t *c, lkv_step_plan_t *p,
                                bool *stop_p)
{
    plan_hdr_t h;

    if (!plan_active(c) || c->inst_rank == 0) {
        return LKV_ERR_INVALID;
    }
    MPI_CHECK(MPI_Bcast(&h, (int)sizeof(h), MPI_BYTE, 0, c->inst_comm),
              "MPI_Bcast (plan header)");
    *stop_p = h.stop != 0;
    memset(p, 0, sizeof(*p));
    if (h.stop) {
        return LKV_OK;
    }
    if (h.n_seqs < 0 || h.n_appends < 0 || h.n_moves < 0 ||
        h.n_finished < 0 || h.n_tokens < 0 || h.n_blocks < 0) {
        LKV_LOG_ERROR("malformed plan header from the leader");
        return LKV_ERR_PROTOCOL;
    }
    size_t bytes = plan_bytes(&h);
    LKV_CHECK(check_count(bytes));
    LKV_CHECK(pbuf_reserve(c, bytes > 0 ? bytes : 1));
    if (bytes > 0) {
        MPI_CHECK(MPI_Bcast(c->pbuf, (int)bytes, MPI_BYTE, 0, c->inst_comm),
                  "MPI_Bcast (plan)");
    }
    /* re-point the arrays into the buffer; counts checked against totals */
    uint8_t           *r     = c->pbuf;
    lkv_plan_seq_t    *seqs  = (lkv_plan_seq_t *)r;
    r += (size_t)h.n_seqs * sizeof(*seqs);
    lkv_plan_append_t *apps  = (lkv_plan_append_t *)r;
    r += (size_t)h.n_appends * sizeof(*apps);
    lkv_plan_move_t   *moves = (lkv_plan_move_t *)r;
    r += (size_t)h.n_moves * sizeof(*moves);
    uint64_t          *fin   = (uint64_t *)r;
    r += (size_t)h.n_finished * sizeof(*fin);
    int32_t           *ints  = (int32_t *)r;
    int64_t            left  = (int64_t)h.n_tokens + h.n_blocks;

    for (int i = 0; i < h.n_seqs; i++) {
        int32_t n = seqs[i].n_tokens > 0 ? seqs[i].n_tokens : 0;
        if (n > left) {
            goto bad;
        }
        seqs[i].tokens = ints;
        ints += n;
        left -= n;
    }
    for (int i = 0; i < h.n_appends; i++) {
        int32_t n = apps[i].n_blocks > 0 ? apps[i].n_blocks : 0;
        if (n > left) {
            goto bad;
        }
        apps[i].blocks = ints;
        ints += n;
        left -= n;
    }
    for (int i = 0; i < h.n_moves; i++) {
        int32_t n = moves[i].n_blocks > 0 ? moves[i].n_blocks : 0;
        if (2 * (int64_t)n > left) {
            goto bad;
        }
        moves[i].src = ints;
        moves[i].dst = ints + n;
        ints += 2 * n;
        left -= 2 * n;
    }
    if (left != 0) {
        goto bad;
    }
    p->step_id    = h.step_id;
    p->n_seqs     = h.n_seqs;
    p->seqs       = seqs;
    p->n_appends  = h.n_appends;
    p->appends    = apps;
    p->n_moves    = h.n_moves;
    p->moves      = moves;
    p->n_finished = h.n_finished;
    p->finished   = fin;
    return LKV_OK;

bad:
    LKV_LOG_ERROR("malformed plan %llu from the leader: array sizes do not "
                  "add up",
                  (unsigned long long)h.step_id);
    return LKV_ERR_PROTOCOL;
}
