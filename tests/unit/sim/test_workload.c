/* test_workload.c - request streams: Poisson rate and determinism, trace
 * lengths and clipping, trace replay, CSV errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sim/csv_table.h"
#include "sim/workload.h"

static char data_dir[1024];

static void workload_poisson_rate_and_seed(void **state)
{
    (void)state;
    lkv_sim_workload_config_t c = lkv_sim_workload_config_default();
    c.rate                      = 4.0;
    c.n_requests                = 20000;
    c.seed                      = 7;
    lkv_sim_req_t *a = NULL, *b = NULL;
    int64_t        na = 0, nb = 0;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &na), LKV_OK);
    assert_int_equal(na, 20000);
    double mean_gap = a[na - 1].arrival_ns * 1e-9 / (double)(na - 1);
    assert_true(fabs(mean_gap - 0.25) / 0.25 < 0.05);
    for (int64_t i = 1; i < na; i++) {
        assert_true(a[i].arrival_ns >= a[i - 1].arrival_ns);
        assert_int_equal(a[i].prompt_len, 2048);
        assert_int_equal(a[i].output_len, 256);
    }
    assert_int_equal(lkv_sim_workload_generate(&c, &b, &nb), LKV_OK);
    assert_memory_equal(a, b, sizeof(*a) * (size_t)na);
    free(b);
    c.seed = 8;
    assert_int_equal(lkv_sim_workload_generate(&c, &b, &nb), LKV_OK);
    assert_true(memcmp(a, b, sizeof(*a) * (size_t)na) != 0);
    free(a);
    free(b);
}

static void workload_trace_lengths_and_clip(void **state)
{
    (void)state;
    lkv_sim_workload_config_t c = lkv_sim_workload_config_default();
    c.trace                     = "sharegpt";
    c.data_dir                  = data_dir;
    c.rate                      = 2.0;
    c.n_requests                = 5000;
    lkv_sim_req_t *a            = NULL;
    int64_t        n            = 0;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_OK);
    double sp = 0, sd = 0;
    int    over = 0;
    for (int64_t i = 0; i < n; i++) {
        sp += a[i].prompt_len;
        sd += a[i].output_len;
        over += a[i].prompt_len + a[i].output_len > 4096;
    }
    /* sharegpt_8k: prompt mean 2340, decode mean 439 (vidur.md 4.2) */
    printf("sharegpt sample: prompt mean %.0f, output mean %.0f\n", sp / n,
           sd / n);
    assert_true(fabs(sp / n - 2340) / 2340 < 0.08);
    assert_true(fabs(sd / n - 439) / 439 < 0.08);
    assert_true(over > 0);
    free(a);
    c.max_total = 4096;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_OK);
    for (int64_t i = 0; i < n; i++) {
        assert_true(a[i].prompt_len + a[i].output_len <= 4096);
        assert_true(a[i].prompt_len >= 1 && a[i].output_len >= 1);
    }
    free(a);
}

static void workload_replay_uses_trace_times(void **state)
{
    (void)state;
    lkv_sim_workload_config_t c = lkv_sim_workload_config_default();
    c.trace                     = "azure-conv";
    c.data_dir                  = data_dir;
    c.rate                      = 0;
    c.time_scale                = 2.0;
    c.n_requests                = 1000;
    lkv_sim_req_t *a            = NULL;
    int64_t        n            = 0;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_OK);
    assert_int_equal(a[0].arrival_ns, 0);
    assert_int_equal(a[0].prompt_len, 374); /* first row of the trace */
    assert_int_equal(a[0].output_len, 44);
    /* ~5.5 req/s in the trace, x2 time scale: ~360 s for 1000 requests */
    double span = a[n - 1].arrival_ns * 1e-9;
    assert_true(span > 250 && span < 500);
    free(a);
    c.trace = "sharegpt"; /* no arrived_at: replay impossible */
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_INVALID);
}

static void workload_bad_input(void **state)
{
    (void)state;
    lkv_sim_workload_config_t c = lkv_sim_workload_config_default();
    lkv_sim_req_t            *a = NULL;
    int64_t                   n = 0;
    c.n_requests                = 0;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_INVALID);
    c          = lkv_sim_workload_config_default();
    c.trace    = "no-such-trace";
    c.data_dir = data_dir;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_NOTFOUND);
    char path[] = "/tmp/lkv_wl_XXXXXX";
    int  fd     = mkstemp(path);
    assert_true(fd >= 0);
    const char *bad = "num_prefill_tokens,num_decode_tokens\n10,20\n5\n";
    assert_int_equal(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    c.trace = path;
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_FORMAT);
    FILE *f = fopen(path, "w");
    fputs("a,b\n1,x\n", f);
    fclose(f);
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_FORMAT);
    f = fopen(path, "w");
    fputs("num_prefill_tokens,num_decode_tokens\n-5,3\n", f);
    fclose(f);
    assert_int_equal(lkv_sim_workload_generate(&c, &a, &n), LKV_ERR_FORMAT);
    assert_null(a);
    unlink(path);
}

static void csv_reads_cells(void **state)
{
    (void)state;
    char        path[] = "/tmp/lkv_csv_XXXXXX";
    int         fd     = mkstemp(path);
    const char *txt    = "x,name,y\r\n1,ab,2.5\r\n\r\n3,,nan-ish\r\n";
    assert_int_equal(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
    close(fd);
    lkv_csv_table_t *t = NULL;
    assert_int_equal(lkv_csv_load(path, &t), LKV_OK);
    assert_int_equal(lkv_csv_rows(t), 2);
    assert_int_equal(lkv_csv_col(t, "y"), 2);
    assert_int_equal(lkv_csv_col(t, "zz"), -1);
    assert_string_equal(lkv_csv_str(t, 0, 1), "ab");
    assert_true(lkv_csv_num(t, 0, 2) == 2.5);
    assert_true(isnan(lkv_csv_num(t, 1, 1)));
    assert_true(isnan(lkv_csv_num(t, 1, 2)));
    assert_string_equal(lkv_csv_str(t, 9, 0), "");
    lkv_csv_destroy(&t);
    assert_null(t);
    lkv_csv_destroy(&t);
    unlink(path);
}

int main(void)
{
    const char *src = getenv("LKV_SOURCE_DIR");
    snprintf(data_dir, sizeof(data_dir), "%s/data/vidur", src ? src : ".");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(workload_poisson_rate_and_seed),
        cmocka_unit_test(workload_trace_lengths_and_clip),
        cmocka_unit_test(workload_replay_uses_trace_times),
        cmocka_unit_test(workload_bad_input),
        cmocka_unit_test(csv_reads_cells),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
