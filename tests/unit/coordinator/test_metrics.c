/* test_metrics.c - coordinator/metrics.h (Prometheus text rendering:
 * histograms cumulative with +Inf = count, per-tier and per-layer gauges,
 * rejection labels, label escaping) and coordinator/metrics_http.h (GET
 * /metrics over a real loopback socket, 404, bad listen addresses, a port in
 * use). Single-threaded apart from libmicrohttpd's thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/metrics.h"
#include "coordinator/metrics_http.h"

static double value_of(const char *text, const char *series)
{
    const char *p = strstr(text, series);
    if (p == NULL) {
        fail_msg("series '%s' missing", series);
        return -1;
    }
    p += strlen(series);
    return strtod(p, NULL);
}

static void metrics_histograms_cumulative(void **state)
{
    lkv_metrics_t *m = NULL;
    char          *t = NULL;
    size_t         len;

    (void)state;
    assert_int_equal(lkv_metrics_create(0, "x", "layerkv", &m), LKV_ERR_INVALID);
    assert_int_equal(lkv_metrics_create(2, "m\"odel", "layerkv", &m), LKV_OK);
    lkv_metrics_request_t r;
    memset(&r, 0, sizeof(r));
    r.queue_ns      = 2000000;    /* 2 ms */
    r.prefill_ns    = 3000000;
    r.ttft_ns       = 5000000;    /* 5 ms */
    r.tpot_ns       = 1000000;
    r.e2e_ns        = 50000000;
    r.n_prompt      = 10;
    r.n_generated   = 4;
    r.finish_reason = "length";
    r.ttft_violated = true;
    lkv_metrics_observe_request(m, &r);
    r.ttft_ns       = 3000000000; /* 3 s */
    r.tpot_ns       = -1;         /* not observed */
    r.finish_reason = "cancelled";
    r.ttft_violated = false;
    r.tpot_violated = true;
    lkv_metrics_observe_request(m, &r);
    lkv_metrics_count_rejected(m, "toolong");
    lkv_metrics_count_rejected(m, "toolong");
    lkv_metrics_count_rejected(m, NULL);

    int32_t dev[2] = {3, 4}, host[2] = {0, 7};
    lkv_metrics_state_t s;
    memset(&s, 0, sizeof(s));
    s.n_running       = 2;
    s.n_waiting       = 5;
    s.blocks_used[0]  = 7;
    s.blocks_used[1]  = 7;
    s.blocks_total[0] = 100;
    s.blocks_total[1] = 200;
    s.layer_blocks[0] = dev;
    s.layer_blocks[1] = host;
    s.offload_bytes   = 4096;
    s.reload_bytes    = 1024;
    s.stage_bytes     = 1024;
    s.preemptions     = 1;
    s.swap_preemptions = 2;
    lkv_metrics_set_state(m, &s);

    assert_int_equal(lkv_metrics_render(m, &t, &len), LKV_OK);
    assert_int_equal(strlen(t), len);
    /* the quote in the model name never reaches a label value */
    assert_null(strstr(t, "m\"odel"));
    assert_non_null(strstr(t, "model_name=\"m_odel\""));
    assert_true(value_of(t, "layerkv_time_to_first_token_seconds_bucket{"
                            "model_name=\"m_odel\",le=\"0.005\"} ") == 1);
    assert_true(value_of(t, "layerkv_time_to_first_token_seconds_bucket{"
                            "model_name=\"m_odel\",le=\"+Inf\"} ") == 2);
    assert_true(value_of(t, "layerkv_time_to_first_token_seconds_count{"
                            "model_name=\"m_odel\"} ") == 2);
    assert_true(value_of(t, "layerkv_time_per_output_token_seconds_count{"
                            "model_name=\"m_odel\"} ") == 1);
    assert_true(value_of(t, "layerkv_kv_layer_blocks_used{model_name=\"m_odel\","
                            "tier=\"host\",layer=\"1\"} ") == 7);
    assert_true(value_of(t, "layerkv_kv_blocks_used{model_name=\"m_odel\","
                            "tier=\"device\"} ") == 7);
    assert_true(value_of(t, "layerkv_kv_reload_bytes_total{model_name=\"m_odel\"} ") ==
                2048);
    assert_true(value_of(t, "layerkv_num_preemptions_total{model_name=\"m_odel\"} ") ==
                3);
    assert_true(value_of(t, "layerkv_requests_rejected_total{model_name=\"m_odel\","
                            "reason=\"toolong\"} ") == 2);
    assert_true(value_of(t, "layerkv_requests_rejected_total{model_name=\"m_odel\","
                            "reason=\"other\"} ") == 1);
    assert_true(value_of(t, "layerkv_slo_violations_total{model_name=\"m_odel\","
                            "kind=\"ttft\"} ") == 1);
    assert_true(value_of(t, "layerkv_slo_violations_total{model_name=\"m_odel\","
                            "kind=\"tpot\"} ") == 1);
    assert_true(value_of(t, "layerkv_request_success_total{model_name=\"m_odel\","
                            "finished_reason=\"cancelled\"} ") == 1);
    assert_true(value_of(t, "layerkv_prompt_tokens_total{model_name=\"m_odel\"} ") ==
                20);
    /* remote tier has no capacity: no per-layer series for it */
    assert_null(strstr(t, "tier=\"remote\",layer="));
    /* every line is a comment or "name{labels} value" */
    for (char *line = t; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (line[0] != '#') {
            char *sp = memchr(line, ' ', (size_t)(nl - line));
            assert_non_null(sp);
            assert_true(strncmp(line, "layerkv_", 8) == 0);
        }
        line = nl + 1;
    }
    free(t);
    lkv_metrics_destroy(&m);
    assert_null(m);
    lkv_metrics_destroy(&m);
}

static int http_get(int port, const char *path, char *out, size_t cap)
{
    int                fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    char               req[256];
    size_t             n = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family      = AF_INET;
    sa.sin_port        = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
        if (n == cap - 1) {
            break;
        }
    }
    out[n] = '\0';
    close(fd);
    return (int)n;
}

static void metrics_http_serves_and_refuses(void **state)
{
    lkv_metrics_t      *m = NULL;
    lkv_metrics_http_t *h = NULL, *h2 = NULL;
    static char         buf[1 << 16];

    (void)state;
    assert_int_equal(lkv_metrics_create(1, "model", "baseline", &m), LKV_OK);
    assert_int_equal(lkv_metrics_http_start("nonsense", m, &h), LKV_ERR_INVALID);
    assert_int_equal(lkv_metrics_http_start("127.0.0.1:99999", m, &h),
                     LKV_ERR_INVALID);
    assert_int_equal(lkv_metrics_http_start("300.1.1.1:80", m, &h),
                     LKV_ERR_INVALID);
    assert_null(h);
    assert_int_equal(lkv_metrics_http_start("127.0.0.1:0", m, &h), LKV_OK);
    int port = lkv_metrics_http_port(h);
    assert_true(port > 0);

    assert_true(http_get(port, "/metrics", buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "200 OK"));
    assert_non_null(strstr(buf, "text/plain; version=0.0.4"));
    assert_non_null(strstr(buf, "# TYPE layerkv_time_to_first_token_seconds "
                                "histogram"));
    assert_non_null(strstr(buf, "policy=\"baseline\""));
    assert_true(http_get(port, "/nope", buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "404"));

    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    assert_int_equal(lkv_metrics_http_start(addr, m, &h2), LKV_ERR_BUSY);
    assert_null(h2);
    lkv_metrics_http_stop(&h);
    assert_null(h);
    lkv_metrics_http_stop(&h);
    lkv_metrics_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_histograms_cumulative),
        cmocka_unit_test(metrics_http_serves_and_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
