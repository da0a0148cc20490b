/* test_bench_overlap.c - smoke test of `layerkv bench-overlap` (issue 3
 * item 3): a tiny configuration runs, prints the three times and the ratio,
 * labels link emulation, and rejects bad options with exit code 2. The
 * ratio itself is not asserted here (machine load); docs/performance.md has
 * the measured numbers. Skips (77) without $LKV_BINARY. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static const char *binary;

static int run(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' bench-overlap %s 2>&1", binary, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n]   = '\0';
    int rc   = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void bench_overlap_tiny_prints_all_numbers(void **state)
{
    static char out[8192];
    int rc = run("--layers 6 --tokens 8 --dim 64 --hidden 128 --heads 4 "
                 "--kv-heads 4 --block-size 4 --reps 1 --threads 1",
                 out, sizeof(out));
    print_message("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "compute only:"));
    assert_non_null(strstr(out, "copy only:"));
    assert_non_null(strstr(out, "overlapped:"));
    assert_non_null(strstr(out, "step / max(compute, copy) = "));
    assert_non_null(strstr(out, "[link emulation]"));
    assert_non_null(strstr(out, "5 of 6 layers"));
    /* explicit link, contiguous blocks, context */
    rc = run("--layers 3 --tokens 4 --ctx 20 --dim 64 --hidden 128 --heads 4 "
             "--kv-heads 2 --reps 1 --threads 1 --link-gbps 1 --contiguous "
             "--kv-dtype f16",
             out, sizeof(out));
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "link: 1.0000 GB/s"));
    /* no cap: nothing is labelled as emulation */
    rc = run("--layers 2 --tokens 4 --dim 64 --hidden 128 --heads 4 "
             "--kv-heads 4 --reps 1 --threads 1 --link-gbps 0",
             out, sizeof(out));
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "[link emulation]"));
    /* the worker's real forward pass with offloads from its kv_done hook */
    rc = run("--model dummy:tiny --tokens 4 --reps 1 --threads 1", out,
             sizeof(out));
    print_message("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "the worker's forward pass over dummy:tiny"));
    assert_non_null(strstr(out, "step / max(compute, copy) = "));
    /* a model that does not exist is an error, not a crash */
    assert_int_equal(run("--model dummy:no-such-model --reps 1", out,
                         sizeof(out)),
                     1);
    assert_non_null(strstr(out, "cannot open model"));
}

static void bench_overlap_bad_options_exit_2(void **state)
{
    static char out[8192];
    assert_int_equal(run("--layers x", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "usage:"));
    assert_int_equal(run("--heads 3", out, sizeof(out)), 2);
    assert_int_equal(run("--offload 9 --layers 2", out, sizeof(out)), 2);
    assert_int_equal(run("--link-gbps -1", out, sizeof(out)), 2);
    assert_int_equal(run("extra", out, sizeof(out)), 2);
    assert_int_equal(run("--help", out, sizeof(out)), 0);
    assert_non_null(strstr(out, "--link-gbps"));
}

int main(void)
{
    binary = getenv("LKV_BINARY");
    if (binary == NULL || *binary == '\0') {
        fprintf(stderr, "LKV_BINARY not set; skipping\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bench_overlap_tiny_prints_all_numbers),
        cmocka_unit_test(bench_overlap_bad_options_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
