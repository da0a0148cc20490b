/* allreduce_bench.c - TP all-reduce on the CPU: layerkv's lkv_comm_tp_allreduce
 * (worker/comm.c: exchange + rank-order sum, the same bits on every rank)
 * next to the MPI library's MPI_Allreduce of the same buffer, in one run.
 * Sizes are real activation sizes: tokens x dim f32 per all-reduce, two
 * all-reduces per layer (after attention and after the MLP).
 * Build and run with bench/allreduce_bench.sh. Single-threaded per rank. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "worker/comm.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* median over iters of the slowest rank's time, ns */
static double bench(lkv_comm_t *c, float *buf, size_t n, int iters, int mpi)
{
    int64_t *t = malloc((size_t)iters * sizeof(*t));
    if (t == NULL) {
        return -1;
    }
    for (int i = 0; i < iters + 3; i++) {
        for (size_t k = 0; k < n; k++) {
            buf[k] = (float)((k * 7 + (size_t)i) % 13) * 0.25f;
        }
        MPI_Barrier(MPI_COMM_WORLD);
        int64_t t0 = lkv_now_ns();
        lkv_status_t st = mpi ? lkv_comm_tp_allreduce_mpi(c, buf, n)
                              : lkv_comm_tp_allreduce(c, buf, n);
        int64_t dt = lkv_now_ns() - t0, mx = 0;
        if (st != LKV_OK) {
            free(t);
            return -1;
        }
        MPI_Allreduce(&dt, &mx, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
        if (i >= 3) {
            t[i - 3] = mx;
        }
    }
    qsort(t, (size_t)iters, sizeof(*t), cmp_i64);
    double med = (double)t[iters / 2];
    free(t);
    return med;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *model;
        int         dim;
    } models[] = {{"stories260K", 64}, {"llama-7B", 4096}, {"llama-70B", 8192}};
    static const int toks[] = {1, 16, 64, 512};
    int              iters  = argc > 1 ? atoi(argv[1]) : 50;
    lkv_comm_t      *c      = NULL;

    if (iters < 1) {
        iters = 50;
    }
    if (lkv_comm_create(2, 1, &c) != LKV_OK) {
        fprintf(stderr, "allreduce_bench: run with mpirun -np 2\n");
        return 1;
    }
    int    rank = lkv_comm_world_rank(c);
    float *buf  = malloc((size_t)512 * 8192 * sizeof(float));
    if (buf == NULL) {
        lkv_comm_destroy(&c);
        return 1;
    }
    if (rank == 0) {
        printf("| model (dim) | tokens | bytes | layerkv all-reduce | "
               "MPI_Allreduce | per layer (2x, layerkv) |\n"
               "|---|---|---|---|---|---|\n");
    }
    for (size_t mi = 0; mi < sizeof(models) / sizeof(models[0]); mi++) {
        for (size_t ti = 0; ti < sizeof(toks) / sizeof(toks[0]); ti++) {
            size_t n  = (size_t)toks[ti] * (size_t)models[mi].dim;
            int    it = n > 1000000 ? (iters + 4) / 5 : iters;
            double a  = bench(c, buf, n, it, 0);
            double b  = bench(c, buf, n, it, 1);
            if (rank == 0) {
                printf("| %s (%d) | %d | %zu | %.1f us (%.2f GB/s) | "
                       "%.1f us (%.2f GB/s) | %.1f us |\n",
                       models[mi].model, models[mi].dim, toks[ti],
                       n * sizeof(float), a * 1e-3,
                       (double)(n * sizeof(float)) / a, b * 1e-3,
                       (double)(n * sizeof(float)) / b, 2 * a * 1e-3);
            }
        }
    }
    free(buf);
    lkv_comm_destroy(&c);
    return 0;
}
