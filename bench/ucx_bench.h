/* ucx_bench.h - put/get bandwidth of layer-blocks against a running kvnode
 * over transport/ucx.h (the numbers bench/ucx_bench.sh compares with
 * ucx_perftest ucp_put_bw on the same UCX_TLS). Blocking, one thread. */
#ifndef LKV_BENCH_UCX_BENCH_H
#define LKV_BENCH_UCX_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *endpoint;    /* kvnode control endpoint */
    size_t      block_bytes; /* default 1 MiB */
    int         n_blocks;    /* blocks per direction (default 512) */
    int         list;        /* blocks per put/get list (default 16) */
    int         window;      /* lists in flight (default 4) */
    int         slots;       /* distinct remote blocks cycled through (0 =
                                as many as the kvnode holds); 1 mirrors
                                ucx_perftest's single remote buffer */
} lkv_ucx_bench_config_t;

typedef struct {
    double put_mbps; /* 2^20 bytes per second, remote completion included */
    double get_mbps;
    bool   verified; /* data read back equals data written */
} lkv_ucx_bench_result_t;

lkv_ucx_bench_config_t lkv_ucx_bench_config_default(void);

/* Connect, put n_blocks blocks (one warm-up pass first), get them back,
 * verify. Errors: LKV_ERR_INVALID (config), LKV_ERR_NOSPACE (the kvnode is
 * smaller than n_blocks blocks), kvnode query and UCX errors. */
lkv_status_t lkv_ucx_bench_run(const lkv_ucx_bench_config_t *cfg,
                               lkv_ucx_bench_result_t *res);

#ifdef __cplusplus
}
#endif

#endif /* LKV_BENCH_UCX_BENCH_H */
