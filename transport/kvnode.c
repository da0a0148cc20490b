/* kvnode.c - remote host-memory KV tier daemon and its discovery call; see
 * kvnode.h. One thread drives a kvnode. */
#define LKV_LOG_MODULE "kvnode"

#include "transport/kvnode.h"

#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/clock.h"
#include "common/log.h"
#include "transport/ucx.h"
#include "transport/zmq_util.h"

#define KVNODE_PROTO_V 1
#define KVNODE_MAX_MSG (64 * 1024) /* control messages are small */

struct lkv_kvnode {
    lkv_kvnode_config_t cfg;
    lkv_ucx_t          *ucx;
    lkv_ucx_mr_t       *mr;
    void               *zctx;
    void               *sock;
    char                endpoint[256];
    int                 efd;
    uint64_t            n_requests;
};

static lkv_zmq_opts_t ctl_opts(void)
{
    lkv_zmq_opts_t o = lkv_zmq_opts_default();
    o.max_msg_bytes  = KVNODE_MAX_MSG;
    o.linger_ms      = 0;
    return o;
}

lkv_status_t lkv_kvnode_create(const lkv_kvnode_config_t *cfg,
                               lkv_kvnode_t **n_p)
{
    lkv_kvnode_t *n;
    lkv_status_t  st;

    if (cfg == NULL || n_p == NULL || cfg->listen == NULL ||
        cfg->capacity_bytes == 0 ||
        (cfg->block_bytes > 0 && cfg->capacity_bytes < cfg->block_bytes)) {
        LKV_LOG_ERROR("kvnode needs --listen and a capacity of at least one "
                      "block");
        return LKV_ERR_INVALID;
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        return LKV_ERR_NOMEM;
    }
    n->cfg = *cfg;
    n->efd = -1;
    if (cfg->block_bytes > 0) {
        n->cfg.capacity_bytes -= cfg->capacity_bytes % cfg->block_bytes;
    }
    lkv_ucx_config_t uc = lkv_ucx_config_default();
    uc.wakeup           = !cfg->busy_poll;
    LKV_CHECK_GOTO(lkv_ucx_create(&uc, &n->ucx), st, fail);
    LKV_CHECK_GOTO(lkv_ucx_mr_create(n->ucx, NULL,
                                     (size_t)n->cfg.capacity_bytes, &n->mr),
                   st, fail);
    n->efd = lkv_ucx_event_fd(n->ucx);

    LKV_CHECK_GOTO(lkv_zmq_ctx_create(&n->zctx), st, fail);
    lkv_zmq_opts_t o = ctl_opts();
    LKV_CHECK_GOTO(lkv_zmq_socket(n->zctx, ZMQ_ROUTER, &o, &n->sock), st,
                   fail);
    LKV_CHECK_GOTO(lkv_zmq_bind(n->sock, cfg->listen), st, fail);
    if (lkv_zmq_last_endpoint(n->sock, n->endpoint, sizeof(n->endpoint)) !=
        LKV_OK) {
        snprintf(n->endpoint, sizeof(n->endpoint), "%s", cfg->listen);
    }
    *n_p = n;
    return LKV_OK;

fail:
    lkv_kvnode_destroy(&n);
    return st;
}

void lkv_kvnode_destroy(lkv_kvnode_t **n_p)
{
    if (n_p == NULL || *n_p == NULL) {
        return;
    }
    lkv_kvnode_t *n = *n_p;
    lkv_zmq_close(&n->sock);
    lkv_zmq_ctx_destroy(&n->zctx);
    lkv_ucx_mr_destroy(n->ucx, &n->mr);
    lkv_ucx_destroy(&n->ucx);
    free(n);
    *n_p = NULL;
}

const char *lkv_kvnode_endpoint(const lkv_kvnode_t *n)
{
    return n->endpoint;
}

void *lkv_kvnode_memory(const lkv_kvnode_t *n)
{
    return lkv_ucx_mr_base(n->mr);
}

/* ---- control messages ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void pack_bin(msgpack_packer *pk, const void *p, size_t len)
{
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, p, len);
}

static bool key_is(const msgpack_object *k, const char *name)
{
    size_t len = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
           memcmp(k->via.str.ptr, name, len) == 0;
}

/* Find the value of key `name` in map o (NULL if absent or not a map). */
static const msgpack_object *map_get(const msgpack_object *o,
                                     const char *name)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        if (key_is(&o->via.map.ptr[i].key, name)) {
            return &o->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static void reply_error(msgpack_packer *pk, const char *why)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "v");
    msgpack_pack_int(pk, KVNODE_PROTO_V);
    pack_str(pk, "ok");
    msgpack_pack_false(pk);
    pack_str(pk, "error");
    pack_str(pk, why);
}

static void handle_request(lkv_kvnode_t *n, const void *data, size_t len,
                           msgpack_sbuffer *out)
{
    msgpack_packer   pk;
    msgpack_unpacked u;
    size_t           off = 0;

    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        reply_error(&pk, "malformed request: expected a msgpack map");
        goto out;
    }
    const msgpack_object *op = map_get(&u.data, "op");
    if (op == NULL || op->type != MSGPACK_OBJECT_STR) {
        reply_error(&pk, "request has no \"op\" string (info|ping)");
    } else if (key_is(op, "ping")) {
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, KVNODE_PROTO_V);
        pack_str(&pk, "ok");
        msgpack_pack_true(&pk);
    } else if (key_is(op, "info")) {
        const void *addr, *rkey;
        size_t      addr_len, rkey_len;
        lkv_ucx_address(n->ucx, &addr, &addr_len);
        lkv_ucx_mr_rkey(n->mr, &rkey, &rkey_len);
        msgpack_pack_map(&pk, 7);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, KVNODE_PROTO_V);
        pack_str(&pk, "ok");
        msgpack_pack_true(&pk);
        pack_str(&pk, "addr");
        pack_bin(&pk, addr, addr_len);
        pack_str(&pk, "rkey");
        pack_bin(&pk, rkey, rkey_len);
        pack_str(&pk, "base");
        msgpack_pack_uint64(&pk, (uint64_t)(uintptr_t)lkv_ucx_mr_base(n->mr));
        pack_str(&pk, "bytes");
        msgpack_pack_uint64(&pk, (uint64_t)lkv_ucx_mr_len(n->mr));
        pack_str(&pk, "block_bytes");
        msgpack_pack_uint64(&pk, n->cfg.block_bytes);
        LKV_LOG_INFO("handed the region (%zu bytes) to a client",
                     lkv_ucx_mr_len(n->mr));
    } else {
        reply_error(&pk, "unknown op (expected info or ping)");
    }
out:
    msgpack_unpacked_destroy(&u);
}

/* Answer every queued control request (non-blocking). */
static lkv_status_t drain_control(lkv_kvnode_t *n)
{
    for (;;) {
        lkv_zmq_peer_t  peer;
        lkv_zmq_frame_t body;
        msgpack_sbuffer out;
        memset(&body, 0, sizeof(body));
        lkv_status_t st = lkv_zmq_router_recv(n->sock, &peer, &body, true);
        if (st == LKV_AGAIN) {
            return LKV_OK;
        }
        msgpack_sbuffer_init(&out);
        if (st == LKV_ERR_PROTOCOL) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
            reply_error(&pk, "malformed request: expected one frame");
        } else if (st < 0) {
            msgpack_sbuffer_destroy(&out);
            return st == LKV_ERR_CANCELLED ? st : LKV_OK;
        } else {
            handle_request(n, lkv_zmq_frame_data(&body),
                           lkv_zmq_frame_size(&body), &out);
            lkv_zmq_frame_close(&body);
        }
        n->n_requests++;
        (void)lkv_zmq_router_send(n->sock, &peer, out.data, out.size, true);
        msgpack_sbuffer_destroy(&out);
    }
}

lkv_status_t lkv_kvnode_run_once(lkv_kvnode_t *n, int timeout_ms)
{
    int64_t deadline = lkv_now_ns() + (int64_t)timeout_ms * 1000000;

    do {
        if (lkv_ucx_progress(n->ucx) > 0) {
            LKV_CHECK(drain_control(n));
            continue; /* busy: keep polling without sleeping */
        }
        LKV_CHECK(drain_control(n));
        int64_t left_ms = (deadline - lkv_now_ns()) / 1000000;
        if (left_ms <= 0) {
            break;
        }
        if (left_ms > 100) {
            left_ms = 100; /* safety net for a missed UCX wakeup */
        }
        zmq_pollitem_t it[2];
        int            ni = 1;
        memset(it, 0, sizeof(it));
        it[0].socket = n->sock;
        it[0].events = ZMQ_POLLIN;
        if (n->efd >= 0) {
            lkv_status_t a = lkv_ucx_arm(n->ucx);
            if (a == LKV_ERR_BUSY) {
                /* events pending but progress made none (e.g. a peer that
                 * died): do not spin, look again in 1 ms */
                left_ms = 1;
            }
            if (a == LKV_OK) {
                it[1].fd     = n->efd;
                it[1].events = ZMQ_POLLIN;
                ni           = 2;
            }
        }
        if (ni == 1) {
            left_ms = n->cfg.busy_poll ? 0 : 1; /* no event fd: poll UCX */
        }
        if (zmq_poll(it, ni, (long)left_ms) < 0) {
            if (errno == EINTR) {
                return LKV_OK; /* let the caller check its stop flag */
            }
            if (errno == ETERM) {
                return LKV_ERR_CANCELLED;
            }
            LKV_LOG_ERROR("kvnode poll: %s", zmq_strerror(errno));
            return LKV_ERR_IO;
        }
    } while (lkv_now_ns() < deadline);
    return LKV_OK;
}

lkv_status_t lkv_kvnode_serve(lkv_kvnode_t *n, volatile sig_atomic_t *stop)
{
    while (stop == NULL || !*stop) {
        LKV_CHECK(lkv_kvnode_run_once(n, 200));
    }
    return LKV_OK;
}

/* ---- client ---- */

static lkv_status_t dup_bin(const msgpack_object *o, void **p, size_t *len)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_BIN || o->via.bin.size == 0) {
        return LKV_ERR_PROTOCOL;
    }
    *p = malloc(o->via.bin.size);
    if (*p == NULL) {
        return LKV_ERR_NOMEM;
    }
    memcpy(*p, o->via.bin.ptr, o->via.bin.size);
    *len = o->via.bin.size;
    return LKV_OK;
}

static lkv_status_t get_u64(const msgpack_object *o, uint64_t *v)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return LKV_ERR_PROTOCOL;
    }
    *v = o->via.u64;
    return LKV_OK;
}

static lkv_status_t parse_info(const void *data, size_t len,
                               lkv_kvnode_info_t *info, const char *endpoint)
{
    msgpack_unpacked u;
    size_t           off = 0;
    lkv_status_t     st  = LKV_ERR_PROTOCOL;

    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        LKV_LOG_ERROR("kvnode %s: malformed answer", endpoint);
        goto out;
    }
    const msgpack_object *ok = map_get(&u.data, "ok");
    if (ok == NULL || ok->type != MSGPACK_OBJECT_BOOLEAN || !ok->via.boolean) {
        const msgpack_object *e = map_get(&u.data, "error");
        LKV_LOG_ERROR("kvnode %s refused: %.*s", endpoint,
                      e != NULL && e->type == MSGPACK_OBJECT_STR
                          ? (int)e->via.str.size
                          : 7,
                      e != NULL && e->type == MSGPACK_OBJECT_STR
                          ? e->via.str.ptr
                          : "unknown");
        goto out;
    }
    if ((st = dup_bin(map_get(&u.data, "addr"), &info->addr,
                      &info->addr_len)) != LKV_OK ||
        (st = dup_bin(map_get(&u.data, "rkey"), &info->rkey,
                      &info->rkey_len)) != LKV_OK ||
        (st = get_u64(map_get(&u.data, "base"), &info->base)) != LKV_OK ||
        (st = get_u64(map_get(&u.data, "bytes"), &info->bytes)) != LKV_OK) {
        LKV_LOG_ERROR("kvnode %s: answer lacks addr/rkey/base/bytes",
                      endpoint);
        goto out;
    }
    if (get_u64(map_get(&u.data, "block_bytes"), &info->block_bytes) !=
        LKV_OK) {
        info->block_bytes = 0;
    }
    if (info->bytes == 0 || info->base + info->bytes < info->base) {
        LKV_LOG_ERROR("kvnode %s: bad region (%llu bytes)", endpoint,
                      (unsigned long long)info->bytes);
        st = LKV_ERR_PROTOCOL;
        goto out;
    }
    st = LKV_OK;
out:
    msgpack_unpacked_destroy(&u);
    return st;
}

lkv_status_t lkv_kvnode_query(const char *endpoint, int timeout_ms,
                              lkv_kvnode_info_t *info)
{
    void           *zctx = NULL, *sock = NULL;
    lkv_zmq_frame_t f;
    lkv_status_t    st;
    msgpack_sbuffer req;
    msgpack_packer  pk;

    if (endpoint == NULL || info == NULL) {
        return LKV_ERR_INVALID;
    }
    memset(info, 0, sizeof(*info));
    memset(&f, 0, sizeof(f));
    msgpack_sbuffer_init(&req);
    msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "v");
    msgpack_pack_int(&pk, KVNODE_PROTO_V);
    pack_str(&pk, "op");
    pack_str(&pk, "info");

    LKV_CHECK_GOTO(lkv_zmq_ctx_create(&zctx), st, out);
    lkv_zmq_opts_t o = lkv_zmq_opts_default();
    o.max_msg_bytes  = KVNODE_MAX_MSG;
    LKV_CHECK_GOTO(lkv_zmq_socket(zctx, ZMQ_DEALER, &o, &sock), st, out);
    LKV_CHECK_GOTO(lkv_zmq_connect(sock, endpoint), st, out);
    LKV_CHECK_GOTO(lkv_zmq_send(sock, req.data, req.size, false), st, out);
    st = lkv_zmq_wait_readable(sock, timeout_ms);
    if (st == LKV_ERR_TIMEOUT) {
        LKV_LOG_ERROR("kvnode %s did not answer within %d ms; is `layerkv "
                      "kvnode --listen %s` running and reachable?",
                      endpoint, timeout_ms, endpoint);
        goto out;
    }
    if (st < 0) {
        goto out;
    }
    LKV_CHECK_GOTO(lkv_zmq_recv(sock, &f, false), st, out);
    st = parse_info(lkv_zmq_frame_data(&f), lkv_zmq_frame_size(&f), info,
                    endpoint);
    if (st != LKV_OK) {
        lkv_kvnode_info_free(info);
    }
out:
    lkv_zmq_frame_close(&f);
    lkv_zmq_close(&sock);
    lkv_zmq_ctx_destroy(&zctx);
    msgpack_sbuffer_destroy(&req);
    return st;
}

void lkv_kvnode_info_free(lkv_kvnode_info_t *info)
{
    if (info == NULL) {
        return;
    }
    free(info->addr);
    free(info->rkey);
    memset(info, 0, sizeof(*info));
}
