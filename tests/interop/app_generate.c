/* app_generate.c - a stand-alone application of liblayerkv.so: built by
 * tests/integration/client_cli.sh against the shared library and
 * include/layerkv/client.h only, to prove the .so is self-contained.
 * usage: app_generate ENDPOINT PROMPT MAX_TOKENS -> prints the completion.
 * Threading: the callback runs on the library's I/O thread; main waits. */
#include <stdio.h>
#include <stdlib.h>

#include "layerkv/client.h"

static void on_event(const lkv_client_event_t *ev, void *user)
{
    int *status = user;

    if (ev->kind == LKV_CLIENT_EV_TOKEN) {
        fwrite(ev->text, 1, ev->text_len, stdout);
    } else if (ev->kind == LKV_CLIENT_EV_DONE) {
        *status = ev->finish == LKV_CLIENT_FINISH_LENGTH ||
                          ev->finish == LKV_CLIENT_FINISH_STOP
                      ? 0
                      : 1;
    } else if (ev->kind == LKV_CLIENT_EV_ERROR) {
        fprintf(stderr, "app_generate: %s: %s\n", lkv_status_name(ev->status),
                ev->message);
        *status = 1;
    }
}

int main(int argc, char **argv)
{
    lkv_client_t        *c;
    lkv_client_request_t rq = lkv_client_request_default();
    uint64_t             id;
    int                  status = 1;

    if (argc != 4) {
        fprintf(stderr, "usage: app_generate ENDPOINT PROMPT MAX_TOKENS\n");
        return 2;
    }
    if (lkv_client_connect(argv[1], NULL, &c) != LKV_OK) {
        return 1;
    }
    rq.prompt      = argv[2];
    rq.max_tokens  = atoi(argv[3]);
    rq.temperature = 0;
    if (lkv_client_submit(c, &rq, on_event, &status, &id) == LKV_OK) {
        lkv_client_wait(c, id, -1);
    }
    lkv_client_close(&c);
    printf("\n");
    return status;
}
