/* kv_remote_ucx.c - REMOTE KV tier over UCX kvnodes; see kv_remote_ucx.h.
 * One thread. */
#define LKV_LOG_MODULE "kv_remote"

#include "kvstore/kv_remote_ucx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/kvnode.h"
#include "transport/ucx.h"

typedef struct {
    char          endpoint[256];
    lkv_ucx_ep_t *ep;
    uint64_t      bytes;    /* registered capacity of the node */
    int32_t       first;    /* first global block */
    int32_t       n_blocks;
    bool          up;
} node_t;

struct lkv_kv_remote_req {
    bool          used;
    int           n_ops;
    lkv_ucx_op_t *ops[LKV_KV_REMOTE_MAX_NODES];
    int           node[LKV_KV_REMOTE_MAX_NODES];
    bool          done[LKV_KV_REMOTE_MAX_NODES];
    lkv_status_t  status; /* first error */
};

struct lkv_kv_remote_ucx {
    lkv_ucx_t                *ucx;
    node_t                    nodes[LKV_KV_REMOTE_MAX_NODES];
    int                       n_nodes;
    int32_t                   n_blocks;
    size_t                    block_bytes;
    bool                      device_is_host;
    lkv_kv_remote_req_t      *reqs; /* (n_reqs) */
    int                       n_reqs;
    void                    **s_local; /* scratch (cap) */
    uint64_t                 *s_roff;
    int                       cap;
};

int32_t lkv_kv_remote_ucx_n_blocks(const lkv_kv_remote_ucx_t *r)
{
    return r->n_blocks;
}

int lkv_kv_remote_ucx_n_nodes(const lkv_kv_remote_ucx_t *r)
{
    return r->n_nodes;
}

bool lkv_kv_remote_ucx_node_up(const lkv_kv_remote_ucx_t *r, int i)
{
    return i >= 0 && i < r->n_nodes && r->nodes[i].up;
}

int lkv_kv_remote_ucx_node_of(const lkv_kv_remote_ucx_t *r, int32_t b)
{
    for (int i = 0; i < r->n_nodes; i++) {
        if (b >= r->nodes[i].first &&
            b < r->nodes[i].first + r->nodes[i].n_blocks) {
            return i;
        }
    }
    return -1;
}

static void mark_down(lkv_kv_remote_ucx_t *r, int i, lkv_status_t why)
{
    if (r->nodes[i].up) {
        LKV_LOG_ERROR("kvnode %s is down (%s): its %d remote blocks are no "
                      "longer used; KV that lived there is lost (the "
                      "affected requests recompute or fail)",
                      r->nodes[i].endpoint, lkv_status_str(why),
                      r->nodes[i].n_blocks);
        r->nodes[i].up = false;
    }
}

/* ---- ops table ---- */

static lkv_status_t grow(lkv_kv_remote_ucx_t *r, int n)
{
    if (n <= r->cap) {
        return LKV_OK;
    }
    void    **l = realloc(r->s_local, (size_t)n * sizeof(*l));
    if (l == NULL) {
        return LKV_ERR_NOMEM;
    }
    r->s_local = l;
    uint64_t *o = realloc(r->s_roff, (size_t)n * sizeof(*o));
    if (o == NULL) {
        return LKV_ERR_NOMEM;
    }
    r->s_roff = o;
    r->cap    = n;
    return LKV_OK;
}

static void req_drain_free(lkv_kv_remote_ucx_t *r, lkv_kv_remote_req_t *q)
{
    for (int k = 0; k < q->n_ops; k++) {
        if (!q->done[k]) {
            (void)lkv_ucx_op_wait(r->ucx, q->ops[k]); /* bounded */
        }
        lkv_ucx_op_release(r->ucx, q->ops[k]);
    }
    q->n_ops = 0;
    q->used  = false;
}

static lkv_status_t xfer(void *ctx, bool put,
                         const lkv_kv_block_t *remote_blocks,
                         void *const *local, int n, size_t block_bytes,
                         int local_is_device, lkv_kv_remote_req_t **req_p)
{
    lkv_kv_remote_ucx_t *r = ctx;
    lkv_kv_remote_req_t *q = NULL;
    lkv_status_t         st;

    if (r == NULL || remote_blocks == NULL || local == NULL || n < 1 ||
        req_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (block_bytes != r->block_bytes) {
        LKV_LOG_ERROR("remote tier: transfer of %zu-byte blocks, but the "
                      "tier was sized for %zu-byte blocks",
                      block_bytes, r->block_bytes);
        return LKV_ERR_INVALID;
    }
    if (local_is_device && !r->device_is_host) {
        return LKV_ERR_UNSUPPORTED; /* stage through the host pool */
    }
    for (int i = 0; i < n; i++) {
        if (remote_blocks[i] < 0 || remote_blocks[i] >= r->n_blocks) {
            LKV_LOG_ERROR("remote block %d outside the tier's %d blocks",
                          remote_blocks[i], r->n_blocks);
            return LKV_ERR_INVALID;
        }
    }
    for (int i = 0; i < n; i++) {
        int k = lkv_kv_remote_ucx_node_of(r, remote_blocks[i]);
        if (!r->nodes[k].up) {
            return LKV_ERR_PEER_LOST; /* logged when it went down */
        }
    }
    for (int i = 0; i < r->n_reqs; i++) {
        if (!r->reqs[i].used) {
            q = &r->reqs[i];
            break;
        }
    }
    if (q == NULL) {
        return LKV_ERR_BUSY;
    }
    LKV_CHECK(grow(r, n));
    memset(q, 0, sizeof(*q));
    q->used = true;
    for (int k = 0; k < r->n_nodes; k++) {
        node_t *nd = &r->nodes[k];
        int     m  = 0;
        for (int i = 0; i < n; i++) {
            if (remote_blocks[i] >= nd->first &&
                remote_blocks[i] < nd->first + nd->n_blocks) {
                r->s_local[m] = local[i];
                r->s_roff[m]  = (uint64_t)(remote_blocks[i] - nd->first) *
                               (uint64_t)block_bytes;
                m++;
            }
        }
        if (m == 0) {
            continue;
        }
        lkv_ucx_op_t *op = NULL;
        st = put ? lkv_ucx_put(r->ucx, nd->ep, r->s_local, r->s_roff, m,
                               block_bytes, &op)
                 : lkv_ucx_get(r->ucx, nd->ep, r->s_local, r->s_roff, m,
                               block_bytes, &op);
        if (st < 0) {
            if (st == LKV_ERR_PEER_LOST || st == LKV_ERR_TIMEOUT) {
                mark_down(r, k, st);
            }
            /* all-or-nothing: what was issued finishes before we return */
            req_drain_free(r, q);
            return st;
        }
        q->ops[q->n_ops]  = op;
        q->node[q->n_ops] = k;
        q->n_ops++;
    }
    *req_p = q;
    return LKV_OK;
}

static lkv_status_t op_put(void *ctx, const lkv_kv_block_t *remote_blocks,
                           void *const *local, int n, size_t block_bytes,
                           int local_is_device, lkv_kv_remote_req_t **req_p)
{
    return xfer(ctx, true, remote_blocks, local, n, block_bytes,
                local_is_device, req_p);
}

static lkv_status_t op_get(void *ctx, const lkv_kv_block_t *remote_blocks,
                           void *const *local, int n, size_t block_bytes,
                           int local_is_device, lkv_kv_remote_req_t **req_p)
{
    return xfer(ctx, false, remote_blocks, local, n, block_bytes,
                local_is_device, req_p);
}

static lkv_status_t op_progress(void *ctx)
{
    lkv_kv_remote_ucx_t *r = ctx;
    lkv_ucx_progress(r->ucx);
    return LKV_OK;
}

static lkv_status_t op_test(void *ctx, lkv_kv_remote_req_t *q)
{
    lkv_kv_remote_ucx_t *r       = ctx;
    bool                 pending = false;

    if (r == NULL || q == NULL || !q->used) {
        return LKV_ERR_INVALID;
    }
    for (int k = 0; k < q->n_ops; k++) {
        if (q->done[k]) {
            continue;
        }
        lkv_status_t st = lkv_ucx_op_test(r->ucx, q->ops[k]);
        if (st == LKV_AGAIN) {
            pending = true;
            continue;
        }
        q->done[k] = true;
        if (st < 0) {
            if (q->status == LKV_OK) {
                q->status = st;
            }
            node_t *nd = &r->nodes[q->node[k]];
            if (lkv_ucx_ep_status(nd->ep) != LKV_OK ||
                st == LKV_ERR_TIMEOUT || st == LKV_ERR_PEER_LOST) {
                mark_down(r, q->node[k], st);
            }
        }
    }
    /* report only when nothing of the request can still touch memory */
    return pending ? LKV_AGAIN : q->status;
}

static void op_req_free(void *ctx, lkv_kv_remote_req_t *q)
{
    lkv_kv_remote_ucx_t *r = ctx;

    if (r == NULL || q == NULL || !q->used) {
        return;
    }
    req_drain_free(r, q);
}

static const lkv_kv_remote_ops_t ucx_remote_ops = {
    .name     = "ucx",
    .put      = op_put,
    .get      = op_get,
    .progress = op_progress,
    .test     = op_test,
    .req_free = op_req_free,
};

/* ---- lifecycle ---- */

lkv_status_t lkv_kv_remote_ucx_create(const lkv_kv_remote_ucx_config_t *cfg,
                                      lkv_kv_remote_ucx_t **r_p)
{
    lkv_kv_remote_ucx_t *r;
    lkv_status_t         st;

    if (cfg == NULL || r_p == NULL || cfg->endpoints == NULL ||
        cfg->n_endpoints < 1 || cfg->n_endpoints > LKV_KV_REMOTE_MAX_NODES ||
        cfg->block_bytes == 0) {
        LKV_LOG_ERROR("remote tier: 1 to %d kvnodes and a block size are "
                      "needed",
                      LKV_KV_REMOTE_MAX_NODES);
        return LKV_ERR_INVALID;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return LKV_ERR_NOMEM;
    }
    r->block_bytes    = cfg->block_bytes;
    r->device_is_host = cfg->device_is_host;
    lkv_ucx_config_t uc = lkv_ucx_config_default();
    r->n_reqs           = uc.max_ops / 2;
    r->reqs             = calloc((size_t)r->n_reqs, sizeof(*r->reqs));
    if (r->reqs == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    LKV_CHECK_GOTO(lkv_ucx_create(&uc, &r->ucx), st, fail);
    LKV_CHECK_GOTO(grow(r, 256), st, fail);

    int timeout = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                              : 3000;
    for (int i = 0; i < cfg->n_endpoints; i++) {
        node_t           *nd = &r->nodes[i];
        lkv_kvnode_info_t info;
        snprintf(nd->endpoint, sizeof(nd->endpoint), "%s",
                 cfg->endpoints[i] != NULL ? cfg->endpoints[i] : "");
        LKV_CHECK_GOTO(lkv_kvnode_query(nd->endpoint, timeout, &info), st,
                       fail);
        if (info.bytes < cfg->block_bytes) {
            LKV_LOG_ERROR("kvnode %s has %llu bytes, less than one %zu-byte "
                          "block; give it more --capacity-gib",
                          nd->endpoint, (unsigned long long)info.bytes,
                          cfg->block_bytes);
            lkv_kvnode_info_free(&info);
            st = LKV_ERR_NOSPACE;
            goto fail;
        }
        st = lkv_ucx_ep_create(r->ucx, nd->endpoint, info.addr,
                               info.addr_len, info.rkey, info.rkey_len,
                               info.base, info.bytes, &nd->ep);
        nd->bytes = info.bytes;
        lkv_kvnode_info_free(&info);
        if (st != LKV_OK) {
            goto fail;
        }
        nd->up = true;
        r->n_nodes++;
    }
    LKV_CHECK_GOTO(lkv_kv_remote_ucx_resize(r, cfg->block_bytes), st, fail);
    *r_p = r;
    return LKV_OK;

fail:
    lkv_kv_remote_ucx_destroy(&r);
    return st;
}

lkv_status_t lkv_kv_remote_ucx_resize(lkv_kv_remote_ucx_t *r,
                                      size_t block_bytes)
{
    int32_t total = 0;

    if (r == NULL || block_bytes == 0) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < r->n_reqs; i++) {
        if (r->reqs[i].used) {
            LKV_LOG_ERROR("remote tier: cannot change the block size while "
                          "transfers are in flight");
            return LKV_ERR_BUSY;
        }
    }
    for (int i = 0; i < r->n_nodes; i++) {
        if (r->nodes[i].bytes < block_bytes) {
            LKV_LOG_ERROR("kvnode %s has %llu bytes, less than one %zu-byte "
                          "block; give it more --capacity-gib",
                          r->nodes[i].endpoint,
                          (unsigned long long)r->nodes[i].bytes, block_bytes);
            return LKV_ERR_NOSPACE;
        }
    }
    for (int i = 0; i < r->n_nodes; i++) {
        node_t  *nd = &r->nodes[i];
        uint64_t nb = nd->bytes / block_bytes;

        if (nb > (uint64_t)(INT32_MAX - total)) {
            nb = (uint64_t)(INT32_MAX - total);
        }
        nd->first    = total;
        nd->n_blocks = (int32_t)nb;
        total += (int32_t)nb;
        LKV_LOG_INFO("kvnode %s: %d remote blocks of %zu bytes",
                     nd->endpoint, nd->n_blocks, block_bytes);
    }
    r->n_blocks    = total;
    r->block_bytes = block_bytes;
    return LKV_OK;
}

uint64_t lkv_kv_remote_ucx_bytes(const lkv_kv_remote_ucx_t *r)
{
    uint64_t b = 0;

    for (int i = 0; i < r->n_nodes; i++) {
        b += r->nodes[i].bytes;
    }
    return b;
}

void lkv_kv_remote_ucx_destroy(lkv_kv_remote_ucx_t **r_p)
{
    if (r_p == NULL || *r_p == NULL) {
        return;
    }
    lkv_kv_remote_ucx_t *r = *r_p;
    for (int i = 0; r->reqs != NULL && i < r->n_reqs; i++) {
        if (r->reqs[i].used) {
            req_drain_free(r, &r->reqs[i]);
        }
    }
    for (int i = 0; i < LKV_KV_REMOTE_MAX_NODES; i++) {
        lkv_ucx_ep_destroy(r->ucx, &r->nodes[i].ep);
    }
    lkv_ucx_destroy(&r->ucx);
    free(r->reqs);
    free(r->s_local);
    free(r->s_roff);
    free(r);
    *r_p = NULL;
}

void lkv_kv_remote_ucx_handle(lkv_kv_remote_ucx_t *r, lkv_kv_remote_t *out)
{
    out->ops      = &ucx_remote_ops;
    out->ctx      = r;
    out->n_blocks = r->n_blocks;
}

static lkv_status_t run_wait(lkv_kv_remote_ucx_t *r, bool put,
                             const lkv_kv_block_t *b, void *const *local,
                             int n)
{
    lkv_kv_remote_req_t *q;
    lkv_status_t         st;

    LKV_CHECK(xfer(r, put, b, local, n, r->block_bytes, 0, &q));
    while ((st = op_test(r, q)) == LKV_AGAIN) {
    }
    op_req_free(r, q);
    return st;
}

lkv_status_t lkv_kv_remote_ucx_probe(lkv_kv_remote_ucx_t *r, int n_blocks,
                                     double *put_bps, double *get_bps)
{
    if (r == NULL || n_blocks < 1 || r->n_nodes == 0) {
        return LKV_ERR_INVALID;
    }
    if (n_blocks > r->nodes[0].n_blocks) {
        n_blocks = r->nodes[0].n_blocks;
    }
    size_t          bb  = r->block_bytes;
    char           *buf = malloc((size_t)n_blocks * bb);
    void          **loc = malloc((size_t)n_blocks * sizeof(*loc));
    lkv_kv_block_t *b   = malloc((size_t)n_blocks * sizeof(*b));
    lkv_status_t    st  = LKV_ERR_NOMEM;
    if (buf == NULL || loc == NULL || b == NULL) {
        goto out;
    }
    memset(buf, 0x5a, (size_t)n_blocks * bb);
    for (int i = 0; i < n_blocks; i++) {
        loc[i] = buf + (size_t)i * bb;
        b[i]   = r->nodes[0].first + i;
    }
    /* warm-up (wire-up of lanes) */
    LKV_CHECK_GOTO(run_wait(r, true, b, loc, 1), st, out);
    int64_t t0 = lkv_now_ns();
    LKV_CHECK_GOTO(run_wait(r, true, b, loc, n_blocks), st, out);
    int64_t t1 = lkv_now_ns();
    LKV_CHECK_GOTO(run_wait(r, false, b, loc, n_blocks), st, out);
    int64_t t2    = lkv_now_ns();
    double  bytes = (double)n_blocks * (double)bb;
    if (put_bps != NULL) {
        *put_bps = bytes / ((double)(t1 - t0 + 1) * 1e-9);
    }
    if (get_bps != NULL) {
        *get_bps = bytes / ((double)(t2 - t1 + 1) * 1e-9);
    }
    st = LKV_OK;
out:
    free(buf);
    free(loc);
    free(b);
    return st;
}
