/* cpu_queue.h - the CPU backend's copy queues and events (kernels.h slots
 * copy_async, event_*, queue_wait, sync).
 *
 * Model (mirrors CUDA streams/events):
 *  - LKV_KERN_QUEUE_COMPUTE is synchronous on the CPU: copy_async on it is a
 *    memcpy done before the call returns; event_record on it completes the
 *    event at once; queue_wait(COMPUTE, e) blocks the caller until e
 *    completes; sync(COMPUTE) returns at once.
 *  - LKV_KERN_QUEUE_D2H and LKV_KERN_QUEUE_H2D each have one worker thread
 *    executing a FIFO of items {copy, event record, wait for event}. Items run
 *    in the order they were queued; queue_wait on a copy queue makes later
 *    items of that queue wait for the event without blocking the caller.
 *  - Link emulation: when cfg->link_gbps > 0 every copy on a copy queue is
 *    paced in chunks on a link timeline, like a DMA engine: copies that
 *    became runnable (queued, or released by a wait) at time t never
 *    complete before t + bytes / link_gbps (1 GB/s = 1e9 bytes/s) plus
 *    cfg->link_latency_us per copy, and a busy queue moves link_gbps on
 *    average (a queue thread that wakes up late catches up instead of
 *    idling the link). D2H and H2D are independent links (full duplex).
 *    Compute-queue copies are never paced.
 *
 * Events: an event is "completed" when created (like a fresh cudaEvent);
 * event_record re-arms it to the point after all work queued so far on q.
 * Re-recording an event supersedes the earlier record (the event completes
 * when its latest record is reached). Waiting on an event that was never
 * recorded returns at once.
 *
 * Threading: every function is thread-safe (a mutex per backend state); the
 * worker step thread and the kvstore mover may call concurrently. Functions
 * never block except event_sync, sync and queue_wait(COMPUTE, ...).
 * Errors: LKV_ERR_INVALID for NULL pointers, an unknown queue or copy kind;
 * LKV_ERR_NOMEM when a queue item or event cannot be allocated;
 * LKV_ERR_INTERNAL if the queues were closed or not opened.
 */
#ifndef LKV_KERNELS_CPU_CPU_QUEUE_H
#define LKV_KERNELS_CPU_CPU_QUEUE_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create the queue state (threads started) into be->queues, using
 * cfg->link_gbps / cfg->link_latency_us. LKV_ERR_INVALID for a negative or
 * non-finite link_gbps / link_latency_us; LKV_ERR_NOMEM / LKV_ERR_INTERNAL
 * if memory or threads cannot be had (be->queues stays NULL then). */
lkv_status_t lkv_cpu_queues_open(lkv_kern_backend_t *be,
                                 const lkv_kern_config_t *cfg);
/* Drain both copy queues (queued work completes), join the threads, free the
 * state, set be->queues = NULL. Accepts be->queues == NULL. Events still
 * alive must be destroyed by their owners before or after (both are safe:
 * events are standalone objects). */
void lkv_cpu_queues_close(lkv_kern_backend_t *be);

lkv_status_t lkv_cpu_copy_async(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                lkv_kern_copy_kind_t kind, void *dst,
                                const void *src, size_t bytes);
lkv_status_t lkv_cpu_event_create(lkv_kern_backend_t *be,
                                  lkv_kern_event_t **e);
/* Destroying an event with a pending record is allowed: the record still
 * runs in queue order and the memory is released once it has. */
void lkv_cpu_event_destroy(lkv_kern_backend_t *be, lkv_kern_event_t *e);
lkv_status_t lkv_cpu_event_record(lkv_kern_backend_t *be, lkv_kern_event_t *e,
                                  lkv_kern_queue_t q);
lkv_status_t lkv_cpu_queue_wait(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                lkv_kern_event_t *e);
lkv_status_t lkv_cpu_event_sync(lkv_kern_backend_t *be, lkv_kern_event_t *e);
/* LKV_OK if completed, LKV_AGAIN if not. */
lkv_status_t lkv_cpu_event_query(lkv_kern_backend_t *be, lkv_kern_event_t *e);
lkv_status_t lkv_cpu_sync(lkv_kern_backend_t *be, lkv_kern_queue_t q);

/* Statistics of one copy queue since open (for the mover's accounting and
 * tests): bytes copied, copies done, nanoseconds the queue's thread spent
 * executing copies (including pacing sleeps). LKV_ERR_INVALID for COMPUTE or
 * an unknown queue. */
typedef struct {
    uint64_t bytes;
    uint64_t n_copies;
    uint64_t busy_ns;
} lkv_cpu_queue_stats_t;

lkv_status_t lkv_cpu_queue_stats(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_cpu_queue_stats_t *stats_p);

#ifdef __cplusplus
}
#endif

#endif /* LKV_KERNELS_CPU_CPU_QUEUE_H */
