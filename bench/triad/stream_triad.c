/* stream_triad.c - STREAM-like triad a[i] = b[i] + s * c[i] over large
 * f32 arrays with N threads (pthreads, static split), reporting the best of
 * several repetitions in GB/s (1e9 bytes/s; 3 x 4 bytes per element: two
 * reads and one write, write-allocate traffic not counted, as in STREAM).
 * bench/decode_bench.sh builds it (cc -O3 -march=native) and uses it as the
 * machine's achievable memory bandwidth. Lives in a subfolder so it is
 * not globbed into the lkv_bench library.
 *
 * Usage: stream_triad [--threads N] [--mib M] [--reps R]
 * Threading: N worker threads in lock-step through a barrier; a standalone
 * tool, not part of the runtime.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    float             *a, *b, *c;
    size_t             begin, end;
    int                reps;
    pthread_barrier_t *bar;
    double            *times; /* (reps), written by thread 0 */
} arg_t;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker(void *p)
{
    arg_t      *g = p;
    const float s = 3.0f;

    /* first touch by the owning thread */
    for (size_t i = g->begin; i < g->end; i++) {
        g->a[i] = 0.0f;
        g->b[i] = 1.0f;
        g->c[i] = 2.0f;
    }
    for (int r = 0; r < g->reps; r++) {
        double t0 = 0.0;

        pthread_barrier_wait(g->bar);
        if (g->times != NULL) {
            t0 = now_s();
        }
        for (size_t i = g->begin; i < g->end; i++) {
            g->a[i] = g->b[i] + s * g->c[i];
        }
        pthread_barrier_wait(g->bar);
        if (g->times != NULL) {
            g->times[r] = now_s() - t0;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int                        threads = 2, reps = 10;
    size_t                     mib    = 256; /* per array */
    static const struct option opts[] = {
        {"threads", required_argument, NULL, 't'},
        {"mib", required_argument, NULL, 'm'},
        {"reps", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = getopt_long(argc, argv, "t:m:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            threads = atoi(optarg);
            break;
        case 'm':
            mib = (size_t)atol(optarg);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'h':
            printf("usage: %s [--threads N] [--mib MiB-per-array] [--reps R]\n"
                   "STREAM-like triad a = b + s*c; prints best GB/s\n",
                   argv[0]);
            return 0;
        default:
            fprintf(stderr, "try --help\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || reps < 1 || reps > 1000 || mib < 1 ||
        mib > 65536) {
        fprintf(stderr, "stream_triad: threads 1..256, reps 1..1000, mib "
                        "1..65536\n");
        return 2;
    }
    size_t            n     = mib * 1024 * 1024 / sizeof(float);
    float            *a     = aligned_alloc(64, n * sizeof(float));
    float            *b     = aligned_alloc(64, n * sizeof(float));
    float            *cc    = aligned_alloc(64, n * sizeof(float));
    double           *times = calloc((size_t)reps, sizeof(double));
    pthread_t        *th    = calloc((size_t)threads, sizeof(pthread_t));
    arg_t            *args  = calloc((size_t)threads, sizeof(arg_t));
    pthread_barrier_t bar;

    if (a == NULL || b == NULL || cc == NULL || times == NULL || th == NULL ||
        args == NULL) {
        fprintf(stderr,
                "stream_triad: out of memory for 3 x %zu MiB; lower "
                "--mib\n",
                mib);
        return 1;
    }
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++) {
        args[t].a     = a;
        args[t].b     = b;
        args[t].c     = cc;
        args[t].begin = n * (size_t)t / (size_t)threads;
        args[t].end   = n * (size_t)(t + 1) / (size_t)threads;
        args[t].reps  = reps;
        args[t].bar   = &bar;
        args[t].times = t == 0 ? times : NULL;
        pthread_create(&th[t], NULL, worker, &args[t]);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(th[t], NULL);
    }
    double best = 1e30;
    for (int r = 1; r < reps; r++) { /* skip the first (warm-up) */
        best = times[r] < best ? times[r] : best;
    }
    if (reps == 1) {
        best = times[0];
    }
    double gbs = 3.0 * (double)n * sizeof(float) / best / 1e9;
    /* check the result so the loop cannot be optimised away */
    if (a[n / 2] != 7.0f) {
        fprintf(stderr, "stream_triad: wrong result %f\n", (double)a[n / 2]);
        return 1;
    }
    printf("triad threads=%d array_mib=%zu best_s=%.6f gbps=%.2f\n", threads,
           mib, best, gbs);
    pthread_barrier_destroy(&bar);
    free(a);
    free(b);
    free(cc);
    free(times);
    free(th);
    free(args);
    return 0;
}
