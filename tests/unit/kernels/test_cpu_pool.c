/* test_cpu_pool.c - the CPU backend's persistent thread pool: every item of
 * a parallel-for runs exactly once, thread ids stay in range, thousands of
 * back-to-back jobs (with pool threads both spinning and asleep) complete,
 * and bad arguments are rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels/cpu/cpu_impl.h"

enum { MAX_ITEMS = 5000 };

typedef struct {
    _Atomic int hits[MAX_ITEMS];
    _Atomic int bad_tid;
    _Atomic int calls;
    int         n_threads;
} job_t;

static void count_task(void *ctx, int tid, int64_t begin, int64_t end)
{
    job_t *j = ctx;

    if (tid < 0 || tid >= j->n_threads || begin < 0 || end > MAX_ITEMS ||
        begin >= end) {
        atomic_fetch_add(&j->bad_tid, 1);
        return;
    }
    atomic_fetch_add(&j->calls, 1);
    for (int64_t i = begin; i < end; i++) {
        atomic_fetch_add(&j->hits[i], 1);
    }
}

static void run_jobs(int n_threads, int n_jobs, int sleep_every)
{
    lkv_cpu_impl_t impl;
    job_t         *j = calloc(1, sizeof(*j));
    uint64_t       r = 88172645463325252ull;

    assert_non_null(j);
    memset(&impl, 0, sizeof(impl));
    impl.n_threads = n_threads;
    assert_int_equal(lkv_cpu_pool_create(n_threads, &impl.pool), LKV_OK);
    j->n_threads = n_threads;
    for (int k = 0; k < n_jobs; k++) {
        int64_t n, grain;

        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        n     = (int64_t)(r % MAX_ITEMS) + 1;
        grain = (int64_t)((r >> 20) % 97) + 1;
        for (int64_t i = 0; i < n; i++) {
            atomic_store(&j->hits[i], 0);
        }
        lkv_cpu_parallel_for(&impl, n, grain, count_task, j);
        for (int64_t i = 0; i < n; i++) {
            if (atomic_load(&j->hits[i]) != 1) {
                fail_msg("job %d (n %lld, grain %lld): item %lld ran %d "
                         "times",
                         k, (long long)n, (long long)grain, (long long)i,
                         atomic_load(&j->hits[i]));
            }
        }
        if (sleep_every > 0 && k % sleep_every == 0) {
            usleep(3000); /* let pool threads fall asleep on the condvar */
        }
    }
    assert_int_equal(atomic_load(&j->bad_tid), 0);
    lkv_cpu_pool_destroy(&impl.pool);
    assert_null(impl.pool);
    lkv_cpu_pool_destroy(&impl.pool); /* NULL is fine */
    free(j);
}

static void pool_runs_every_item_exactly_once(void **state)
{
    run_jobs(4, 3000, 0);
    run_jobs(2, 200, 10);
    run_jobs(1, 100, 0);
}

static void pool_without_threads_runs_serially(void **state)
{
    lkv_cpu_impl_t impl;
    job_t         *j = calloc(1, sizeof(*j));

    assert_non_null(j);
    memset(&impl, 0, sizeof(impl));
    j->n_threads = 1;
    lkv_cpu_parallel_for(&impl, 100, 7, count_task, j); /* no pool at all */
    assert_int_equal(atomic_load(&j->calls), 1);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(atomic_load(&j->hits[i]), 1);
    }
    lkv_cpu_parallel_for(&impl, 0, 7, count_task, j); /* empty: no call */
    assert_int_equal(atomic_load(&j->calls), 1);
    free(j);
}

static void pool_create_rejects_bad_arguments(void **state)
{
    lkv_cpu_pool_t *p = NULL;

    assert_int_equal(lkv_cpu_pool_create(0, &p), LKV_ERR_INVALID);
    assert_null(p);
    assert_int_equal(lkv_cpu_pool_create(2, NULL), LKV_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_runs_every_item_exactly_once),
        cmocka_unit_test(pool_without_threads_runs_serially),
        cmocka_unit_test(pool_create_rejects_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
