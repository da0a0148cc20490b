/* kv_mover.c - asynchronous layer copies between KV tiers (see kv_mover.h).
 *
 * Transfers live in a fixed array of max_inflight slots, each with its own
 * backend event created up front, so submit and poll allocate nothing.
 * `order` lists in-flight slots in submit order. One mutex guards the
 * mover; it is released while blocking in wait and destroy.
 */
#include "kvstore/kv_mover.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LKV_LOG_MODULE "kv_mover"
#include <pthread.h>

#include "common/clock.h"
#include "common/log.h"

struct lkv_kv_xfer {
    bool                 used;
    bool                 done; /* completion observed */
    uint64_t             tag;
    lkv_kv_tier_t        src_tier;
    lkv_kv_tier_t        dst_tier;
    int                  n_blocks;
    lkv_status_t         status;
    int64_t              submit_ns;
    lkv_kern_event_t    *ev;  /* local transfers */
    lkv_kv_remote_req_t *req; /* remote transfers */
};

struct lkv_kv_mover {
    lkv_kv_pool_t        *pool;
    lkv_kern_backend_t   *be;
    lkv_kv_mover_config_t cfg;
    size_t                block_bytes;
    pthread_mutex_t       lock;
    lkv_kv_xfer_t        *x;     /* (max_inflight) */
    int                  *order; /* in-flight slots, submit order */
    int                   n_inflight;
    int                  *free_idx; /* stack of free slots */
    int                   n_free;
    void                **scratch; /* (max_blocks) local addresses */
    int64_t               last_done[LKV_KV_TIER_COUNT][LKV_KV_TIER_COUNT];
    lkv_kv_mover_stats_t  stats;
};

lkv_kv_mover_config_t lkv_kv_mover_config_default(void)
{
    lkv_kv_mover_config_t cfg = {.max_inflight = 256, .max_blocks = 65536};
    return cfg;
}

lkv_status_t lkv_kv_mover_create(lkv_kv_pool_t *pool,
                                 const lkv_kv_mover_config_t *cfg,
                                 lkv_kv_mover_t **m_p)
{
    lkv_status_t st = LKV_ERR_NOMEM;

    if (pool == NULL || cfg == NULL || m_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (cfg->max_inflight < 1 || cfg->max_inflight > (1 << 20) ||
        cfg->max_blocks < 1 || cfg->max_blocks > (1 << 24)) {
        LKV_LOG_ERROR("kv mover needs max_inflight in 1..2^20 and max_blocks "
                      "in 1..2^24 (got %d, %d)",
                      cfg->max_inflight, cfg->max_blocks);
        return LKV_ERR_INVALID;
    }
    lkv_kv_mover_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return LKV_ERR_NOMEM;
    }
    m->pool        = pool;
    m->be          = lkv_kv_pool_backend(pool);
    m->cfg         = *cfg;
    m->block_bytes = lkv_kv_pool_block_bytes(pool);
    pthread_mutex_init(&m->lock, NULL);
    m->x        = calloc((size_t)cfg->max_inflight, sizeof(*m->x));
    m->order    = malloc((size_t)cfg->max_inflight * sizeof(int));
    m->free_idx = malloc((size_t)cfg->max_inflight * sizeof(int));
    m->scratch  = malloc((size_t)cfg->max_blocks * sizeof(void *));
    if (!m->x || !m->order || !m->free_idx || !m->scratch) {
        goto fail;
    }
    for (int i = 0; i < cfg->max_inflight; i++) {
        st = LKV_KERN_CALL(m->be, event_create, &m->x[i].ev);
        if (st < 0) {
            m->x[i].ev = NULL;
            LKV_LOG_ERROR("kv mover: cannot create copy events: %s",
                          lkv_status_str(st));
            goto fail;
        }
        m->free_idx[m->n_free++] = cfg->max_inflight - 1 - i;
    }
    *m_p = m;
    return LKV_OK;
fail:
    lkv_kv_mover_destroy(&m);
    return st;
}

/* Record that x completed with status (lock held). */
static void observe_locked(lkv_kv_mover_t *m, lkv_kv_xfer_t *x,
                           lkv_status_t status)
{
    if (x->done) {
        return;
    }
    int64_t now   = lkv_now_ns();
    int64_t start = x->submit_ns;
    int64_t *last = &m->last_done[x->src_tier][x->dst_tier];
    if (*last > start) {
        start = *last;
    }
    if (now > start) {
        m->stats.busy_ns[x->src_tier][x->dst_tier] += (uint64_t)(now - start);
    }
    *last     = now;
    x->done   = true;
    x->status = status;
    if (status < 0) {
        m->stats.n_failed++;
    }
}

/* Non-blocking completion check (lock held). */
static lkv_status_t test_locked(lkv_kv_mover_t *m, lkv_kv_xfer_t *x)
{
    if (x->done) {
        return x->status;
    }
    lkv_status_t st;
    if (x->req != NULL) {
        const lkv_kv_remote_t *r = lkv_kv_pool_remote(m->pool);
        if (r->ops->progress != NULL) {
            (void)r->ops->progress(r->ctx);
        }
        st = r->ops->test(r->ctx, x->req);
    } else {
        st = LKV_KERN_CALL(m->be, event_query, x->ev);
    }
    if (st > 0) {
        return LKV_AGAIN; /* LKV_AGAIN / LKV_INPROGRESS: still in flight */
    }
    if (x->req == NULL && st == LKV_OK) {
        /* a copy queue is FIFO: earlier transfers of the same pair are done
         * too; observe them first so busy time is attributed in order */
        for (int pos = 0; pos < m->n_inflight; pos++) {
            lkv_kv_xfer_t *e = &m->x[m->order[pos]];
            if (e == x) {
                break;
            }
            if (e->req == NULL && e->src_tier == x->src_tier &&
                e->dst_tier == x->dst_tier) {
                observe_locked(m, e, LKV_OK);
            }
        }
    }
    observe_locked(m, x, st);
    return x->status;
}

static void release_locked(lkv_kv_mover_t *m, int pos)
{
    int            idx = m->order[pos];
    lkv_kv_xfer_t *x   = &m->x[idx];
    if (x->req != NULL) {
        const lkv_kv_remote_t *r = lkv_kv_pool_remote(m->pool);
        r->ops->req_free(r->ctx, x->req);
        x->req = NULL;
    }
    x->used = false;
    memmove(&m->order[pos], &m->order[pos + 1],
            (size_t)(m->n_inflight - pos - 1) * sizeof(int));
    m->n_inflight--;
    m->free_idx[m->n_free++] = idx;
}

void lkv_kv_mover_destroy(lkv_kv_mover_t **m_p)
{
    if (m_p == NULL || *m_p == NULL) {
        return;
    }
    lkv_kv_mover_t *m = *m_p;
    if (m->x != NULL) {
        /* wait for everything still in flight */
        while (m->order != NULL && m->n_inflight > 0) {
            lkv_kv_xfer_t *x = &m->x[m->order[0]];
            (void)lkv_kv_mover_wait(m, x);
            pthread_mutex_lock(&m->lock);
            release_locked(m, 0);
            pthread_mutex_unlock(&m->lock);
        }
        for (int i = 0; i < m->cfg.max_inflight; i++) {
            if (m->x[i].ev != NULL && m->be->ops->event_destroy != NULL) {
                m->be->ops->event_destroy(m->be, m->x[i].ev);
            }
        }
    }
    free(m->x);
    free(m->order);
    free(m->free_idx);
    free(m->scratch);
    pthread_mutex_destroy(&m->lock);
    free(m);
    *m_p = NULL;
}

static lkv_status_t validate(const lkv_kv_mover_t *m,
                             const lkv_kv_mover_req_t *req)
{
    if (req->src_tier < 0 || req->src_tier >= LKV_KV_TIER_COUNT ||
        req->dst_tier < 0 || req->dst_tier >= LKV_KV_TIER_COUNT ||
        req->src_tier == req->dst_tier) {
        LKV_LOG_ERROR("kv move %llu: bad tier pair %d -> %d",
                      (unsigned long long)req->tag, (int)req->src_tier,
                      (int)req->dst_tier);
        return LKV_ERR_INVALID;
    }
    if (req->n_blocks < 1 || req->n_blocks > m->cfg.max_blocks ||
        req->src == NULL || req->dst == NULL) {
        LKV_LOG_ERROR("kv move %llu: %d blocks (allowed 1..%d, arrays "
                      "required)",
                      (unsigned long long)req->tag, req->n_blocks,
                      m->cfg.max_blocks);
        return LKV_ERR_INVALID;
    }
    if ((req->src_tier == LKV_KV_TIER_REMOTE ||
         req->dst_tier == LKV_KV_TIER_REMOTE) &&
        lkv_kv_pool_remote(m->pool) == NULL) {
        LKV_LOG_ERROR("kv move %llu: no remote kv tier is configured",
                      (unsigned long long)req->tag);
        return LKV_ERR_UNSUPPORTED;
    }
    int32_t ns = lkv_kv_pool_n_blocks(m->pool, req->src_tier);
    int32_t nd = lkv_kv_pool_n_blocks(m->pool, req->dst_tier);
    for (int i = 0; i < req->n_blocks; i++) {
        if (req->src[i] < 0 || req->src[i] >= ns || req->dst[i] < 0 ||
            req->dst[i] >= nd) {
            LKV_LOG_ERROR("kv move %llu: block pair %d (%d -> %d) outside "
                          "the %s (%d) / %s (%d) pools",
                          (unsigned long long)req->tag, i, (int)req->src[i],
                          (int)req->dst[i], lkv_kv_tier_name(req->src_tier),
                          (int)ns, lkv_kv_tier_name(req->dst_tier), (int)nd);
            return LKV_ERR_INVALID;
        }
    }
    return LKV_OK;
}

/* Queue the merged copies of a local transfer (lock held). */
static lkv_status_t submit_local(lkv_kv_mover_t *m,
                                 const lkv_kv_mover_req_t *req,
                                 lkv_kv_xfer_t *x, int *n_copies_p)
{
    lkv_kern_queue_t     q;
    lkv_kern_copy_kind_t kind;
    lkv_status_t         st = LKV_OK;

    if (req->src_tier == LKV_KV_TIER_DEVICE) {
        q    = LKV_KERN_QUEUE_D2H;
        kind = LKV_KERN_COPY_D2H;
    } else {
        q    = LKV_KERN_QUEUE_H2D;
        kind = LKV_KERN_COPY_H2D;
    }
    if (req->after != NULL) {
        LKV_CHECK(LKV_KERN_CALL(m->be, queue_wait, q, req->after));
    }
    int n_copies = 0;
    for (int i = 0; i < req->n_blocks;) {
        int j = i + 1;
        while (j < req->n_blocks && req->src[j] == req->src[j - 1] + 1 &&
               req->dst[j] == req->dst[j - 1] + 1) {
            j++;
        }
        void *dst = lkv_kv_pool_block_addr(m->pool, req->dst_tier, req->dst[i]);
        void *src = lkv_kv_pool_block_addr(m->pool, req->src_tier, req->src[i]);
        st = LKV_KERN_CALL(m->be, copy_async, q, kind, dst, src,
                           (size_t)(j - i) * m->block_bytes);
        if (st < 0) {
            break;
        }
        n_copies++;
        i = j;
    }
    if (st >= 0) {
        st = LKV_KERN_CALL(m->be, event_record, x->ev, q);
    }
    if (st < 0) {
        /* copies already queued must finish before we report "nothing in
         * flight": the caller may free their blocks */
        LKV_LOG_ERROR("kv move %llu: queueing copies failed: %s",
                      (unsigned long long)req->tag, lkv_status_str(st));
        (void)LKV_KERN_CALL(m->be, sync, q);
        return st;
    }
    *n_copies_p = n_copies;
    return LKV_OK;
}

static lkv_status_t submit_remote(lkv_kv_mover_t *m,
                                  const lkv_kv_mover_req_t *req,
                                  lkv_kv_xfer_t *x)
{
    const lkv_kv_remote_t *r        = lkv_kv_pool_remote(m->pool);
    bool                   put      = req->dst_tier == LKV_KV_TIER_REMOTE;
    lkv_kv_tier_t          local_t  = put ? req->src_tier : req->dst_tier;
    const lkv_kv_block_t  *local_b  = put ? req->src : req->dst;
    const lkv_kv_block_t  *remote_b = put ? req->dst : req->src;

    if (req->after != NULL) {
        LKV_CHECK(LKV_KERN_CALL(m->be, event_sync, req->after));
    }
    for (int i = 0; i < req->n_blocks; i++) {
        m->scratch[i] = lkv_kv_pool_block_addr(m->pool, local_t, local_b[i]);
    }
    int          dev = local_t == LKV_KV_TIER_DEVICE;
    lkv_status_t st =
        put ? r->ops->put(r->ctx, remote_b, m->scratch, req->n_blocks,
                          m->block_bytes, dev, &x->req)
            : r->ops->get(r->ctx, remote_b, m->scratch, req->n_blocks,
                          m->block_bytes, dev, &x->req);
    if (st < 0) {
        x->req = NULL;
        return st;
    }
    return LKV_OK;
}

lkv_status_t lkv_kv_mover_submit(lkv_kv_mover_t *m,
                                 const lkv_kv_mover_req_t *req,
                                 lkv_kv_xfer_t **x_p)
{
    if (m == NULL || req == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(validate(m, req));
    pthread_mutex_lock(&m->lock);
    if (m->n_free == 0) {
        pthread_mutex_unlock(&m->lock);
        return LKV_ERR_BUSY;
    }
    int            idx = m->free_idx[m->n_free - 1];
    lkv_kv_xfer_t *x   = &m->x[idx];
    x->tag             = req->tag;
    x->src_tier        = req->src_tier;
    x->dst_tier        = req->dst_tier;
    x->n_blocks        = req->n_blocks;
    x->done            = false;
    x->status          = LKV_OK;
    x->req             = NULL;
    x->submit_ns       = lkv_now_ns();
    int          n_copies = 1;
    lkv_status_t st;
    if (req->src_tier == LKV_KV_TIER_REMOTE ||
        req->dst_tier == LKV_KV_TIER_REMOTE) {
        st = submit_remote(m, req, x);
    } else {
        st = submit_local(m, req, x, &n_copies);
    }
    if (st < 0) {
        pthread_mutex_unlock(&m->lock);
        return st;
    }
    m->n_free--;
    x->used                       = true;
    m->order[m->n_inflight++]     = idx;
    lkv_kv_mover_stats_t *s       = &m->stats;
    s->n_xfers[req->src_tier][req->dst_tier]++;
    s->n_copies[req->src_tier][req->dst_tier] += (uint64_t)n_copies;
    s->bytes[req->src_tier][req->dst_tier] +=
        (uint64_t)req->n_blocks * m->block_bytes;
    pthread_mutex_unlock(&m->lock);
    if (x_p != NULL) {
        *x_p = x;
    }
    return LKV_OK;
}

lkv_kern_event_t *lkv_kv_mover_event(const lkv_kv_xfer_t *x)
{
    return x != NULL && x->req == NULL ? x->ev : NULL;
}

uint64_t lkv_kv_mover_tag(const lkv_kv_xfer_t *x)
{
    return x != NULL ? x->tag : 0;
}

lkv_status_t lkv_kv_mover_test(lkv_kv_mover_t *m, lkv_kv_xfer_t *x)
{
    if (m == NULL || x == NULL || !x->used) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&m->lock);
    lkv_status_t st = test_locked(m, x);
    pthread_mutex_unlock(&m->lock);
    return st;
}

lkv_status_t lkv_kv_mover_wait(lkv_kv_mover_t *m, lkv_kv_xfer_t *x)
{
    if (m == NULL || x == NULL || !x->used) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&m->lock);
    if (x->req == NULL && !x->done) {
        lkv_kern_event_t *ev = x->ev;
        pthread_mutex_unlock(&m->lock);
        lkv_status_t st = LKV_KERN_CALL(m->be, event_sync, ev);
        pthread_mutex_lock(&m->lock);
        if (st < 0) {
            observe_locked(m, x, st);
        }
    }
    lkv_status_t st;
    while ((st = test_locked(m, x)) == LKV_AGAIN) {
        pthread_mutex_unlock(&m->lock);
        lkv_sleep_ns(20000); /* remote: keep progressing */
        pthread_mutex_lock(&m->lock);
    }
    pthread_mutex_unlock(&m->lock);
    return st;
}

lkv_status_t lkv_kv_mover_poll(lkv_kv_mover_t *m, lkv_kv_mover_done_t *out,
                               int max, int *n_p)
{
    if (m == NULL || n_p == NULL || max < 0 || (max > 0 && out == NULL)) {
        return LKV_ERR_INVALID;
    }
    int n = 0;
    pthread_mutex_lock(&m->lock);
    for (int pos = 0; pos < m->n_inflight && n < max;) {
        lkv_kv_xfer_t *x  = &m->x[m->order[pos]];
        lkv_status_t   st = test_locked(m, x);
        if (st == LKV_AGAIN) {
            pos++;
            continue;
        }
        out[n].tag      = x->tag;
        out[n].status   = st;
        out[n].src_tier = x->src_tier;
        out[n].dst_tier = x->dst_tier;
        out[n].n_blocks = x->n_blocks;
        n++;
        release_locked(m, pos);
    }
    pthread_mutex_unlock(&m->lock);
    *n_p = n;
    return LKV_OK;
}

int lkv_kv_mover_inflight(lkv_kv_mover_t *m)
{
    if (m == NULL) {
        return 0;
    }
    pthread_mutex_lock(&m->lock);
    int n = m->n_inflight;
    pthread_mutex_unlock(&m->lock);
    return n;
}

void lkv_kv_mover_stats(lkv_kv_mover_t *m, lkv_kv_mover_stats_t *stats_p)
{
    if (m == NULL || stats_p == NULL) {
        return;
    }
    pthread_mutex_lock(&m->lock);
    *stats_p = m->stats;
    pthread_mutex_unlock(&m->lock);
}
