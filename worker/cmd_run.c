/* cmd_run.c - `layerkv run`: offline generation on one process with the
 * offline engine (worker/engine.h). Text to stdout, diagnostics to stderr.
 * Single-threaded (the backend may use more threads for compute/copies). */
#define LKV_LOG_MODULE "run"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "common/log.h"
#include "format/model_file.h"
#include "format/tokenizer.h"
#include "kernels/kernels.h"
#include "worker/engine.h"
#include "worker/model.h"
#include "worker/parallel.h"
#include "kvstore/kv_remote_ucx.h"

#define MAX_PROMPTS 4096

static void usage(FILE *out)
{
    fprintf(out,
        "usage: layerkv run [--model PATH] --prompt TEXT [options]\n"
        "\n"
        "Generate text offline: every prompt is admitted at once and run with\n"
        "continuous batching. With one prompt the continuation streams to\n"
        "stdout; with several, each completion is printed as \"[i] text\" when\n"
        "it ends. Diagnostics and timing go to stderr.\n"
        "\n"
        "model:\n"
        "  --model PATH          GGUF file, HF safetensors directory, llama2.c\n"
        "                        .bin checkpoint, dummy:CONFIG.json, or\n"
        "                        " LKV_DEFAULT_MODEL " (the default: the bundled\n"
        "                        model, built into this binary)\n"
        "  --tokenizer PATH      tokenizer (required for llama2.c .bin)\n"
        "prompts:\n"
        "  --prompt TEXT         a prompt (repeatable)\n"
        "  --prompts-file F      one prompt per line (empty lines skipped)\n"
        "sampling:\n"
        "  --max-tokens N        tokens to generate per prompt (default 256)\n"
        "  --temperature T       0 = greedy (default 1.0)\n"
        "  --top-k K             0 = off (default 0)\n"
        "  --top-p P             1 = off (default 0.9)\n"
        "  --seed S              random seed; prompt i uses S+i (default 1234)\n"
        "execution:\n"
        "  --backend cpu|cuda    compute backend (compiled in: %s)\n"
        "  --threads N           CPU compute threads (default: all CPUs)\n"
        "  --batch-tokens N      tokens per step, prefill chunk limit "
        "(default 512)\n"
        "kv cache:\n"
        "  --block-size N        tokens per layer-block (default 16)\n"
        "  --kv-dtype f32|f16|bf16\n"
        "                        KV cache element type (default f32)\n"
        "  --device-kv-blocks N  device pool capacity in layer-blocks "
        "(default:\n"
        "                        room for every prompt's whole KV)\n"
        "  --host-kv-blocks N    host pool capacity in layer-blocks "
        "(default: same)\n"
        "  --offload-layers none|interleave|all-but-one|random:SEED\n"
        "                        layers of each sequence that leave the device\n"
        "                        right after prefill (default none)\n"
        "  --decode-offloaded reload|stream\n"
        "                        how offloaded layers come back for decode:\n"
        "                        reloaded before the sequence decodes, or\n"
        "                        streamed into staging blocks every step\n"
        "                        (default reload)\n"
        "  --link-gbps X         cap host<->device copies at X GB/s to emulate\n"
        "                        a PCIe link on the CPU backend (default: no "
        "cap)\n"
        "  --kvnode ENDPOINT     remote KV tier: a `layerkv kvnode` control\n"
        "                        endpoint (repeatable, up to 16); with\n"
        "                        --host-kv-blocks 0 offloaded layers go there\n"
        "                        over UCX (set UCX_TLS; docs/ucx.md)\n"
        "  -h, --help            this help\n",
        lkv_kern_backend_list());
    lkv_par_usage(out);
}

typedef struct {
    const lkv_tokenizer_t *tok;
    int                    n_reqs;
    bool                   stream; /* one prompt: stream to stdout */
    lkv_detok_t            detok;
    int32_t              **out;    /* per request generated ids */
    int                   *n_out;
    int                   *cap_out;
    int                    n_failed;
    int                    n_generated;
} run_ctx_t;

static void on_token(void *ctx, int req, int32_t token, lkv_status_t status)
{
    run_ctx_t *c = ctx;
    char       buf[256];

    if (token >= 0) {
        c->n_generated++;
        if (c->stream) {
            size_t n = lkv_detok_push(c->tok, &c->detok, token, buf,
                                      sizeof(buf));
            if (n > 0) {
                fwrite(buf, 1, n, stdout);
                fflush(stdout);
            }
            return;
        }
        if (c->n_out[req] == c->cap_out[req]) {
            int      cap = c->cap_out[req] ? c->cap_out[req] * 2 : 64;
            int32_t *o   = realloc(c->out[req], (size_t)cap * sizeof(*o));
            if (o == NULL) {
                return; /* the text will miss tokens; reported below */
            }
            c->out[req]     = o;
            c->cap_out[req] = cap;
        }
        c->out[req][c->n_out[req]++] = token;
        return;
    }
    if (status != LKV_OK) {
        c->n_failed++;
        fprintf(stderr, "layerkv run: prompt %d failed: %s\n", req,
                lkv_status_str(status));
    }
    if (c->stream) {
        size_t n = lkv_detok_flush(&c->detok, buf, sizeof(buf));
        fwrite(buf, 1, n, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        return;
    }
    char *text = NULL;
    if (lkv_tok_decode(c->tok, c->out[req], c->n_out[req], &text) == LKV_OK) {
        printf("[%d] %s\n", req, text);
        free(text);
    } else {
        printf("[%d] (could not decode %d tokens)\n", req, c->n_out[req]);
    }
    fflush(stdout);
}

static int parse_int(const char *opt, const char *s, long lo, long hi,
                     int *out)
{
    char *end;
    long  v;

    errno = 0;
    v     = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr,
                "layerkv run: %s expects an integer in [%ld, %ld], got '%s'\n",
                opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi,
                        double *out)
{
    char  *end;
    double v;

    errno = 0;
    v     = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo ||
        v > hi) {
        fprintf(stderr,
                "layerkv run: %s expects a number in [%g, %g], got '%s'\n",
                opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char              *end;
    unsigned long long v;

    errno = 0;
    v     = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        fprintf(stderr,
                "layerkv run: %s expects a non-negative integer, got '%s'\n",
                opt, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int read_prompts_file(const char *path, char **prompts, int *n_p,
                             char **buf_p)
{
    FILE  *f = fopen(path, "rb");
    long   size;
    char  *buf;

    if (f == NULL) {
        fprintf(stderr, "layerkv run: cannot open prompts file '%s': %s\n",
                path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "layerkv run: cannot read prompts file '%s'\n", path);
        fclose(f);
        return -1;
    }
    buf = malloc((size_t)size + 1);
    if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "layerkv run: cannot read prompts file '%s'\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    buf[size] = '\0';
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl = '\0';
            if (nl > line && nl[-1] == '\r') {
                nl[-1] = '\0';
            }
        }
        if (*line != '\0') {
            if (*n_p >= MAX_PROMPTS) {
                fprintf(stderr, "layerkv run: more than %d prompts\n",
                        MAX_PROMPTS);
                free(buf);
                return -1;
            }
            prompts[(*n_p)++] = line;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    *buf_p = buf;
    return 0;
}

enum {
    OPT_MODEL = 256,
    OPT_TOKENIZER,
    OPT_PROMPT,
    OPT_PROMPTS_FILE,
    OPT_MAX_TOKENS,
    OPT_TEMPERATURE,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_SEED,
    OPT_THREADS,
    OPT_BLOCK_SIZE,
    OPT_DEVICE_BLOCKS,
    OPT_HOST_BLOCKS,
    OPT_OFFLOAD,
    OPT_DECODE_OFFLOADED,
    OPT_LINK_GBPS,
    OPT_BACKEND,
    OPT_BATCH_TOKENS,
    OPT_KV_DTYPE,
    OPT_KVNODE,
};

int lkv_cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"prompts-file", required_argument, NULL, OPT_PROMPTS_FILE},
        {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"temperature", required_argument, NULL, OPT_TEMPERATURE},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"seed", required_argument, NULL, OPT_SEED},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
        {"device-kv-blocks", required_argument, NULL, OPT_DEVICE_BLOCKS},
        {"host-kv-blocks", required_argument, NULL, OPT_HOST_BLOCKS},
        {"offload-layers", required_argument, NULL, OPT_OFFLOAD},
        {"decode-offloaded", required_argument, NULL, OPT_DECODE_OFFLOADED},
        {"link-gbps", required_argument, NULL, OPT_LINK_GBPS},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"batch-tokens", required_argument, NULL, OPT_BATCH_TOKENS},
        {"kv-dtype", required_argument, NULL, OPT_KV_DTYPE},
        {"kvnode", required_argument, NULL, OPT_KVNODE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char         *model_path = LKV_DEFAULT_MODEL, *tok_path = NULL;
    const char         *backend    = "cpu";
    const char         *offload_s  = "none";
    char              **prompts    = NULL;
    char               *file_buf   = NULL;
    int                 n_prompts  = 0;
    int                 max_tokens = 256, top_k = 0, threads = 0;
    int                 block_size = 16, dev_blocks = -1, host_blocks = -1;
    int                 batch_tokens = 512;
    double              temperature  = 1.0, top_p = 0.9, link_gbps = 0;
    uint64_t            seed         = 1234;
    lkv_decode_mode_t   mode         = LKV_DECODE_RELOAD;
    lkv_dtype_t         kv_dtype     = LKV_DTYPE_F32;
    lkv_offload_policy_t policy      = LKV_OFFLOAD_NONE;
    uint64_t            offload_seed = 0;
    int                 rc           = 1;
    int                 c;

    lkv_kern_backend_t   *be    = NULL;
    lkv_model_file_t     *mf    = NULL;
    lkv_model_t          *model = NULL;
    lkv_engine_t         *eng   = NULL;
    lkv_kv_remote_ucx_t  *remote = NULL;
    lkv_kv_remote_t       remote_h;
    const char           *kvnodes[LKV_KV_REMOTE_MAX_NODES];
    int                   n_kvnodes = 0;
    lkv_engine_request_t *reqs  = NULL;
    int32_t              *ids   = NULL;
    run_ctx_t             rctx;
    lkv_status_t          st;

    memset(&rctx, 0, sizeof(rctx));
    lkv_par_t par; /* --tp/--pp: worker/parallel.h */
    if (lkv_par_args("run", &argc, argv, true, &par) != 0) {
        return 2;
    }
    prompts = calloc(MAX_PROMPTS, sizeof(*prompts));
    if (prompts == NULL) {
        return 1;
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h':
            usage(stdout);
            free(prompts);
            return 0;
        case OPT_MODEL:
            model_path = optarg;
            break;
        case OPT_TOKENIZER:
            tok_path = optarg;
            break;
        case OPT_PROMPT:
            if (n_prompts >= MAX_PROMPTS) {
                fprintf(stderr, "layerkv run: more than %d prompts\n",
                        MAX_PROMPTS);
                bad = 1;
            } else {
                prompts[n_prompts++] = optarg;
            }
            break;
        case OPT_PROMPTS_FILE:
            if (file_buf != NULL) {
                fprintf(stderr, "layerkv run: --prompts-file given twice\n");
                bad = 1;
            } else if (read_prompts_file(optarg, prompts, &n_prompts,
                                         &file_buf) != 0) {
                free(prompts);
                return 1;
            }
            break;
        case OPT_MAX_TOKENS:
            bad = parse_int("--max-tokens", optarg, 1, 1 << 24, &max_tokens);
            break;
        case OPT_TEMPERATURE:
            bad = parse_double("--temperature", optarg, 0, 100, &temperature);
            break;
        case OPT_TOP_K:
            bad = parse_int("--top-k", optarg, 0, 1 << 24, &top_k);
            break;
        case OPT_TOP_P:
            bad = parse_double("--top-p", optarg, 0, 1, &top_p);
            break;
        case OPT_SEED:
            bad = parse_u64("--seed", optarg, &seed);
            break;
        case OPT_THREADS:
            bad = parse_int("--threads", optarg, 0, 1024, &threads);
            break;
        case OPT_BLOCK_SIZE:
            bad = parse_int("--block-size", optarg, 1, 4096, &block_size);
            break;
        case OPT_DEVICE_BLOCKS:
            bad = parse_int("--device-kv-blocks", optarg, 1, 1 << 30,
                            &dev_blocks);
            break;
        case OPT_HOST_BLOCKS:
            bad = parse_int("--host-kv-blocks", optarg, 0, 1 << 30,
                            &host_blocks);
            break;
        case OPT_BATCH_TOKENS:
            bad = parse_int("--batch-tokens", optarg, 1, 1 << 20,
                            &batch_tokens);
            break;
        case OPT_OFFLOAD:
            offload_s = optarg;
            if (lkv_engine_parse_offload(optarg, &policy, &offload_seed) !=
                LKV_OK) {
                fprintf(stderr,
                        "layerkv run: --offload-layers expects none, "
                        "interleave, all-but-one or random:SEED, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        case OPT_DECODE_OFFLOADED:
            if (strcmp(optarg, "reload") == 0) {
                mode = LKV_DECODE_RELOAD;
            } else if (strcmp(optarg, "stream") == 0) {
                mode = LKV_DECODE_STREAM;
            } else {
                fprintf(stderr,
                        "layerkv run: --decode-offloaded expects reload or "
                        "stream, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        case OPT_KVNODE:
            if (n_kvnodes >= LKV_KV_REMOTE_MAX_NODES) {
                fprintf(stderr, "layerkv run: at most %d --kvnode\n",
                        LKV_KV_REMOTE_MAX_NODES);
                bad = 1;
            } else {
                kvnodes[n_kvnodes++] = optarg;
            }
            break;
        case OPT_LINK_GBPS:
            bad = parse_double("--link-gbps", optarg, 0, 1e6, &link_gbps);
            break;
        case OPT_BACKEND:
            backend = optarg;
            break;
        case OPT_KV_DTYPE:
            if (strcmp(optarg, "f32") == 0) {
                kv_dtype = LKV_DTYPE_F32;
            } else if (strcmp(optarg, "f16") == 0) {
                kv_dtype = LKV_DTYPE_F16;
            } else if (strcmp(optarg, "bf16") == 0) {
                kv_dtype = LKV_DTYPE_BF16;
            } else {
                fprintf(stderr, "layerkv run: --kv-dtype expects f32, f16 or "
                                "bf16, got '%s'\n",
                        optarg);
                bad = 1;
            }
            break;
        default:
            fprintf(stderr, "layerkv run: unknown or incomplete option '%s' "
                            "(see layerkv run --help)\n",
                    argv[optind - 1]);
            bad = 1;
            break;
        }
        if (bad) {
            free(prompts);
            free(file_buf);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv run: unexpected argument '%s' (prompts go "
                        "after --prompt)\n",
                argv[optind]);
        rc = 2;
        goto out;
    }
    if (n_prompts == 0) {
        fprintf(stderr, "layerkv run: no prompt: give --prompt TEXT or "
                        "--prompts-file F\n");
        rc = 2;
        goto out;
    }

    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = threads;
    kc.link_gbps         = link_gbps;
    st                   = lkv_kern_backend_open(backend, &kc, &be);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv run: cannot open backend '%s': %s "
                        "(compiled in: %s)\n",
                backend, lkv_status_str(st), lkv_kern_backend_list());
        goto out;
    }
    st = lkv_model_file_open(model_path, tok_path, &mf);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv run: cannot open model '%s': %s\n",
                model_path, lkv_status_str(st));
        goto out;
    }
    st = lkv_par_model_create(&par, be, mf, &model);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv run: cannot load model '%s': %s\n",
                model_path, lkv_status_str(st));
        goto out;
    }
    rctx.tok = lkv_model_file_tokenizer(mf);
    if (rctx.tok == NULL) {
        fprintf(stderr, "layerkv run: model '%s' has no tokenizer; give "
                        "--tokenizer PATH\n",
                model_path);
        goto out;
    }

    /* tokenize (the engine serves the model's context) */
    int max_ctx = model->cfg.max_seq_len > 0 ? model->cfg.max_seq_len : 2048;
    reqs        = calloc((size_t)n_prompts, sizeof(*reqs));
    ids         = NULL;
    size_t total = 0;
    int  *lens   = calloc((size_t)n_prompts, sizeof(int));
    if (reqs == NULL || lens == NULL) {
        free(lens);
        goto out;
    }
    for (int i = 0; i < n_prompts; i++) {
        int n = 0;
        lkv_tok_encode(rctx.tok, prompts[i], strlen(prompts[i]),
                       lkv_tok_add_bos_default(rctx.tok), false, NULL, 0, &n);
        if (n > max_ctx) {
            fprintf(stderr, "layerkv run: prompt %d has %d tokens, longer "
                            "than the context of %d tokens; shorten it\n",
                    i, n, max_ctx);
            free(lens);
            goto out;
        }
        if (n == 0) {
            fprintf(stderr, "layerkv run: prompt %d encodes to no tokens and "
                            "the model adds no BOS; give some text\n",
                    i);
            free(lens);
            goto out;
        }
        lens[i] = n;
        total += (size_t)n;
    }
    ids = malloc(total * sizeof(int32_t));
    if (ids == NULL) {
        free(lens);
        goto out;
    }
    total = 0;
    for (int i = 0; i < n_prompts; i++) {
        int n = 0;
        lkv_tok_encode(rctx.tok, prompts[i], strlen(prompts[i]),
                       lkv_tok_add_bos_default(rctx.tok), false, ids + total,
                       lens[i], &n);
        reqs[i].prompt               = ids + total;
        reqs[i].n_prompt             = n;
        reqs[i].max_tokens           = max_tokens;
        reqs[i].sampling.temperature = (float)temperature;
        reqs[i].sampling.top_k       = top_k;
        reqs[i].sampling.top_p       = (float)top_p;
        reqs[i].sampling.seed        = seed + (uint64_t)i;
        total += (size_t)n;
    }
    free(lens);

    lkv_engine_config_t ec = lkv_engine_config_default();
    ec.block_size          = block_size;
    if (dev_blocks < 0 || host_blocks < 0) {
        /* default: room for every sequence's whole KV in each tier */
        int64_t need = 0;
        for (int i = 0; i < n_prompts; i++) {
            int64_t len = (int64_t)reqs[i].n_prompt + max_tokens;
            len         = len < max_ctx ? len : max_ctx;
            need += (len + block_size - 1) / block_size;
        }
        need *= model->cfg.n_layers;
        need = need < (1 << 30) ? need : (1 << 30);
        if (dev_blocks < 0) {
            dev_blocks = (int)need;
        }
        if (host_blocks < 0) {
            host_blocks = (int)need;
        }
    }
    ec.n_device_blocks     = dev_blocks;
    ec.n_host_blocks       = host_blocks;
    ec.max_seqs            = n_prompts < 256 ? n_prompts : 256;
    ec.max_batch_tokens    = batch_tokens;
    ec.offload             = policy;
    ec.offload_seed        = offload_seed;
    ec.decode_mode         = mode;
    ec.kv_dtype            = kv_dtype;
    if (n_kvnodes > 0) {
        lkv_kv_remote_ucx_config_t rc_ = {0};
        rc_.endpoints      = kvnodes;
        rc_.n_endpoints    = n_kvnodes;
        rc_.block_bytes    = lkv_model_block_bytes(model, block_size,
                                                   kv_dtype);
        rc_.device_is_host = strcmp(backend, "cpu") == 0;
        st                 = lkv_kv_remote_ucx_create(&rc_, &remote);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv run: cannot reach the kvnode(s): %s\n",
                    lkv_status_str(st));
            goto out;
        }
        lkv_kv_remote_ucx_handle(remote, &remote_h);
        ec.remote          = &remote_h;
        ec.n_remote_blocks = remote_h.n_blocks;
        double put_bps = 0, get_bps = 0;
        /* start-up link probe (the offload-volume bound's BW); it writes
         * remote blocks that are not in use yet */
        (void)lkv_kv_remote_ucx_probe(remote, 64, &put_bps, &get_bps);
        fprintf(stderr, "layerkv run: remote kv tier: %d kvnode(s), %d "
                        "layer-blocks; link put %.2f GB/s, get %.2f GB/s\n",
                n_kvnodes, (int)remote_h.n_blocks, put_bps * 1e-9,
                get_bps * 1e-9);
    }
    st                     = lkv_engine_create(model, &ec, &eng);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv run: cannot create the engine: %s\n",
                lkv_status_str(st));
        goto out;
    }

    rctx.n_reqs  = n_prompts;
    rctx.stream  = n_prompts == 1;
    rctx.out     = calloc((size_t)n_prompts, sizeof(*rctx.out));
    rctx.n_out   = calloc((size_t)n_prompts, sizeof(*rctx.n_out));
    rctx.cap_out = calloc((size_t)n_prompts, sizeof(*rctx.cap_out));
    if (rctx.out == NULL || rctx.n_out == NULL || rctx.cap_out == NULL) {
        goto out;
    }
    lkv_detok_init(&rctx.detok);
    if (n_prompts == 1) {
        /* the prompt's last id lets SPM drop the space after BOS correctly */
        rctx.detok.prev_id = reqs[0].prompt[reqs[0].n_prompt - 1];
    }

    const lkv_model_config_t *mc = &model->cfg;
    char                      link_note[64] = "";
    if (link_gbps > 0) {
        snprintf(link_note, sizeof(link_note), " (link emulated at %g GB/s)",
                 link_gbps);
    }
    fprintf(stderr,
            "layerkv run: %s model %s: %d layers, dim %d, %d heads (%d kv), "
            "vocab %d, context %d; backend %s; %d prompt(s)\n"
            "layerkv run: kv: block %d tokens, %d device + %d host "
            "%s layer-blocks of %zu bytes; offload %s, decode %s\n",
            lkv_model_file_format(mf), model_path, mc->n_layers, mc->dim,
            mc->n_heads, mc->n_kv_heads, mc->vocab_size, max_ctx, backend,
            n_prompts, block_size, dev_blocks, host_blocks,
            lkv_dtype_name(kv_dtype),
            lkv_model_block_bytes(model, block_size, kv_dtype),
            offload_s, mode == LKV_DECODE_STREAM ? "stream" : "reload");

    st = lkv_par_generate(&par, eng, reqs, n_prompts, on_token, &rctx);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv run: generation failed: %s\n",
                lkv_status_str(st));
        goto out;
    }
    if (!lkv_par_is_leader(&par)) {
        rc = 0; /* a follower rank: the leader reports */
        goto out;
    }

    lkv_engine_stats_t es;
    lkv_engine_stats(eng, &es);
    double pf_s = (double)es.prefill_ns * 1e-9;
    double dc_s = (double)es.decode_ns * 1e-9;
    double gbps = dc_s > 0 ? (double)model->weight_bytes *
                                 (double)es.decode_steps / dc_s * 1e-9
                           : 0;
    fprintf(stderr,
            "layerkv run: prefill %lld tokens in %.3f s (%.1f tok/s); decode "
            "%lld tokens in %lld steps, %.3f s (%.1f tok/s, %.2f GB/s of "
            "weights)%s\n",
            (long long)es.prefill_tokens, pf_s,
            pf_s > 0 ? (double)es.prefill_tokens / pf_s : 0.0,
            (long long)es.decode_tokens, (long long)es.decode_steps, dc_s,
            dc_s > 0 ? (double)es.decode_tokens / dc_s : 0.0, gbps,
            link_note);
    if (es.n_offloads + es.n_reloads + es.n_stages > 0) {
        fprintf(stderr,
                "layerkv run: kv moves: %lld layer offloads, %lld reloads, "
                "%lld stages; %.2f MB device->host, %.2f MB host->device%s\n",
                (long long)es.n_offloads, (long long)es.n_reloads,
                (long long)es.n_stages, (double)es.bytes_d2h / 1e6,
                (double)es.bytes_h2d / 1e6, link_note);
    }
    if (es.offload_steps > 0) {
        double oc = (double)es.offload_compute_ns * 1e-9;
        double ok = (double)es.offload_copy_ns * 1e-9;
        double os = (double)es.offload_step_ns * 1e-9;
        double mx = oc > ok ? oc : ok;
        fprintf(stderr,
                "layerkv run: %lld steps with offloads: compute %.4f s, "
                "device->host link busy <= %.4f s, step %.4f s = %.2f x "
                "max(compute, copy)%s\n",
                (long long)es.offload_steps, oc, ok, os,
                mx > 0 ? os / mx : 0.0, link_note);
    }
    rc = rctx.n_failed > 0 ? 1 : 0;

out:
    if (rctx.out != NULL) {
        for (int i = 0; i < n_prompts; i++) {
            free(rctx.out[i]);
        }
    }
    free(rctx.out);
    free(rctx.n_out);
    free(rctx.cap_out);
    free(ids);
    free(reqs);
    lkv_engine_destroy(&eng);
    lkv_kv_remote_ucx_destroy(&remote);
    lkv_model_destroy(&model);
    lkv_model_file_close(&mf);
    lkv_kern_backend_close(&be);
    free(prompts);
    free(file_buf);
    return rc;
}
