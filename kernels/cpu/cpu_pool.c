/* cpu_pool.c - persistent thread pool for the CPU backend's parallel-for.
 *
 * n_threads - 1 pool threads are created once (lkv_cpu_pool_create) and live
 * until the backend closes; the calling thread works too. A job is split
 * into chunks of `grain` items that threads claim dynamically from one
 * 64-bit cursor (job generation in the high 32 bits, next item in the low
 * 32), so a thread that the OS deschedules (this machine is shared) only
 * delays the chunk it holds, and a thread that wakes late finds the job done
 * and claims nothing. The caller returns once every item is done; it never
 * waits for idle threads to acknowledge.
 *
 * Between jobs the pool threads spin briefly on the cursor (decode issues
 * hundreds of short ops per token and a futex wake costs more than a short
 * op), then sleep on a condition variable, so an idle backend uses no CPU.
 * Job fields are atomics: a late thread may read the next job's fields, but
 * its claim (a CAS that names its generation) then fails and it runs nothing.
 *
 * Threading: lkv_cpu_parallel_for is called by one thread at a time (the
 * backend's owner).
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

/* busy-wait iterations (pause instructions, ~60 ns each on this machine's
 * Sapphire Rapids, so ~0.3 ms) before sleeping or yielding: covers the
 * gaps between the ops of a decode step and between steps */
#define POOL_SPIN 5000

#define CURSOR_IDX_MASK 0xffffffffull
#define CURSOR_CLOSED 0xffffffffull /* an index no job reaches */

struct lkv_cpu_pool {
    int        n_threads; /* including the caller */
    pthread_t *threads;   /* (n_threads - 1) */
    int        n_started;

    _Atomic uint64_t cursor; /* generation << 32 | next item */
    _Atomic int64_t  done;   /* items finished in this generation */
    _Atomic int      n_sleeping;
    _Atomic int      stop;
    pthread_mutex_t  mu;
    pthread_cond_t   cv;

    /* the current job (see the header comment for why these are atomic) */
    _Atomic(lkv_cpu_task_fn) fn;
    _Atomic(void *)          ctx;
    _Atomic int64_t          n;
    _Atomic int64_t          grain;
};

typedef struct {
    lkv_cpu_pool_t *pool;
    int             tid;
} worker_arg_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* claim and run chunks of generation gen until none is left. The cursor is
 * read first and the job fields after it; a claim (CAS) only succeeds while
 * the cursor still holds this generation's open range, and the caller closes
 * the range (cursor_close) before it writes the next job's fields, so a
 * successful claim always ran on this job's fields. */
static void work(lkv_cpu_pool_t *p, uint32_t gen, int tid)
{
    uint64_t c = atomic_load_explicit(&p->cursor, memory_order_acquire);

    for (;;) {
        lkv_cpu_task_fn fn;
        void           *ctx;
        int64_t         n, grain, begin, end;

        if ((uint32_t)(c >> 32) != gen) {
            return;
        }
        begin = (int64_t)(c & CURSOR_IDX_MASK);
        fn    = atomic_load_explicit(&p->fn, memory_order_relaxed);
        ctx   = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        n     = atomic_load_explicit(&p->n, memory_order_relaxed);
        grain = atomic_load_explicit(&p->grain, memory_order_relaxed);
        if (begin >= n) {
            return;
        }
        end = begin + grain < n ? begin + grain : n;
        if (!atomic_compare_exchange_weak_explicit(
                &p->cursor, &c, ((uint64_t)gen << 32) | (uint64_t)end,
                memory_order_acq_rel, memory_order_acquire)) {
            continue; /* c was reloaded */
        }
        fn(ctx, tid, begin, end);
        atomic_fetch_add_explicit(&p->done, end - begin, memory_order_release);
        c = atomic_load_explicit(&p->cursor, memory_order_acquire);
    }
}

/* end the current generation's range: no claim can succeed afterwards (an
 * acquire-release exchange, so the next job's field writes cannot move
 * before it) */
static void cursor_close(lkv_cpu_pool_t *p)
{
    uint64_t c = atomic_load_explicit(&p->cursor, memory_order_relaxed);

    atomic_exchange_explicit(&p->cursor, (c & ~CURSOR_IDX_MASK) | CURSOR_CLOSED,
                             memory_order_acq_rel);
}

static void *worker_main(void *arg_)
{
    worker_arg_t   *arg  = arg_;
    lkv_cpu_pool_t *p    = arg->pool;
    int             tid  = arg->tid;
    uint32_t        seen = 0;

    free(arg);
    for (;;) {
        uint32_t g =
            (uint32_t)(atomic_load_explicit(&p->cursor, memory_order_acquire) >>
                       32);

        for (int i = 0; g == seen && i < POOL_SPIN; i++) {
            cpu_relax();
            g = (uint32_t)(atomic_load_explicit(&p->cursor,
                                                memory_order_acquire) >>
                           32);
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while ((uint32_t)(atomic_load(&p->cursor) >> 32) == seen &&
                   !atomic_load(&p->stop)) {
                pthread_cond_wait(&p->cv, &p->mu);
            }
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            g = (uint32_t)(atomic_load(&p->cursor) >> 32);
        }
        if (atomic_load(&p->stop)) {
            break;
        }
        seen = g;
        work(p, g, tid);
    }
    return NULL;
}

lkv_status_t lkv_cpu_pool_create(int n_threads, lkv_cpu_pool_t **pool_p)
{
    lkv_cpu_pool_t *p;

    if (n_threads < 1 || pool_p == NULL) {
        return LKV_ERR_INVALID;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return LKV_ERR_NOMEM;
    }
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->cursor, CURSOR_CLOSED); /* generation 0, closed */
    atomic_init(&p->done, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->fn, NULL);
    atomic_init(&p->ctx, NULL);
    atomic_init(&p->n, 0);
    atomic_init(&p->grain, 1);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof(*p->threads));
        if (p->threads == NULL) {
            lkv_cpu_pool_destroy(&p);
            return LKV_ERR_NOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg_t *arg = malloc(sizeof(*arg));

        if (arg == NULL) {
            lkv_cpu_pool_destroy(&p);
            return LKV_ERR_NOMEM;
        }
        arg->pool = p;
        arg->tid  = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            LKV_LOG_ERROR("cannot start compute thread %d of %d; use fewer "
                          "threads",
                          i, n_threads);
            lkv_cpu_pool_destroy(&p);
            return LKV_ERR_INTERNAL;
        }
        p->n_started++;
    }
    *pool_p = p;
    return LKV_OK;
}

void lkv_cpu_pool_destroy(lkv_cpu_pool_t **pool_p)
{
    lkv_cpu_pool_t *p;

    if (pool_p == NULL || *pool_p == NULL) {
        return;
    }
    p = *pool_p;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) {
        pthread_join(p->threads[i], NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
    *pool_p = NULL;
}

void lkv_cpu_parallel_for(lkv_cpu_impl_t *impl, int64_t n, int64_t grain,
                          lkv_cpu_task_fn fn, void *ctx)
{
    lkv_cpu_pool_t *p = impl->pool;
    uint32_t        gen;

    if (n <= 0) {
        return;
    }
    if (grain < 1) {
        grain = 1;
    }
    /* the cursor holds 32-bit item indices, CURSOR_CLOSED excluded */
    LKV_ASSERT(n < (int64_t)CURSOR_CLOSED - grain);
    if (p == NULL || p->n_threads <= 1 || n <= grain) {
        fn(ctx, 0, 0, n);
        return;
    }
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->n, n, memory_order_relaxed);
    atomic_store_explicit(&p->grain, grain, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    gen = (uint32_t)(atomic_load_explicit(&p->cursor, memory_order_relaxed) >>
                     32) +
          1;
    atomic_store_explicit(&p->cursor, (uint64_t)gen << 32,
                          memory_order_seq_cst);
    if (atomic_load_explicit(&p->n_sleeping, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }

    work(p, gen, 0);

    for (int i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n;
         i++) {
        if (i < POOL_SPIN) {
            cpu_relax();
        } else {
            sched_yield(); /* a helper holding a chunk was descheduled */
        }
    }
    cursor_close(p);
}
