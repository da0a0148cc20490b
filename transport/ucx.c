/* ucx.c - UCX (ucp) context, worker, memory regions, endpoints and
 * put/get lists with deadlines; see ucx.h. Single-threaded per lkv_ucx_t. */
#define LKV_LOG_MODULE "ucx"

#include "transport/ucx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucp/api/ucp.h>

#include "common/clock.h"
#include "common/log.h"

struct lkv_ucx_op {
    lkv_ucx_t    *u;
    lkv_ucx_ep_t *ep;
    int           pending;  /* UCX requests not yet completed */
    lkv_status_t  status;   /* first error seen */
    int64_t       deadline_ns;
    bool          used;
    bool          released; /* caller let go; recycle when pending == 0 */
};

struct lkv_ucx_ep {
    lkv_ucx_t   *u;
    ucp_ep_h     ep;   /* NULL once closed */
    ucp_rkey_h   rkey; /* NULL once destroyed */
    uint64_t     base, len;
    lkv_status_t status;
    char         name[96];
};

struct lkv_ucx_mr {
    ucp_mem_h memh;
    void     *base;
    size_t    len;
    bool      own; /* we mmap'ed base */
    void     *rkey;
    size_t    rkey_len;
};

struct lkv_ucx {
    lkv_ucx_config_t cfg;
    ucp_context_h    ctx;
    ucp_worker_h     wrk;
    ucp_address_t   *addr;
    size_t           addr_len;
    lkv_ucx_op_t    *ops;   /* (max_ops) */
    int             *free;  /* free op indices */
    int              n_free;
};

lkv_ucx_config_t lkv_ucx_config_default(void)
{
    lkv_ucx_config_t c;
    const char      *env = getenv("LKV_UCX_TIMEOUT_MS");

    memset(&c, 0, sizeof(c));
    c.max_ops       = 1024;
    c.op_timeout_ms = 5000;
    if (env != NULL && atoi(env) > 0) {
        c.op_timeout_ms = atoi(env);
    }
    c.wakeup = false;
    return c;
}

lkv_status_t lkv_ucx_status(int s)
{
    switch ((ucs_status_t)s) {
    case UCS_OK:
        return LKV_OK;
    case UCS_INPROGRESS:
        return LKV_AGAIN;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
        return LKV_ERR_NOMEM;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
        return LKV_ERR_INVALID;
    case UCS_ERR_UNSUPPORTED:
        return LKV_ERR_UNSUPPORTED;
    case UCS_ERR_BUSY:
        return LKV_ERR_BUSY;
    case UCS_ERR_TIMED_OUT:
        return LKV_ERR_TIMEOUT;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_CANCELED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
        return LKV_ERR_PEER_LOST;
    default:
        return LKV_ERR_IO;
    }
}

/* ---- context ---- */

lkv_status_t lkv_ucx_create(const lkv_ucx_config_t *cfg, lkv_ucx_t **u_p)
{
    lkv_ucx_config_t c = cfg != NULL ? *cfg : lkv_ucx_config_default();
    lkv_ucx_t       *u;
    ucp_config_t    *config = NULL;
    ucs_status_t     s;
    lkv_status_t     st = LKV_ERR_IO;

    if (u_p == NULL || c.max_ops < 1 || c.max_ops > (1 << 20) ||
        c.op_timeout_ms < 1) {
        LKV_LOG_ERROR("invalid ucx config: max_ops %d, op_timeout_ms %d",
                      c.max_ops, c.op_timeout_ms);
        return LKV_ERR_INVALID;
    }
    /* error-handling endpoints silently lose shared memory without these
     * (UCX 1.13); the caller's environment wins when it sets them */
    const char *tls = getenv("UCX_TLS");
    if (tls == NULL || strstr(tls, "sm") != NULL ||
        strstr(tls, "posix") != NULL || strstr(tls, "sysv") != NULL ||
        strstr(tls, "all") != NULL) {
        setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
        setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
    }

    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        return LKV_ERR_NOMEM;
    }
    u->cfg  = c;
    u->ops  = calloc((size_t)c.max_ops, sizeof(*u->ops));
    u->free = calloc((size_t)c.max_ops, sizeof(*u->free));
    if (u->ops == NULL || u->free == NULL) {
        st = LKV_ERR_NOMEM;
        goto fail;
    }
    for (int i = c.max_ops - 1; i >= 0; i--) {
        u->free[u->n_free++] = i;
    }

    s = ucp_config_read(NULL, NULL, &config);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_config_read: %s (check the UCX_* environment)",
                      ucs_status_string(s));
        goto fail;
    }
    ucp_params_t pp;
    memset(&pp, 0, sizeof(pp));
    pp.field_mask = UCP_PARAM_FIELD_FEATURES;
    pp.features   = UCP_FEATURE_RMA | UCP_FEATURE_AM;
    if (c.wakeup) {
        pp.features |= UCP_FEATURE_WAKEUP;
    }
    s = ucp_init(&pp, config, &u->ctx);
    ucp_config_release(config);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_init: %s (check UCX_TLS / UCX_NET_DEVICES)",
                      ucs_status_string(s));
        u->ctx = NULL;
        goto fail;
    }
    ucp_worker_params_t wp;
    memset(&wp, 0, sizeof(wp));
    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    s              = ucp_worker_create(u->ctx, &wp, &u->wrk);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_worker_create: %s", ucs_status_string(s));
        u->wrk = NULL;
        goto fail;
    }
    s = ucp_worker_get_address(u->wrk, &u->addr, &u->addr_len);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_worker_get_address: %s", ucs_status_string(s));
        u->addr = NULL;
        goto fail;
    }
    *u_p = u;
    return LKV_OK;

fail:
    lkv_ucx_destroy(&u);
    return st;
}

void lkv_ucx_destroy(lkv_ucx_t **u_p)
{
    if (u_p == NULL || *u_p == NULL) {
        return;
    }
    lkv_ucx_t *u = *u_p;
    if (u->ops != NULL && u->n_free != u->cfg.max_ops) {
        LKV_LOG_WARN("ucx destroyed with %d operations in use",
                     u->cfg.max_ops - u->n_free);
    }
    if (u->addr != NULL) {
        ucp_worker_release_address(u->wrk, u->addr);
    }
    if (u->wrk != NULL) {
        ucp_worker_destroy(u->wrk);
    }
    if (u->ctx != NULL) {
        ucp_cleanup(u->ctx);
    }
    free(u->ops);
    free(u->free);
    free(u);
    *u_p = NULL;
}

lkv_status_t lkv_ucx_address(lkv_ucx_t *u, const void **addr_p, size_t *len_p)
{
    if (u == NULL || addr_p == NULL || len_p == NULL) {
        return LKV_ERR_INVALID;
    }
    *addr_p = u->addr;
    *len_p  = u->addr_len;
    return LKV_OK;
}

int lkv_ucx_progress(lkv_ucx_t *u)
{
    int n = 0;
    unsigned k;

    /* bounded: a peer in trouble can keep progress busy for a long time */
    for (int i = 0; i < 64 && (k = ucp_worker_progress(u->wrk)) > 0; i++) {
        n += (int)k;
    }
    return n;
}

int lkv_ucx_event_fd(lkv_ucx_t *u)
{
    int fd = -1;

    if (!u->cfg.wakeup || ucp_worker_get_efd(u->wrk, &fd) != UCS_OK) {
        return -1;
    }
    return fd;
}

lkv_status_t lkv_ucx_arm(lkv_ucx_t *u)
{
    if (!u->cfg.wakeup) {
        return LKV_ERR_UNSUPPORTED;
    }
    ucs_status_t s = ucp_worker_arm(u->wrk);
    if (s == UCS_ERR_BUSY) {
        return LKV_ERR_BUSY;
    }
    return lkv_ucx_status(s);
}

int lkv_ucx_ops_in_use(const lkv_ucx_t *u)
{
    return u->cfg.max_ops - u->n_free;
}

/* ---- memory ---- */

lkv_status_t lkv_ucx_mr_create(lkv_ucx_t *u, void *base, size_t len,
                               lkv_ucx_mr_t **mr_p)
{
    lkv_ucx_mr_t *mr;
    ucs_status_t  s;

    if (u == NULL || mr_p == NULL || len == 0) {
        return LKV_ERR_INVALID;
    }
    mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        return LKV_ERR_NOMEM;
    }
    mr->len = len;
    ucp_mem_map_params_t mp;
    memset(&mp, 0, sizeof(mp));
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                    UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address    = base;
    mp.length     = len;
    if (base == NULL && getenv("LKV_UCX_MR_MMAP") == NULL) {
        /* let UCX allocate: shared-memory transports then map the region
         * into the peer and puts/gets become plain copies (no active
         * messages handled by the target) */
        mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        mp.flags       = UCP_MEM_MAP_ALLOCATE;
        s              = ucp_mem_map(u->ctx, &mp, &mr->memh);
        if (s == UCS_OK) {
            ucp_mem_attr_t ma;
            ma.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS |
                            UCP_MEM_ATTR_FIELD_LENGTH;
            if (ucp_mem_query(mr->memh, &ma) == UCS_OK && ma.length >= len) {
                mr->base = ma.address;
                goto pack;
            }
            ucp_mem_unmap(u->ctx, mr->memh);
            mr->memh = NULL;
        }
        mp.field_mask &= ~(uint64_t)UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        mp.flags = 0;
    }
    if (base == NULL) {
        base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) {
            LKV_LOG_ERROR("cannot map %zu bytes of host memory; lower the "
                          "capacity",
                          len);
            free(mr);
            return LKV_ERR_NOMEM;
        }
        mr->own    = true;
        mp.address = base;
    }
    mr->base = base;
    s        = ucp_mem_map(u->ctx, &mp, &mr->memh);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_mem_map of %zu bytes: %s", len,
                      ucs_status_string(s));
        mr->memh = NULL;
        lkv_ucx_mr_destroy(u, &mr);
        return LKV_ERR_IO;
    }
pack:
    s = ucp_rkey_pack(u->ctx, mr->memh, &mr->rkey, &mr->rkey_len);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("ucp_rkey_pack: %s", ucs_status_string(s));
        mr->rkey = NULL;
        lkv_ucx_mr_destroy(u, &mr);
        return LKV_ERR_IO;
    }
    *mr_p = mr;
    return LKV_OK;
}

void lkv_ucx_mr_destroy(lkv_ucx_t *u, lkv_ucx_mr_t **mr_p)
{
    if (mr_p == NULL || *mr_p == NULL) {
        return;
    }
    lkv_ucx_mr_t *mr = *mr_p;
    if (mr->rkey != NULL) {
        ucp_rkey_buffer_release(mr->rkey);
    }
    if (mr->memh != NULL) {
        ucp_mem_unmap(u->ctx, mr->memh);
    }
    if (mr->own) {
        munmap(mr->base, mr->len);
    }
    free(mr);
    *mr_p = NULL;
}

void *lkv_ucx_mr_base(const lkv_ucx_mr_t *mr)
{
    return mr->base;
}

size_t lkv_ucx_mr_len(const lkv_ucx_mr_t *mr)
{
    return mr->len;
}

lkv_status_t lkv_ucx_mr_rkey(const lkv_ucx_mr_t *mr, const void **rkey_p,
                             size_t *len_p)
{
    if (mr == NULL || rkey_p == NULL || len_p == NULL) {
        return LKV_ERR_INVALID;
    }
    *rkey_p = mr->rkey;
    *len_p  = mr->rkey_len;
    return LKV_OK;
}

/* ---- endpoints ---- */

static void ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    lkv_ucx_ep_t *e = arg;

    (void)ep;
    if (e->status == LKV_OK) {
        LKV_LOG_ERROR("kv peer %s failed: %s; it is marked down", e->name,
                      ucs_status_string(status));
        e->status = LKV_ERR_PEER_LOST;
    }
}

/* Wait for a UCX request (close/flush) with a deadline. */
static ucs_status_t wait_req(lkv_ucx_t *u, void *req, int64_t deadline_ns)
{
    if (req == NULL) {
        return UCS_OK;
    }
    if (UCS_PTR_IS_ERR(req)) {
        return UCS_PTR_STATUS(req);
    }
    ucs_status_t s;
    while ((s = ucp_request_check_status(req)) == UCS_INPROGRESS) {
        if (lkv_ucx_progress(u) == 0 && lkv_now_ns() > deadline_ns) {
            break;
        }
    }
    if (s == UCS_INPROGRESS) {
        return UCS_ERR_TIMED_OUT; /* request leaks into UCX; ep is forced */
    }
    ucp_request_free(req);
    return s;
}

/* Force-close the UCX endpoint of a failed peer; its outstanding requests
 * complete with errors. */
static void ep_force_close(lkv_ucx_ep_t *e)
{
    lkv_ucx_t *u = e->u;

    if (e->rkey != NULL) {
        ucp_rkey_destroy(e->rkey);
        e->rkey = NULL;
    }
    if (e->ep == NULL) {
        return;
    }
    ucp_request_param_t p;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags        = UCP_EP_CLOSE_FLAG_FORCE;
    void *req      = ucp_ep_close_nbx(e->ep, &p);
    e->ep          = NULL;
    (void)wait_req(u, req,
                   lkv_now_ns() + (int64_t)u->cfg.op_timeout_ms * 1000000);
}

lkv_status_t lkv_ucx_ep_create(lkv_ucx_t *u, const char *name,
                               const void *peer_addr, size_t addr_len,
                               const void *rkey, size_t rkey_len,
                               uint64_t remote_base, uint64_t remote_len,
                               lkv_ucx_ep_t **ep_p)
{
    lkv_ucx_ep_t *e;
    ucs_status_t  s;

    if (u == NULL || ep_p == NULL || peer_addr == NULL || addr_len == 0 ||
        rkey == NULL || rkey_len == 0 || remote_len == 0 ||
        remote_base + remote_len < remote_base) {
        LKV_LOG_ERROR("kv peer %s: empty worker address, rkey or region",
                      name != NULL ? name : "?");
        return LKV_ERR_INVALID;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return LKV_ERR_NOMEM;
    }
    e->u    = u;
    e->base = remote_base;
    e->len  = remote_len;
    snprintf(e->name, sizeof(e->name), "%s", name != NULL ? name : "peer");

    ucp_ep_params_t ep;
    memset(&ep, 0, sizeof(ep));
    ep.field_mask      = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                         UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                         UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address         = peer_addr;
    ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb  = ep_err_cb;
    ep.err_handler.arg = e;
    s                  = ucp_ep_create(u->wrk, &ep, &e->ep);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("kv peer %s: ucp_ep_create: %s (is UCX_TLS the same "
                      "on both sides, and the peer reachable?)",
                      e->name, ucs_status_string(s));
        free(e);
        return LKV_ERR_PEER_LOST;
    }
    s = ucp_ep_rkey_unpack(e->ep, rkey, &e->rkey);
    if (s != UCS_OK) {
        LKV_LOG_ERROR("kv peer %s: ucp_ep_rkey_unpack: %s", e->name,
                      ucs_status_string(s));
        e->rkey = NULL;
        e->status = LKV_ERR_PEER_LOST;
        lkv_ucx_ep_destroy(u, &e);
        return LKV_ERR_IO;
    }
    *ep_p = e;
    return LKV_OK;
}

void lkv_ucx_ep_destroy(lkv_ucx_t *u, lkv_ucx_ep_t **ep_p)
{
    if (ep_p == NULL || *ep_p == NULL) {
        return;
    }
    lkv_ucx_ep_t *e = *ep_p;
    if (e->rkey != NULL) {
        ucp_rkey_destroy(e->rkey);
        e->rkey = NULL;
    }
    if (e->ep != NULL && e->status == LKV_OK) {
        ucp_request_param_t p;
        memset(&p, 0, sizeof(p));
        void        *req = ucp_ep_close_nbx(e->ep, &p); /* flush mode */
        ucs_status_t s   = wait_req(
            u, req, lkv_now_ns() + (int64_t)u->cfg.op_timeout_ms * 1000000);
        if (s == UCS_OK) {
            e->ep = NULL;
        } else {
            e->status = LKV_ERR_PEER_LOST;
        }
    }
    ep_force_close(e);
    free(e);
    *ep_p = NULL;
}

lkv_status_t lkv_ucx_ep_status(const lkv_ucx_ep_t *ep)
{
    return ep->status;
}

const char *lkv_ucx_ep_name(const lkv_ucx_ep_t *ep)
{
    return ep->name;
}

void lkv_ucx_ep_print(const lkv_ucx_ep_t *ep)
{
    if (ep->ep != NULL) {
        ucp_ep_print_info(ep->ep, stderr);
    }
}

/* ---- operations ---- */

static void op_recycle(lkv_ucx_t *u, lkv_ucx_op_t *op)
{
    op->used               = false;
    op->released           = false;
    u->free[u->n_free++]   = (int)(op - u->ops);
}

static void op_cb(void *request, ucs_status_t status, void *user_data)
{
    lkv_ucx_op_t *op = user_data;

    if (status != UCS_OK && op->status == LKV_OK) {
        op->status = lkv_ucx_status(status);
        if (op->status == LKV_AGAIN || op->status == LKV_OK) {
            op->status = LKV_ERR_IO;
        }
    }
    op->pending--;
    ucp_request_free(request);
    if (op->pending == 0 && op->released) {
        op_recycle(op->u, op);
    }
}

/* Account for a UCX request handle returned by an nbx call. */
static lkv_status_t track(lkv_ucx_op_t *op, void *req)
{
    if (req == NULL) {
        return LKV_OK; /* completed in place */
    }
    if (UCS_PTR_IS_ERR(req)) {
        lkv_status_t st = lkv_ucx_status(UCS_PTR_STATUS(req));
        return st < 0 ? st : LKV_ERR_IO;
    }
    op->pending++;
    return LKV_OK;
}

static lkv_status_t issue(lkv_ucx_t *u, lkv_ucx_ep_t *ep, bool put,
                          void *const *local, const uint64_t *roff, int n,
                          size_t bytes, lkv_ucx_op_t **op_p)
{
    if (u == NULL || ep == NULL || local == NULL || roff == NULL ||
        op_p == NULL || n < 1 || bytes == 0) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        if (local[i] == NULL || roff[i] > ep->len ||
            bytes > ep->len - roff[i]) {
            LKV_LOG_ERROR("kv peer %s: transfer of %zu bytes at offset %llu "
                          "is outside its %llu-byte region",
                          ep->name, bytes, (unsigned long long)roff[i],
                          (unsigned long long)ep->len);
            return LKV_ERR_INVALID;
        }
    }
    if (ep->status != LKV_OK || ep->ep == NULL) {
        ep_force_close(ep);
        return LKV_ERR_PEER_LOST;
    }
    if (u->n_free == 0) {
        return LKV_ERR_BUSY;
    }
    lkv_ucx_op_t *op = &u->ops[u->free[--u->n_free]];
    memset(op, 0, sizeof(*op));
    op->u           = u;
    op->ep          = ep;
    op->used        = true;
    op->deadline_ns = lkv_now_ns() + (int64_t)u->cfg.op_timeout_ms * 1000000;

    ucp_request_param_t p;
    memset(&p, 0, sizeof(p));
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send      = op_cb;
    p.user_data    = op;
    lkv_status_t st = LKV_OK;
    for (int i = 0; i < n && st == LKV_OK; i++) {
        uint64_t raddr = ep->base + roff[i];
        void    *req   = put ? ucp_put_nbx(ep->ep, local[i], bytes, raddr,
                                           ep->rkey, &p)
                             : ucp_get_nbx(ep->ep, local[i], bytes, raddr,
                                           ep->rkey, &p);
        st = track(op, req);
    }
    if (st == LKV_OK && put) {
        /* remote completion: the data is in the peer's memory */
        st = track(op, ucp_ep_flush_nbx(ep->ep, &p));
    }
    if (st != LKV_OK) {
        LKV_LOG_ERROR("kv peer %s: %s of %d blocks failed to start: %s",
                      ep->name, put ? "put" : "get", n, lkv_status_str(st));
        op->status = st;
        lkv_ucx_op_release(u, op);
        return st;
    }
    *op_p = op;
    return LKV_OK;
}

lkv_status_t lkv_ucx_put(lkv_ucx_t *u, lkv_ucx_ep_t *ep, void *const *local,
                         const uint64_t *roff, int n, size_t bytes,
                         lkv_ucx_op_t **op_p)
{
    return issue(u, ep, true, local, roff, n, bytes, op_p);
}

lkv_status_t lkv_ucx_get(lkv_ucx_t *u, lkv_ucx_ep_t *ep, void *const *local,
                         const uint64_t *roff, int n, size_t bytes,
                         lkv_ucx_op_t **op_p)
{
    return issue(u, ep, false, local, roff, n, bytes, op_p);
}

lkv_status_t lkv_ucx_op_test(lkv_ucx_t *u, lkv_ucx_op_t *op)
{
    if (u == NULL || op == NULL || !op->used) {
        return LKV_ERR_INVALID;
    }
    if (op->pending > 0) {
        lkv_ucx_progress(u);
    }
    if (op->pending > 0 && op->ep->status != LKV_OK) {
        /* the peer failed: its requests complete with errors once the
         * endpoint is closed */
        ep_force_close(op->ep);
        lkv_ucx_progress(u);
    }
    if (op->pending > 0 && lkv_now_ns() > op->deadline_ns) {
        LKV_LOG_ERROR("kv peer %s: transfer still incomplete after %d ms; "
                      "the peer is marked down (raise LKV_UCX_TIMEOUT_MS if "
                      "the link is just slow)",
                      op->ep->name, u->cfg.op_timeout_ms);
        if (op->ep->status == LKV_OK) {
            op->ep->status = LKV_ERR_PEER_LOST;
        }
        op->status = LKV_ERR_TIMEOUT;
        ep_force_close(op->ep);
        lkv_ucx_progress(u);
    }
    if (op->pending > 0 && op->status == LKV_OK) {
        return LKV_AGAIN;
    }
    if (op->pending > 0) {
        /* failed but UCX still holds requests (cannot happen after a
         * forced close in 1.13; stay safe): keep the op until they drain */
        return op->status;
    }
    return op->status;
}

lkv_status_t lkv_ucx_op_wait(lkv_ucx_t *u, lkv_ucx_op_t *op)
{
    lkv_status_t st;

    while ((st = lkv_ucx_op_test(u, op)) == LKV_AGAIN) {
    }
    return st;
}

void lkv_ucx_op_release(lkv_ucx_t *u, lkv_ucx_op_t *op)
{
    if (u == NULL || op == NULL || !op->used || op->released) {
        return;
    }
    if (op->pending == 0) {
        op_recycle(u, op);
    } else {
        op->released = true; /* op_cb recycles it */
    }
}
