/* cuda_backend.cu - CUDA backend: device selection, streams, cuBLAS handle,
 * device/pinned memory, copies on the copy streams, events, scratch.
 *
 * One compute stream plus one D2H and one H2D copy stream, all created
 * non-blocking so nothing ever serialises with the legacy default stream.
 * Copies and events may be issued from the kvstore mover thread as well as
 * the step thread (CUDA runtime calls are thread-safe; every such entry point
 * makes the backend's device current first).
 */
#define LKV_LOG_MODULE "cuda"

#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ext.h"

lkv_status_t lkv_cuda_error(cudaError_t err, const char *what,
                                       const char *file, int line)
{
    if (LKV_LOG_LEVEL_ERROR <= lkv_log_level) {
        lkv_log_emit(LKV_LOG_LEVEL_ERROR, LKV_LOG_MODULE, file, line,
                     "%s failed: %s (%s)", what, cudaGetErrorString(err),
                     cudaGetErrorName(err));
    }
    return LKV_ERR_DEVICE;
}

static const char *blas_str(cublasStatus_t st)
{
    switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "not supported";
    default:
        return "error";
    }
}

lkv_status_t lkv_cuda_blas_error(int st, const char *what)
{
    LKV_LOG_ERROR("cublas %s failed: %s (%d)", what,
                  blas_str((cublasStatus_t)st), st);
    return LKV_ERR_DEVICE;
}

extern "C" int lkv_cuda_is_backend(const lkv_kern_backend_t *be)
{
    return be != NULL && be->ops == &lkv_kern_cuda_ops && be->impl != NULL;
}

extern "C" void *lkv_cuda_stream(lkv_kern_backend_t *be, lkv_kern_queue_t q)
{
    if (!lkv_cuda_is_backend(be) || (int)q < 0 || q >= LKV_KERN_QUEUE_COUNT) {
        return NULL;
    }
    return (void *)lkv_cuda_of(be)->stream[q];
}

lkv_status_t lkv_cuda_scratch(lkv_cuda_t *cu, int slot, size_t bytes, void **p)
{
    if (cu->scratch_bytes[slot] < bytes) {
        cudaStream_t s    = cu->stream[LKV_KERN_QUEUE_COMPUTE];
        size_t       want = cu->scratch_bytes[slot] * 2;
        void        *np   = NULL;

        if (want < bytes) {
            want = bytes;
        }
        if (want < 4096) {
            want = 4096;
        }
        if (cu->scratch[slot] != NULL) {
            LKV_CUDA_TRY(cudaFreeAsync(cu->scratch[slot], s));
            cu->scratch[slot]       = NULL;
            cu->scratch_bytes[slot] = 0;
        }
        cudaError_t err = cudaMallocAsync(&np, want, s);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            LKV_LOG_ERROR("cannot allocate %zu bytes of device scratch: %s; "
                          "leave more device memory free (fewer kv blocks)",
                          want, cudaGetErrorString(err));
            return LKV_ERR_NOMEM;
        }
        cu->scratch[slot]       = np;
        cu->scratch_bytes[slot] = want;
    }
    *p = cu->scratch[slot];
    return LKV_OK;
}

lkv_status_t lkv_cuda_host_stage(lkv_cuda_t *cu, size_t bytes, void **p)
{
    if (cu->host_stage_bytes < bytes) {
        size_t want = bytes < 65536 ? 65536 : bytes * 2;
        void  *np   = NULL;

        if (cu->host_stage != NULL) {
            /* the previous user synchronised before handing it back */
            LKV_CUDA_TRY(cudaFreeHost(cu->host_stage));
            cu->host_stage       = NULL;
            cu->host_stage_bytes = 0;
        }
        LKV_CUDA_TRY(cudaHostAlloc(&np, want, cudaHostAllocDefault));
        cu->host_stage       = np;
        cu->host_stage_bytes = want;
    }
    *p = cu->host_stage;
    return LKV_OK;
}

static void destroy_impl(lkv_cuda_t *cu)
{
    if (cu->stream[LKV_KERN_QUEUE_COMPUTE] != NULL) {
        (void)cudaStreamSynchronize(cu->stream[LKV_KERN_QUEUE_COMPUTE]);
    }
    for (int i = 0; i < LKV_CUDA_SCRATCH_COUNT; i++) {
        if (cu->scratch[i] != NULL) {
            (void)cudaFree(cu->scratch[i]);
        }
    }
    if (cu->attn_cnt != NULL) {
        (void)cudaFree(cu->attn_cnt);
    }
    if (cu->host_stage != NULL) {
        (void)cudaFreeHost(cu->host_stage);
    }
    if (cu->up_ring != NULL) {
        (void)cudaFreeHost(cu->up_ring);
    }
    for (int i = 0; i < 2; i++) {
        if (cu->up_done[i] != NULL) {
            (void)cudaEventDestroy(cu->up_done[i]);
        }
    }
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (cu->up_fence[q] != NULL) {
            (void)cudaEventDestroy(cu->up_fence[q]);
        }
    }
    if (cu->blas != NULL) {
        (void)cublasDestroy(cu->blas);
    }
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (cu->stream[q] != NULL) {
            (void)cudaStreamSynchronize(cu->stream[q]);
            (void)cudaStreamDestroy(cu->stream[q]);
        }
    }
    free(cu);
}

extern "C" lkv_status_t lkv_cuda_open(lkv_kern_backend_t *be,
                                      const lkv_kern_config_t *cfg)
{
    int            n_dev = 0;
    cudaError_t    err   = cudaGetDeviceCount(&n_dev);
    lkv_cuda_t    *cu;
    lkv_status_t   st = LKV_ERR_DEVICE;
    cublasStatus_t bst;
    int            v  = 0;

    if (err != cudaSuccess || n_dev == 0) {
        (void)cudaGetLastError();
        LKV_LOG_ERROR("no usable CUDA device (%s); run on a machine with an "
                      "NVIDIA GPU and driver, or use --backend cpu",
                      err != cudaSuccess ? cudaGetErrorString(err)
                                         : "device count is 0");
        return LKV_ERR_DEVICE;
    }
    if (cfg->device < 0 || cfg->device >= n_dev) {
        LKV_LOG_ERROR("cuda device %d does not exist (this machine has %d; "
                      "use 0..%d)",
                      cfg->device, n_dev, n_dev - 1);
        return LKV_ERR_INVALID;
    }
    cu = (lkv_cuda_t *)calloc(1, sizeof(*cu));
    if (cu == NULL) {
        return LKV_ERR_NOMEM;
    }
    cu->device        = cfg->device;
    cu->gemv_max_rows = 4;
    {
        const char *e = getenv("LKV_CUDA_GEMV_MAX_ROWS"); /* benchmarks */
        if (e != NULL && atoi(e) >= 0) {
            cu->gemv_max_rows = atoi(e);
        }
    }
    err               = cudaSetDevice(cu->device);
    if (err != cudaSuccess) {
        lkv_cuda_error(err, "cudaSetDevice", __FILE__, __LINE__);
        goto fail;
    }
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount,
                               cu->device) == cudaSuccess) {
        cu->n_sms = v;
    }
    if (cu->n_sms <= 0) {
        cu->n_sms = 80;
    }
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                               cu->device) == cudaSuccess) {
        cu->smem_optin = (size_t)v;
    } else {
        cu->smem_optin = 48 * 1024;
    }
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        err = cudaStreamCreateWithFlags(&cu->stream[q], cudaStreamNonBlocking);
        if (err != cudaSuccess) {
            cu->stream[q] = NULL;
            lkv_cuda_error(err, "cudaStreamCreateWithFlags", __FILE__,
                           __LINE__);
            goto fail;
        }
    }
    err = cudaHostAlloc((void **)&cu->up_ring, 2 * LKV_CUDA_UP_HALF,
                        cudaHostAllocDefault);
    if (err != cudaSuccess) {
        cu->up_ring = NULL;
        lkv_cuda_error(err, "cudaHostAlloc (upload ring)", __FILE__, __LINE__);
        goto fail;
    }
    for (int i = 0; i < 2 + LKV_KERN_QUEUE_COUNT; i++) {
        cudaEvent_t *ev = i < 2 ? &cu->up_done[i] : &cu->up_fence[i - 2];
        err = cudaEventCreateWithFlags(ev, cudaEventDisableTiming);
        if (err != cudaSuccess) {
            *ev = NULL;
            lkv_cuda_error(err, "cudaEventCreateWithFlags", __FILE__,
                           __LINE__);
            goto fail;
        }
    }
    bst = cublasCreate(&cu->blas);
    if (bst != CUBLAS_STATUS_SUCCESS) {
        cu->blas = NULL;
        lkv_cuda_blas_error(bst, "cublasCreate");
        goto fail;
    }
    bst = cublasSetStream(cu->blas, cu->stream[LKV_KERN_QUEUE_COMPUTE]);
    if (bst != CUBLAS_STATUS_SUCCESS) {
        lkv_cuda_blas_error(bst, "cublasSetStream");
        goto fail;
    }
    {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, cu->device) == cudaSuccess) {
            LKV_LOG_INFO("cuda device %d: %s, %d SMs, %.1f GiB", cu->device,
                         prop.name, cu->n_sms,
                         (double)prop.totalGlobalMem / (1024.0 * 1024 * 1024));
        }
    }
    be->impl = cu;
    return LKV_OK;
fail:
    destroy_impl(cu);
    return st;
}

extern "C" void lkv_cuda_close(lkv_kern_backend_t *be)
{
    lkv_cuda_t *cu = lkv_cuda_of(be);

    if (cu == NULL) {
        return;
    }
    (void)cudaSetDevice(cu->device);
    destroy_impl(cu);
    be->impl = NULL;
}

/* ---- memory ---- */

extern "C" lkv_status_t lkv_cuda_mem_alloc(lkv_kern_backend_t *be, size_t bytes,
                                           void **p)
{
    lkv_cuda_t *cu  = lkv_cuda_of(be);
    void       *ptr = NULL;
    cudaError_t err;

    if (p == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(cu->device));
    err = cudaMalloc(&ptr, bytes == 0 ? 1 : bytes);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        LKV_LOG_ERROR("cannot allocate %zu bytes of device memory: %s; use a "
                      "smaller model, fewer kv blocks or a larger GPU",
                      bytes, cudaGetErrorString(err));
        return LKV_ERR_NOMEM;
    }
    *p = ptr;
    return LKV_OK;
}

extern "C" void lkv_cuda_mem_free(lkv_kern_backend_t *be, void *p)
{
    if (p != NULL) {
        (void)cudaSetDevice(lkv_cuda_of(be)->device);
        /* cudaFree waits for work using p; it is never called in a step */
        (void)cudaFree(p);
    }
}

extern "C" lkv_status_t lkv_cuda_host_alloc(lkv_kern_backend_t *be,
                                            size_t bytes, void **p)
{
    void       *ptr = NULL;
    cudaError_t err;

    if (p == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(lkv_cuda_of(be)->device));
    err = cudaHostAlloc(&ptr, bytes == 0 ? 1 : bytes,
                        cudaHostAllocPortable | cudaHostAllocMapped);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        LKV_LOG_ERROR("cannot allocate %zu bytes of pinned host memory: %s; "
                      "use fewer host kv blocks or raise the memlock limit",
                      bytes, cudaGetErrorString(err));
        return LKV_ERR_NOMEM;
    }
    *p = ptr;
    return LKV_OK;
}

extern "C" void lkv_cuda_host_free(lkv_kern_backend_t *be, void *p)
{
    if (p != NULL) {
        (void)cudaFreeHost(p);
    }
}

/* mem_upload: "synchronous" means the source may be reused at once and
 * every later operation sees the data. Large uploads (weights) copy and wait.
 * Small ones (per-step metadata: block tables, slots, positions) are copied
 * into a pinned ring and queued on the compute stream with no host wait, so
 * the worker's per-layer table uploads do not stall the GPU; later compute
 * work is ordered by the stream, later mem_download too, and the next
 * copy_async / event_record on a copy queue first waits for the compute
 * stream (up_dirty), so cross-queue users also see the data. */
static lkv_status_t upload_staged(lkv_cuda_t *cu, void *dst,
                                  const void *host_src, size_t bytes)
{
    cudaStream_t s = cu->stream[LKV_KERN_QUEUE_COMPUTE];

    if (cu->up_off + bytes > LKV_CUDA_UP_HALF) {
        /* leave this half; make sure the other one's copies have run */
        LKV_CUDA_TRY(cudaEventRecord(cu->up_done[cu->up_half], s));
        cu->up_pending[cu->up_half] = 1;
        cu->up_half ^= 1;
        cu->up_off = 0;
        if (cu->up_pending[cu->up_half]) {
            LKV_CUDA_TRY(cudaEventSynchronize(cu->up_done[cu->up_half]));
            cu->up_pending[cu->up_half] = 0;
        }
    }
    char *stage = cu->up_ring + (size_t)cu->up_half * LKV_CUDA_UP_HALF +
                  cu->up_off;
    memcpy(stage, host_src, bytes);
    LKV_CUDA_TRY(cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, s));
    cu->up_off += (bytes + 63) & ~(size_t)63;
    __atomic_store_n(&cu->up_dirty[LKV_KERN_QUEUE_D2H], 1, __ATOMIC_RELEASE);
    __atomic_store_n(&cu->up_dirty[LKV_KERN_QUEUE_H2D], 1, __ATOMIC_RELEASE);
    return LKV_OK;
}

/* before work on copy queue q: wait for staged uploads (see above) */
static lkv_status_t upload_fence(lkv_cuda_t *cu, lkv_kern_queue_t q)
{
    if (q == LKV_KERN_QUEUE_COMPUTE ||
        !__atomic_exchange_n(&cu->up_dirty[q], 0, __ATOMIC_ACQ_REL)) {
        return LKV_OK;
    }
    LKV_CUDA_TRY(cudaEventRecord(cu->up_fence[q],
                                 cu->stream[LKV_KERN_QUEUE_COMPUTE]));
    LKV_CUDA_TRY(cudaStreamWaitEvent(cu->stream[q], cu->up_fence[q], 0));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_mem_upload(lkv_kern_backend_t *be, void *dst,
                                            const void *host_src, size_t bytes)
{
    lkv_cuda_t  *cu = lkv_cuda_of(be);
    cudaStream_t s  = lkv_cuda_compute(be);

    if (bytes == 0) {
        return LKV_OK;
    }
    if (dst == NULL || host_src == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(cu->device));
    if (bytes <= LKV_CUDA_UP_HALF / 4) {
        return upload_staged(cu, dst, host_src, bytes);
    }
    /* ordered after queued compute; pageable source: staged by the driver */
    LKV_CUDA_TRY(
        cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s));
    LKV_CUDA_TRY(cudaStreamSynchronize(s));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_mem_download(lkv_kern_backend_t *be,
                                              void *host_dst, const void *src,
                                              size_t bytes)
{
    cudaStream_t s = lkv_cuda_compute(be);

    if (bytes == 0) {
        return LKV_OK;
    }
    if (host_dst == NULL || src == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(lkv_cuda_of(be)->device));
    LKV_CUDA_TRY(
        cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s));
    LKV_CUDA_TRY(cudaStreamSynchronize(s));
    return LKV_OK;
}

/* ---- queues and events ---- */

static int queue_ok(lkv_kern_queue_t q)
{
    return (int)q >= 0 && q < LKV_KERN_QUEUE_COUNT;
}

extern "C" lkv_status_t lkv_cuda_copy_async(lkv_kern_backend_t *be,
                                            lkv_kern_queue_t q,
                                            lkv_kern_copy_kind_t kind,
                                            void *dst, const void *src,
                                            size_t bytes)
{
    lkv_cuda_t *cu = lkv_cuda_of(be);

    if (!queue_ok(q)) {
        LKV_LOG_ERROR("copy on unknown queue %d", (int)q);
        return LKV_ERR_INVALID;
    }
    if ((int)kind < (int)LKV_KERN_COPY_H2D || (int)kind > (int)LKV_KERN_COPY_H2H) {
        LKV_LOG_ERROR("unknown copy kind %d", (int)kind);
        return LKV_ERR_INVALID;
    }
    if (bytes == 0) {
        return LKV_OK;
    }
    if (dst == NULL || src == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(cu->device));
    LKV_CHECK(upload_fence(cu, q));
    /* unified addressing tells where each pointer lives; the kind is the
     * caller's statement of intent (it picks the queue, not the engine) */
    LKV_CUDA_TRY(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cu->stream[q]));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_event_create(lkv_kern_backend_t *be,
                                              lkv_kern_event_t **e)
{
    lkv_kern_event_t *ev;
    cudaError_t       err;

    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    ev = (lkv_kern_event_t *)calloc(1, sizeof(*ev));
    if (ev == NULL) {
        return LKV_ERR_NOMEM;
    }
    (void)cudaSetDevice(lkv_cuda_of(be)->device);
    err = cudaEventCreateWithFlags(&ev->ev, cudaEventDisableTiming);
    if (err != cudaSuccess) {
        free(ev);
        return lkv_cuda_error(err, "cudaEventCreateWithFlags", __FILE__,
                              __LINE__);
    }
    *e = ev;
    return LKV_OK;
}

extern "C" void lkv_cuda_event_destroy(lkv_kern_backend_t *be,
                                       lkv_kern_event_t *e)
{
    if (e == NULL) {
        return;
    }
    (void)cudaEventDestroy(e->ev); /* deferred by CUDA if still pending */
    free(e);
}

extern "C" lkv_status_t lkv_cuda_event_record(lkv_kern_backend_t *be,
                                              lkv_kern_event_t *e,
                                              lkv_kern_queue_t q)
{
    if (e == NULL || !queue_ok(q)) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(lkv_cuda_of(be)->device));
    LKV_CHECK(upload_fence(lkv_cuda_of(be), q));
    LKV_CUDA_TRY(cudaEventRecord(e->ev, lkv_cuda_of(be)->stream[q]));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_queue_wait(lkv_kern_backend_t *be,
                                            lkv_kern_queue_t q,
                                            lkv_kern_event_t *e)
{
    if (e == NULL || !queue_ok(q)) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaSetDevice(lkv_cuda_of(be)->device));
    LKV_CUDA_TRY(cudaStreamWaitEvent(lkv_cuda_of(be)->stream[q], e->ev, 0));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_event_sync(lkv_kern_backend_t *be,
                                            lkv_kern_event_t *e)
{
    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaEventSynchronize(e->ev));
    return LKV_OK;
}

extern "C" lkv_status_t lkv_cuda_event_query(lkv_kern_backend_t *be,
                                             lkv_kern_event_t *e)
{
    cudaError_t err;

    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    err = cudaEventQuery(e->ev);
    if (err == cudaSuccess) {
        return LKV_OK;
    }
    if (err == cudaErrorNotReady) {
        (void)cudaGetLastError(); /* not an error; do not leave it behind */
        return LKV_AGAIN;
    }
    return lkv_cuda_error(err, "cudaEventQuery", __FILE__, __LINE__);
}

extern "C" lkv_status_t lkv_cuda_sync(lkv_kern_backend_t *be,
                                      lkv_kern_queue_t q)
{
    if (!queue_ok(q)) {
        return LKV_ERR_INVALID;
    }
    LKV_CUDA_TRY(cudaStreamSynchronize(lkv_cuda_of(be)->stream[q]));
    return LKV_OK;
}
