/* wire_scan.c - bounds-checking pre-scan of untrusted msgpack bytes.
 *
 * Walks the raw bytes once, without allocating, and proves that the frame is
 * exactly one well-formed msgpack object whose every declared length fits
 * the bytes that remain and the configured limits. Only frames that pass are
 * handed to msgpack-c, whose allocations are then bounded by the object
 * count (msgpack-c sizes arrays/maps from the declared count, see
 * docs/protocol.md §3). Reentrant; no state outside the call.
 */
#include <stdio.h>
#include <string.h>

#include "transport/wire.h"

#define SCAN_MAX_DEPTH 16

lkv_wire_limits_t lkv_wire_limits_client(void)
{
    lkv_wire_limits_t lim = {
        .max_frame_bytes = 1u << 20,
        .max_depth       = 16,
        .max_array_len   = 65536,
        .max_map_len     = 64,
        .max_str_bytes   = 262144,
        .max_objects     = 131072,
    };
    return lim;
}

lkv_wire_limits_t lkv_wire_limits_server(void)
{
    lkv_wire_limits_t lim = {
        .max_frame_bytes = 16u << 20,
        .max_depth       = 16,
        .max_array_len   = 1u << 20,
        .max_map_len     = 4096,
        .max_str_bytes   = 16u << 20,
        .max_objects     = 4u << 20,
    };
    return lim;
}

lkv_wire_limits_t lkv_wire_limits_internal(void)
{
    lkv_wire_limits_t lim = {
        .max_frame_bytes = 256u << 20,
        .max_depth       = 16,
        .max_array_len   = 16u << 20,
        .max_map_len     = 64,
        .max_str_bytes   = 1u << 20,
        .max_objects     = 64u << 20,
    };
    return lim;
}

static uint64_t be_read(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

#define SCAN_FAIL(...)                                                         \
    do {                                                                       \
        if (err != NULL && err_cap > 0) {                                      \
            snprintf(err, err_cap, __VA_ARGS__);                               \
        }                                                                      \
        return LKV_ERR_PROTOCOL;                                               \
    } while (0)

lkv_status_t lkv_wire_scan(const void *buf, size_t len,
                           const lkv_wire_limits_t *lim_in, char *err,
                           size_t err_cap)
{
    const uint8_t    *p = buf;
    lkv_wire_limits_t lim =
        lim_in != NULL ? *lim_in : lkv_wire_limits_client();
    /* remaining[d]: objects still to read at nesting level d (0 = top) */
    uint64_t remaining[SCAN_MAX_DEPTH + 2];
    int      depth   = 0;
    size_t   pos     = 0;
    uint64_t objects = 0;

    if (lim.max_depth > SCAN_MAX_DEPTH || lim.max_depth == 0) {
        lim.max_depth = SCAN_MAX_DEPTH;
    }
    if (buf == NULL && len > 0) {
        SCAN_FAIL("frame pointer is NULL");
    }
    if (len == 0) {
        SCAN_FAIL("empty frame: expected one msgpack map");
    }
    if (len > lim.max_frame_bytes) {
        SCAN_FAIL("frame of %zu bytes exceeds the limit of %zu bytes", len,
                  lim.max_frame_bytes);
    }
    remaining[0] = 1;
    while (depth >= 0) {
        if (remaining[depth] == 0) {
            depth--;
            continue;
        }
        remaining[depth]--;
        if (pos >= len) {
            SCAN_FAIL("frame truncated at byte %zu: an object is missing",
                      pos);
        }
        uint8_t b = p[pos];

        if (b <= 0x7f || b >= 0xe0) { /* fast path: one-byte fixint */
            if (++objects > lim.max_objects) {
                SCAN_FAIL("more than %u msgpack objects in one frame",
                          lim.max_objects);
            }
            pos++;
            continue;
        }
        size_t   hdr      = 1; /* bytes of the header */
        uint64_t payload  = 0; /* bytes after the header (str/bin/ext/num) */
        uint64_t children = 0; /* objects inside (array n, map 2n) */
        int      kind     = 0; /* 0 scalar, 1 str/bin/ext, 2 array, 3 map */
        uint64_t count    = 0; /* declared array/map count */

        if (b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* nil, bool */
        } else if (b >= 0x80 && b <= 0x8f) {
            kind  = 3;
            count = b & 0x0f;
        } else if (b >= 0x90 && b <= 0x9f) {
            kind  = 2;
            count = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            kind    = 1;
            payload = b & 0x1f;
        } else {
            int lenb = 0; /* bytes of the length field */
            int extb = 0; /* ext type byte */

            switch (b) {
            case 0xc1:
                SCAN_FAIL("invalid msgpack byte 0xc1 at byte %zu "
                          "(is this msgpack?)",
                          pos);
            case 0xc4: case 0xd9: lenb = 1; kind = 1; break;
            case 0xc5: case 0xda: lenb = 2; kind = 1; break;
            case 0xc6: case 0xdb: lenb = 4; kind = 1; break;
            case 0xc7: lenb = 1; extb = 1; kind = 1; break;
            case 0xc8: lenb = 2; extb = 1; kind = 1; break;
            case 0xc9: lenb = 4; extb = 1; kind = 1; break;
            case 0xca: payload = 4; break;
            case 0xcb: payload = 8; break;
            case 0xcc: case 0xd0: payload = 1; break;
            case 0xcd: case 0xd1: payload = 2; break;
            case 0xce: case 0xd2: payload = 4; break;
            case 0xcf: case 0xd3: payload = 8; break;
            case 0xd4: payload = 2; kind = 1; break;
            case 0xd5: payload = 3; kind = 1; break;
            case 0xd6: payload = 5; kind = 1; break;
            case 0xd7: payload = 9; kind = 1; break;
            case 0xd8: payload = 17; kind = 1; break;
            case 0xdc: lenb = 2; kind = 2; break;
            case 0xdd: lenb = 4; kind = 2; break;
            case 0xde: lenb = 2; kind = 3; break;
            case 0xdf: lenb = 4; kind = 3; break;
            default:
                SCAN_FAIL("invalid msgpack byte 0x%02x at byte %zu", b, pos);
            }
            if (lenb > 0) {
                if (len - pos - 1 < (size_t)lenb) {
                    SCAN_FAIL("frame truncated in a length at byte %zu", pos);
                }
                uint64_t n = be_read(p + pos + 1, lenb);
                hdr += (size_t)lenb + (size_t)extb;
                if (kind == 1) {
                    payload = n;
                } else {
                    count = n;
                }
            }
        }
        if (++objects > lim.max_objects) {
            SCAN_FAIL("more than %u msgpack objects in one frame",
                      lim.max_objects);
        }
        if (hdr > len - pos) {
            SCAN_FAIL("frame truncated in a header at byte %zu", pos);
        }
        if (kind == 1 && payload > lim.max_str_bytes + (uint64_t)1) {
            /* +1: fixext carries a type byte in payload */
            SCAN_FAIL("string/bin of %llu bytes at byte %zu exceeds the limit "
                      "of %u bytes",
                      (unsigned long long)payload, pos, lim.max_str_bytes);
        }
        if (payload > len - pos - hdr) {
            SCAN_FAIL("value at byte %zu declares %llu bytes but only %zu "
                      "remain",
                      pos, (unsigned long long)payload, len - pos - hdr);
        }
        if (kind == 2 || kind == 3) {
            uint32_t cap = kind == 2 ? lim.max_array_len : lim.max_map_len;

            if (count > cap) {
                SCAN_FAIL("%s of %llu elements at byte %zu exceeds the limit "
                          "of %u",
                          kind == 2 ? "array" : "map",
                          (unsigned long long)count, pos, cap);
            }
            children = kind == 2 ? count : 2 * count;
            /* every element takes at least one byte */
            if (children > len - pos - hdr) {
                SCAN_FAIL("%s at byte %zu declares %llu elements but only "
                          "%zu bytes remain",
                          kind == 2 ? "array" : "map", pos,
                          (unsigned long long)count, len - pos - hdr);
            }
            if ((uint32_t)depth >= lim.max_depth) {
                SCAN_FAIL("nesting deeper than %u levels at byte %zu",
                          lim.max_depth, pos);
            }
        }
        pos += hdr + (size_t)payload;
        if (children > 0) {
            depth++;
            remaining[depth] = children;
        }
    }
    if (pos != len) {
        SCAN_FAIL("%zu trailing bytes after the message (one msgpack object "
                  "per frame)",
                  len - pos);
    }
    return LKV_OK;
}
