/* cmd_bench.c - `layerkv bench`: the load generator. Builds an arrival
 * sequence with the simulator's workload generator (sim/workload.h: the
 * same seed gives `layerkv sim` and `layerkv bench` the same requests),
 * sends it to a running server (bench/bench.h), and writes a summary line,
 * JSON with the simulator's top-level keys, per-request CSV and optional
 * PNG plots (bench/plot.py, matplotlib). Single-threaded apart from the
 * client's I/O thread.
 */
#define LKV_LOG_MODULE "bench"
#include <cjson/cJSON.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "cmd/commands.h"
#include "common/log.h"
#include "sim/workload.h"

#define MAX_SWEEP 64

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: layerkv bench --server ENDPOINT [OPTIONS]\n"
        "Load-test a running `layerkv serve`: send requests at their arrival "
        "times,\nmeasure TTFT (queueing + prefill), TPOT, E2E, SLO attainment "
        "and throughput,\nwrite JSON (same keys as `layerkv sim`), CSV and "
        "plots.\n\n"
        "server:\n"
        "  --server ENDPOINT     tcp://HOST:PORT or ipc:///path (required)\n"
        "  --timeout-s S         fail requests when the server is silent for "
        "S s (60)\n"
        "workload (as `layerkv sim`; same --seed = same requests):\n"
        "  --rate R              arrivals per second (Poisson unless "
        "--arrival)\n"
        "  --arrival poisson|uniform|burst   inter-arrival law (poisson); "
        "burst =\n"
        "                        everything at t=0\n"
        "  --trace NAME|FILE     sharegpt, arxiv, bwb, azure-conv, azure-code "
        "or a CSV\n"
        "                        (num_prefill_tokens,num_decode_tokens"
        "[,arrived_at]);\n"
        "                        without --rate the trace's own arrival times "
        "are replayed\n"
        "  --time-scale F        replay time multiplier (1)\n"
        "  --prompt-len N --output-len M   fixed lengths (without --trace; "
        "256, 32)\n"
        "  --max-total N         shrink prompt+output to <= N tokens (fit the "
        "model context)\n"
        "  --prompt-scale F      multiply trace prompt lengths (1)\n"
        "  --n-requests N        requests per run (100; with --duration-s: "
        "as many as fit)\n"
        "  --duration-s S        only requests arriving in the first S "
        "seconds\n"
        "  --rate-sweep R1,R2,.. one run per rate (JSON: {\"runs\": [...]})\n"
        "  --seed S              workload and prompt seed (1)\n"
        "  --data-dir DIR        traces directory root (data/vidur)\n"
        "  --token-range LO,HI   prompt token ids drawn from [LO,HI] "
        "(300,500;\n                        ids < 259 are byte tokens in llama vocabularies)\n"
        "  --temperature T       sampling temperature (0 = greedy); seeded "
        "per request\n"
        "  --max-inflight N      at most N requests outstanding (0 = open "
        "loop)\n"
        "  --drain-timeout-s S   cancel what is still running S s after the "
        "last\n"
        "                        submission (0 = wait for all)\n"
        "SLOs:\n"
        "  --ttft-slo-ms T       TTFT target (10000), also sent per request "
        "when given\n"
        "  --tpot-slo-ms T       TPOT target (200), also sent per request "
        "when given\n"
        "output:\n"
        "  --out FILE            JSON results (default: stdout)\n"
        "  --csv FILE            per-request CSV\n"
        "  --plot FILE.png       plots (needs python3 with matplotlib; "
        "skipped otherwise)\n"
        "  --quiet               no progress or summary lines\n");
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char  *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long  v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

enum {
    O_SERVER = 256, O_TIMEOUT, O_RATE, O_ARRIVAL, O_TRACE, O_TSCALE, O_PLEN,
    O_OLEN, O_MAXTOTAL, O_PSCALE, O_NREQ, O_DURATION, O_SWEEP, O_SEED,
    O_DATADIR, O_TOKRANGE, O_INFLIGHT, O_DRAIN, O_TTFT, O_TPOT, O_OUT, O_CSV,
    O_PLOT, O_QUIET, O_TEMP, O_HELP
};

typedef enum { ARR_POISSON, ARR_UNIFORM, ARR_BURST } arrival_t;

typedef struct {
    const char *server;
    double      timeout_s;
    double      rates[MAX_SWEEP];
    int         n_rates;
    bool        rate_given, sweep;
    arrival_t   arrival;
    lkv_sim_workload_config_t work;
    long        n_requests;
    bool        n_given;
    double      duration_s;
    double      ttft_slo_ms, tpot_slo_ms;
    bool        ttft_given, tpot_given;
    lkv_bench_config_t bench;
    const char *out, *csv, *plot;
    bool        quiet;
} opts_t;

/* Server counters (from `stats`) that the JSON reports as deltas. */
typedef struct {
    bool   ok;
    char   policy[32];
    double n_preempted, n_swap_preempted, bytes_offloaded, bytes_reloaded,
        bytes_staged, ttft_violations, tpot_violations, n_steps,
        device_blocks;
} server_counters_t;

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static void read_counters(lkv_client_t *c, server_counters_t *sc)
{
    memset(sc, 0, sizeof *sc);
    char *json = NULL;
    if (lkv_client_stats(c, 5000, &json, NULL) != LKV_OK || json == NULL) {
        free(json);
        return;
    }
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (root == NULL) {
        return;
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stats");
    if (!cJSON_IsObject(s)) {
        s = root;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "policy");
    if (cJSON_IsString(p)) {
        snprintf(sc->policy, sizeof sc->policy, "%s", p->valuestring);
    }
    sc->n_preempted      = jnum(s, "n_preempted");
    sc->n_swap_preempted = jnum(s, "n_swap_preempted");
    sc->bytes_offloaded  = jnum(s, "bytes_offloaded");
    sc->bytes_reloaded   = jnum(s, "bytes_reloaded");
    sc->bytes_staged     = jnum(s, "bytes_staged");
    sc->n_steps          = jnum(s, "n_steps");
    const cJSON *kt = cJSON_GetObjectItemCaseSensitive(s, "kv_blocks_total");
    if (cJSON_IsObject(kt)) {
        sc->device_blocks = jnum(kt, "device");
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, "slo_violations");
    if (cJSON_IsObject(v)) {
        sc->ttft_violations = jnum(v, "ttft");
        sc->tpot_violations = jnum(v, "tpot");
    }
    sc->ok = true;
    cJSON_Delete(root);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            fprintf(f, "\\%c", ch);
        } else if (ch < 0x20) {
            fprintf(f, "\\u%04x", ch);
        } else {
            fputc(ch, f);
        }
    }
    fputc('"', f);
}

static void write_run_json(FILE *f, int ind, const opts_t *o,
                           const char *model, double rate,
                           const lkv_bench_summary_t *s,
                           const server_counters_t *before,
                           const server_counters_t *after, double wall_s)
{
    const char *arr[] = {"poisson", "uniform", "burst"};
    fprintf(f, "%*s\"source\": \"bench\",\n", ind, "");
    fprintf(f, "%*s\"policy\": ", ind, "");
    json_str(f, after->ok && after->policy[0] ? after->policy : "unknown");
    fprintf(f, ",\n%*s\"server\": ", ind, "");
    json_str(f, o->server);
    fprintf(f, ",\n%*s\"model\": ", ind, "");
    json_str(f, model);
    fprintf(f, ",\n%*s\"instances\": 1,\n", ind, "");
    if (o->work.trace != NULL) {
        fprintf(f, "%*s\"trace\": ", ind, "");
        json_str(f, o->work.trace);
        fprintf(f, ",\n");
    } else {
        fprintf(f, "%*s\"prompt_len\": %d,\n%*s\"output_len\": %d,\n", ind, "",
                o->work.prompt_len, ind, "", o->work.output_len);
    }
    fprintf(f, "%*s\"rate\": %.6g,\n%*s\"arrival\": \"%s\",\n", ind, "", rate,
            ind, "", rate > 0 ? arr[o->arrival] : "replay");
    fprintf(f, "%*s\"seed\": %llu,\n", ind, "",
            (unsigned long long)o->work.seed);
    fprintf(f, "%*s\"ttft_slo_s\": %.6g,\n%*s\"tpot_slo_s\": %.6g,\n", ind, "",
            o->ttft_slo_ms * 1e-3, ind, "", o->tpot_slo_ms * 1e-3);
    fprintf(f, "%*s\"max_inflight\": %d,\n", ind, "", o->bench.max_inflight);
    lkv_bench_summary_write_json(s, ind, f);
    if (before->ok && after->ok) {
        fprintf(f, "%*s\"preemptions\": %.0f,\n", ind, "",
                after->n_preempted - before->n_preempted);
        fprintf(f, "%*s\"swap_preemptions\": %.0f,\n", ind, "",
                after->n_swap_preempted - before->n_swap_preempted);
        fprintf(f, "%*s\"offloaded_bytes\": %.0f,\n", ind, "",
                after->bytes_offloaded - before->bytes_offloaded);
        fprintf(f, "%*s\"reloaded_bytes\": %.0f,\n", ind, "",
                after->bytes_reloaded - before->bytes_reloaded);
        fprintf(f, "%*s\"staged_bytes\": %.0f,\n", ind, "",
                after->bytes_staged - before->bytes_staged);
        fprintf(f, "%*s\"server_ttft_violations\": %.0f,\n", ind, "",
                after->ttft_violations - before->ttft_violations);
        fprintf(f, "%*s\"server_tpot_violations\": %.0f,\n", ind, "",
                after->tpot_violations - before->tpot_violations);
        fprintf(f, "%*s\"steps\": %.0f,\n", ind, "",
                after->n_steps - before->n_steps);
        fprintf(f, "%*s\"device_blocks\": %.0f,\n", ind, "",
                after->device_blocks);
    }
    fprintf(f, "%*s\"bench_wall_s\": %.6g\n", ind, "", wall_s);
}

/* The request stream for one rate (rate 0: trace replay). */
static lkv_status_t make_workload(const opts_t *o, double rate,
                                  lkv_bench_req_t **reqs_p, int64_t *n_p)
{
    lkv_sim_workload_config_t w = o->work;
    w.rate                      = (rate > 0 || o->arrival == ARR_BURST) ? 1.0 : 0.0;
    if (rate > 0) {
        w.rate = rate;
    }
    long n = o->n_requests;
    if (o->duration_s > 0 && !o->n_given && rate > 0) {
        /* enough Poisson arrivals to cover the duration with margin */
        double want = rate * o->duration_s;
        want        = want + 6.0 * sqrt(want) + 16.0;
        n           = want > 1000000 ? 1000000 : (long)want;
    }
    w.n_requests        = n;
    lkv_sim_req_t *sreq = NULL;
    int64_t        ns   = 0;
    LKV_CHECK(lkv_sim_workload_generate(&w, &sreq, &ns));
    lkv_bench_req_t *r = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *r);
    if (r == NULL) {
        free(sreq);
        return LKV_ERR_NOMEM;
    }
    int64_t k  = 0;
    int64_t t0 = ns > 0 ? sreq[0].arrival_ns : 0;
    for (int64_t i = 0; i < ns; i++) {
        int64_t at = sreq[i].arrival_ns;
        if (o->arrival == ARR_BURST) {
            at = 0;
        } else if (o->arrival == ARR_UNIFORM && rate > 0) {
            at = (int64_t)((double)i / rate * 1e9);
        } else if (rate <= 0) {
            at -= t0; /* replay: start at the first arrival */
        }
        if (o->duration_s > 0 && at > (int64_t)(o->duration_s * 1e9)) {
            break;
        }
        r[k].arrival_ns = at;
        r[k].prompt_len = sreq[i].prompt_len;
        r[k].output_len = sreq[i].output_len;
        k++;
    }
    free(sreq);
    *reqs_p = r;
    *n_p    = k;
    return LKV_OK;
}

/* Locate bench/plot.py: $LKV_SOURCE_DIR, next to this source file, ./bench */
static bool find_plot_script(char *buf, size_t len)
{
    const char *env = getenv("LKV_SOURCE_DIR");
    if (env != NULL && env[0]) {
        snprintf(buf, len, "%s/bench/plot.py", env);
        if (access(buf, R_OK) == 0) {
            return true;
        }
    }
    char here[PATH_MAX];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(buf, len, "%s/plot.py", dirname(here));
    if (buf[0] == '/' && access(buf, R_OK) == 0) {
        return true;
    }
    snprintf(buf, len, "bench/plot.py");
    return access(buf, R_OK) == 0;
}

static void make_plot(const opts_t *o, const char *json_path,
                      const char *csv_path)
{
    char script[PATH_MAX];
    if (!find_plot_script(script, sizeof script)) {
        fprintf(stderr, "bench: plot skipped: bench/plot.py not found (run "
                        "from the source tree or set LKV_SOURCE_DIR)\n");
        return;
    }
    /* the python3 on PATH first, then Debian's (python3-matplotlib) */
    const char *pys[] = {"python3", "/usr/bin/python3"};
    int         code  = 127;
    for (size_t k = 0; k < sizeof pys / sizeof pys[0]; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "bench: plot skipped: fork failed\n");
            return;
        }
        if (pid == 0) {
            execlp(pys[k], pys[k], script, "--json", json_path, "--csv",
                   csv_path, "--out", o->plot, (char *)NULL);
            _exit(127);
        }
        int ws = 0;
        if (waitpid(pid, &ws, 0) < 0) {
            return;
        }
        code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 1;
        if (code != 3 && code != 127) {
            break; /* it ran with matplotlib: done or failed for real */
        }
    }
    if (code == 0) {
        if (!o->quiet) {
            fprintf(stderr, "bench: plots written to %s\n", o->plot);
        }
    } else if (code == 3) {
        fprintf(stderr, "bench: plot skipped: python3 has no matplotlib "
                        "(pip install matplotlib, or apt-get install "
                        "python3-matplotlib)\n");
    } else if (code == 127) {
        fprintf(stderr, "bench: plot skipped: python3 not found\n");
    } else {
        fprintf(stderr, "bench: plotting failed (see above); results are in "
                        "the JSON/CSV\n");
    }
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, O_SERVER},
        {"timeout-s", required_argument, 0, O_TIMEOUT},
        {"rate", required_argument, 0, O_RATE},
        {"arrival", required_argument, 0, O_ARRIVAL},
        {"trace", required_argument, 0, O_TRACE},
        {"time-scale", required_argument, 0, O_TSCALE},
        {"prompt-len", required_argument, 0, O_PLEN},
        {"output-len", required_argument, 0, O_OLEN},
        {"max-total", required_argument, 0, O_MAXTOTAL},
        {"prompt-scale", required_argument, 0, O_PSCALE},
        {"n-requests", required_argument, 0, O_NREQ},
        {"duration-s", required_argument, 0, O_DURATION},
        {"rate-sweep", required_argument, 0, O_SWEEP},
        {"seed", required_argument, 0, O_SEED},
        {"data-dir", required_argument, 0, O_DATADIR},
        {"token-range", required_argument, 0, O_TOKRANGE},
        {"max-inflight", required_argument, 0, O_INFLIGHT},
        {"drain-timeout-s", required_argument, 0, O_DRAIN},
        {"ttft-slo-ms", required_argument, 0, O_TTFT},
        {"tpot-slo-ms", required_argument, 0, O_TPOT},
        {"out", required_argument, 0, O_OUT},
        {"csv", required_argument, 0, O_CSV},
        {"plot", required_argument, 0, O_PLOT},
        {"quiet", no_argument, 0, O_QUIET},
        {"temperature", required_argument, 0, O_TEMP},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int  c;
    long v = 0;
    optind = 1;
    opterr = 0;
    int  li = -1;
    while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        char name[48];
        if (li >= 0) {
            snprintf(name, sizeof name, "--%s", opts[li].name);
        } else {
            snprintf(name, sizeof name, "%s",
                     optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        }
        li       = -1;
        bool bad = false;
        switch (c) {
        case O_SERVER:
            o->server = optarg;
            break;
        case O_TIMEOUT:
            bad = parse_double(optarg, 0.1, 86400, &o->timeout_s) != 0;
            break;
        case O_RATE:
            bad           = parse_double(optarg, 1e-6, 1e6, &o->rates[0]) != 0;
            o->n_rates    = 1;
            o->rate_given = true;
            o->sweep      = false;
            break;
        case O_ARRIVAL:
            if (strcmp(optarg, "poisson") == 0) {
                o->arrival = ARR_POISSON;
            } else if (strcmp(optarg, "uniform") == 0) {
                o->arrival = ARR_UNIFORM;
            } else if (strcmp(optarg, "burst") == 0) {
                o->arrival = ARR_BURST;
            } else {
                bad = true;
            }
            break;
        case O_TRACE:
            o->work.trace = optarg;
            break;
        case O_TSCALE:
            bad = parse_double(optarg, 1e-6, 1e6, &o->work.time_scale) != 0;
            break;
        case O_PLEN:
            bad = parse_long(optarg, 1, 1 << 24, &v) != 0;
            o->work.prompt_len = (int32_t)v;
            break;
        case O_OLEN:
            bad = parse_long(optarg, 1, 65536, &v) != 0;
            o->work.output_len = (int32_t)v;
            break;
        case O_MAXTOTAL:
            bad = parse_long(optarg, 2, 1 << 24, &v) != 0;
            o->work.max_total = (int32_t)v;
            break;
        case O_PSCALE:
            bad = parse_double(optarg, 1e-6, 1e6, &o->work.prompt_scale) != 0;
            break;
        case O_NREQ:
            bad = parse_long(optarg, 1, 10000000, &o->n_requests) != 0;
            o->n_given = true;
            break;
        case O_DURATION:
            bad = parse_double(optarg, 1e-3, 1e7, &o->duration_s) != 0;
            break;
        case O_SWEEP: {
            char *dup = strdup(optarg), *save = NULL;
            if (dup == NULL) {
                return 1;
            }
            o->n_rates = 0;
            for (char *t = strtok_r(dup, ",", &save); t != NULL && !bad;
                 t = strtok_r(NULL, ",", &save)) {
                if (o->n_rates >= MAX_SWEEP ||
                    parse_double(t, 1e-6, 1e6, &o->rates[o->n_rates]) != 0) {
                    bad = true;
                } else {
                    o->n_rates++;
                }
            }
            free(dup);
            bad           = bad || o->n_rates == 0;
            o->rate_given = true;
            o->sweep      = true;
            break;
        }
        case O_SEED:
            bad = parse_long(optarg, 0, LONG_MAX, &v) != 0;
            o->work.seed = o->bench.seed = (uint64_t)v;
            break;
        case O_DATADIR:
            o->work.data_dir = optarg;
            break;
        case O_TOKRANGE: {
            long lo = -1, hi = -1;
            char tail;
            if (sscanf(optarg, "%ld,%ld%c", &lo, &hi, &tail) != 2 || lo < 0 ||
                hi < lo || hi > INT32_MAX) {
                bad = true;
            }
            o->bench.token_lo = (int32_t)lo;
            o->bench.token_hi = (int32_t)hi;
            break;
        }
        case O_INFLIGHT:
            bad = parse_long(optarg, 0, 1000000, &v) != 0;
            o->bench.max_inflight = (int)v;
            break;
        case O_DRAIN:
            bad = parse_double(optarg, 0, 1e7, &o->bench.drain_timeout_s) != 0;
            break;
        case O_TTFT:
            bad = parse_double(optarg, 1e-3, 1e9, &o->ttft_slo_ms) != 0;
            o->ttft_given = true;
            break;
        case O_TPOT:
            bad = parse_double(optarg, 1e-3, 1e9, &o->tpot_slo_ms) != 0;
            o->tpot_given = true;
            break;
        case O_OUT:
            o->out = optarg;
            break;
        case O_CSV:
            o->csv = optarg;
            break;
        case O_PLOT:
            o->plot = optarg;
            break;
        case O_QUIET:
            o->quiet = true;
            break;
        case O_TEMP: {
            double t = 0;
            bad               = parse_double(optarg, 0, 100, &t) != 0;
            o->bench.temperature = (float)t;
            break;
        }
        case 'h':
        case O_HELP:
            usage(stdout);
            return -1;
        default:
            fprintf(stderr, "layerkv bench: unknown option or missing value: "
                            "%s (see --help)\n", name);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "layerkv bench: bad value '%s' for %s (see --help)\n",
                    optarg != NULL ? optarg : "", name);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv bench: unexpected argument '%s' (see --help)\n",
                argv[optind]);
        return 2;
    }
    if (o->server == NULL) {
        fprintf(stderr, "layerkv bench: --server ENDPOINT is required, e.g. "
                        "--server tcp://127.0.0.1:5555\n");
        return 2;
    }
    if (!o->rate_given && o->work.trace == NULL && o->arrival != ARR_BURST) {
        fprintf(stderr, "layerkv bench: give --rate R (or --rate-sweep, or "
                        "--arrival burst) for fixed-length requests; only a "
                        "--trace can be replayed at its own times\n");
        return 2;
    }
    if (!o->rate_given) {
        o->rates[0] = 0; /* replay, or burst */
        o->n_rates  = 1;
    }
    if (o->duration_s > 0 && !o->rate_given && o->arrival != ARR_BURST &&
        !o->n_given) {
        o->n_requests = 1000000; /* replay: the duration bounds it */
    }
    return 0;
}

int lkv_cmd_bench(int argc, char **argv)
{
    opts_t o = {
        .timeout_s   = 60,
        .work        = lkv_sim_workload_config_default(),
        .n_requests  = 100,
        .ttft_slo_ms = 10000,
        .tpot_slo_ms = 200,
        .bench       = lkv_bench_config_default(),
    };
    o.work.prompt_len = 256;
    o.work.output_len = 32;
    int rc            = parse_args(argc, argv, &o);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    o.bench.progress        = !o.quiet;
    o.bench.ttft_slo_ms_req = o.ttft_given ? o.ttft_slo_ms : 0;
    o.bench.tpot_slo_ms_req = o.tpot_given ? o.tpot_slo_ms : 0;

    lkv_client_opts_t copts = lkv_client_opts_default();
    copts.server_timeout_ms = (int)(o.timeout_s * 1000);
    lkv_client_t *client    = NULL;
    lkv_status_t  st        = lkv_client_connect(o.server, &copts, &client);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv bench: cannot connect to %s: %s (use "
                        "tcp://HOST:PORT or ipc:///path)\n",
                o.server, lkv_status_str(st));
        return 1;
    }
    lkv_client_health_t h;
    /* health is answered by the coordinator at once, even under load */
    st = lkv_client_health(client, (int)(fmin(o.timeout_s, 10.0) * 1000), &h);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv bench: server %s does not answer health "
                        "(%s); is `layerkv serve --listen %s` running?\n",
                o.server, lkv_status_str(st), o.server);
        lkv_client_close(&client);
        return 1;
    }
    if (!o.quiet) {
        fprintf(stderr, "bench: server %s: %s, model %s, rtt %.2f ms\n",
                o.server, h.version, h.model, h.rtt_ms);
    }

    /* temporary files for plotting when no --out / --csv were asked for */
    char  tmp_json[64] = "", tmp_csv[64] = "";
    FILE *jf = NULL, *cf = NULL;
    const char *json_path = o.out, *csv_path = o.csv;
    int   ret = 1;
    if (o.plot != NULL && json_path == NULL) {
        snprintf(tmp_json, sizeof tmp_json, "/tmp/lkv-bench-XXXXXX");
        int fd = mkstemp(tmp_json);
        if (fd >= 0) {
            close(fd);
            json_path = tmp_json;
        }
    }
    if (o.plot != NULL && csv_path == NULL) {
        snprintf(tmp_csv, sizeof tmp_csv, "/tmp/lkv-bench-XXXXXX");
        int fd = mkstemp(tmp_csv);
        if (fd >= 0) {
            close(fd);
            csv_path = tmp_csv;
        }
    }
    /* JSON is written to a memory stream first: stdout gets it only after
     * the progress lines are done */
    char  *jbuf = NULL;
    size_t jlen = 0;
    jf          = open_memstream(&jbuf, &jlen);
    if (jf == NULL) {
        fprintf(stderr, "layerkv bench: out of memory\n");
        goto out;
    }
    if (csv_path != NULL) {
        cf = fopen(csv_path, "w");
        if (cf == NULL) {
            fprintf(stderr, "layerkv bench: cannot write %s\n", csv_path);
            goto out;
        }
    }
    if (o.sweep) {
        fprintf(jf, "{\n  \"source\": \"bench\",\n  \"rate_sweep\": [");
        for (int k = 0; k < o.n_rates; k++) {
            fprintf(jf, "%s%.6g", k ? ", " : "", o.rates[k]);
        }
        fprintf(jf, "],\n  \"runs\": [\n");
    }
    bool all_ok = true;
    for (int k = 0; k < o.n_rates; k++) {
        double           rate = o.rates[k];
        lkv_bench_req_t *reqs = NULL;
        int64_t          n    = 0;
        st = make_workload(&o, rate, &reqs, &n);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv bench: cannot build the workload: %s "
                            "(check --trace / --data-dir / lengths)\n",
                    lkv_status_str(st));
            goto out;
        }
        if (n == 0) {
            fprintf(stderr, "layerkv bench: no request arrives within "
                            "--duration-s %.3g s; raise it or the rate\n",
                    o.duration_s);
            free(reqs);
            goto out;
        }
        lkv_bench_record_t *recs = calloc((size_t)n, sizeof *recs);
        if (recs == NULL) {
            free(reqs);
            fprintf(stderr, "layerkv bench: out of memory\n");
            goto out;
        }
        char label[48];
        if (rate > 0) {
            snprintf(label, sizeof label, "rate %.3g/s", rate);
        } else {
            snprintf(label, sizeof label, "%s", o.arrival == ARR_BURST ? "burst" : "replay");
        }
        o.bench.label = label;
        server_counters_t before, after;
        read_counters(client, &before);
        double wall = 0;
        st          = lkv_bench_run(client, &o.bench, reqs, n, recs, &wall);
        read_counters(client, &after);
        lkv_bench_summary_t s;
        if (st == LKV_OK) {
            st = lkv_bench_summarise(reqs, recs, n, o.ttft_slo_ms * 1e-3,
                                     o.tpot_slo_ms * 1e-3, &s);
        }
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv bench: run failed: %s\n",
                    lkv_status_str(st));
            free(recs);
            free(reqs);
            goto out;
        }
        if (cf != NULL) {
            lkv_bench_write_csv(reqs, recs, n, rate, o.ttft_slo_ms * 1e-3,
                                o.tpot_slo_ms * 1e-3, k == 0, cf);
        }
        if (o.sweep) {
            fprintf(jf, "    {\n");
            write_run_json(jf, 6, &o, h.model, rate, &s, &before, &after, wall);
            fprintf(jf, "    }%s\n", k + 1 < o.n_rates ? "," : "");
        } else {
            fprintf(jf, "{\n");
            write_run_json(jf, 2, &o, h.model, rate, &s, &before, &after, wall);
            fprintf(jf, "}\n");
        }
        if (!o.quiet) {
            fprintf(stderr,
                    "bench: %s %lld requests (%lld ok, %lld rejected, %lld "
                    "failed): mean TTFT %.3f s (queue %.3f + prefill %.3f), "
                    "p99 TTFT %.3f s, mean TPOT %.1f ms, SLO violations "
                    "%.1f%%, %.2f req/s, %.1f tok/s\n",
                    label, (long long)s.n_requests, (long long)s.n_completed,
                    (long long)s.n_rejected, (long long)s.n_failed,
                    s.mean_ttft_s, s.mean_queue_s, s.mean_prefill_s,
                    s.p99_ttft_s, s.mean_tpot_s * 1e3,
                    s.slo_violation_rate * 100, s.throughput_req_s,
                    s.throughput_tok_s);
        }
        all_ok = all_ok && s.n_completed > 0;
        free(recs);
        free(reqs);
    }
    if (o.sweep) {
        fprintf(jf, "  ]\n}\n");
    }
    fclose(jf);
    jf = NULL;
    if (o.out == NULL) {
        fwrite(jbuf, 1, jlen, stdout);
        fflush(stdout);
    }
    if (json_path != NULL) {
        FILE *f = fopen(json_path, "w");
        if (f == NULL || fwrite(jbuf, 1, jlen, f) != jlen) {
            fprintf(stderr, "layerkv bench: cannot write %s\n", json_path);
            if (f != NULL) {
                fclose(f);
            }
            goto out;
        }
        fclose(f);
    }
    if (cf != NULL) {
        fclose(cf);
        cf = NULL;
    }
    if (o.plot != NULL && json_path != NULL && csv_path != NULL) {
        make_plot(&o, json_path, csv_path);
    }
    ret = all_ok ? 0 : 1;
    if (!all_ok) {
        fprintf(stderr, "layerkv bench: no request completed in at least one "
                        "run (see the errors above)\n");
    }
out:
    if (jf != NULL) {
        fclose(jf);
    }
    free(jbuf);
    if (cf != NULL) {
        fclose(cf);
    }
    if (tmp_json[0]) {
        unlink(tmp_json);
    }
    if (tmp_csv[0]) {
        unlink(tmp_csv);
    }
    lkv_client_close(&client);
    return ret;
}
