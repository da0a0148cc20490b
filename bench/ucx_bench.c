/* ucx_bench.c - put/get bandwidth of layer-blocks against a kvnode; see
 * ucx_bench.h. One thread. */
#define LKV_LOG_MODULE "ucx_bench"

#include "bench/ucx_bench.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/kvnode.h"
#include "transport/ucx.h"

lkv_ucx_bench_config_t lkv_ucx_bench_config_default(void)
{
    lkv_ucx_bench_config_t c;

    memset(&c, 0, sizeof(c));
    c.block_bytes = (size_t)1 << 20;
    c.n_blocks    = 512;
    c.list        = 16;
    c.window      = 4;
    return c;
}

typedef struct {
    lkv_ucx_t    *u;
    lkv_ucx_ep_t *ep;
    char         *ring;   /* (window * list) local blocks */
    void        **loc;    /* (window * list) */
    uint64_t     *roff;   /* (window * list) */
    uint64_t      remote_slots;
} bench_t;

/* One timed pass: n_blocks blocks in lists, window lists in flight. */
static lkv_status_t pass(bench_t *b, const lkv_ucx_bench_config_t *c,
                         bool put, double *mbps)
{
    lkv_ucx_op_t *ops[256];
    int           n_lists = (c->n_blocks + c->list - 1) / c->list;
    int           issued = 0, done = 0;
    lkv_status_t  st = LKV_OK;
    int64_t       t0 = lkv_now_ns();

    memset(ops, 0, sizeof(ops));
    while (done < n_lists && st == LKV_OK) {
        /* refill the window */
        while (issued < n_lists && issued - done < c->window) {
            int w   = issued % c->window;
            int n   = c->list;
            int rem = c->n_blocks - issued * c->list;
            if (n > rem) {
                n = rem;
            }
            for (int j = 0; j < n; j++) {
                uint64_t blk = (uint64_t)issued * (uint64_t)c->list + (uint64_t)j;
                b->loc[w * c->list + j] =
                    b->ring + (size_t)(w * c->list + j) * c->block_bytes;
                b->roff[w * c->list + j] =
                    (blk % b->remote_slots) * (uint64_t)c->block_bytes;
            }
            st = put ? lkv_ucx_put(b->u, b->ep, &b->loc[w * c->list],
                                   &b->roff[w * c->list], n, c->block_bytes,
                                   &ops[w])
                     : lkv_ucx_get(b->u, b->ep, &b->loc[w * c->list],
                                   &b->roff[w * c->list], n, c->block_bytes,
                                   &ops[w]);
            if (st != LKV_OK) {
                break;
            }
            issued++;
        }
        if (st != LKV_OK) {
            break;
        }
        /* lists complete in order of their window slot */
        int          w = done % c->window;
        lkv_status_t t = lkv_ucx_op_test(b->u, ops[w]);
        if (t == LKV_AGAIN) {
            continue;
        }
        lkv_ucx_op_release(b->u, ops[w]);
        ops[w] = NULL;
        done++;
        st = t;
    }
    int64_t t1 = lkv_now_ns();
    for (int w = 0; w < c->window; w++) {
        if (ops[w] != NULL) {
            (void)lkv_ucx_op_wait(b->u, ops[w]);
            lkv_ucx_op_release(b->u, ops[w]);
        }
    }
    if (st == LKV_OK) {
        *mbps = (double)c->n_blocks * (double)c->block_bytes /
                (1024.0 * 1024.0) / ((double)(t1 - t0) * 1e-9);
    }
    return st;
}

/* Write a distinct pattern to remote slots [0, n), read it back, compare. */
static lkv_status_t verify(bench_t *b, const lkv_ucx_bench_config_t *c,
                           bool *ok)
{
    int           n = c->list;
    lkv_ucx_op_t *op;

    if ((uint64_t)n > b->remote_slots) {
        n = (int)b->remote_slots;
    }
    for (int j = 0; j < n; j++) {
        b->loc[j]  = b->ring + (size_t)j * c->block_bytes;
        b->roff[j] = (uint64_t)j * c->block_bytes;
        for (size_t k = 0; k < c->block_bytes; k += 64) {
            b->ring[(size_t)j * c->block_bytes + k] = (char)(j * 31 + k / 64);
        }
    }
    LKV_CHECK(lkv_ucx_put(b->u, b->ep, b->loc, b->roff, n, c->block_bytes,
                          &op));
    lkv_status_t st = lkv_ucx_op_wait(b->u, op);
    lkv_ucx_op_release(b->u, op);
    LKV_CHECK(st);
    memset(b->ring, 0, (size_t)n * c->block_bytes);
    LKV_CHECK(lkv_ucx_get(b->u, b->ep, b->loc, b->roff, n, c->block_bytes,
                          &op));
    st = lkv_ucx_op_wait(b->u, op);
    lkv_ucx_op_release(b->u, op);
    LKV_CHECK(st);
    *ok = true;
    for (int j = 0; j < n && *ok; j++) {
        for (size_t k = 0; k < c->block_bytes; k += 64) {
            if (b->ring[(size_t)j * c->block_bytes + k] !=
                (char)(j * 31 + k / 64)) {
                LKV_LOG_ERROR("block %d byte %zu differs after put/get", j, k);
                *ok = false;
                break;
            }
        }
    }
    return LKV_OK;
}

lkv_status_t lkv_ucx_bench_run(const lkv_ucx_bench_config_t *cfg,
                               lkv_ucx_bench_result_t *res)
{
    lkv_kvnode_info_t info;
    bench_t           b;
    lkv_status_t      st;

    if (cfg == NULL || res == NULL || cfg->endpoint == NULL ||
        cfg->block_bytes == 0 || cfg->n_blocks < 1 || cfg->list < 1 ||
        cfg->window < 1 || cfg->window > 256) {
        return LKV_ERR_INVALID;
    }
    memset(&b, 0, sizeof(b));
    memset(res, 0, sizeof(*res));
    LKV_CHECK(lkv_kvnode_query(cfg->endpoint, 3000, &info));
    b.remote_slots = info.bytes / cfg->block_bytes;
    if (cfg->slots > 0 && (uint64_t)cfg->slots < b.remote_slots) {
        b.remote_slots = (uint64_t)cfg->slots;
    }
    if (b.remote_slots == 0) {
        LKV_LOG_ERROR("kvnode %s is smaller than one %zu-byte block",
                      cfg->endpoint, cfg->block_bytes);
        lkv_kvnode_info_free(&info);
        return LKV_ERR_NOSPACE;
    }
    size_t ring_n = (size_t)cfg->window * (size_t)cfg->list;
    b.ring        = malloc(ring_n * cfg->block_bytes);
    b.loc         = calloc(ring_n, sizeof(*b.loc));
    b.roff        = calloc(ring_n, sizeof(*b.roff));
    if (b.ring == NULL || b.loc == NULL || b.roff == NULL) {
        st = LKV_ERR_NOMEM;
        goto out;
    }
    memset(b.ring, 0x33, ring_n * cfg->block_bytes);
    lkv_ucx_config_t uc = lkv_ucx_config_default();
    LKV_CHECK_GOTO(lkv_ucx_create(&uc, &b.u), st, out);
    LKV_CHECK_GOTO(lkv_ucx_ep_create(b.u, cfg->endpoint, info.addr,
                                     info.addr_len, info.rkey, info.rkey_len,
                                     info.base,
                                     b.remote_slots * cfg->block_bytes, &b.ep),
                   st, out);
    {
        double                 warm;
        /* untimed pass over every remote slot the timed passes touch:
         * first-touch page faults of the kvnode's memory are not link
         * bandwidth */
        lkv_ucx_bench_config_t w = *cfg;
        LKV_CHECK_GOTO(pass(&b, &w, true, &warm), st, out);
    }
    if (getenv("LKV_UCX_BENCH_PRINT_EP") != NULL) {
        lkv_ucx_ep_print(b.ep);
    }
    LKV_CHECK_GOTO(pass(&b, cfg, true, &res->put_mbps), st, out);
    LKV_CHECK_GOTO(pass(&b, cfg, false, &res->get_mbps), st, out);
    LKV_CHECK_GOTO(verify(&b, cfg, &res->verified), st, out);
    st = LKV_OK;
out:
    if (b.u != NULL) {
        lkv_ucx_ep_destroy(b.u, &b.ep);
    }
    lkv_ucx_destroy(&b.u);
    lkv_kvnode_info_free(&info);
    free(b.ring);
    free(b.loc);
    free(b.roff);
    return st;
}
