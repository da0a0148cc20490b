/* lend.c - the kvnode service on a thread of a worker process (see
 * lend.h). */
#define LKV_LOG_MODULE "lend"

#include "cmd/lend.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "transport/kvnode.h"

struct lkv_lend {
    lkv_kvnode_t         *node;
    pthread_t             thread;
    volatile sig_atomic_t stop;
    lkv_status_t          st; /* how the service ended */
};

static void *serve_main(void *arg)
{
    lkv_lend_t *l = arg;

    l->st = lkv_kvnode_serve(l->node, &l->stop);
    if (l->st != LKV_OK) {
        LKV_LOG_ERROR("lent kv memory at %s stopped serving: %s; borrowers "
                      "mark it down and recompute",
                      lkv_kvnode_endpoint(l->node), lkv_status_str(l->st));
    }
    return NULL;
}

lkv_status_t lkv_lend_start(const char *listen, double capacity_gib,
                            lkv_lend_t **l_p)
{
    lkv_kvnode_config_t kc;
    lkv_lend_t         *l;
    lkv_status_t        st;

    if (listen == NULL || l_p == NULL || !(capacity_gib > 0.0)) {
        return LKV_ERR_INVALID;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return LKV_ERR_NOMEM;
    }
    memset(&kc, 0, sizeof(kc));
    kc.listen         = listen;
    kc.capacity_bytes = (uint64_t)(capacity_gib * 1024.0 * 1024.0 * 1024.0);
    st                = lkv_kvnode_create(&kc, &l->node);
    if (st != LKV_OK) {
        free(l);
        return st;
    }
    if (pthread_create(&l->thread, NULL, serve_main, l) != 0) {
        lkv_kvnode_destroy(&l->node);
        free(l);
        return LKV_ERR_INTERNAL;
    }
    LKV_LOG_INFO("lending %.3f GiB of host memory as a kvnode on %s",
                 (double)kc.capacity_bytes / (1024.0 * 1024.0 * 1024.0),
                 lkv_kvnode_endpoint(l->node));
    *l_p = l;
    return LKV_OK;
}

const char *lkv_lend_endpoint(const lkv_lend_t *l)
{
    return lkv_kvnode_endpoint(l->node);
}

void lkv_lend_stop(lkv_lend_t **l_p)
{
    if (l_p == NULL || *l_p == NULL) {
        return;
    }
    lkv_lend_t *l = *l_p;
    l->stop       = 1;
    pthread_join(l->thread, NULL);
    lkv_kvnode_destroy(&l->node);
    free(l);
    *l_p = NULL;
}
