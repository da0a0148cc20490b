/* test_kv_pool.c - device/host KV pools on the CPU backend, block addresses,
 * and allocation failures through a failing backend seam (nothing leaks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvstore/kv_pool.h"

static lkv_kern_backend_t *open_cpu(void)
{
    lkv_kern_config_t   cfg = lkv_kern_config_default();
    lkv_kern_backend_t *be  = NULL;
    cfg.n_threads           = 1;
    assert_int_equal(lkv_kern_backend_open("cpu", &cfg, &be), LKV_OK);
    return be;
}

static void pool_addresses_follow_block_index(void **state)
{
    lkv_kern_backend_t  *be  = open_cpu();
    lkv_kv_pool_config_t cfg = {
        .block_bytes = 1024, .n_device_blocks = 8, .n_host_blocks = 4};
    lkv_kv_pool_t *p = NULL;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, NULL, &p), LKV_OK);
    char *dev  = lkv_kv_pool_base(p, LKV_KV_TIER_DEVICE);
    char *host = lkv_kv_pool_base(p, LKV_KV_TIER_HOST);
    assert_non_null(dev);
    assert_non_null(host);
    assert_null(lkv_kv_pool_base(p, LKV_KV_TIER_REMOTE));
    assert_ptr_equal(lkv_kv_pool_block_addr(p, LKV_KV_TIER_DEVICE, 5),
                     dev + 5 * 1024);
    assert_ptr_equal(lkv_kv_pool_block_addr(p, LKV_KV_TIER_HOST, 3),
                     host + 3 * 1024);
    assert_null(lkv_kv_pool_block_addr(p, LKV_KV_TIER_HOST, 4));
    assert_null(lkv_kv_pool_block_addr(p, LKV_KV_TIER_DEVICE, -1));
    assert_null(lkv_kv_pool_block_addr(p, LKV_KV_TIER_REMOTE, 0));
    assert_int_equal(lkv_kv_pool_n_blocks(p, LKV_KV_TIER_DEVICE), 8);
    assert_int_equal(lkv_kv_pool_n_blocks(p, LKV_KV_TIER_HOST), 4);
    assert_int_equal(lkv_kv_pool_n_blocks(p, LKV_KV_TIER_REMOTE), 0);
    assert_int_equal(lkv_kv_pool_block_bytes(p), 1024);
    assert_null(lkv_kv_pool_remote(p));
    assert_ptr_equal(lkv_kv_pool_backend(p), be);
    /* the whole pools are writable (ASan checks the bounds) */
    memset(dev, 1, 8 * 1024);
    memset(host, 2, 4 * 1024);
    lkv_kv_pool_destroy(&p);
    assert_null(p);
    lkv_kv_pool_destroy(&p);

    /* an empty host tier is allowed */
    cfg.n_host_blocks = 0;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, NULL, &p), LKV_OK);
    assert_null(lkv_kv_pool_base(p, LKV_KV_TIER_HOST));
    lkv_kv_pool_destroy(&p);
    lkv_kern_backend_close(&be);
}

static void pool_rejects_bad_config(void **state)
{
    lkv_kern_backend_t  *be  = open_cpu();
    lkv_kv_pool_config_t cfg = {
        .block_bytes = 0, .n_device_blocks = 8, .n_host_blocks = 4};
    lkv_kv_pool_t *p = NULL;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, NULL, &p), LKV_ERR_INVALID);
    cfg.block_bytes     = 64;
    cfg.n_device_blocks = -1;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, NULL, &p), LKV_ERR_INVALID);
    cfg.n_device_blocks = 1;
    cfg.block_bytes     = SIZE_MAX / 2;
    cfg.n_host_blocks   = 4;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, NULL, &p), LKV_ERR_INVALID);
    lkv_kv_remote_ops_t half = {.name = "half"}; /* no put/get */
    lkv_kv_remote_t     r    = {.ops = &half, .n_blocks = 4};
    cfg.block_bytes          = 64;
    assert_int_equal(lkv_kv_pool_create(be, &cfg, &r, &p), LKV_ERR_INVALID);
    assert_null(p);
    lkv_kern_backend_close(&be);
}

/* failing backend seam: mem_alloc / host_alloc fail on demand */
static int fail_mem, fail_host, n_live_allocs;

static lkv_status_t fake_alloc(lkv_kern_backend_t *be, size_t bytes, void **p)
{
    *p = malloc(bytes);
    if (*p == NULL) {
        return LKV_ERR_NOMEM;
    }
    memset(*p, 0xab, bytes); /* stale memory, as a reused allocation holds */
    n_live_allocs++;
    return LKV_OK;
}
static lkv_status_t fake_mem_alloc(lkv_kern_backend_t *be, size_t bytes,
                                   void **p)
{
    return fail_mem ? LKV_ERR_DEVICE : fake_alloc(be, bytes, p);
}
static lkv_status_t fake_host_alloc(lkv_kern_backend_t *be, size_t bytes,
                                    void **p)
{
    return fail_host ? LKV_ERR_NOMEM : fake_alloc(be, bytes, p);
}
static int n_uploads;
static lkv_status_t fake_upload(lkv_kern_backend_t *be, void *dst,
                                const void *src, size_t bytes)
{
    memcpy(dst, src, bytes);
    n_uploads++;
    return LKV_OK;
}
static void fake_free(lkv_kern_backend_t *be, void *p)
{
    if (p != NULL) {
        n_live_allocs--;
    }
    free(p);
}

static const lkv_kern_ops_t fake_ops = {
    .name       = "fake",
    .mem_alloc  = fake_mem_alloc,
    .mem_free   = fake_free,
    .host_alloc = fake_host_alloc,
    .host_free  = fake_free,
    .mem_upload = fake_upload,
};

static void pool_alloc_failure_leaks_nothing(void **state)
{
    lkv_kern_backend_t   be  = {.ops = &fake_ops};
    lkv_kv_pool_config_t cfg = {
        .block_bytes = 256, .n_device_blocks = 4, .n_host_blocks = 4};
    lkv_kv_pool_t *p = NULL;

    fail_mem = 1;
    assert_int_equal(lkv_kv_pool_create(&be, &cfg, NULL, &p), LKV_ERR_DEVICE);
    assert_null(p);
    assert_int_equal(n_live_allocs, 0);
    fail_mem  = 0;
    fail_host = 1;
    assert_int_equal(lkv_kv_pool_create(&be, &cfg, NULL, &p), LKV_ERR_NOMEM);
    assert_null(p);
    assert_int_equal(n_live_allocs, 0); /* the device pool was freed */
    fail_host = 0;
    assert_int_equal(lkv_kv_pool_create(&be, &cfg, NULL, &p), LKV_OK);
    assert_int_equal(n_live_allocs, 2);
    lkv_kv_pool_destroy(&p);
    assert_int_equal(n_live_allocs, 0);
}

/* With a remote tier, blocks leave the node whole: both pools start zeroed
 * (the device pool through the backend, in bounded uploads), none without. */
static lkv_status_t stub_copy(void *ctx, const lkv_kv_block_t *remote_blocks,
                              void *const *local, int n, size_t block_bytes,
                              int local_is_device, lkv_kv_remote_req_t **req_p)
{
    return LKV_ERR_UNSUPPORTED;
}
static lkv_status_t stub_test(void *ctx, lkv_kv_remote_req_t *req)
{
    return LKV_ERR_UNSUPPORTED;
}
static void stub_req_free(void *ctx, lkv_kv_remote_req_t *req) {}

static void pool_with_remote_tier_starts_zeroed(void **state)
{
    lkv_kern_backend_t   be  = {.ops = &fake_ops};
    lkv_kv_pool_config_t cfg = {.block_bytes     = 4096,
                                .n_device_blocks = 10000, /* 39 MiB */
                                .n_host_blocks   = 300};
    lkv_kv_remote_ops_t  ops;
    lkv_kv_remote_t      r;
    lkv_kv_pool_t       *p = NULL;
    size_t               dev = (size_t)10000 * 4096, host = (size_t)300 * 4096;
    uint8_t             *zero = calloc(1, dev);

    assert_non_null(zero);
    n_uploads = 0;
    assert_int_equal(lkv_kv_pool_create(&be, &cfg, NULL, &p), LKV_OK);
    assert_int_equal(n_uploads, 0); /* no remote tier: left as allocated */
    assert_int_equal(((uint8_t *)lkv_kv_pool_base(p, LKV_KV_TIER_HOST))[0],
                     0xab);
    lkv_kv_pool_destroy(&p);

    memset(&ops, 0, sizeof(ops));
    ops.name     = "stub";
    ops.put      = stub_copy;
    ops.get      = stub_copy;
    ops.test     = stub_test;
    ops.req_free = stub_req_free;
    r.ops        = &ops;
    r.ctx        = NULL;
    r.n_blocks   = 16;
    assert_int_equal(lkv_kv_pool_create(&be, &cfg, &r, &p), LKV_OK);
    assert_memory_equal(lkv_kv_pool_base(p, LKV_KV_TIER_DEVICE), zero, dev);
    assert_memory_equal(lkv_kv_pool_base(p, LKV_KV_TIER_HOST), zero, host);
    assert_true(n_uploads >= 3); /* 39 MiB in bounded chunks */
    lkv_kv_pool_destroy(&p);
    assert_int_equal(n_live_allocs, 0);
    free(zero);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_addresses_follow_block_index),
        cmocka_unit_test(pool_rejects_bad_config),
        cmocka_unit_test(pool_alloc_failure_leaks_nothing),
        cmocka_unit_test(pool_with_remote_tier_starts_zeroed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
