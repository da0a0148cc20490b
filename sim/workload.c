/* workload.c - see workload.h. */
#define LKV_LOG_MODULE "sim"
#include "sim/workload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "sim/csv_table.h"

uint64_t lkv_sim_rand_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

double lkv_sim_rand_unit(uint64_t *state)
{
    return (double)(lkv_sim_rand_u64(state) >> 11) * (1.0 / 9007199254740992.0);
}

lkv_sim_workload_config_t lkv_sim_workload_config_default(void)
{
    lkv_sim_workload_config_t c = {
        .trace        = NULL,
        .data_dir     = "data/vidur",
        .prompt_len   = 2048,
        .output_len   = 256,
        .rate         = 1.0,
        .time_scale   = 1.0,
        .n_requests   = 1000,
        .seed         = 1,
        .max_total    = 0,
        .prompt_scale = 1.0,
    };
    return c;
}

static void resolve(const lkv_sim_workload_config_t *cfg, char *path, size_t n)
{
    struct stat sb;
    if (strchr(cfg->trace, '/') != NULL || stat(cfg->trace, &sb) == 0) {
        snprintf(path, n, "%s", cfg->trace);
    } else {
        snprintf(path, n, "%s/traces/%s.csv",
                 cfg->data_dir != NULL ? cfg->data_dir : "data/vidur",
                 cfg->trace);
    }
}

static void clip_total(int32_t *p, int32_t *d, int32_t max_total)
{
    if (max_total <= 0 || *p + *d <= max_total) {
        return;
    }
    double  f  = (double)max_total / (double)(*p + *d);
    int32_t np = (int32_t)floor(*p * f), nd = (int32_t)floor(*d * f);
    if (nd < 1) {
        nd = 1;
    }
    if (np < 1) {
        np = 1;
    }
    if (np + nd > max_total) {
        np = max_total - nd;
    }
    *p = np;
    *d = nd;
}

lkv_status_t lkv_sim_workload_generate(const lkv_sim_workload_config_t *cfg,
                                       lkv_sim_req_t **reqs_p, int64_t *n_p)
{
    lkv_status_t     st   = LKV_OK;
    lkv_csv_table_t *t    = NULL;
    lkv_sim_req_t   *reqs = NULL;
    int64_t         *perm = NULL;
    uint64_t         rng  = cfg->seed * 0x2545F4914F6CDD1DULL + 7;

    if (cfg->n_requests < 1 || cfg->n_requests > 100000000 || cfg->rate < 0 ||
        !(cfg->time_scale > 0) || !(cfg->prompt_scale > 0) ||
        (cfg->trace == NULL && (cfg->prompt_len < 1 || cfg->output_len < 1)) ||
        (cfg->trace == NULL && cfg->rate <= 0)) {
        LKV_LOG_ERROR("invalid workload: need 1..1e8 requests, rate > 0 (or a "
                      "trace with arrival times), prompt and output >= 1");
        return LKV_ERR_INVALID;
    }
    reqs = malloc((size_t)cfg->n_requests * sizeof(*reqs));
    if (reqs == NULL) {
        return LKV_ERR_NOMEM;
    }
    int     cp = -1, cd = -1, ca = -1;
    int64_t rows = 0;
    if (cfg->trace != NULL) {
        char path[1024];
        resolve(cfg, path, sizeof(path));
        LKV_CHECK_GOTO(lkv_csv_load(path, &t), st, out);
        cp   = lkv_csv_col(t, "num_prefill_tokens");
        cd   = lkv_csv_col(t, "num_decode_tokens");
        ca   = lkv_csv_col(t, "arrived_at");
        rows = lkv_csv_rows(t);
        if (cp < 0 || cd < 0 || rows < 1) {
            LKV_LOG_ERROR("%s: need columns num_prefill_tokens and "
                          "num_decode_tokens and at least one row",
                          path);
            st = LKV_ERR_FORMAT;
            goto out;
        }
        if (cfg->rate <= 0 && ca < 0) {
            LKV_LOG_ERROR("%s has no arrived_at column: give --rate for "
                          "Poisson arrivals",
                          path);
            st = LKV_ERR_INVALID;
            goto out;
        }
        perm = malloc((size_t)rows * sizeof(*perm));
        if (perm == NULL) {
            st = LKV_ERR_NOMEM;
            goto out;
        }
        for (int64_t i = 0; i < rows; i++) {
            perm[i] = i;
        }
        if (cfg->rate > 0) { /* shuffle (Fisher-Yates); replay keeps order */
            for (int64_t i = rows - 1; i > 0; i--) {
                int64_t j =
                    (int64_t)(lkv_sim_rand_u64(&rng) % (uint64_t)(i + 1));
                int64_t x = perm[i];
                perm[i]   = perm[j];
                perm[j]   = x;
            }
        }
    }
    double t_s    = 0.0;
    double base_s = 0.0;
    for (int64_t i = 0; i < cfg->n_requests; i++) {
        int32_t p = cfg->prompt_len, d = cfg->output_len;
        if (t != NULL) {
            int64_t r  = perm[i % rows];
            double  pv = lkv_csv_num(t, r, cp), dv = lkv_csv_num(t, r, cd);
            if (!(pv >= 0) || !(dv >= 0) || pv > 1e7 || dv > 1e7) {
                LKV_LOG_ERROR("trace row %lld: bad lengths", (long long)r + 2);
                st = LKV_ERR_FORMAT;
                goto out;
            }
            p = (int32_t)llround(pv * cfg->prompt_scale);
            d = (int32_t)llround(dv);
            if (p < 1) {
                p = 1;
            }
            if (d < 1) {
                d = 1;
            }
            if (cfg->rate <= 0) {
                double a = lkv_csv_num(t, r, ca);
                if (!(a >= 0)) {
                    LKV_LOG_ERROR("trace row %lld: bad arrived_at",
                                  (long long)r + 2);
                    st = LKV_ERR_FORMAT;
                    goto out;
                }
                if (i > 0 && i % rows == 0) { /* wrap: continue after last */
                    base_s = t_s;
                }
                t_s = base_s + a * cfg->time_scale;
            }
        }
        clip_total(&p, &d, cfg->max_total);
        if (cfg->rate > 0) {
            double u = lkv_sim_rand_unit(&rng);
            if (i > 0) {
                t_s += -log(1.0 - u) / cfg->rate;
            }
        }
        reqs[i].arrival_ns = (int64_t)llround(t_s * 1e9);
        reqs[i].prompt_len = p;
        reqs[i].output_len = d;
    }
    /* replay traces are in time order already; keep arrivals monotonic */
    for (int64_t i = 1; i < cfg->n_requests; i++) {
        if (reqs[i].arrival_ns < reqs[i - 1].arrival_ns) {
            reqs[i].arrival_ns = reqs[i - 1].arrival_ns;
        }
    }
    *reqs_p = reqs;
    *n_p    = cfg->n_requests;
    reqs    = NULL;
out:
    free(perm);
    free(reqs);
    lkv_csv_destroy(&t);
    return st;
}
