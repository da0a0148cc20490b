/* gpu_util.h - helpers shared by the GPU test and benchmark programs:
 * opening the CPU and CUDA backends (exit 77 = skip without a GPU), paired
 * buffers that live on both backends, random data and error metrics.
 * Single-threaded test code; failures print and exit.
 */
#ifndef LKV_TESTS_GPU_UTIL_H
#define LKV_TESTS_GPU_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define GPU_SKIP 77

#define GPU_OK(call_)                                                          \
    do {                                                                       \
        lkv_status_t st_ = (call_);                                            \
        if (st_ != LKV_OK) {                                                   \
            fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call_,   \
                    lkv_status_name(st_));                                     \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* Open "cuda"; exit(77) with a message when no device is usable. */
static inline lkv_kern_backend_t *gpu_open_cuda_or_skip(const char *prog)
{
    lkv_kern_backend_t *be  = NULL;
    lkv_kern_config_t   cfg = lkv_kern_config_default();
    lkv_status_t        st  = lkv_kern_backend_open("cuda", &cfg, &be);

    if (st == LKV_ERR_DEVICE || st == LKV_ERR_NOTFOUND) {
        printf("%s: SKIP (no usable CUDA device: %s)\n", prog,
               lkv_status_name(st));
        exit(GPU_SKIP);
    }
    GPU_OK(st);
    return be;
}

static inline lkv_kern_backend_t *gpu_open_cpu(void)
{
    lkv_kern_backend_t *be  = NULL;
    lkv_kern_config_t   cfg = lkv_kern_config_default();

    GPU_OK(lkv_kern_backend_open("cpu", &cfg, &be));
    return be;
}

/* a buffer on both backends */
typedef struct {
    void  *c, *g;
    size_t bytes;
} pbuf_t;

typedef struct {
    lkv_kern_backend_t *cpu, *gpu;
} pair_t;

static inline pbuf_t pb_new(pair_t *p, size_t bytes, const void *host)
{
    pbuf_t b;

    b.bytes = bytes;
    GPU_OK(LKV_KERN_CALL(p->cpu, mem_alloc, bytes, &b.c));
    GPU_OK(LKV_KERN_CALL(p->gpu, mem_alloc, bytes, &b.g));
    if (host != NULL) {
        GPU_OK(LKV_KERN_CALL(p->cpu, mem_upload, b.c, host, bytes));
        GPU_OK(LKV_KERN_CALL(p->gpu, mem_upload, b.g, host, bytes));
    }
    return b;
}

static inline void pb_put(pair_t *p, pbuf_t *b, const void *host)
{
    GPU_OK(LKV_KERN_CALL(p->cpu, mem_upload, b->c, host, b->bytes));
    GPU_OK(LKV_KERN_CALL(p->gpu, mem_upload, b->g, host, b->bytes));
}

static inline void pb_get(pair_t *p, pbuf_t *b, void *hc, void *hg)
{
    GPU_OK(LKV_KERN_CALL(p->cpu, mem_download, hc, b->c, b->bytes));
    GPU_OK(LKV_KERN_CALL(p->gpu, mem_download, hg, b->g, b->bytes));
}

static inline void pb_free(pair_t *p, pbuf_t *b)
{
    p->cpu->ops->mem_free(p->cpu, b->c);
    p->gpu->ops->mem_free(p->gpu, b->g);
    b->c = b->g = NULL;
}

static uint64_t gpu_rng_state = 0x1234567ull;

static inline uint64_t gpu_rand64(void)
{
    uint64_t z = (gpu_rng_state += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [-scale, scale) */
static inline float gpu_randf(float scale)
{
    return ((float)(gpu_rand64() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) *
           scale;
}

static inline float *gpu_rand_f32(size_t n, float scale)
{
    float *x = malloc(n * sizeof(float));

    for (size_t i = 0; i < n; i++) {
        x[i] = gpu_randf(scale);
    }
    return x;
}

/* n random values stored in dtype (host buffer, malloc'ed) */
static inline void *gpu_rand_dtype(size_t n, lkv_dtype_t dt, float scale)
{
    void *p = malloc(n * lkv_dtype_size(dt));

    for (size_t i = 0; i < n; i++) {
        float v = gpu_randf(scale);
        if (dt == LKV_DTYPE_F32) {
            ((float *)p)[i] = v;
        } else if (dt == LKV_DTYPE_F16) {
            ((uint16_t *)p)[i] = lkv_f32_to_f16(v);
        } else {
            ((uint16_t *)p)[i] = lkv_f32_to_bf16(v);
        }
    }
    return p;
}

/* max |a - b| / max(max |a|, tiny) */
static inline double gpu_rel_err(const float *ref, const float *got, size_t n)
{
    double mx = 1e-30, err = 0.0;

    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ref[i] - (double)got[i]);
        if (isnan(got[i]) != isnan(ref[i])) {
            return INFINITY;
        }
        if (d > err) {
            err = d;
        }
        if (fabs(ref[i]) > mx) {
            mx = fabs(ref[i]);
        }
    }
    return err / mx;
}

#endif /* LKV_TESTS_GPU_UTIL_H */
