/* instance.c - scheduler + worker link of one instance (see instance.h).
 * Threading: coordinator thread only. */
#define LKV_LOG_MODULE "instance"

#include "coordinator/instance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct lkv_inst {
    lkv_inst_config_t  cfg;
    lkv_sched_config_t active; /* cfg.sched plus the worker's remote tier */
    char             *model_path;
    lkv_sched_t      *sched;
    bool              up;
    lkv_zmq_peer_t    worker;
    bool              outstanding;
    uint64_t          step_id;
    int64_t           sent_ns;
    int64_t           queued_tokens;
};

lkv_status_t lkv_inst_create(const lkv_inst_config_t *cfg, lkv_inst_t **i_p)
{
    lkv_inst_t  *in;
    lkv_status_t st;

    if (cfg == NULL || i_p == NULL || cfg->model_path == NULL) {
        return LKV_ERR_INVALID;
    }
    in = calloc(1, sizeof(*in));
    if (in == NULL) {
        return LKV_ERR_NOMEM;
    }
    in->cfg        = *cfg;
    in->model_path = strdup(cfg->model_path);
    if (in->model_path == NULL) {
        free(in);
        return LKV_ERR_NOMEM;
    }
    in->cfg.model_path = in->model_path;
    in->active         = in->cfg.sched;
    st                 = lkv_sched_create(&in->cfg.sched, &in->sched);
    if (st != LKV_OK) {
        free(in->model_path);
        free(in);
        return st;
    }
    *i_p = in;
    return LKV_OK;
}

void lkv_inst_destroy(lkv_inst_t **i_p)
{
    if (i_p == NULL || *i_p == NULL) {
        return;
    }
    lkv_sched_destroy(&(*i_p)->sched);
    free((*i_p)->model_path);
    free(*i_p);
    *i_p = NULL;
}

int lkv_inst_index(const lkv_inst_t *in)
{
    return in->cfg.index;
}

bool lkv_inst_up(const lkv_inst_t *in)
{
    return in->up;
}

lkv_sched_t *lkv_inst_sched(lkv_inst_t *in)
{
    return in->sched;
}

const lkv_sched_config_t *lkv_inst_sched_config(const lkv_inst_t *in)
{
    return &in->active;
}

/* The scheduler config for a worker that reports kvnodes: its REMOTE tier
 * is what the nodes hold in this model's layer-blocks (a lower bound when
 * there are several: each node rounds down on its own), at the measured
 * bandwidths. */
static lkv_sched_config_t with_remote(const lkv_sched_config_t *base,
                                      const lkv_wire_hello_t *hello)
{
    lkv_sched_config_t c = *base;
    uint64_t           bb = (uint64_t)base->block_bytes;

    if (hello->remote_kv_nodes == 0 || bb == 0) {
        return c;
    }
    uint64_t n = hello->remote_kv_bytes / bb;
    n          = n > hello->remote_kv_nodes - 1
                     ? n - (hello->remote_kv_nodes - 1)
                     : 0;
    c.n_blocks[LKV_KV_TIER_REMOTE] = n > INT32_MAX ? INT32_MAX : (int32_t)n;
    if (hello->remote_put_gbps > 0) {
        c.d2h_bytes_per_s[LKV_KV_TIER_REMOTE] = hello->remote_put_gbps * 1e9;
    }
    if (hello->remote_get_gbps > 0) {
        c.h2d_bytes_per_s[LKV_KV_TIER_REMOTE] = hello->remote_get_gbps * 1e9;
    }
    return c;
}

bool lkv_inst_is_worker(const lkv_inst_t *in, const lkv_zmq_peer_t *peer)
{
    return in->up && peer->id_len == in->worker.id_len &&
           memcmp(peer->id, in->worker.id, peer->id_len) == 0;
}

const lkv_zmq_peer_t *lkv_inst_worker(const lkv_inst_t *in)
{
    return in->up ? &in->worker : NULL;
}

lkv_status_t lkv_inst_attach(lkv_inst_t *in, const lkv_zmq_peer_t *peer,
                             const lkv_wire_hello_t *hello,
                             lkv_wire_buf_t *out)
{
    lkv_wire_msg_t            msg;
    const lkv_sched_config_t *sc = &in->cfg.sched;

    if (in->up) {
        return LKV_ERR_BUSY;
    }
    /* the instance is DOWN, so its scheduler is empty: recreate it with
     * this worker's remote tier */
    lkv_sched_config_t act = with_remote(&in->cfg.sched, hello);
    if (act.n_blocks[LKV_KV_TIER_REMOTE] !=
            in->active.n_blocks[LKV_KV_TIER_REMOTE] ||
        act.d2h_bytes_per_s[LKV_KV_TIER_REMOTE] !=
            in->active.d2h_bytes_per_s[LKV_KV_TIER_REMOTE] ||
        act.h2d_bytes_per_s[LKV_KV_TIER_REMOTE] !=
            in->active.h2d_bytes_per_s[LKV_KV_TIER_REMOTE]) {
        lkv_sched_t *ns = NULL;
        lkv_status_t st = lkv_sched_create(&act, &ns);
        if (st != LKV_OK) {
            LKV_LOG_ERROR("instance %d: cannot size the scheduler for the "
                          "worker's remote tier: %s (%s)",
                          in->cfg.index, lkv_status_str(st),
                          lkv_sched_last_error(ns));
            return st;
        }
        lkv_sched_destroy(&in->sched);
        in->sched  = ns;
        in->active = act;
    }
    sc = &in->active;
    lkv_wire_msg_init(&msg, LKV_WIRE_CONFIG);
    msg.u.config.model            = in->model_path;
    msg.u.config.instance         = (uint32_t)in->cfg.index;
    msg.u.config.tp               = 1;
    msg.u.config.pp               = 1;
    msg.u.config.block_size       = (uint32_t)sc->block_size;
    msg.u.config.device_kv_blocks = (uint64_t)sc->n_blocks[LKV_KV_TIER_DEVICE];
    msg.u.config.host_kv_blocks   = (uint64_t)sc->n_blocks[LKV_KV_TIER_HOST];
    msg.u.config.max_seqs         = (uint32_t)sc->max_seqs;
    msg.u.config.max_batch_tokens = in->cfg.worker_max_batch_tokens;
    msg.u.config.remote_kv_blocks = (uint64_t)sc->n_blocks[LKV_KV_TIER_REMOTE];
    LKV_CHECK(lkv_wire_encode(&msg, out));
    in->worker      = *peer;
    in->up          = true;
    in->outstanding = false;
    LKV_LOG_INFO("instance %d: worker attached (rank %u pid %u backend %s, "
                 "kv block %llu bytes, link %.2f GB/s); %d device + %d host "
                 "+ %d remote layer-blocks (%u kvnode(s), put %.2f GB/s, "
                 "get %.2f GB/s)",
                 in->cfg.index, hello->rank, hello->pid,
                 hello->backend ? hello->backend : "?",
                 (unsigned long long)hello->kv_block_bytes, hello->link_gbps,
                 sc->n_blocks[LKV_KV_TIER_DEVICE],
                 sc->n_blocks[LKV_KV_TIER_HOST],
                 sc->n_blocks[LKV_KV_TIER_REMOTE], hello->remote_kv_nodes,
                 hello->remote_put_gbps, hello->remote_get_gbps);
    return LKV_OK;
}

lkv_status_t lkv_inst_reset(lkv_inst_t *in)
{
    lkv_sched_t *s = NULL;

    LKV_CHECK(lkv_sched_create(&in->cfg.sched, &s));
    lkv_sched_destroy(&in->sched);
    in->sched         = s;
    in->active        = in->cfg.sched;
    in->up            = false;
    in->outstanding   = false;
    in->queued_tokens = 0;
    memset(&in->worker, 0, sizeof(in->worker));
    return LKV_OK;
}

lkv_status_t lkv_inst_next(lkv_inst_t *in, int64_t now_ns,
                           lkv_wire_buf_t *out, bool *have_p)
{
    const lkv_step_plan_t *plan = NULL;
    lkv_wire_msg_t         msg;
    lkv_status_t           st;

    *have_p = false;
    if (!in->up || in->outstanding) {
        return LKV_OK;
    }
    st = lkv_sched_next_plan(in->sched, now_ns, &plan);
    if (st == LKV_AGAIN) {
        return LKV_OK;
    }
    if (st != LKV_OK) {
        LKV_LOG_ERROR("instance %d: planning failed: %s (%s)", in->cfg.index,
                      lkv_status_str(st), lkv_sched_last_error(in->sched));
        return st;
    }
    lkv_wire_msg_init(&msg, LKV_WIRE_STEP_PLAN);
    msg.u.step_plan = *plan;
    st              = lkv_wire_encode(&msg, out);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("instance %d: cannot encode step %llu: %s",
                      in->cfg.index, (unsigned long long)plan->step_id,
                      lkv_status_str(st));
        return st;
    }
    in->outstanding = true;
    in->step_id     = plan->step_id;
    in->sent_ns     = now_ns;
    *have_p         = true;
    return LKV_OK;
}

bool lkv_inst_outstanding(const lkv_inst_t *in)
{
    return in->outstanding;
}

int64_t lkv_inst_outstanding_ns(const lkv_inst_t *in, int64_t now_ns)
{
    return in->outstanding ? now_ns - in->sent_ns : 0;
}

lkv_status_t lkv_inst_on_result(lkv_inst_t *in, const lkv_step_result_t *res,
                                int64_t now_ns)
{
    lkv_status_t st;

    if (!in->outstanding || res->step_id != in->step_id) {
        LKV_LOG_WARN("instance %d: step_result for step %llu, expected %s%llu",
                     in->cfg.index, (unsigned long long)res->step_id,
                     in->outstanding ? "" : "none; last ",
                     (unsigned long long)in->step_id);
        return LKV_ERR_PROTOCOL;
    }
    st = lkv_sched_on_result(in->sched, res, now_ns);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("instance %d: step %llu result rejected: %s (%s)",
                      in->cfg.index, (unsigned long long)res->step_id,
                      lkv_status_str(st), lkv_sched_last_error(in->sched));
        return st;
    }
    in->outstanding = false;
    return LKV_OK;
}

void lkv_inst_add_queued_tokens(lkv_inst_t *in, int64_t delta)
{
    in->queued_tokens += delta;
    if (in->queued_tokens < 0) {
        in->queued_tokens = 0;
    }
}

int64_t lkv_inst_queued_tokens(const lkv_inst_t *in)
{
    return in->queued_tokens;
}
