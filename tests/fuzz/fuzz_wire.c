/* fuzz_wire.c - libFuzzer target for the untrusted-input decoders
 * (transport/wire*.c). Each input is decoded under all three limit sets
 * (client, server, internal) so every message type's decoder is reached;
 * whatever decodes must re-encode and decode again to the same type and id,
 * and for step_plan/step_result the fast decoder (wire_fast.c) must give
 * exactly what the general decoder gives.
 * Built outside CMake by tests/fuzz/run.sh with
 * clang -fsanitize=fuzzer,address,undefined. Single-threaded.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/wire.h"
#include "transport/wire_impl.h"

static void check(const uint8_t *data, size_t size, lkv_wire_limits_t lim)
{
    lkv_wire_msg_t m, again;
    lkv_wire_buf_t b;

    if (lkv_wire_decode(data, size, &lim, &m) != LKV_OK) {
        /* failures must explain themselves */
        if (m.err[0] == '\0' || m.arena != NULL) {
            abort();
        }
        return;
    }
    lkv_wire_buf_init(&b);
    if (lkv_wire_encode(&m, &b) != LKV_OK) {
        abort(); /* everything the decoder accepts must be encodable */
    }
    if (m.type == LKV_WIRE_STEP_PLAN || m.type == LKV_WIRE_STEP_RESULT) {
        /* the fast step decoder must agree with the general one */
        lkv_wire_msg_t g;
        lkv_wire_buf_t gb;

        if (wire_decode_general(data, size, &lim, &g) != LKV_OK) {
            abort();
        }
        lkv_wire_buf_init(&gb);
        if (lkv_wire_encode(&g, &gb) != LKV_OK || gb.len != b.len ||
            memcmp(gb.data, b.data, b.len) != 0) {
            abort();
        }
        lkv_wire_buf_free(&gb);
        lkv_wire_msg_release(&g);
    }
    lim = lkv_wire_limits_internal();
    lim.max_map_len = 4096;
    if (lkv_wire_decode(b.data, b.len, &lim, &again) != LKV_OK ||
        again.type != m.type || !lkv_wire_id_equal(&again.id, &m.id)) {
        abort();
    }
    lkv_wire_msg_release(&again);
    lkv_wire_msg_release(&m);
    lkv_wire_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, lkv_wire_limits_client());
    check(data, size, lkv_wire_limits_server());
    check(data, size, lkv_wire_limits_internal());
    return 0;
}
