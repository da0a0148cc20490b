/* cpu_queue.c - CPU backend copy queues (one thread per D2H/H2D queue), events
 * and link emulation. See cpu_queue.h for the model.
 *
 * Implementation: each copy queue counts the items queued on it (`queued`)
 * and the items it has finished (`done`); items run in FIFO order, so "all
 * work queued so far on q" is the ticket `queued` at record time and an event
 * is complete when done[q] >= ticket. Events therefore need no queue item and
 * can be destroyed at any time. A wait item captures (queue, ticket) of its
 * event when it is queued, as CUDA does.
 *
 * Threading: one mutex protects all state; each queue thread sleeps on its
 * own condition variable for new items; every completion broadcasts `done_cv`
 * (host waiters and wait items of the other queue sleep on it). Copies and
 * pacing sleeps run outside the lock.
 */
#include "kernels/cpu/cpu_queue.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#define LKV_LOG_MODULE "cpu_queue"
#include "common/clock.h"
#include "common/log.h"

/* Pacing granularity: a paced copy sleeps at most after every chunk. */
#define PACE_CHUNK_BYTES ((size_t)256 * 1024)
/* Pacing sleeps only when the link timeline is this far ahead. */
#define PACE_SLACK_NS 20000

typedef enum {
    ITEM_COPY = 0,
    ITEM_WAIT = 1,
} item_kind_t;

typedef struct item {
    struct item *next;
    item_kind_t  kind;
    /* ITEM_COPY */
    void        *dst;
    const void  *src;
    size_t       bytes;
    /* ITEM_WAIT: wait until done[wait_q] >= wait_ticket */
    int          wait_q;
    uint64_t     wait_ticket;
    int64_t      queued_ns; /* when it was queued (link emulation) */
} item_t;

struct lkv_kern_event {
    int      q;      /* queue of the latest record; -1 = never recorded */
    uint64_t ticket; /* complete when done[q] >= ticket */
};

typedef struct cpu_queues cpu_queues_t;

typedef struct {
    cpu_queues_t         *owner;
    int                   index; /* LKV_KERN_QUEUE_D2H or _H2D */
    pthread_t             thread;
    bool                  thread_started;
    pthread_cond_t        work_cv;
    item_t               *head;
    item_t               *tail;
    uint64_t              queued; /* items ever queued */
    uint64_t              done;   /* items ever finished */
    int64_t               link_free_ns; /* emulated link busy until (thread) */
    int64_t               gate_ns;      /* last wait item released (thread) */
    int64_t               last_done_ns; /* latest item completion (lock) */
    lkv_cpu_queue_stats_t stats;
} copy_queue_t;

struct cpu_queues {
    pthread_mutex_t lock;
    pthread_cond_t  done_cv;
    bool            stopping;
    double          bytes_per_ns; /* 0 = no cap */
    int64_t         latency_ns;
    item_t         *free_items; /* recycled items */
    copy_queue_t    cq[LKV_KERN_QUEUE_COUNT]; /* [COMPUTE] unused */
};

static bool is_copy_queue(int q)
{
    return q == LKV_KERN_QUEUE_D2H || q == LKV_KERN_QUEUE_H2D;
}

static bool event_done_locked(const cpu_queues_t *s, int q, uint64_t ticket)
{
    if (!is_copy_queue(q)) {
        return true; /* never recorded, or recorded on COMPUTE */
    }
    return s->cq[q].done >= ticket;
}

static void sleep_until_ns(int64_t deadline_ns)
{
    struct timespec ts;

    ts.tv_sec  = (time_t)(deadline_ns / 1000000000LL);
    ts.tv_nsec = (long)(deadline_ns % 1000000000LL);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR) {
    }
}

/* Execute one copy, paced if a link cap is set. Runs without the lock, on
 * the queue's thread. The link is a timeline, like a DMA engine's: a copy
 * starts when the link is free (link_free_ns), the copy was queued, and any
 * wait before it was released, whichever is latest, plus the latency; the
 * thread sleeps until each chunk's deadline on that timeline when it is more
 * than PACE_SLACK_NS ahead. A thread that wakes up late catches up with the
 * timeline instead of idling the link, and back-to-back small copies share
 * one timeline instead of each paying a sleep. So copies queued (or released
 * by a wait) at time t never complete before t + their bytes / cap, and a
 * busy queue moves cap bytes per second on average. */
static void run_copy(const cpu_queues_t *s, copy_queue_t *cq, const item_t *it)
{
    if (s->bytes_per_ns <= 0.0) {
        memcpy(it->dst, it->src, it->bytes);
        return;
    }
    int64_t now   = lkv_now_ns();
    int64_t start = cq->link_free_ns;
    if (it->queued_ns > start) {
        start = it->queued_ns;
    }
    if (cq->gate_ns > start) {
        start = cq->gate_ns;
    }
    start += s->latency_ns;
    size_t  off   = 0;
    if (start - now > PACE_SLACK_NS) {
        sleep_until_ns(start);
    }
    while (off < it->bytes) {
        size_t n = it->bytes - off;
        if (n > PACE_CHUNK_BYTES) {
            n = PACE_CHUNK_BYTES;
        }
        memcpy((char *)it->dst + off, (const char *)it->src + off, n);
        off += n;
        int64_t deadline =
            start + (int64_t)ceil((double)off / s->bytes_per_ns);
        if (deadline - lkv_now_ns() > PACE_SLACK_NS) {
            sleep_until_ns(deadline);
        }
    }
    cq->link_free_ns =
        start + (int64_t)ceil((double)it->bytes / s->bytes_per_ns);
}

static void *queue_thread(void *arg)
{
    copy_queue_t *cq = arg;
    cpu_queues_t *s  = cq->owner;

    /* precise pacing sleeps: default timer slack is 50 us */
    (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (cq->head == NULL && !s->stopping) {
            pthread_cond_wait(&cq->work_cv, &s->lock);
        }
        if (cq->head == NULL) {
            break; /* stopping and drained */
        }
        item_t *it = cq->head;
        if (it->kind == ITEM_WAIT) {
            if (!event_done_locked(s, it->wait_q, it->wait_ticket)) {
                while (!event_done_locked(s, it->wait_q, it->wait_ticket)) {
                    pthread_cond_wait(&s->done_cv, &s->lock);
                }
                /* the link idled until the event: restart its timeline */
                cq->gate_ns = lkv_now_ns();
            } else if (is_copy_queue(it->wait_q) &&
                       s->cq[it->wait_q].last_done_ns > cq->gate_ns) {
                /* done before we looked: it completed at or before the
                 * other queue's latest completion; never start earlier */
                cq->gate_ns = s->cq[it->wait_q].last_done_ns;
            }
        } else {
            pthread_mutex_unlock(&s->lock);
            int64_t t0 = lkv_now_ns();
            run_copy(s, cq, it);
            int64_t t1 = lkv_now_ns();
            pthread_mutex_lock(&s->lock);
            cq->stats.bytes += it->bytes;
            cq->stats.n_copies++;
            cq->stats.busy_ns += (uint64_t)(t1 - t0);
        }
        cq->head = it->next;
        if (cq->head == NULL) {
            cq->tail = NULL;
        }
        it->next      = s->free_items;
        s->free_items = it;
        cq->done++;
        cq->last_done_ns = lkv_now_ns();
        pthread_cond_broadcast(&s->done_cv);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static lkv_status_t check_be(lkv_kern_backend_t *be, cpu_queues_t **s_p)
{
    if (be == NULL) {
        return LKV_ERR_INVALID;
    }
    if (be->queues == NULL) {
        LKV_LOG_ERROR("copy queues are not open (call lkv_cpu_queues_open)");
        return LKV_ERR_INTERNAL;
    }
    *s_p = be->queues;
    return LKV_OK;
}

static lkv_status_t check_queue(int q)
{
    if (q < 0 || q >= LKV_KERN_QUEUE_COUNT) {
        LKV_LOG_ERROR("unknown queue %d (expected 0..%d)", q,
                      LKV_KERN_QUEUE_COUNT - 1);
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

/* Push an item (lock held). */
static lkv_status_t push_locked(cpu_queues_t *s, int q, const item_t *tmpl)
{
    copy_queue_t *cq = &s->cq[q];
    item_t       *it = s->free_items;

    if (s->stopping) {
        LKV_LOG_ERROR("copy queue used after close");
        return LKV_ERR_INTERNAL;
    }
    if (it != NULL) {
        s->free_items = it->next;
    } else {
        it = malloc(sizeof(*it));
        if (it == NULL) {
            return LKV_ERR_NOMEM;
        }
    }
    *it           = *tmpl;
    it->next      = NULL;
    it->queued_ns = lkv_now_ns();
    if (cq->tail != NULL) {
        cq->tail->next = it;
    } else {
        cq->head = it;
    }
    cq->tail = it;
    cq->queued++;
    pthread_cond_signal(&cq->work_cv);
    return LKV_OK;
}

static void free_items(item_t *it)
{
    while (it != NULL) {
        item_t *next = it->next;
        free(it);
        it = next;
    }
}

static void stop_threads(cpu_queues_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (is_copy_queue(q)) {
            pthread_cond_signal(&s->cq[q].work_cv);
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (is_copy_queue(q) && s->cq[q].thread_started) {
            pthread_join(s->cq[q].thread, NULL);
            s->cq[q].thread_started = false;
        }
    }
}

static void destroy_state(cpu_queues_t *s)
{
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (is_copy_queue(q)) {
            free_items(s->cq[q].head);
            pthread_cond_destroy(&s->cq[q].work_cv);
        }
    }
    free_items(s->free_items);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

lkv_status_t lkv_cpu_queues_open(lkv_kern_backend_t *be,
                                 const lkv_kern_config_t *cfg)
{
    if (be == NULL || cfg == NULL) {
        return LKV_ERR_INVALID;
    }
    if (!isfinite(cfg->link_gbps) || cfg->link_gbps < 0.0 ||
        !isfinite(cfg->link_latency_us) || cfg->link_latency_us < 0.0) {
        LKV_LOG_ERROR("link emulation needs link_gbps >= 0 and "
                      "link_latency_us >= 0 (got %g GB/s, %g us)",
                      cfg->link_gbps, cfg->link_latency_us);
        return LKV_ERR_INVALID;
    }
    cpu_queues_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return LKV_ERR_NOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    s->bytes_per_ns = cfg->link_gbps; /* 1 GB/s = 1 byte/ns */
    s->latency_ns   = cfg->link_gbps > 0.0
                          ? (int64_t)(cfg->link_latency_us * 1000.0)
                          : 0;
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (!is_copy_queue(q)) {
            continue;
        }
        s->cq[q].owner = s;
        s->cq[q].index = q;
        pthread_cond_init(&s->cq[q].work_cv, NULL);
    }
    for (int q = 0; q < LKV_KERN_QUEUE_COUNT; q++) {
        if (!is_copy_queue(q)) {
            continue;
        }
        int rc = pthread_create(&s->cq[q].thread, NULL, queue_thread,
                                &s->cq[q]);
        if (rc != 0) {
            LKV_LOG_ERROR("cannot start copy queue thread: %s", strerror(rc));
            stop_threads(s);
            destroy_state(s);
            return LKV_ERR_INTERNAL;
        }
        s->cq[q].thread_started = true;
    }
    be->queues = s;
    return LKV_OK;
}

void lkv_cpu_queues_close(lkv_kern_backend_t *be)
{
    if (be == NULL || be->queues == NULL) {
        return;
    }
    cpu_queues_t *s = be->queues;
    stop_threads(s);
    destroy_state(s);
    be->queues = NULL;
}

lkv_status_t lkv_cpu_copy_async(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                lkv_kern_copy_kind_t kind, void *dst,
                                const void *src, size_t bytes)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    LKV_CHECK(check_queue((int)q));
    if ((int)kind < LKV_KERN_COPY_H2D || (int)kind > LKV_KERN_COPY_H2H) {
        LKV_LOG_ERROR("unknown copy kind %d", (int)kind);
        return LKV_ERR_INVALID;
    }
    if (bytes == 0) {
        return LKV_OK;
    }
    if (dst == NULL || src == NULL) {
        LKV_LOG_ERROR("copy of %zu bytes with a NULL pointer", bytes);
        return LKV_ERR_INVALID;
    }
    if (q == LKV_KERN_QUEUE_COMPUTE) {
        memmove(dst, src, bytes);
        return LKV_OK;
    }
    item_t tmpl = {.kind = ITEM_COPY, .dst = dst, .src = src, .bytes = bytes};
    pthread_mutex_lock(&s->lock);
    lkv_status_t st = push_locked(s, (int)q, &tmpl);
    pthread_mutex_unlock(&s->lock);
    return st;
}

lkv_status_t lkv_cpu_event_create(lkv_kern_backend_t *be,
                                  lkv_kern_event_t **e)
{
    if (be == NULL || e == NULL) {
        return LKV_ERR_INVALID;
    }
    lkv_kern_event_t *ev = malloc(sizeof(*ev));
    if (ev == NULL) {
        return LKV_ERR_NOMEM;
    }
    ev->q      = -1;
    ev->ticket = 0;
    *e         = ev;
    return LKV_OK;
}

void lkv_cpu_event_destroy(lkv_kern_backend_t *be, lkv_kern_event_t *e)
{
    free(e);
}

lkv_status_t lkv_cpu_event_record(lkv_kern_backend_t *be, lkv_kern_event_t *e,
                                  lkv_kern_queue_t q)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    LKV_CHECK(check_queue((int)q));
    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&s->lock);
    e->q      = (int)q;
    e->ticket = is_copy_queue((int)q) ? s->cq[q].queued : 0;
    pthread_mutex_unlock(&s->lock);
    return LKV_OK;
}

lkv_status_t lkv_cpu_queue_wait(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                lkv_kern_event_t *e)
{
    cpu_queues_t *s;
    lkv_status_t  st = LKV_OK;

    LKV_CHECK(check_be(be, &s));
    LKV_CHECK(check_queue((int)q));
    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&s->lock);
    if (q == LKV_KERN_QUEUE_COMPUTE) {
        /* synchronous compute queue: block the caller */
        while (!event_done_locked(s, e->q, e->ticket)) {
            pthread_cond_wait(&s->done_cv, &s->lock);
        }
    } else if (!event_done_locked(s, e->q, e->ticket)) {
        item_t tmpl = {
            .kind = ITEM_WAIT, .wait_q = e->q, .wait_ticket = e->ticket};
        st = push_locked(s, (int)q, &tmpl);
    }
    pthread_mutex_unlock(&s->lock);
    return st;
}

lkv_status_t lkv_cpu_event_sync(lkv_kern_backend_t *be, lkv_kern_event_t *e)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&s->lock);
    while (!event_done_locked(s, e->q, e->ticket)) {
        pthread_cond_wait(&s->done_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return LKV_OK;
}

lkv_status_t lkv_cpu_event_query(lkv_kern_backend_t *be, lkv_kern_event_t *e)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    if (e == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&s->lock);
    bool done = event_done_locked(s, e->q, e->ticket);
    pthread_mutex_unlock(&s->lock);
    return done ? LKV_OK : LKV_AGAIN;
}

lkv_status_t lkv_cpu_sync(lkv_kern_backend_t *be, lkv_kern_queue_t q)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    LKV_CHECK(check_queue((int)q));
    if (q == LKV_KERN_QUEUE_COMPUTE) {
        return LKV_OK;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t ticket = s->cq[q].queued;
    while (s->cq[q].done < ticket) {
        pthread_cond_wait(&s->done_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return LKV_OK;
}

lkv_status_t lkv_cpu_queue_stats(lkv_kern_backend_t *be, lkv_kern_queue_t q,
                                 lkv_cpu_queue_stats_t *stats_p)
{
    cpu_queues_t *s;

    LKV_CHECK(check_be(be, &s));
    if (!is_copy_queue((int)q) || stats_p == NULL) {
        return LKV_ERR_INVALID;
    }
    pthread_mutex_lock(&s->lock);
    *stats_p = s->cq[q].stats;
    pthread_mutex_unlock(&s->lock);
    return LKV_OK;
}
