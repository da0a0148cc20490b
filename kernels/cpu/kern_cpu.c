/* kern_cpu.c - the CPU backend's ops table (the reference backend): open and
 * close, memory, and the table itself. Compute ops live in cpu_*.c by family;
 * copy queues and events in cpu_queue.c.
 *
 * Threading: see kernels.h; ops run on the caller's thread plus the backend's
 * persistent compute pool (cpu_pool.c).
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/cpu_queue.h"

#define CPU_ALIGN 64
#define CPU_MAX_THREADS 1024
#define CPU_HUGE (2u << 20)
#define CPU_HUGE_MIN (4u << 20)

/* Whether OpenBLAS runs AVX-512 kernels (its DYNAMIC_ARCH core choice; an
 * unknown CPU falls back to an SSE3 "Prescott" core, slower than our own
 * kernel). LKV_CPU_GEMM=blas|own overrides. */
static int blas_is_fast(void)
{
    const char *force = getenv("LKV_CPU_GEMM");
    const char *core  = openblas_get_corename();

    if (force != NULL && strcmp(force, "blas") == 0) {
        return 1;
    }
    if (force != NULL && strcmp(force, "own") == 0) {
        return 0;
    }
    if (core == NULL) {
        return 0;
    }
    return strcasecmp(core, "skylakex") == 0 ||
           strcasecmp(core, "cooperlake") == 0 ||
           strcasecmp(core, "sapphirerapids") == 0;
}

static lkv_status_t cpu_open(lkv_kern_backend_t      *be,
                             const lkv_kern_config_t *cfg)
{
    lkv_cpu_impl_t *impl;
    lkv_status_t    st;
    int             n_threads = cfg != NULL ? cfg->n_threads : 0;

    if (n_threads < 0 || n_threads > CPU_MAX_THREADS) {
        LKV_LOG_ERROR("cpu backend: %d threads requested; use 0 (all cpus) "
                      "or 1..%d",
                      n_threads, CPU_MAX_THREADS);
        return LKV_ERR_INVALID;
    }
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads =
            n > 0 ? (int)(n < CPU_MAX_THREADS ? n : CPU_MAX_THREADS) : 1;
    }
    impl = calloc(1, sizeof(*impl));
    if (impl == NULL) {
        return LKV_ERR_NOMEM;
    }
    impl->n_threads   = n_threads;
    impl->have_avx512 = lkv_cpu_have_avx512();
    if (getenv("LKV_CPU_NO_SIMD") != NULL) {
        impl->have_avx512 = 0;
    }
    LKV_CHECK_GOTO(lkv_cpu_pool_create(n_threads, &impl->pool), st, err_pool);
    /* GEMMs are split across our own pool, one OpenBLAS thread per chunk, so
     * OpenBLAS's threads never compete with ours. */
    openblas_set_num_threads(1);
    impl->use_blas = blas_is_fast();
    be->impl       = impl;
    LKV_CHECK_GOTO(lkv_cpu_queues_open(be, cfg), st, err_queues);
    LKV_LOG_DEBUG("cpu backend: %d threads, avx512 %s, openblas core %s "
                  "(%s for prefill gemm)",
                  n_threads, impl->have_avx512 ? "yes" : "no",
                  openblas_get_corename(),
                  impl->use_blas ? "used" : "not used");
    return LKV_OK;

err_queues:
    be->impl = NULL;
    lkv_cpu_pool_destroy(&impl->pool);
err_pool:
    free(impl);
    return st;
}

static void cpu_close(lkv_kern_backend_t *be)
{
    lkv_cpu_impl_t *impl = lkv_cpu_impl(be);

    lkv_cpu_queues_close(be);
    if (impl == NULL) {
        return;
    }
    lkv_cpu_pool_destroy(&impl->pool);
    free(impl->wtile);
    free(impl->sample_cand);
    free(impl);
    be->impl = NULL;
}

static lkv_status_t cpu_alloc(size_t bytes, void **p)
{
    void  *mem;
    size_t align = CPU_ALIGN, rounded;

    if (p == NULL) {
        return LKV_ERR_INVALID;
    }
    /* big buffers (weights, KV pools) on 2 MiB boundaries, backed by
     * transparent huge pages where the kernel allows it (THP "madvise"
     * mode): decode streams all weights per token, and 4 KiB pages cost a
     * page walk every 4 KiB of each stream */
    if (bytes >= CPU_HUGE_MIN) {
        align = CPU_HUGE;
    }
    if (bytes > SIZE_MAX - align) {
        return LKV_ERR_NOMEM;
    }
    rounded = (bytes + align - 1) / align * align;
    if (rounded == 0) {
        rounded = align;
    }
    mem = aligned_alloc(align, rounded);
    if (mem == NULL) {
        LKV_LOG_ERROR("cannot allocate %zu bytes of backend memory", bytes);
        return LKV_ERR_NOMEM;
    }
#ifdef MADV_HUGEPAGE
    if (align == CPU_HUGE) {
        (void)madvise(mem, rounded, MADV_HUGEPAGE); /* a hint only */
    }
#endif
    *p = mem;
    return LKV_OK;
}

static lkv_status_t cpu_mem_alloc(lkv_kern_backend_t *be, size_t bytes,
                                  void **p)
{
    return cpu_alloc(bytes, p);
}

static void cpu_mem_free(lkv_kern_backend_t *be, void *p)
{
    free(p);
}

static lkv_status_t cpu_host_alloc(lkv_kern_backend_t *be, size_t bytes,
                                   void **p)
{
    return cpu_alloc(bytes, p);
}

static void cpu_host_free(lkv_kern_backend_t *be, void *p)
{
    free(p);
}

static lkv_status_t cpu_mem_upload(lkv_kern_backend_t *be, void *dst,
                                   const void *host_src, size_t bytes)
{
    if (bytes == 0) {
        return LKV_OK;
    }
    if (dst == NULL || host_src == NULL) {
        return LKV_ERR_INVALID;
    }
    memmove(dst, host_src, bytes);
    return LKV_OK;
}

static lkv_status_t cpu_mem_download(lkv_kern_backend_t *be, void *host_dst,
                                     const void *src, size_t bytes)
{
    if (bytes == 0) {
        return LKV_OK;
    }
    if (host_dst == NULL || src == NULL) {
        return LKV_ERR_INVALID;
    }
    memmove(host_dst, src, bytes);
    return LKV_OK;
}

const lkv_kern_ops_t lkv_kern_cpu_ops = {
    .name          = "cpu",
    .open          = cpu_open,
    .close         = cpu_close,
    .mem_alloc     = cpu_mem_alloc,
    .mem_free      = cpu_mem_free,
    .host_alloc    = cpu_host_alloc,
    .host_free     = cpu_host_free,
    .mem_upload    = cpu_mem_upload,
    .mem_download  = cpu_mem_download,
    .copy_async    = lkv_cpu_copy_async,
    .event_create  = lkv_cpu_event_create,
    .event_destroy = lkv_cpu_event_destroy,
    .event_record  = lkv_cpu_event_record,
    .queue_wait    = lkv_cpu_queue_wait,
    .event_sync    = lkv_cpu_event_sync,
    .event_query   = lkv_cpu_event_query,
    .sync          = lkv_cpu_sync,
    .embedding     = lkv_cpu_embedding,
    .rmsnorm       = lkv_cpu_rmsnorm,
    .add           = lkv_cpu_add,
    .matmul        = lkv_cpu_matmul,
    .rope          = lkv_cpu_rope,
    .kv_write      = lkv_cpu_kv_write,
    .attention     = lkv_cpu_attention,
    .swiglu        = lkv_cpu_swiglu,
    .gather_rows   = lkv_cpu_gather_rows,
    .sample        = lkv_cpu_sample,
};
