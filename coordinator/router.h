/* router.h - picks the instance for a new request (DESIGN.md §5 Router):
 * the instance with the lowest predicted TTFT, estimated from its queued
 * prompt tokens (prefill model of its scheduler, Eq. 3 with the online
 * alpha), its decode batch (each step of the queue also runs the decoding
 * requests) and its device KV pressure (a request that must wait for
 * blocks pays roughly one more decode round). Ties go to the lowest index.
 *
 * Threading: pure functions; the coordinator thread calls them.
 */
#ifndef LKV_COORDINATOR_ROUTER_H
#define LKV_COORDINATOR_ROUTER_H

#include <stdint.h>

#include "coordinator/instance.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Predicted TTFT (ns) of a request of n_prompt tokens on instance in, or
 * INT64_MAX when the instance is down. */
int64_t lkv_router_predict_ttft_ns(lkv_inst_t *in, int32_t n_prompt);

/* Index into insts of the instance to use, or -1 when none is up. */
int lkv_router_pick(lkv_inst_t *const *insts, int n_insts, int32_t n_prompt);

#ifdef __cplusplus
}
#endif

#endif /* LKV_COORDINATOR_ROUTER_H */
