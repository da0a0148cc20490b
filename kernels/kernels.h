/* kernels.h - the compute backend interface: one const ops table per backend.
 *
 * worker/ and kvstore/ reach every kernel through this table; the backend is
 * chosen once at start-up (lkv_kern_backend_open) and there is no `if (cuda)`
 * in the hot path. A NULL slot means "unsupported" and the inline dispatchers
 * below return LKV_ERR_UNSUPPORTED. The CPU backend (kernels/cpu/) is the
 * reference every other backend is tested against.
 *
 * Conventions for every op:
 *  - Activations are f32, row-major. Weights are row-major (out, in) in the
 *    tensor's dtype (f32, f16 or bf16) with f32 accumulation.
 *  - Every pointer argument is backend memory (from mem_alloc, or a weight
 *    uploaded with mem_upload) unless the comment says "host".
 *  - Ops are queued on the backend's compute queue and may complete
 *    asynchronously; sync() waits for the compute queue. On the CPU backend
 *    compute ops complete before returning.
 *  - Copy queues (LKV_KERN_QUEUE_D2H / _H2D) run concurrently with compute;
 *    ordering across queues is expressed only with events.
 *
 * Threading: a backend handle belongs to one thread (the worker's step
 * thread), except that copy_async/event_* may also be called by the kvstore
 * mover, which the caller serialises with its own lock.
 */
#ifndef LKV_KERNELS_KERNELS_H
#define LKV_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LKV_DTYPE_F32  = 0,
    LKV_DTYPE_F16  = 1,
    LKV_DTYPE_BF16 = 2,
} lkv_dtype_t;

/* Bytes per element of dtype (4, 2, 2). */
size_t      lkv_dtype_size(lkv_dtype_t dtype);
const char *lkv_dtype_name(lkv_dtype_t dtype);

/* f32 <-> f16/bf16 conversions on the host (round to nearest even). */
float    lkv_f16_to_f32(uint16_t h);
uint16_t lkv_f32_to_f16(float f);
float    lkv_bf16_to_f32(uint16_t h);
uint16_t lkv_f32_to_bf16(float f);

typedef enum {
    LKV_ROPE_ADJACENT = 0, /* rotate pairs (2i, 2i+1): llama2.c, GGUF llama */
    LKV_ROPE_HALVES   = 1, /* rotate (i, i + d/2): HF rotate_half, NeoX, qwen2 */
} lkv_rope_style_t;

typedef enum {
    LKV_KERN_QUEUE_COMPUTE = 0,
    LKV_KERN_QUEUE_D2H     = 1, /* device -> host copies (offload) */
    LKV_KERN_QUEUE_H2D     = 2, /* host -> device copies (reload, prefetch) */
    LKV_KERN_QUEUE_COUNT   = 3,
} lkv_kern_queue_t;

typedef enum {
    LKV_KERN_COPY_H2D = 0, /* host (host_alloc) -> device (mem_alloc) */
    LKV_KERN_COPY_D2H = 1,
    LKV_KERN_COPY_D2D = 2,
    LKV_KERN_COPY_H2H = 3,
} lkv_kern_copy_kind_t;

/* Per-sequence sampling parameters (host memory). temperature <= 0 means
 * greedy (argmax, lowest id wins ties). top_k <= 0 disables top-k; top_p >= 1
 * disables top-p. The random stream is a per-sequence 64-bit state seeded from
 * seed, advanced once per sampled token, so results do not depend on batching.
 * The caller keeps the state: a new sequence starts with rng_state = seed, and
 * the state advances for greedy rows too (CPU: splitmix64). */
typedef struct {
    float    temperature;
    int32_t  top_k;
    float    top_p;
    uint64_t seed;
} lkv_sample_params_t;

/* Paged attention over one layer's block tables.
 *
 * The queries of sequence s are rows q_start[s] .. q_start[s+1]-1 of q. The
 * last query of s sits at position ctx_len[s]-1; query i of n_q sits at
 * ctx_len[s] - n_q + i and attends keys at positions 0..its own (causal).
 * Key position p of s lives in block block_table[s*bt_stride + p/block_size]
 * at offset p % block_size. The K/V of the queries themselves must already be
 * written (kv_write) before attention runs.
 *
 * KV pool layout: block b starts at element b * 2*block_size*n_kv_heads*
 * head_dim; K is (block_size, n_kv_heads, head_dim), V follows with the same
 * shape. Query head h uses KV head h / (n_heads / n_kv_heads). */
typedef struct {
    int            n_seqs;
    const int32_t *q_start;     /* (n_seqs + 1) */
    const int32_t *ctx_len;     /* (n_seqs) */
    const int32_t *block_table; /* (n_seqs, bt_stride) block indices */
    int            bt_stride;
    int            n_heads;
    int            n_kv_heads;
    int            head_dim;
    int            block_size;
    float          scale; /* usually 1/sqrt(head_dim) */
} lkv_kern_attn_t;

typedef struct lkv_kern_backend lkv_kern_backend_t;
typedef struct lkv_kern_event   lkv_kern_event_t; /* opaque, per backend */

typedef struct {
    int    n_threads;       /* CPU threads for compute; 0 = all online CPUs */
    int    device;          /* GPU ordinal for device backends */
    double link_gbps;       /* CPU backend: cap on copy-queue bandwidth in
                               GB/s to emulate a PCIe link; 0 = no cap */
    double link_latency_us; /* CPU backend: per-copy latency added with the cap */
} lkv_kern_config_t;

lkv_kern_config_t lkv_kern_config_default(void);

typedef struct lkv_kern_ops {
    const char *name;

    lkv_status_t (*open)(lkv_kern_backend_t *be, const lkv_kern_config_t *cfg);
    void (*close)(lkv_kern_backend_t *be);

    /* memory: device (mem_*) and host-visible staging (host_*: pinned on CUDA) */
    lkv_status_t (*mem_alloc)(lkv_kern_backend_t *be, size_t bytes, void **p);
    void (*mem_free)(lkv_kern_backend_t *be, void *p);
    lkv_status_t (*host_alloc)(lkv_kern_backend_t *be, size_t bytes, void **p);
    void (*host_free)(lkv_kern_backend_t *be, void *p);
    /* synchronous copies from/to ordinary host memory (weights, metadata) */
    lkv_status_t (*mem_upload)(lkv_kern_backend_t *be, void *dst,
                               const void *host_src, size_t bytes);
    lkv_status_t (*mem_download)(lkv_kern_backend_t *be, void *host_dst,
                                 const void *src, size_t bytes);

    /* asynchronous copies on a queue, ordered with events */
    lkv_status_t (*copy_async)(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                               lkv_kern_copy_kind_t kind, void *dst,
                               const void *src, size_t bytes);
    lkv_status_t (*event_create)(lkv_kern_backend_t *be, lkv_kern_event_t **e);
    void (*event_destroy)(lkv_kern_backend_t *be, lkv_kern_event_t *e);
    /* mark the point after all work queued so far on q */
    lkv_status_t (*event_record)(lkv_kern_backend_t *be, lkv_kern_event_t *e,
                                 lkv_kern_queue_t q);
    /* make later work on q wait for e (does not block the host) */
    lkv_status_t (*queue_wait)(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                               lkv_kern_event_t *e);
    /* host blocks until e completed */
    lkv_status_t (*event_sync)(lkv_kern_backend_t *be, lkv_kern_event_t *e);
    /* LKV_OK if e completed, LKV_AGAIN if not */
    lkv_status_t (*event_query)(lkv_kern_backend_t *be, lkv_kern_event_t *e);
    /* host blocks until everything queued on q is done */
    lkv_status_t (*sync)(lkv_kern_backend_t *be, lkv_kern_queue_t q);

    /* out (n, dim) = table[ids[i]] ; table (vocab, dim) in dtype */
    lkv_status_t (*embedding)(lkv_kern_backend_t *be, float *out,
                              const void *table, lkv_dtype_t dtype,
                              const int32_t *ids, int n, int dim);
    /* y (n, dim) = x * w / sqrt(mean(x^2) + eps); w (dim) in dtype; y may == x */
    lkv_status_t (*rmsnorm)(lkv_kern_backend_t *be, float *y, const float *x,
                            const void *w, lkv_dtype_t dtype, int n, int dim,
                            float eps);
    /* y (n_elems) = a + b; y may alias a or b */
    lkv_status_t (*add)(lkv_kern_backend_t *be, float *y, const float *a,
                        const float *b, size_t n_elems);
    /* y (n, out) = x (n, in) . W^T + bias; W (out, in) in dtype; bias (out) f32
     * or NULL. y must not alias x. */
    lkv_status_t (*matmul)(lkv_kern_backend_t *be, float *y, const float *x,
                           const void *w, lkv_dtype_t dtype, const float *bias,
                           int n, int in, int out);
    /* rotate x (n, n_heads, head_dim) in place for positions pos (n); the
     * first rot_dim dims of each head rotate with inv_freq (rot_dim / 2) */
    lkv_status_t (*rope)(lkv_kern_backend_t *be, float *x, const int32_t *pos,
                         int n, int n_heads, int head_dim, int rot_dim,
                         lkv_rope_style_t style, const float *inv_freq);
    /* write k, v (n, n_kv_heads*head_dim) into the pool at slots[i] =
     * block*block_size + offset (slot < 0: skip the token) */
    lkv_status_t (*kv_write)(lkv_kern_backend_t *be, void *kv_pool,
                             lkv_dtype_t kv_dtype, const int32_t *slots,
                             const float *k, const float *v, int n,
                             int n_kv_heads, int head_dim, int block_size);
    /* out (n_tokens, n_heads*head_dim) = softmax(q k^T * scale) v */
    lkv_status_t (*attention)(lkv_kern_backend_t *be, float *out,
                              const float *q, const void *kv_pool,
                              lkv_dtype_t kv_dtype, const lkv_kern_attn_t *a);
    /* out (n_elems) = silu(gate) * up; out may alias gate */
    lkv_status_t (*swiglu)(lkv_kern_backend_t *be, float *out,
                           const float *gate, const float *up, size_t n_elems);
    /* dst (n, width) = src[idx[i]] rows */
    lkv_status_t (*gather_rows)(lkv_kern_backend_t *be, float *dst,
                                const float *src, const int32_t *idx, int n,
                                int width);
    /* tokens (n, host) sampled from logits (n, vocab); params and rng_state
     * (n) are host memory; rng_state[i] advances when sequence i samples */
    lkv_status_t (*sample)(lkv_kern_backend_t *be, int32_t *tokens,
                           const float *logits, int n, int vocab,
                           const lkv_sample_params_t *params,
                           uint64_t *rng_state);
} lkv_kern_ops_t;

struct lkv_kern_backend {
    const lkv_kern_ops_t *ops;  /* static table, never freed */
    void                 *impl;   /* backend-private compute state */
    void                 *queues; /* backend-private copy-queue/event state
                                     (CPU: kernels/cpu/cpu_queue.c) */
    lkv_kern_config_t     cfg;    /* copy of the open config */
};

/* Backends compiled into this binary, for --help and errors: "cpu" or
 * "cpu, cuda". */
const char *lkv_kern_backend_list(void);

/* Open backend `name` ("cpu", "cuda"). LKV_ERR_NOTFOUND if not compiled in;
 * LKV_ERR_DEVICE if compiled in but no device is usable. */
lkv_status_t lkv_kern_backend_open(const char *name,
                                   const lkv_kern_config_t *cfg,
                                   lkv_kern_backend_t **be_p);
void lkv_kern_backend_close(lkv_kern_backend_t **be_p);

/* Ops tables, one per backend. */
extern const lkv_kern_ops_t lkv_kern_cpu_ops;
#ifdef LKV_HAVE_CUDA
extern const lkv_kern_ops_t lkv_kern_cuda_ops;
#endif

/* Dispatch helpers: LKV_ERR_UNSUPPORTED for a NULL slot. */
#define LKV_KERN_CALL(be_, op_, ...)                                           \
    ((be_)->ops->op_ != NULL ? (be_)->ops->op_((be_), __VA_ARGS__)             \
                             : LKV_ERR_UNSUPPORTED)

#ifdef __cplusplus
}
#endif

#endif /* LKV_KERNELS_KERNELS_H */
