/* cmd_worker.c - `layerkv worker`: one worker rank in its own process; it
 * connects to `layerkv coordinator --workers-listen`, receives its config
 * (model path, KV pools) and executes step plans until the coordinator
 * sends `shutdown` or SIGINT/SIGTERM arrives. See cmd/worker_loop.h. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/lend.h"
#include "cmd/worker_loop.h"
#include "kernels/kernels.h"
#include "kvstore/kv_remote_ucx.h"
#include "worker/parallel.h"
#include "transport/zmq_util.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv worker --coordinator ENDPOINT [options]\n\n"
            "Run one worker rank: connect to a `layerkv coordinator` "
            "(its --workers-listen),\nload the model it names and execute "
            "its step plans.\n\n"
            "  --coordinator ENDPOINT  e.g. tcp://127.0.0.1:5556 or "
            "ipc:///tmp/lkv-workers\n"
            "  --model PATH            load this path instead of the one the "
            "coordinator sends\n"
            "  --tokenizer PATH        tokenizer (llama2.c .bin models)\n"
            "  --backend cpu|cuda      compute backend (compiled in: %s)\n"
            "  --threads N             CPU compute threads (default: all)\n"
            "  --link-gbps X           emulate a device<->host link of X GB/s "
            "(CPU backend)\n"
            "  --instance K            instance index reported in hello "
            "(default 0)\n"
            "  --connect-timeout-s S   give up without a config after S s "
            "(default 60)\n"
            "  --kvnode ENDPOINT       remote KV tier: a `layerkv kvnode` "
            "control endpoint\n"
            "                          (repeatable, up to %d; docs/ucx.md)\n"
            "  --lend-gib N --lend-listen EP   peer mode: lend N GiB of host "
            "memory to\n"
            "                          other instances (their --kvnode EP)\n"
            "  -h, --help              this help\n",
            lkv_kern_backend_list(), LKV_KV_REMOTE_MAX_NODES);
    lkv_par_usage(out);
}

int lkv_cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"coordinator", required_argument, NULL, 'c'},
        {"model", required_argument, NULL, 'm'},
        {"tokenizer", required_argument, NULL, 't'},
        {"backend", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 'T'},
        {"link-gbps", required_argument, NULL, 'l'},
        {"instance", required_argument, NULL, 'i'},
        {"connect-timeout-s", required_argument, NULL, 'C'},
        {"kvnode", required_argument, NULL, 'K'},
        {"lend-gib", required_argument, NULL, 'G'},
        {"lend-listen", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    lkv_worker_loop_config_t cfg;
    int                      c;
    void                    *zctx = NULL;
    lkv_status_t             st;
    const char              *kvnodes[LKV_KV_REMOTE_MAX_NODES];
    const char              *lend_listen = NULL;
    double                   lend_gib    = 0;
    lkv_lend_t              *lend        = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.backend           = "cpu";
    cfg.connect_timeout_s = 60;
    lkv_par_t par; /* --tp/--pp under mpirun: worker/parallel.h */
    if (lkv_par_args("worker", &argc, argv, false, &par) != 0) {
        return 2;
    }
    optind                = 1;
    opterr                = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char  *end = NULL;
        double d;
        switch (c) {
        case 'h': usage(stdout); return 0;
        case 'c': cfg.coordinator = optarg; break;
        case 'm': cfg.model_override = optarg; break;
        case 't': cfg.tokenizer_path = optarg; break;
        case 'b': cfg.backend = optarg; break;
        case 'K':
            if (cfg.n_kvnodes >= LKV_KV_REMOTE_MAX_NODES) {
                fprintf(stderr, "layerkv worker: at most %d --kvnode\n",
                        LKV_KV_REMOTE_MAX_NODES);
                return 2;
            }
            kvnodes[cfg.n_kvnodes++] = optarg;
            cfg.kvnodes              = kvnodes;
            break;
        case 'L': lend_listen = optarg; break;
        case 'T':
        case 'l':
        case 'i':
        case 'C':
        case 'G':
            errno = 0;
            d     = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !isfinite(d) ||
                d < 0 || d > 1e7 || (c != 'l' && c != 'C' && c != 'G' && d != floor(d))) {
                fprintf(stderr, "layerkv worker: %s expects a non-negative "
                                "number, got '%s'\n",
                        argv[optind - 1], optarg);
                return 2;
            }
            if (c == 'T') {
                cfg.threads = (int)d;
            } else if (c == 'l') {
                cfg.link_gbps = d;
            } else if (c == 'i') {
                cfg.instance = (int)d;
            } else if (c == 'G') {
                lend_gib = d;
            } else {
                cfg.connect_timeout_s = d;
            }
            break;
        default:
            fprintf(stderr, "layerkv worker: unknown or incomplete option "
                            "'%s' (see layerkv worker --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv worker: unexpected argument '%s'\n",
                argv[optind]);
        return 2;
    }
    if (cfg.coordinator == NULL) {
        fprintf(stderr, "layerkv worker: --coordinator ENDPOINT is required "
                        "(the coordinator's --workers-listen)\n");
        return 2;
    }
    if ((lend_gib > 0) != (lend_listen != NULL)) {
        fprintf(stderr, "layerkv worker: --lend-gib N and --lend-listen EP "
                        "go together\n");
        return 2;
    }
    if (!lkv_par_is_leader(&par)) {
        /* a TP/PP follower: mirrors its instance leader's setup and plans */
        st = lkv_par_worker_follow(&par, cfg.backend, cfg.threads,
                                   cfg.link_gbps);
        return st == LKV_OK || st == LKV_ERR_CANCELLED ? 0 : 1;
    }
    cfg.par = &par;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    cfg.stop = &g_stop;
    st       = lkv_zmq_ctx_create(&zctx);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv worker: cannot create a ZeroMQ context: "
                        "%s\n",
                lkv_status_str(st));
        return 1;
    }
    cfg.zctx = zctx;
    if (lend_listen != NULL) {
        st = lkv_lend_start(lend_listen, lend_gib, &lend);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv worker: cannot lend %.3f GiB on %s: "
                            "%s\n",
                    lend_gib, lend_listen, lkv_status_str(st));
            lkv_zmq_ctx_destroy(&zctx);
            return 1;
        }
        fprintf(stderr, "layerkv worker: lending %.3f GiB of host memory as "
                        "a kvnode on %s\n",
                lend_gib, lkv_lend_endpoint(lend));
    }
    st = lkv_worker_loop_run(&cfg);
    lkv_lend_stop(&lend);
    lkv_zmq_ctx_destroy(&zctx);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv worker: stopped: %s\n", lkv_status_str(st));
        return 1;
    }
    return 0;
}
