/* cmd_sim.c - `layerkv sim`: simulate the scheduler at 7B-70B scale on a
 * Vidur-profile cost model (sim/simulator.h). Single-threaded. */
#define LKV_LOG_MODULE "sim"
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/commands.h"
#include "common/log.h"
#include "sim/simulator.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: layerkv sim [OPTIONS]\n"
        "Simulate the layerkv scheduler (baseline = vLLM, or layerkv) on a "
        "cost model\n"
        "built from Vidur's A100/H100 profiles; prints a summary, writes "
        "JSON.\n\n"
        "model and hardware:\n"
        "  --model NAME          %s (llama2-7b)\n"
        "  --gpu a100|h100       80 GB GPU (a100)\n"
        "  --tp N  --pp N        tensor / pipeline parallel degree (1, 1)\n"
        "  --mem-util F          usable GPU memory fraction (0.9)\n"
        "  --num-blocks N        device KV pool in all-layer blocks (Vidur's\n"
        "                        num_blocks); default from memory\n"
        "  --host-gib G          host KV tier per GPU (256)\n"
        "  --pcie-gbps G         host link GB/s per direction per GPU (25)\n"
        "  --pcie-latency-us U   per-copy latency (10)\n"
        "  --network-node NODE   NCCL profile: a100_dgx, h100_dgx, "
        "*_pairwise_nvlink\n"
        "  --cpu-overheads       add Vidur's per-step CPU overheads\n"
        "  --data-dir DIR        profiles and traces (data/vidur)\n"
        "scheduler:\n"
        "  --policy baseline|layerkv (layerkv)\n"
        "  --max-batch N         sequences per batch (128)\n"
        "  --max-batch-tokens N  tokens per step (4096)\n"
        "  --chunked-prefill N   chunk prompts into N-token pieces\n"
        "  --ttft-slo-ms T       TTFT SLO (10000)   --tpot-slo-ms T  TPOT SLO "
        "(200)\n"
        "  --decode-mode auto|reload|stream   --offload-rule needed|max\n"
        "ablations (layerkv):\n"
        "  --no-slo-scheduler    offload, but admission ignores the SLOs\n"
        "  --sync-offload        compute waits for every offload copy\n"
        "  --contiguous-layers   offload a contiguous layer range (not "
        "interleaved)\n"
        "  --staging-window W    prefill staging window (0 = offloaded layers "
        "computed on\n"
        "                        the device then offloaded; default: the "
        "scheduler's)\n"
        "workload:\n"
        "  --trace NAME|FILE     sharegpt, arxiv, bwb, azure-conv, azure-code "
        "or a CSV\n"
        "  --prompt-len N --output-len M   fixed lengths (no --trace)\n"
        "  --rate R              Poisson arrivals per second (0 = trace "
        "replay)\n"
        "  --time-scale F        replay time multiplier (1)\n"
        "  --n-requests N (1000) --seed S (1) --max-total N (clip "
        "prompt+output)\n"
        "cluster and output:\n"
        "  --instances K         data-parallel instances (1)\n"
        "  --router least-ttft|round-robin (least-ttft)\n"
        "  --out FILE            JSON results (default: stdout)\n"
        "  --csv FILE            per-request CSV\n"
        "  --quiet               no summary line\n",
        lkv_sim_model_names());
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    long  v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_dbl(const char *s, double lo, double hi, double *out)
{
    char  *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int dir_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* data/vidur under cwd, $LKV_SOURCE_DIR, or next to the binary's parent */
static const char *default_data_dir(char *buf, size_t n)
{
    if (dir_exists("data/vidur/profiles")) {
        return "data/vidur";
    }
    const char *src = getenv("LKV_SOURCE_DIR");
    if (src != NULL) {
        snprintf(buf, n, "%s/data/vidur", src);
        if (dir_exists(buf)) {
            return buf;
        }
    }
    char    exe[1024];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = '\0';
        for (int up = 0; up < 3; up++) {
            char *sl = strrchr(exe, '/');
            if (sl == NULL) {
                break;
            }
            *sl = '\0';
            snprintf(buf, n, "%s/data/vidur", exe);
            if (dir_exists(buf)) {
                return buf;
            }
        }
    }
    return "data/vidur";
}

enum {
    O_MODEL = 256,
    O_GPU,
    O_TP,
    O_PP,
    O_MEMUTIL,
    O_NUMBLOCKS,
    O_HOSTGIB,
    O_PCIE,
    O_PCIELAT,
    O_NETNODE,
    O_CPU,
    O_DATADIR,
    O_POLICY,
    O_MAXBATCH,
    O_MAXBT,
    O_CHUNK,
    O_TTFT,
    O_TPOT,
    O_DECMODE,
    O_OFFRULE,
    O_NOSLO,
    O_SYNC,
    O_CONTIG,
    O_STAGEWIN,
    O_TRACE,
    O_PLEN,
    O_OLEN,
    O_RATE,
    O_TSCALE,
    O_NREQ,
    O_SEED,
    O_MAXTOTAL,
    O_INST,
    O_ROUTER,
    O_OUT,
    O_CSV,
    O_QUIET,
    O_HELP,
    O_PSCALE,
};

int lkv_cmd_sim(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"gpu", required_argument, 0, O_GPU},
        {"tp", required_argument, 0, O_TP},
        {"pp", required_argument, 0, O_PP},
        {"mem-util", required_argument, 0, O_MEMUTIL},
        {"num-blocks", required_argument, 0, O_NUMBLOCKS},
        {"host-gib", required_argument, 0, O_HOSTGIB},
        {"pcie-gbps", required_argument, 0, O_PCIE},
        {"pcie-latency-us", required_argument, 0, O_PCIELAT},
        {"network-node", required_argument, 0, O_NETNODE},
        {"cpu-overheads", no_argument, 0, O_CPU},
        {"data-dir", required_argument, 0, O_DATADIR},
        {"policy", required_argument, 0, O_POLICY},
        {"max-batch", required_argument, 0, O_MAXBATCH},
        {"max-batch-tokens", required_argument, 0, O_MAXBT},
        {"chunked-prefill", required_argument, 0, O_CHUNK},
        {"ttft-slo-ms", required_argument, 0, O_TTFT},
        {"tpot-slo-ms", required_argument, 0, O_TPOT},
        {"decode-mode", required_argument, 0, O_DECMODE},
        {"offload-rule", required_argument, 0, O_OFFRULE},
        {"no-slo-scheduler", no_argument, 0, O_NOSLO},
        {"sync-offload", no_argument, 0, O_SYNC},
        {"contiguous-layers", no_argument, 0, O_CONTIG},
        {"staging-window", required_argument, 0, O_STAGEWIN},
        {"trace", required_argument, 0, O_TRACE},
        {"prompt-len", required_argument, 0, O_PLEN},
        {"output-len", required_argument, 0, O_OLEN},
        {"prompt-scale", required_argument, 0, O_PSCALE},
        {"rate", required_argument, 0, O_RATE},
        {"time-scale", required_argument, 0, O_TSCALE},
        {"n-requests", required_argument, 0, O_NREQ},
        {"seed", required_argument, 0, O_SEED},
        {"max-total", required_argument, 0, O_MAXTOTAL},
        {"instances", required_argument, 0, O_INST},
        {"router", required_argument, 0, O_ROUTER},
        {"out", required_argument, 0, O_OUT},
        {"csv", required_argument, 0, O_CSV},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    lkv_sim_config_t cfg = lkv_sim_config_default();
    char             ddbuf[PATH_MAX];
    const char      *out_path = NULL;
    int              c, iv = 0;
    double           dv  = 0;
    const char      *bad = NULL;

    cfg.cost.data_dir = NULL;
    cfg.work.data_dir = NULL;
    optind            = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL:
            cfg.cost.model = optarg;
            break;
        case O_GPU:
            cfg.cost.gpu = optarg;
            break;
        case O_TP:
            if (parse_int(optarg, 1, 8, &cfg.cost.tp) < 0) {
                bad = "--tp";
            }
            break;
        case O_PP:
            if (parse_int(optarg, 1, 16, &cfg.cost.pp) < 0) {
                bad = "--pp";
            }
            break;
        case O_MEMUTIL:
            if (parse_dbl(optarg, 0.01, 1.0, &cfg.cost.mem_util) < 0) {
                bad = "--mem-util";
            }
            break;
        case O_NUMBLOCKS:
            if (parse_int(optarg, 1, 100000000, &cfg.num_blocks) < 0) {
                bad = "--num-blocks";
            }
            break;
        case O_HOSTGIB:
            if (parse_dbl(optarg, 0, 1e6, &cfg.host_gib) < 0) {
                bad = "--host-gib";
            }
            break;
        case O_PCIE:
            if (parse_dbl(optarg, 0.01, 1e4, &cfg.cost.link_gbps) < 0) {
                bad = "--pcie-gbps";
            }
            break;
        case O_PCIELAT:
            if (parse_dbl(optarg, 0, 1e6, &cfg.cost.link_latency_us) < 0) {
                bad = "--pcie-latency-us";
            }
            break;
        case O_NETNODE:
            cfg.cost.net_node = optarg;
            break;
        case O_CPU:
            cfg.cost.cpu_overheads = true;
            break;
        case O_DATADIR:
            cfg.cost.data_dir = cfg.work.data_dir = optarg;
            break;
        case O_POLICY:
            if (lkv_sched_policy_parse(optarg, &cfg.policy) < 0) {
                bad = "--policy";
            }
            break;
        case O_MAXBATCH:
            if (parse_int(optarg, 1, 65536, &cfg.max_seqs) < 0) {
                bad = "--max-batch";
            }
            break;
        case O_MAXBT:
            if (parse_int(optarg, 1, 1 << 24, &cfg.max_batch_tokens) < 0) {
                bad = "--max-batch-tokens";
            }
            break;
        case O_CHUNK:
            if (parse_int(optarg, 1, 1 << 24, &cfg.chunk_tokens) < 0) {
                bad = "--chunked-prefill";
            }
            cfg.chunked_prefill = true;
            break;
        case O_TTFT:
            if (parse_dbl(optarg, 0, 1e9, &dv) < 0) {
                bad = "--ttft-slo-ms";
            }
            cfg.ttft_slo_s = dv / 1e3;
            break;
        case O_TPOT:
            if (parse_dbl(optarg, 0, 1e9, &dv) < 0) {
                bad = "--tpot-slo-ms";
            }
            cfg.tpot_slo_s = dv / 1e3;
            break;
        case O_DECMODE:
            if (strcmp(optarg, "auto") == 0) {
                cfg.decode_mode = LKV_SCHED_DECODE_AUTO;
            } else if (strcmp(optarg, "reload") == 0) {
                cfg.decode_mode = LKV_SCHED_DECODE_RELOAD;
            } else if (strcmp(optarg, "stream") == 0) {
                cfg.decode_mode = LKV_SCHED_DECODE_STREAM;
            } else {
                bad = "--decode-mode";
            }
            break;
        case O_OFFRULE:
            if (strcmp(optarg, "needed") == 0) {
                cfg.offload_rule = LKV_SCHED_OFFLOAD_NEEDED;
            } else if (strcmp(optarg, "max") == 0) {
                cfg.offload_rule = LKV_SCHED_OFFLOAD_MAX;
            } else {
                bad = "--offload-rule";
            }
            break;
        case O_NOSLO:
            cfg.no_slo_scheduler = true;
            break;
        case O_SYNC:
            cfg.sync_offload = true;
            break;
        case O_CONTIG:
            cfg.contiguous_layers = true;
            break;
        case O_STAGEWIN:
            if (parse_int(optarg, 0, LKV_SCHED_MAX_STAGING_WINDOW,
                          &cfg.staging_window) < 0) {
                bad = "--staging-window";
            }
            break;
        case O_TRACE:
            cfg.work.trace = optarg;
            break;
        case O_PLEN:
            if (parse_int(optarg, 1, 1 << 22, &cfg.work.prompt_len) < 0) {
                bad = "--prompt-len";
            }
            break;
        case O_OLEN:
            if (parse_int(optarg, 1, 1 << 22, &cfg.work.output_len) < 0) {
                bad = "--output-len";
            }
            break;
        case O_PSCALE:
            if (parse_dbl(optarg, 1e-3, 1e3, &cfg.work.prompt_scale) < 0) {
                bad = "--prompt-scale";
            }
            break;
        case O_RATE:
            if (parse_dbl(optarg, 0, 1e9, &cfg.work.rate) < 0) {
                bad = "--rate";
            }
            break;
        case O_TSCALE:
            if (parse_dbl(optarg, 1e-6, 1e6, &cfg.work.time_scale) < 0) {
                bad = "--time-scale";
            }
            break;
        case O_NREQ:
            if (parse_int(optarg, 1, 100000000, &iv) < 0) {
                bad = "--n-requests";
            }
            cfg.work.n_requests = iv;
            break;
        case O_SEED:
            if (parse_int(optarg, 0, INT_MAX, &iv) < 0) {
                bad = "--seed";
            }
            cfg.work.seed = (uint64_t)iv;
            break;
        case O_MAXTOTAL:
            if (parse_int(optarg, 2, 1 << 24, &cfg.work.max_total) < 0) {
                bad = "--max-total";
            }
            break;
        case O_INST:
            if (parse_int(optarg, 1, 4096, &cfg.instances) < 0) {
                bad = "--instances";
            }
            break;
        case O_ROUTER:
            if (strcmp(optarg, "least-ttft") == 0) {
                cfg.route = LKV_SIM_ROUTE_LEAST_TTFT;
            } else if (strcmp(optarg, "round-robin") == 0) {
                cfg.route = LKV_SIM_ROUTE_ROUND_ROBIN;
            } else {
                bad = "--router";
            }
            break;
        case O_OUT:
            out_path = optarg;
            break;
        case O_CSV:
            cfg.csv_path = optarg;
            break;
        case O_QUIET:
            cfg.quiet = true;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad != NULL) {
            fprintf(stderr, "layerkv sim: bad value '%s' for %s (see --help)\n",
                    optarg, bad);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv sim: unexpected argument '%s' (see --help)\n",
                argv[optind]);
        return 2;
    }
    if (cfg.cost.data_dir == NULL) {
        cfg.cost.data_dir = cfg.work.data_dir =
            default_data_dir(ddbuf, sizeof(ddbuf));
    }
    if (cfg.work.trace == NULL && cfg.work.rate <= 0) {
        fprintf(stderr, "layerkv sim: fixed lengths need --rate > 0\n");
        return 2;
    }
    if (cfg.cost.pp > 1) {
        fprintf(stderr, "layerkv sim: note: pp > 1 is modelled as latency only "
                        "(no micro-batch overlap)\n");
    }

    lkv_sim_result_t res;
    lkv_status_t     st = lkv_sim_run(&cfg, &res);
    if (st < 0) {
        fprintf(stderr, "layerkv sim: failed: %s\n", lkv_status_str(st));
        return st == LKV_ERR_INVALID ? 2 : 1; /* 2: fix the options */
    }
    FILE *f = stdout;
    if (out_path != NULL) {
        f = fopen(out_path, "w");
        if (f == NULL) {
            fprintf(stderr, "layerkv sim: cannot write %s\n", out_path);
            return 1;
        }
    }
    lkv_sim_result_write_json(&res, &cfg, f);
    if (f != stdout) {
        fclose(f);
    }
    if (!cfg.quiet) {
        fprintf(
            out_path != NULL ? stdout : stderr,
            "sim %s %s: %lld req (%lld done, %lld failed/rejected) mean TTFT "
            "%.3f s (queue %.3f s) p99 %.3f s, mean TPOT %.1f ms, SLO "
            "violations %.1f%%, %.0f tok/s, preemptions %llu, offloaded "
            "%.2f GB; simulated %.1f s in %.2f s wall\n",
            lkv_sched_policy_name(cfg.policy), cfg.cost.model,
            (long long)res.n_requests, (long long)res.n_completed,
            (long long)(res.n_failed), res.mean_ttft_s, res.mean_queue_s,
            res.p99_ttft_s, res.mean_tpot_s * 1e3, res.slo_violation_rate * 100,
            res.throughput_tok_s, (unsigned long long)res.preemptions,
            res.offloaded_bytes / 1e9, res.makespan_s, res.sim_wall_s);
    }
    return 0;
}
