/* worker_loop.c - hello / config / step_plan -> step_result loop of one
 * worker rank (see worker_loop.h). Threading: the calling thread only. */
#define LKV_LOG_MODULE "worker"

#include "cmd/worker_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "format/model_file.h"
#include "kernels/kernels.h"
#include "kvstore/kv_remote_ucx.h"
#include "transport/wire.h"
#include "transport/zmq_util.h"
#include "worker/model.h"
#include "worker/parallel.h"
#include "worker/step_exec.h"

static lkv_status_t send_msg(void *sock, const lkv_wire_msg_t *m,
                             lkv_wire_buf_t *buf)
{
    LKV_CHECK(lkv_wire_encode(m, buf));
    return lkv_zmq_send(sock, buf->data, buf->len, false);
}

static void report_setup_failure(void *sock, lkv_status_t st,
                                 lkv_wire_buf_t *buf)
{
    lkv_wire_msg_t m;

    lkv_wire_msg_init(&m, LKV_WIRE_STEP_RESULT);
    m.u.step_result.step_id = 0;
    m.u.step_result.status  = st;
    send_msg(sock, &m, buf);
}

/* Wait for one decoded message; LKV_ERR_TIMEOUT after timeout_ms (< 0:
 * forever), LKV_ERR_CANCELLED when *stop is set. */
static lkv_status_t recv_msg(void *sock, lkv_wire_msg_t *msg, int timeout_ms,
                             volatile sig_atomic_t *stop)
{
    lkv_wire_limits_t lim     = lkv_wire_limits_internal();
    int64_t           end_ns  = timeout_ms >= 0
                                    ? lkv_now_ns() + (int64_t)timeout_ms * 1000000
                                    : INT64_MAX;
    for (;;) {
        if (stop != NULL && *stop) {
            return LKV_ERR_CANCELLED;
        }
        int wait = 100;
        if (end_ns != INT64_MAX) {
            int64_t left = (end_ns - lkv_now_ns()) / 1000000;
            if (left <= 0) {
                return LKV_ERR_TIMEOUT;
            }
            wait = left < wait ? (int)left : wait;
        }
        lkv_status_t st = lkv_zmq_wait_readable(sock, wait);
        if (st == LKV_ERR_TIMEOUT) {
            continue;
        }
        if (st != LKV_OK) {
            return st;
        }
        lkv_zmq_frame_t f;
        memset(&f, 0, sizeof(f));
        st = lkv_zmq_recv(sock, &f, true);
        if (st == LKV_AGAIN) {
            continue;
        }
        if (st != LKV_OK) {
            LKV_LOG_WARN("dropping a bad frame from the coordinator: %s",
                         lkv_status_str(st));
            continue;
        }
        st = lkv_wire_decode(lkv_zmq_frame_data(&f), lkv_zmq_frame_size(&f),
                             &lim, msg);
        lkv_zmq_frame_close(&f);
        if (st != LKV_OK) {
            LKV_LOG_WARN("dropping a malformed message from the "
                         "coordinator: %s (%s)",
                         lkv_status_str(st), msg->err);
            lkv_wire_msg_release(msg);
            continue;
        }
        return LKV_OK;
    }
}

/* Start-up probe of the kvnodes: blocks of this size, before the model's
 * block size is known (lkv_kv_remote_ucx_resize later). */
#define PROBE_BLOCK_BYTES ((size_t)256 << 10)
#define PROBE_BLOCKS      16

/* Connect to the kvnodes and measure the link; fills the hello's remote
 * fields. */
static lkv_status_t remote_connect(const lkv_worker_loop_config_t *cfg,
                                   lkv_kv_remote_ucx_t **r_p,
                                   lkv_wire_hello_t *h)
{
    lkv_kv_remote_ucx_config_t rc;
    double                     put_bps = 0, get_bps = 0;
    lkv_status_t               st;

    if (cfg->par != NULL && (cfg->par->tp > 1 || cfg->par->pp > 1)) {
        LKV_LOG_ERROR("--kvnode with --tp/--pp is not supported yet: run "
                      "the instance on one rank, or drop --kvnode");
        return LKV_ERR_UNSUPPORTED;
    }
    memset(&rc, 0, sizeof(rc));
    rc.endpoints      = cfg->kvnodes;
    rc.n_endpoints    = cfg->n_kvnodes;
    rc.block_bytes    = PROBE_BLOCK_BYTES;
    rc.device_is_host = strcmp(cfg->backend, "cpu") == 0;
    st                = lkv_kv_remote_ucx_create(&rc, r_p);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot use the kvnode(s) (%s): is `layerkv kvnode "
                      "--listen` running at each --kvnode endpoint, with at "
                      "least 256 KiB of capacity?",
                      lkv_status_str(st));
        return st;
    }
    st = lkv_kv_remote_ucx_probe(*r_p, PROBE_BLOCKS, &put_bps, &get_bps);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("the link probe to kvnode %s failed: %s; check "
                      "UCX_TLS / UCX_NET_DEVICES (docs/ucx.md)",
                      cfg->kvnodes[0], lkv_status_str(st));
        lkv_kv_remote_ucx_destroy(r_p);
        return st;
    }
    h->remote_kv_nodes = (uint32_t)lkv_kv_remote_ucx_n_nodes(*r_p);
    h->remote_kv_bytes = lkv_kv_remote_ucx_bytes(*r_p);
    h->remote_put_gbps = put_bps * 1e-9;
    h->remote_get_gbps = get_bps * 1e-9;
    LKV_LOG_INFO("remote kv tier: %d kvnode(s), %llu bytes; link put %.2f "
                 "GB/s, get %.2f GB/s (%d blocks of %zu bytes)",
                 cfg->n_kvnodes, (unsigned long long)h->remote_kv_bytes,
                 h->remote_put_gbps, h->remote_get_gbps, PROBE_BLOCKS,
                 PROBE_BLOCK_BYTES);
    return LKV_OK;
}

lkv_status_t lkv_worker_loop_run(const lkv_worker_loop_config_t *cfg)
{
    void               *sock = NULL;
    lkv_wire_buf_t      buf;
    lkv_wire_msg_t      msg;
    lkv_kern_backend_t *be   = NULL;
    lkv_model_file_t   *mf   = NULL;
    lkv_model_t        *model = NULL;
    lkv_step_exec_t    *x    = NULL;
    lkv_kv_remote_ucx_t *remote = NULL;
    lkv_kv_remote_t     remote_h;
    lkv_status_t        st;
    lkv_zmq_opts_t      o = lkv_zmq_opts_default();
    uint64_t            n_steps = 0;

    lkv_wire_buf_init(&buf);
    memset(&msg, 0, sizeof(msg));
    o.max_msg_bytes = (int64_t)256 << 20;
    st              = lkv_zmq_socket(cfg->zctx, ZMQ_DEALER, &o, &sock);
    if (st != LKV_OK) {
        goto out;
    }
    st = lkv_zmq_connect(sock, cfg->coordinator);
    if (st != LKV_OK) {
        goto out;
    }

    /* hello */
    lkv_wire_msg_t h;
    lkv_wire_msg_init(&h, LKV_WIRE_HELLO);
    h.u.hello.rank       = 0;
    h.u.hello.world_size = 1;
    h.u.hello.instance   = (uint32_t)cfg->instance;
    h.u.hello.pid        = (uint32_t)getpid();
    h.u.hello.backend    = cfg->backend;
    h.u.hello.link_gbps  = cfg->link_gbps;
    h.u.hello.version    = "layerkv 0.1.0";
    if (cfg->n_kvnodes > 0) {
        st = remote_connect(cfg, &remote, &h.u.hello);
        if (st != LKV_OK) {
            goto out;
        }
    }
    st                   = send_msg(sock, &h, &buf);
    if (st != LKV_OK) {
        goto out;
    }

    /* config */
    int timeout_ms = cfg->connect_timeout_s > 0
                         ? (int)(cfg->connect_timeout_s * 1000)
                         : -1;
    for (;;) {
        st = recv_msg(sock, &msg, timeout_ms, cfg->stop);
        if (st == LKV_ERR_CANCELLED) {
            st = LKV_OK;
            goto out;
        }
        if (st == LKV_ERR_TIMEOUT) {
            LKV_LOG_ERROR("no config from the coordinator at %s within %.0f "
                          "s; is `layerkv coordinator --workers-listen` "
                          "running there?",
                          cfg->coordinator, cfg->connect_timeout_s);
            goto out;
        }
        if (st != LKV_OK) {
            goto out;
        }
        if (msg.type == LKV_WIRE_CONFIG) {
            break;
        }
        if (msg.type == LKV_WIRE_SHUTDOWN) {
            LKV_LOG_WARN("coordinator refused this worker: %s",
                         msg.u.shutdown.reason ? msg.u.shutdown.reason : "");
            lkv_wire_msg_release(&msg);
            st = LKV_ERR_REJECTED;
            goto out;
        }
        lkv_wire_msg_release(&msg);
    }
    const lkv_wire_config_t *wc = &msg.u.config;
    const char *path = cfg->model_override ? cfg->model_override : wc->model;
    /* TP/PP peers load the same model (worker/parallel.h) */
    LKV_CHECK_GOTO(lkv_par_lead_model(cfg->par, path, cfg->tokenizer_path), st,
                   setup_failed);

    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = cfg->threads;
    kc.link_gbps         = cfg->link_gbps;
    st = lkv_kern_backend_open(cfg->backend, &kc, &be);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot open backend '%s': %s (compiled in: %s)",
                      cfg->backend, lkv_status_str(st),
                      lkv_kern_backend_list());
        goto setup_failed;
    }
    st = lkv_model_file_open(path, cfg->tokenizer_path, &mf);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot open model '%s': %s (the path must exist on "
                      "the worker's host; --model overrides it)",
                      path, lkv_status_str(st));
        goto setup_failed;
    }
    st = lkv_par_model_create(cfg->par, be, mf, &model);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot load model '%s': %s", path, lkv_status_str(st));
        goto setup_failed;
    }
    lkv_step_exec_config_t xc = lkv_step_exec_config_default();
    int max_ctx = model->cfg.max_seq_len > 0 ? model->cfg.max_seq_len : 2048;
    xc.block_size             = (int)wc->block_size;
    xc.n_device_blocks        = (int32_t)wc->device_kv_blocks;
    xc.n_host_blocks          = (int32_t)wc->host_kv_blocks;
    xc.max_seqs               = (int)wc->max_seqs;
    xc.max_batch_tokens       = (int)wc->max_batch_tokens;
    xc.max_blocks_per_layer   = wc->block_size > 0
                                    ? (max_ctx + (int)wc->block_size - 1) /
                                              (int)wc->block_size + 1
                                    : 0;
    xc.kv_dtype = LKV_DTYPE_F32;
    if (remote != NULL && wc->remote_kv_blocks > 0) {
        size_t bb = lkv_model_block_bytes(model, xc.block_size, xc.kv_dtype);
        LKV_CHECK_GOTO(lkv_kv_remote_ucx_resize(remote, bb), st,
                       setup_failed);
        if ((uint64_t)lkv_kv_remote_ucx_n_blocks(remote) <
            wc->remote_kv_blocks) {
            LKV_LOG_ERROR("the coordinator asks for %llu remote layer-blocks "
                          "but the kvnodes hold %d of %zu bytes; restart "
                          "the worker so it reports its kvnodes again",
                          (unsigned long long)wc->remote_kv_blocks,
                          lkv_kv_remote_ucx_n_blocks(remote), bb);
            st = LKV_ERR_NOSPACE;
            goto setup_failed;
        }
        lkv_kv_remote_ucx_handle(remote, &remote_h);
        xc.remote = &remote_h;
    } else if (remote != NULL) {
        LKV_LOG_WARN("the coordinator grants no remote layer-blocks; the "
                     "kvnode(s) stay unused");
    }
    LKV_CHECK_GOTO(lkv_par_lead_exec(cfg->par, &xc), st, setup_failed);
    st          = lkv_step_exec_create(model, &xc, &x);
    if (st != LKV_OK) {
        LKV_LOG_ERROR("cannot create the step executor (%d device + %d host "
                      "blocks of %d tokens): %s",
                      xc.n_device_blocks, xc.n_host_blocks, xc.block_size,
                      lkv_status_str(st));
        goto setup_failed;
    }
    LKV_LOG_INFO("instance %u ready: model %s, %d device + %d host + %d "
                 "remote layer-blocks of %zu bytes, %d seqs, %d tokens per "
                 "step",
                 wc->instance, path, xc.n_device_blocks, xc.n_host_blocks,
                 xc.remote != NULL ? (int)xc.remote->n_blocks : 0,
                 lkv_model_block_bytes(model, xc.block_size, xc.kv_dtype),
                 xc.max_seqs, xc.max_batch_tokens);
    lkv_wire_msg_release(&msg);

    /* steps */
    for (;;) {
        st = recv_msg(sock, &msg, -1, cfg->stop);
        if (st == LKV_ERR_CANCELLED) {
            st = LKV_OK;
            break;
        }
        if (st != LKV_OK) {
            break;
        }
        if (msg.type == LKV_WIRE_SHUTDOWN) {
            LKV_LOG_INFO("shutdown after %llu steps: %s",
                         (unsigned long long)n_steps,
                         msg.u.shutdown.reason ? msg.u.shutdown.reason : "");
            lkv_wire_msg_release(&msg);
            st = LKV_OK;
            break;
        }
        if (msg.type != LKV_WIRE_STEP_PLAN) {
            LKV_LOG_WARN("ignoring a '%s' message from the coordinator",
                         lkv_wire_type_name(msg.type));
            lkv_wire_msg_release(&msg);
            continue;
        }
        lkv_step_result_t res;
        memset(&res, 0, sizeof(res));
        lkv_status_t rs = lkv_step_exec_run(x, &msg.u.step_plan, &res);
        res.step_id     = msg.u.step_plan.step_id;
        if (rs != LKV_OK) {
            LKV_LOG_WARN("step %llu failed: %s",
                         (unsigned long long)res.step_id, lkv_status_str(rs));
            res.status = rs;
        }
        n_steps++;
        lkv_wire_msg_t r;
        lkv_wire_msg_init(&r, LKV_WIRE_STEP_RESULT);
        r.u.step_result = res;
        st              = send_msg(sock, &r, &buf);
        lkv_wire_msg_release(&msg);
        if (st != LKV_OK) {
            LKV_LOG_ERROR("cannot send step result: %s", lkv_status_str(st));
            break;
        }
    }
    goto out;

setup_failed:
    lkv_wire_msg_release(&msg);
    report_setup_failure(sock, st, &buf);
out:
    lkv_par_lead_done(cfg->par); /* stops TP/PP followers */
    lkv_step_exec_destroy(&x);
    lkv_kv_remote_ucx_destroy(&remote); /* after the executor's copies */
    lkv_model_destroy(&model);
    lkv_model_file_close(&mf);
    lkv_kern_backend_close(&be);
    lkv_zmq_close(&sock);
    lkv_wire_buf_free(&buf);
    return st;
}
