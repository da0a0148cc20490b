/* metrics_http.c - /metrics over libmicrohttpd (see metrics_http.h). */
#define LKV_LOG_MODULE "metrics_http"

#include "coordinator/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"

struct lkv_metrics_http {
    struct MHD_Daemon *d;
    lkv_metrics_t     *m;
    int                port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
                             const char *ctype, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r;
    enum MHD_Result      ret;

    r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE) {
            free(body);
        }
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    lkv_metrics_http_t *h = cls;
    static const char   notfound[] = "not found: try GET /metrics\n";
    static const char   badmethod[] = "only GET is supported\n";
    static const char   ok[]        = "ok\n";

    if (*req_cls == NULL) { /* first call: headers only */
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
                     (char *)badmethod, sizeof(badmethod) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(url, "/metrics") == 0) {
        char  *text = NULL;
        size_t len  = 0;
        if (lkv_metrics_render(h->m, &text, &len) != LKV_OK) {
            static const char oom[] = "out of memory\n";
            return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                         (char *)oom, sizeof(oom) - 1, MHD_RESPMEM_PERSISTENT);
        }
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                     text, len, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/health") == 0) {
        return reply(c, MHD_HTTP_OK, "text/plain", (char *)ok, sizeof(ok) - 1,
                     MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", (char *)notfound,
                 sizeof(notfound) - 1, MHD_RESPMEM_PERSISTENT);
}

static lkv_status_t parse_listen(const char *listen, struct sockaddr_in *sa)
{
    char  host[128];
    char *end;
    long  port;

    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
    if (colon == NULL || (size_t)(colon - listen) >= sizeof(host)) {
        return LKV_ERR_INVALID;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    errno                = 0;
    port                 = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 0 ||
        port > 65535) {
        return LKV_ERR_INVALID;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port   = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof(host), "127.0.0.1");
    } else if (host[0] == '\0' || strcmp(host, "*") == 0) {
        snprintf(host, sizeof(host), "0.0.0.0");
    }
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        return LKV_ERR_INVALID;
    }
    return LKV_OK;
}

lkv_status_t lkv_metrics_http_start(const char *listen, lkv_metrics_t *m,
                                    lkv_metrics_http_t **h_p)
{
    struct sockaddr_in sa;
    lkv_metrics_http_t *h;

    if (m == NULL || h_p == NULL) {
        return LKV_ERR_INVALID;
    }
    if (parse_listen(listen, &sa) != LKV_OK) {
        LKV_LOG_ERROR("metrics listen address '%s' is not HOST:PORT with an "
                      "IPv4 host (e.g. 127.0.0.1:9090)",
                      listen ? listen : "(null)");
        return LKV_ERR_INVALID;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return LKV_ERR_NOMEM;
    }
    h->m = m;
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                                MHD_USE_ERROR_LOG,
                            ntohs(sa.sin_port), NULL, NULL, on_request, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                            MHD_OPTION_END);
    if (h->d == NULL) {
        LKV_LOG_ERROR("cannot serve metrics on %s (port in use? pick another "
                      "with --metrics-listen HOST:PORT)",
                      listen);
        free(h);
        return LKV_ERR_BUSY;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? (int)info->port : (int)ntohs(sa.sin_port);
    *h_p    = h;
    return LKV_OK;
}

int lkv_metrics_http_port(const lkv_metrics_http_t *h)
{
    return h != NULL ? h->port : -1;
}

void lkv_metrics_http_stop(lkv_metrics_http_t **h_p)
{
    if (h_p == NULL || *h_p == NULL) {
        return;
    }
    MHD_stop_daemon((*h_p)->d);
    free(*h_p);
    *h_p = NULL;
}
