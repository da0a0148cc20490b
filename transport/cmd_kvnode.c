/* cmd_kvnode.c - `layerkv kvnode`: serve registered host memory as a remote
 * KV tier over UCX (transport/kvnode.h), or, with --bench, measure put/get
 * bandwidth of layer-blocks against a running kvnode (bench/ucx_bench.h).
 * Single-threaded. */
#define LKV_LOG_MODULE "kvnode"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/ucx_bench.h"
#include "cmd/commands.h"
#include "common/log.h"
#include "transport/kvnode.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: layerkv kvnode --listen ENDPOINT --capacity-gib N "
        "[--block-bytes B]\n"
        "       layerkv kvnode --bench ENDPOINT [--block-bytes B] "
        "[--blocks N]\n"
        "                      [--list N] [--window N] [--slots N]\n"
        "\n"
        "Serve N GiB of registered host memory as a remote KV tier: workers\n"
        "(`layerkv run/serve --kvnode ENDPOINT`) ask ENDPOINT (ZeroMQ, e.g.\n"
        "tcp://0.0.0.0:7400) for the UCX worker address and rkey, then put and\n"
        "get layer-blocks one-sidedly. Allocation metadata stays with the\n"
        "coordinator; the kvnode only exposes memory. Runs until SIGINT or\n"
        "SIGTERM.\n"
        "\n"
        "  --listen ENDPOINT     control socket to bind\n"
        "  --capacity-gib N      memory to register (fractions allowed, e.g.\n"
        "                        0.25)\n"
        "  --block-bytes B       advertised layer-block size (capacity is\n"
        "                        rounded down to a multiple; default 0 = none;\n"
        "                        with --bench the transfer size, default 1 MiB)\n"
        "  --bench ENDPOINT      client mode: put then get --blocks blocks in\n"
        "                        lists of --list (default 16) with --window\n"
        "                        lists in flight (default 4), verify the data,\n"
        "                        print MB/s (2^20 bytes/s, as ucx_perftest)\n"
        "  --blocks N            blocks per direction (default 512)\n"
        "  --slots N             cycle through N remote blocks (default: all;\n"
        "                        1 = ucx_perftest's single remote buffer)\n"
        "  --busy-poll           never sleep: progress UCX continuously (one\n"
        "                        core busy, lowest latency; default: sleep on\n"
        "                        UCX's event fd when idle)\n"
        "\n"
        "UCX settings (docs/ucx.md): set UCX_TLS explicitly on both sides\n"
        "(sm,self on one host; tcp across hosts or network namespaces, with\n"
        "UCX_NET_DEVICES=<interface>). UCX_POSIX_ERROR_HANDLING=y and\n"
        "UCX_SYSV_ERROR_HANDLING=y are set by default so shared memory works\n"
        "with peer failure detection. LKV_UCX_TIMEOUT_MS bounds every\n"
        "transfer (default 5000).\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t lo,
                     uint64_t *out)
{
    char              *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *s == '-' || *end != '\0' || v < lo) {
        fprintf(stderr, "layerkv kvnode: %s expects an integer >= %llu, got "
                        "'%s'\n",
                opt, (unsigned long long)lo, s);
        return 1;
    }
    *out = v;
    return 0;
}

int lkv_cmd_kvnode(int argc, char **argv)
{
    enum { OPT_LISTEN = 256, OPT_CAP, OPT_BLOCK, OPT_BENCH, OPT_BLOCKS,
           OPT_LIST, OPT_WINDOW, OPT_BUSY, OPT_SLOTS };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"capacity-gib", required_argument, NULL, OPT_CAP},
        {"block-bytes", required_argument, NULL, OPT_BLOCK},
        {"bench", required_argument, NULL, OPT_BENCH},
        {"blocks", required_argument, NULL, OPT_BLOCKS},
        {"list", required_argument, NULL, OPT_LIST},
        {"window", required_argument, NULL, OPT_WINDOW},
        {"busy-poll", no_argument, NULL, OPT_BUSY},
        {"slots", required_argument, NULL, OPT_SLOTS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen = NULL, *bench = NULL;
    double      cap_gib = 0.0;
    uint64_t    block_bytes = 0, blocks = 512, list = 16, window = 4;
    uint64_t    slots = 0;
    int         c, bad = 0, busy = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN:
            listen = optarg;
            break;
        case OPT_CAP: {
            char *end;
            cap_gib = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(cap_gib > 0.0) ||
                cap_gib > 1024.0 * 1024.0) {
                fprintf(stderr, "layerkv kvnode: --capacity-gib expects a "
                                "positive number, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        }
        case OPT_BLOCK:
            bad |= parse_u64("--block-bytes", optarg, 1, &block_bytes);
            break;
        case OPT_BENCH:
            bench = optarg;
            break;
        case OPT_BLOCKS:
            bad |= parse_u64("--blocks", optarg, 1, &blocks);
            break;
        case OPT_LIST:
            bad |= parse_u64("--list", optarg, 1, &list);
            break;
        case OPT_WINDOW:
            bad |= parse_u64("--window", optarg, 1, &window);
            break;
        case OPT_SLOTS:
            bad |= parse_u64("--slots", optarg, 1, &slots);
            break;
        case OPT_BUSY:
            busy = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            bad = 1;
            break;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "layerkv kvnode: unexpected argument '%s'\n",
                argv[optind]);
        bad = 1;
    }
    if (!bad && bench == NULL && (listen == NULL || cap_gib <= 0.0)) {
        fprintf(stderr, "layerkv kvnode: --listen and --capacity-gib are "
                        "required\n");
        bad = 1;
    }
    if (bad) {
        usage(stderr);
        return 2;
    }

    if (bench != NULL) {
        lkv_ucx_bench_config_t bc = lkv_ucx_bench_config_default();
        bc.endpoint               = bench;
        if (block_bytes > 0) {
            bc.block_bytes = (size_t)block_bytes;
        }
        bc.n_blocks = blocks > (1u << 20) ? (1 << 20) : (int)blocks;
        bc.list     = list > 4096 ? 4096 : (int)list;
        bc.window   = window > 256 ? 256 : (int)window;
        bc.slots    = slots > (1u << 30) ? (1 << 30) : (int)slots;
        lkv_ucx_bench_result_t br;
        lkv_status_t           st = lkv_ucx_bench_run(&bc, &br);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv kvnode: bench failed: %s\n",
                    lkv_status_str(st));
            return 1;
        }
        printf("ucx_bench block_bytes=%zu blocks=%d list=%d window=%d "
               "put_MBps=%.1f get_MBps=%.1f verify=%s\n",
               bc.block_bytes, bc.n_blocks, bc.list, bc.window, br.put_mbps,
               br.get_mbps, br.verified ? "ok" : "FAILED");
        return br.verified ? 0 : 1;
    }

    lkv_kvnode_config_t kc;
    memset(&kc, 0, sizeof(kc));
    kc.listen         = listen;
    kc.capacity_bytes = (uint64_t)(cap_gib * 1024.0 * 1024.0 * 1024.0);
    kc.block_bytes    = block_bytes;
    kc.busy_poll      = busy != 0;
    lkv_kvnode_t *n   = NULL;
    lkv_status_t  st  = lkv_kvnode_create(&kc, &n);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv kvnode: cannot start on %s: %s\n", listen,
                lkv_status_str(st));
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "layerkv kvnode: serving %.3f GiB on %s (pid %d)\n",
            (double)kc.capacity_bytes / (1024.0 * 1024.0 * 1024.0),
            lkv_kvnode_endpoint(n), (int)getpid());
    st = lkv_kvnode_serve(n, &g_stop);
    lkv_kvnode_destroy(&n);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv kvnode: stopped: %s\n", lkv_status_str(st));
        return 1;
    }
    return 0;
}
