/* cmd_stats.c - `layerkv stats`: print a running server's health and state
 * (aligned text by default, JSON with --json). Single-threaded apart from
 * liblayerkv's I/O thread.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "layerkv/client.h"

#define DEFAULT_SERVER "tcp://127.0.0.1:5555"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv stats [--server ENDPOINT] [--json] [--timeout-s S]\n"
            "\n"
            "Print a running layerkv server's health and state.\n"
            "\n"
            "  -s, --server ENDPOINT   server (default $LKV_SERVER or " DEFAULT_SERVER ")\n"
            "  -j, --json              one JSON object {\"health\": ..., \"stats\": ...}\n"
            "      --health            health only (exit 0 when the server answers)\n"
            "      --timeout-s S       wait at most S seconds per query (default 5)\n"
            "  -h, --help              this text\n");
}

static void json_escape(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            fprintf(out, "\\%c", ch);
        } else if (ch < 0x20) {
            fprintf(out, "\\u%04x", ch);
        } else {
            fputc(ch, out);
        }
    }
    fputc('"', out);
}

int lkv_cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"health", no_argument, NULL, 'H'},
        {"timeout-s", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char         *server      = getenv("LKV_SERVER");
    bool                json        = false;
    bool                health_only = false;
    double              timeout_s   = 5;
    lkv_client_t       *c           = NULL;
    lkv_client_health_t h;
    char               *stats_json = NULL, *stats_text = NULL;
    lkv_status_t        st;
    int                 opt, rc = 1;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            server = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'H':
            health_only = true;
            break;
        case 'W': {
            char *end;

            errno     = 0;
            timeout_s = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' ||
                !(timeout_s > 0 && timeout_s <= 3600)) {
                fprintf(stderr, "layerkv stats: --timeout-s must be 0..3600 seconds\n");
                usage(stderr);
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv stats: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (server == NULL || server[0] == '\0') {
        server = DEFAULT_SERVER;
    }
    int timeout_ms = (int)ceil(timeout_s * 1000.0);
    lkv_client_opts_t co = lkv_client_opts_default();
    co.server_timeout_ms = timeout_ms;
    if (lkv_client_connect(server, &co, &c) != LKV_OK) {
        fprintf(stderr, "layerkv stats: cannot use server endpoint '%s' "
                        "(expected tcp://HOST:PORT or ipc:///PATH)\n", server);
        return 1;
    }
    st = lkv_client_health(c, timeout_ms, &h);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv stats: server %s did not answer health (%s): "
                        "is `layerkv serve` running there?\n",
                server, lkv_status_name(st));
        goto out;
    }
    if (!health_only) {
        st = lkv_client_stats(c, timeout_ms, &stats_json, &stats_text);
        if (st != LKV_OK) {
            fprintf(stderr, "layerkv stats: stats query failed (%s)\n",
                    lkv_status_name(st));
            goto out;
        }
    }
    if (json) {
        printf("{\"health\": {\"status\": ");
        json_escape(stdout, h.status);
        printf(", \"model\": ");
        json_escape(stdout, h.model);
        printf(", \"version\": ");
        json_escape(stdout, h.version);
        printf(", \"uptime_s\": %.3f, \"n_running\": %u, \"n_waiting\": %u, "
               "\"rtt_ms\": %.3f}",
               h.uptime_s, h.n_running, h.n_waiting, h.rtt_ms);
        if (stats_json != NULL) {
            printf(", \"stats\": %s", stats_json);
        }
        printf("}\n");
    } else {
        printf("server     %s\nstatus     %s\nmodel      %s\nversion    %s\n"
               "uptime_s   %.1f\nrunning    %u\nwaiting    %u\nrtt_ms     %.3f\n",
               server, h.status, h.model, h.version, h.uptime_s, h.n_running,
               h.n_waiting, h.rtt_ms);
        if (stats_text != NULL && stats_text[0] != '\0') {
            printf("\n%s", stats_text);
        }
    }
    fflush(stdout);
    rc = 0;
out:
    free(stats_json);
    free(stats_text);
    lkv_client_close(&c);
    return rc;
}
