/* cmd_bench_overlap.c - `layerkv bench-overlap`: does offloading KV layer by
 * layer overlap with compute? (issue 3 item 3)
 *
 * One step = the last prefill chunk of a long prompt: --tokens new tokens
 * attend to --ctx tokens of context in each of --layers real transformer
 * layers (rmsnorm, QKV, RoPE, kv_write into paged layer-blocks, paged
 * attention, output projection, SwiGLU MLP; all through the backend ops
 * table). Right after layer l's KV is final, LayerKV offloads the whole layer
 * (ctx + tokens positions) to the host tier on the D2H copy queue via the
 * kvstore mover, while layer l+1 computes. The first --offload layers are
 * offloaded (default: all but the last, the `all-but-one` rule).
 *
 * It measures (median of --reps):
 *   compute  the step without copies
 *   copy     the same copies alone, back to back
 *   step     the step with copies, overlapped
 * and prints step / max(compute, copy) (1.0 = perfect overlap, 1 + min/max
 * = no overlap). On the CPU backend the copies run on the copy-queue thread
 * with --link-gbps link emulation; every output line that depends on it says
 * so. CPU compute is 100-1000x slower than a GPU's while memcpy is not, so
 * an unscaled 2 GB/s "PCIe" link would hide every copy trivially; the
 * default --link-gbps auto scales the emulated link so that the copies of a
 * step take as long as its compute (the GPU-like ratio and the hardest case
 * for overlap).
 *
 * With --model PATH (e.g. dummy:110m) the step is instead the worker's real
 * forward pass (worker/forward.h) over that model, and the offload of layer
 * l is queued from its kv_done hook, exactly where the worker's step
 * executor queues it.
 *
 * Threading: the calling thread drives compute; the mover's copy queue runs
 * the copies.
 */
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LKV_LOG_MODULE "bench-overlap"
#include "cmd/commands.h"
#include "common/clock.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "kvstore/kv_geometry.h"
#include "kvstore/kv_mover.h"
#include "kvstore/kv_pool.h"
/* --model: the worker's real forward pass (this file is part of the layerkv
 * binary, which links every module; the kvstore library does not) */
#include "format/model_file.h"
#include "worker/forward.h"
#include "worker/model.h"

#define MAX_REPS 100

typedef struct {
    const char *backend;
    const char *model; /* NULL: synthetic layer from the options */
    double      link_gbps;
    double      link_latency_us;
    int         threads;
    int         layers;
    int         offload; /* -1 = layers - 1 */
    int         tokens;
    int         ctx; /* context tokens before the new ones */
    int         dim;
    int         hidden;
    int         heads;
    int         kv_heads;
    int         block_size;
    lkv_dtype_t kv_dtype;
    int         reps;
    int         contiguous;
    double      max_ratio; /* 0 = do not check */
    uint64_t    seed;
} opts_t;

typedef struct {
    opts_t              o;
    lkv_kern_backend_t *be;
    lkv_kv_geometry_t   g;
    lkv_kv_pool_t      *pool;
    lkv_kv_mover_t     *mover;
    int                 head_dim;
    int                 nbl; /* blocks per layer */
    int                 ctx; /* context tokens before the new ones */
    /* weights (f32, shared by all layers) */
    void *w_attn_norm, *w_ffn_norm, *wq, *wk, *wv, *wo, *w_gate, *w_up,
        *w_down;
    float *inv_freq;
    /* activations */
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    /* per-layer metadata in backend memory */
    int32_t *d_pos, *d_slots, *d_qstart, *d_ctxlen, *d_tables; /* (L, nbl) */
    /* host copies */
    int32_t          *h_tables;    /* (L, nbl) device blocks */
    int32_t          *h_host_dst;  /* (L, nbl) host blocks */
    lkv_kern_event_t *layer_done;  /* recorded on COMPUTE */
    /* --model */
    lkv_model_file_t *mf;
    lkv_model_t      *model;
    lkv_fwd_t        *fwd;
    int32_t          *h_tokens; /* (tokens) */
    int               mode;     /* of the pass in progress (kv_done hook) */
} bench_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv bench-overlap [OPTIONS]\n"
            "\n"
            "Measure whether layer-wise KV offload overlaps with compute:\n"
            "prints compute-only, copy-only and overlapped step times and\n"
            "step / max(compute, copy) (target <= 1.15).\n"
            "\n"
            "  --backend NAME        cpu (default) or cuda\n"
            "  --model PATH          run the worker's real forward pass over "
            "this model\n"
            "                        (e.g. dummy:110m) instead of the "
            "synthetic layers\n"
            "  --link-gbps X|auto    CPU: emulated link cap in GB/s; auto "
            "(default) caps it\n"
            "                        so that copy-only time = compute-only "
            "time; 0 = no cap\n"
            "  --link-latency-us X   CPU: emulated per-copy latency (default "
            "0)\n"
            "  --threads N           compute threads (default: CPUs - 1, the "
            "copy thread needs one)\n"
            "  --layers L            layers per step (default 32)\n"
            "  --offload K           layers offloaded (default L-1, "
            "all-but-one)\n"
            "  --tokens T            new tokens per step (default 32)\n"
            "  --ctx N               context tokens already in each layer "
            "(default 0:\n"
            "                        a prefill; the whole layer is "
            "offloaded)\n"
            "  --dim D --hidden F --heads H --kv-heads HKV\n"
            "                        layer shape (default 512 1408 8 8)\n"
            "  --block-size N        tokens per layer-block (default 16)\n"
            "  --kv-dtype f32|f16    KV cache dtype (default f32)\n"
            "  --contiguous          contiguous blocks (default: shuffled, "
            "one copy per block)\n"
            "  --reps N              repetitions, median reported (default "
            "7)\n"
            "  --max-ratio R         exit 1 if step / max(compute, copy) > R\n"
            "  -h, --help            this help\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long  v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double lo, double *out)
{
    char  *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v) || v < lo) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    enum {
        O_BACKEND = 256, O_GBPS, O_LAT, O_THREADS, O_LAYERS, O_OFFLOAD,
        O_TOKENS, O_CTX, O_DIM, O_HIDDEN, O_HEADS, O_KVHEADS, O_BS, O_DTYPE,
        O_REPS, O_CONTIG, O_MAXR, O_MODEL
    };
    static const struct option lo[] = {
        {"backend", required_argument, NULL, O_BACKEND},
        {"link-gbps", required_argument, NULL, O_GBPS},
        {"link-latency-us", required_argument, NULL, O_LAT},
        {"threads", required_argument, NULL, O_THREADS},
        {"layers", required_argument, NULL, O_LAYERS},
        {"offload", required_argument, NULL, O_OFFLOAD},
        {"tokens", required_argument, NULL, O_TOKENS},
        {"ctx", required_argument, NULL, O_CTX},
        {"dim", required_argument, NULL, O_DIM},
        {"hidden", required_argument, NULL, O_HIDDEN},
        {"heads", required_argument, NULL, O_HEADS},
        {"kv-heads", required_argument, NULL, O_KVHEADS},
        {"block-size", required_argument, NULL, O_BS},
        {"kv-dtype", required_argument, NULL, O_DTYPE},
        {"reps", required_argument, NULL, O_REPS},
        {"contiguous", no_argument, NULL, O_CONTIG},
        {"max-ratio", required_argument, NULL, O_MAXR},
        {"model", required_argument, NULL, O_MODEL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    *o        = (opts_t){
               .backend    = "cpu",
               .link_gbps  = -1.0, /* auto */
               .threads    = ncpu > 1 ? (int)ncpu - 1 : 1,
               .layers     = 32,
               .offload    = -1,
               .tokens     = 32,
               .ctx        = 0,
               .dim        = 512,
               .hidden     = 1408,
               .heads      = 8,
               .kv_heads   = 8,
               .block_size = 16,
               .kv_dtype   = LKV_DTYPE_F32,
               .reps       = 7,
               .seed       = 1234,
    };
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 1;
        case O_BACKEND:
            o->backend = optarg;
            break;
        case O_GBPS:
            if (strcmp(optarg, "auto") == 0) {
                o->link_gbps = -1.0;
            } else {
                bad |= parse_double(optarg, 0.0, &o->link_gbps);
            }
            break;
        case O_LAT:
            bad |= parse_double(optarg, 0.0, &o->link_latency_us);
            break;
        case O_THREADS:
            bad |= parse_int(optarg, 1, 1024, &o->threads);
            break;
        case O_LAYERS:
            bad |= parse_int(optarg, 1, 1024, &o->layers);
            break;
        case O_OFFLOAD:
            bad |= parse_int(optarg, 0, 1024, &o->offload);
            break;
        case O_TOKENS:
            bad |= parse_int(optarg, 1, 65536, &o->tokens);
            break;
        case O_CTX:
            bad |= parse_int(optarg, 0, 1 << 24, &o->ctx);
            break;
        case O_DIM:
            bad |= parse_int(optarg, 8, 1 << 16, &o->dim);
            break;
        case O_HIDDEN:
            bad |= parse_int(optarg, 8, 1 << 18, &o->hidden);
            break;
        case O_HEADS:
            bad |= parse_int(optarg, 1, 1024, &o->heads);
            break;
        case O_KVHEADS:
            bad |= parse_int(optarg, 1, 1024, &o->kv_heads);
            break;
        case O_BS:
            bad |= parse_int(optarg, 1, 4096, &o->block_size);
            break;
        case O_DTYPE:
            if (strcmp(optarg, "f32") == 0) {
                o->kv_dtype = LKV_DTYPE_F32;
            } else if (strcmp(optarg, "f16") == 0) {
                o->kv_dtype = LKV_DTYPE_F16;
            } else {
                bad = 1;
            }
            break;
        case O_REPS:
            bad |= parse_int(optarg, 1, MAX_REPS, &o->reps);
            break;
        case O_CONTIG:
            o->contiguous = 1;
            break;
        case O_MAXR:
            bad |= parse_double(optarg, 1.0, &o->max_ratio);
            break;
        case O_MODEL:
            o->model = optarg;
            break;
        default:
            bad = 1;
            break;
        }
        if (bad) {
            fprintf(stderr, "bench-overlap: bad option or value (%s)\n",
                    optarg != NULL ? optarg : argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench-overlap: unexpected argument '%s'\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o->model != NULL) {
        return 0; /* the shape comes from the model (checked at setup) */
    }
    if (o->offload < 0) {
        o->offload = o->layers - 1;
    }
    if (o->offload > o->layers || o->dim % o->heads != 0 ||
        o->heads % o->kv_heads != 0 || (o->dim / o->heads) % 2 != 0) {
        fprintf(stderr, "bench-overlap: need --offload <= --layers, --dim a "
                        "multiple of --heads with an even head size, and "
                        "--heads a multiple of --kv-heads\n");
        return 2;
    }
    return 0;
}

/* ---- setup ------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static lkv_status_t alloc_f32(bench_t *b, size_t n, float **p)
{
    void *mem;
    LKV_CHECK(LKV_KERN_CALL(b->be, mem_alloc, n * sizeof(float), &mem));
    *p = mem;
    return LKV_OK;
}

/* A (rows, cols) f32 weight with values offset +- scale. */
static lkv_status_t make_weight(bench_t *b, size_t rows, size_t cols,
                                float scale, float offset, void **p)
{
    size_t n    = rows * cols;
    float *host = malloc(n * sizeof(float));
    if (host == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rng_next(&b->o.seed) >> 11) / 9007199254740992.0;
        host[i]  = offset + scale * (float)(2.0 * u - 1.0);
    }
    lkv_status_t st = LKV_KERN_CALL(b->be, mem_alloc, n * sizeof(float), p);
    if (st == LKV_OK) {
        st = LKV_KERN_CALL(b->be, mem_upload, *p, host, n * sizeof(float));
    }
    free(host);
    return st;
}

static lkv_status_t upload_i32(bench_t *b, const int32_t *host, size_t n,
                               int32_t **p)
{
    void *mem;
    LKV_CHECK(LKV_KERN_CALL(b->be, mem_alloc, n * sizeof(int32_t), &mem));
    *p = mem;
    return LKV_KERN_CALL(b->be, mem_upload, mem, host, n * sizeof(int32_t));
}

static void bench_free(bench_t *b)
{
    lkv_kv_mover_destroy(&b->mover);
    lkv_kv_pool_destroy(&b->pool);
    lkv_fwd_destroy(&b->fwd);
    lkv_model_destroy(&b->model);
    lkv_model_file_close(&b->mf);
    free(b->h_tokens);
    if (b->be != NULL) {
        void *bufs[] = {b->w_attn_norm, b->w_ffn_norm, b->wq,     b->wk,
                        b->wv,          b->wo,         b->w_gate, b->w_up,
                        b->w_down,      b->inv_freq,   b->x,      b->xn,
                        b->q,           b->k,          b->v,      b->att,
                        b->tmp,         b->gate,       b->up,     b->d_pos,
                        b->d_slots,     b->d_qstart,   b->d_ctxlen,
                        b->d_tables};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
            if (bufs[i] != NULL) {
                b->be->ops->mem_free(b->be, bufs[i]);
            }
        }
        if (b->layer_done != NULL) {
            b->be->ops->event_destroy(b->be, b->layer_done);
        }
        lkv_kern_backend_close(&b->be);
    }
    free(b->h_tables);
    free(b->h_host_dst);
    memset(b, 0, sizeof(*b));
}

/* Pools, mover and block tables: every layer has its own device blocks;
 * offloaded layers get host blocks. Block order is shuffled unless
 * --contiguous. Needs b->g, b->nbl. */
static lkv_status_t setup_pools(bench_t *b)
{
    const opts_t *o = &b->o;
    lkv_status_t  st = LKV_OK;
    int           L = o->layers, K = o->offload;
    lkv_kv_pool_config_t pc = {.block_bytes     = b->g.block_bytes,
                               .n_device_blocks = L * b->nbl,
                               .n_host_blocks   = K > 0 ? K * b->nbl : 0};
    LKV_CHECK(lkv_kv_pool_create(b->be, &pc, NULL, &b->pool));
    lkv_kv_mover_config_t mvc = lkv_kv_mover_config_default();
    mvc.max_inflight          = L + 1;
    mvc.max_blocks            = b->nbl;
    LKV_CHECK(lkv_kv_mover_create(b->pool, &mvc, &b->mover));
    /* fill the device pool so copies move real bytes (the context's KV) */
    LKV_CHECK(LKV_KERN_CALL(b->be, sync, LKV_KERN_QUEUE_COMPUTE));
    if (b->be->ops->mem_upload != NULL) {
        size_t   chunk = b->g.block_bytes;
        uint8_t *h     = malloc(chunk);
        if (h == NULL) {
            return LKV_ERR_NOMEM;
        }
        for (size_t i = 0; i < chunk; i++) {
            h[i] = (uint8_t)(i * 31 + 7) & 0x3f; /* small finite floats */
        }
        for (int i = 0; i < pc.n_device_blocks && st == LKV_OK; i++) {
            st = LKV_KERN_CALL(b->be, mem_upload,
                               lkv_kv_pool_block_addr(b->pool,
                                                      LKV_KV_TIER_DEVICE, i),
                               h, chunk);
        }
        free(h);
        LKV_CHECK(st);
    }
    int n_dev     = pc.n_device_blocks;
    b->h_tables  = malloc((size_t)n_dev * sizeof(int32_t));
    b->h_host_dst = malloc((size_t)(pc.n_host_blocks + 1) * sizeof(int32_t));
    if (b->h_tables == NULL || b->h_host_dst == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < n_dev; i++) {
        b->h_tables[i] = i;
    }
    for (int i = 0; i < pc.n_host_blocks; i++) {
        b->h_host_dst[i] = i;
    }
    if (!o->contiguous) {
        uint64_t s = 99;
        for (int i = n_dev - 1; i > 0; i--) {
            int     j      = (int)(rng_next(&s) % (uint64_t)(i + 1));
            int32_t t      = b->h_tables[i];
            b->h_tables[i] = b->h_tables[j];
            b->h_tables[j] = t;
        }
        for (int i = pc.n_host_blocks - 1; i > 0; i--) {
            int     j        = (int)(rng_next(&s) % (uint64_t)(i + 1));
            int32_t t        = b->h_host_dst[i];
            b->h_host_dst[i] = b->h_host_dst[j];
            b->h_host_dst[j] = t;
        }
    }
    return LKV_OK;
}

static lkv_status_t fwd_table(void *ctx, int seq_idx, int layer,
                              const int32_t **blocks_p, int *n_blocks_p);
static lkv_status_t fwd_kv_done(void *ctx, int layer);

/* --model: open the model, place it on the backend, create the forward pass;
 * the layer count and shape come from the model. */
static lkv_status_t setup_model(bench_t *b, int ctx)
{
    opts_t      *o = &b->o;
    lkv_status_t st;

    st = lkv_model_file_open(o->model, NULL, &b->mf);
    if (st < 0) {
        fprintf(stderr, "bench-overlap: cannot open model '%s': %s\n",
                o->model, lkv_status_str(st));
        return st;
    }
    const lkv_model_config_t *mc = lkv_model_file_config(b->mf);
    o->layers   = mc->n_layers;
    o->dim      = mc->dim;
    o->hidden   = mc->hidden_dim;
    o->heads    = mc->n_heads;
    o->kv_heads = mc->n_kv_heads;
    if (o->offload < 0) {
        o->offload = o->layers - 1;
    }
    if (o->offload > o->layers) {
        fprintf(stderr, "bench-overlap: --offload %d but the model has %d "
                        "layers\n",
                o->offload, o->layers);
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(lkv_kv_geometry_init(mc, o->kv_dtype, o->block_size, 1, 0,
                                   &b->g));
    b->nbl = lkv_kv_geometry_blocks_for(&b->g, (int64_t)ctx + o->tokens);
    LKV_CHECK(lkv_model_create(b->be, b->mf, &b->model));
    lkv_fwd_config_t fc   = lkv_fwd_config_default();
    fc.max_batch_tokens   = o->tokens;
    fc.max_seqs           = 1;
    fc.max_logit_rows     = 1;
    fc.max_blocks_per_seq = b->nbl;
    fc.block_size         = o->block_size;
    fc.kv_dtype           = o->kv_dtype;
    LKV_CHECK(lkv_fwd_create(b->model, &fc, &b->fwd));
    LKV_CHECK(setup_pools(b));
    LKV_CHECK(LKV_KERN_CALL(b->be, event_create, &b->layer_done));
    b->h_tokens = malloc((size_t)o->tokens * sizeof(int32_t));
    if (b->h_tokens == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < o->tokens; i++) {
        b->h_tokens[i] =
            (int32_t)(rng_next(&o->seed) % (uint64_t)mc->vocab_size);
    }
    (void)st;
    return LKV_OK;
}

/* Weights, activations, pools and tables for a context of ctx tokens. */
static lkv_status_t bench_setup(bench_t *b, int ctx)
{
    b->ctx = ctx;
    const opts_t *o = &b->o;
    lkv_status_t  st;
    int           T = o->tokens, D = o->dim, F = o->hidden;
    int           hd = D / o->heads, kvd = o->kv_heads * hd;

    b->head_dim = hd;
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = o->threads;
    kc.link_gbps         = o->link_gbps;
    kc.link_latency_us   = o->link_latency_us;
    st = lkv_kern_backend_open(o->backend, &kc, &b->be);
    if (st < 0) {
        fprintf(stderr, "bench-overlap: cannot open backend '%s' (have: %s): "
                        "%s\n",
                o->backend, lkv_kern_backend_list(), lkv_status_str(st));
        return st;
    }
    if (o->model != NULL) {
        return setup_model(b, ctx);
    }
    lkv_model_config_t mc;
    memset(&mc, 0, sizeof(mc));
    mc.n_layers   = o->layers;
    mc.n_heads    = o->heads;
    mc.n_kv_heads = o->kv_heads;
    mc.head_dim   = hd;
    mc.dim        = D;
    LKV_CHECK(lkv_kv_geometry_init(&mc, o->kv_dtype, o->block_size, 1, 0,
                                   &b->g));
    int n_tok = ctx + T;
    b->nbl    = lkv_kv_geometry_blocks_for(&b->g, n_tok);

    LKV_CHECK(make_weight(b, 1, D, 0.1f, 1.0f, &b->w_attn_norm));
    LKV_CHECK(make_weight(b, 1, D, 0.1f, 1.0f, &b->w_ffn_norm));
    float ws = 1.0f / sqrtf((float)D);
    LKV_CHECK(make_weight(b, D, D, ws, 0, &b->wq));
    LKV_CHECK(make_weight(b, kvd, D, ws, 0, &b->wk));
    LKV_CHECK(make_weight(b, kvd, D, ws, 0, &b->wv));
    LKV_CHECK(make_weight(b, D, D, ws, 0, &b->wo));
    LKV_CHECK(make_weight(b, F, D, ws, 0, &b->w_gate));
    LKV_CHECK(make_weight(b, F, D, ws, 0, &b->w_up));
    LKV_CHECK(make_weight(b, D, F, 1.0f / sqrtf((float)F), 0, &b->w_down));

    float *inv = malloc((size_t)(hd / 2) * sizeof(float));
    if (inv == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < hd / 2; i++) {
        inv[i] = powf(10000.0f, -2.0f * (float)i / (float)hd);
    }
    st = alloc_f32(b, (size_t)hd / 2, &b->inv_freq);
    if (st == LKV_OK) {
        st = LKV_KERN_CALL(b->be, mem_upload, b->inv_freq, inv,
                           (size_t)(hd / 2) * sizeof(float));
    }
    free(inv);
    LKV_CHECK(st);

    LKV_CHECK(alloc_f32(b, (size_t)T * D, &b->x));
    LKV_CHECK(alloc_f32(b, (size_t)T * D, &b->xn));
    LKV_CHECK(alloc_f32(b, (size_t)T * D, &b->q));
    LKV_CHECK(alloc_f32(b, (size_t)T * kvd, &b->k));
    LKV_CHECK(alloc_f32(b, (size_t)T * kvd, &b->v));
    LKV_CHECK(alloc_f32(b, (size_t)T * D, &b->att));
    LKV_CHECK(alloc_f32(b, (size_t)T * D, &b->tmp));
    LKV_CHECK(alloc_f32(b, (size_t)T * F, &b->gate));
    LKV_CHECK(alloc_f32(b, (size_t)T * F, &b->up));

    LKV_CHECK(setup_pools(b));
    int L     = o->layers;
    int n_dev = L * b->nbl;
    LKV_CHECK(upload_i32(b, b->h_tables, (size_t)n_dev, &b->d_tables));
    int32_t *pos = malloc((size_t)T * sizeof(int32_t));
    int32_t  qs[2] = {0, T}, cl[1] = {n_tok};
    if (pos == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int i = 0; i < T; i++) {
        pos[i] = ctx + i;
    }
    st = upload_i32(b, pos, (size_t)T, &b->d_pos);
    free(pos);
    LKV_CHECK(st);
    LKV_CHECK(upload_i32(b, qs, 2, &b->d_qstart));
    LKV_CHECK(upload_i32(b, cl, 1, &b->d_ctxlen));
    void *slots;
    LKV_CHECK(LKV_KERN_CALL(b->be, mem_alloc,
                            (size_t)T * (size_t)L * sizeof(int32_t), &slots));
    b->d_slots = slots;
    int32_t *hs = malloc((size_t)T * (size_t)L * sizeof(int32_t));
    if (hs == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < T; i++) {
            int p = ctx + i;
            hs[l * T + i] =
                b->h_tables[l * b->nbl + p / o->block_size] * o->block_size +
                p % o->block_size;
        }
    }
    st = LKV_KERN_CALL(b->be, mem_upload, b->d_slots, hs,
                       (size_t)T * (size_t)L * sizeof(int32_t));
    free(hs);
    LKV_CHECK(st);
    LKV_CHECK(LKV_KERN_CALL(b->be, event_create, &b->layer_done));
    /* x = small random input */
    float *hx = malloc((size_t)T * (size_t)D * sizeof(float));
    if (hx == NULL) {
        return LKV_ERR_NOMEM;
    }
    for (size_t i = 0; i < (size_t)T * (size_t)D; i++) {
        hx[i] = (float)((int)(rng_next(&b->o.seed) % 2001) - 1000) / 1000.0f;
    }
    st = LKV_KERN_CALL(b->be, mem_upload, b->x, hx,
                       (size_t)T * (size_t)D * sizeof(float));
    free(hx);
    return st;
}

/* ---- the step --------------------------------------------------------------- */

#define WDT LKV_DTYPE_F32 /* weight dtype */

#define K_(call_)                                                              \
    do {                                                                       \
        lkv_status_t st_ = (call_);                                            \
        if (st_ < 0) {                                                         \
            return st_;                                                        \
        }                                                                      \
    } while (0)

static lkv_status_t compute_layer(bench_t *b, int l)
{
    lkv_kern_backend_t *be = b->be;
    const opts_t       *o  = &b->o;
    int T = o->tokens, D = o->dim, F = o->hidden, hd = b->head_dim;
    int kvd = o->kv_heads * hd;
    void *pool = lkv_kv_pool_base(b->pool, LKV_KV_TIER_DEVICE);

    K_(LKV_KERN_CALL(be, rmsnorm, b->xn, b->x, b->w_attn_norm, WDT,
                     T, D, 1e-5f));
    K_(LKV_KERN_CALL(be, matmul, b->q, b->xn, b->wq, WDT, NULL, T,
                     D, D));
    K_(LKV_KERN_CALL(be, matmul, b->k, b->xn, b->wk, WDT, NULL, T,
                     D, kvd));
    K_(LKV_KERN_CALL(be, matmul, b->v, b->xn, b->wv, WDT, NULL, T,
                     D, kvd));
    K_(LKV_KERN_CALL(be, rope, b->q, b->d_pos, T, o->heads, hd, hd,
                     LKV_ROPE_HALVES, b->inv_freq));
    K_(LKV_KERN_CALL(be, rope, b->k, b->d_pos, T, o->kv_heads, hd, hd,
                     LKV_ROPE_HALVES, b->inv_freq));
    K_(LKV_KERN_CALL(be, kv_write, pool, o->kv_dtype, b->d_slots + l * T, b->k,
                     b->v, T, o->kv_heads, hd, o->block_size));
    lkv_kern_attn_t a = {
        .n_seqs      = 1,
        .q_start     = b->d_qstart,
        .ctx_len     = b->d_ctxlen,
        .block_table = b->d_tables + (size_t)l * (size_t)b->nbl,
        .bt_stride   = b->nbl,
        .n_heads     = o->heads,
        .n_kv_heads  = o->kv_heads,
        .head_dim    = hd,
        .block_size  = o->block_size,
        .scale       = 1.0f / sqrtf((float)hd),
    };
    K_(LKV_KERN_CALL(be, attention, b->att, b->q, pool, o->kv_dtype, &a));
    K_(LKV_KERN_CALL(be, matmul, b->tmp, b->att, b->wo, WDT, NULL, T,
                     D, D));
    K_(LKV_KERN_CALL(be, add, b->x, b->x, b->tmp, (size_t)T * (size_t)D));
    K_(LKV_KERN_CALL(be, rmsnorm, b->xn, b->x, b->w_ffn_norm, WDT,
                     T, D, 1e-5f));
    K_(LKV_KERN_CALL(be, matmul, b->gate, b->xn, b->w_gate, WDT,
                     NULL, T, D, F));
    K_(LKV_KERN_CALL(be, matmul, b->up, b->xn, b->w_up, WDT, NULL,
                     T, D, F));
    K_(LKV_KERN_CALL(be, swiglu, b->gate, b->gate, b->up,
                     (size_t)T * (size_t)F));
    K_(LKV_KERN_CALL(be, matmul, b->tmp, b->gate, b->w_down, WDT,
                     NULL, T, F, D));
    K_(LKV_KERN_CALL(be, add, b->x, b->x, b->tmp, (size_t)T * (size_t)D));
    return LKV_OK;
}

/* Offload layer l (its whole table) to its host blocks. */
static lkv_status_t offload_layer(bench_t *b, int l, lkv_kern_event_t *after)
{
    lkv_kv_mover_req_t req = {
        .tag      = (uint64_t)l,
        .src_tier = LKV_KV_TIER_DEVICE,
        .dst_tier = LKV_KV_TIER_HOST,
        .n_blocks = b->nbl,
        .src      = b->h_tables + (size_t)l * (size_t)b->nbl,
        .dst      = b->h_host_dst + (size_t)l * (size_t)b->nbl,
        .after    = after,
    };
    return lkv_kv_mover_submit(b->mover, &req, NULL);
}

static lkv_status_t fwd_table(void *ctx, int seq_idx, int layer,
                              const int32_t **blocks_p, int *n_blocks_p)
{
    bench_t *b  = ctx;
    *blocks_p   = b->h_tables + (size_t)layer * (size_t)b->nbl;
    *n_blocks_p = b->nbl;
    return LKV_OK;
}

/* The forward pass calls this once layer l's K/V are written: queue its
 * offload behind an event on the compute queue, as the step executor does. */
static lkv_status_t fwd_kv_done(void *ctx, int layer)
{
    bench_t *b = ctx;
    if (b->mode != 2 || layer >= b->o.offload) {
        return LKV_OK;
    }
    K_(LKV_KERN_CALL(b->be, event_record, b->layer_done,
                     LKV_KERN_QUEUE_COMPUTE));
    return offload_layer(b, layer, b->layer_done);
}

static lkv_status_t drain(bench_t *b)
{
    lkv_kv_mover_done_t done[64];
    int                 n;
    while (lkv_kv_mover_inflight(b->mover) > 0) {
        K_(LKV_KERN_CALL(b->be, sync, LKV_KERN_QUEUE_D2H));
        K_(lkv_kv_mover_poll(b->mover, done, 64, &n));
        for (int i = 0; i < n; i++) {
            if (done[i].status < 0) {
                return done[i].status;
            }
        }
    }
    return LKV_OK;
}

/* mode 0: compute only; 1: copies only; 2: overlapped step. Seconds. */
static lkv_status_t run_once(bench_t *b, int mode, double *secs_p)
{
    const opts_t *o  = &b->o;
    int64_t       t0 = lkv_now_ns();
    if (mode == 1) {
        for (int l = 0; l < o->offload; l++) {
            K_(offload_layer(b, l, NULL));
        }
    } else if (b->fwd != NULL) {
        lkv_fwd_seq_t   seq   = {.n_tokens = o->tokens,
                                 .tokens   = b->h_tokens,
                                 .pos0     = b->ctx,
                                 .n_logits = 1};
        lkv_fwd_batch_t batch = {
            .n_seqs  = 1,
            .seqs    = &seq,
            .kv_pool = lkv_kv_pool_base(b->pool, LKV_KV_TIER_DEVICE),
            .table   = fwd_table,
            .kv_done = fwd_kv_done,
            .ctx     = b,
        };
        int n_rows;
        b->mode = mode;
        K_(lkv_fwd_run(b->fwd, &batch, &n_rows));
        K_(LKV_KERN_CALL(b->be, sync, LKV_KERN_QUEUE_COMPUTE));
    } else {
        for (int l = 0; l < o->layers; l++) {
            K_(compute_layer(b, l));
            if (mode == 2 && l < o->offload) {
                /* layer l's KV is final: copy it while l+1 computes */
                K_(LKV_KERN_CALL(b->be, event_record, b->layer_done,
                                 LKV_KERN_QUEUE_COMPUTE));
                K_(offload_layer(b, l, b->layer_done));
            }
        }
        K_(LKV_KERN_CALL(b->be, sync, LKV_KERN_QUEUE_COMPUTE));
    }
    K_(drain(b));
    *secs_p = (double)(lkv_now_ns() - t0) / 1e9;
    return LKV_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Median seconds of each mode in `modes`, runs interleaved (c, x, s, c, x,
 * s, ...) so that all three see the same machine load. */
static lkv_status_t measure(bench_t *b, const int *modes, int n_modes,
                            double *med, double *best, double *ratio_p)
{
    double v[3][MAX_REPS], ratio[MAX_REPS];
    double warm;
    for (int i = 0; i < n_modes; i++) {
        K_(run_once(b, modes[i], &warm));
    }
    for (int r = 0; r < b->o.reps; r++) {
        for (int i = 0; i < n_modes; i++) {
            K_(run_once(b, modes[i], &v[i][r]));
        }
        if (n_modes == 3) {
            /* the runs of one round saw the same machine load */
            double mx = v[0][r] > v[1][r] ? v[0][r] : v[1][r];
            ratio[r]  = mx > 0 ? v[2][r] / mx : 0;
        }
    }
    if (ratio_p != NULL) {
        *ratio_p = n_modes == 3 ? median(ratio, b->o.reps) : 1.0;
    }
    for (int i = 0; i < n_modes; i++) {
        med[i] = median(v[i], b->o.reps);
        if (best != NULL) {
            best[i] = v[i][0]; /* sorted by median() */
        }
    }
    return LKV_OK;
}

int lkv_cmd_bench_overlap(int argc, char **argv)
{
    bench_t b;
    memset(&b, 0, sizeof(b));
    int rc = parse_opts(argc, argv, &b.o);
    if (rc != 0) {
        return rc == 1 ? 0 : 2;
    }
    opts_t       o = b.o;
    lkv_status_t st;
    bool         cpu  = strcmp(o.backend, "cpu") == 0;
    bool         autol = o.link_gbps < 0;

    if (autol) {
        if (!cpu) {
            fprintf(stderr, "bench-overlap: --link-gbps auto needs the cpu "
                            "backend; give --link-gbps X\n");
            return 2;
        }
        /* calibrate: time the compute alone, then cap the link so that the
         * copies of the step take as long as its compute (copy == compute
         * is the hardest case for overlap) */
        double tc   = 0;
        int    mode = 0;
        b.o.link_gbps = 0;
        st            = bench_setup(&b, o.ctx);
        if (st == LKV_OK) {
            st = measure(&b, &mode, 1, &tc, NULL, NULL);
        }
        double bytes = (double)b.o.offload * (double)b.nbl *
                       (double)b.g.block_bytes;
        bench_free(&b);
        if (st < 0) {
            fprintf(stderr, "bench-overlap: calibration failed: %s\n",
                    lkv_status_str(st));
            return 1;
        }
        o.link_gbps = tc > 0 ? bytes / tc / 1e9 : 1.0;
    }
    b.o = o;
    st  = bench_setup(&b, o.ctx);
    if (st < 0) {
        fprintf(stderr, "bench-overlap: setup failed: %s\n",
                lkv_status_str(st));
        bench_free(&b);
        return 1;
    }
    o = b.o; /* with --model the shape came from the model */
    if (o.offload == 0 && autol) {
        fprintf(stderr, "bench-overlap: --link-gbps auto needs --offload > "
                        "0\n");
        bench_free(&b);
        return 2;
    }
    const char *emu = o.link_gbps > 0 && cpu ? " [link emulation]" : "";
    double layer_mib = (double)b.nbl * (double)b.g.block_bytes / (1 << 20);
    printf("bench-overlap: backend %s, %d compute threads, copy queues %s%s\n",
           o.backend, o.threads,
           o.link_gbps > 0 && cpu ? "capped" : "uncapped", emu);
    if (o.link_gbps > 0 && cpu) {
        printf("  link: %.4f GB/s per direction%s, %.1f us latency per "
               "copy%s\n",
               o.link_gbps,
               autol ? " (auto: copy-only time = compute-only time)" : "",
               o.link_latency_us, emu);
    }
    if (o.model != NULL) {
        printf("  step: the worker's forward pass over %s (%s; %d layers, "
               "dim %d, hidden %d, heads %d/%d), %d new tokens after %d "
               "context tokens\n",
               o.model, lkv_model_file_format(b.mf), o.layers, o.dim,
               o.hidden, o.heads, o.kv_heads, o.tokens, o.ctx);
    } else {
        printf("  step: %d layers (dim %d, hidden %d, heads %d/%d, f32 "
               "weights), %d new tokens after %d context tokens\n",
               o.layers, o.dim, o.hidden, o.heads, o.kv_heads, o.tokens,
               o.ctx);
    }
    printf("  offload: %d of %d layers right after each is computed, %d "
           "blocks x %zu B = %.3f MiB per layer (%s kv, %s blocks)\n",
           o.offload, o.layers, b.nbl, b.g.block_bytes, layer_mib,
           lkv_dtype_name(o.kv_dtype),
           o.contiguous ? "contiguous" : "shuffled");
    double med[3] = {0, 0, 0}, best[3] = {0, 0, 0}, ratio = 1.0;
    int    modes[3] = {0, 1, 2};
    st = measure(&b, modes, o.offload > 0 ? 3 : 1, med, best, &ratio);
    if (st < 0) {
        fprintf(stderr, "bench-overlap: run failed: %s\n", lkv_status_str(st));
        bench_free(&b);
        return 1;
    }
    if (o.offload == 0) {
        med[2]  = med[0];
        best[2] = best[0];
    }
    double tc = med[0], tx = med[1], ts = med[2];
    double mx    = tc > tx ? tc : tx;
    double bytes = (double)o.offload * layer_mib * (1 << 20);
    double bmx = best[0] > best[1] ? best[0] : best[1];
    printf("  median of %d rounds of (compute, copy, overlapped) runs, best "
           "run in brackets:\n",
           o.reps);
    printf("  compute only:   %9.2f ms  [%9.2f]\n", tc * 1e3, best[0] * 1e3);
    printf("  copy only:      %9.2f ms  [%9.2f]  (%.4f GB/s achieved)%s\n",
           tx * 1e3, best[1] * 1e3, tx > 0 ? bytes / tx / 1e9 : 0.0, emu);
    printf("  overlapped:     %9.2f ms  [%9.2f]  (compute + copy = %.2f "
           "ms)%s\n",
           ts * 1e3, best[2] * 1e3, (tc + tx) * 1e3, emu);
    printf("  step / max(compute, copy) = %.3f (median over rounds) [best "
           "runs %.3f]  (target <= 1.15; without overlap %.3f)%s\n",
           ratio, bmx > 0 ? best[2] / bmx : 0.0, (tc + tx) / mx, emu);
    bench_free(&b);
    if (o.max_ratio > 0 && ratio > o.max_ratio) {
        fprintf(stderr, "bench-overlap: ratio %.3f above --max-ratio %.3f\n",
                ratio, o.max_ratio);
        return 1;
    }
    return 0;
}
