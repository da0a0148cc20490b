/* cmd_generate.c - `layerkv generate`: stream one completion from a running
 * server to stdout through liblayerkv; request statistics go to stderr.
 * Threading: token text is written from the client's I/O thread (the event
 * callback); the main thread waits, and forwards Ctrl-C as a cancel.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "common/log.h"
#include "layerkv/client.h"

#define DEFAULT_SERVER "tcp://127.0.0.1:5555"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    bool               quiet;
    bool               ended;
    bool               printed;
    lkv_client_event_t term;
    char               message[512];
    char               finish[16];
    uint32_t           n_prompt_tokens;
} gen_state_t;

static void on_event(const lkv_client_event_t *ev, void *user)
{
    gen_state_t *g = user;

    switch (ev->kind) {
    case LKV_CLIENT_EV_ACCEPTED:
        g->n_prompt_tokens = ev->n_prompt_tokens;
        break;
    case LKV_CLIENT_EV_TOKEN:
        if (ev->text_len > 0) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
            g->printed = true;
        }
        break;
    case LKV_CLIENT_EV_DONE:
    case LKV_CLIENT_EV_ERROR:
        g->term = *ev;
        snprintf(g->message, sizeof(g->message), "%s",
                 ev->message != NULL ? ev->message : "");
        snprintf(g->finish, sizeof(g->finish), "%s",
                 ev->finish_reason != NULL ? ev->finish_reason : "");
        g->ended = true;
        break;
    }
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv generate [--server ENDPOINT] --prompt TEXT [options]\n"
            "\n"
            "Stream a completion from a running layerkv server to stdout\n"
            "(request statistics to stderr).\n"
            "\n"
            "  -s, --server ENDPOINT   server, e.g. tcp://127.0.0.1:5555 (default\n"
            "                          $LKV_SERVER or " DEFAULT_SERVER ")\n"
            "  -p, --prompt TEXT       prompt text; '-' reads it from stdin\n"
            "      --tokens IDS        prompt as comma-separated token ids instead\n"
            "  -n, --max-tokens N      tokens to generate at most (default 64)\n"
            "  -t, --temperature T     0 = greedy (default 1.0)\n"
            "      --top-k K           0 = off (default)\n"
            "      --top-p P           (0,1], 1 = off (default)\n"
            "      --seed S            sampler seed (default: server-chosen)\n"
            "      --ttft-slo-ms MS    time-to-first-token target (default: server's)\n"
            "      --tpot-slo-ms MS    time-per-output-token target (default: server's)\n"
            "      --timeout-s S       give up when the server sends nothing for S\n"
            "                          seconds (default 30)\n"
            "  -q, --quiet             no statistics on stderr\n"
            "  -h, --help              this text\n"
            "\n"
            "Exit status: 0 finished (stop/length), 1 error, cancel or timeout,\n"
            "2 bad usage. Ctrl-C cancels the request on the server.\n");
}

static bool parse_double(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out  = strtod(s, &end);
    return errno == 0 && end != s && *end == '\0' && isfinite(*out);
}

static bool parse_long(const char *s, long long lo, long long hi,
                       long long *out)
{
    char *end;

    errno = 0;
    *out  = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *out >= lo && *out <= hi;
}

static char *read_stdin(void)
{
    size_t cap = 4096, len = 0;
    char  *buf = malloc(cap);

    while (buf != NULL) {
        size_t n = fread(buf + len, 1, cap - len - 1, stdin);

        len += n;
        if (n == 0) {
            break;
        }
        if (cap - len - 1 == 0) {
            char *b = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL;
            if (b == NULL) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    if (buf != NULL) {
        buf[len] = '\0';
    }
    return buf;
}

static int parse_tokens(const char *s, int32_t **out, int *n_out)
{
    int      n = 1;
    int32_t *v;

    for (const char *p = s; *p; p++) {
        n += *p == ',';
    }
    v = calloc((size_t)n, sizeof(*v));
    if (v == NULL) {
        return -1;
    }
    n = 0;
    for (const char *p = s;;) {
        char     *end;
        long long x;

        errno = 0;
        x     = strtoll(p, &end, 10);
        if (errno != 0 || end == p || x < 0 || x > INT32_MAX ||
            (*end != ',' && *end != '\0')) {
            free(v);
            return -1;
        }
        v[n++] = (int32_t)x;
        if (*end == '\0') {
            break;
        }
        p = end + 1;
    }
    *out   = v;
    *n_out = n;
    return 0;
}

int lkv_cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'},
        {"prompt", required_argument, NULL, 'p'},
        {"tokens", required_argument, NULL, 'T'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"top-k", required_argument, NULL, 'k'},
        {"top-p", required_argument, NULL, 'P'},
        {"seed", required_argument, NULL, 'S'},
        {"ttft-slo-ms", required_argument, NULL, 'F'},
        {"tpot-slo-ms", required_argument, NULL, 'O'},
        {"timeout-s", required_argument, NULL, 'W'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char          *server = getenv("LKV_SERVER");
    const char          *prompt = NULL;
    char                *stdin_prompt = NULL;
    int32_t             *tokens = NULL;
    int                  n_tokens = 0;
    double               timeout_s = 30;
    lkv_client_request_t rq = lkv_client_request_default();
    gen_state_t          g;
    lkv_client_t        *c = NULL;
    uint64_t             id;
    long long            ll;
    double               d;
    int                  opt, rc = 1;
    struct sigaction     sa, old_int, old_term;
    bool                 handlers = false;

    memset(&g, 0, sizeof(g));
    optind = 1;
    while ((opt = getopt_long(argc, argv, "s:p:n:t:qh", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            server = optarg;
            break;
        case 'p':
            prompt = optarg;
            break;
        case 'T':
            free(tokens);
            tokens = NULL;
            if (parse_tokens(optarg, &tokens, &n_tokens) != 0) {
                fprintf(stderr, "layerkv generate: --tokens wants comma-separated "
                                "ids >= 0, e.g. 1,450,29871\n");
                return 2;
            }
            break;
        case 'n':
            if (!parse_long(optarg, 1, 65536, &ll)) {
                fprintf(stderr, "layerkv generate: --max-tokens must be 1..65536\n");
                goto usage_err;
            }
            rq.max_tokens = (int)ll;
            break;
        case 't':
            if (!parse_double(optarg, &d) || d < 0 || d > 100) {
                fprintf(stderr, "layerkv generate: --temperature must be 0..100\n");
                goto usage_err;
            }
            rq.temperature = (float)d;
            break;
        case 'k':
            if (!parse_long(optarg, 0, 1 << 20, &ll)) {
                fprintf(stderr, "layerkv generate: --top-k must be 0..1048576\n");
                goto usage_err;
            }
            rq.top_k = (int)ll;
            break;
        case 'P':
            if (!parse_double(optarg, &d) || !(d > 0 && d <= 1)) {
                fprintf(stderr, "layerkv generate: --top-p must be in (0, 1]\n");
                goto usage_err;
            }
            rq.top_p = (float)d;
            break;
        case 'S': {
            char *end;

            errno   = 0;
            rq.seed = strtoull(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-') {
                fprintf(stderr, "layerkv generate: --seed must be an unsigned integer\n");
                goto usage_err;
            }
            rq.has_seed = true;
            break;
        }
        case 'F':
        case 'O':
            if (!parse_double(optarg, &d) || d <= 0 || d > 1e9) {
                fprintf(stderr, "layerkv generate: SLOs are milliseconds > 0\n");
                goto usage_err;
            }
            if (opt == 'F') {
                rq.ttft_slo_ms = d;
            } else {
                rq.tpot_slo_ms = d;
            }
            break;
        case 'W':
            if (!parse_double(optarg, &timeout_s) || timeout_s <= 0 ||
                timeout_s > 86400) {
                fprintf(stderr, "layerkv generate: --timeout-s must be > 0 seconds\n");
                goto usage_err;
            }
            break;
        case 'q':
            g.quiet = true;
            break;
        case 'h':
            usage(stdout);
            free(tokens);
            return 0;
        default:
            goto usage_err;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "layerkv generate: unexpected argument '%s'\n",
                argv[optind]);
        goto usage_err;
    }
    if ((prompt == NULL) == (tokens == NULL)) {
        fprintf(stderr, "layerkv generate: give --prompt TEXT (or --tokens IDS)\n");
        goto usage_err;
    }
    if (prompt != NULL && strcmp(prompt, "-") == 0) {
        stdin_prompt = read_stdin();
        if (stdin_prompt == NULL) {
            fprintf(stderr, "layerkv generate: cannot read the prompt from stdin "
                            "(at most 1 MiB)\n");
            goto out;
        }
        prompt = stdin_prompt;
    }
    if (server == NULL || server[0] == '\0') {
        server = DEFAULT_SERVER;
    }
    rq.prompt   = prompt;
    rq.tokens   = tokens;
    rq.n_tokens = n_tokens;

    /* Ctrl-C from here on cancels the request instead of killing us */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    handlers = true;

    lkv_client_opts_t co = lkv_client_opts_default();
    co.server_timeout_ms = (int)(timeout_s * 1000.0);
    if (lkv_client_connect(server, &co, &c) != LKV_OK) {
        fprintf(stderr, "layerkv generate: cannot use server endpoint '%s' "
                        "(expected tcp://HOST:PORT or ipc:///PATH)\n", server);
        goto out;
    }
    if (lkv_client_submit(c, &rq, on_event, &g, &id) != LKV_OK) {
        fprintf(stderr, "layerkv generate: request not sent (see the message "
                        "above)\n");
        goto out;
    }
    bool cancel_sent = false;
    while (lkv_client_wait(c, id, 100) == LKV_ERR_TIMEOUT) {
        if (interrupted && !cancel_sent) {
            (void)lkv_client_cancel(c, id);
            cancel_sent = true;
        }
    }
    /* like `layerkv run`: the completion, then one newline */
    if (g.term.kind == LKV_CLIENT_EV_DONE || g.printed) {
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (g.term.kind == LKV_CLIENT_EV_DONE &&
        (g.term.finish == LKV_CLIENT_FINISH_STOP ||
         g.term.finish == LKV_CLIENT_FINISH_LENGTH)) {
        rc = 0;
    }
    if (g.term.kind == LKV_CLIENT_EV_DONE) {
        if (!g.quiet || rc != 0) {
            fprintf(stderr,
                    "[layerkv] finish %s, %u prompt + %u generated tokens, "
                    "ttft %.1f ms, tpot %.2f ms, queue %.1f ms%s%s\n",
                    g.finish, g.term.n_prompt_tokens, g.term.n_tokens,
                    g.term.ttft_ms, g.term.tpot_ms, g.term.queue_ms,
                    g.message[0] ? ": " : "", g.message);
        }
    } else {
        fprintf(stderr, "layerkv generate: %s: %s", lkv_status_name(g.term.status),
                g.message[0] ? g.message : lkv_status_str(g.term.status));
        if (g.term.retry_after_ms >= 0 && g.term.status != LKV_OK) {
            fprintf(stderr, " (server suggests retrying in %lld ms)",
                    (long long)g.term.retry_after_ms);
        }
        fputc('\n', stderr);
    }
out:
    lkv_client_close(&c);
    if (handlers) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    free(stdin_prompt);
    free(tokens);
    return rc;
usage_err:
    usage(stderr);
    free(tokens);
    return 2;
}
