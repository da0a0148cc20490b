/* status.c - text for status codes; see status.h. */
#include "common/status.h"

const char *lkv_status_str(lkv_status_t status)
{
    switch (status) {
#define LKV_STATUS_TEXT_(name_, value_, text_)                                 \
    case name_:                                                                \
        return text_;
        LKV_STATUS_MAP(LKV_STATUS_TEXT_)
#undef LKV_STATUS_TEXT_
    }
    return "unknown status";
}

const char *lkv_status_name(lkv_status_t status)
{
    switch (status) {
#define LKV_STATUS_NAME_(name_, value_, text_)                                 \
    case name_:                                                                \
        return #name_;
        LKV_STATUS_MAP(LKV_STATUS_NAME_)
#undef LKV_STATUS_NAME_
    }
    return "LKV_UNKNOWN";
}
