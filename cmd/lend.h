/* lend.h - peer mode of the remote KV tier (issue 8): a worker process lends
 * part of its host memory to other instances by running the kvnode service
 * (transport/kvnode.h) on a thread of its own. Other instances then reach
 * it with `--kvnode ENDPOINT` exactly as they reach a `layerkv kvnode`.
 *
 * The lent region is registered host memory of this process, separate from
 * its own host KV pool (--host-kv-blocks is not reduced); what is stored in
 * it is decided by the borrowing instance's scheduler.
 *
 * Threading: lkv_lend_start / lkv_lend_stop from one thread; the service
 * runs on its own thread with its own UCX and ZeroMQ contexts.
 */
#ifndef LKV_CMD_LEND_H
#define LKV_CMD_LEND_H

#include "common/status.h"

typedef struct lkv_lend lkv_lend_t;

/* Register capacity_gib GiB, bind the control socket at listen (tcp://host:*
 * picks a port) and start serving. Errors: those of lkv_kvnode_create
 * (LKV_ERR_INVALID, LKV_ERR_BUSY for an endpoint in use, LKV_ERR_NOMEM,
 * LKV_ERR_IO), LKV_ERR_INTERNAL (no thread). Blocks until it serves. */
lkv_status_t lkv_lend_start(const char *listen, double capacity_gib,
                            lkv_lend_t **l_p);
/* The bound endpoint (what borrowers pass to --kvnode). */
const char  *lkv_lend_endpoint(const lkv_lend_t *l);
/* Stop serving (within ~200 ms), unregister, free. NULL-safe. Borrowers'
 * transfers fail from then on (their tier is marked down). */
void         lkv_lend_stop(lkv_lend_t **l_p);

#endif /* LKV_CMD_LEND_H */
