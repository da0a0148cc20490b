/* coord_main.c - `layerkv serve` / `layerkv coordinator` (see
 * coord_main.h). Graceful stop on SIGINT/SIGTERM: live requests end with an
 * error `done`, workers get `shutdown`, sockets close. */
#define LKV_LOG_MODULE "serve"

#include "cmd/coord_main.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/lend.h"
#include "cmd/worker_loop.h"
#include "common/log.h"
#include "coordinator/core.h"
#include "coordinator/frontend.h"
#include "coordinator/metrics_http.h"
#include "format/model_file.h"
#include "kernels/kernels.h"
#include "kvstore/kv_remote_ucx.h"
#include "transport/zmq_util.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out, bool embedded)
{
    const char *name = embedded ? "serve" : "coordinator";
    fprintf(out,
            "usage: layerkv %s [--model PATH] [options]\n\n", name);
    if (embedded) {
        fprintf(out,
                "Serve a model: the coordinator and one worker in one "
                "process (the worker\non its own thread, over inproc://). "
                "Clients: layerkv generate, liblayerkv,\nany ZeroMQ + "
                "msgpack program (docs/protocol.md).\n\n");
    } else {
        fprintf(out,
                "Run the coordinator alone: `layerkv worker --coordinator "
                "ENDPOINT`\nprocesses connect to --workers-listen, one per "
                "instance.\n\n");
    }
    fprintf(out,
        "  --model PATH            model (GGUF, HF directory, llama2.c .bin, "
        "dummy:CFG;\n"
        "                          default " LKV_DEFAULT_MODEL ", the bundled "
        "model, built in)\n"
        "  --tokenizer PATH        tokenizer (required for llama2.c .bin)\n"
        "  --listen ENDPOINT       client endpoint (default "
        "tcp://127.0.0.1:5555)\n"
        "  --metrics-listen H:P    Prometheus /metrics (default "
        "127.0.0.1:9090; 'none' = off)\n"
        "  --policy baseline|layerkv   scheduling policy (default layerkv)\n"
        "  --device-kv-blocks N    device KV pool in layer-blocks (default "
        "1024)\n"
        "  --host-kv-blocks N      host KV pool in layer-blocks (default "
        "4096)\n"
        "  --link-gbps X           device<->host link in GB/s for the "
        "scheduler (Eq. 4)%s\n"
        "  --ttft-slo-ms T         default TTFT target (0 = none)\n"
        "  --tpot-slo-ms T         default TPOT target (0 = none)\n"
        "  --block-size N          tokens per layer-block (default 16)\n"
        "  --max-batch-tokens N    tokens per step (default 2048)\n"
        "  --max-seqs N            sequences per instance (default 256)\n"
        "  --chunked-prefill N     split prefills into chunks of N tokens (0 "
        "= off)\n"
        "  --decode-offloaded auto|reload|stream   (layerkv; default auto)\n"
        "  --reject-hopeless       refuse requests whose predicted TTFT misses "
        "the SLO\n"
        "  --request-timeout-s S   end requests running longer (default 600; "
        "0 = none)\n",
        embedded ? ";\n                          also caps the emulated "
                   "link of the CPU backend"
                 : "");
    if (embedded) {
        fprintf(out,
                "  --threads N             CPU compute threads (default: all)\n"
                "  --backend cpu|cuda      compute backend (compiled in: %s)\n"
                "  --kvnode ENDPOINT       remote KV tier: a `layerkv kvnode` "
                "control endpoint\n"
                "                          (repeatable, up to %d; "
                "docs/ucx.md)\n"
                "  --lend-gib N --lend-listen EP   peer mode: lend N GiB of "
                "host memory to\n"
                "                          other instances (their --kvnode "
                "EP)\n",
                lkv_kern_backend_list(), LKV_KV_REMOTE_MAX_NODES);
    } else {
        fprintf(out,
                "  --workers-listen EP     endpoint workers connect to "
                "(default tcp://127.0.0.1:5556)\n"
                "  --n-instances K         instances (one worker each; "
                "default 1)\n"
                "  --worker-timeout-s S    a step unanswered this long fails "
                "its worker (default 120)\n");
    }
    fprintf(out, "  -h, --help              this help\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi,
                      long *out)
{
    char *end;
    errno  = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "layerkv: %s expects an integer in [%ld, %ld], got "
                        "'%s'\n",
                opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_dbl(const char *opt, const char *s, double lo, double hi,
                     double *out)
{
    char *end;
    errno    = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo ||
        v > hi) {
        fprintf(stderr, "layerkv: %s expects a number in [%g, %g], got "
                        "'%s'\n",
                opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

typedef struct {
    lkv_worker_loop_config_t cfg;
    lkv_status_t             st;
} worker_thread_t;

static void *worker_main(void *arg)
{
    worker_thread_t *w = arg;
    w->st              = lkv_worker_loop_run(&w->cfg);
    /* an embedded server without its worker cannot serve: stop it too */
    g_stop = 1;
    return NULL;
}

enum {
    O_MODEL = 256, O_TOK, O_LISTEN, O_METRICS, O_POLICY, O_DEV, O_HOST,
    O_LINK, O_TTFT, O_TPOT, O_BLOCK, O_MBT, O_SEQS, O_CHUNK, O_DECODE,
    O_REJECT, O_RTO, O_THREADS, O_BACKEND, O_WLISTEN, O_NINST, O_WTO,
    O_KVNODE, O_LEND_GIB, O_LEND_LISTEN,
};

int lkv_coord_main(int argc, char **argv, bool embedded)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"tokenizer", required_argument, NULL, O_TOK},
        {"listen", required_argument, NULL, O_LISTEN},
        {"metrics-listen", required_argument, NULL, O_METRICS},
        {"policy", required_argument, NULL, O_POLICY},
        {"device-kv-blocks", required_argument, NULL, O_DEV},
        {"host-kv-blocks", required_argument, NULL, O_HOST},
        {"link-gbps", required_argument, NULL, O_LINK},
        {"ttft-slo-ms", required_argument, NULL, O_TTFT},
        {"tpot-slo-ms", required_argument, NULL, O_TPOT},
        {"block-size", required_argument, NULL, O_BLOCK},
        {"max-batch-tokens", required_argument, NULL, O_MBT},
        {"max-seqs", required_argument, NULL, O_SEQS},
        {"chunked-prefill", required_argument, NULL, O_CHUNK},
        {"decode-offloaded", required_argument, NULL, O_DECODE},
        {"reject-hopeless", no_argument, NULL, O_REJECT},
        {"request-timeout-s", required_argument, NULL, O_RTO},
        {"threads", required_argument, NULL, O_THREADS},
        {"backend", required_argument, NULL, O_BACKEND},
        {"workers-listen", required_argument, NULL, O_WLISTEN},
        {"n-instances", required_argument, NULL, O_NINST},
        {"worker-timeout-s", required_argument, NULL, O_WTO},
        {"kvnode", required_argument, NULL, O_KVNODE},
        {"lend-gib", required_argument, NULL, O_LEND_GIB},
        {"lend-listen", required_argument, NULL, O_LEND_LISTEN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = embedded ? "serve" : "coordinator";
    lkv_core_config_t cc = lkv_core_config_default();
    cc.model_path        = LKV_DEFAULT_MODEL;
    const char *listen = "tcp://127.0.0.1:5555", *mlisten = "127.0.0.1:9090";
    const char *wlisten = "tcp://127.0.0.1:5556", *backend = "cpu";
    double      link_gbps = 0, d = 0;
    long        v = 0;
    int         threads = 0, c;
    char        inproc[64];
    const char *kvnodes[LKV_KV_REMOTE_MAX_NODES];
    int         n_kvnodes = 0;
    const char *lend_listen = NULL;
    double      lend_gib    = 0;

    cc.sched.n_blocks[LKV_KV_TIER_DEVICE] = 1024;
    cc.sched.n_blocks[LKV_KV_TIER_HOST]   = 4096;
    cc.sched.max_batch_tokens             = 2048;
    cc.sched.max_seqs                     = 256;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout, embedded); return 0;
        case O_MODEL: cc.model_path = optarg; break;
        case O_TOK: cc.tokenizer_path = optarg; break;
        case O_LISTEN: listen = optarg; break;
        case O_METRICS: mlisten = optarg; break;
        case O_POLICY:
            if (lkv_sched_policy_parse(optarg, &cc.sched.policy) != LKV_OK) {
                fprintf(stderr, "layerkv %s: --policy expects baseline or "
                                "layerkv, got '%s'\n", name, optarg);
                bad = 1;
            }
            break;
        case O_DEV:
            bad = parse_long("--device-kv-blocks", optarg, 1, 1 << 30, &v);
            cc.sched.n_blocks[LKV_KV_TIER_DEVICE] = (int32_t)v;
            break;
        case O_HOST:
            bad = parse_long("--host-kv-blocks", optarg, 0, 1 << 30, &v);
            cc.sched.n_blocks[LKV_KV_TIER_HOST] = (int32_t)v;
            break;
        case O_LINK:
            bad = parse_dbl("--link-gbps", optarg, 0, 1e5, &link_gbps);
            break;
        case O_TTFT:
            bad = parse_dbl("--ttft-slo-ms", optarg, 0, 1e9, &d);
            cc.sched.ttft_slo_ns = (int64_t)(d * 1e6);
            break;
        case O_TPOT:
            bad = parse_dbl("--tpot-slo-ms", optarg, 0, 1e9, &d);
            cc.sched.tpot_slo_ns = (int64_t)(d * 1e6);
            break;
        case O_BLOCK:
            bad = parse_long("--block-size", optarg, 1, 4096, &v);
            cc.sched.block_size = (int)v;
            break;
        case O_MBT:
            bad = parse_long("--max-batch-tokens", optarg, 1, 1 << 20, &v);
            cc.sched.max_batch_tokens = (int)v;
            break;
        case O_SEQS:
            bad = parse_long("--max-seqs", optarg, 1, 4096, &v);
            cc.sched.max_seqs = (int)v;
            break;
        case O_CHUNK:
            bad = parse_long("--chunked-prefill", optarg, 0, 1 << 20, &v);
            cc.sched.chunked_prefill = v > 0;
            cc.sched.chunk_tokens    = v > 0 ? (int)v : 512;
            break;
        case O_DECODE:
            if (strcmp(optarg, "auto") == 0) {
                cc.sched.decode_mode = LKV_SCHED_DECODE_AUTO;
            } else if (strcmp(optarg, "reload") == 0) {
                cc.sched.decode_mode = LKV_SCHED_DECODE_RELOAD;
            } else if (strcmp(optarg, "stream") == 0) {
                cc.sched.decode_mode = LKV_SCHED_DECODE_STREAM;
            } else {
                fprintf(stderr, "layerkv %s: --decode-offloaded expects "
                                "auto, reload or stream, got '%s'\n",
                        name, optarg);
                bad = 1;
            }
            break;
        case O_REJECT: cc.sched.reject_hopeless = true; break;
        case O_RTO:
            bad = parse_dbl("--request-timeout-s", optarg, 0, 1e7,
                            &cc.request_timeout_s);
            break;
        case O_THREADS:
            bad = parse_long("--threads", optarg, 0, 1024, &v);
            threads = (int)v;
            break;
        case O_BACKEND: backend = optarg; break;
        case O_WLISTEN: wlisten = optarg; break;
        case O_NINST:
            bad = parse_long("--n-instances", optarg, 1, 256, &v);
            cc.n_instances = (int)v;
            break;
        case O_WTO:
            bad = parse_dbl("--worker-timeout-s", optarg, 0, 1e7,
                            &cc.worker_timeout_s);
            break;
        case O_KVNODE:
            if (!embedded) {
                fprintf(stderr, "layerkv coordinator: --kvnode belongs to "
                                "each `layerkv worker` (the worker owns the "
                                "KV memory)\n");
                bad = 1;
            } else if (n_kvnodes >= LKV_KV_REMOTE_MAX_NODES) {
                fprintf(stderr, "layerkv %s: at most %d --kvnode\n", name,
                        LKV_KV_REMOTE_MAX_NODES);
                bad = 1;
            } else {
                kvnodes[n_kvnodes++] = optarg;
            }
            break;
        case O_LEND_GIB:
            bad = parse_dbl("--lend-gib", optarg, 1e-6, 1 << 20, &lend_gib);
            break;
        case O_LEND_LISTEN: lend_listen = optarg; break;
        default:
            fprintf(stderr, "layerkv %s: unknown or incomplete option '%s' "
                            "(see layerkv %s --help)\n",
                    name, argv[optind - 1], name);
            bad = 1;
            break;
        }
        if (bad) {
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv %s: unexpected argument '%s'\n", name,
                argv[optind]);
        return 2;
    }
    if (embedded && cc.n_instances != 1) {
        return 2;
    }
    if ((lend_gib > 0) != (lend_listen != NULL) ||
        (!embedded && lend_listen != NULL)) {
        fprintf(stderr, "layerkv %s: %s\n", name,
                embedded ? "--lend-gib and --lend-listen go together"
                         : "--lend-gib/--lend-listen belong to each `layerkv "
                           "worker` (the worker owns the memory)");
        return 2;
    }
    if (link_gbps > 0) {
        for (int t = 1; t < LKV_KV_TIER_COUNT; t++) {
            cc.sched.d2h_bytes_per_s[t] = link_gbps * 1e9;
            cc.sched.h2d_bytes_per_s[t] = link_gbps * 1e9;
        }
    }
    if (embedded) {
        snprintf(inproc, sizeof(inproc), "inproc://lkv-workers-%d",
                 (int)getpid());
        wlisten = inproc;
    }

    void               *zctx = NULL;
    lkv_frontend_t     *fe   = NULL;
    lkv_core_t         *core = NULL;
    lkv_metrics_http_t *http = NULL;
    lkv_lend_t         *lend = NULL;
    pthread_t           wt;
    bool                wt_started = false;
    worker_thread_t     w;
    int                 rc = 1;
    lkv_status_t        st;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    g_stop = 0;

    st = lkv_zmq_ctx_create(&zctx);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv %s: cannot create a ZeroMQ context: %s\n",
                name, lkv_status_str(st));
        goto out;
    }
    lkv_frontend_config_t fc;
    memset(&fc, 0, sizeof(fc));
    fc.client_listen        = listen;
    fc.worker_listen        = wlisten;
    fc.zctx                 = zctx;
    fc.bind_clients_when_up = embedded;
    st = lkv_frontend_create(&fc, &fe);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv %s: cannot listen on %s / %s: %s%s\n", name,
                listen, wlisten, lkv_status_str(st),
                st == LKV_ERR_BUSY ? " (address in use: pick another port)"
                                   : "");
        goto out;
    }
    cc.send     = lkv_frontend_send;
    cc.send_ctx = fe;
    st          = lkv_core_create(&cc, &core);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv %s: cannot start: %s (see the log above)\n",
                name, lkv_status_str(st));
        goto out;
    }
    if (strcmp(mlisten, "none") != 0) {
        st = lkv_metrics_http_start(mlisten, lkv_core_metrics(core), &http);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv %s: cannot serve metrics on %s: %s\n",
                    name, mlisten, lkv_status_str(st));
            goto out;
        }
    }
    if (lend_listen != NULL) {
        st = lkv_lend_start(lend_listen, lend_gib, &lend);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv %s: cannot lend %.3f GiB on %s: %s\n",
                    name, lend_gib, lend_listen, lkv_status_str(st));
            goto out;
        }
        fprintf(stderr, "layerkv %s: lending %.3f GiB of host memory as a "
                        "kvnode on %s\n",
                name, lend_gib, lkv_lend_endpoint(lend));
    }
    if (embedded) {
        memset(&w, 0, sizeof(w));
        w.cfg.coordinator       = wlisten;
        w.cfg.zctx              = zctx;
        w.cfg.backend           = backend;
        w.cfg.threads           = threads;
        w.cfg.link_gbps         = link_gbps;
        w.cfg.tokenizer_path    = cc.tokenizer_path;
        w.cfg.connect_timeout_s = 60;
        w.cfg.stop              = &g_stop;
        w.cfg.kvnodes           = kvnodes;
        w.cfg.n_kvnodes         = n_kvnodes;
        if (pthread_create(&wt, NULL, worker_main, &w) != 0) {
            fprintf(stderr, "layerkv %s: cannot start the worker thread\n",
                    name);
            goto out;
        }
        wt_started = true;
    }
    fprintf(stderr,
            "layerkv %s: model %s, policy %s, %d device + %d host "
            "layer-blocks of %d tokens; clients %s, %s %s, metrics %s\n",
            name, cc.model_path, lkv_sched_policy_name(cc.sched.policy),
            cc.sched.n_blocks[0], cc.sched.n_blocks[1], cc.sched.block_size,
            listen, embedded ? "worker" : "workers", wlisten,
            http ? mlisten : "off");
    st = lkv_frontend_run(fe, core, &g_stop);
    rc = st == LKV_OK ? 0 : 1;
    if (wt_started) {
        g_stop = 1;
        /* the worker got `shutdown`; keep answering nothing but let the
         * frontend's queue flush */
        pthread_join(wt, NULL);
        wt_started = false;
        if (w.st != LKV_OK && w.st != LKV_ERR_CANCELLED) {
            fprintf(stderr, "layerkv %s: the worker stopped: %s (see the "
                            "log above)\n",
                    name, lkv_status_str(w.st));
            rc = 1;
        }
    }
    fprintf(stderr, "layerkv %s: stopped\n", name);

out:
    if (wt_started) {
        g_stop = 1;
        pthread_join(wt, NULL);
    }
    lkv_lend_stop(&lend);
    lkv_metrics_http_stop(&http);
    lkv_core_destroy(&core);
    lkv_frontend_destroy(&fe);
    lkv_zmq_ctx_destroy(&zctx);
    return rc;
}
